//! The CSV files of Locust's `--csv PREFIX`: `PREFIX_stats.csv` ([`write_stats`]),
//! `PREFIX_failures.csv` ([`write_failures`]), `PREFIX_exceptions.csv`
//! ([`write_exceptions`]) and `PREFIX_stats_history.csv` ([`HistoryCsvWriter`]), with Locust's
//! headers and value conventions (`StatsCSV` / `StatsCSVFileWriter` in Locust's
//! `locust/stats.py`), so that tools written for Locust's files parse these:
//!
//! * counts, percentiles and the median are integers: whole milliseconds, rounded the way
//!   Locust rounds its response-time histogram ([`bucket_response_time`]); like Locust, the
//!   median is clamped into `[min, max]`, where it takes the min or max value as it is;
//! * averages, rates, min and max are floats written as Python writes them (`12.0`,
//!   `0.213`): Locust's min and max are the raw float response times; cicada's carry
//!   microsecond precision;
//! * a row without requests has Locust's zeros: `0` for median, min, max and average
//!   content size, `0.0` for average and rates, and `N/A` in every percentile column;
//! * the Aggregated row comes last, with an empty `Type` and the name `Aggregated`;
//! * history rates carry six decimals (Locust formats them with `:2f`);
//! * in the history, percentiles are whole-run values unless `full_history` is on, in which
//!   case every row shows current-window values (Locust's behaviour);
//! * the failures file has Locust's `First Seen` / `Last Seen` columns (UTC, whole seconds);
//! * the history has the load generator's own state in columns after Locust's
//!   ([`GENERATOR_HEADER`]).
//!
//! ```
//! use cicada_stats::report::csv::write_stats_to;
//! use cicada_stats::StatsSnapshot;
//!
//! let mut out = Vec::new();
//! write_stats_to(&mut out, &StatsSnapshot::default()).unwrap();
//! let text = String::from_utf8(out).unwrap();
//! assert!(text.starts_with("Type,Name,Request Count,Failure Count,"));
//! assert!(text.ends_with(",Aggregated,0,0,0,0.0,0,0,0,0.0,0.0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A\n"));
//! ```

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::format::{python_float, utc_timestamp};
use super::locust::bucket_response_time;
use super::{ReportError, WRITER_PATH};
use crate::PERCENTILES;
use crate::snapshot::{EntryStats, GeneratorSample, StatsSnapshot};

/// Header of `_stats.csv` (Locust's `requests_csv_columns`).
pub const STATS_HEADER: [&str; 22] = [
    "Type",
    "Name",
    "Request Count",
    "Failure Count",
    "Median Response Time",
    "Average Response Time",
    "Min Response Time",
    "Max Response Time",
    "Average Content Size",
    "Requests/s",
    "Failures/s",
    "50%",
    "66%",
    "75%",
    "80%",
    "90%",
    "95%",
    "98%",
    "99%",
    "99.9%",
    "99.99%",
    "100%",
];

/// Header of `_failures.csv` (Locust 2.44 added `First Seen` and `Last Seen`; readers of the
/// older four columns find them first, in the same order).
pub const FAILURES_HEADER: [&str; 6] = [
    "Method",
    "Name",
    "Error",
    "Occurrences",
    "First Seen",
    "Last Seen",
];

/// Header of `_exceptions.csv`.
pub const EXCEPTIONS_HEADER: [&str; 4] = ["Count", "Message", "Traceback", "Nodes"];

/// Header of `_stats_history.csv`.
pub const HISTORY_HEADER: [&str; 24] = [
    "Timestamp",
    "User Count",
    "Type",
    "Name",
    "Requests/s",
    "Failures/s",
    "50%",
    "66%",
    "75%",
    "80%",
    "90%",
    "95%",
    "98%",
    "99%",
    "99.9%",
    "99.99%",
    "100%",
    "Total Request Count",
    "Total Failure Count",
    "Total Median Response Time",
    "Total Average Response Time",
    "Total Min Response Time",
    "Total Max Response Time",
    "Total Average Content Size",
];

/// Columns after Locust's in `_stats_history.csv`: the load generator's own state (see [`GeneratorSample`]).
/// Tools that read Locust's columns by name are not affected.
pub const GENERATOR_HEADER: [&str; 7] = [
    "Generator Saturated",
    "Generator CPU %",
    "Generator RSS MB",
    "Generator Lag ms",
    "Users Held Back",
    "Iterations Started",
    "Iterations Dropped",
];

