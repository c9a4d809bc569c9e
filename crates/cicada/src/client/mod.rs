//! The HTTP client each user owns: requests, responses, cookies, redirects, timeouts, and stats recording.
//!
//! Every request made through a [`RequestBuilder`] is timed from the first byte sent to the last body byte read
//! (connecting included, as Locust does) and recorded once into the run's stats under its `name`. A response with a
//! status of 400 or more, or one that fails its [`RequestBuilder::check`], is a failure with a reason; a transport
//! problem (refused, unresolvable host, timeout, TLS, malformed URL) is a failure too and comes back as a
//! [`RequestError`] that a task can propagate with `?` without it being counted twice. A request cut off before
//! its response arrived (its user was stopped, or the task dropped it) is not a request or a failure (the generator
//! stopped waiting, the server did not fail it); it is counted as cut off when it is dropped.
//!
//! Responses are decoded (gzip, deflate, brotli) as they are read, unless [`ClientOptions::decompress`] is off;
//! credentials come from [`RequestBuilder::basic_auth`], the user, the type's options or the host URL, in that
//! order; and by default each user resumes only its own TLS sessions, as distinct browsers would.

mod catch;
mod conn;
mod decode;
mod h1;
mod h2;
mod hpack;
mod scratch;
mod sessions;
mod tls;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Uri};

use crate::recording::Recorder;
pub use catch::{CatchResponse, CaughtResponse};
use conn::{Conn, Connector, Origin, Pool};

/// Which HTTP version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpVersion {
    /// HTTP/1.1 over plain TCP; over TLS, whatever the server picks by ALPN (HTTP/2 preferred).
    #[default]
    Auto,
    /// Always HTTP/1.1.
    Http1,
    /// Always HTTP/2: by ALPN over TLS, with prior knowledge (h2c) over plain TCP.
    Http2,
}

/// HTTP client settings of a user type.
///
/// ```
/// use cicada::prelude::*;
/// use std::time::Duration;
///
/// let options = ClientOptions {
///     timeout: Duration::from_secs(5),
///     http: HttpVersion::Http2,
///     ..ClientOptions::default()
/// };
/// let _ = UserType::<()>::new("Api").client_options(options);
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Limit for a whole request, redirects included (default 60 s).
    pub timeout: Duration,
    /// Limit for opening a connection, TLS handshake included (default 10 s).
    pub connect_timeout: Duration,
    /// HTTP version policy.
    pub http: HttpVersion,
    /// Accept any TLS certificate (self-signed test targets). Never use against systems you do not own.
    pub insecure_tls: bool,
    /// Resume TLS sessions on new connections (default true); turn off for a full handshake on every connection.
    pub tls_session_resumption: bool,
    /// Let all users of the type resume each other's TLS sessions (default false: each user resumes only sessions
    /// it made itself, so a new user pays a full handshake, as a new browser does). Users of a shared pool always
    /// share sessions, as they share connections.
    pub share_tls_sessions: bool,
    /// All users of the type share one pool of connections instead of one connection each.
    pub shared_pool: bool,
    /// Redirects followed per request (default 10; 0 returns the 3xx response itself).
    pub max_redirects: u32,
    /// Bytes of a response body kept for the task to read (default 16 MiB). Longer bodies are read to the end and
    /// counted in the content size, but only this much is kept.
    pub max_body_bytes: usize,
    /// Value of the `User-Agent` header.
    pub user_agent: String,
    /// Send `Accept-Encoding: gzip, deflate, br` and decode such responses as they are read (default true), as
    /// Locust's clients do: `text()` and `json()` see the decoded body and the content size is the decoded size.
    /// Turned off, no `Accept-Encoding` is sent and bodies are kept as they come.
    pub decompress: bool,
    /// Credentials every request of the type sends as HTTP basic auth (user, password), unless the request has its
    /// own `Authorization` or the user set its own with [`HttpClient::set_basic_auth`]. Credentials in the host URL
    /// (`https://user:password@host`) do the same when this is `None`.
    pub basic_auth: Option<(String, String)>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            http: HttpVersion::Auto,
            insecure_tls: false,
            tls_session_resumption: true,
            share_tls_sessions: false,
            shared_pool: false,
            max_redirects: 10,
            max_body_bytes: 16 * 1024 * 1024,
            user_agent: concat!("cicada/", env!("CARGO_PKG_VERSION")).to_string(),
            decompress: true,
            basic_auth: None,
        }
    }
}

/// Why a user type's client could not be set up (a configuration problem, reported before the run starts).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host is not a usable base URL.
    #[error(
        "invalid host `{host}`: {reason} (a valid host looks like http://127.0.0.1:8080 or https://example.test)"
    )]
    InvalidHost {
        /// The host as given.
        host: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS configuration could not be built.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// What kind of transport problem a [`RequestError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestErrorKind {
    /// The URL could not be built or parsed.
    InvalidUrl,
    /// The host name did not resolve.
    Dns,
    /// The TCP connection failed (refused, unreachable ...).
    Connect,
    /// TLS handshake or certificate problem.
    Tls,
    /// The request, or the connection, took longer than allowed.
    Timeout,
    /// The server broke the HTTP protocol or closed the connection mid-response.
    Protocol,
    /// The request body could not be encoded (JSON, form).
    Body,
}

/// A request that failed before a complete response arrived. It has already been recorded as a failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    kind: RequestErrorKind,
    message: String,
}

impl RequestError {
    pub(crate) fn new(kind: RequestErrorKind, message: String) -> Self {
        RequestError { kind, message }
    }

    /// What went wrong.
    pub fn kind(&self) -> RequestErrorKind {
        self.kind
    }
}

