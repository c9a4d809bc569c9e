//! Accepting connections and serving each with hyper's auto (HTTP/1.1 or h2c)
//! builder, plus the shutdown protocol: dropping the [`DemoServer`] handle
//! closes a watch channel every task listens to.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::counters::DemoCounters;
use crate::routes::{self, AppState};

/// How long in-flight requests get to finish once shutdown starts, before
/// their connections are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// A running demo server. Dropping it or calling [`shutdown`](Self::shutdown)
/// stops it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let server = cicada_demo::DemoServer::start("127.0.0.1:0".parse().unwrap()).await?;
/// let port = server.local_addr().port();
/// assert_eq!(server.url(), format!("http://127.0.0.1:{port}"));
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct DemoServer {
    local_addr: SocketAddr,
    state: Arc<AppState>,
    /// Never sent on: dropping it is the stop signal.
    stop: watch::Sender<()>,
    accept_task: JoinHandle<()>,
}

impl DemoServer {
    /// Binds `addr` (port 0 picks a free port) and serves on the current tokio
    /// runtime until the returned handle is dropped or shut down.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let server = cicada_demo::DemoServer::start("127.0.0.1:0".parse().unwrap()).await?;
    /// assert_ne!(server.local_addr().port(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start(addr: SocketAddr) -> std::io::Result<DemoServer> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let state = Arc::new(AppState::default());
        let (stop, stopped) = watch::channel(());
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&state), stopped));
        Ok(DemoServer {
            local_addr,
            state,
            stop,
            accept_task,
        })
    }

    /// The address actually bound, with the real port when 0 was asked for.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let server = cicada_demo::DemoServer::start("127.0.0.1:0".parse().unwrap()).await?;
    /// assert!(server.local_addr().ip().is_loopback());
    /// # Ok(())
    /// # }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Base URL of the server, such as `http://127.0.0.1:8089`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let server = cicada_demo::DemoServer::start("127.0.0.1:0".parse().unwrap()).await?;
    /// assert!(server.url().starts_with("http://127.0.0.1:"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Live counters of requests and connections seen by this server.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let server = cicada_demo::DemoServer::start("127.0.0.1:0".parse().unwrap()).await?;
    /// assert_eq!(server.counters().total(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn counters(&self) -> &DemoCounters {
        &self.state.counters
    }

    /// Stops accepting, lets in-flight requests finish for up to a second,
    /// then closes every connection and returns.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let server = cicada_demo::DemoServer::start("127.0.0.1:0".parse().unwrap()).await?;
    /// let addr = server.local_addr();
    /// server.shutdown().await;
    /// assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(self) {
        let DemoServer {
            stop, accept_task, ..
        } = self;
        drop(stop);
        // The accept task never panics; a JoinError could only mean the
        // runtime is shutting down, which stops everything anyway.
        let _ = accept_task.await;
    }
}

/// Serves the demo app on `addr` until the process ends; used by the
/// `cicada demo` command. Prints nothing: the caller reports the address.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> std::io::Result<()> {
/// cicada_demo::serve_forever("127.0.0.1:8089".parse().unwrap()).await
/// # }
/// ```
pub async fn serve_forever(addr: SocketAddr) -> std::io::Result<()> {
    let _server = DemoServer::start(addr).await?;
    std::future::pending::<()>().await;
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    mut stopped: watch::Receiver<()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A timer lets hyper enforce its header-read timeout and h2 keep-alive.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // The only "change" is the sender being dropped.
            _ = stopped.changed() => break,
            // Reap finished connection tasks so the set only holds open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    state.counters.record_connection();
                    connections.spawn(serve_connection(
                        stream,
                        Arc::clone(&builder),
                        Arc::clone(&state),
                        stopped.clone(),
                    ));
                }
                Err(_) => tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await,
            },
        }
    }
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, drained).await;
    connections.shutdown().await;
}

async fn serve_connection(
    stream: TcpStream,
    builder: Arc<auto::Builder<TokioExecutor>>,
    state: Arc<AppState>,
    mut stopped: watch::Receiver<()>,
) {
    // Small responses must not wait for Nagle's algorithm, or latency
    // measurements against this server would be skewed.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| routes::handle(Arc::clone(&state), request));
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    // Connection errors (resets, malformed requests) only end this connection.
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stopped.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