/// Value of the `Nodes` column of `_exceptions.csv` until distributed runs exist.
const LOCAL_NODE: &str = "local";

const NOT_AVAILABLE: &str = "N/A";

fn create(path: &Path) -> Result<::csv::Writer<File>, ReportError> {
    let file = File::create(path).map_err(|source| ReportError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(::csv::Writer::from_writer(file))
}

fn csv_error(path: &Path) -> impl FnOnce(::csv::Error) -> ReportError + '_ {
    move |source| ReportError::Csv {
        path: path.to_owned(),
        source,
    }
}

fn finish<W: Write>(mut writer: ::csv::Writer<W>, path: &Path) -> Result<(), ReportError> {
    writer.flush().map_err(|source| ReportError::Io {
        path: path.to_owned(),
        source,
    })
}

/// `(quantile → ms)` cells as Locust's integers, `N/A` when the row has no requests (a
/// quantile missing from `values`, as a current window without requests, reads 0).
fn percentile_cells(entry: &EntryStats, values: &[(f64, f64)]) -> Vec<String> {
    if entry.num_requests == 0 {
        return vec![NOT_AVAILABLE.to_owned(); PERCENTILES.len()];
    }
    PERCENTILES
        .iter()
        .map(|&quantile| {
            let ms = values
                .iter()
                .find(|(q, _)| (q - quantile).abs() < 1e-9)
                .map_or(0.0, |&(_, ms)| ms);
            bucket_response_time(ms).to_string()
        })
        .collect()
}

/// Median, average, min, max and average content size, typed as Locust types them.
fn response_time_cells(entry: &EntryStats) -> [String; 5] {
    if entry.num_requests == 0 {
        // Locust's values of an entry without requests: ints but for the float average.
        return [
            "0".to_owned(),
            python_float(0.0),
            "0".to_owned(),
            "0".to_owned(),
            "0".to_owned(),
        ];
    }
    // Locust's median is a key of its rounded histogram, clamped into the raw [min, max].
    let median_key = bucket_response_time(entry.median_ms);
    let median = if median_key as f64 > entry.max_ms {
        python_float(entry.max_ms)
    } else if (median_key as f64) < entry.min_ms {
        python_float(entry.min_ms)
    } else {
        median_key.to_string()
    };
    // Locust writes `min_response_time or 0`: a zero minimum is the integer 0.
    let min = if entry.min_ms == 0.0 {
        "0".to_owned()
    } else {
        python_float(entry.min_ms)
    };
    [
        median,
        python_float(entry.avg_ms),
        min,
        python_float(entry.max_ms),
        python_float(entry.avg_content_length),
    ]
}

fn stats_rows(snapshot: &StatsSnapshot) -> impl Iterator<Item = Vec<String>> + '_ {
    snapshot
        .entries
        .iter()
        .chain(std::iter::once(&snapshot.total))
        .map(|entry| {
            let mut row = Vec::with_capacity(STATS_HEADER.len());
            row.extend([
                entry.method.clone(),
                entry.name.clone(),
                entry.num_requests.to_string(),
                entry.num_failures.to_string(),
            ]);
            row.extend(response_time_cells(entry));
            row.extend([
                python_float(entry.total_rps),
                python_float(entry.total_fail_per_s),
            ]);
            row.extend(percentile_cells(entry, &entry.percentiles));
            row
        })
}

/// Writes `_stats.csv`: one row per entry (sorted by name, method), then the Aggregated row.
///
/// ```no_run
/// # fn main() -> Result<(), cicada_stats::report::ReportError> {
/// let stats = cicada_stats::Stats::default();
/// cicada_stats::report::csv::write_stats("run_stats.csv", &stats.snapshot())?;
/// # Ok(()) }
/// ```
pub fn write_stats(path: impl AsRef<Path>, snapshot: &StatsSnapshot) -> Result<(), ReportError> {
    let path = path.as_ref();
    write_stats_csv(create(path)?, path, snapshot)
}

/// [`write_stats`] into any writer (errors name the path `"<writer>"`).
pub fn write_stats_to<W: Write>(writer: W, snapshot: &StatsSnapshot) -> Result<(), ReportError> {
    write_stats_csv(
        ::csv::Writer::from_writer(writer),
        Path::new(WRITER_PATH),
        snapshot,
    )
}

