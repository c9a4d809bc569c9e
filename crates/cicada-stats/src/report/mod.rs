//! Locust-compatible reports of a [`StatsSnapshot`](crate::StatsSnapshot): console tables
//! ([`console`]), the CSV files Locust writes with `--csv` ([`csv`]) and a JSON document with
//! the same content ([`json`]). Tools that read Locust's output read these.
//!
//! Response times are milliseconds. Unlike Locust, which stores whole milliseconds, cicada
//! measures microseconds, so values below 100 ms keep decimals.

pub mod console;
pub mod csv;
pub mod json;

mod format;

use std::path::{Path, PathBuf};

/// Failure to write a report, with the path written to (`"<writer>"` when writing to a
/// caller-supplied writer).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Creating, writing or flushing the file failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The CSV writer failed.
    #[error("cannot write CSV {}: {source}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ::csv::Error,
    },
    /// JSON serialisation failed.
    #[error("cannot write JSON {}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl ReportError {
    /// The path the failed report was written to.
    ///
    /// ```
    /// use cicada_stats::report::csv::write_stats;
    /// use cicada_stats::StatsSnapshot;
    ///
    /// let error = write_stats("/nonexistent-dir/run_stats.csv", &StatsSnapshot::default()).unwrap_err();
    /// assert_eq!(error.path(), std::path::Path::new("/nonexistent-dir/run_stats.csv"));
    /// ```
    pub fn path(&self) -> &Path {
        match self {
            ReportError::Io { path, .. }
            | ReportError::Csv { path, .. }
            | ReportError::Json { path, .. } => path,
        }
    }
}

/// Path shown in errors of the writer-based functions.
const WRITER_PATH: &str = "<writer>";
