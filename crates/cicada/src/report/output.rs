//! Report files: every path checked before any load is sent, every final report written so that it is either
//! complete or absent.
//!
//! At the start of a run, [`ReportOutputs::open`] checks each report path (`--csv PREFIX`'s four files, `--html`,
//! `--json-file`, `--report-json`): a path naming a directory, a device, a FIFO or a socket, an existing file that
//! cannot be written, or a directory that is missing or where no file can be created is refused as a usage error
//! that names the flag, the path and the reason. The directory is proven writable by creating and removing a probe
//! file in it; the report's own path is not touched, so an earlier report there survives until the new one is
//! complete.
//!
//! At the end, each final report is written into a temporary file beside its path (`.NAME.cicada-PID.tmp`),
//! flushed to disk and renamed over `NAME`. A report that is at its path is therefore complete: a run that is
//! killed, or a write that fails (disk full, directory removed), leaves no half-written report behind (a kill
//! during the final write may leave the temporary file, which never has a report's name).
//!
//! The exception is `PREFIX_stats_history.csv`, which grows during the run (a row a second, flushed, so it can be
//! tailed, as in Locust): it is created at the start, removed again if the run ends before its first row, and at the
//! end checked to still be the file that was written (not removed or replaced meanwhile).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cicada_stats::report::csv::HistoryCsvWriter;

use crate::options::Options;

/// A report path that cannot be used: a usage error, found before the test starts.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {}: {reason}", path.display())]
pub(crate) struct UnusablePath {
    /// The flag that named it.
    pub(crate) flag: &'static str,
    /// The path as given.
    pub(crate) path: PathBuf,
    /// Why, and what to do.
    pub(crate) reason: String,
}

/// A report that could not be written at the end.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {}: {reason}", path.display())]
pub(crate) struct WriteFailure {
    /// The flag that asked for it.
    pub(crate) flag: &'static str,
    /// Where it was to be written.
    pub(crate) path: PathBuf,
    /// Why it was not.
    pub(crate) reason: String,
}

/// One final report's path, checked at the start.
#[derive(Debug)]
pub(crate) struct OutputFile {
    flag: &'static str,
    /// The path to write (a symbolic link is resolved, so that the link is kept and its target replaced).
    path: PathBuf,
    /// The file's canonical directory and name: two reports with the same identity would overwrite each other.
    identity: PathBuf,
}

impl OutputFile {
    /// Checks that a report can be written at `given`: see the module documentation.
    pub(crate) fn check(flag: &'static str, given: &Path) -> Result<OutputFile, UnusablePath> {
        let unusable = |reason: String| UnusablePath {
            flag,
            path: given.to_path_buf(),
            reason,
        };
        if given.as_os_str().is_empty() {
            return Err(unusable("the path is empty: give a file name".to_string()));
        }
        let is_link = fs::symlink_metadata(given).is_ok_and(|meta| meta.file_type().is_symlink());
        let path = if is_link {
            fs::canonicalize(given).map_err(|error| {
                unusable(format!(
                    "a symbolic link that cannot be followed ({error}); give the file itself"
                ))
            })?
        } else {
            given.to_path_buf()
        };
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => {
                // Opened for writing without truncating: an earlier report stays until the new one replaces it.
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|error| {
                        unusable(format!("the file exists and cannot be written: {error}"))
                    })?;
            }
            Ok(meta) if meta.is_dir() => {
                return Err(unusable(
                    "is a directory: give a file name inside it".to_string(),
                ));
            }
            Ok(meta) => {
                return Err(unusable(format!(
                    "is {}, not a regular file: reports are written to regular files only",
                    special_file_kind(&meta)
                )));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                // A parent that is missing or not a directory says more than the file's own error (ENOTDIR).
                probe_directory(parent_directory(&path)).map_err(unusable)?;
                return Err(unusable(format!("cannot be inspected: {error}")));
            }
        }
        let directory = parent_directory(&path);
        probe_directory(directory).map_err(unusable)?;
        let identity = match (fs::canonicalize(directory), path.file_name()) {
            (Ok(directory), Some(name)) => directory.join(name),
            _ => path.clone(),
        };
        Ok(OutputFile {
            flag,
            path,
            identity,
        })
    }

    /// Where the report goes.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn temporary_path(&self) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map_or_else(|| "report".into(), |name| name.to_string_lossy());
        parent_directory(&self.path).join(format!(".{name}.cicada-{}.tmp", std::process::id()))
    }

    /// Writes the report: into a temporary file beside it, flushed to disk, then renamed over the path. On failure
    /// nothing is left at the path (an earlier file there is kept) and the temporary file is removed.
    pub(crate) fn write(
        &self,
        contents: impl FnOnce(&mut dyn Write) -> Result<(), String>,
    ) -> Result<(), WriteFailure> {
        let temporary = self.temporary_path();
        let written = (|| {
            let file = File::create(&temporary).map_err(|error| {
                format!(
                    "cannot create the temporary file {}: {error}",
                    temporary.display()
                )
            })?;
            let mut out = BufWriter::new(file);
            contents(&mut out)?;
            let file = out
                .into_inner()
                .map_err(|error| format!("cannot write: {}", error.error()))?;
            file.sync_all()
                .map_err(|error| format!("cannot write: {error}"))?;
            fs::rename(&temporary, &self.path).map_err(|error| {
                format!(
                    "cannot move the finished report from {} into place: {error}",
                    temporary.display()
                )
            })
        })();
        written.map_err(|reason| {
            let _ = fs::remove_file(&temporary);
            WriteFailure {
                flag: self.flag,
                path: self.path.clone(),
                reason,
            }
        })
    }
}

