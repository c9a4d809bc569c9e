//! Helpers for the cluster tests: masters and workers on 127.0.0.1 with ephemeral ports, bounded waits for
//! events, a raw protocol client that can fall silent on purpose, and a TCP proxy that can cut or black-hole
//! the connections between a worker and its master.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cicada_cluster::proto::{self, master_message, worker_message};
use cicada_cluster::{
    MasterConfig, MasterEvent, MasterHandle, MasterServer, PROTOCOL_VERSION, TestIdentity,
    WorkerClient, WorkerConfig, WorkerEvent, WorkerHandle,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

/// The longest any single wait in these tests may take.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

pub(crate) const VERSION: &str = "0.1.0-test";

pub(crate) fn test_identity() -> TestIdentity {
    TestIdentity::new(
        "fp-1",
        "user Visitor weight 1\ntask Visitor.index weight 1\ntask Visitor.view_item weight 3",
    )
}

pub(crate) fn master_config() -> MasterConfig {
    MasterConfig {
        bind_port: 0,
        version: VERSION.into(),
        test: test_identity(),
        ..MasterConfig::default()
    }
}

pub(crate) fn worker_config(master: SocketAddr) -> WorkerConfig {
    WorkerConfig {
        master_host: master.ip().to_string(),
        master_port: master.port(),
        version: VERSION.into(),
        test: test_identity(),
        ..WorkerConfig::default()
    }
}

pub(crate) async fn start_master(
    config: MasterConfig,
) -> (MasterHandle, mpsc::Receiver<MasterEvent>) {
    MasterServer::start(config)
        .await
        .expect("the master starts")
}

pub(crate) fn start_worker(config: WorkerConfig) -> (WorkerHandle, mpsc::Receiver<WorkerEvent>) {
    WorkerClient::start(config).expect("the worker starts")
}

/// The next event that `wanted` accepts, within `PATIENCE`; panics naming what arrived instead.
pub(crate) async fn expect_event<T: Debug>(
    events: &mut mpsc::Receiver<T>,
    what: &str,
    mut wanted: impl FnMut(&T) -> bool,
) -> T {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if wanted(&event) => return event,
            Ok(Some(event)) => {
                if seen.len() < 50 {
                    seen.push(format!("{event:?}"));
                }
            }
            Ok(None) => panic!("the channel closed while waiting for {what}; saw {seen:#?}"),
            Err(_) => panic!("no {what} within {PATIENCE:?}; saw {seen:#?}"),
        }
    }
}

/// Waits until `condition` holds, checking every 20 ms, within `PATIENCE`.
pub(crate) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The master's id of a worker, from its `WorkerConnected`.
pub(crate) async fn connected_worker(events: &mut mpsc::Receiver<MasterEvent>) -> String {
    match expect_event(events, "a connected worker", |event| {
        matches!(event, MasterEvent::WorkerConnected(_))
    })
    .await
    {
        MasterEvent::WorkerConnected(info) => info.id.to_string(),
        _ => unreachable!(),
    }
}

/// A worker speaking the protocol by hand: it sends exactly what the test says, and nothing when it is
/// silent.
pub(crate) struct RawWorker {
    pub(crate) outbound: mpsc::Sender<proto::WorkerMessage>,
    pub(crate) inbound: tonic::Streaming<proto::MasterMessage>,
}

pub(crate) fn raw_attach_message(worker_id: &str, incarnation: u64) -> proto::Attach {
    let test = test_identity();
    proto::Attach {
        worker_id: worker_id.into(),
        hostname: "raw-host".into(),
        version: VERSION.into(),
        test_fingerprint: test.fingerprint,
        token: String::new(),
        pid: 4242,
        cores: 1,
        protocol: PROTOCOL_VERSION,
        incarnation,
        test_summary: test.summary,
        status: None,
    }
}

impl RawWorker {
    /// Opens a session and sends `first` (normally an attach); answers the worker and the master's first
    /// message.
    pub(crate) async fn open(
        master: SocketAddr,
        first: proto::WorkerMessage,
    ) -> (Self, proto::MasterMessage) {
        let mut client = proto::cluster_client::ClusterClient::connect(format!("http://{master}"))
            .await
            .expect("connects");
        let (outbound, stream) = mpsc::channel(64);
        outbound.send(first).await.unwrap();
        let response = tokio::time::timeout(PATIENCE, client.session(ReceiverStream::new(stream)))
            .await
            .expect("the session opens in time")
            .expect("the session opens");
        let mut inbound = response.into_inner();
        let answer = tokio::time::timeout(PATIENCE, inbound.message())
            .await
            .expect("an answer in time")
            .expect("an answer")
            .expect("a message");
        (Self { outbound, inbound }, answer)
    }

