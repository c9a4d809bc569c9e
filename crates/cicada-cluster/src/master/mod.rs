//! The master's side: [`MasterServer::start`] binds the cluster port and serves one session per worker;
//! [`MasterHandle`] sends commands and reads the registry; [`MasterEvent`]s tell the embedding code what the
//! workers do. See the crate documentation for the protocol and the failure rules.

mod health;
mod listener;
mod registry;
mod session;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::proto;
use crate::tls::MasterTls;
use crate::types::{
    Command, LogLevel, Refusal, TestIdentity, TestSource, Token, WorkerId, WorkerStatus,
};
use crate::{DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PORT};

pub use health::CLUSTER_SERVICE;
use registry::Registry;

/// How the master is set up. [`MasterConfig::default`] binds 127.0.0.1:5557 with Locust's timings.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// The address to listen on (`--master-bind-host`): an IP address, a host name, or `*` for every IPv4
    /// address. Default 127.0.0.1; any address that is not loopback requires a token.
    pub bind_host: String,
    /// The port (`--master-bind-port`); 0 picks a free one ([`MasterHandle::local_addr`] says which).
    pub bind_port: u16,
    /// The embedding program's version: workers must run the same.
    pub version: String,
    /// The test: workers must run the same.
    pub test: TestIdentity,
    /// The shared token workers must present; required when `bind_host` is not loopback.
    pub token: Option<Token>,
    /// TLS (and mTLS) for the cluster port.
    pub tls: Option<MasterTls>,
    /// Sent to workers in `Accepted`; [`MasterHandle::set_run_id`] changes it.
    pub run_id: String,
    /// Interval of the master's heartbeats to each worker.
    pub heartbeat_interval: Duration,
    /// A worker silent this long is missing (Locust: 3 heartbeats).
    pub missing_after: Duration,
    /// A worker missing this long is forgotten ([`MasterEvent::WorkerGone`] with [`GoneReason::Lost`]).
    pub forget_missing_after: Duration,
    /// How long a new session may take to send its `Attach`.
    pub attach_timeout: Duration,
    /// Bound on registered workers, connected and missing; a new worker beyond is refused as full. Open
    /// connections are bounded at twice this plus 64 (a reconnecting worker briefly holds two).
    pub max_workers: usize,
    /// Bound on one message in either direction (tonic's decoding limit), in bytes.
    pub max_message_bytes: usize,
    /// Bound on each worker's outbox: messages queued and commands written but not yet acknowledged (in
    /// bytes, at most `worker_queue × max_message_bytes` per worker; commands are usually well under 1 KiB).
    pub worker_queue: usize,
    /// Capacity of the event channel; a full channel pauses the sessions (see [`MasterEvent`]). In bytes, at
    /// most `event_queue × max_message_bytes` (deltas are usually a few KiB).
    pub event_queue: usize,
    /// The test as source, served to workers started without one (`FetchTest`); `None` for a compiled test.
    pub test_source: Option<TestSource>,
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            bind_host: Ipv4Addr::LOCALHOST.to_string(),
            bind_port: DEFAULT_PORT,
            version: String::new(),
            test: TestIdentity::default(),
            token: None,
            tls: None,
            run_id: String::new(),
            heartbeat_interval: Duration::from_secs(1),
            missing_after: Duration::from_secs(3),
            forget_missing_after: Duration::from_secs(60),
            attach_timeout: Duration::from_secs(10),
            max_workers: 10_000,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            worker_queue: 256,
            event_queue: 4096,
            test_source: None,
        }
    }
}