/// Write a header and rows, then flush: the one shape every report file has.
fn write_table<W, R, C>(
    mut writer: ::csv::Writer<W>,
    path: &Path,
    header: &[&str],
    rows: impl IntoIterator<Item = R>,
) -> Result<(), ReportError>
where
    W: Write,
    R: IntoIterator<Item = C>,
    C: AsRef<[u8]>,
{
    writer.write_record(header).map_err(csv_error(path))?;
    for row in rows {
        writer.write_record(row).map_err(csv_error(path))?;
    }
    finish(writer, path)
}

fn write_stats_csv<W: Write>(
    writer: ::csv::Writer<W>,
    path: &Path,
    snapshot: &StatsSnapshot,
) -> Result<(), ReportError> {
    write_table(writer, path, &STATS_HEADER, stats_rows(snapshot))
}

/// Writes `_failures.csv`: one row per failure group, most frequent first.
///
/// ```no_run
/// # fn main() -> Result<(), cicada_stats::report::ReportError> {
/// let stats = cicada_stats::Stats::default();
/// cicada_stats::report::csv::write_failures("run_failures.csv", &stats.snapshot())?;
/// # Ok(()) }
/// ```
pub fn write_failures(path: impl AsRef<Path>, snapshot: &StatsSnapshot) -> Result<(), ReportError> {
    let path = path.as_ref();
    write_failures_csv(create(path)?, path, snapshot)
}

/// [`write_failures`] into any writer.
pub fn write_failures_to<W: Write>(writer: W, snapshot: &StatsSnapshot) -> Result<(), ReportError> {
    write_failures_csv(
        ::csv::Writer::from_writer(writer),
        Path::new(WRITER_PATH),
        snapshot,
    )
}

fn write_failures_csv<W: Write>(
    writer: ::csv::Writer<W>,
    path: &Path,
    snapshot: &StatsSnapshot,
) -> Result<(), ReportError> {
    let seen = |unix_secs: Option<u64>| unix_secs.map_or_else(String::new, utc_timestamp);
    let rows = snapshot.failures.iter().map(|failure| {
        [
            failure.method.clone(),
            failure.name.clone(),
            failure.error.clone(),
            failure.occurrences.to_string(),
            seen(failure.first_seen_unix_secs),
            seen(failure.last_seen_unix_secs),
        ]
    });
    write_table(writer, path, &FAILURES_HEADER, rows)
}

/// Writes `_exceptions.csv`: one row per user-error group (`Nodes` is `local`).
///
/// ```no_run
/// # fn main() -> Result<(), cicada_stats::report::ReportError> {
/// let stats = cicada_stats::Stats::default();
/// cicada_stats::report::csv::write_exceptions("run_exceptions.csv", &stats.snapshot())?;
/// # Ok(()) }
/// ```
pub fn write_exceptions(
    path: impl AsRef<Path>,
    snapshot: &StatsSnapshot,
) -> Result<(), ReportError> {
    let path = path.as_ref();
    write_exceptions_csv(create(path)?, path, snapshot)
}

/// [`write_exceptions`] into any writer.
pub fn write_exceptions_to<W: Write>(
    writer: W,
    snapshot: &StatsSnapshot,
) -> Result<(), ReportError> {
    write_exceptions_csv(
        ::csv::Writer::from_writer(writer),
        Path::new(WRITER_PATH),
        snapshot,
    )
}

fn write_exceptions_csv<W: Write>(
    writer: ::csv::Writer<W>,
    path: &Path,
    snapshot: &StatsSnapshot,
) -> Result<(), ReportError> {
    let rows = snapshot.user_errors.iter().map(|error| {
        [
            error.count.to_string(),
            error.message.clone(),
            error.traceback.clone(),
            LOCAL_NODE.to_string(),
        ]
    });
    write_table(writer, path, &EXCEPTIONS_HEADER, rows)
}

