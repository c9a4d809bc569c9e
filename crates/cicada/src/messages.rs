//! Custom messages between a cluster's master and its workers, as Locust's `register_message` / `send_message`:
//! a test registers a handler per message kind ([`crate::Cicada::on_message`]) and sends any serde value from
//! either side through [`Messages`] (`env.messages()`): a master to one worker or to all, a worker to its master;
//! in a single process a message is handled by the process that sent it.
//!
//! This module owns the handlers, the limits on what a process sends (size and rate, [`MessageLimits`]), and the
//! path of a received message to its handler: each handler runs on a task of its own, so a long handler never
//! delays the cluster's heartbeats, its dispatcher or another message. Kinds starting with [`RESERVED_PREFIX`] are
//! the engine's own (the test data distributor of [`crate::data`] travels that way).
//!
//! Payloads travel as JSON: a custom message can carry any serde value, including the self-describing ones
//! (`serde_json::Value`, untagged enums, `#[serde(flatten)]`) that a compact non-self-describing format such as
//! postcard cannot decode, and messages are rare enough that JSON's extra bytes do not matter.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, mpsc};

use crate::environment::Environment;
use crate::runner::RunnerMode;

/// Kinds starting with this are the engine's own: a test can neither register nor send them.
pub const RESERVED_PREFIX: &str = "cicada.";
/// The longest message kind, in bytes.
pub const MAX_KIND_BYTES: usize = 128;
/// The largest payload [`MessageLimits::max_payload_bytes`] may allow: the cluster's 4 MiB message bound less the
/// envelope.
pub const MAX_PAYLOAD_LIMIT: usize = 4 * 1024 * 1024 - 64 * 1024;
/// Received messages waiting for a handler to start; beyond, a received message is dropped (and counted).
const INCOMING_QUEUE: usize = 1024;
/// Handlers running at once in one process; the next waits for one to finish.
const MAX_RUNNING_HANDLERS: usize = 256;
/// Distinct unknown kinds remembered so that each is logged once; past it, one last line says more came.
const MAX_UNKNOWN_KINDS: usize = 64;

/// Bounds on the custom messages one process sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MessageLimits {
    /// Largest payload, in bytes of its JSON encoding (default 1 MiB; at most [`MAX_PAYLOAD_LIMIT`]). A larger
    /// one is refused when sent with [`MessageError::TooLarge`].
    pub max_payload_bytes: usize,
    /// Sustained messages per second this process may send (default 1,000); a broadcast counts once.
    pub per_second: f64,
    /// Messages it may send at once above that rate (default 1,000). Beyond, [`MessageError::RateLimited`].
    pub burst: u32,
}

impl Default for MessageLimits {
    fn default() -> Self {
        MessageLimits {
            max_payload_bytes: 1024 * 1024,
            per_second: 1000.0,
            burst: 1000,
        }
    }
}

/// Where a message came from: its handler can answer with [`Messages::reply`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageSource {
    /// This same process (a single-process run).
    Local,
    /// The cluster's master.
    Master,
    /// A worker, by its id.
    Worker(String),
}

/// A received message, as its handler gets it.
#[derive(Debug, Clone)]
pub struct Message<T> {
    /// Its kind.
    pub kind: String,
    /// Its data, decoded.
    pub data: T,
    /// Who sent it.
    pub source: MessageSource,
}

