//! Plain-data views of the statistics: what [`crate::Stats::snapshot`] and
//! [`crate::Stats::history`] return and what the reports, the web UI and a future
//! master/worker protocol consume.
//!
//! Every type is `Clone + Debug + Serialize + Deserialize`; structs deserialize with
//! `#[serde(default)]`, so data written by an older cicada (missing newer fields) still reads.
//! Response times are milliseconds as `f64` with microsecond precision.

use serde::{Deserialize, Serialize};

use crate::AGGREGATED_NAME;

/// Statistics of one `(method, name)` entry, or of all of them ([`StatsSnapshot::total`]).
///
/// ```
/// use cicada_stats::EntryStats;
///
/// let entry = EntryStats { num_requests: 4, num_failures: 1, ..EntryStats::default() };
/// assert_eq!(entry.fail_ratio(), 0.25);
/// assert_eq!(entry.percentile(0.95), None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EntryStats {
    /// Request type (`"GET"`, `"grpc"`, ...); `""` for the aggregated total and the overflow
    /// entry.
    pub method: String,
    /// Stats name; `"Aggregated"` for the total.
    pub name: String,
    /// Requests recorded, failures included.
    pub num_requests: u64,
    /// Requests recorded with an error.
    pub num_failures: u64,
    /// Fastest response time (0 without requests).
    pub min_ms: f64,
    /// Slowest response time (0 without requests).
    pub max_ms: f64,
    /// Mean response time (0 without requests).
    pub avg_ms: f64,
    /// Median response time (0 without requests).
    pub median_ms: f64,
    /// Mean response body size in bytes.
    pub avg_content_length: f64,
    /// `num_requests` divided by the run duration ([`StatsSnapshot::duration`]).
    pub total_rps: f64,
    /// `num_failures` divided by the run duration.
    pub total_fail_per_s: f64,
    /// Requests per second averaged over the completed seconds of the current window.
    pub current_rps: f64,
    /// Failures per second averaged over the completed seconds of the current window.
    pub current_fail_per_s: f64,
    /// Mean response time over the current window (0 without requests in it).
    pub current_avg_ms: f64,
    /// `(quantile, ms)` for each of [`crate::PERCENTILES`], over the whole run; empty without
    /// requests.
    pub percentiles: Vec<(f64, f64)>,
    /// `(quantile, ms)` for each of [`crate::PERCENTILES`], over the current window; empty
    /// without requests in it.
    pub current_percentiles: Vec<(f64, f64)>,
}

impl EntryStats {
    /// Share of requests that failed (1.0 when only failures without requests exist, as in
    /// Locust).
    pub fn fail_ratio(&self) -> f64 {
        match (self.num_requests, self.num_failures) {
            (0, 0) => 0.0,
            (0, _) => 1.0,
            (requests, failures) => failures as f64 / requests as f64,
        }
    }

    /// The whole-run response time at `quantile` (one of [`crate::PERCENTILES`]).
    pub fn percentile(&self, quantile: f64) -> Option<f64> {
        lookup(&self.percentiles, quantile)
    }

    /// The current-window response time at `quantile` (one of [`crate::PERCENTILES`]).
    pub fn current_percentile(&self, quantile: f64) -> Option<f64> {
        lookup(&self.current_percentiles, quantile)
    }
}

fn lookup(values: &[(f64, f64)], quantile: f64) -> Option<f64> {
    values
        .iter()
        .find(|(q, _)| (q - quantile).abs() < 1e-9)
        .map(|&(_, ms)| ms)
}

/// The statistics of the seconds the generator was not marked saturated
/// ([`crate::Stats::unmarked_snapshot`]): what pass/fail checks are judged on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnmarkedSnapshot {
    /// Per entry, sorted like [`StatsSnapshot::entries`]: counts, min/max/avg, percentiles and
    /// `total_rps` / `total_fail_per_s` per unmarked second; the "current" fields are empty.
    pub entries: Vec<EntryStats>,
    /// The aggregate of the unmarked seconds.
    pub total: EntryStats,
    /// The run's duration (as [`StatsSnapshot::duration`]).
    pub run_secs: f64,
    /// The part of it not marked saturated.
    pub unmarked_secs: f64,
    /// Seconds of the run marked saturated.
    pub marked_seconds: u64,
    /// Requests that finished in a marked second, left out.
    pub excluded_requests: u64,
    /// Requests that arrived too late to tell their second (a worker's deltas buffered past the
    /// current window): counted as unmarked.
    pub unsorted_requests: u64,
}