/// The host requests go to.
pub(crate) struct BaseUrl {
    origin: Origin,
    /// Path of the host URL without its trailing slash, prepended to relative request paths.
    path: String,
    /// Basic auth from credentials in the host URL (`http://user:password@host`).
    auth: Option<HeaderValue>,
}

impl BaseUrl {
    fn parse(host: &str) -> Result<BaseUrl, ClientError> {
        let invalid = |reason: String| ClientError::InvalidHost {
            host: host.to_string(),
            reason,
        };
        let uri: Uri = host.parse().map_err(|e| invalid(format!("{e}")))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(invalid("it needs a scheme and a host".to_string()));
        };
        Ok(BaseUrl {
            origin: Origin::new(scheme, authority).map_err(invalid)?,
            path: uri.path().trim_end_matches('/').to_string(),
            auth: userinfo_auth(authority),
        })
    }

    /// Build the absolute URI of a request path (relative to the host, or absolute).
    fn resolve(&self, path: &str) -> Result<Uri, RequestError> {
        let invalid = |e: &dyn fmt::Display| {
            RequestError::new(
                RequestErrorKind::InvalidUrl,
                format!("invalid URL `{path}`: {e}"),
            )
        };
        if path.starts_with("http://") || path.starts_with("https://") {
            let uri: Uri = path.parse().map_err(|e| invalid(&e))?;
            if uri.authority().is_none() {
                return Err(invalid(&"no host"));
            }
            return Ok(uri);
        }
        let path_and_query: PathAndQuery = if self.path.is_empty() && path.starts_with('/') {
            PathAndQuery::try_from(path).map_err(|e| invalid(&e))?
        } else {
            let separator = if path.starts_with('/') || path.is_empty() {
                ""
            } else {
                "/"
            };
            let joined = format!("{}{separator}{path}", self.path);
            let joined = if joined.is_empty() {
                "/".to_string()
            } else {
                joined
            };
            PathAndQuery::try_from(joined).map_err(|e| invalid(&e))?
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.origin.scheme());
        parts.authority = Some(self.origin.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).map_err(|e| invalid(&e))
    }
}

/// A user type's client configuration, shared by all its users.
pub(crate) struct ClientShared {
    /// Read once per user when it starts: a new host (from the web UI, between tests) applies to new users.
    base: Mutex<Arc<BaseUrl>>,
    /// The type set its own host, which the run's host does not override.
    own_host: bool,
    options: ClientOptions,
    connector: Connector,
    user_agent: HeaderValue,
    /// `Some` when responses are decoded.
    accept_encoding: Option<HeaderValue>,
    /// Basic auth from [`ClientOptions::basic_auth`].
    default_auth: Option<HeaderValue>,
    pub(crate) recorder: Arc<Recorder>,
    shared_pool: Option<Mutex<Pool>>,
}

/// Idle connections a shared pool keeps at most; more are closed when returned.
const SHARED_POOL_MAX_IDLE: usize = 4096;
/// Origins a single user keeps a connection to at most (redirects can lead elsewhere); the oldest is closed.
const USER_POOL_MAX_ORIGINS: usize = 4;

impl ClientShared {
    pub(crate) fn new(
        host: &str,
        own_host: bool,
        options: &ClientOptions,
        recorder: Arc<Recorder>,
    ) -> Result<Arc<Self>, ClientError> {
        let base = BaseUrl::parse(host)?;
        // Built even for plain-HTTP hosts: a redirect may lead to https.
        let tls = Arc::new(conn::tls_config(
            options.http,
            options.insecure_tls,
            options.tls_session_resumption,
        )?);
        let user_agent = HeaderValue::from_str(&options.user_agent)
            .unwrap_or_else(|_| HeaderValue::from_static("cicada"));
        Ok(Arc::new(ClientShared {
            base: Mutex::new(Arc::new(base)),
            own_host,
            connector: Connector {
                tls_per_user: (options.tls_session_resumption
                    && !options.share_tls_sessions
                    && !options.shared_pool)
                    .then(|| Arc::new(sessions::routed_config(&tls))),
                tls,
                http: options.http,
                connect_timeout: options.connect_timeout,
            },
            shared_pool: options
                .shared_pool
                .then(|| Mutex::new(Pool::new(SHARED_POOL_MAX_IDLE))),
            accept_encoding: options
                .decompress
                .then(|| HeaderValue::from_static(decode::ACCEPT_ENCODING)),
            default_auth: options
                .basic_auth
                .as_ref()
                .map(|(user, password)| basic_auth_value(user, password)),
            options: options.clone(),
            user_agent,
            recorder,
        }))
    }

    /// Send this type's new users to `host` (unless the type has a host of its own).
    pub(crate) fn set_host(&self, host: &str) -> Result<(), ClientError> {
        if !self.own_host {
            let base = BaseUrl::parse(host)?;
            *self.base.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(base);
        }
        Ok(())
    }

