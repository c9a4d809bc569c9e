//! Connections: resolving, connecting, TLS, HTTP/1.1 and HTTP/2 handshakes, and the per-user pool.
//!
//! A user runs one request at a time, so its pool is tiny: at most one connection per origin, a handful of origins.
//! An HTTP/1.1 connection ([`super::h1`]) is used directly by the user's own task (no connection task, no cross-task
//! wake-up per request); between requests nobody polls it, and a connection the server closed in the meantime is
//! noticed when it is next checked out. An HTTP/2 connection ([`super::h2`]) is driven the same way, one stream at a
//! time, by the user's task: what the server sent while it was idle (PING, SETTINGS, GOAWAY) is handled when it is
//! next checked out. TLS is cicada's own stream ([`super::tls`], on rustls' unbuffered API), which holds no buffer
//! between requests.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::h1::H1Conn;
use super::h2::H2Conn;
use super::sessions::UserSessionStore;
use super::tls::TlsStream;
use super::{HttpVersion, RequestError, RequestErrorKind};

/// Where a connection goes: scheme and authority.
#[derive(Debug, Clone, Eq)]
pub(crate) struct Origin {
    pub(crate) tls: bool,
    pub(crate) authority: Authority,
}

impl PartialEq for Origin {
    fn eq(&self, other: &Origin) -> bool {
        // Origins cloned from one another share their authority's bytes: the pool's usual match, found without
        // `Authority`'s case-insensitive comparison.
        self.tls == other.tls
            && (std::ptr::eq(self.authority.as_str(), other.authority.as_str())
                || self.authority == other.authority)
    }
}

impl Origin {
    /// Whether a URL with this scheme and authority was built from this origin ([`BaseUrl`](super::BaseUrl)
    /// resolves relative paths with a clone of its origin's authority, whose bytes it shares): then its origin is
    /// this one, without parsing the authority again.
    pub(crate) fn built_this(&self, scheme: &Scheme, authority: &Authority) -> bool {
        std::ptr::eq(self.authority.as_str(), authority.as_str()) && *scheme == self.scheme()
    }

    /// The origin of a URL's scheme and authority. Credentials (`user:pass@`) are left out of it (they travel as
    /// an `Authorization` header, never in `Host`), and the port is checked: `http` parses any digits but then
    /// reports an out-of-range port as no port at all, which would silently send the requests to port 80 or 443.
    pub(crate) fn new(scheme: &Scheme, authority: &Authority) -> Result<Origin, String> {
        let tls = if *scheme == Scheme::HTTPS {
            true
        } else if *scheme == Scheme::HTTP {
            false
        } else {
            return Err(format!("unsupported scheme `{scheme}` (use http or https)"));
        };
        let text = authority.as_str();
        let host_and_port = text.rsplit_once('@').map_or(text, |(_, rest)| rest);
        let host = authority.host();
        if host.is_empty() || host == "[]" {
            return Err("it has no host name".to_string());
        }
        let port_text = host_and_port
            .get(host.len()..)
            .and_then(|rest| rest.strip_prefix(':'))
            .unwrap_or("");
        if !port_text.is_empty() {
            match port_text.parse::<u32>() {
                Ok(port) if (1..=u32::from(u16::MAX)).contains(&port) => {}
                Ok(port) => {
                    return Err(format!("port {port} is out of range (use 1 to 65535)"));
                }
                Err(_) => return Err(format!("port `{port_text}` is not a number")),
            }
        }
        let authority = if host_and_port.len() == text.len() {
            authority.clone()
        } else {
            Authority::try_from(host_and_port).map_err(|e| e.to_string())?
        };
        Ok(Origin { tls, authority })
    }

    pub(crate) fn scheme(&self) -> Scheme {
        if self.tls {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }

    fn host(&self) -> &str {
        let host = self.authority.host();
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }

    fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.tls { 443 } else { 80 })
    }
}

/// A TCP stream, with or without TLS.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Stream::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(stream) => stream.is_write_vectored(),
            Stream::Tls(stream) => stream.is_write_vectored(),
        }
    }
}

/// One open connection.
pub(crate) enum Conn {
    H1(H1Conn),
    /// Boxed: its state is twice an HTTP/1.1 connection's, and a connection is moved in and out of the pool on
    /// every request.
    H2(Box<H2Conn>),
}

impl Conn {
    fn usable(&mut self) -> bool {
        match self {
            Conn::H1(h1) => h1.still_open(),
            Conn::H2(h2) => h2.still_open(),
        }
    }
}

/// Idle connections of one user (or of a user type with a shared pool), at most one per origin for users.
pub(crate) struct Pool {
    idle: Vec<(Origin, Conn)>,
    max_idle: usize,
}

impl Pool {
    pub(crate) fn new(max_idle: usize) -> Self {
        Pool {
            idle: Vec::new(),
            max_idle,
        }
    }

    /// Take an idle, still-open connection to `origin`.
    pub(crate) fn checkout(&mut self, origin: &Origin) -> Option<Conn> {
        while let Some(index) = self.idle.iter().position(|(o, _)| o == origin) {
            let (_, mut conn) = self.idle.swap_remove(index);
            if conn.usable() {
                return Some(conn);
            }
        }
        None
    }

