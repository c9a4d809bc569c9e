//! The monitor's error type. Only start-up can fail, and only when the process's own files (`/proc/self/stat`,
//! `/proc/self/status`, `/proc/meminfo`) cannot be read or understood; everything about cgroups is optional
//! and degrades to "unknown" instead.

use std::path::PathBuf;

/// Why a [`Monitor`](crate::Monitor) could not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A file could not be read.
    #[error("cicada-monitor: cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file was read but not understood.
    #[error("cicada-monitor: cannot parse {}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong or missing.
        reason: String,
    },
}