    fn base(&self) -> Arc<BaseUrl> {
        self.base.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// `Basic` credentials as an `Authorization` value.
fn basic_auth_value(user: &str, password: &str) -> HeaderValue {
    use base64::Engine;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}").as_bytes());
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

/// Basic auth from the credentials of a URL's authority (`user:password@host`), percent-decoded.
fn userinfo_auth(authority: &http::uri::Authority) -> Option<HeaderValue> {
    let (userinfo, _) = authority.as_str().rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    Some(basic_auth_value(
        &percent_decode(user),
        &percent_decode(password),
    ))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&high), Some(&low)) if hex(high).is_some() && hex(low).is_some() => {
                out.push((hex(high).unwrap_or(0) * 16 + hex(low).unwrap_or(0)) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Per-user client state, created on the first request so that an idle user costs almost nothing.
struct ClientState {
    pool: Pool,
    cookies: Option<cookie_store::CookieStore>,
    /// This user's own TLS sessions, made on its first TLS connection (see [`sessions`]).
    tls: Option<Arc<sessions::UserSessionStore>>,
}

/// A user's HTTP client: its own connections (or a share of its type's pool) and its own cookie jar.
pub struct HttpClient {
    shared: Arc<ClientShared>,
    base: Arc<BaseUrl>,
    /// Basic auth this user set for itself.
    auth: Option<HeaderValue>,
    session: Session,
}

/// What a user's requests change as they go: connections, cookies, TLS sessions.
struct Session {
    state: Option<Box<ClientState>>,
}

impl HttpClient {
    pub(crate) fn new(shared: Arc<ClientShared>) -> Self {
        HttpClient {
            base: shared.base(),
            shared,
            auth: None,
            session: Session { state: None },
        }
    }

    /// A GET request.
    pub fn get(&mut self, path: &str) -> RequestBuilder<'_> {
        self.request(Method::GET, path)
    }

    /// A POST request.
    pub fn post(&mut self, path: &str) -> RequestBuilder<'_> {
        self.request(Method::POST, path)
    }

    /// A PUT request.
    pub fn put(&mut self, path: &str) -> RequestBuilder<'_> {
        self.request(Method::PUT, path)
    }

    /// A PATCH request.
    pub fn patch(&mut self, path: &str) -> RequestBuilder<'_> {
        self.request(Method::PATCH, path)
    }

    /// A DELETE request.
    pub fn delete(&mut self, path: &str) -> RequestBuilder<'_> {
        self.request(Method::DELETE, path)
    }

    /// A HEAD request.
    pub fn head(&mut self, path: &str) -> RequestBuilder<'_> {
        self.request(Method::HEAD, path)
    }

    /// A request with any method to `path`: relative to the host (`/items/1`) or an absolute `http(s)://` URL.
    pub fn request(&mut self, method: Method, path: &str) -> RequestBuilder<'_> {
        let target = self.base.resolve(path);
        let name = match &target {
            Ok(uri)
                if self.base.path.is_empty()
                    && uri.path_and_query().map(PathAndQuery::as_str) == Some(path) =>
            {
                None
            }
            _ => Some(Cow::Owned(path.to_string())),
        };
        RequestBuilder {
            client: self,
            method,
            target,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            name,
            timeout: None,
            check: None,
            deferred_error: None,
        }
    }

    /// Send HTTP basic auth with this user's requests from now on (a request's own `Authorization` header, or its
    /// [`RequestBuilder::basic_auth`], still wins). It replaces the type's [`ClientOptions::basic_auth`] and any
    /// credentials in the host URL for this user.
    pub fn set_basic_auth(&mut self, user: &str, password: &str) {
        self.auth = Some(basic_auth_value(user, password));
    }

    /// Forget the credentials set with [`set_basic_auth`](Self::set_basic_auth): the type's defaults apply again.
    pub fn clear_basic_auth(&mut self) {
        self.auth = None;
    }

    /// The value of a cookie this user holds for the host, if any.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let jar = self.session.state.as_ref()?.cookies.as_ref()?;
        jar.iter_unexpired()
            .find(|cookie| cookie.name() == name)
            .map(|cookie| cookie.value().to_string())
    }

    /// Forget every cookie (a fresh browser session).
    pub fn clear_cookies(&mut self) {
        if let Some(state) = &mut self.session.state {
            state.cookies = None;
        }
    }

    /// Frees the read and write buffers of this user's idle connections (they are made again, 4 KiB, on the next
    /// request). Called before a pause long enough that a user's memory matters more than one allocation per task:
    /// an idle user then keeps only what the connection itself needs.
    pub(crate) fn release_idle_buffers(&mut self) {
        if let Some(state) = self.session.state.as_mut() {
            state.pool.release_buffers();
        }
    }

    /// Idle connections this user holds (0 with a shared pool).
    pub fn idle_connections(&self) -> usize {
        self.session
            .state
            .as_ref()
            .map_or(0, |state| state.pool.len())
    }
}

impl Session {
    fn state(&mut self) -> &mut ClientState {
        self.state.get_or_insert_with(|| {
            Box::new(ClientState {
                pool: Pool::new(USER_POOL_MAX_ORIGINS),
                cookies: None,
                tls: None,
            })
        })
    }

    fn checkout(&mut self, shared: &ClientShared, origin: &Origin) -> Option<Conn> {
        match &shared.shared_pool {
            Some(pool) => pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .checkout(origin),
            None => self.state().pool.checkout(origin),
        }
    }

    fn checkin(&mut self, shared: &ClientShared, origin: Origin, conn: Conn) {
        match &shared.shared_pool {
            Some(pool) => pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .checkin(origin, conn),
            None => self.state().pool.checkin(origin, conn),
        }
    }

    /// This user's own TLS sessions, when users of its type keep their own.
    fn tls_sessions(&mut self, shared: &ClientShared) -> Option<Arc<sessions::UserSessionStore>> {
        shared.connector.tls_per_user.as_ref()?;
        Some(
            self.state()
                .tls
                .get_or_insert_with(Default::default)
                .clone(),
        )
    }

    async fn connect(
        &mut self,
        shared: &ClientShared,
        origin: &Origin,
    ) -> Result<Conn, RequestError> {
        let sessions = self.tls_sessions(shared);
        shared.connector.connect(origin, sessions).await
    }

