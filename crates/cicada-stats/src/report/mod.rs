//! Locust-compatible reports of a [`StatsSnapshot`](crate::StatsSnapshot): console tables
//! ([`console`]), the CSV files Locust writes with `--csv` ([`csv`]), Locust's JSON list of
//! `--json` ([`locust`]), and cicada's own JSON document with everything, history included
//! ([`json`]). Tools that read Locust's output read the first three. [`compare`] compares two runs' JSON reports.
//!
//! Response times are milliseconds. cicada measures microseconds: the console and cicada's
//! own JSON keep decimals; the CSV files and Locust's JSON use Locust's number types
//! (whole, bucket-rounded milliseconds where Locust writes integers).

pub mod compare;
pub mod console;
pub mod csv;
pub mod json;
pub mod locust;

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
    /// A file written piece by piece (the history CSV) missed pieces.
    #[error("{} is incomplete: {failed} appends failed, the first with: {first_failure}", path.display())]
    Incomplete {
        /// The file.
        path: PathBuf,
        /// How many appends failed.
        failed: u64,
        /// Why the first one failed.
        first_failure: String,
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
            | ReportError::Json { path, .. }
            | ReportError::Incomplete { path, .. } => path,
        }
    }
}

/// Path shown in errors of the writer-based functions.
const WRITER_PATH: &str = "<writer>";
