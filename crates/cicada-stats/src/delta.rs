//! Statistics that merge across processes: [`StatsDelta`], what one [`Stats`](crate::Stats)
//! recorded since its previous [`take_delta`](crate::Stats::take_delta), keyed by names and Unix
//! seconds so that another process can [`merge_delta`](crate::Stats::merge_delta) it.
//!
//! This module owns the wire types (the public [`StatsDelta`] and its private parts), the
//! sparse histogram codec ([`sparse`]) and the delta book that tracks what the next take
//! returns ([`book`]); `Stats::take_delta` and `Stats::merge_delta` live beside the other
//! `Stats` methods. What a delta holds, its bounds and the merge guarantees are documented on
//! [`StatsDelta`].

pub(crate) mod book;
mod sparse;

use serde::{Deserialize, Serialize};

pub(crate) use sparse::SparseHistogram;

use crate::aggregate::TimeBase;
use crate::shard::EntryCounters;

/// What one [`Stats`](crate::Stats) recorded since its previous
/// [`take_delta`](crate::Stats::take_delta): the unit in which a worker's statistics travel to
/// a master, which [`merge_delta`](crate::Stats::merge_delta)s it.
///
/// Serialise it with any serde format; a binary one (postcard, bincode, MessagePack) keeps the
/// histograms as byte strings. Deserialising checks every histogram, so that merging a
/// received delta cannot fail halfway; counters are taken as they come (a malformed delta
/// makes wrong figures, never a panic).
///
/// # What a delta holds
///
/// Per `(method, name)` entry (the overflow entry is marked as such, whatever its texts):
/// requests, failures, failures past the failure-group cap, the response-time sum, minimum and
/// maximum, the content-length sum, the finish time of its latest request (Unix nanoseconds),
/// its first second; per Unix second with requests: requests and failures (Locust's
/// `num_reqs_per_sec`) and, for the seconds a current window can still use, the response-time
/// sum, minimum, maximum and histogram; a histogram of the response times of the other seconds;
/// its failure groups (error → occurrences, first and last Unix second). Then the user-error
/// groups (message, location, user type → count; texts as kept by the table), the user errors
/// past that cap, and the requests cut off by a stop. Every response time sits in exactly one
/// histogram of the delta: none travels twice.
///
/// Histograms travel sparse: one byte string of LEB128 varints per histogram, one token per
/// non-empty bucket (hdrhistogram's V2 encoding without its 40-byte header). Measured with a
/// binary serde format (postcard) on a worker's one-second delta of 20 names, response times
/// spread log-uniformly over 0.3 to 400 ms, 2% failures:
///
/// | requests a second per name | delta (postcard) | of which histograms | the same 20 histograms as V2 + deflate | the whole delta deflated |
/// |---|---|---|---|---|
/// | 5 | 1.9 KB | 0.3 KB | 1.3 KB | 0.7 KB |
/// | 50 | 4.3 KB | 2.1 KB | 2.7 KB | 1.9 KB |
/// | 500 | 16.9 KB | 14.0 KB | 6.8 KB | 6.2 KB |
///
/// The sparse form is smaller than V2 + deflate up to about a hundred requests a second per
/// name and needs no compression library; a transport that carries busier workers compresses
/// whole frames, which beats per-histogram deflate. Taking such a 50-requests delta costs about
/// 0.2 ms, serialising it 10 µs, deserialising 20 µs; merging 1 000 of them takes about 25 ms
/// (`cargo bench -p cicada-stats --bench merge`). JSON writes the byte strings as arrays of
/// numbers: about four times larger.
///
/// # Bounds
///
/// A delta is bounded like the statistics it comes from: at most [`StatsConfig::max_names`] + 1
/// entries (names past the cap went to the overflow entry), [`StatsConfig::max_errors`] failure
/// groups, [`StatsConfig::max_user_errors`] user-error groups; per entry at most
/// `max(per_second_capacity, window_secs + 2)` seconds, of which the newest `window_secs + 2`
/// carry a histogram, plus one histogram for the rest. Past the per-second bound the oldest
/// second's counts are dropped (its requests stay in the entry's totals), exactly as
/// [`StatsConfig::per_second_capacity`] drops them in the statistics. Merging applies the
/// receiver's own caps: a name, failure group or user error that does not fit goes to the same
/// overflow entry and groups as a local sample would.
///
/// # Guarantees
///
/// - **Exact.** Merging the deltas of any number of processes into a fresh `Stats` (of the same
///   [`StatsConfig`], and started at the same Unix time) gives the snapshot, CSV files and Locust
///   JSON of one process that recorded every sample itself, with every name, failure group and
///   user error within the caps, every sample no later than one second after the receiver's
///   latest collect, and every sender having taken its first delta before its first collect
///   (what a sender collected before its first take travels with exact totals and per-second
///   counts but without per-second histograms, so it misses the receiver's current window).
///   The property tests in `src/delta/proptests.rs` check this on random runs.
/// - **Commutative and associative.** Deltas merge in any order, and a process that merged
///   deltas hands them on in its own deltas (a tree of masters) with the same result. The one
///   exception is the caps: once one fills, which names won depends on arrival order, exactly as
///   with the threads of one process; every sample still counts once, in its entry or overflow.
/// - **Per-second data lines up on Unix seconds.** Each process counts seconds from its own
///   start and maps them to Unix seconds, as a single process does: a sample may count one
///   second off its wall-clock second (by the fraction of a second at which its process
///   started). The clocks of the processes should be synchronised (NTP), as for Locust.
/// - **Time-dependent figures are the receiver's.** The current window (`current_rps`, current
///   percentiles) is placed on the receiver's clock: a second enters it if it is no more than one
///   second past the receiver's latest collect and not older than the window; the run duration,
///   and with it the total rates, runs from the receiver's start to the latest request.
///
/// # Epochs and duplicates
///
/// Every delta carries the [`epoch`](StatsDelta::epoch) of the statistics it was taken from
/// ([`Stats::epoch`](crate::Stats::epoch): 0 at creation, one more at each
/// [`reset`](crate::Stats::reset), or the value given to
/// [`reset_to_epoch`](crate::Stats::reset_to_epoch)), and `merge_delta` only merges a delta of
/// its own epoch: a delta taken before a reset on either side is refused with
/// [`MergeError::EpochMismatch`], never mixed into after-reset data. A master that resets
/// tells its workers the new epoch, and they call `reset_to_epoch` with it. Every delta also
/// carries a [`sequence`](StatsDelta::sequence) number, one more at every take of the same
/// `Stats` (across resets too); the sender may set its own. Dropping a delta received twice is
/// the receiver's job: keep the highest sequence seen per sender and drop any delta at or below
/// it.
///
/// [`StatsConfig`]: crate::StatsConfig
/// [`StatsConfig::max_names`]: crate::StatsConfig::max_names
/// [`StatsConfig::max_errors`]: crate::StatsConfig::max_errors
/// [`StatsConfig::max_user_errors`]: crate::StatsConfig::max_user_errors
/// [`StatsConfig::per_second_capacity`]: crate::StatsConfig::per_second_capacity
///
/// # Example
///
/// ```
/// use std::time::{Duration, Instant};
/// use cicada_stats::{Sample, Stats, StatsDelta};
///
/// let worker = Stats::default();
/// worker.record(&Sample {
///     method: "GET",
///     name: "/",
///     response_time: Duration::from_millis(3),
///     content_length: 100,
///     error: None,
///     finished_at: Instant::now(),
/// });
/// Stats::flush_current_thread();
/// let delta = worker.take_delta();
/// assert_eq!((delta.num_requests(), delta.sequence, delta.epoch), (1, 1, 0));
///
/// let wire = serde_json::to_vec(&delta).unwrap();
/// let received: StatsDelta = serde_json::from_slice(&wire).unwrap();
/// let master = Stats::default();
/// master.merge_delta(&received).unwrap();
/// master.collect();
/// assert_eq!(master.snapshot().total.num_requests, 1);
/// // The worker's own statistics are untouched, and the next delta starts afresh.
/// worker.collect();
/// assert_eq!(worker.snapshot().total.num_requests, 1);
/// assert!(worker.take_delta().is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsDelta {
    /// The epoch of the statistics the delta was taken from; `merge_delta` merges only a delta
    /// of its own epoch.
    pub epoch: u64,
    /// Set by `take_delta` to one more than the previous take of the same `Stats` (the first
    /// is 1); the sender may set its own, so that a receiver can drop duplicates.
    pub sequence: u64,
    pub(crate) entries: Vec<DeltaEntry>,
    pub(crate) user_errors: Vec<DeltaUserError>,
    pub(crate) user_errors_over_cap: u64,
    pub(crate) requests_cut_off: u64,
}

