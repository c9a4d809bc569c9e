//! A worker's log lines, forwarded to its master: a `tracing` layer (installed by `logging::init` when the process
//! runs as a worker) queues each line the worker logs at its own `-L/--loglevel` (INFO by default), and a task
//! started with the session ([`attach`]) hands them to [`WorkerHandle::log`]. The master shows them in its log
//! output and its web UI's Logs tab, tagged with the worker's id (`logging::worker_line`).
//!
//! Bounds, so that a chatty or failing worker cannot flood its master: at most [`BURST`] lines at once and
//! [`PER_SECOND`] a second on average (a token bucket), at most [`QUEUE_LINES`] lines waiting for the session, each
//! at most [`crate::logging::MAX_FORWARDED_LINE_BYTES`] long, on one line. Lines over a bound are dropped and
//! counted; once a second the worker forwards one line saying how many were dropped (including those its session
//! queue dropped while the master was away). The transport's own debug lines (h2, tonic, the cluster session) are
//! never forwarded: forwarding them would make more of them. Formatting happens only for admitted lines, so a
//! worker run at `-L DEBUG` pays little for the lines it drops.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use cicada_cluster::{LogLevel, WorkerHandle};
use tokio::sync::mpsc;
use tracing_subscriber::layer::{Context, Layer};

use crate::logging::{MAX_FORWARDED_LINE_BYTES, MessageText, one_line};

/// Lines forwarded at once, at most (the bucket's size).
pub(crate) const BURST: u32 = 50;
/// Lines forwarded a second on average, at most (the bucket's refill).
pub(crate) const PER_SECOND: u32 = 10;
/// Lines waiting for the session, at most (before the worker attached, or while the task is behind).
pub(crate) const QUEUE_LINES: usize = 256;
/// How often the count of dropped lines is forwarded (when it is not 0).
const DROPS_REPORTED_EVERY: Duration = Duration::from_secs(1);
/// Targets whose debug and trace lines are not forwarded: the transport's, which forwarding itself produces.
const TRANSPORT_TARGETS: [&str; 6] = ["h2", "tonic", "tower", "hyper", "rustls", "cicada_cluster"];

/// A token bucket: `size` lines at once, `per_second` a second on average.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    size: f64,
    per_second: f64,
    last: Option<Instant>,
}

impl Bucket {
    fn new(size: u32, per_second: u32) -> Bucket {
        Bucket {
            tokens: f64::from(size),
            size: f64::from(size),
            per_second: f64::from(per_second),
            last: None,
        }
    }

    /// Whether one more line may go at `now`.
    fn admit(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.size);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Line {
    level: LogLevel,
    text: String,
}

/// The queue between the layer (any thread) and the session's task; one per process.
struct Shared {
    bucket: Mutex<Bucket>,
    sender: mpsc::Sender<Line>,
    /// Taken by the first [`attach`].
    receiver: Mutex<Option<mpsc::Receiver<Line>>>,
    /// Lines over the rate or the queue since the last report.
    dropped: AtomicU64,
}

static SHARED: LazyLock<Shared> = LazyLock::new(|| {
    let (sender, receiver) = mpsc::channel(QUEUE_LINES);
    Shared {
        bucket: Mutex::new(Bucket::new(BURST, PER_SECOND)),
        sender,
        receiver: Mutex::new(Some(receiver)),
        dropped: AtomicU64::new(0),
    }
});

/// The `tracing` layer that queues a worker's lines for its master.
pub(crate) struct ForwardLogs;

impl ForwardLogs {
    pub(crate) fn layer() -> ForwardLogs {
        LazyLock::force(&SHARED);
        ForwardLogs
    }
}

fn forwarded_level(level: tracing::Level) -> LogLevel {
    match level {
        tracing::Level::ERROR => LogLevel::Error,
        tracing::Level::WARN => LogLevel::Warn,
        tracing::Level::INFO => LogLevel::Info,
        _ => LogLevel::Debug,
    }
}

/// Whether a line of this target and level is never forwarded.
fn is_transport_detail(target: &str, level: tracing::Level) -> bool {
    level > tracing::Level::INFO
        && TRANSPORT_TARGETS.iter().any(|prefix| {
            target == *prefix
                || target
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with("::"))
        })
}

impl<S: tracing::Subscriber> Layer<S> for ForwardLogs {
    fn on_event(&self, event: &tracing::Event<'_>, _context: Context<'_, S>) {
        let metadata = event.metadata();
        if metadata.target() == crate::logging::WORKER_LOG_TARGET
            || is_transport_detail(metadata.target(), *metadata.level())
        {
            return;
        }
        let shared = &*SHARED;
        let admitted = shared
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .admit(Instant::now());
        if !admitted {
            shared.dropped.fetch_add(1, Relaxed);
            return;
        }
        let text = MessageText::of(event);
        let line = Line {
            level: forwarded_level(*metadata.level()),
            text: one_line(&text, MAX_FORWARDED_LINE_BYTES).into_owned(),
        };
        if shared.sender.try_send(line).is_err() {
            shared.dropped.fetch_add(1, Relaxed);
        }
    }
}

/// Ends the forwarding task when dropped.
pub(crate) struct Forwarding(Option<tokio::task::JoinHandle<()>>);