/// Why a message was not sent, or a handler not registered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    /// The kind starts with [`RESERVED_PREFIX`].
    #[error(
        "message kind {kind:?} is reserved for cicada's own use (kinds starting with \"cicada.\"): choose another kind"
    )]
    ReservedKind {
        /// The kind.
        kind: String,
    },
    /// The kind is empty or longer than [`MAX_KIND_BYTES`].
    #[error("message kind {kind:?} is not valid: a kind has 1 to 128 bytes")]
    InvalidKind {
        /// The kind.
        kind: String,
    },
    /// A second handler for a kind that has one.
    #[error(
        "a handler for message kind {kind:?} is registered already: register one handler per kind"
    )]
    DuplicateHandler {
        /// The kind.
        kind: String,
    },
    /// The payload is larger than [`MessageLimits::max_payload_bytes`].
    #[error(
        "message {kind:?} is {size} bytes once encoded, more than the {limit} bytes a message may carry \
         (MessageLimits::max_payload_bytes): send less, or the path of a file both sides can read"
    )]
    TooLarge {
        /// The kind.
        kind: String,
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// This process sends faster than [`MessageLimits`] allows.
    #[error(
        "message {kind:?} refused: this process sends more than {per_second} messages a second (burst {burst}, \
         MessageLimits): send fewer, or batch them into one"
    )]
    RateLimited {
        /// The kind.
        kind: String,
        /// The sustained rate allowed.
        per_second: f64,
        /// The burst allowed.
        burst: u32,
    },
    /// The data does not encode as JSON (a map with non-string keys, a failing `Serialize`).
    #[error("message {kind:?} cannot be encoded as JSON: {reason}")]
    Encode {
        /// The kind.
        kind: String,
        /// Why.
        reason: String,
    },
    /// The master has no worker of this id.
    #[error(
        "no worker {worker:?} is attached to this master (env.messages().workers() lists them)"
    )]
    UnknownWorker {
        /// The id.
        worker: String,
    },
    /// The queue towards a peer is full: it is stalled, missing or slow to read.
    #[error(
        "message {kind:?} not sent: the queue towards {peer} is full ({capacity} messages wait); try later"
    )]
    QueueFull {
        /// The kind.
        kind: String,
        /// The master, or a worker's id.
        peer: String,
        /// The queue's bound.
        capacity: usize,
    },
    /// A worker's session with its master has not started yet, or has ended.
    #[error(
        "message {kind:?} not sent: this process is not connected to its cluster (yet, or any more)"
    )]
    NotConnected {
        /// The kind.
        kind: String,
    },
    /// Only a master (or a single process) sends to a worker.
    #[error(
        "message {kind:?} not sent: only the master sends to a worker; a worker sends to its master"
    )]
    NotAMaster {
        /// The kind.
        kind: String,
    },
}

type HandlerFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
/// A handler with its data type erased: it decodes the payload and runs the test's function.
type Handler = Arc<dyn Fn(Arc<Environment>, MessageSource, Bytes) -> HandlerFuture + Send + Sync>;

/// The handlers a test registered, before the run.
#[derive(Default)]
pub(crate) struct Registry {
    handlers: HashMap<String, Handler>,
    problems: Vec<MessageError>,
    limits: MessageLimits,
}

impl Registry {
    pub(crate) fn register<T, F, Fut>(&mut self, kind: &str, handler: F)
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(Arc<Environment>, Message<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if let Err(problem) = check_kind(kind) {
            self.problems.push(problem);
            return;
        }
        if self.handlers.contains_key(kind) {
            self.problems.push(MessageError::DuplicateHandler {
                kind: kind.to_string(),
            });
            return;
        }
        let handler = Arc::new(handler);
        let name: Arc<str> = Arc::from(kind);
        let erased: Handler = Arc::new(move |env, source, payload: Bytes| {
            let handler = handler.clone();
            let kind = name.to_string();
            Box::pin(async move {
                match serde_json::from_slice::<T>(&payload) {
                    Ok(data) => handler(env, Message { kind, data, source }).await,
                    Err(error) => tracing::warn!(
                        "custom message {kind:?} from {source:?} does not decode as {}: {error}",
                        std::any::type_name::<T>()
                    ),
                }
            })
        });
        self.handlers.insert(kind.to_string(), erased);
    }

    pub(crate) fn set_limits(&mut self, limits: MessageLimits) {
        self.limits = limits;
    }

    /// What is wrong with the registrations or the limits, as one line for a usage error.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(problem) = self.problems.first() {
            return Err(problem.to_string());
        }
        let limits = self.limits;
        if limits.max_payload_bytes == 0 || limits.max_payload_bytes > MAX_PAYLOAD_LIMIT {
            return Err(format!(
                "MessageLimits::max_payload_bytes is {}: it must be between 1 and {MAX_PAYLOAD_LIMIT}",
                limits.max_payload_bytes
            ));
        }
        if !limits.per_second.is_finite() || limits.per_second <= 0.0 || limits.burst == 0 {
            return Err(
                "MessageLimits: per_second must be a positive number and burst at least 1"
                    .to_string(),
            );
        }
        Ok(())
    }
}