/// Appends rows to `_stats_history.csv` as the test runs: one Aggregated row per
/// [`append`](Self::append), preceded by a row per entry with `full_history`. Flushes after
/// each append so the file can be tailed. An append that fails is remembered:
/// [`finish`](Self::finish) reports the file as incomplete.
///
/// ```
/// use cicada_stats::report::csv::HistoryCsvWriter;
/// use cicada_stats::Stats;
///
/// let path = std::env::temp_dir().join(format!("cicada-doc-{}_stats_history.csv", std::process::id()));
/// let stats = Stats::default();
/// let mut history = HistoryCsvWriter::create(&path, false).unwrap();
/// history.append(&stats.snapshot(), 5, 1_700_000_000).unwrap();
/// let text = std::fs::read_to_string(&path).unwrap();
/// assert!(text.lines().nth(1).unwrap().starts_with("1700000000,5,,Aggregated,0.000000,0.000000,N/A"));
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub struct HistoryCsvWriter {
    writer: ::csv::Writer<File>,
    path: PathBuf,
    full_history: bool,
    /// Appends that wrote all their rows.
    appends: u64,
    /// Appends that failed, and the first failure's text.
    failed_appends: u64,
    first_failure: Option<String>,
}

impl std::fmt::Debug for HistoryCsvWriter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HistoryCsvWriter")
            .field("path", &self.path)
            .field("full_history", &self.full_history)
            .field("appends", &self.appends)
            .field("failed_appends", &self.failed_appends)
            .finish_non_exhaustive()
    }
}

impl HistoryCsvWriter {
    /// Creates (truncates) the file and writes the header.
    pub fn create(path: impl AsRef<Path>, full_history: bool) -> Result<Self, ReportError> {
        let path = path.as_ref();
        let mut writer = create(path)?;
        writer
            .write_record(HISTORY_HEADER.iter().chain(GENERATOR_HEADER.iter()))
            .map_err(csv_error(path))?;
        let mut history = HistoryCsvWriter {
            writer,
            path: path.to_owned(),
            full_history,
            appends: 0,
            failed_appends: 0,
            first_failure: None,
        };
        history.flush()?;
        Ok(history)
    }

    /// Appends the rows for `snapshot` taken at `unix_secs` with `user_count` users.
    pub fn append(
        &mut self,
        snapshot: &StatsSnapshot,
        user_count: u64,
        unix_secs: u64,
    ) -> Result<(), ReportError> {
        self.append_with_generator(snapshot, user_count, unix_secs, None)
    }

    /// Like [`append`](Self::append), with the generator's own state in the trailing columns.
    pub fn append_with_generator(
        &mut self,
        snapshot: &StatsSnapshot,
        user_count: u64,
        unix_secs: u64,
        generator: Option<&GeneratorSample>,
    ) -> Result<(), ReportError> {
        let appended = self.write_rows(snapshot, user_count, unix_secs, generator);
        match &appended {
            Ok(()) => self.appends += 1,
            Err(error) => {
                self.failed_appends += 1;
                self.first_failure.get_or_insert_with(|| error.to_string());
            }
        }
        appended
    }

    fn write_rows(
        &mut self,
        snapshot: &StatsSnapshot,
        user_count: u64,
        unix_secs: u64,
        generator: Option<&GeneratorSample>,
    ) -> Result<(), ReportError> {
        let generator_cells: [String; 7] = generator
            .map(GeneratorSample::csv_cells)
            .unwrap_or_default();
        let entries: &[EntryStats] = if self.full_history {
            &snapshot.entries
        } else {
            &[]
        };
        for entry in entries.iter().chain(std::iter::once(&snapshot.total)) {
            let percentiles = if self.full_history {
                &entry.current_percentiles
            } else {
                &entry.percentiles
            };
            let mut row = vec![
                unix_secs.to_string(),
                user_count.to_string(),
                entry.method.clone(),
                entry.name.clone(),
                format!("{:.6}", entry.current_rps),
                format!("{:.6}", entry.current_fail_per_s),
            ];
            row.extend(percentile_cells(entry, percentiles));
            row.extend([
                entry.num_requests.to_string(),
                entry.num_failures.to_string(),
            ]);
            row.extend(response_time_cells(entry));
            row.extend(generator_cells.iter().cloned());
            self.writer
                .write_record(&row)
                .map_err(csv_error(&self.path))?;
        }
        self.flush()
    }

