//! Event hooks: plain Rust closures a test registers to extend a run.
//!
//! The same events as Locust (init, test_start, test_stopping, test_stop, spawning_complete, request, user_error,
//! reset_stats, usage_monitor, cpu_warning, quitting, quit), the resource guard's `guard_action`, and a cluster's
//! events (Locust's worker_connect, heartbeat_sent / heartbeat_received, report_to_master / worker_report, and a
//! worker missing, back or gone) as one [`ClusterEvent`]. Listeners are registered before the run starts and never
//! change afterwards, so
//! firing an event takes no lock; the `request` event is checked with one `is_empty` on the hot path and costs nothing
//! when nobody listens. A listener that panics is logged and does not stop the run.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use crate::Environment;
use crate::guard::GuardAction;

type EnvListener = Box<dyn Fn(&Environment) + Send + Sync>;
type SpawnListener = Box<dyn Fn(&Environment, u64) + Send + Sync>;
type RequestListener = Box<dyn Fn(&RequestEvent<'_>) + Send + Sync>;
type UserErrorListener = Box<dyn Fn(&UserErrorEvent<'_>) + Send + Sync>;
type UsageListener = Box<dyn Fn(&Environment, &cicada_monitor::Usage) + Send + Sync>;
type CpuWarningListener = Box<dyn Fn(&Environment, f64) + Send + Sync>;
type GuardListener = Box<dyn Fn(&Environment, &GuardAction) + Send + Sync>;
type ClusterListener = Box<dyn Fn(&Environment, &ClusterEvent<'_>) + Send + Sync>;

/// What happens in a cluster, on the master (workers come, go missing, come back, leave; heartbeats and
/// statistics arrive) and on a worker (heartbeats and statistics sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterEvent<'a> {
    /// On the master: a worker attached (Locust's `worker_connect`).
    WorkerConnected {
        /// The worker's id.
        worker: &'a str,
    },
    /// On the master: a worker was silent for 3 s; its users go to the others.
    WorkerMissing {
        /// The worker's id.
        worker: &'a str,
    },
    /// On the master: a missing worker is heard from again and gets a share again.
    WorkerBack {
        /// The worker's id.
        worker: &'a str,
    },
    /// On the master: a worker left (it quit, was lost for good, or was replaced).
    WorkerGone {
        /// The worker's id.
        worker: &'a str,
    },
    /// On the master: a worker's heartbeat (Locust's `heartbeat_received`).
    HeartbeatReceived {
        /// The worker's id.
        worker: &'a str,
        /// Users it runs.
        user_count: u64,
    },
    /// On the master: a worker's statistics were merged (Locust's `worker_report`).
    WorkerReport {
        /// The worker's id.
        worker: &'a str,
        /// Requests in the report.
        requests: u64,
    },
    /// On a worker: a heartbeat is set for the master (Locust's `heartbeat_sent`).
    HeartbeatSent {
        /// Users this worker runs.
        user_count: u64,
    },
    /// On a worker: statistics went to the master (Locust's `report_to_master`).
    ReportToMaster {
        /// Requests in the report.
        requests: u64,
    },
}

/// One completed request, as seen by `request` listeners (HTTP and custom clients alike).
#[derive(Debug, Clone, Copy)]
pub struct RequestEvent<'a> {
    /// Request type: an HTTP method, or a custom client's kind ("grpc", "ws" ...).
    pub method: &'a str,
    /// Stats name.
    pub name: &'a str,
    /// Time from sending to the end of the response.
    pub response_time: Duration,
    /// Response body size in bytes.
    pub content_length: u64,
    /// Why the request failed, if it did.
    pub error: Option<&'a str>,
    /// Name of the user type that made it.
    pub user_type: &'a str,
}

/// A task that returned an error or panicked.
#[derive(Debug, Clone, Copy)]
pub struct UserErrorEvent<'a> {
    /// Name of the user type.
    pub user_type: &'a str,
    /// The error message with its causes (`outer: inner: root`), or the panic payload.
    pub message: &'a str,
    /// Where it happened: the task's name, a panic's location, and a backtrace when `RUST_BACKTRACE` asks for one.
    pub location: &'a str,
}

/// The listeners of every event. Build it through [`crate::Cicada`]'s `on_*` methods.
#[derive(Default)]
pub struct Events {
    pub(crate) init: Vec<EnvListener>,
    pub(crate) test_start: Vec<EnvListener>,
    pub(crate) test_stopping: Vec<EnvListener>,
    pub(crate) test_stop: Vec<EnvListener>,
    pub(crate) reset_stats: Vec<EnvListener>,
    pub(crate) quitting: Vec<EnvListener>,
    pub(crate) spawning_complete: Vec<SpawnListener>,
    pub(crate) request: Vec<RequestListener>,
    pub(crate) user_error: Vec<UserErrorListener>,
    pub(crate) quit: Vec<Box<dyn Fn(i32) + Send + Sync>>,
    pub(crate) usage_monitor: Vec<UsageListener>,
    pub(crate) cpu_warning: Vec<CpuWarningListener>,
    pub(crate) guard_action: Vec<GuardListener>,
    pub(crate) cluster: Vec<ClusterListener>,
}

/// Run every listener, isolating panics so one broken listener cannot end the run.
fn each<L: ?Sized>(event: &str, listeners: &[Box<L>], call: impl Fn(&L)) {
    for listener in listeners {
        if catch_unwind(AssertUnwindSafe(|| call(listener))).is_err() {
            tracing::error!("a listener of the `{event}` event panicked; the run goes on");
        }
    }
}

impl Events {
    pub(crate) fn fire_env(&self, event: &str, listeners: &[EnvListener], env: &Environment) {
        each(event, listeners, |listener| listener(env));
    }

    pub(crate) fn fire_spawning_complete(&self, env: &Environment, user_count: u64) {
        each("spawning_complete", &self.spawning_complete, |listener| {
            listener(env, user_count)
        });
    }

    /// Cheap check used on the hot path before building a [`RequestEvent`].
    #[inline]
    pub(crate) fn has_request_listeners(&self) -> bool {
        !self.request.is_empty()
    }

    pub(crate) fn fire_request(&self, event: &RequestEvent<'_>) {
        each("request", &self.request, |listener| listener(event));
    }

    pub(crate) fn fire_user_error(&self, event: &UserErrorEvent<'_>) {
        each("user_error", &self.user_error, |listener| listener(event));
    }

    pub(crate) fn fire_usage_monitor(&self, env: &Environment, usage: &cicada_monitor::Usage) {
        each("usage_monitor", &self.usage_monitor, |listener| {
            listener(env, usage)
        });
    }

    pub(crate) fn fire_cpu_warning(&self, env: &Environment, cpu_percent: f64) {
        each("cpu_warning", &self.cpu_warning, |listener| {
            listener(env, cpu_percent)
        });
    }

    pub(crate) fn fire_guard_action(&self, env: &Environment, action: &GuardAction) {
        each("guard_action", &self.guard_action, |listener| {
            listener(env, action)
        });
    }

    pub(crate) fn fire_cluster(&self, env: &Environment, event: &ClusterEvent<'_>) {
        each("cluster", &self.cluster, |listener| listener(env, event));
    }

    pub(crate) fn fire_quit(&self, exit_code: i32) {
        each("quit", &self.quit, |listener| listener(exit_code));
    }
}