    /// Send one request (following redirects) and read the whole response. `auth` is the default `Authorization`
    /// for requests without their own; like browsers and Locust's client, no `Authorization` goes to another host
    /// a redirect leads to. `base` is the host's origin: a URL resolved from a relative path shares its bytes, and
    /// its origin is taken without parsing the URL's authority again.
    #[expect(
        clippy::too_many_arguments,
        reason = "the request's parts, moved out of its builder"
    )]
    async fn execute(
        &mut self,
        shared: &ClientShared,
        base: &Origin,
        mut method: Method,
        mut uri: Uri,
        headers: &HeaderMap,
        mut body: Bytes,
        auth: Option<&HeaderValue>,
    ) -> Result<Response, RequestError> {
        let mut redirects = 0;
        let mut same_host = true;
        loop {
            let credentials = Credentials {
                default: if same_host { auth } else { None },
                keep_own: same_host,
            };
            let exchange = self
                .exchange(
                    shared,
                    base,
                    &method,
                    &uri,
                    headers,
                    body.clone(),
                    credentials,
                )
                .await?;
            let status = exchange.status;
            let location = exchange
                .headers
                .first("location")
                .and_then(|l| std::str::from_utf8(l).ok());
            let follow = status.is_redirection()
                && status != StatusCode::NOT_MODIFIED
                && redirects < shared.options.max_redirects;
            match (follow, location) {
                (true, Some(location)) => {
                    let next = redirect_target(&uri, location)?;
                    if status == StatusCode::SEE_OTHER
                        || ((status == StatusCode::MOVED_PERMANENTLY
                            || status == StatusCode::FOUND)
                            && method == Method::POST)
                    {
                        method = Method::GET;
                        body = Bytes::new();
                    }
                    same_host = same_host && next.host() == uri.host();
                    uri = next;
                    redirects += 1;
                }
                _ => {
                    return Ok(Response {
                        status,
                        headers: exchange.headers,
                        body: exchange.body,
                        content_length: exchange.content_length,
                        truncated: exchange.truncated,
                        url: uri,
                        elapsed: Duration::ZERO,
                        failure: None,
                    });
                }
            }
        }
    }

    /// One request and response on one connection.
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one hop, borrowed from the caller's loop"
    )]
    async fn exchange(
        &mut self,
        shared: &ClientShared,
        base: &Origin,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
        credentials: Credentials<'_>,
    ) -> Result<Exchange, RequestError> {
        let (origin, url_auth) = match (uri.scheme(), uri.authority()) {
            // A path relative to the host: no credentials in the URL (the base's travel as the default).
            (Some(scheme), Some(authority)) if base.built_this(scheme, authority) => {
                (base.clone(), None)
            }
            (Some(scheme), Some(authority)) => (
                Origin::new(scheme, authority)
                    .map_err(|reason| RequestError::new(RequestErrorKind::InvalidUrl, reason))?,
                // Credentials in a request's own URL count least, as in Locust's client.
                if authority.as_str().contains('@') {
                    userinfo_auth(authority)
                } else {
                    None
                },
            ),
            _ => {
                return Err(RequestError::new(
                    RequestErrorKind::InvalidUrl,
                    format!("invalid URL `{uri}`: no host"),
                ));
            }
        };
        let credentials = Credentials {
            default: credentials.default.or(url_auth.as_ref()),
            keep_own: credentials.keep_own,
        };
        // The URL is parsed for the jar only when this user holds cookies, and dropped before the exchange (it would
        // sit in every request's future); a response that sets cookies has its URL parsed again.
        let cookie = match (
            self.cookie_url(uri),
            self.state.as_ref().and_then(|s| s.cookies.as_ref()),
        ) {
            (Some(url), Some(jar)) => {
                let mut text = String::new();
                for (name, value) in jar.get_request_values(&url) {
                    if !text.is_empty() {
                        text.push_str("; ");
                    }
                    text.push_str(name);
                    text.push('=');
                    text.push_str(value);
                }
                (!text.is_empty()).then_some(text)
            }
            _ => None,
        };
        let max_body = shared.options.max_body_bytes;
        let decode = shared.options.decompress;
        let (mut conn, mut reused) = match self.checkout(shared, &origin) {
            Some(conn) => (conn, true),
            // Boxed: connecting is rare and its future is large; inlined it would be copied around per request.
            None => (Box::pin(self.connect(shared, &origin)).await?, false),
        };
        let request = WireRequest {
            method,
            target: uri.path_and_query().map_or("/", PathAndQuery::as_str),
            host: origin.authority.as_str(),
            user_agent: &shared.user_agent,
            accept_encoding: shared.accept_encoding.as_ref(),
            auth: credentials.default,
            keep_own_auth: credentials.keep_own,
            headers,
            cookie: cookie.as_deref(),
            body: &body,
        };
        let exchange = loop {
            let outcome = match &mut conn {
                Conn::H1(h1) => h1.send(&request, max_body, decode).await,
                Conn::H2(h2) => h2.send(&request, origin.tls, max_body, decode).await,
            };
            match outcome {
                Ok(exchange) => break exchange,
                // A reused connection the server had closed: the request never left, so a fresh connection may
                // carry it without risk of sending it twice.
                Err(SendFailure::Unsent(_)) if reused => {
                    conn = Box::pin(self.connect(shared, &origin)).await?;
                    reused = false;
                }
                Err(SendFailure::Unsent(error) | SendFailure::Failed(error)) => return Err(error),
            }
        };
        let keep = match &conn {
            Conn::H1(h1) => h1.is_reusable(),
            Conn::H2(h2) => h2.is_reusable(),
        };
        if keep {
            self.checkin(shared, origin, conn);
        }
        if exchange.headers.first("set-cookie").is_some()
            && let Ok(url) = url::Url::parse(&uri.to_string())
        {
            self.store_cookies(&exchange.headers, &url);
        }
        Ok(exchange)
    }

    /// The URL for cookie matching, parsed only when this user holds cookies.
    fn cookie_url(&self, uri: &Uri) -> Option<url::Url> {
        let jar = self.state.as_ref()?.cookies.as_ref()?;
        jar.iter_unexpired().next()?;
        url::Url::parse(&uri.to_string()).ok()
    }

    fn store_cookies(&mut self, headers: &Headers, url: &url::Url) {
        let set_cookies = headers.values("set-cookie");
        if set_cookies.is_empty() {
            return;
        }
        let jar = self
            .state()
            .cookies
            .get_or_insert_with(cookie_store::CookieStore::default);
        for value in set_cookies {
            if let Ok(text) = std::str::from_utf8(value) {
                // A cookie the jar refuses (bad domain, malformed) is ignored, as a browser would.
                let _ = jar.parse(text, url);
            }
        }
    }
}

