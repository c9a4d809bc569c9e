//! Request statistics for cicada: the hot-path recorder, the aggregate it feeds, a bounded
//! history ring and Locust-compatible reports.
//!
//! The engine owns one [`Stats`] handle per test run and clones it into every user task.
//! Each request ends with [`Stats::record`], which writes into a shard private to the calling
//! OS thread (no lock, no allocation once a `(method, name)` has been seen on that thread).
//! About once a second the engine's aggregator calls [`Stats::collect`], which merges what
//! the shards have handed over and asks busy shards to hand over again at their next record;
//! [`Stats::snapshot`] then copies the aggregate into plain data ([`StatsSnapshot`]) for the
//! console, the CSV/JSON writers in [`report`] and the web UI.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use cicada_stats::{Sample, Stats, StatsConfig};
//!
//! let stats = Stats::new(StatsConfig::default());
//! stats.record(&Sample {
//!     method: "GET",
//!     name: "/item/[id]",
//!     response_time: Duration::from_micros(830),
//!     content_length: 512,
//!     error: None,
//!     finished_at: Instant::now(),
//! });
//! assert!(stats.collect_final(Duration::from_secs(1)));
//! let snapshot = stats.snapshot();
//! assert_eq!(snapshot.total.num_requests, 1);
//! assert_eq!(snapshot.entries[0].name, "/item/[id]");
//! print!("{}", cicada_stats::report::console::stats_table(&snapshot));
//! ```
//!
//! # How samples travel
//!
//! 1. **Shard** (per OS thread and `Stats` instance, in a `thread_local!`): a hash map from
//!    `(method, name)` to a local entry holding its batch's first 32 response times, an HDR
//!    histogram (microseconds, 2 significant digits) for more, and plain counters. Samples are
//!    grouped into *batches*, one per second of `finished_at`.
//! 2. **Mailbox** (one per shard, a `Mutex` shared with the aggregator): a shard moves its batch
//!    into the mailbox when the second of `finished_at` moves on, when it notices that
//!    [`Stats::collect`] bumped the *flush epoch* (one relaxed atomic load per record), in
//!    [`Stats::flush_current_thread`] (the engine's `on_thread_park` hook) and when its thread
//!    exits. The mutex is taken once per flush, never per sample. Histograms and batch buffers
//!    are recycled through the mailbox, so a steady-state flush does not allocate either. A
//!    batch whose entry holds at most 32 samples carries the values instead of a histogram: a
//!    thread that parks between requests flushes after almost every one, and adding and zeroing
//!    a whole histogram for one sample cost more than the request itself in user space. The
//!    first batch of an entry that goes past 32 samples grows its histogram to the values it
//!    records (once per thread and entry, as the entry's first sample did before).
//! 3. **Aggregate** (one per `Stats`, behind a `Mutex` that only `collect`, `snapshot`,
//!    `reset` and the history take): all-time histograms and counters per entry, plus a ring
//!    of per-second slots covering the current window, used for `current_rps`,
//!    `current_fail_per_s` and the current percentiles.
//!
//! [`Stats::reset`] starts a new *generation*; batches stamped with an older generation are
//! dropped when they reach the aggregate.
//!
//! # Distributed runs: deltas
//!
//! A worker process calls [`Stats::take_delta`] about once a second (and once when it starts):
//! it collects, and returns what its aggregate gained since the previous take as a
//! [`StatsDelta`], keyed by `(method, name)` and Unix second, serialisable with serde. The
//! master calls [`Stats::merge_delta`] with each delta it receives; its snapshot, CSV files,
//! Locust JSON and history are then those of one process that recorded every worker's samples.
//! Merging is exact, commutative and associative within the caps; deltas carry an epoch (a
//! master merges only deltas of its own [`Stats::epoch`], so nothing taken before a reset on
//! either side mixes into after-reset data) and a sequence number for dropping duplicates.
//! The module documentation of [`StatsDelta`]'s module, repeated on [`StatsDelta`], has the
//! details; the property tests in `src/delta/proptests.rs` check the guarantees.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use cicada_stats::{Sample, Stats, StatsDelta};
//!
//! let master = Stats::default();
//! let workers = [Stats::default(), Stats::default()];
//! for worker in &workers {
//!     assert!(worker.take_delta().is_empty()); // at the worker's start
//!     worker.record(&Sample {
//!         method: "GET",
//!         name: "/",
//!         response_time: Duration::from_millis(2),
//!         content_length: 10,
//!         error: None,
//!         finished_at: Instant::now(),
//!     });
//!     worker.collect_final(Duration::from_secs(1));
//!     // On the wire: any serde format.
//!     let wire = serde_json::to_vec(&worker.take_delta()).unwrap();
//!     let delta: StatsDelta = serde_json::from_slice(&wire).unwrap();
//!     master.merge_delta(&delta).unwrap();
//! }
//! master.collect();
//! assert_eq!(master.snapshot().total.num_requests, 2);
//! ```
//!
//! # Bounds
//!
//! Every structure that grows with the workload has a limit and a documented overflow:
//!
//! | structure | bound | past the bound |
//! |---|---|---|
//! | distinct `(method, name)` entries | [`StatsConfig::max_names`], shared by all threads | samples go to one entry, method `""`, name [`OVERFLOW_NAME`]; one `tracing` warning; [`OverflowStats::samples_over_name_cap`] counts them |
//! | a shard's name map | at most `max_names` keys (+ the overflow entry) | once the cap is reached, unknown names are looked up in a frozen copy of the registry without a lock and are **not** inserted, so a flood of unique URLs costs no memory |
//! | distinct failure groups `(method, name, error)` | [`StatsConfig::max_errors`] | the failure is counted in an [`OTHER_ERRORS`] group of its `(method, name)`; one warning; [`OverflowStats::failures_over_error_cap`] |
//! | a shard's failure map | at most `max_errors` keys | as above, nothing inserted past the cap |
//! | user-error groups `(message, location)` | [`StatsConfig::max_user_errors`] | counted in one [`OTHER_USER_ERRORS`] group; one warning; [`OverflowStats::user_errors_over_cap`] |
//! | current-window slots | per entry (and the total) `window_secs + 2` per-second slots, `window_secs` = [`StatsConfig::current_window`] in whole seconds | a slot's histogram is allocated only for a second that had samples and freed once the second leaves the window; worst case `(max_names + 2) × (window_secs + 2)` histograms |
//! | one histogram | auto-resizing, 2 significant digits: about 4 KiB for sub-millisecond latencies, about 20 KiB when latencies reach minutes | response times are clamped to [`MAX_RESPONSE_TIME`] |
//! | a batch's samples of one entry | 32 values (264 bytes per shard entry and per waiting batch entry) | the values go into the entry's histogram and the batch carries that |
//! | one key's text | method, name and error: 1 KiB; user-error message and location: 4 KiB | cut at a character boundary before lookup; texts sharing the kept prefix count as one |
//! | history | [`StatsConfig::history_capacity`] points | the oldest point is dropped |
//! | per-second request counts of an entry (Locust's `num_reqs_per_sec`, see [`Stats::entry_details`]) | [`StatsConfig::per_second_capacity`] seconds with requests per entry, 12 bytes each (the total keeps none): at the defaults at most about 43 MB with 1 000 names all busy every second for an hour, a few hundred KB for a typical test | the oldest second is dropped; the entry's counters stay exact |
//! | a mailbox's waiting batches | [`MAX_WAITING_BATCHES`] per shard (when nobody collects) | later flushes are folded into the newest waiting batch: totals stay exact, the folded samples count for that batch's second |
//! | a mailbox's recycled histograms and batches | `max_names + 1` histograms, 8 batches | extra ones are freed |
//! | mailboxes | one per live thread that recorded, per `Stats` | a thread's mailbox is removed by the first `collect` after the thread exited and its last batch was merged |
//! | the delta book (what the next [`Stats::take_delta`] returns; only once `take_delta` was called) | the entries and failure groups of the registries; per entry `max(per_second_capacity, window_secs + 2)` seconds, the newest `window_secs + 2` with a histogram, plus one histogram for the rest | the oldest second is dropped (its requests stay in the totals); an older second's histogram is folded into the rest |
//! | a [`StatsDelta`] | the delta book's bounds: `max_names + 1` entries, `max_errors` failure groups, `max_user_errors` user-error groups | merging applies the receiver's caps: what does not fit goes to its overflow entry and groups |