    pub(crate) async fn attach(
        master: SocketAddr,
        attach: proto::Attach,
    ) -> (Self, proto::MasterMessage) {
        Self::open(
            master,
            proto::WorkerMessage {
                kind: Some(worker_message::Kind::Attach(attach)),
            },
        )
        .await
    }

    pub(crate) async fn send(&self, kind: worker_message::Kind) {
        self.outbound
            .send(proto::WorkerMessage { kind: Some(kind) })
            .await
            .expect("the session is open");
    }

    pub(crate) async fn heartbeat(&self, seq: u64) {
        self.send(worker_message::Kind::Heartbeat(proto::WorkerHeartbeat {
            seq,
            user_count: 3,
            ..proto::WorkerHeartbeat::default()
        }))
        .await;
    }

    /// The next command the master sends, skipping heartbeats.
    pub(crate) async fn next_command(&mut self) -> proto::Command {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.inbound.message())
                .await
                .expect("a message in time")
                .expect("the stream works")
                .expect("the stream is open");
            if let Some(master_message::Kind::Command(command)) = message.kind {
                return command;
            }
        }
    }
}

pub(crate) fn accepted(message: &proto::MasterMessage) -> &proto::Accepted {
    match &message.kind {
        Some(master_message::Kind::Accepted(accepted)) => accepted,
        other => panic!("expected accepted, got {other:?}"),
    }
}

pub(crate) fn refused(message: &proto::MasterMessage) -> &proto::Refused {
    match &message.kind {
        Some(master_message::Kind::Refused(refused)) => refused,
        other => panic!("expected refused, got {other:?}"),
    }
}

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyMode {
    /// Bytes flow both ways.
    Forward,
    /// Connections stay open and nothing gets through either way (a network that silently lost its route:
    /// bytes wait, as TCP's would, until the mode changes or the connection is closed).
    Stall,
    /// Bytes from the worker reach the master, the master's answers wait.
    MasterMuted,
    /// Open connections are closed and new ones refused.
    Refuse,
}

/// A TCP proxy on 127.0.0.1 in front of a master.
pub(crate) struct Proxy {
    pub(crate) address: SocketAddr,
    mode: Arc<Mutex<ProxyMode>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept_loop: JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(master: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(ProxyMode::Forward));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept_loop = {
            let mode = Arc::clone(&mode);
            let connections = Arc::clone(&connections);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if *mode.lock().unwrap() == ProxyMode::Refuse {
                        drop(client);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(master).await else {
                        continue;
                    };
                    let mode = Arc::clone(&mode);
                    let task = tokio::spawn(pump_both(client, server, mode));
                    let mut connections = connections.lock().unwrap();
                    connections.retain(|task| !task.is_finished());
                    connections.push(task);
                }
            })
        };
        Self {
            address,
            mode,
            connections,
            accept_loop,
        }
    }

    pub(crate) fn set(&self, mode: ProxyMode) {
        *self.mode.lock().unwrap() = mode;
        if mode == ProxyMode::Refuse {
            self.close_all();
        }
    }

    /// Closes every open connection (both sides see a reset or an end of stream).
    pub(crate) fn close_all(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
        self.close_all();
    }
}

async fn pump_both(client: TcpStream, server: TcpStream, mode: Arc<Mutex<ProxyMode>>) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let upstream = pump(client_read, server_write, Arc::clone(&mode), |mode| {
        matches!(mode, ProxyMode::Stall)
    });
    let downstream = pump(server_read, client_write, mode, |mode| {
        matches!(mode, ProxyMode::Stall | ProxyMode::MasterMuted)
    });
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<Mutex<ProxyMode>>,
    holds: fn(ProxyMode) -> bool,
) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        // Held, not dropped: a stalled route delays bytes, it does not lose them from the middle of a stream.
        while holds(*mode.lock().unwrap()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
