//! A JSON report with the same content as the CSV files: the snapshot (entries, total,
//! failures, user errors, overflow counters) and the history ring.
//!
//! ```
//! use cicada_stats::report::json::{JsonReport, write_json_to};
//! use cicada_stats::Stats;
//!
//! let stats = Stats::default();
//! stats.push_history(1);
//! let report = JsonReport::new(stats.snapshot(), stats.history());
//! let mut out = Vec::new();
//! write_json_to(&mut out, &report).unwrap();
//! let back: JsonReport = serde_json::from_slice(&out).unwrap();
//! assert_eq!(back.history.len(), 1);
//! assert_eq!(back.stats.total.name, "Aggregated");
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ReportError, WRITER_PATH};
use crate::snapshot::{HistoryPoint, StatsSnapshot};

/// Everything a run produced, as one document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JsonReport {
    /// The final (or latest) statistics.
    pub stats: StatsSnapshot,
    /// The history ring, oldest first.
    pub history: Vec<HistoryPoint>,
}

impl JsonReport {
    /// A report of `stats` and `history`.
    pub fn new(stats: StatsSnapshot, history: Vec<HistoryPoint>) -> Self {
        JsonReport { stats, history }
    }
}

/// Writes `report` as pretty-printed JSON to the file at `path` (created or truncated).
///
/// ```no_run
/// # fn main() -> Result<(), cicada_stats::report::ReportError> {
/// use cicada_stats::report::json::{JsonReport, write_json};
///
/// let stats = cicada_stats::Stats::default();
/// write_json("run.json", &JsonReport::new(stats.snapshot(), stats.history()))?;
/// # Ok(()) }
/// ```
pub fn write_json(path: impl AsRef<Path>, report: &JsonReport) -> Result<(), ReportError> {
    let path = path.as_ref();
    let io_error = |source| ReportError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::create(path).map_err(io_error)?;
    let mut writer = BufWriter::new(file);
    write_json_at(&mut writer, path, report)?;
    writer.flush().map_err(io_error)
}

/// Writes `report` as pretty-printed JSON into `writer` (errors name the path `"<writer>"`).
pub fn write_json_to<W: Write>(writer: W, report: &JsonReport) -> Result<(), ReportError> {
    write_json_at(writer, Path::new(WRITER_PATH), report)
}

fn write_json_at<W: Write>(writer: W, path: &Path, report: &JsonReport) -> Result<(), ReportError> {
    serde_json::to_writer_pretty(writer, report).map_err(|source| ReportError::Json {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trip() {
        let path = std::env::temp_dir().join(format!(
            "cicada-stats-json-test-{}.json",
            std::process::id()
        ));
        let mut report = JsonReport::default();
        report.stats.total.num_requests = 42;
        report.stats.total.percentiles = vec![(0.5, 0.213), (1.0, 9.0)];
        write_json(&path, &report).unwrap();
        let back: JsonReport = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, report);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn missing_directory_is_reported_with_path() {
        let error =
            write_json("/nonexistent-cicada-dir/run.json", &JsonReport::default()).unwrap_err();
        assert_eq!(error.path(), Path::new("/nonexistent-cicada-dir/run.json"));
    }
}