/// Which `Authorization` a request on one hop carries.
#[derive(Clone, Copy)]
pub(crate) struct Credentials<'a> {
    /// Sent when the request has no `Authorization` header of its own.
    pub(crate) default: Option<&'a HeaderValue>,
    /// Keep the request's own `Authorization` header (false once a redirect left the original host).
    pub(crate) keep_own: bool,
}

fn redirect_target(from: &Uri, location: &str) -> Result<Uri, RequestError> {
    let base = url::Url::parse(&from.to_string()).map_err(|e| {
        RequestError::new(
            RequestErrorKind::InvalidUrl,
            format!("bad redirect base: {e}"),
        )
    })?;
    let next = base.join(location).map_err(|e| {
        RequestError::new(
            RequestErrorKind::InvalidUrl,
            format!("invalid redirect location `{location}`: {e}"),
        )
    })?;
    next.as_str().parse().map_err(|e| {
        RequestError::new(
            RequestErrorKind::InvalidUrl,
            format!("invalid redirect location `{location}`: {e}"),
        )
    })
}

/// What one request looks like on the wire, for either protocol.
pub(crate) struct WireRequest<'a> {
    pub(crate) method: &'a Method,
    /// Origin-form target: path and query.
    pub(crate) target: &'a str,
    /// The authority: `Host` over HTTP/1.1, `:authority` over HTTP/2.
    pub(crate) host: &'a str,
    pub(crate) user_agent: &'a HeaderValue,
    /// Sent unless the request has its own `Accept-Encoding`.
    pub(crate) accept_encoding: Option<&'a HeaderValue>,
    /// Sent unless the request has its own `Authorization` (and `keep_own_auth` keeps it).
    pub(crate) auth: Option<&'a HeaderValue>,
    /// False after a redirect to another host: the request's own `Authorization` is not sent there.
    pub(crate) keep_own_auth: bool,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) cookie: Option<&'a str>,
    pub(crate) body: &'a Bytes,
}

#[cfg(test)]
impl<'a> WireRequest<'a> {
    /// A GET of `target` from 127.0.0.1:8080 with `headers`, no credentials, cookies or `Accept-Encoding`.
    pub(crate) fn get(
        target: &'a str,
        headers: &'a HeaderMap,
        user_agent: &'a HeaderValue,
        body: &'a Bytes,
    ) -> Self {
        WireRequest {
            method: &Method::GET,
            target,
            host: "127.0.0.1:8080",
            user_agent,
            accept_encoding: None,
            auth: None,
            keep_own_auth: true,
            headers,
            cookie: None,
            body,
        }
    }
}

/// A response as read off the wire.
pub(crate) struct Exchange {
    status: StatusCode,
    headers: Headers,
    body: Bytes,
    content_length: u64,
    truncated: bool,
}

/// Why a request on one connection failed.
pub(crate) enum SendFailure {
    /// The request could not be written: it may be retried on another connection.
    Unsent(RequestError),
    Failed(RequestError),
}

type Check<'a> = Box<dyn FnOnce(&Response) -> Result<(), String> + Send + 'a>;

/// A request being built. Finish it with [`send`](RequestBuilder::send).
#[must_use = "a request does nothing until it is sent with .send().await"]
pub struct RequestBuilder<'a> {
    client: &'a mut HttpClient,
    method: Method,
    target: Result<Uri, RequestError>,
    headers: HeaderMap,
    body: Bytes,
    name: Option<Cow<'static, str>>,
    timeout: Option<Duration>,
    check: Option<Check<'a>>,
    deferred_error: Option<RequestError>,
}

