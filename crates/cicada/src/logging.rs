//! Logging: `tracing` to stderr or `--logfile`, at `-L/--loglevel`, plus the last lines kept for the web UI.
//!
//! Nothing on the request path logs at info or above; user errors are counted in the stats and logged at error,
//! at most once a second for each distinct error (see `user::errors`).
//! The web UI's log tab reads a ring of the last [`LOG_LINES_KEPT`] lines; older lines are dropped. On a cluster
//! master, the lines its workers forward (`cluster::forward_logs`) go into the same ring and the same output,
//! tagged with the worker's id ([`worker_line`]); a forwarded line is at most [`MAX_FORWARDED_LINE_BYTES`] long.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Log lines kept for the web UI (the master's own and its workers' together).
pub(crate) const LOG_LINES_KEPT: usize = 500;

/// The longest forwarded line, bytes: a worker cuts longer ones, and so does the master (a line of another build).
pub(crate) const MAX_FORWARDED_LINE_BYTES: usize = 2_048;

/// The target of the events that carry a worker's forwarded lines on the master; their `worker` field is the id.
pub(crate) const WORKER_LOG_TARGET: &str = "cicada::worker";

/// One kept log line.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct LogLine {
    /// When, Unix milliseconds (on the master: when the line arrived).
    pub(crate) unix_ms: u64,
    /// DEBUG, INFO, WARN or ERROR.
    pub(crate) level: String,
    /// The message and its fields.
    pub(crate) message: String,
    /// The worker that logged it, for a line a worker forwarded to its master; `null` for this process's own.
    pub(crate) worker: Option<String>,
}

static KEPT: Mutex<VecDeque<LogLine>> = Mutex::new(VecDeque::new());

/// The last log lines, oldest first.
pub(crate) fn recent_lines() -> Vec<LogLine> {
    KEPT.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect()
}

fn keep(line: LogLine) {
    let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    if kept.len() == LOG_LINES_KEPT {
        kept.pop_front();
    }
    kept.push_back(line);
}

struct KeepLines;

/// An event's message and fields as one line of text; the `worker` field of a forwarded line is taken apart.
#[derive(Default)]
pub(crate) struct MessageText {
    pub(crate) text: String,
    /// Take a field named `worker` apart instead of writing it into the text.
    take_worker: bool,
    worker: Option<String>,
}

impl MessageText {
    /// The text of `event`: its message, then ` name=value` for each other field.
    pub(crate) fn of(event: &tracing::Event<'_>) -> String {
        let mut text = MessageText::default();
        event.record(&mut text);
        text.text
    }
}

impl Visit for MessageText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.take_worker && field.name() == "worker" {
            self.worker = Some(value.to_string());
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        } else if self.take_worker && field.name() == "worker" {
            self.worker = Some(format!("{value:?}"));
        } else {
            let _ = write!(self.text, " {}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for KeepLines {
    fn on_event(&self, event: &tracing::Event<'_>, _context: Context<'_, S>) {
        let mut text = MessageText {
            take_worker: event.metadata().target() == WORKER_LOG_TARGET,
            ..MessageText::default()
        };
        event.record(&mut text);
        keep(LogLine {
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            level: event.metadata().level().to_string(),
            message: text.text,
            worker: text.worker,
        });
    }
}

/// `text` made safe to print as one log line: control characters (newlines, escape sequences) become spaces, so a
/// line cannot pose as another or repaint a terminal, and it is cut to at most `max_bytes` (plus an ellipsis).
pub(crate) fn one_line(text: &str, max_bytes: usize) -> Cow<'_, str> {
    let cut = if text.len() > max_bytes {
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Some(end)
    } else {
        None
    };
    let kept = &text[..cut.unwrap_or(text.len())];
    if cut.is_none() && !kept.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out: String = kept
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if cut.is_some() {
        out.push('…');
    }
    Cow::Owned(out)
}

/// A line forwarded by a worker: into this process's log output at its level (as the master's `-L` allows), and
/// into the web UI's ring tagged with the worker's id.
pub(crate) fn worker_line(worker: &str, level: cicada_cluster::LogLevel, text: &str) {
    use cicada_cluster::LogLevel;
    let text = one_line(text, MAX_FORWARDED_LINE_BYTES);
    let worker = one_line(worker, 256);
    match level {
        LogLevel::Error => {
            tracing::error!(target: WORKER_LOG_TARGET, worker = %worker, "{text}");
        }
        LogLevel::Warn => tracing::warn!(target: WORKER_LOG_TARGET, worker = %worker, "{text}"),
        LogLevel::Info => tracing::info!(target: WORKER_LOG_TARGET, worker = %worker, "{text}"),
        LogLevel::Debug => {
            tracing::debug!(target: WORKER_LOG_TARGET, worker = %worker, "{text}");
        }
    }
}

/// Install the global subscriber once; later calls (tests running several runs in one process) keep the first.
/// A worker (`forward_to_master`) also queues its lines for its master (`cluster::forward_logs`), at the same level.
pub(crate) fn init(
    level: tracing::Level,
    logfile: Option<&Path>,
    forward_to_master: bool,
) -> std::io::Result<()> {
    let filter = || {
        EnvFilter::builder()
            .with_default_directive(level.into())
            .from_env_lossy()
            .add_directive("hyper=warn".parse().expect("static directive"))
            .add_directive("rustls=warn".parse().expect("static directive"))
    };
    let forward = forward_to_master
        .then(|| crate::cluster::forward_logs::ForwardLogs::layer().with_filter(filter()));
    let registry = tracing_subscriber::registry()
        .with(KeepLines.with_filter(filter()))
        .with(forward);
    let installed = match logfile {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_target(false)
                        .with_ansi(false)
                        .with_writer(Mutex::new(file))
                        .with_filter(filter()),
                )
                .try_init()
        }
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr)
                    .with_filter(filter()),
            )
            .try_init(),
    };
    // Already installed by an earlier run in this process: keep it.
    drop(installed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_line_stays_one_line_and_is_cut_on_a_character() {
        assert!(matches!(one_line("plain text", 100), Cow::Borrowed(_)));
        assert_eq!(one_line("two\nlines\x1b[2J", 100), "two lines [2J");
        assert_eq!(one_line("ééé", 3), "é…", "3 bytes cut inside the second é");
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(one_line("abc", 3), "abc");
    }

    #[test]
    fn a_worker_line_is_kept_with_its_worker_and_without_it_in_the_text() {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(KeepLines);
        tracing::subscriber::with_default(subscriber, || {
            worker_line(
                "host_42_0badcafe",
                cicada_cluster::LogLevel::Warn,
                "user error in task: boom\nsecond line",
            );
            tracing::info!(worker = "not a forwarded line", "own line");
        });
        let lines = recent_lines();
        let forwarded = lines
            .iter()
            .rev()
            .find(|l| l.message.contains("boom"))
            .expect("the forwarded line is kept");
        assert_eq!(forwarded.worker.as_deref(), Some("host_42_0badcafe"));
        assert_eq!(forwarded.level, "WARN");
        assert_eq!(forwarded.message, "user error in task: boom second line");
        let own = lines
            .iter()
            .rev()
            .find(|l| l.message.starts_with("own line"))
            .expect("the master's own line is kept");
        assert_eq!(
            own.worker, None,
            "only the worker target's field is the tag"
        );
        assert!(own.message.contains("worker="), "{}", own.message);
    }
}
