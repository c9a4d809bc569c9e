//! The master's listening socket with a bound on open connections: each accepted connection holds a permit
//! until it closes, and a connection beyond the bound is closed at once (the peer sees a reset and, if it is a
//! worker, retries with backoff). So a flood of connections (garbage, port scanners, plain HTTP) costs the master
//! a bounded number of sockets and never stops the accept loop.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Pause after an accept error (out of file descriptors, say), so that the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// At most one warning about refused connections per this interval.
const REFUSAL_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// An accepted connection that holds one of the listener's permits until it closes.
pub(crate) struct BoundedConnection {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for BoundedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for BoundedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoundedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Counts of what the accept loop did, for [`crate::MasterCounters`].
#[derive(Debug, Default)]
pub(crate) struct ListenerCounters {
    pub(crate) accepted: std::sync::atomic::AtomicU64,
    pub(crate) refused_over_limit: std::sync::atomic::AtomicU64,
}

/// Accepts connections until `shutdown` turns true, handing at most `max_connections` open ones to the server.
pub(crate) fn bounded_incoming(
    listener: TcpListener,
    max_connections: usize,
    counters: Arc<ListenerCounters>,
    mut shutdown: watch::Receiver<bool>,
) -> (
    ReceiverStream<io::Result<BoundedConnection>>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let (sender, receiver) = mpsc::channel(16);
    let permits = Arc::new(Semaphore::new(max_connections));
    // Ends on shutdown, which closes the listening socket (a new master may then bind the port).
    let accept_loop = tokio::spawn(async move {
        let mut last_warning: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                biased;
                () = super::session::turned_true(&mut shutdown) => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!("the cluster port cannot accept a connection: {error}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                counters.refused_over_limit.fetch_add(1, Relaxed);
                if last_warning.is_none_or(|at| at.elapsed() >= REFUSAL_WARNING_INTERVAL) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(
                        "refused a connection from {peer}: {max_connections} connections are open, the most the \
                         master accepts (raise max_workers if more workers should attach)"
                    );
                }
                drop(stream);
                continue;
            };
            counters.accepted.fetch_add(1, Relaxed);
            // Heartbeats are small and latency matters more than packet count.
            let _ = stream.set_nodelay(true);
            let connection = BoundedConnection {
                stream,
                _permit: permit,
            };
            if sender.send(Ok(connection)).await.is_err() {
                break;
            }
        }
    });
    (ReceiverStream::new(receiver), accept_loop)
}