impl<'a> RequestBuilder<'a> {
    /// The name the request is counted under in the stats (group `/items/1`, `/items/2` as `/items/[id]`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Add a header. An invalid name or value fails the request with a clear reason.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(name), Ok(value)) => {
                self.headers.append(name, value);
            }
            _ => self.defer(
                RequestErrorKind::InvalidUrl,
                format!("invalid header `{name}`"),
            ),
        }
        self
    }

    /// Append query parameters, e.g. `.query(&[("page", "2")])`.
    pub fn query<T: serde::Serialize + ?Sized>(mut self, params: &T) -> Self {
        let encoded = match serde_urlencoded::to_string(params) {
            Ok(encoded) => encoded,
            Err(error) => {
                self.defer(
                    RequestErrorKind::Body,
                    format!("cannot encode query: {error}"),
                );
                return self;
            }
        };
        if encoded.is_empty() {
            return self;
        }
        if let Ok(uri) = &self.target {
            let path_and_query = uri.path_and_query().map_or("/", PathAndQuery::as_str);
            let separator = if uri.query().is_some() { '&' } else { '?' };
            let mut parts = uri.clone().into_parts();
            match PathAndQuery::try_from(format!("{path_and_query}{separator}{encoded}")) {
                Ok(joined) => {
                    parts.path_and_query = Some(joined);
                    if let Ok(uri) = Uri::from_parts(parts) {
                        if self.name.is_none() {
                            self.name = Some(Cow::Owned(path_and_query.to_string()));
                        }
                        self.target = Ok(uri);
                    }
                }
                Err(error) => self.defer(RequestErrorKind::InvalidUrl, error.to_string()),
            }
        }
        self
    }

    /// A JSON body (sets `Content-Type: application/json`).
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => {
                self.body = Bytes::from(bytes);
                self.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            Err(error) => self.defer(
                RequestErrorKind::Body,
                format!("cannot encode JSON: {error}"),
            ),
        }
        self
    }

    /// A form body (`application/x-www-form-urlencoded`), e.g. `.form(&[("user", "ann")])`.
    pub fn form<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_urlencoded::to_string(value) {
            Ok(encoded) => {
                self.body = Bytes::from(encoded);
                self.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
            }
            Err(error) => self.defer(
                RequestErrorKind::Body,
                format!("cannot encode form: {error}"),
            ),
        }
        self
    }

    /// A raw body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// A limit for this request instead of the user type's.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Decide whether the response is a success (Locust's `catch_response`). Return `Err(reason)` to count it as a
    /// failure with that reason; the check replaces the default status rule (400 and above fail).
    ///
    /// ```
    /// use cicada::prelude::*;
    ///
    /// async fn home(user: &mut User) -> TaskResult {
    ///     user.get("/")
    ///         .check(|response| {
    ///             if response.text().contains("cicada") {
    ///                 Ok(())
    ///             } else {
    ///                 Err("the home page lost its title")
    ///             }
    ///         })
    ///         .send()
    ///         .await?;
    ///     Ok(())
    /// }
    /// # let _ = UserType::<()>::new("Browser").task(home);
    /// ```
    pub fn check<E: fmt::Display>(
        mut self,
        check: impl FnOnce(&Response) -> Result<(), E> + Send + 'a,
    ) -> Self {
        self.check = Some(Box::new(move |response| {
            check(response).map_err(|reason| reason.to_string())
        }));
        self
    }

    fn defer(&mut self, kind: RequestErrorKind, message: String) {
        if self.deferred_error.is_none() {
            self.deferred_error = Some(RequestError::new(kind, message));
        }
    }

    /// Send HTTP basic auth with this request (an `Authorization: Basic ..` header), whatever the user's or its
    /// type's default credentials are.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.headers
            .insert(header::AUTHORIZATION, basic_auth_value(user, password));
        self
    }

    /// Decide after the fact whether the response is a success (Locust's `catch_response`): [`CatchResponse::send`]
    /// returns a [`CaughtResponse`] that is recorded only when the task calls
    /// [`success`](CaughtResponse::success) or [`failure`](CaughtResponse::failure), or drops it (then by the usual
    /// rule: status 400 and above, or the [`check`](Self::check), fail). The task may read the body and do other
    /// async work in between; the time recorded is still the response time. Call it last, just before `send`.
    ///
    /// ```
    /// use cicada::prelude::*;
    ///
    /// async fn search(user: &mut User) -> TaskResult {
    ///     let response = user.get("/items").catch_response().send().await?;
    ///     let items: Vec<serde_json::Value> = response.json()?;
    ///     if items.is_empty() {
    ///         response.failure("the search found nothing");
    ///     } else {
    ///         response.success();
    ///     }
    ///     Ok(())
    /// }
    /// # let _ = UserType::<()>::new("Searcher").task(search);
    /// ```
    pub fn catch_response(self) -> CatchResponse<'a> {
        CatchResponse::new(self)
    }

    /// Send the request, read the response and record it in the stats.
    ///
    /// Returns the response for any HTTP status (check [`Response::is_failure`]); returns a [`RequestError`] when
    /// no response arrived. Either way the request is already counted. A request still waiting for its response
    /// when the future is dropped (its user stopped, or the task gave up on it) is counted then as cut off (see
    /// [`cicada_stats::StatsSnapshot::requests_cut_off`]), not as a failure.
    pub fn send(self) -> impl Future<Output = Result<Response, RequestError>> + Send + 'a {
        // A combinator, not an `async fn`: an async wrapper would hold the builder and the inner future side by
        // side, and each request would copy both (2.6 KiB) where this copies the inner one (2.3 KiB) once.
        self.send_recording(Recording::Now)
            .map(|outcome| outcome.map(|(response, _)| response))
    }

    /// Send, and record the outcome now, or hand back what recording it later needs.
    ///
    /// A plain function that takes the builder apart and hands its pieces to [`send_and_record`]: as an `async fn`
    /// it would keep the whole builder in the request's future beside the pieces taken out of it.
    fn send_recording(
        self,
        recording: Recording,
    ) -> impl Future<Output = Result<(Response, Option<catch::Pending>), RequestError>> + Send + 'a
    {
        let RequestBuilder {
            client,
            method,
            target,
            headers,
            body,
            name,
            timeout,
            check,
            deferred_error,
        } = self;
        let HttpClient {
            shared,
            base,
            auth,
            session,
        } = client;
        let shared: &ClientShared = shared;
        let default_auth = auth
            .as_ref()
            .or(shared.default_auth.as_ref())
            .or(base.auth.as_ref());
        // A request that fails before it is sent (a header that cannot be sent, say) still counts under its path.
        let (target, name) = match (deferred_error, target) {
            (Some(error), Ok(uri)) => {
                let name =
                    name.or_else(|| Some(Cow::Owned(stats_name(None, Some(&uri)).to_string())));
                (Err(error), name)
            }
            (Some(error), Err(_)) => (Err(error), name),
            (None, target) => (target, name),
        };
        send_and_record(
            Sending {
                shared,
                origin: &base.origin,
                session,
                auth: default_auth,
                limit: timeout.unwrap_or(shared.options.timeout),
                recording,
            },
            method,
            target,
            headers,
            body,
            name,
            check,
        )
    }
}