    fn flush(&mut self) -> Result<(), ReportError> {
        self.writer.flush().map_err(|source| ReportError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends that wrote all their rows so far.
    pub fn appends(&self) -> u64 {
        self.appends
    }

    /// Flushes and hands back the file, or says that the history is incomplete: the flush
    /// failed, or some append did (its rows are missing).
    ///
    /// ```
    /// use cicada_stats::report::csv::HistoryCsvWriter;
    /// use cicada_stats::Stats;
    ///
    /// let path = std::env::temp_dir().join(format!("cicada-finish-{}_stats_history.csv", std::process::id()));
    /// let mut history = HistoryCsvWriter::create(&path, false).unwrap();
    /// history.append(&Stats::default().snapshot(), 1, 1_700_000_000).unwrap();
    /// assert_eq!(history.appends(), 1);
    /// let file = history.finish().unwrap();
    /// assert!(file.metadata().unwrap().len() > 0);
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn finish(mut self) -> Result<File, ReportError> {
        self.flush()?;
        if let Some(first_failure) = self.first_failure.take() {
            return Err(ReportError::Incomplete {
                path: self.path,
                failed: self.failed_appends,
                first_failure,
            });
        }
        let path = self.path;
        self.writer.into_inner().map_err(|error| ReportError::Io {
            path,
            source: std::io::Error::other(error.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::format::percent_label;
    use crate::snapshot::{FailureStats, UserErrorStats};

    fn entry() -> EntryStats {
        EntryStats {
            method: "GET".into(),
            name: "/item/[id], \"quoted\"".into(),
            num_requests: 10,
            num_failures: 2,
            min_ms: 0.101,
            max_ms: 5.5,
            avg_ms: 1.2345,
            median_ms: 0.9,
            avg_content_length: 512.0,
            total_rps: 2.5,
            total_fail_per_s: 0.5,
            current_rps: 1.0 / 3.0,
            current_fail_per_s: 0.0,
            percentiles: PERCENTILES.iter().map(|&q| (q, q * 5.5)).collect(),
            current_percentiles: PERCENTILES.iter().map(|&q| (q, q)).collect(),
            ..EntryStats::default()
        }
    }

    fn snapshot() -> StatsSnapshot {
        StatsSnapshot {
            entries: vec![entry()],
            total: EntryStats {
                method: String::new(),
                name: "Aggregated".into(),
                ..entry()
            },
            failures: vec![FailureStats {
                method: "GET".into(),
                name: "/cart".into(),
                error: "HTTP 500, \"oops\"".into(),
                occurrences: 7,
                first_seen_unix_secs: Some(1_709_993_100),
                last_seen_unix_secs: Some(1_709_993_160),
            }],
            user_errors: vec![UserErrorStats {
                count: 3,
                message: "boom".into(),
                traceback: "src/user.rs:7".into(),
                user_type: "Shopper".into(),
            }],
            ..StatsSnapshot::default()
        }
    }

    fn parse(bytes: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
        let mut reader = ::csv::Reader::from_reader(bytes);
        let header = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_owned)
            .collect();
        let rows = reader
            .records()
            .map(|record| record.unwrap().iter().map(str::to_owned).collect())
            .collect();
        (header, rows)
    }

    #[test]
    fn header_labels_follow_the_percentile_list() {
        let labels: Vec<String> = PERCENTILES.iter().map(|&q| percent_label(q)).collect();
        assert_eq!(&STATS_HEADER[11..], labels.as_slice());
        assert_eq!(&HISTORY_HEADER[6..17], labels.as_slice());
    }

    #[test]
    fn stats_csv_round_trips() {
        let mut out = Vec::new();
        write_stats_to(&mut out, &snapshot()).unwrap();
        let (header, rows) = parse(&out);
        assert_eq!(
            header.join(","),
            "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,\
             Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,\
             50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0][..11],
            [
                "GET",
                "/item/[id], \"quoted\"",
                "10",
                "2",
                "1",
                "1.2345",
                "0.101",
                "5.5",
                "512.0",
                "2.5",
                "0.5"
            ]
        );
        // Percentiles are Locust's bucket keys: 2.75 → 3, and 5.5 → 6 (half to even).
        assert_eq!(rows[0][11], "3");
        assert_eq!(rows[0][21], "6");
        assert_eq!(rows[1][..2], ["", "Aggregated"]);
    }

    #[test]
    fn the_median_is_clamped_like_locusts() {
        // 147 ms rounds to the key 150, above the slowest request: Locust reports the max.
        let slow = EntryStats {
            num_requests: 1,
            min_ms: 147.25,
            max_ms: 147.25,
            avg_ms: 147.25,
            median_ms: 147.25,
            ..EntryStats::default()
        };
        assert_eq!(response_time_cells(&slow)[0], "147.25");
        // 0.4 ms rounds to the key 0, below the fastest request: Locust reports the min.
        let fast = EntryStats {
            num_requests: 1,
            min_ms: 0.4,
            max_ms: 0.4,
            median_ms: 0.4,
            ..EntryStats::default()
        };
        assert_eq!(response_time_cells(&fast)[0], "0.4");
    }

    #[test]
    fn a_row_without_requests_has_locusts_zeros() {
        let mut out = Vec::new();
        write_stats_to(&mut out, &StatsSnapshot::default()).unwrap();
        let (_, rows) = parse(&out);
        assert_eq!(
            rows[0][..11],
            [
                "",
                "Aggregated",
                "0",
                "0",
                "0",
                "0.0",
                "0",
                "0",
                "0",
                "0.0",
                "0.0"
            ]
        );
        assert!(rows[0][11..].iter().all(|cell| cell == "N/A"));
    }

    #[test]
    fn failures_and_exceptions_round_trip() {
        let mut out = Vec::new();
        write_failures_to(&mut out, &snapshot()).unwrap();
        let (header, rows) = parse(&out);
        assert_eq!(header, FAILURES_HEADER);
        assert_eq!(
            rows,
            [[
                "GET",
                "/cart",
                "HTTP 500, \"oops\"",
                "7",
                "2024-03-09T14:05:00Z",
                "2024-03-09T14:06:00Z"
            ]]
        );

        let mut out = Vec::new();
        write_exceptions_to(&mut out, &snapshot()).unwrap();
        let (header, rows) = parse(&out);
        assert_eq!(header, EXCEPTIONS_HEADER);
        assert_eq!(rows, [["3", "boom", "src/user.rs:7", "local"]]);
    }

    #[test]
    fn history_csv_appends_rows() {
        let directory =
            std::env::temp_dir().join(format!("cicada-stats-history-test-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("run_stats_history.csv");

        let mut aggregated_only = HistoryCsvWriter::create(&path, false).unwrap();
        aggregated_only.append(&snapshot(), 4, 100).unwrap();
        aggregated_only.append(&snapshot(), 5, 102).unwrap();
        let (header, rows) = parse(&std::fs::read(&path).unwrap());
        assert_eq!(header[..24], HISTORY_HEADER);
        assert_eq!(header[24..], GENERATOR_HEADER);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[1][..7],
            ["102", "5", "", "Aggregated", "0.333333", "0.000000", "3"]
        );
        assert_eq!(
            rows[1][17..24],
            ["10", "2", "1", "1.2345", "0.101", "5.5", "512.0"]
        );
        assert_eq!(
            rows[1][24..],
            ["", "", "", "", "", "", ""],
            "no generator state given"
        );

        let mut with_generator = HistoryCsvWriter::create(&path, false).unwrap();
        let generator = GeneratorSample {
            saturated: true,
            cpu_percent: Some(97.25),
            rss_bytes: Some(3 * 1_048_576),
            lag_ms: Some(12.0),
            users_held_back: 40,
            iterations_started: 25,
            iterations_dropped: 3,
        };
        with_generator
            .append_with_generator(&snapshot(), 4, 100, Some(&generator))
            .unwrap();
        let missed_cpu = GeneratorSample {
            cpu_percent: None,
            ..generator
        };
        with_generator
            .append_with_generator(&snapshot(), 4, 101, Some(&missed_cpu))
            .unwrap();
        let (_, rows) = parse(&std::fs::read(&path).unwrap());
        assert_eq!(rows[0][24..], ["1", "97.2", "3.0", "12.0", "40", "25", "3"]);
        assert_eq!(
            rows[1][24..],
            ["1", "", "3.0", "12.0", "40", "25", "3"],
            "a missed CPU sample is missing, not 0"
        );

        let mut full = HistoryCsvWriter::create(&path, true).unwrap();
        full.append(&snapshot(), 4, 100).unwrap();
        let (_, rows) = parse(&std::fs::read(&path).unwrap());
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][2..4], ["GET", "/item/[id], \"quoted\""]);
        // Current-window percentiles with full history (0.5 ms rounds half to even: 0).
        assert_eq!(rows[0][6], "0");
        assert_eq!(rows[0][15], "1");
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn errors_carry_the_path() {
        let error = write_failures("/nonexistent-cicada-dir/x.csv", &snapshot()).unwrap_err();
        assert!(matches!(error, ReportError::Io { .. }));
        assert!(error.to_string().contains("/nonexistent-cicada-dir/x.csv"));
    }
}