/// Why the master could not start.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The bind host is neither an address nor a name that resolves.
    #[error(
        "cannot resolve the master bind host {host:?}: {reason}: give an IP address such as 127.0.0.1 or 0.0.0.0"
    )]
    Resolve {
        /// The host as given.
        host: String,
        /// Why.
        reason: String,
    },
    /// A non-loopback bind address without a token would let anyone on the network drive the workers.
    #[error(
        "the master would listen on {address}, which other machines can reach, without a cluster token: set one \
         (--cluster-token or CICADA_CLUSTER_TOKEN) and give the workers the same, or bind 127.0.0.1"
    )]
    TokenRequired {
        /// The address.
        address: SocketAddr,
    },
    /// The port could not be bound.
    #[error(
        "cannot listen for workers on {address}: {source} (is another master running? choose another --master-bind-port)"
    )]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key is not usable.
    #[error("the master's TLS certificate or key is not usable: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// A setting is out of range.
    #[error("invalid master setting: {0}")]
    Config(String),
    /// `start` was called outside a tokio runtime.
    #[error("MasterServer::start must be called inside a tokio runtime")]
    NoRuntime,
}

/// Whether a registered worker is heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Presence {
    /// Heard from within `missing_after`.
    Connected,
    /// Silent for `missing_after` or more.
    Missing,
}

/// A snapshot of one registered worker.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerInfo {
    /// Its id.
    pub id: WorkerId,
    /// The host it runs on, as it says.
    pub hostname: String,
    /// The embedding program's version.
    pub version: String,
    /// Its process id.
    pub pid: u32,
    /// Its CPU cores.
    pub cores: u32,
    /// The address its current (or last) session came from.
    pub address: Option<SocketAddr>,
    /// What its last heartbeat said.
    pub status: WorkerStatus,
    /// Connected or missing.
    pub presence: Presence,
    /// Time since anything was heard from it.
    pub silent_for: Duration,
    /// When it first attached (this incarnation).
    pub attached_at: SystemTime,
    /// Sessions after the first.
    pub reconnects: u32,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Statistics deltas received (duplicates not counted).
    pub deltas_received: u64,
    /// Deltas the master never received: holes in the sequence.
    pub deltas_lost: u64,
    /// Deltas the worker says it dropped (its buffer was full).
    pub deltas_dropped_by_worker: u64,
    /// Messages in its outbox: queued, or commands not yet acknowledged.
    pub queued_messages: usize,
}

/// Why a worker left the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoneReason {
    /// It said it was leaving (it quits).
    Left {
        /// What it said.
        reason: String,
    },
    /// Missing for `forget_missing_after`.
    Lost,
    /// A new process attached under its id.
    Replaced,
    /// [`MasterHandle::forget`].
    Forgotten,
}

/// What happens in the cluster, in order per worker.
///
/// Flow control: the sessions wait for room in the event channel, so a master that stops reading events stops
/// reading from its workers (their deltas wait in their own bounded buffers) but never loses an event; a
/// session waiting for room does not count as silence. Only [`MasterEvent::WorkerRefused`] is dropped when
/// the channel is full (counted in [`MasterCounters::refusals_not_reported`]), so that a flood of bad peers
/// cannot crowd out the workers.
#[derive(Debug, Clone, PartialEq)]
pub enum MasterEvent {
    /// A worker attached for the first time (or under a new process).
    WorkerConnected(WorkerInfo),
    /// A worker was silent for `missing_after`: give its users to the others.
    WorkerMissing {
        /// The worker.
        worker: WorkerId,
    },
    /// A missing worker is heard from again (its session woke up, or it reconnected): its commands not yet
    /// acknowledged are sent again; take it back and rebalance.
    WorkerBack {
        /// The worker.
        worker: WorkerId,
    },
    /// A worker left the registry.
    WorkerGone {
        /// The worker.
        worker: WorkerId,
        /// Why.
        reason: GoneReason,
    },
    /// A peer was refused at attach.
    WorkerRefused {
        /// The worker id it gave (empty if none).
        worker: String,
        /// The hostname it gave.
        hostname: String,
        /// Where it connected from.
        address: Option<SocketAddr>,
        /// Why.
        refusal: Refusal,
    },
    /// A worker's heartbeat.
    Heartbeat {
        /// The worker.
        worker: WorkerId,
        /// What it says about itself.
        status: WorkerStatus,
    },
    /// Statistics from a worker, each delivered once, in the worker's order.
    StatsDelta {
        /// The worker.
        worker: WorkerId,
        /// The last interval the payload covers.
        seq: u64,
        /// The first interval it covers (less than `seq` when the worker merged buffered deltas).
        covers_from: u64,
        /// Deltas before this one that never arrived (the worker dropped them).
        lost_before: u64,
        /// The delta, serialised by the embedding program.
        payload: Bytes,
    },
    /// A worker's users are stopped and every delta up to `final_seq` was delivered before this event.
    WorkerStopped {
        /// The worker.
        worker: WorkerId,
        /// The last delta it sent before stopping.
        final_seq: u64,
        /// Deltas of this worker lost so far (see [`WorkerInfo::deltas_lost`]).
        deltas_lost: u64,
    },
    /// A custom message from a worker.
    Custom {
        /// The worker.
        worker: WorkerId,
        /// Its kind, chosen by the embedding program.
        kind: String,
        /// Its content.
        payload: Bytes,
    },
    /// A log line forwarded by a worker.
    Log {
        /// The worker.
        worker: WorkerId,
        /// Its level.
        level: LogLevel,
        /// Its text.
        text: String,
    },
}