    /// Give a connection back. At the bound, the oldest idle connection is closed to make room.
    pub(crate) fn checkin(&mut self, origin: Origin, conn: Conn) {
        if self.idle.len() >= self.max_idle {
            self.idle.remove(0);
        }
        if self.idle.capacity() == 0 {
            // Room for one: most users talk to one origin, and a plain push reserves four slots (about 400 bytes
            // more per user, measured with heaptrack on idle TLS users).
            self.idle.reserve_exact(1);
        }
        self.idle.push((origin, conn));
    }

    pub(crate) fn len(&self) -> usize {
        self.idle.len()
    }

    /// Frees the buffers of the idle connections (see [`H1Conn::release_buffers`]).
    pub(crate) fn release_buffers(&mut self) {
        for (_, conn) in &mut self.idle {
            match conn {
                Conn::H1(h1) => h1.release_buffers(),
                Conn::H2(h2) => h2.release_buffers(),
            }
        }
    }
}

/// Everything needed to open connections for one user type.
pub(crate) struct Connector {
    /// The type's TLS configuration, shared by its users when they share TLS sessions.
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// The same configuration routing sessions to each user's own store, when users keep their own (see
    /// [`super::sessions`]).
    pub(crate) tls_per_user: Option<Arc<rustls::ClientConfig>>,
    pub(crate) http: HttpVersion,
    pub(crate) connect_timeout: Duration,
}

impl Connector {
    /// Opens a connection to `origin`; over TLS, `sessions` (the user's own, when users keep their own) are the
    /// ones the handshake resumes from and stores into.
    pub(crate) async fn connect(
        &self,
        origin: &Origin,
        sessions: Option<Arc<UserSessionStore>>,
    ) -> Result<Conn, RequestError> {
        let tcp = self.open_tcp(origin).await?;
        let (stream, h2) = if origin.tls {
            let server_name = rustls::pki_types::ServerName::try_from(origin.host().to_string())
                .map_err(|e| {
                    RequestError::new(
                        RequestErrorKind::InvalidUrl,
                        format!("invalid TLS server name `{}`: {e}", origin.host()),
                    )
                })?;
            let handshake = tokio::time::timeout(
                self.connect_timeout,
                super::tls::connect_with_sessions(
                    self.tls_for(&sessions),
                    server_name,
                    tcp,
                    sessions,
                ),
            );
            let stream = match handshake.await {
                Err(_) => {
                    return Err(RequestError::new(
                        RequestErrorKind::Timeout,
                        format!("TLS handshake with {} timed out", origin.authority),
                    ));
                }
                Ok(Err(error)) => {
                    return Err(RequestError::new(
                        RequestErrorKind::Tls,
                        format!("TLS handshake with {} failed: {error}", origin.authority),
                    ));
                }
                Ok(Ok(stream)) => stream,
            };
            let h2 = stream.alpn_protocol() == Some(b"h2");
            (Stream::Tls(stream), h2)
        } else {
            (Stream::Plain(tcp), self.http == HttpVersion::Http2)
        };
        if h2 {
            Ok(Conn::H2(Box::new(H2Conn::new(stream))))
        } else {
            Ok(Conn::H1(H1Conn::new(stream)))
        }
    }

    fn tls_for(&self, sessions: &Option<Arc<UserSessionStore>>) -> Arc<rustls::ClientConfig> {
        match (&self.tls_per_user, sessions) {
            (Some(routed), Some(_)) => routed.clone(),
            _ => self.tls.clone(),
        }
    }

    async fn open_tcp(&self, origin: &Origin) -> Result<TcpStream, RequestError> {
        let host = origin.host();
        let port = origin.port();
        let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match tokio::net::lookup_host((host, port)).await {
                Ok(found) => found.collect(),
                Err(error) => {
                    return Err(RequestError::new(
                        RequestErrorKind::Dns,
                        format!("could not resolve host `{host}`: {error}"),
                    ));
                }
            },
        };
        let mut last_error = None;
        for address in &addresses {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    // Requests are small and latency-bound: never wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(error)) => last_error = Some(connect_error(*address, &error)),
                Err(_) => {
                    last_error = Some(RequestError::new(
                        RequestErrorKind::Timeout,
                        format!(
                            "connecting to {address} timed out after {:?}",
                            self.connect_timeout
                        ),
                    ))
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            RequestError::new(
                RequestErrorKind::Dns,
                format!("host `{host}` resolved to no address"),
            )
        }))
    }
}

fn connect_error(address: SocketAddr, error: &io::Error) -> RequestError {
    let what = match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        _ => error.to_string(),
    };
    RequestError::new(RequestErrorKind::Connect, format!("{what} ({address})"))
}

/// Build the TLS client configuration of a user type.
pub(crate) fn tls_config(
    http: HttpVersion,
    insecure: bool,
    session_resumption: bool,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
            .with_no_client_auth()
    } else {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = match http {
        HttpVersion::Http1 => vec![b"http/1.1".to_vec()],
        HttpVersion::Http2 => vec![b"h2".to_vec()],
        HttpVersion::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    if !session_resumption {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Ok(config)
}

/// Skips certificate checks, for test targets with self-signed certificates. Signatures are still verified, so the
/// handshake is otherwise real.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
