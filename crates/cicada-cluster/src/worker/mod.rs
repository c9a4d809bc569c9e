//! The worker's side: [`WorkerClient::start`] connects to the master and keeps a session going (attach,
//! heartbeats, deltas, acknowledgements, reconnects with backoff) until the embedding code shuts it down, the
//! master refuses it, or the master stays away for `master_lost_after`. [`WorkerHandle`] queues deltas and
//! custom messages without blocking; [`WorkerEvent`]s bring commands and what happened to the connection.
//! See the crate documentation for the protocol and the failure rules.

mod outbox;
mod session;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, watch};

use crate::auth::{MAX_ATTACH_FIELD_BYTES, MAX_TEST_SUMMARY_BYTES};
use crate::tls::WorkerTls;
use crate::types::{Command, LogLevel, Refusal, TestIdentity, Token, WorkerId, WorkerStatus};
use crate::{DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PORT};

pub use outbox::DeltaMerge;

use outbox::Outbox;

/// How the worker is set up. [`WorkerConfig::default`] connects to 127.0.0.1:5557 with Locust's timings.
#[derive(Clone)]
pub struct WorkerConfig {
    /// The master's host (`--master-host`): a name or an IP address. Default 127.0.0.1.
    pub master_host: String,
    /// The master's port (`--master-port`).
    pub master_port: u16,
    /// This worker's id; `None`: `hostname_pid_random`. Must be unique in the cluster and stable for the
    /// process (a reconnect presents the same).
    pub worker_id: Option<String>,
    /// The hostname to report; `None`: the machine's.
    pub hostname: Option<String>,
    /// The embedding program's version: must equal the master's.
    pub version: String,
    /// The test: must equal the master's.
    pub test: TestIdentity,
    /// The shared token, if the master requires one.
    pub token: Option<Token>,
    /// TLS (and mTLS) towards the master.
    pub tls: Option<WorkerTls>,
    /// Interval of the worker's heartbeats.
    pub heartbeat_interval: Duration,
    /// A session that hears nothing from the master this long is abandoned and a new one is tried (the master
    /// sends a heartbeat every second).
    pub master_silence_timeout: Duration,
    /// Without a session for this long, the worker reports [`WorkerEvent::MasterLost`] and stops trying.
    pub master_lost_after: Duration,
    /// Bound on connecting and on waiting for the master's answer to the attach.
    pub connect_timeout: Duration,
    /// First pause between connection attempts; it doubles up to `reconnect_backoff_max` (with ±25% jitter, so
    /// that many workers do not knock at once).
    pub reconnect_backoff_min: Duration,
    /// Longest pause between connection attempts.
    pub reconnect_backoff_max: Duration,
    /// Bound on deltas kept until the master acknowledges them (120: two minutes of 1 s deltas); in bytes, at
    /// most `delta_buffer × max_message_bytes`.
    pub delta_buffer: usize,
    /// Merges two buffered deltas when the buffer is full; `None`: drop the oldest (counted).
    pub delta_merge: Option<DeltaMerge>,
    /// Bound on one message in either direction, in bytes.
    pub max_message_bytes: usize,
    /// Bound on custom messages waiting to be written; beyond, `send_custom` refuses.
    pub custom_queue: usize,
    /// Bound on log lines waiting to be written; beyond, the oldest is dropped.
    pub log_queue: usize,
    /// Capacity of the event channel; a full one pauses reading from the master (see [`WorkerEvent`]).
    pub event_queue: usize,
    /// Run the session on a thread of its own with its own single-threaded runtime (default), so that a
    /// runtime busy with users does not delay heartbeats and make the master think the worker is gone.
    /// `false`: run it on the caller's tokio runtime.
    pub dedicated_thread: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            master_host: Ipv4Addr::LOCALHOST.to_string(),
            master_port: DEFAULT_PORT,
            worker_id: None,
            hostname: None,
            version: String::new(),
            test: TestIdentity::default(),
            token: None,
            tls: None,
            heartbeat_interval: Duration::from_secs(1),
            master_silence_timeout: Duration::from_secs(3),
            master_lost_after: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(2),
            delta_buffer: 120,
            delta_merge: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            custom_queue: 256,
            log_queue: 256,
            event_queue: 1024,
            dedicated_thread: true,
        }
    }
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("master_host", &self.master_host)
            .field("master_port", &self.master_port)
            .field("worker_id", &self.worker_id)
            .field("version", &self.version)
            .field("token", &self.token)
            .field("tls", &self.tls)
            .field("delta_buffer", &self.delta_buffer)
            .field("delta_merge", &self.delta_merge.is_some())
            .field("dedicated_thread", &self.dedicated_thread)
            .finish_non_exhaustive()
    }
}

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The master's address does not make a valid URI.
    #[error(
        "invalid master address {address:?}: {reason}: give --master-host as a host name or an IP address"
    )]
    MasterAddress {
        /// The address as built.
        address: String,
        /// Why.
        reason: String,
    },
    /// The TLS material is not usable.
    #[error("the worker's TLS settings are not usable: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// A setting is out of range.
    #[error("invalid worker setting: {0}")]
    Config(String),
    /// The session thread or its runtime could not be created.
    #[error("cannot start the worker's session thread: {0}")]
    Runtime(#[source] std::io::Error),
    /// `dedicated_thread` is off and `start` was called outside a tokio runtime.
    #[error("WorkerClient::start with dedicated_thread off must be called inside a tokio runtime")]
    NoRuntime,
}