/// Why a message could not be queued for a worker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No worker with this id is registered.
    #[error("no worker {0} is registered")]
    UnknownWorker(String),
    /// The worker's outbox is full: it has not acknowledged `capacity` messages (it is stalled or missing).
    #[error(
        "the outbox of worker {worker} is full ({capacity} messages not yet delivered): the worker is stalled or missing"
    )]
    QueueFull {
        /// The worker.
        worker: WorkerId,
        /// The outbox bound.
        capacity: usize,
    },
    /// The message is larger than the message size limit.
    #[error("the message is {size} bytes, more than the {limit} bytes a cluster message may have")]
    TooLarge {
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The master is shut down.
    #[error("the master is shut down")]
    ShutDown,
}

/// What a broadcast did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Broadcast {
    /// Workers the message was queued for, with the command's number where it is a command.
    pub queued: Vec<(WorkerId, u64)>,
    /// Workers it could not be queued for, and why.
    pub failed: Vec<(WorkerId, SendError)>,
}

/// Counts of what the master did, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MasterCounters {
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections closed at once because the connection bound was reached.
    pub connections_refused: u64,
    /// Attaches refused (token, version, test, full, malformed).
    pub refusals: u64,
    /// Refusals not reported as events because the event channel was full.
    pub refusals_not_reported: u64,
    /// Sessions that ended without a valid attach (timeout, garbage, closed early).
    pub sessions_without_attach: u64,
}

/// Settings the sessions read, fixed at start.
pub(crate) struct Settings {
    pub(crate) version: String,
    pub(crate) test: TestIdentity,
    pub(crate) token: Option<Token>,
    pub(crate) master_id: String,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) missing_after: Duration,
    pub(crate) forget_missing_after: Duration,
    pub(crate) attach_timeout: Duration,
    pub(crate) max_message_bytes: usize,
    pub(crate) worker_queue: usize,
    pub(crate) test_source: Option<TestSource>,
}

/// What the service, the liveness task and every handle share.
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) run_id: Mutex<String>,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) events: mpsc::Sender<MasterEvent>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) refusals: AtomicU64,
    pub(crate) refusals_not_reported: AtomicU64,
    pub(crate) sessions_without_attach: AtomicU64,
    listener_counters: Arc<listener::ListenerCounters>,
}