impl StatsDelta {
    /// Whether the delta holds nothing: no request, user error or cut-off request (a sender
    /// may skip sending it).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.user_errors.is_empty()
            && self.user_errors_over_cap == 0
            && self.requests_cut_off == 0
    }

    /// Requests in the delta, failures included.
    pub fn num_requests(&self) -> u64 {
        self.entries
            .iter()
            .fold(0u64, |sum, entry| sum.saturating_add(entry.requests))
    }

    /// Failed requests in the delta.
    pub fn num_failures(&self) -> u64 {
        self.entries
            .iter()
            .fold(0u64, |sum, entry| sum.saturating_add(entry.failures))
    }

    /// `(method, name)` entries in the delta (the overflow entry included).
    pub fn num_entries(&self) -> usize {
        self.entries.len()
    }
}

/// One `(method, name)` of a delta.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeltaEntry {
    pub(crate) method: String,
    pub(crate) name: String,
    /// The sender's overflow entry (names past its cap); merged into the receiver's.
    pub(crate) over_name_cap: bool,
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    /// Failures counted in the entry's "(other errors)" group.
    pub(crate) failures_over_cap: u64,
    pub(crate) response_micros_sum: u64,
    pub(crate) min_micros: u64,
    pub(crate) max_micros: u64,
    pub(crate) content_bytes: u64,
    pub(crate) first_unix_second: u64,
    pub(crate) last_finished_unix_nanos: Option<u64>,
    /// Response times of the seconds listed without a window (and of seconds dropped past the
    /// per-second bound).
    pub(crate) earlier: SparseHistogram,
    /// Seconds with requests, ascending.
    pub(crate) seconds: Vec<DeltaSecond>,
    pub(crate) failure_groups: Vec<DeltaFailure>,
}

