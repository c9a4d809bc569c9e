//! The web UI: start, reshape and stop a test from a browser, and watch it live.
//!
//! An axum server on `--web-host:--web-port` serves the UI (built from `web/` with npm and embedded at compile time)
//! and a JSON API with Locust's routes and shapes (`POST /swarm`, `POST /stop`, `POST /stats/reset`,
//! `/stats/requests`, `/exceptions`, `/tasks`, the CSV downloads, `/stats/report`), typed in [`schema`]. Live data
//! goes out as server-sent events about once a second; every payload is bounded (at most 1,000 stats rows, 100
//! failure groups and user errors, 2,000 history points, 500 log lines), so a 24-hour test with many names stays
//! light in the browser. [`access`] refuses requests that do not name the UI as their host or come from another site;
//! optional basic authentication and TLS.

mod access;
mod api;
pub(crate) mod schema;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::environment::Environment;
use crate::guard::Guard;
use crate::user::run::SpawnUser;

/// Why the web UI could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source} (is the port in use? try --web-port 0)")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// `--tls-cert` / `--tls-key` could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// `--web-login` is not `user:password` (or a file holding it).
    #[error("--web-login: {0}")]
    Login(String),
    /// A `--web-allowed-host` value is not a host name or address.
    #[error("--web-allowed-host: {0}")]
    AllowedHost(String),
}

/// How the UI is served.
#[derive(Debug, Clone)]
pub(crate) struct WebSettings {
    pub(crate) address: SocketAddr,
    /// `user:password` for basic authentication.
    pub(crate) login: Option<String>,
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
}

/// What the handlers share.
pub(crate) struct WebContext {
    pub(crate) env: Arc<Environment>,
    pub(crate) guard: Option<Guard>,
    pub(crate) spawners: Vec<Arc<dyn SpawnUser>>,
    /// The user types' weight-based shares, computed before the run (ratios do not change); read as
    /// [`schema::TaskShares`].
    pub(crate) tasks: serde_json::Value,
    pub(crate) type_names: Vec<String>,
    pub(crate) clock: crate::app::RunClock,
    /// A master's cluster: its workers are listed in the API and the UI.
    pub(crate) cluster: Option<cicada_cluster::MasterHandle>,
    /// A master's view of its workers' capacity: users held back, workers over their limits.
    pub(crate) cluster_health: Option<std::sync::Arc<crate::cluster::health::ClusterHealth>>,
}

/// Start serving; returns the bound address.
pub(crate) async fn start(
    settings: &WebSettings,
    context: Arc<WebContext>,
) -> Result<SocketAddr, WebError> {
    let login = match &settings.login {
        Some(login) => Some(read_login(login)?),
        None => None,
    };
    let policy = Arc::new(
        access::HostPolicy::new(&context.env.options().web_allowed_hosts)
            .map_err(WebError::AllowedHost)?,
    );
    let mut router = api::routes(context);
    if let Some(expected) = login {
        let expected = Arc::new(expected);
        router = router.layer(middleware::from_fn(
            move |request: Request<Body>, next: Next| {
                let expected = expected.clone();
                async move { check_login(&expected, request, next).await }
            },
        ));
    }
    // Added last, so it runs first: a request for another host is refused before it is asked for a password.
    router = router.layer(middleware::from_fn(
        move |request: Request<Body>, next: Next| access::check(policy.clone(), request, next),
    ));
    let listener = tokio::net::TcpListener::bind(settings.address)
        .await
        .map_err(|source| WebError::Bind {
            address: settings.address,
            source,
        })?;
    let address = listener.local_addr().map_err(|source| WebError::Bind {
        address: settings.address,
        source,
    })?;
    let acceptor = match &settings.tls {
        None => None,
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
    };
    tokio::spawn(serve(listener, acceptor, router));
    Ok(address)
}

/// `user:password`, or `@FILE` / a path to a file holding it.
fn read_login(login: &str) -> Result<String, WebError> {
    let text = match login.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| WebError::Login(format!("cannot read {path}: {e}")))?
            .trim()
            .to_string(),
        None => login.to_string(),
    };
    if !text.contains(':') || text.starts_with(':') {
        return Err(WebError::Login(
            "expected user:password (or @FILE with user:password in it)".to_string(),
        ));
    }
    Ok(text)
}

async fn check_login(expected: &str, request: Request<Body>, next: Next) -> Response {
    use base64::Engine;
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| {
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
        })
        .and_then(|decoded| String::from_utf8(decoded).ok());
    if given.as_deref() == Some(expected) {
        return next.run(request).await;
    }
    let mut response = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"cicada\""),
    );
    response
}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> Result<tokio_rustls::TlsAcceptor, WebError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| WebError::Tls(format!("--tls-cert {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| WebError::Tls(format!("--tls-cert {}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| WebError::Tls(format!("--tls-key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| WebError::Tls(format!("the certificate and key do not go together: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections for as long as the process runs; each request carries its connection's [`access::Arrival`].
async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(error) => {
                // Out of file descriptors and the like: wait instead of spinning on the error.
                tracing::debug!("the web UI could not accept a connection: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(local) = tcp.local_addr() else {
            continue;
        };
        let arrival = access::Arrival {
            local,
            tls: acceptor.is_some(),
        };
        let service = hyper_util::service::TowerToHyperService::new(
            router.clone().layer(axum::Extension(arrival)),
        );
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let _ = match acceptor {
                None => {
                    builder
                        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tcp), service)
                        .await
                }
                Some(acceptor) => {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    builder
                        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service)
                        .await
                }
            };
        });
    }
}