impl Shared {
    /// The registry; a panic while it was held leaves it usable (every change is a single step).
    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn run_id(&self) -> String {
        self.run_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The master's end of the cluster.
pub struct MasterServer;

impl MasterServer {
    /// Binds the cluster port and starts serving sessions. Must be called inside a tokio runtime; the server
    /// runs on it until [`MasterHandle::shutdown`].
    ///
    /// The event channel closes once the server has shut down and every [`MasterHandle`] is dropped.
    pub async fn start(
        config: MasterConfig,
    ) -> Result<(MasterHandle, mpsc::Receiver<MasterEvent>), MasterError> {
        validate(&config)?;
        tokio::runtime::Handle::try_current().map_err(|_| MasterError::NoRuntime)?;
        let address = resolve_bind(&config.bind_host, config.bind_port).await?;
        if !address.ip().is_loopback() && config.token.is_none() {
            return Err(MasterError::TokenRequired { address });
        }
        let mut server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .max_concurrent_streams(Some(4))
            .http2_max_header_list_size(Some(16 * 1024));
        if let Some(tls) = &config.tls {
            server = server
                .tls_config(tls.to_tonic())
                .map_err(MasterError::Tls)?;
        }
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| MasterError::Bind { address, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| MasterError::Bind { address, source })?;

        let (events, receiver) = mpsc::channel(config.event_queue);
        let (shutdown, _) = watch::channel(false);
        let listener_counters = Arc::new(listener::ListenerCounters::default());
        let shared = Arc::new(Shared {
            settings: Settings {
                version: config.version,
                test: config.test,
                token: config.token,
                master_id: format!("{:016x}", fastrand::u64(..)),
                heartbeat_interval: config.heartbeat_interval,
                missing_after: config.missing_after,
                forget_missing_after: config.forget_missing_after,
                attach_timeout: config.attach_timeout,
                max_message_bytes: config.max_message_bytes,
                worker_queue: config.worker_queue,
                test_source: config.test_source,
            },
            run_id: Mutex::new(config.run_id),
            registry: Mutex::new(Registry::new(config.max_workers, config.worker_queue)),
            events,
            shutdown,
            refusals: AtomicU64::new(0),
            refusals_not_reported: AtomicU64::new(0),
            sessions_without_attach: AtomicU64::new(0),
            listener_counters: Arc::clone(&listener_counters),
        });

        let (incoming, accept_task) = listener::bounded_incoming(
            listener,
            config.max_workers.saturating_mul(2).saturating_add(64),
            listener_counters,
            shared.shutdown.subscribe(),
        );
        let service = proto::cluster_server::ClusterServer::new(session::ClusterService::new(
            Arc::clone(&shared),
        ))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
        // The standard health service beside the sessions, for orchestrators' probes (see `health`).
        let router = server
            .add_service(health::serving().await)
            .add_service(service);
        let mut stop = shared.shutdown.subscribe();
        let server_task = tokio::spawn(async move {
            let signal = async move { session::turned_true(&mut stop).await };
            if let Err(error) = router.serve_with_incoming_shutdown(incoming, signal).await {
                tracing::error!("the cluster server stopped: {error}");
            }
        });
        let liveness_task = tokio::spawn(session::watch_liveness(Arc::clone(&shared)));
        tracing::info!(
            "the master listens for workers on {local_addr}{}",
            if config.tls.is_some() { " (TLS)" } else { "" }
        );
        let handle = MasterHandle {
            shared,
            local_addr,
            tasks: Arc::new(Mutex::new(vec![accept_task, server_task, liveness_task])),
        };
        Ok((handle, receiver))
    }
}

fn validate(config: &MasterConfig) -> Result<(), MasterError> {
    let checks = [
        (config.max_workers == 0, "max_workers must be at least 1"),
        (
            config.max_message_bytes < 1024,
            "max_message_bytes must be at least 1024",
        ),
        (config.worker_queue == 0, "worker_queue must be at least 1"),
        (config.event_queue < 16, "event_queue must be at least 16"),
        (
            config.heartbeat_interval.is_zero(),
            "heartbeat_interval must be more than zero",
        ),
        (
            config.missing_after <= config.heartbeat_interval,
            "missing_after must be longer than heartbeat_interval",
        ),
        (
            config.attach_timeout.is_zero(),
            "attach_timeout must be more than zero",
        ),
    ];
    match checks.iter().find(|(failed, _)| *failed) {
        Some((_, message)) => Err(MasterError::Config((*message).to_string())),
        None => Ok(()),
    }
}

async fn resolve_bind(host: &str, port: u16) -> Result<SocketAddr, MasterError> {
    let host = host.trim();
    if host == "*" || host.is_empty() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addresses = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| MasterError::Resolve {
            host: host.to_string(),
            reason: error.to_string(),
        })?;
    addresses.next().ok_or_else(|| MasterError::Resolve {
        host: host.to_string(),
        reason: "it has no address".into(),
    })
}

/// Sends to workers and reads the registry; cheap to clone.
#[derive(Clone)]
pub struct MasterHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for MasterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterHandle")
            .field("local_addr", &self.local_addr)
            .field("master_id", &self.shared.settings.master_id)
            .finish_non_exhaustive()
    }
}