#![deny(missing_docs)]

mod aggregate;
mod delta;
mod histogram;
mod keys;
pub mod report;
mod shard;
mod snapshot;
mod stats;
mod unmarked;
mod user_errors;

use std::time::{Duration, Instant};

pub use delta::{MergeError, StatsDelta};
pub use histogram::MAX_RESPONSE_TIME;
pub use shard::MAX_WAITING_BATCHES;
pub use snapshot::{
    EntryDetail, EntryStats, FailureStats, GeneratorSample, HistoryPoint, OverflowStats,
    SecondCounts, StatsSnapshot, UnmarkedSnapshot, UserErrorStats,
};
pub use stats::{ShardSizes, Stats};

/// The quantiles reported for every entry, in Locust's order (`0.5` is the median, `1.0` the
/// maximum).
pub const PERCENTILES: [f64; 11] = [
    0.50, 0.66, 0.75, 0.80, 0.90, 0.95, 0.98, 0.99, 0.999, 0.9999, 1.0,
];

/// Name of the aggregated total row ([`StatsSnapshot::total`]), as in Locust.
pub const AGGREGATED_NAME: &str = "Aggregated";

/// Name of the single entry that collects samples of names seen after
/// [`StatsConfig::max_names`] distinct names were registered (its method is `""`).
pub const OVERFLOW_NAME: &str = "(over the name cap)";