/// What [`send_and_record`] borrows from the user's client, and how it records.
struct Sending<'a> {
    shared: &'a ClientShared,
    origin: &'a Origin,
    session: &'a mut Session,
    auth: Option<&'a HeaderValue>,
    limit: Duration,
    recording: Recording,
}

/// Send one request, read its response and record the outcome (or hand back what recording it later needs).
async fn send_and_record<'a>(
    sending: Sending<'a>,
    method: Method,
    target: Result<Uri, RequestError>,
    headers: HeaderMap,
    body: Bytes,
    name: Option<Cow<'static, str>>,
    check: Option<Check<'a>>,
) -> Result<(Response, Option<catch::Pending>), RequestError> {
    // Fields are used in place: moved out, each would take a second slot in the request's future.
    let shared = sending.shared;
    let started = Instant::now();
    let outcome = match &target {
        Err(error) => Err(error.clone()),
        Ok(uri) => {
            let in_flight = InFlight {
                recorder: &shared.recorder,
                armed: true,
            };
            // The deadline counts from `started`, which saves the clock read `timeout` would make.
            let deadline = started
                .checked_add(sending.limit)
                .unwrap_or_else(|| started + FAR_FUTURE);
            // A clone shares the URL's bytes; `target` keeps the URL as requested for the stats name.
            let outcome = match tokio::time::timeout_at(
                deadline.into(),
                sending.session.execute(
                    shared,
                    sending.origin,
                    method.clone(),
                    uri.clone(),
                    &headers,
                    body,
                    sending.auth,
                ),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(RequestError::new(
                    RequestErrorKind::Timeout,
                    format!("timed out after {:?}", sending.limit),
                )),
            };
            in_flight.disarm();
            outcome
        }
    };
    let finished = Instant::now();
    let elapsed = finished.duration_since(started);
    let recorder = &shared.recorder;
    // A request without its own name is counted under its path, response or not (as Locust does).
    let name = stats_name(name.as_deref(), target.as_ref().ok());
    match outcome {
        Ok(mut response) => {
            response.elapsed = elapsed;
            response.failure = match check {
                Some(check) => check(&response).err(),
                None if response.status.is_client_error() || response.status.is_server_error() => {
                    Some(status_reason(response.status))
                }
                None => None,
            };
            if sending.recording == Recording::Later {
                let pending = catch::Pending {
                    recorder: recorder.clone(),
                    method,
                    name: name.to_string(),
                };
                return Ok((response, Some(pending)));
            }
            recorder.sample(
                method.as_str(),
                name,
                elapsed,
                response.content_length,
                response.failure.as_deref(),
                finished,
            );
            Ok((response, None))
        }
        Err(error) => {
            recorder.sample(
                method.as_str(),
                name,
                elapsed,
                0,
                Some(&error.message),
                finished,
            );
            Err(error)
        }
    }
}

/// A deadline for a request whose limit is too long to add to the clock: about 30 years, as tokio's own.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// Whether [`RequestBuilder::send_recording`] records the outcome or leaves it to a [`CaughtResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recording {
    Now,
    Later,
}

/// The stats name of a request: its own name, else the path and query it was sent to. Only a request whose URL
/// never parsed and that has no name (which [`HttpClient::request`] does not let happen) gets the placeholder.
fn stats_name<'n>(name: Option<&'n str>, requested: Option<&'n Uri>) -> &'n str {
    match (name, requested) {
        (Some(name), _) => name,
        (None, Some(uri)) => uri.path_and_query().map_or("/", PathAndQuery::as_str),
        (None, None) => "(invalid URL)",
    }
}

/// A request on its way: if the future sending it is dropped before the response arrived (the user was stopped,
/// or the task dropped it), the drop counts it as cut off. It borrows everything it needs, so it costs nothing on
/// the hot path but a few words on the stack.
struct InFlight<'a> {
    recorder: &'a Recorder,
    armed: bool,
}

impl InFlight<'_> {
    /// The outcome arrived: the caller records it.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.recorder.cut_off();
        }
    }
}

fn status_reason(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// Response headers: the bytes of the head as they came (HTTP/1.1) or were decoded (HTTP/2), with the positions of
/// each name and value. A `HeaderMap` is built only if a task asks for it: most tasks never look at headers, and
/// building the map is a good part of a request's CPU time. Kept small (the map behind a box) because a response is
/// moved up through several futures on every request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Headers {
    head: Bytes,
    /// (name start, name end, value start, value end) within `head`.
    spans: Vec<(u32, u32, u32, u32)>,
    map: OnceLock<Box<HeaderMap>>,
}

impl Headers {
    pub(crate) fn new(head: Bytes, spans: Vec<(u32, u32, u32, u32)>) -> Self {
        Headers {
            head,
            spans,
            map: OnceLock::new(),
        }
    }