impl MasterHandle {
    /// The address the master listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This master's random id, sent to workers in `Accepted`.
    pub fn master_id(&self) -> &str {
        &self.shared.settings.master_id
    }

    /// Changes the run id sent to workers that attach from now on.
    pub fn set_run_id(&self, run_id: impl Into<String>) {
        *self
            .shared
            .run_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = run_id.into();
    }

    /// Queues a command for one worker without waiting; answers its number (the worker acknowledges by it).
    ///
    /// A missing worker gets it when it comes back. Overflow rule: an outbox holding `worker_queue` messages
    /// (queued, or commands written but not acknowledged) refuses the new one with [`SendError::QueueFull`];
    /// nothing queued before is dropped.
    pub fn send(&self, worker: &str, command: Command) -> Result<u64, SendError> {
        self.check_size(command.to_proto(0).encoded_len())?;
        self.check_running()?;
        let mut registry = self.shared.registry();
        let entry = registry
            .get_mut(worker)
            .ok_or_else(|| SendError::UnknownWorker(worker.to_string()))?;
        let seq = entry
            .outbox
            .push_command(&command)
            .map_err(|_| self.queue_full(&entry.record.id))?;
        entry.wake_writer();
        Ok(seq)
    }

    /// Queues a command for every registered worker, connected or missing.
    pub fn broadcast(&self, command: &Command) -> Broadcast {
        let mut result = Broadcast::default();
        if let Err(error) = self
            .check_size(command.to_proto(0).encoded_len())
            .and_then(|()| self.check_running())
        {
            result.failed = self
                .worker_ids()
                .into_iter()
                .map(|id| (id, error.clone()))
                .collect();
            return result;
        }
        let mut registry = self.shared.registry();
        for entry in registry.entries_mut() {
            match entry.outbox.push_command(command) {
                Ok(seq) => {
                    entry.wake_writer();
                    result.queued.push((entry.record.id.clone(), seq));
                }
                Err(_) => {
                    let error = self.queue_full(&entry.record.id);
                    result.failed.push((entry.record.id.clone(), error));
                }
            }
        }
        result
    }

    /// Queues a custom message for one worker (at most once: one in flight during a cut is lost). Same
    /// overflow rule as [`MasterHandle::send`].
    pub fn send_custom(&self, worker: &str, kind: &str, payload: Bytes) -> Result<(), SendError> {
        self.check_size(custom_size(kind, &payload))?;
        self.check_running()?;
        let mut registry = self.shared.registry();
        let entry = registry
            .get_mut(worker)
            .ok_or_else(|| SendError::UnknownWorker(worker.to_string()))?;
        entry
            .outbox
            .push_custom(kind, payload)
            .map_err(|_| self.queue_full(&entry.record.id))?;
        entry.wake_writer();
        Ok(())
    }