/// What happens to the worker's session. [`WorkerEvent::Refused`] and [`WorkerEvent::MasterLost`] are
/// final: the channel closes after them.
///
/// Flow control: the session waits for room in the channel before it reads more from the master, so a worker
/// that stops reading events stops receiving commands (the master's outbox for it fills up and refuses) but
/// never loses one; this waiting does not count as the master's silence, and heartbeats and deltas keep
/// going out meanwhile. Only [`WorkerEvent::Disconnected`] is dropped when the channel is full, so that a
/// slow reader never keeps the worker from reconnecting.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    /// A session started.
    Connected {
        /// The master's id.
        master_id: String,
        /// The master's run id.
        run_id: String,
        /// The same master as the previous session (it still has this worker's state); `false` on the first
        /// session and after the master restarted.
        resumed: bool,
    },
    /// The session broke; the worker keeps its users and reconnects.
    Disconnected {
        /// What happened.
        reason: String,
    },
    /// A command from the master, each delivered once and in order (acknowledged automatically).
    Command {
        /// Its number.
        seq: u64,
        /// The command.
        command: Command,
    },
    /// A custom message from the master.
    Custom {
        /// Its kind.
        kind: String,
        /// Its content.
        payload: Bytes,
    },
    /// The master refused this worker (wrong token, version or test): stop users and exit.
    Refused(Refusal),
    /// No session for `master_lost_after`: stop users and exit.
    MasterLost {
        /// How long the worker was without a master.
        without_master_for: Duration,
    },
}

/// Why a message could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerSendError {
    /// The message is larger than the message size limit.
    #[error("the message is {size} bytes, more than the {limit} bytes a cluster message may have")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// `custom_queue` custom messages wait already.
    #[error("{capacity} custom messages wait to be sent already")]
    QueueFull {
        /// The bound.
        capacity: usize,
    },
    /// The session has ended (shut down, refused or master lost).
    #[error("the worker's session has ended")]
    Ended,
}

/// What [`WorkerHandle::shutdown`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every delta reached the master and it acknowledged that the worker left.
    pub flushed: bool,
    /// Deltas and markers the master had not acknowledged when the session ended (0 when flushed).
    pub unacknowledged: usize,
}

/// Counts of what the worker's session did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// A session is up now.
    pub connected: bool,
    /// Sessions after the first.
    pub reconnects: u64,
    /// Deltas and markers kept until the master acknowledges them.
    pub unacknowledged: usize,
    /// Deltas dropped because the buffer was full.
    pub deltas_dropped: u64,
    /// Merges done because the buffer was full.
    pub deltas_merged: u64,
    /// Custom messages refused because their queue was full.
    pub customs_refused: u64,
    /// Log lines dropped because their queue was full.
    pub logs_dropped: u64,
}