    fn map(&self) -> &HeaderMap {
        self.map.get_or_init(|| {
            let mut built = HeaderMap::with_capacity(self.spans.len());
            for &(name_start, name_end, value_start, value_end) in &self.spans {
                let Ok(name) =
                    HeaderName::from_bytes(&self.head[name_start as usize..name_end as usize])
                else {
                    continue;
                };
                // The value shares the response's buffer: no copy.
                let value = self.head.slice(value_start as usize..value_end as usize);
                if let Ok(value) = HeaderValue::from_maybe_shared(value) {
                    built.append(name, value);
                }
            }
            Box::new(built)
        })
    }

    fn named<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.spans
            .iter()
            .filter(move |span| {
                self.head[span.0 as usize..span.1 as usize].eq_ignore_ascii_case(name.as_bytes())
            })
            .map(|span| &self.head[span.2 as usize..span.3 as usize])
    }

    /// Values of a header, by lower-case name, in order.
    fn values(&self, name: &str) -> Vec<&[u8]> {
        self.named(name).collect()
    }

    /// The first value of a header, by lower-case name.
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.named(name).next()
    }
}

/// A complete response: status, headers and (up to the cap) the body.
#[derive(Debug, Clone)]
pub struct Response {
    status: StatusCode,
    headers: Headers,
    body: Bytes,
    content_length: u64,
    truncated: bool,
    url: Uri,
    elapsed: Duration,
    failure: Option<String>,
}

impl Response {
    /// A placeholder left behind when a [`CaughtResponse`] hands its response out (no allocation).
    fn empty() -> Response {
        Response {
            status: StatusCode::OK,
            headers: Headers::default(),
            body: Bytes::new(),
            content_length: 0,
            truncated: false,
            url: Uri::default(),
            elapsed: Duration::ZERO,
            failure: None,
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &HeaderMap {
        self.headers.map()
    }

    /// The body bytes (at most the user type's `max_body_bytes`), decoded when it came gzip-, deflate- or
    /// brotli-encoded (unless [`ClientOptions::decompress`] is off).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body as text; invalid UTF-8 is replaced, never an error.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// Size of the whole body in bytes (decoded, for an encoded body), including any part beyond the cap.
    pub fn content_length(&self) -> u64 {
        self.content_length
    }

    /// True when the body was longer than the cap and only its start was kept.
    pub fn body_truncated(&self) -> bool {
        self.truncated
    }

    /// The final URL, after redirects.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// How long the request took (what the stats recorded).
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// True when the request was counted as a failure.
    pub fn is_failure(&self) -> bool {
        self.failure.is_some()
    }

    /// Why the request was counted as a failure.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_relative_locations() {
        let from: Uri = "http://127.0.0.1:8080/a/b?x=1".parse().unwrap();
        assert_eq!(
            redirect_target(&from, "/fast").unwrap().to_string(),
            "http://127.0.0.1:8080/fast"
        );
        assert_eq!(
            redirect_target(&from, "c").unwrap().to_string(),
            "http://127.0.0.1:8080/a/c"
        );
        assert_eq!(
            redirect_target(&from, "https://127.0.0.2/z")
                .unwrap()
                .to_string(),
            "https://127.0.0.2/z"
        );
    }

    #[test]
    fn hosts_are_checked_and_credentials_leave_the_authority() {
        let error = |host: &str| match BaseUrl::parse(host) {
            Ok(_) => panic!("{host} was accepted"),
            Err(error) => error.to_string(),
        };
        assert!(error("http://127.0.0.1:99999").contains("port 99999 is out of range"));
        assert!(error("http://127.0.0.1:0").contains("out of range"));
        assert!(error("ftp://127.0.0.1").contains("unsupported scheme"));
        assert!(error("127.0.0.1:8080").contains("http://127.0.0.1:8080"));
        let base = BaseUrl::parse("http://[::1]:8080/api/").unwrap();
        assert_eq!(base.origin.authority.as_str(), "[::1]:8080");
        assert_eq!(base.path, "/api");
        assert!(base.auth.is_none());
        let base = BaseUrl::parse("https://ann:s%3Acret@127.0.0.1:8443").unwrap();
        assert_eq!(base.origin.authority.as_str(), "127.0.0.1:8443");
        assert_eq!(
            base.auth.unwrap(),
            basic_auth_value("ann", "s:cret"),
            "credentials are percent-decoded"
        );
        assert_eq!(
            basic_auth_value("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn paths_resolved_from_the_host_take_its_origin_as_is() {
        let base = BaseUrl::parse("https://ann:pw@Example.com:8443/api").unwrap();
        let resolved = base.resolve("/items/1").unwrap();
        let (scheme, authority) = (resolved.scheme().unwrap(), resolved.authority().unwrap());
        assert!(base.origin.built_this(scheme, authority));
        // The same origin written out in full is parsed, and is still the same origin (so the pool matches it).
        let absolute: Uri = "https://example.COM:8443/items/1".parse().unwrap();
        let (scheme, authority) = (absolute.scheme().unwrap(), absolute.authority().unwrap());
        assert!(!base.origin.built_this(scheme, authority));
        assert_eq!(Origin::new(scheme, authority).unwrap(), base.origin);
        assert_eq!(base.origin.clone(), base.origin);
        // Same bytes under the other scheme: another origin.
        let own_bytes = resolved.authority().unwrap();
        assert!(!base.origin.built_this(&http::uri::Scheme::HTTP, own_bytes));
        let plain = Origin {
            tls: false,
            ..base.origin.clone()
        };
        assert_ne!(plain, base.origin);
    }

    #[test]
    fn status_reasons_read_well() {
        assert_eq!(
            status_reason(StatusCode::INTERNAL_SERVER_ERROR),
            "HTTP 500 Internal Server Error"
        );
        assert_eq!(
            status_reason(StatusCode::from_u16(599).unwrap()),
            "HTTP 599"
        );
    }
}