impl UnmarkedSnapshot {
    /// The entry of `(method, name)`, if it had requests.
    pub fn entry(&self, method: &str, name: &str) -> Option<&EntryStats> {
        self.entries
            .iter()
            .find(|entry| entry.method == method && entry.name == name)
    }
}

/// One failure group: the failures of one `(method, name)` with one error text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailureStats {
    /// Request type of the failed requests.
    pub method: String,
    /// Stats name of the failed requests.
    pub name: String,
    /// Error text ([`crate::OTHER_ERRORS`] for the group collecting errors past the cap).
    pub error: String,
    /// How many failures fell in this group.
    pub occurrences: u64,
    /// Unix second of the first failure of this group (resolution: one second), as Locust's
    /// `first_seen`.
    pub first_seen_unix_secs: Option<u64>,
    /// Unix second of the latest failure of this group, as Locust's `last_seen`.
    pub last_seen_unix_secs: Option<u64>,
}

/// Everything Locust keeps per entry, for Locust's own JSON (`--json`): the raw sums, the
/// response-time distribution and the per-second counts. Built by
/// [`crate::Stats::entry_details`] at the end of a run; not part of the (frequently taken)
/// [`StatsSnapshot`] because its distribution and series are large.
///
/// ```
/// use std::time::{Duration, Instant};
/// use cicada_stats::{Sample, Stats};
///
/// let stats = Stats::default();
/// stats.record(&Sample {
///     method: "GET",
///     name: "/",
///     response_time: Duration::from_micros(12_300),
///     content_length: 100,
///     error: None,
///     finished_at: Instant::now(),
/// });
/// stats.collect_final(Duration::from_secs(1));
/// let details = stats.entry_details();
/// assert_eq!(details[0].num_requests, 1);
/// assert_eq!(details[0].total_content_length, 100);
/// assert_eq!(details[0].per_second.iter().map(|s| s.requests).sum::<u64>(), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EntryDetail {
    /// Request type.
    pub method: String,
    /// Stats name.
    pub name: String,
    /// Start of the first second in which this entry had a sample, Unix milliseconds.
    pub first_request_unix_ms: u64,
    /// When the latest request of this entry finished, Unix milliseconds.
    pub last_request_unix_ms: Option<u64>,
    /// Requests recorded, failures included.
    pub num_requests: u64,
    /// Requests recorded with an error.
    pub num_failures: u64,
    /// Sum of all response times, milliseconds (microsecond precision).
    pub total_response_ms: f64,
    /// Fastest response time; `None` without requests.
    pub min_ms: Option<f64>,
    /// Slowest response time (0 without requests).
    pub max_ms: f64,
    /// Sum of the response body sizes in bytes.
    pub total_content_length: u64,
    /// The response-time distribution as `(ms, count)`, ascending: one pair per histogram
    /// bucket holding samples, at the bucket's highest value (the value the percentiles
    /// report) clamped into `[min_ms, max_ms]`, so within the histogram's 1% precision of the
    /// recorded values.
    pub response_times: Vec<(f64, u64)>,
    /// Requests and failures per second, oldest first, only seconds with requests; the
    /// latest [`crate::StatsConfig::per_second_capacity`] such seconds.
    pub per_second: Vec<SecondCounts>,
}

/// Requests and failures of one entry in one second (Locust's `num_reqs_per_sec` and
/// `num_fail_per_sec`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecondCounts {
    /// The Unix second (the stats count seconds from their start, which is mapped to Unix
    /// time to the millisecond: a sample may land one second off its wall-clock second).
    pub unix_second: u64,
    /// Requests that finished in that second, failures included.
    pub requests: u64,
    /// Failures among them.
    pub failures: u64,
}

/// One group of user errors (a task returned an error or panicked), keyed by message and
/// location.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserErrorStats {
    /// Occurrences.
    pub count: u64,
    /// Error message ([`crate::OTHER_USER_ERRORS`] for the group past the cap).
    pub message: String,
    /// Where it happened (source location or backtrace); Locust's "Traceback" column.
    pub traceback: String,
    /// User type of the group: the least, in string order, of the user types that raised it
    /// (so that it does not depend on the order in which occurrences arrived).
    pub user_type: String,
}