/// What the handle and the session share.
pub(crate) struct WorkerShared {
    pub(crate) id: WorkerId,
    pub(crate) outbox: Mutex<Outbox>,
    /// Wakes the session's writer when something was queued or a stop was asked for.
    pub(crate) wake: Notify,
    pub(crate) status: Mutex<WorkerStatus>,
    /// `Some(deadline)` once a shutdown was asked for.
    pub(crate) stop: watch::Sender<Option<tokio::time::Instant>>,
    /// Set by the session when it ends, for good.
    pub(crate) finished: watch::Sender<Option<ShutdownReport>>,
    pub(crate) connected: AtomicBool,
    pub(crate) reconnects: AtomicU64,
    pub(crate) heartbeat_seq: AtomicU64,
    /// A heartbeat goes out before the outbox's next messages (set with a `Stopped` marker, so that the master has
    /// the status the worker stopped with when it hears that it stopped).
    pub(crate) heartbeat_now: AtomicBool,
    pub(crate) max_message_bytes: usize,
    pub(crate) custom_queue: usize,
}

impl WorkerShared {
    pub(crate) fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn status(&self) -> WorkerStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn request_stop(&self, deadline: tokio::time::Instant) {
        self.stop.send_if_modified(|current| match current {
            Some(earlier) if *earlier <= deadline => false,
            _ => {
                *current = Some(deadline);
                true
            }
        });
        self.wake.notify_one();
    }

    fn has_ended(&self) -> bool {
        self.finished.borrow().is_some()
    }
}

/// The worker's end of the cluster.
pub struct WorkerClient;

impl WorkerClient {
    /// Starts the session in the background (see [`WorkerConfig::dedicated_thread`]) and returns at once;
    /// connection problems arrive as events, only unusable settings as errors.
    pub fn start(
        config: WorkerConfig,
    ) -> Result<(WorkerHandle, mpsc::Receiver<WorkerEvent>), WorkerError> {
        validate(&config)?;
        let hostname = config.hostname.clone().unwrap_or_else(local_hostname);
        let id = config.worker_id.clone().unwrap_or_else(|| {
            format!(
                "{hostname}_{}_{:08x}",
                std::process::id(),
                fastrand::u32(..)
            )
        });
        check_identity_field("worker id", &id)?;
        check_identity_field("hostname", &hostname)?;
        // The master refuses what it would not keep; say so before trying.
        for (what, value) in [
            ("version", &config.version),
            ("test fingerprint", &config.test.fingerprint),
        ] {
            if value.len() > MAX_ATTACH_FIELD_BYTES {
                return Err(WorkerError::Config(format!(
                    "the {what} is {} bytes long, more than the {MAX_ATTACH_FIELD_BYTES} a master accepts",
                    value.len()
                )));
            }
        }
        if config.test.summary.len() > MAX_TEST_SUMMARY_BYTES {
            return Err(WorkerError::Config(format!(
                "the test summary is {} bytes long, more than the {MAX_TEST_SUMMARY_BYTES} a master accepts",
                config.test.summary.len()
            )));
        }
        let endpoint = session::endpoint(&config)?;
        if config.token.is_some()
            && config.tls.is_none()
            && !session::is_loopback_host(&config.master_host)
        {
            tracing::warn!(
                "the cluster token travels to {} without TLS: anyone on the path can read it",
                config.master_host
            );
        }

        let (events, receiver) = mpsc::channel(config.event_queue);
        let shared = Arc::new(WorkerShared {
            id: WorkerId::new(&id),
            outbox: Mutex::new(Outbox::new(
                config.delta_buffer,
                config.delta_merge.clone(),
                config.max_message_bytes.saturating_sub(64),
                config.custom_queue,
                config.log_queue,
            )),
            wake: Notify::new(),
            status: Mutex::new(WorkerStatus::default()),
            stop: watch::channel(None).0,
            finished: watch::channel(None).0,
            connected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            heartbeat_seq: AtomicU64::new(0),
            heartbeat_now: AtomicBool::new(false),
            max_message_bytes: config.max_message_bytes,
            custom_queue: config.custom_queue,
        });
        let settings = session::Settings::new(&config, endpoint, id, hostname);
        let task = session::run(Arc::clone(&shared), settings, events);
        if config.dedicated_thread {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(WorkerError::Runtime)?;
            std::thread::Builder::new()
                .name("cicada-cluster".into())
                .spawn(move || runtime.block_on(task))
                .map_err(WorkerError::Runtime)?;
        } else {
            tokio::runtime::Handle::try_current()
                .map_err(|_| WorkerError::NoRuntime)?
                .spawn(task);
        }
        let handle = WorkerHandle {
            inner: Arc::new(HandleInner { shared }),
        };
        Ok((handle, receiver))
    }
}