/// Error text of the per-`(method, name)` failure group that collects failures whose error
/// appeared after [`StatsConfig::max_errors`] distinct failure groups were registered.
pub const OTHER_ERRORS: &str = "(other errors)";

/// Message of the user-error group that collects errors seen after
/// [`StatsConfig::max_user_errors`] distinct groups were registered.
pub const OTHER_USER_ERRORS: &str = "(other user errors)";

/// Limits and windows of a [`Stats`] instance.
///
/// ```
/// use std::time::Duration;
/// use cicada_stats::StatsConfig;
///
/// let config = StatsConfig { max_names: 200, current_window: Duration::from_secs(5), ..StatsConfig::default() };
/// assert_eq!(config.max_errors, 1_000);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsConfig {
    /// Distinct `(method, name)` entries kept; later names go to the [`OVERFLOW_NAME`] entry.
    /// Default 1 000.
    pub max_names: usize,
    /// Distinct `(method, name, error)` failure groups kept; later ones are counted in the
    /// [`OTHER_ERRORS`] group of their `(method, name)`. Default 1 000.
    pub max_errors: usize,
    /// Distinct user-error groups kept; later ones go to [`OTHER_USER_ERRORS`]. Default 1 000.
    pub max_user_errors: usize,
    /// Points kept by the history ring; default 43 200 (24 h at one point per 2 s).
    pub history_capacity: usize,
    /// Seconds (with requests) of per-second request and failure counts kept per entry for
    /// Locust's JSON (`num_reqs_per_sec`); default 3 600, the last hour of each entry.
    pub per_second_capacity: usize,
    /// Window for the "current" rates and percentiles, counted in whole completed seconds
    /// (rounded down, at least one). Default 10 s, like Locust.
    pub current_window: Duration,
    /// Keep, beside the whole run's, the statistics of the seconds not marked saturated
    /// ([`Stats::mark_saturated`], [`Stats::unmarked_snapshot`]): one more histogram per entry.
    /// Default off; the engine turns it on when the run has pass/fail checks.
    pub unmarked_stats: bool,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            max_names: 1_000,
            max_errors: 1_000,
            max_user_errors: 1_000,
            history_capacity: 43_200,
            per_second_capacity: 3_600,
            current_window: Duration::from_secs(10),
            unmarked_stats: false,
        }
    }
}

impl StatsConfig {
    /// The current window in whole seconds (at least 1).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cicada_stats::StatsConfig;
    ///
    /// let config = StatsConfig { current_window: Duration::from_millis(2_500), ..StatsConfig::default() };
    /// assert_eq!(config.window_secs(), 2);
    /// ```
    pub fn window_secs(&self) -> u64 {
        self.current_window.as_secs().max(1)
    }
}

/// One finished request, as handed to [`Stats::record`].
///
/// ```
/// use std::time::{Duration, Instant};
/// use cicada_stats::Sample;
///
/// let failed = Sample {
///     method: "grpc",
///     name: "Greeter/SayHello",
///     response_time: Duration::from_millis(12),
///     content_length: 0,
///     error: Some("status: Unavailable"),
///     finished_at: Instant::now(),
/// };
/// assert!(failed.error.is_some());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Sample<'a> {
    /// Request type: `"GET"`, or any type of a custom client (`"grpc"`, `"ws"`, ...).
    pub method: &'a str,
    /// Stats name, e.g. `"/item/[id]"`.
    pub name: &'a str,
    /// Response time, recorded with microsecond resolution.
    pub response_time: Duration,
    /// Bytes of the response body.
    pub content_length: u64,
    /// `Some(reason)` marks a failure, grouped by `(method, name, reason)`. A failure is still
    /// a request: it counts in `num_requests` and its response time is recorded, as in Locust.
    pub error: Option<&'a str>,
    /// When the request completed; its second (since the stats start) drives the per-second
    /// rates.
    pub finished_at: Instant,
}