/// How much the configured caps cut off (see the crate's "Bounds" section).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OverflowStats {
    /// `max_names` distinct names are registered; new ones go to the overflow entry.
    pub names_at_cap: bool,
    /// Samples recorded in the overflow entry.
    pub samples_over_name_cap: u64,
    /// `max_errors` failure groups are registered; new ones go to "(other errors)" groups.
    pub errors_at_cap: bool,
    /// Failures counted in "(other errors)" groups.
    pub failures_over_error_cap: u64,
    /// User errors counted in the "(other user errors)" group.
    pub user_errors_over_cap: u64,
}

/// Everything a report shows, copied out of the aggregate by [`crate::Stats::snapshot`].
/// The default is an empty run whose total is already named `"Aggregated"`.
///
/// ```
/// use cicada_stats::{Stats, StatsConfig};
///
/// let snapshot = Stats::new(StatsConfig::default()).snapshot();
/// assert_eq!(snapshot.total.name, "Aggregated");
/// assert!(snapshot.entries.is_empty());
/// assert!(snapshot.entry("GET", "/").is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsSnapshot {
    /// When the statistics started (creation or last reset), Unix milliseconds.
    pub start_unix_ms: u64,
    /// When the collect that this snapshot reflects ran, Unix milliseconds.
    pub collected_unix_ms: u64,
    /// When the latest request finished, Unix milliseconds.
    pub last_request_unix_ms: Option<u64>,
    /// Run duration in seconds, from the start to the latest request (Locust's divisor for
    /// total rates); 0 before the first request.
    pub duration: f64,
    /// Length of the current window in seconds.
    pub current_window_secs: u64,
    /// Entries with at least one request, sorted by `(name, method)`; includes the overflow
    /// entry (method `""`, name [`crate::OVERFLOW_NAME`]) once it has samples.
    pub entries: Vec<EntryStats>,
    /// All entries together: method `""`, name [`crate::AGGREGATED_NAME`].
    pub total: EntryStats,
    /// Failure groups, most frequent first.
    pub failures: Vec<FailureStats>,
    /// User-error groups, most frequent first.
    pub user_errors: Vec<UserErrorStats>,
    /// What the caps cut off.
    pub overflow: OverflowStats,
    /// Requests the stop cut short: in flight when their user was stopped; not counted as
    /// requests or failures (see [`crate::Stats::record_cut_off`]).
    pub requests_cut_off: u64,
}

impl Default for StatsSnapshot {
    fn default() -> Self {
        StatsSnapshot {
            start_unix_ms: 0,
            collected_unix_ms: 0,
            last_request_unix_ms: None,
            duration: 0.0,
            current_window_secs: 0,
            entries: Vec::new(),
            total: EntryStats {
                name: AGGREGATED_NAME.to_owned(),
                ..EntryStats::default()
            },
            failures: Vec::new(),
            user_errors: Vec::new(),
            overflow: OverflowStats::default(),
            requests_cut_off: 0,
        }
    }
}

impl StatsSnapshot {
    /// The entry for `(method, name)`, if it has requests.
    pub fn entry(&self, method: &str, name: &str) -> Option<&EntryStats> {
        self.entries
            .iter()
            .find(|entry| entry.method == method && entry.name == name)
    }
}

/// One point of the history ring, pushed by the engine every 2 s (Locust's chart data).
///
/// The struct is `#[non_exhaustive]` and deserializes with defaults so that fields (such as
/// the resource guard's saturation flags) can be added without breaking callers or stored
/// data; build one with [`crate::Stats::history_point`] or `HistoryPoint::default()`.
///
/// ```
/// use cicada_stats::HistoryPoint;
///
/// let mut point = HistoryPoint::default();
/// point.user_count = 10;
/// let json = serde_json::to_string(&point).unwrap();
/// let back: HistoryPoint = serde_json::from_str(&json).unwrap();
/// assert_eq!(back.user_count, 10);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct HistoryPoint {
    /// When the point was taken (the time of the latest collect), Unix milliseconds.
    pub unix_ms: u64,
    /// Running users.
    pub user_count: u64,
    /// Current requests per second (aggregated).
    pub rps: f64,
    /// Current failures per second (aggregated).
    pub fail_per_s: f64,
    /// Current median response time (0 without requests in the window).
    pub p50_ms: f64,
    /// Current 95th percentile response time (0 without requests in the window).
    pub p95_ms: f64,
    /// Whole-run mean response time (Locust's `total_avg_response_time`).
    pub avg_ms: f64,
    /// Mean response time over the current window.
    pub current_avg_ms: f64,
    /// Requests so far.
    pub total_requests: u64,
    /// Failures so far.
    pub total_failures: u64,
    /// The load generator's own state in the interval (absent when its guard is off).
    pub generator: Option<GeneratorSample>,
}

