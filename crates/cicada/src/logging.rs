//! Logging: `tracing` to stderr or `--logfile`, at `-L/--loglevel`, plus the last lines kept for the web UI.
//!
//! Nothing on the request path logs at info or above; user errors are counted in the stats and logged at error,
//! at most once a second for each distinct error (see `user::errors`).
//! The web UI's log tab reads a ring of the last [`LOG_LINES_KEPT`] lines; older lines are dropped.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Log lines kept for the web UI.
pub(crate) const LOG_LINES_KEPT: usize = 500;

/// One kept log line.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct LogLine {
    /// When, Unix milliseconds.
    pub(crate) unix_ms: u64,
    /// DEBUG, INFO, WARN or ERROR.
    pub(crate) level: String,
    /// The message and its fields.
    pub(crate) message: String,
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

struct KeepLines;

#[derive(Default)]
struct MessageText(String);

impl Visit for MessageText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for KeepLines {
    fn on_event(&self, event: &tracing::Event<'_>, _context: Context<'_, S>) {
        let mut text = MessageText::default();
        event.record(&mut text);
        let line = LogLine {
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            level: event.metadata().level().to_string(),
            message: text.0,
        };
        let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == LOG_LINES_KEPT {
            kept.pop_front();
        }
        kept.push_back(line);
    }
}

/// Install the global subscriber once; later calls (tests running several runs in one process) keep the first.
pub(crate) fn init(level: tracing::Level, logfile: Option<&Path>) -> std::io::Result<()> {
    let filter = || {
        EnvFilter::builder()
            .with_default_directive(level.into())
            .from_env_lossy()
            .add_directive("hyper=warn".parse().expect("static directive"))
            .add_directive("rustls=warn".parse().expect("static directive"))
    };
    let registry = tracing_subscriber::registry().with(KeepLines.with_filter(filter()));
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