    /// Queues a custom message for every registered worker; `queued` carries 0 as the number.
    pub fn broadcast_custom(&self, kind: &str, payload: Bytes) -> Broadcast {
        let mut result = Broadcast::default();
        if let Err(error) = self
            .check_size(custom_size(kind, &payload))
            .and_then(|()| self.check_running())
        {
            result.failed = self
                .worker_ids()
                .into_iter()
                .map(|id| (id, error.clone()))
                .collect();
            return result;
        }
        let mut registry = self.shared.registry();
        for entry in registry.entries_mut() {
            match entry.outbox.push_custom(kind, payload.clone()) {
                Ok(()) => {
                    entry.wake_writer();
                    result.queued.push((entry.record.id.clone(), 0));
                }
                Err(_) => {
                    let error = self.queue_full(&entry.record.id);
                    result.failed.push((entry.record.id.clone(), error));
                }
            }
        }
        result
    }

    /// Every registered worker, connected and missing, sorted by id.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let now = Instant::now();
        let mut workers: Vec<WorkerInfo> = self
            .shared
            .registry()
            .entries()
            .map(|entry| entry.info(now))
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        workers
    }

    /// One worker, if registered.
    pub fn worker(&self, id: &str) -> Option<WorkerInfo> {
        self.shared
            .registry()
            .get(id)
            .map(|entry| entry.info(Instant::now()))
    }

    /// Removes a worker from the registry (after it acknowledged `Quit`, say) and ends its session; emits
    /// [`MasterEvent::WorkerGone`] with [`GoneReason::Forgotten`]. Answers whether it was registered.
    pub async fn forget(&self, worker: &str) -> bool {
        let permit = self.shared.events.reserve().await.ok();
        let mut registry = self.shared.registry();
        match (registry.remove(worker), permit) {
            (Some(entry), Some(permit)) => {
                // Under the lock, so that a new attach of the same id cannot overtake it.
                permit.send(MasterEvent::WorkerGone {
                    worker: entry.record.id,
                    reason: GoneReason::Forgotten,
                });
                true
            }
            (removed, _) => removed.is_some(),
        }
    }

    /// What the master did so far.
    pub fn counters(&self) -> MasterCounters {
        MasterCounters {
            connections_accepted: self.shared.listener_counters.accepted.load(Relaxed),
            connections_refused: self
                .shared
                .listener_counters
                .refused_over_limit
                .load(Relaxed),
            refusals: self.shared.refusals.load(Relaxed),
            refusals_not_reported: self.shared.refusals_not_reported.load(Relaxed),
            sessions_without_attach: self.shared.sessions_without_attach.load(Relaxed),
        }
    }

    /// Stops listening and ends every session (workers see their master gone and reconnect until their
    /// `master_lost_after`; send [`Command::Quit`] first to end them cleanly). Waits up to 5 s for open
    /// connections to close; once it returns the port is free, so a new master may take over the workers.
    pub async fn shutdown(&self) {
        let _ = self.shared.shutdown.send(true);
        self.shared.registry().end_all_sessions();
        let tasks: Vec<JoinHandle<()>> = std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for mut task in tasks {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    fn worker_ids(&self) -> Vec<WorkerId> {
        self.shared
            .registry()
            .entries()
            .map(|entry| entry.record.id.clone())
            .collect()
    }

    fn check_running(&self) -> Result<(), SendError> {
        if *self.shared.shutdown.borrow() {
            Err(SendError::ShutDown)
        } else {
            Ok(())
        }
    }

    fn check_size(&self, encoded: usize) -> Result<(), SendError> {
        // The envelope (message kind, lengths) adds a few bytes to the encoded command.
        let size = encoded + 16;
        let limit = self.shared.settings.max_message_bytes;
        if size > limit {
            Err(SendError::TooLarge { size, limit })
        } else {
            Ok(())
        }
    }

    fn queue_full(&self, worker: &WorkerId) -> SendError {
        SendError::QueueFull {
            worker: worker.clone(),
            capacity: self.shared.settings.worker_queue,
        }
    }
}

fn custom_size(kind: &str, payload: &Bytes) -> usize {
    proto::Custom {
        kind: kind.to_string(),
        payload: payload.clone(),
    }
    .encoded_len()
}