/// The directory a path's file lives in (`.` for a bare file name).
fn parent_directory(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Distinguishes probe files of concurrent checks in one process.
static PROBES: AtomicU64 = AtomicU64::new(0);

/// Proves that files can be created in `directory` by creating and removing one.
fn probe_directory(directory: &Path) -> Result<(), String> {
    match fs::metadata(directory) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", directory.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "the directory {} does not exist: create it first",
                directory.display()
            ));
        }
        Err(error) => {
            return Err(format!(
                "cannot inspect the directory {}: {error}",
                directory.display()
            ));
        }
    }
    let probe = directory.join(format!(
        ".cicada-probe-{}-{}",
        std::process::id(),
        PROBES.fetch_add(1, Ordering::Relaxed)
    ));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|error| format!("cannot create files in {}: {error}", directory.display()))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

#[cfg(unix)]
fn special_file_kind(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_file_kind(_meta: &fs::Metadata) -> &'static str {
    "a special file"
}

/// What identifies a file independently of its name, to notice that a path was removed or replaced.
#[cfg(unix)]
fn identity(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn identity(_meta: &fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// `PREFIX_stats_history.csv`, appended to during the run (it dereferences to its writer). Dropped before its
/// first row (the run ended early with a usage error), it removes its header-only file.
#[derive(Debug)]
pub(crate) struct HistoryCsv {
    writer: Option<HistoryCsvWriter>,
}

impl HistoryCsv {
    fn create(checked: &OutputFile, full_history: bool) -> Result<HistoryCsv, UnusablePath> {
        let writer = HistoryCsvWriter::create(checked.path(), full_history).map_err(|error| {
            UnusablePath {
                flag: checked.flag,
                path: checked.path.clone(),
                reason: reason(&error),
            }
        })?;
        Ok(HistoryCsv {
            writer: Some(writer),
        })
    }

    /// Flushes the history and checks that every row reached the file, and that the file is still at its path.
    pub(crate) fn finish(mut self) -> Result<(), WriteFailure> {
        let writer = self.writer.take().expect("only finish takes the writer");
        let path = writer.path().to_path_buf();
        let failure = |reason: String| WriteFailure {
            flag: "--csv",
            path: path.clone(),
            reason,
        };
        let file = writer.finish().map_err(|error| failure(reason(&error)))?;
        let written = file
            .metadata()
            .map_err(|error| failure(format!("cannot inspect the written file: {error}")))?;
        match fs::metadata(&path) {
            Ok(now) if identity(&now) == identity(&written) => Ok(()),
            _ => Err(failure(
                "the file was removed or replaced during the run: the rows written to it are lost"
                    .to_string(),
            )),
        }
    }
}

impl Deref for HistoryCsv {
    type Target = HistoryCsvWriter;

    fn deref(&self) -> &HistoryCsvWriter {
        self.writer.as_ref().expect("present until finish")
    }
}

impl DerefMut for HistoryCsv {
    fn deref_mut(&mut self) -> &mut HistoryCsvWriter {
        self.writer.as_mut().expect("present until finish")
    }
}

impl Drop for HistoryCsv {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take()
            && writer.appends() == 0
        {
            let path = writer.path().to_path_buf();
            drop(writer);
            let _ = fs::remove_file(path);
        }
    }
}

/// The final CSV files of `--csv PREFIX`.
#[derive(Debug)]
pub(crate) struct CsvOutputs {
    pub(crate) stats: OutputFile,
    pub(crate) failures: OutputFile,
    pub(crate) exceptions: OutputFile,
}

/// Every report file a run writes, checked (and the history CSV created) before any load is sent.
#[derive(Debug, Default)]
pub(crate) struct ReportOutputs {
    pub(crate) csv: Option<CsvOutputs>,
    history: Option<HistoryCsv>,
    pub(crate) html: Option<OutputFile>,
    /// Locust's JSON list (`--json-file NAME` writes `NAME.json`).
    pub(crate) locust_json: Option<OutputFile>,
    /// cicada's own JSON report (`--report-json FILE`).
    pub(crate) report_json: Option<OutputFile>,
    /// The checks and request names as JUnit XML (`--junit FILE`).
    pub(crate) junit: Option<OutputFile>,
}

/// `prefix` followed by `suffix` (`run` + `_stats.csv`).
pub(crate) fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

impl ReportOutputs {
    /// Checks every report path the options name; the first unusable one is the error.
    pub(crate) fn open(options: &Options) -> Result<ReportOutputs, UnusablePath> {
        let mut outputs = ReportOutputs::default();
        let mut history_file = None;
        if let Some(prefix) = &options.csv_prefix {
            check_csv_prefix(prefix)?;
            let file = |suffix: &str| OutputFile::check("--csv", &with_suffix(prefix, suffix));
            outputs.csv = Some(CsvOutputs {
                stats: file("_stats.csv")?,
                failures: file("_failures.csv")?,
                exceptions: file("_exceptions.csv")?,
            });
            history_file = Some(file("_stats_history.csv")?);
        }
        if let Some(path) = &options.html {
            outputs.html = Some(OutputFile::check("--html", path)?);
        }
        if let Some(name) = &options.json_file {
            outputs.locust_json = Some(OutputFile::check(
                "--json-file",
                &with_suffix(name, ".json"),
            )?);
        }
        if let Some(path) = &options.report_json {
            outputs.report_json = Some(OutputFile::check("--report-json", path)?);
        }
        if let Some(path) = &options.junit {
            outputs.junit = Some(OutputFile::check("--junit", path)?);
        }
        outputs.refuse_shared_paths(history_file.as_ref())?;
        // Created last: nothing is left behind when another path is refused.
        if let Some(file) = &history_file {
            outputs.history = Some(HistoryCsv::create(file, options.csv_full_history)?);
        }
        Ok(outputs)
    }

    /// Two reports given the same file would overwrite each other.
    fn refuse_shared_paths(&self, history: Option<&OutputFile>) -> Result<(), UnusablePath> {
        let files: Vec<&OutputFile> = self
            .csv
            .iter()
            .flat_map(|csv| [&csv.stats, &csv.failures, &csv.exceptions])
            .chain(history)
            .chain(&self.html)
            .chain(&self.locust_json)
            .chain(&self.report_json)
            .chain(&self.junit)
            .collect();
        for (index, file) in files.iter().enumerate() {
            if let Some(earlier) = files[..index]
                .iter()
                .find(|earlier| earlier.identity == file.identity)
            {
                return Err(UnusablePath {
                    flag: file.flag,
                    path: file.path.clone(),
                    reason: format!(
                        "{} writes to the same file: give each report its own path",
                        earlier.flag
                    ),
                });
            }
        }
        Ok(())
    }

    /// The history CSV, for the run loop to append to (and to hand back to the final write).
    pub(crate) fn take_history_csv(&mut self) -> Option<HistoryCsv> {
        self.history.take()
    }
}

/// `--csv PREFIX` names the start of file names: a prefix that is itself a device (`--csv /dev/full`) is a mistake,
/// whatever its directory allows.
fn check_csv_prefix(prefix: &Path) -> Result<(), UnusablePath> {
    let unusable = |reason: String| UnusablePath {
        flag: "--csv",
        path: prefix.to_path_buf(),
        reason,
    };
    if prefix.as_os_str().is_empty() {
        return Err(unusable(
            "the prefix is empty: give one like results/run".to_string(),
        ));
    }
    match fs::metadata(prefix) {
        Ok(meta) if !meta.is_file() && !meta.is_dir() => Err(unusable(format!(
            "names {}: the prefix starts file names, give one like results/run",
            special_file_kind(&meta)
        ))),
        _ => Ok(()),
    }
}

/// The cause of a stats-crate report error, without its `<writer>` placeholder path.
pub(crate) fn reason(error: &cicada_stats::report::ReportError) -> String {
    match std::error::Error::source(error) {
        Some(source) => source.to_string(),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_directories_and_missing_directories_are_refused() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        let error = OutputFile::check("--html", Path::new("/dev/full")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("--html /dev/full: is a device"),
            "{error}"
        );
        let error = OutputFile::check("--html", dir).unwrap_err();
        assert!(error.reason.contains("is a directory"), "{error}");
        let error = OutputFile::check("--html", &dir.join("missing/report.html")).unwrap_err();
        assert!(error.reason.contains("does not exist"), "{error}");
        let file = dir.join("file");
        fs::write(&file, "x").unwrap();
        let error = OutputFile::check("--html", &file.join("report.html")).unwrap_err();
        assert!(error.reason.contains("is not a directory"), "{error}");
        let error = check_csv_prefix(Path::new("/dev/null")).unwrap_err();
        assert!(error.reason.contains("names a device"), "{error}");
        assert!(
            check_csv_prefix(dir).is_ok(),
            "a directory prefix is Locust's `dir_stats.csv`"
        );
    }

    #[test]
    fn a_failed_write_leaves_no_report_and_keeps_the_old_one() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        let path = dir.join("report.html");
        fs::write(&path, "old").unwrap();
        let output = OutputFile::check("--html", &path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "old",
            "checking does not touch the file"
        );
        let failure = output
            .write(|out| {
                out.write_all(b"half").map_err(|e| e.to_string())?;
                Err("the renderer failed".to_string())
            })
            .unwrap_err();
        assert_eq!(failure.flag, "--html");
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        output
            .write(|out| out.write_all(b"new").map_err(|e| e.to_string()))
            .unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        let left: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["report.html"], "no temporary or probe file is left");
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_keeps_pointing_at_the_new_report() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        let target = dir.join("real.json");
        let link = dir.join("link.json");
        fs::write(&target, "old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let output = OutputFile::check("--report-json", &link).unwrap();
        output
            .write(|out| out.write_all(b"new").map_err(|e| e.to_string()))
            .unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
    }

    #[test]
    fn a_history_without_rows_is_removed_and_a_replaced_one_is_reported() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        let path = dir.join("run_stats_history.csv");
        let file = OutputFile::check("--csv", &path).unwrap();
        drop(HistoryCsv::create(&file, false).unwrap());
        assert!(!path.exists(), "a header-only history is not a report");

        let mut history = HistoryCsv::create(&file, false).unwrap();
        let snapshot = cicada_stats::Stats::default().snapshot();
        history.append(&snapshot, 1, 1_700_000_000).unwrap();
        fs::remove_file(&path).unwrap();
        fs::write(&path, "someone else's").unwrap();
        let failure = history.finish().unwrap_err();
        assert!(failure.reason.contains("removed or replaced"), "{failure}");

        let mut history = HistoryCsv::create(&file, false).unwrap();
        history.append(&snapshot, 1, 1_700_000_000).unwrap();
        history.finish().unwrap();
        assert!(fs::read_to_string(&path).unwrap().starts_with("Timestamp,"));
    }
}