fn validate(config: &WorkerConfig) -> Result<(), WorkerError> {
    let checks = [
        (
            config.master_host.trim().is_empty(),
            "master_host must not be empty",
        ),
        (config.master_port == 0, "master_port must not be 0"),
        (config.delta_buffer == 0, "delta_buffer must be at least 1"),
        (config.event_queue == 0, "event_queue must be at least 1"),
        (
            config.max_message_bytes < 1024,
            "max_message_bytes must be at least 1024",
        ),
        (
            config.heartbeat_interval.is_zero(),
            "heartbeat_interval must be more than zero",
        ),
        (
            config.master_silence_timeout <= config.heartbeat_interval,
            "master_silence_timeout must be longer than heartbeat_interval",
        ),
        (
            config.connect_timeout.is_zero(),
            "connect_timeout must be more than zero",
        ),
        (
            config.reconnect_backoff_min.is_zero()
                || config.reconnect_backoff_max < config.reconnect_backoff_min,
            "reconnect_backoff_min must be more than zero and at most reconnect_backoff_max",
        ),
    ];
    match checks.iter().find(|(failed, _)| *failed) {
        Some((_, message)) => Err(WorkerError::Config((*message).to_string())),
        None => Ok(()),
    }
}

fn check_identity_field(what: &str, value: &str) -> Result<(), WorkerError> {
    if value.is_empty()
        || value.len() > MAX_ATTACH_FIELD_BYTES
        || value.chars().any(char::is_control)
    {
        return Err(WorkerError::Config(format!(
            "the {what} {value:?} must be 1 to {MAX_ATTACH_FIELD_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

/// The machine's hostname, shortened to leave room for the pid and the random part of a worker id.
fn local_hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty() && !name.chars().any(char::is_control))
        .unwrap_or_else(|| "unknown".to_string());
    name.chars().take(200).collect()
}

struct HandleInner {
    shared: Arc<WorkerShared>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        // Every handle is gone: nobody can send or shut down any more, so the session ends now.
        self.shared.request_stop(tokio::time::Instant::now());
    }
}

/// Queues what the worker sends, without blocking; cheap to clone. Dropping the last clone ends the session
/// at once (call [`WorkerHandle::shutdown`] first to flush).
#[derive(Clone)]
pub struct WorkerHandle {
    inner: Arc<HandleInner>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("worker_id", &self.inner.shared.id)
            .finish_non_exhaustive()
    }
}

impl WorkerHandle {
    fn shared(&self) -> &WorkerShared {
        &self.inner.shared
    }

    /// This worker's id.
    pub fn worker_id(&self) -> &WorkerId {
        &self.shared().id
    }

    /// What the next heartbeats say about this worker.
    pub fn set_status(&self, status: WorkerStatus) {
        *self
            .shared()
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = status;
    }

    /// Queues a statistics delta; answers its sequence number. Kept until the master acknowledges it, sent
    /// again after a reconnect; when the buffer is full, see [`WorkerConfig::delta_merge`].
    pub fn send_delta(&self, payload: Bytes) -> Result<u64, WorkerSendError> {
        let shared = self.shared();
        self.check_size(payload.len())?;
        if shared.has_ended() {
            return Err(WorkerSendError::Ended);
        }
        let seq = shared.outbox().push_delta(payload);
        shared.wake.notify_one();
        Ok(seq)
    }

    /// Says the users are stopped: queues a `Stopped` marker after every delta queued so far (send the last
    /// delta first), preceded by a heartbeat with the latest [`set_status`](Self::set_status) (set it first).
    /// Answers the last delta's number.
    pub fn stopped(&self) -> u64 {
        let final_seq = self.shared().outbox().push_stopped();
        self.shared().heartbeat_now.store(true, Relaxed);
        self.shared().wake.notify_one();
        final_seq
    }

    /// Queues a custom message (at most once: one in flight during a cut is lost).
    pub fn send_custom(
        &self,
        kind: impl Into<String>,
        payload: Bytes,
    ) -> Result<(), WorkerSendError> {
        let shared = self.shared();
        let kind = kind.into();
        self.check_size(kind.len() + payload.len())?;
        if shared.has_ended() {
            return Err(WorkerSendError::Ended);
        }
        shared
            .outbox()
            .push_custom(kind, payload)
            .map_err(|_| WorkerSendError::QueueFull {
                capacity: shared.custom_queue,
            })?;
        shared.wake.notify_one();
        Ok(())
    }

    /// Forwards a log line to the master (lossy: when the queue is full the oldest line is dropped; a line
    /// longer than the message limit is cut).
    pub fn log(&self, level: LogLevel, text: impl Into<String>) {
        let mut text = text.into();
        let limit = self.shared().max_message_bytes.saturating_sub(64);
        if text.len() > limit {
            let mut cut = limit;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        self.shared().outbox().push_log(level, text);
        self.shared().wake.notify_one();
    }

    /// What the session did so far.
    pub fn counters(&self) -> WorkerCounters {
        let shared = self.shared();
        let outbox = shared.outbox();
        WorkerCounters {
            connected: shared.connected.load(Relaxed),
            reconnects: shared.reconnects.load(Relaxed),
            unacknowledged: outbox.unacknowledged(),
            deltas_dropped: outbox.counters.deltas_dropped,
            deltas_merged: outbox.counters.deltas_merged,
            customs_refused: outbox.counters.customs_refused,
            logs_dropped: outbox.counters.logs_dropped,
        }
    }

    /// Ends the session cleanly: writes everything queued, tells the master the worker leaves (it forgets the
    /// worker instead of waiting for it), and waits for the master to confirm, for at most `flush_timeout`
    /// (reconnecting meanwhile if needed). Calling it again, or after the session ended, answers at once.
    pub async fn shutdown(&self, flush_timeout: Duration) -> ShutdownReport {
        let shared = self.shared();
        let started = Instant::now();
        shared.request_stop(tokio::time::Instant::now() + flush_timeout);
        let mut finished = shared.finished.subscribe();
        // The session honours the deadline itself; the margin covers a session stuck in a system call.
        let waited = tokio::time::timeout(
            flush_timeout + Duration::from_secs(1),
            finished.wait_for(Option::is_some),
        )
        .await;
        if let Ok(Ok(report)) = waited
            && let Some(report) = *report
        {
            return report;
        }
        tracing::warn!(
            "the worker's session did not end within {:?} of the shutdown",
            started.elapsed()
        );
        ShutdownReport {
            flushed: false,
            unacknowledged: shared.outbox().unacknowledged(),
        }
    }

    fn check_size(&self, size: usize) -> Result<(), WorkerSendError> {
        // The envelope (message kind, sequence numbers, lengths) adds a few bytes to the payload.
        let limit = self.shared().max_message_bytes.saturating_sub(64);
        if size > limit {
            Err(WorkerSendError::TooLarge { size, limit })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(config: WorkerConfig) -> String {
        match WorkerClient::start(config) {
            Err(WorkerError::Config(message)) => message,
            Err(other) => panic!("another error: {other}"),
            Ok(_) => panic!("started"),
        }
    }

    #[test]
    fn unusable_settings_are_refused_before_anything_starts() {
        let message = refused(WorkerConfig {
            master_port: 0,
            ..WorkerConfig::default()
        });
        assert!(message.contains("master_port"), "{message}");
        let message = refused(WorkerConfig {
            master_silence_timeout: Duration::from_millis(500),
            ..WorkerConfig::default()
        });
        assert!(message.contains("master_silence_timeout"), "{message}");
        let message = refused(WorkerConfig {
            worker_id: Some("x".repeat(MAX_ATTACH_FIELD_BYTES + 1)),
            ..WorkerConfig::default()
        });
        assert!(message.contains("worker id"), "{message}");
        let message = refused(WorkerConfig {
            test: TestIdentity::new("f", "l\n".repeat(MAX_TEST_SUMMARY_BYTES)),
            ..WorkerConfig::default()
        });
        assert!(message.contains("test summary"), "{message}");
    }

    #[test]
    fn the_default_worker_id_names_host_and_process() {
        let hostname = local_hostname();
        assert!(!hostname.is_empty() && hostname.len() <= 200);
        // Started without a runtime of the caller's: the session has its own thread. It knocks at a listener
        // of this test's, which never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (handle, _events) = WorkerClient::start(WorkerConfig {
            master_port: listener.local_addr().unwrap().port(),
            ..WorkerConfig::default()
        })
        .unwrap();
        let id = handle.worker_id().to_string();
        assert!(
            id.starts_with(&format!("{hostname}_{}_", std::process::id())),
            "{id}"
        );
    }

    #[test]
    fn without_a_dedicated_thread_a_runtime_is_needed() {
        let result = WorkerClient::start(WorkerConfig {
            dedicated_thread: false,
            ..WorkerConfig::default()
        });
        assert!(matches!(result, Err(WorkerError::NoRuntime)));
    }
}

/// Why [`fetch_test`] got no test.
#[derive(Debug, thiserror::Error)]
pub enum FetchTestError {
    /// The worker's settings are not usable (address, TLS).
    #[error(transparent)]
    Config(#[from] WorkerError),
    /// The master answered, and refused: wrong token, another version, or a compiled test.
    #[error("the master at {master} will not send its test: {reason}")]
    Refused {
        /// `host:port`.
        master: String,
        /// The master's words.
        reason: String,
    },
    /// No master answered within the wait.
    #[error("no master answered at {master} within {waited:?} (last error: {last_error})")]
    Unreachable {
        /// `host:port`.
        master: String,
        /// How long it tried.
        waited: Duration,
        /// The last attempt's error.
        last_error: String,
    },
}

/// Fetch the master's test as source (for a worker started without one, `-f -`), trying again (100 ms doubling
/// to 2 s) until `wait` has passed; a refusal (token, version, a master without a test source) is final.
pub async fn fetch_test(
    config: &WorkerConfig,
    wait: Duration,
) -> Result<crate::types::TestSource, FetchTestError> {
    let endpoint = session::endpoint(config)?;
    let master = format!("{}:{}", config.master_host, config.master_port);
    let request = crate::proto::TestRequest {
        token: config
            .token
            .as_ref()
            .map(|token| token.expose().to_string())
            .unwrap_or_default(),
        protocol: crate::PROTOCOL_VERSION,
        version: config.version.clone(),
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = config.reconnect_backoff_min;
    loop {
        let attempt = async {
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| (false, e.to_string()))?;
            let mut client = crate::proto::cluster_client::ClusterClient::new(channel)
                .max_decoding_message_size(config.max_message_bytes);
            client
                .fetch_test(request.clone())
                .await
                .map(|answer| answer.into_inner())
                .map_err(|status| {
                    let final_answer = matches!(
                        status.code(),
                        tonic::Code::PermissionDenied
                            | tonic::Code::FailedPrecondition
                            | tonic::Code::NotFound
                            | tonic::Code::Unimplemented
                    );
                    (final_answer, status.message().to_string())
                })
        };
        let last_error = match tokio::time::timeout(config.connect_timeout, attempt).await {
            Ok(Ok(source)) => {
                return Ok(crate::types::TestSource {
                    name: source.name,
                    payload: source.payload,
                });
            }
            Ok(Err((true, reason))) => return Err(FetchTestError::Refused { master, reason }),
            Ok(Err((false, reason))) => reason,
            Err(_) => format!("no answer within {:?}", config.connect_timeout),
        };
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(FetchTestError::Unreachable {
                master,
                waited: wait,
                last_error,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(config.reconnect_backoff_max);
    }
}