fn check_kind(kind: &str) -> Result<(), MessageError> {
    if kind.is_empty() || kind.len() > MAX_KIND_BYTES {
        return Err(MessageError::InvalidKind {
            kind: kind.chars().take(MAX_KIND_BYTES).collect(),
        });
    }
    if kind.starts_with(RESERVED_PREFIX) {
        return Err(MessageError::ReservedKind {
            kind: kind.to_string(),
        });
    }
    Ok(())
}

/// How this process reaches its peers.
enum Route {
    Master(cicada_cluster::MasterHandle),
    Worker(cicada_cluster::WorkerHandle),
}

/// A received message on its way to a handler.
struct Incoming {
    source: MessageSource,
    kind: String,
    payload: Bytes,
}

/// Sending and receiving custom messages in a run: `env.messages()`. Cheap to clone.
#[derive(Clone)]
pub struct Messages {
    inner: Arc<Inner>,
}

struct Inner {
    mode: RunnerMode,
    handlers: HashMap<String, Handler>,
    limits: MessageLimits,
    bucket: Mutex<TokenBucket>,
    route: OnceLock<Route>,
    env: OnceLock<Weak<Environment>>,
    incoming: OnceLock<mpsc::Sender<Incoming>>,
    unknown_kinds: Mutex<HashSet<String>>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages")
            .field("mode", &self.inner.mode)
            .field("kinds", &self.inner.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Messages {
    pub(crate) fn new(registry: Registry, mode: RunnerMode) -> Messages {
        let limits = registry.limits;
        Messages {
            inner: Arc::new(Inner {
                mode,
                handlers: registry.handlers,
                limits,
                bucket: Mutex::new(TokenBucket::new(limits.per_second, limits.burst)),
                route: OnceLock::new(),
                env: OnceLock::new(),
                incoming: OnceLock::new(),
                unknown_kinds: Mutex::new(HashSet::new()),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Bind to the run's environment and start the task that hands received messages to their handlers (call
    /// inside the runtime, once).
    pub(crate) fn bind(&self, env: &Arc<Environment>) {
        let _ = self.inner.env.set(Arc::downgrade(env));
        let (sender, receiver) = mpsc::channel(INCOMING_QUEUE);
        if self.inner.incoming.set(sender).is_ok() {
            tokio::spawn(pump(self.inner.clone(), receiver));
        }
        env.data.start();
    }

    /// A master's cluster port: from now on messages go to its workers.
    pub(crate) fn connect_master(&self, master: cicada_cluster::MasterHandle) {
        let _ = self.inner.route.set(Route::Master(master));
    }

    /// A worker's session: from now on messages go to its master.
    pub(crate) fn connect_worker(&self, worker: cicada_cluster::WorkerHandle) {
        let _ = self.inner.route.set(Route::Worker(worker));
    }

    /// Send `data` as a message of `kind`: from a master to every attached worker (none attached: nobody gets
    /// it), from a worker to its master, in a single process to this process's own handler (Locust's rules).
    /// A master's error names the first worker the message could not be queued for; the others got it.
    pub fn send<T: Serialize + ?Sized>(&self, kind: &str, data: &T) -> Result<(), MessageError> {
        let payload = self.prepare(kind, data)?;
        match (self.inner.mode, self.inner.route.get()) {
            (RunnerMode::Local, _) => {
                self.deliver(MessageSource::Local, kind.to_string(), payload);
                Ok(())
            }
            (RunnerMode::Master, Some(Route::Master(master))) => {
                let broadcast = master.broadcast_custom(kind, payload);
                match broadcast.failed.into_iter().next() {
                    None => Ok(()),
                    Some((worker, error)) => Err(self.send_error(kind, worker.as_str(), error)),
                }
            }
            (RunnerMode::Worker, Some(Route::Worker(worker))) => worker_send(worker, kind, payload),
            _ => Err(MessageError::NotConnected {
                kind: kind.to_string(),
            }),
        }
    }

    /// Send to one worker (a master's [`Messages::workers`] lists them). In a single process the message is
    /// handled by this process, as Locust does; a worker cannot send to another worker.
    pub fn send_to_worker<T: Serialize + ?Sized>(
        &self,
        worker: &str,
        kind: &str,
        data: &T,
    ) -> Result<(), MessageError> {
        let payload = self.prepare(kind, data)?;
        match (self.inner.mode, self.inner.route.get()) {
            (RunnerMode::Local, _) => {
                self.deliver(MessageSource::Local, kind.to_string(), payload);
                Ok(())
            }
            (RunnerMode::Master, Some(Route::Master(master))) => master
                .send_custom(worker, kind, payload)
                .map_err(|error| self.send_error(kind, worker, error)),
            (RunnerMode::Worker, _) => Err(MessageError::NotAMaster {
                kind: kind.to_string(),
            }),
            _ => Err(MessageError::NotConnected {
                kind: kind.to_string(),
            }),
        }
    }

    /// Answer a message: to the worker that sent it, to the master, or (single process) to this process.
    pub fn reply<T: Serialize + ?Sized>(
        &self,
        to: &MessageSource,
        kind: &str,
        data: &T,
    ) -> Result<(), MessageError> {
        match to {
            MessageSource::Worker(worker) => self.send_to_worker(worker, kind, data),
            MessageSource::Master | MessageSource::Local => self.send(kind, data),
        }
    }

    /// A master's attached workers (connected now), by id; empty elsewhere.
    pub fn workers(&self) -> Vec<String> {
        match self.inner.route.get() {
            Some(Route::Master(master)) => master
                .workers()
                .into_iter()
                .filter(|w| w.presence == cicada_cluster::Presence::Connected)
                .map(|w| w.id.as_str().to_string())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Received messages dropped because [`INCOMING_QUEUE`] of them waited for a handler already.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Check the kind, the rate and the size; encode.
    fn prepare<T: Serialize + ?Sized>(&self, kind: &str, data: &T) -> Result<Bytes, MessageError> {
        check_kind(kind)?;
        let payload = serde_json::to_vec(data).map_err(|error| MessageError::Encode {
            kind: kind.to_string(),
            reason: error.to_string(),
        })?;
        let limits = self.inner.limits;
        if payload.len() > limits.max_payload_bytes {
            return Err(MessageError::TooLarge {
                kind: kind.to_string(),
                size: payload.len(),
                limit: limits.max_payload_bytes,
            });
        }
        if !self
            .inner
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(Instant::now())
        {
            return Err(MessageError::RateLimited {
                kind: kind.to_string(),
                per_second: limits.per_second,
                burst: limits.burst,
            });
        }
        Ok(Bytes::from(payload))
    }

    fn send_error(
        &self,
        kind: &str,
        worker: &str,
        error: cicada_cluster::SendError,
    ) -> MessageError {
        use cicada_cluster::SendError;
        match error {
            SendError::UnknownWorker(worker) => MessageError::UnknownWorker { worker },
            SendError::QueueFull { worker, capacity } => MessageError::QueueFull {
                kind: kind.to_string(),
                peer: format!("worker {}", worker.as_str()),
                capacity,
            },
            SendError::TooLarge { size, limit } => MessageError::TooLarge {
                kind: kind.to_string(),
                size,
                limit,
            },
            SendError::ShutDown => {
                tracing::debug!("custom message {kind:?} for {worker}: the master is shut down");
                MessageError::NotConnected {
                    kind: kind.to_string(),
                }
            }
        }
    }

    /// Send one of the engine's own messages (reserved kind, no rate limit: the engine bounds its own traffic).
    pub(crate) fn send_engine(
        &self,
        to: &MessageSource,
        kind: &'static str,
        payload: Bytes,
    ) -> Result<(), MessageError> {
        debug_assert!(kind.starts_with(RESERVED_PREFIX));
        match (to, self.inner.route.get()) {
            (MessageSource::Local, _) => {
                self.deliver(MessageSource::Local, kind.to_string(), payload);
                Ok(())
            }
            (MessageSource::Worker(worker), Some(Route::Master(master))) => master
                .send_custom(worker, kind, payload)
                .map_err(|error| self.send_error(kind, worker, error)),
            (MessageSource::Master, Some(Route::Worker(handle))) => {
                worker_send(handle, kind, payload)
            }
            _ => Err(MessageError::NotConnected {
                kind: kind.to_string(),
            }),
        }
    }

    /// A message arrived (from a peer, or from this process in a single-process run): the engine's own kinds go
    /// to their module at once, a test's kinds to their handler on a task of its own. Never waits.
    pub(crate) fn deliver(&self, source: MessageSource, kind: String, payload: Bytes) {
        if kind.starts_with(RESERVED_PREFIX) {
            let env = self.inner.env.get().and_then(Weak::upgrade);
            match (kind.as_str(), env) {
                (crate::data::MESSAGE_KIND, Some(env)) => env.data.on_message(source, &payload),
                (_, Some(_)) => self.log_unknown(&kind, &source),
                (_, None) => {}
            }
            return;
        }
        if !self.inner.handlers.contains_key(&kind) {
            self.log_unknown(&kind, &source);
            return;
        }
        let Some(incoming) = self.inner.incoming.get() else {
            return;
        };
        if let Err(error) = incoming.try_send(Incoming {
            source,
            kind,
            payload,
        }) {
            let dropped = self.inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // A power of two: a flood is logged a handful of times, not once per message.
            if dropped.is_power_of_two() {
                let kind = match &error {
                    mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => {
                        m.kind.as_str()
                    }
                };
                tracing::warn!(
                    "custom message {kind:?} dropped: {INCOMING_QUEUE} received messages wait for their handlers \
                     already ({dropped} dropped so far); handlers are too slow for what is sent"
                );
            }
        }
    }

    /// An unknown kind is logged once (bounded), never as an error per message.
    fn log_unknown(&self, kind: &str, source: &MessageSource) {
        let mut seen = self
            .inner
            .unknown_kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if seen.contains(kind) || seen.len() > MAX_UNKNOWN_KINDS {
            return;
        }
        if seen.len() == MAX_UNKNOWN_KINDS {
            seen.insert(String::new());
            tracing::warn!(
                "more custom messages of unknown kinds arrived; no further kind will be logged"
            );
            return;
        }
        seen.insert(kind.to_string());
        tracing::warn!(
            "a custom message of kind {kind:?} from {source:?} has no handler (register one with Cicada::on_message); \
             further messages of this kind are ignored silently"
        );
    }
}

/// A master's cluster event, as far as messages and test data care: a worker's message goes to its handler, a
/// worker that went missing or left waits for no test data any more.
pub(crate) fn on_master_event(env: &Environment, event: &cicada_cluster::MasterEvent) {
    use cicada_cluster::MasterEvent;
    match event {
        MasterEvent::Custom {
            worker,
            kind,
            payload,
        } => env.messages.deliver(
            MessageSource::Worker(worker.as_str().to_string()),
            kind.clone(),
            payload.clone(),
        ),
        MasterEvent::WorkerMissing { worker } => env.data.worker_missing(worker.as_str()),
        MasterEvent::WorkerGone { worker, .. } => env.data.worker_gone(worker.as_str()),
        _ => {}
    }
}

fn worker_send(
    worker: &cicada_cluster::WorkerHandle,
    kind: &str,
    payload: Bytes,
) -> Result<(), MessageError> {
    use cicada_cluster::WorkerSendError;
    worker
        .send_custom(kind, payload)
        .map_err(|error| match error {
            WorkerSendError::TooLarge { size, limit } => MessageError::TooLarge {
                kind: kind.to_string(),
                size,
                limit,
            },
            WorkerSendError::QueueFull { capacity } => MessageError::QueueFull {
                kind: kind.to_string(),
                peer: "the master".to_string(),
                capacity,
            },
            WorkerSendError::Ended => MessageError::NotConnected {
                kind: kind.to_string(),
            },
        })
}

/// Hand received messages to their handlers, each on a task of its own, at most [`MAX_RUNNING_HANDLERS`] at once
/// and in the order they arrived.
async fn pump(inner: Arc<Inner>, mut receiver: mpsc::Receiver<Incoming>) {
    let running = Arc::new(Semaphore::new(MAX_RUNNING_HANDLERS));
    while let Some(message) = receiver.recv().await {
        let Some(handler) = inner.handlers.get(&message.kind).cloned() else {
            continue;
        };
        let Some(env) = inner.env.get().and_then(Weak::upgrade) else {
            return;
        };
        let Ok(permit) = running.clone().acquire_owned().await else {
            return;
        };
        let kind = message.kind;
        tokio::spawn(async move {
            // The handler's own panic ends its task only; the permit is given back either way.
            let _permit = permit;
            let call = handler(env, message.source, message.payload);
            if let Err(error) = tokio::spawn(call).await
                && error.is_panic()
            {
                tracing::error!("the handler of custom message {kind:?} panicked");
            }
        });
    }
}

/// A token bucket: `burst` tokens, refilled at `per_second`.
struct TokenBucket {
    tokens: f64,
    per_second: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(per_second: f64, burst: u32) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst),
            per_second,
            burst: f64::from(burst),
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn messages(limits: MessageLimits) -> Messages {
        let mut registry = Registry::default();
        registry.set_limits(limits);
        Messages::new(registry, RunnerMode::Local)
    }

    #[test]
    fn kinds_are_checked() {
        assert!(check_kind("greeting").is_ok());
        assert!(matches!(
            check_kind("cicada.data"),
            Err(MessageError::ReservedKind { .. })
        ));
        assert!(matches!(
            check_kind(""),
            Err(MessageError::InvalidKind { .. })
        ));
        assert!(matches!(
            check_kind(&"k".repeat(MAX_KIND_BYTES + 1)),
            Err(MessageError::InvalidKind { .. })
        ));
    }

    #[test]
    fn registrations_are_checked() {
        let mut registry = Registry::default();
        registry.register("ping", |_env, _m: Message<u32>| async {});
        assert!(registry.check().is_ok());
        registry.register("ping", |_env, _m: Message<u32>| async {});
        let error = registry.check().unwrap_err();
        assert!(error.contains("registered already"), "{error}");

        let mut reserved = Registry::default();
        reserved.register("cicada.mine", |_env, _m: Message<u32>| async {});
        assert!(reserved.check().unwrap_err().contains("reserved"));

        let mut limits = Registry::default();
        limits.set_limits(MessageLimits {
            max_payload_bytes: MAX_PAYLOAD_LIMIT + 1,
            ..MessageLimits::default()
        });
        assert!(limits.check().unwrap_err().contains("max_payload_bytes"));
    }

    #[test]
    fn a_payload_over_the_limit_is_refused_when_sent() {
        let messages = messages(MessageLimits {
            max_payload_bytes: 100,
            ..MessageLimits::default()
        });
        let error = messages.send("big", &"x".repeat(200)).unwrap_err();
        assert_eq!(
            error,
            MessageError::TooLarge {
                kind: "big".into(),
                size: 202,
                limit: 100
            }
        );
        assert!(error.to_string().contains("more than the 100 bytes"));
        // Within the limit, a single process takes its own message (no handler: logged once, not an error).
        messages.send("small", &"x".repeat(50)).unwrap();
    }

    #[test]
    fn a_sender_over_the_rate_is_refused() {
        let messages = messages(MessageLimits {
            per_second: 0.001,
            burst: 3,
            ..MessageLimits::default()
        });
        for _ in 0..3 {
            messages.send("tick", &1).unwrap();
        }
        assert!(matches!(
            messages.send("tick", &1),
            Err(MessageError::RateLimited { burst: 3, .. })
        ));
    }

    #[test]
    fn the_bucket_refills_at_its_rate() {
        let mut bucket = TokenBucket::new(10.0, 2);
        let start = bucket.last;
        assert!(bucket.take(start));
        assert!(bucket.take(start));
        assert!(!bucket.take(start));
        assert!(bucket.take(start + Duration::from_millis(100)));
        assert!(!bucket.take(start + Duration::from_millis(100)));
        // Never more than the burst, however long it rested.
        let later = start + Duration::from_secs(60);
        assert!(bucket.take(later) && bucket.take(later) && !bucket.take(later));
    }

    #[test]
    fn a_worker_cannot_send_to_a_worker_and_an_unconnected_one_says_so() {
        let worker = Messages::new(Registry::default(), RunnerMode::Worker);
        assert!(matches!(
            worker.send_to_worker("w1", "k", &1),
            Err(MessageError::NotAMaster { .. })
        ));
        assert!(matches!(
            worker.send("k", &1),
            Err(MessageError::NotConnected { .. })
        ));
        assert!(worker.workers().is_empty());
    }

    #[test]
    fn unknown_kinds_are_remembered_within_their_bound() {
        let messages = messages(MessageLimits::default());
        for i in 0..(MAX_UNKNOWN_KINDS * 3) {
            messages.log_unknown(&format!("kind{i}"), &MessageSource::Local);
            messages.log_unknown(&format!("kind{i}"), &MessageSource::Local);
        }
        assert_eq!(
            messages.inner.unknown_kinds.lock().unwrap().len(),
            MAX_UNKNOWN_KINDS + 1
        );
    }
}