/// How the load generator itself fared during one history interval: the resource guard's measurements.
///
/// A saturated interval is one in which the generator's CPU was over its limit or its scheduler was late; response
/// times measured then include the generator's own delays and are not to be trusted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GeneratorSample {
    /// CPU, memory or scheduler lag over its limit at some point in the interval.
    pub saturated: bool,
    /// Highest process CPU in the interval, percent of the CPU available to the process; `None` when no CPU
    /// sample fell in the interval (shown as missing, never as 0).
    pub cpu_percent: Option<f64>,
    /// Highest resident memory in the interval; `None` when not measured.
    pub rss_bytes: Option<u64>,
    /// Worst scheduler lag in the interval, milliseconds; `None` when not measured.
    pub lag_ms: Option<f64>,
    /// Users the guard holds back (its cap is below the target), 0 when it holds none back.
    pub users_held_back: u64,
    /// Iterations the arrival-rate user types started in the interval (0 when the test has none).
    pub iterations_started: u64,
    /// Iterations of arrival-rate user types that were due in the interval but not started: every instance was
    /// busy, the guard held the generator, or the scheduler was more than a period late.
    pub iterations_dropped: u64,
}

impl GeneratorSample {
    /// The sample as the history CSV's generator cells: saturated (0/1), CPU %, RSS MB, lag ms, users held back,
    /// iterations started and dropped. A value that was not measured is an empty cell, never 0.
    pub fn csv_cells(&self) -> [String; 7] {
        [
            u8::from(self.saturated).to_string(),
            self.cpu_percent
                .map_or_else(String::new, |c| format!("{c:.1}")),
            self.rss_bytes
                .map_or_else(String::new, |r| format!("{:.1}", r as f64 / 1_048_576.0)),
            self.lag_ms.map_or_else(String::new, |l| format!("{l:.1}")),
            self.users_held_back.to_string(),
            self.iterations_started.to_string(),
            self.iterations_dropped.to_string(),
        ]
    }
}

impl HistoryPoint {
    /// A point built from the aggregated total of a snapshot.
    ///
    /// ```
    /// use cicada_stats::{HistoryPoint, Stats, StatsConfig};
    ///
    /// let snapshot = Stats::new(StatsConfig::default()).snapshot();
    /// let point = HistoryPoint::from_total(&snapshot.total, snapshot.collected_unix_ms, 3);
    /// assert_eq!(point.user_count, 3);
    /// ```
    pub fn from_total(total: &EntryStats, unix_ms: u64, user_count: u64) -> Self {
        HistoryPoint {
            unix_ms,
            user_count,
            rps: total.current_rps,
            fail_per_s: total.current_fail_per_s,
            p50_ms: total.current_percentile(0.5).unwrap_or(0.0),
            p95_ms: total.current_percentile(0.95).unwrap_or(0.0),
            avg_ms: total.avg_ms,
            current_avg_ms: total.current_avg_ms,
            total_requests: total.num_requests,
            total_failures: total.num_failures,
            generator: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_data_without_new_fields_still_reads() {
        let point: HistoryPoint = serde_json::from_str(r#"{"unix_ms": 5, "rps": 1.5}"#).unwrap();
        assert_eq!(point.unix_ms, 5);
        assert_eq!(point.rps, 1.5);
        let snapshot: StatsSnapshot = serde_json::from_str(r#"{"duration": 2.0}"#).unwrap();
        assert_eq!(snapshot.duration, 2.0);
    }

    #[test]
    fn fail_ratio_edges() {
        let failures_only = EntryStats {
            num_failures: 2,
            ..EntryStats::default()
        };
        assert_eq!(failures_only.fail_ratio(), 1.0);
        assert_eq!(EntryStats::default().fail_ratio(), 0.0);
    }
}