impl Drop for Forwarding {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Start handing the queued lines to the session (call inside the runtime). Without the layer installed (the
/// process was not started as a worker), or a second time, nothing is forwarded.
pub(crate) fn attach(handle: &WorkerHandle) -> Forwarding {
    let receiver = SHARED
        .receiver
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let Some(mut receiver) = receiver else {
        return Forwarding(None);
    };
    let handle = handle.clone();
    Forwarding(Some(tokio::spawn(async move {
        let mut report = tokio::time::interval(DROPS_REPORTED_EVERY);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Lines the session's own queue dropped (the master was away and it filled), already reported.
        let mut session_drops_seen = 0;
        loop {
            tokio::select! {
                line = receiver.recv() => match line {
                    Some(line) => handle.log(line.level, line.text),
                    None => return,
                },
                _ = report.tick() => {
                    let session_drops = handle.counters().logs_dropped;
                    let dropped = SHARED.dropped.swap(0, Relaxed)
                        + session_drops.saturating_sub(session_drops_seen);
                    session_drops_seen = session_drops;
                    if dropped > 0 {
                        handle.log(LogLevel::Warn, dropped_text(dropped));
                    }
                }
            }
        }
    })))
}

fn dropped_text(dropped: u64) -> String {
    format!(
        "{dropped} log line{} of this worker {} not forwarded to the master (at most {BURST} at once and \
         {PER_SECOND} a second are, and {QUEUE_LINES} wait while the master is away)",
        if dropped == 1 { "" } else { "s" },
        if dropped == 1 { "was" } else { "were" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_a_burst_through_then_the_rate() {
        let mut bucket = Bucket::new(5, 2);
        let start = Instant::now();
        let burst = (0..20).filter(|_| bucket.admit(start)).count();
        assert_eq!(burst, 5, "a burst of its size");
        assert!(
            !bucket.admit(start + Duration::from_millis(400)),
            "0.8 of a line"
        );
        assert!(
            bucket.admit(start + Duration::from_millis(500)),
            "one line after 0.5 s"
        );
        let later = start + Duration::from_secs(60);
        let after_a_minute = (0..20).filter(|_| bucket.admit(later)).count();
        assert_eq!(after_a_minute, 5, "it never holds more than its size");
    }

    #[test]
    fn the_transport_details_are_not_forwarded_but_its_warnings_are() {
        use tracing::Level;
        assert!(is_transport_detail("h2::codec", Level::DEBUG));
        assert!(is_transport_detail("cicada_cluster::worker", Level::TRACE));
        assert!(is_transport_detail("tonic", Level::DEBUG));
        assert!(!is_transport_detail("cicada_cluster::worker", Level::WARN));
        assert!(
            !is_transport_detail("h2x", Level::DEBUG),
            "a prefix only at ::"
        );
        assert!(!is_transport_detail("cicada::user::run", Level::DEBUG));
        assert_eq!(forwarded_level(Level::TRACE), LogLevel::Debug);
        assert_eq!(forwarded_level(Level::WARN), LogLevel::Warn);
    }

    #[test]
    fn the_drop_report_says_how_many() {
        assert!(dropped_text(1).starts_with("1 log line of this worker was not forwarded"));
        assert!(dropped_text(7).starts_with("7 log lines of this worker were not forwarded"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lines_reach_the_master_bounded_and_the_drops_are_reported() {
        use tracing_subscriber::layer::SubscriberExt;
        let test = cicada_cluster::TestIdentity::new("forward-logs", "forward-logs");
        let (master, mut events) =
            cicada_cluster::MasterServer::start(cicada_cluster::MasterConfig {
                bind_port: 0,
                version: "test".to_string(),
                test: test.clone(),
                ..cicada_cluster::MasterConfig::default()
            })
            .await
            .unwrap();
        let (handle, _worker_events) =
            cicada_cluster::WorkerClient::start(cicada_cluster::WorkerConfig {
                master_host: "127.0.0.1".to_string(),
                master_port: master.local_addr().port(),
                version: "test".to_string(),
                test,
                ..cicada_cluster::WorkerConfig::default()
            })
            .unwrap();
        // Logged before the session's task runs: queued (the burst), the rest dropped and counted.
        let subscriber = tracing_subscriber::registry().with(ForwardLogs::layer());
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..(BURST + 30) {
                tracing::warn!("line {i} {}", "x".repeat(MAX_FORWARDED_LINE_BYTES));
            }
            tracing::debug!(target: "h2::codec", "transport detail");
        });
        let forwarding = attach(&handle);
        assert!(attach(&handle).0.is_none(), "one forwarder per process");
        let mut lines = Vec::new();
        let mut drops_line = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while drops_line.is_none() || lines.len() < BURST as usize {
            let event = tokio::time::timeout_at(deadline, events.recv())
                .await
                .expect("the lines and the drop report arrive within 20 s")
                .expect("the master runs");
            if let cicada_cluster::MasterEvent::Log { level, text, .. } = event {
                if text.starts_with("line ") {
                    assert_eq!(level, LogLevel::Warn);
                    lines.push(text);
                } else {
                    drops_line = Some(text);
                }
            }
        }
        drop(forwarding);
        assert_eq!(
            lines.len(),
            BURST as usize,
            "the burst, in order: {:?}",
            &lines[..3]
        );
        assert!(lines[0].starts_with("line 0 xxx"));
        assert!(
            lines
                .iter()
                .all(|l| l.len() == MAX_FORWARDED_LINE_BYTES + '…'.len_utf8())
        );
        let drops_line = drops_line.unwrap();
        assert!(
            drops_line.starts_with("30 log lines of this worker were not forwarded"),
            "{drops_line}"
        );
        master.shutdown().await;
    }
}
