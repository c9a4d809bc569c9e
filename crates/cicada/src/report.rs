//! Reports at the end of a run (console summary, CSV, JSON) and the task-ratio table.
//!
//! The formats themselves live in `cicada_stats::report`; this module decides which ones a run writes, where, and
//! with which run metadata.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cicada_stats::report::{console, csv, json};
use cicada_stats::{Stats, StatsSnapshot};

use crate::options::Options;
use crate::user::run::UserKind;

/// A report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Writing a file failed.
    #[error("cannot write {path}: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Open `PREFIX_stats_history.csv` for the run.
pub(crate) fn history_writer(
    prefix: &Path,
    full_history: bool,
) -> Result<csv::HistoryCsvWriter, ReportError> {
    let path = with_suffix(prefix, "_stats_history.csv");
    csv::HistoryCsvWriter::create(&path, full_history).map_err(|e| ReportError::Write {
        path,
        message: e.to_string(),
    })
}

/// Print the summary and write every report the options ask for.
pub(crate) fn write_final(
    options: &Options,
    stats: &Stats,
    snapshot: &StatsSnapshot,
    run_time: Duration,
    host: &str,
    stop_reason: &str,
) -> Result<(), ReportError> {
    if options.json {
        let report = json::JsonReport {
            stats: snapshot.clone(),
            history: stats.history(),
        };
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer_pretty(&mut out, &report);
        let _ = writeln!(out);
    } else {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "\nTest finished ({stop_reason}) after {} against {host}\n",
            humantime::format_duration(Duration::from_secs(run_time.as_secs()))
        );
        text.push_str(&console::stats_table(snapshot));
        text.push('\n');
        text.push_str(&console::percentiles_table(snapshot));
        if !snapshot.failures.is_empty() {
            text.push('\n');
            text.push_str(&console::failures_table(snapshot));
        }
        if !snapshot.user_errors.is_empty() {
            text.push('\n');
            text.push_str(&console::user_errors_table(snapshot));
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
    let fail = |path: PathBuf| {
        move |e: cicada_stats::report::ReportError| ReportError::Write {
            path: path.clone(),
            message: e.to_string(),
        }
    };
    if let Some(prefix) = &options.csv_prefix {
        let path = with_suffix(prefix, "_stats.csv");
        csv::write_stats(&path, snapshot).map_err(fail(path.clone()))?;
        let path = with_suffix(prefix, "_failures.csv");
        csv::write_failures(&path, snapshot).map_err(fail(path.clone()))?;
        let path = with_suffix(prefix, "_exceptions.csv");
        csv::write_exceptions(&path, snapshot).map_err(fail(path.clone()))?;
    }
    if let Some(path) = &options.json_file {
        let report = json::JsonReport {
            stats: snapshot.clone(),
            history: stats.history(),
        };
        json::write_json(path, &report).map_err(fail(path.clone()))?;
    }
    Ok(())
}

/// `--show-task-ratio`: each user type's share of users, and each task's share of its user's time.
pub(crate) fn task_ratio_table(types: &[Box<dyn UserKind>]) -> String {
    let weighted: u64 = types
        .iter()
        .filter(|t| t.fixed_count().is_none())
        .map(|t| u64::from(t.weight()))
        .sum();
    let mut text = String::from("\n Task ratio per user type and total task ratio\n\n");
    for kind in types {
        let share = match kind.fixed_count() {
            Some(count) => format!("fixed count {count}"),
            None if weighted > 0 => {
                format!("{:.1}%", 100.0 * f64::from(kind.weight()) / weighted as f64)
            }
            None => "0.0%".to_string(),
        };
        let _ = writeln!(text, "{} ({share})", kind.name());
        for row in kind.ratio_rows() {
            let _ = writeln!(
                text,
                "{:indent$}{:>6.1}%  {:>6.1}% of all  {}",
                "",
                100.0 * row.share,
                100.0 * row.total_share,
                row.name,
                indent = 4 + 4 * row.depth
            );
        }
    }
    text
}