impl DeltaEntry {
    /// The all-time counters on the receiver's clock.
    pub(crate) fn counters(&self, time: TimeBase) -> EntryCounters {
        EntryCounters {
            last_finished_at: self
                .last_finished_unix_nanos
                .and_then(|nanos| time.instant_of_unix_nanos(nanos)),
            requests: self.requests,
            failures: self.failures,
            response_micros_sum: self.response_micros_sum,
            min_micros: self.min_micros,
            max_micros: self.max_micros,
            content_bytes: self.content_bytes,
            failures_over_cap: self.failures_over_cap,
        }
    }
}

/// One Unix second of an entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeltaSecond {
    pub(crate) unix_second: u64,
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    /// What the current window needs; `None` for a second too old for any window (its response
    /// times are in the entry's `earlier` histogram).
    pub(crate) window: Option<SecondWindow>,
}

/// Response times of one second of an entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SecondWindow {
    pub(crate) response_micros_sum: u64,
    pub(crate) min_micros: u64,
    pub(crate) max_micros: u64,
    pub(crate) histogram: SparseHistogram,
}

/// One failure group of an entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeltaFailure {
    pub(crate) error: String,
    pub(crate) occurrences: u64,
    pub(crate) first_unix_second: u64,
    pub(crate) last_unix_second: u64,
}

/// One user-error group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeltaUserError {
    pub(crate) message: String,
    pub(crate) location: String,
    pub(crate) user_type: String,
    pub(crate) count: u64,
}

/// Why [`Stats::merge_delta`](crate::Stats::merge_delta) refused a delta.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// The delta was taken in another epoch than the receiver's: before or after a reset on
    /// one of the two sides.
    #[error(
        "statistics delta of epoch {delta_epoch} not merged into statistics of epoch \
         {stats_epoch}: it was taken before or after a reset; reset the sender with \
         Stats::reset_to_epoch({stats_epoch}) so that its next deltas count"
    )]
    EpochMismatch {
        /// The delta's epoch.
        delta_epoch: u64,
        /// The receiver's epoch.
        stats_epoch: u64,
    },
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
