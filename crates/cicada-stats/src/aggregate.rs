//! The merged statistics of one generation: all-time histograms and counters per entry, the
//! per-second window ring behind the "current" figures, failure counts, and the conversion of
//! all that into a [`StatsSnapshot`].

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::histogram::{self, micros_to_ms, new_histogram, percentiles_ms};
use crate::keys::{CappedRegistry, FailureKey, PairKey};
use crate::shard::{Batch, EntryCounters, EntryDelta};
use crate::snapshot::{EntryStats, FailureStats, OverflowStats, StatsSnapshot};
use crate::{AGGREGATED_NAME, OTHER_ERRORS, StatsConfig};

/// One second of one entry: the raw material of the current window.
struct SecondSlot {
    second: u64,
    requests: u64,
    failures: u64,
    response_micros_sum: u64,
    min_micros: u64,
    max_micros: u64,
    /// Allocated only for a second that had samples.
    histogram: Option<Histogram<u64>>,
}

/// Per-second slots covering `[now - window, now + 1]`; slot `s` lives at `s % len`.
struct SecondRing {
    slots: Vec<Option<SecondSlot>>,
}

/// Sums of a window of seconds.
struct WindowSums {
    seconds: u64,
    requests: u64,
    failures: u64,
    response_micros_sum: u64,
    min_micros: u64,
    max_micros: u64,
    histogram: Option<Histogram<u64>>,
}

impl SecondRing {
    fn new(window_secs: u64) -> Self {
        // The window, the second in progress, and one more so that a batch of the second
        // after "now" (a collect that ran just before a shard flushed) still has a place.
        let len = window_secs as usize + 2;
        SecondRing {
            slots: (0..len).map(|_| None).collect(),
        }
    }

    fn len(&self) -> u64 {
        self.slots.len() as u64
    }

    /// Adds a delta of `second`, if that second can still be part of a window.
    fn add(&mut self, second: u64, oldest_kept: u64, delta: &EntryDelta) {
        let newest_kept = oldest_kept + self.len() - 1;
        if !(oldest_kept..=newest_kept).contains(&second) {
            return;
        }
        let position = (second % self.len()) as usize;
        let slot = &mut self.slots[position];
        if slot.as_ref().is_some_and(|slot| slot.second != second) {
            // Older than `oldest_kept` (not yet expired): reuse its histogram allocation.
            let mut stale = slot.take().expect("checked above");
            *slot = Some(SecondSlot {
                second,
                requests: 0,
                failures: 0,
                response_micros_sum: 0,
                min_micros: u64::MAX,
                max_micros: 0,
                histogram: stale.histogram.take().map(|mut histogram| {
                    histogram.reset();
                    histogram
                }),
            });
        }
        let slot = slot.get_or_insert_with(|| SecondSlot {
            second,
            requests: 0,
            failures: 0,
            response_micros_sum: 0,
            min_micros: u64::MAX,
            max_micros: 0,
            histogram: None,
        });
        slot.requests += delta.counters.requests;
        slot.failures += delta.counters.failures;
        slot.response_micros_sum = slot
            .response_micros_sum
            .saturating_add(delta.counters.response_micros_sum);
        slot.min_micros = slot.min_micros.min(delta.counters.min_micros);
        slot.max_micros = slot.max_micros.max(delta.counters.max_micros);
        let histogram = slot.histogram.get_or_insert_with(new_histogram);
        histogram::add(histogram, &delta.histogram);
    }

    /// Frees slots of seconds before `oldest_kept`.
    fn expire(&mut self, oldest_kept: u64) {
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|slot| slot.second < oldest_kept) {
                *slot = None;
            }
        }
    }

    /// Sums over the seconds `[from, to)`.
    fn sums(&self, from: u64, to: u64) -> WindowSums {
        let mut sums = WindowSums {
            seconds: to.saturating_sub(from),
            requests: 0,
            failures: 0,
            response_micros_sum: 0,
            min_micros: u64::MAX,
            max_micros: 0,
            histogram: None,
        };
        for slot in self.slots.iter().flatten() {
            if (from..to).contains(&slot.second) {
                sums.requests += slot.requests;
                sums.failures += slot.failures;
                sums.response_micros_sum += slot.response_micros_sum;
                sums.min_micros = sums.min_micros.min(slot.min_micros);
                sums.max_micros = sums.max_micros.max(slot.max_micros);
                if let Some(histogram) = &slot.histogram {
                    let merged = sums.histogram.get_or_insert_with(new_histogram);
                    histogram::add(merged, histogram);
                }
            }
        }
        sums
    }

    fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }
}

/// Merged statistics of one entry (or the total).
pub(crate) struct AggEntry {
    method: Box<str>,
    name: Box<str>,
    histogram: Histogram<u64>,
    counters: EntryCounters,
    window: SecondRing,
}

impl AggEntry {
    fn new(method: &str, name: &str, window_secs: u64) -> Self {
        AggEntry {
            method: method.into(),
            name: name.into(),
            histogram: new_histogram(),
            counters: EntryCounters::default(),
            window: SecondRing::new(window_secs),
        }
    }

    fn merge(&mut self, delta: &EntryDelta, second: u64, oldest_kept: u64) {
        histogram::add(&mut self.histogram, &delta.histogram);
        self.counters.merge(&delta.counters);
        self.window.add(second, oldest_kept, delta);
    }
}

/// Seconds `[from, to)` of the current window and the run duration, shared by all entries of
/// one snapshot.
#[derive(Clone, Copy)]
struct Timing {
    window_from: u64,
    window_to: u64,
    run_secs: f64,
}

/// The aggregate of one generation.
pub(crate) struct Aggregate {
    generation: u64,
    start: Instant,
    start_unix_ms: u64,
    window_secs: u64,
    /// Indexed by global entry id; `None` until a batch mentions the id.
    entries: Vec<Option<AggEntry>>,
    total: AggEntry,
    /// Indexed by global failure id: `(entry id, error, occurrences)`.
    failures: Vec<Option<(u32, Box<str>, u64)>>,
    last_request: Option<Instant>,
    /// Time of the latest collect: "now" for the current window.
    collected_at: Instant,
}

impl Aggregate {
    pub(crate) fn new(
        config: &StatsConfig,
        generation: u64,
        start: Instant,
        start_unix_ms: u64,
    ) -> Self {
        let window_secs = config.window_secs();
        Aggregate {
            generation,
            start,
            start_unix_ms,
            window_secs,
            entries: Vec::new(),
            total: AggEntry::new("", AGGREGATED_NAME, window_secs),
            failures: Vec::new(),
            last_request: None,
            collected_at: start,
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The second in progress at the latest collect.
    fn now_second(&self) -> u64 {
        self.collected_at
            .saturating_duration_since(self.start)
            .as_secs()
    }

    /// Oldest second that a window can still use.
    fn oldest_kept_second(&self) -> u64 {
        self.now_second().saturating_sub(self.window_secs)
    }

    /// Moves "now" forward and frees window slots that fell out of the window.
    pub(crate) fn advance(&mut self, now: Instant) {
        self.collected_at = self.collected_at.max(now);
        let oldest_kept = self.oldest_kept_second();
        for entry in self.entries.iter_mut().flatten() {
            if !entry.window.is_empty() {
                entry.window.expire(oldest_kept);
            }
        }
        self.total.window.expire(oldest_kept);
    }

    /// Window slots holding a second (for the tests of slot expiry).
    #[cfg(test)]
    pub(crate) fn window_slots_in_use(&self) -> usize {
        self.entries
            .iter()
            .flatten()
            .chain(std::iter::once(&self.total))
            .map(|entry| entry.window.slots.iter().flatten().count())
            .sum()
    }

    /// Merges a batch of this generation. Returns its emptied histograms for reuse.
    pub(crate) fn merge(
        &mut self,
        batch: &mut Batch,
        names: &CappedRegistry<PairKey>,
        failure_groups: &CappedRegistry<FailureKey>,
        emptied: &mut Vec<Histogram<u64>>,
    ) {
        debug_assert_eq!(batch.generation, self.generation);
        let oldest_kept = self.oldest_kept_second();
        let window_secs = self.window_secs;
        for delta in batch.entries.drain(..) {
            let id = delta.entry_id as usize;
            if self.entries.len() <= id {
                self.entries.resize_with(id + 1, || None);
            }
            let entry = self.entries[id].get_or_insert_with(|| {
                let (method, name) = names
                    .key(delta.entry_id)
                    .map_or(("", "(unknown)"), |key| (&*key.first, &*key.second));
                AggEntry::new(method, name, window_secs)
            });
            entry.merge(&delta, batch.second, oldest_kept);
            self.total.merge(&delta, batch.second, oldest_kept);
            let mut histogram = delta.histogram;
            histogram.reset();
            emptied.push(histogram);
        }
        for delta in batch.failures.drain(..) {
            let id = delta.failure_id as usize;
            if self.failures.len() <= id {
                self.failures.resize_with(id + 1, || None);
            }
            let group = self.failures[id].get_or_insert_with(|| {
                let key = failure_groups.key(delta.failure_id);
                (
                    key.map_or(u32::MAX, |key| key.entry),
                    key.map_or_else(|| "(unknown)".into(), |key| key.error.clone()),
                    0,
                )
            });
            group.2 += delta.occurrences;
        }
        if batch.last_finished_at > self.last_request {
            self.last_request = batch.last_finished_at;
        }
    }

    fn unix_ms(&self, instant: Instant) -> u64 {
        let since_start = instant.saturating_duration_since(self.start).as_millis();
        self.start_unix_ms
            .saturating_add(u64::try_from(since_start).unwrap_or(u64::MAX))
    }

    fn timing(&self) -> Timing {
        let now_second = self.now_second();
        let run = self.last_request.map_or(Duration::ZERO, |last| {
            last.saturating_duration_since(self.start)
        });
        Timing {
            window_from: now_second.saturating_sub(self.window_secs),
            window_to: now_second,
            run_secs: run.as_secs_f64(),
        }
    }

    fn entry_stats(entry: &AggEntry, timing: Timing) -> EntryStats {
        let counters = &entry.counters;
        let requests = counters.requests;
        let per_request = |sum: u64| {
            if requests == 0 {
                0.0
            } else {
                sum as f64 / requests as f64
            }
        };
        let per_run_second = |count: u64| {
            if timing.run_secs > 0.0 {
                count as f64 / timing.run_secs
            } else {
                0.0
            }
        };
        let window = entry.window.sums(timing.window_from, timing.window_to);
        let per_window_second = |count: u64| {
            if window.seconds == 0 {
                0.0
            } else {
                count as f64 / window.seconds as f64
            }
        };
        let percentiles =
            percentiles_ms(&entry.histogram, counters.min_micros, counters.max_micros);
        let current_percentiles = window
            .histogram
            .as_ref()
            .map_or_else(Vec::new, |histogram| {
                percentiles_ms(histogram, window.min_micros, window.max_micros)
            });
        let (min_ms, max_ms) = if requests == 0 {
            (0.0, 0.0)
        } else {
            (
                micros_to_ms(counters.min_micros),
                micros_to_ms(counters.max_micros),
            )
        };
        let median_ms = percentiles.first().map_or(0.0, |&(_, median_ms)| median_ms);
        EntryStats {
            method: entry.method.to_string(),
            name: entry.name.to_string(),
            num_requests: requests,
            num_failures: counters.failures,
            min_ms,
            max_ms,
            avg_ms: per_request(counters.response_micros_sum) / 1_000.0,
            median_ms,
            avg_content_length: per_request(counters.content_bytes),
            total_rps: per_run_second(requests),
            total_fail_per_s: per_run_second(counters.failures),
            current_rps: per_window_second(window.requests),
            current_fail_per_s: per_window_second(window.failures),
            current_avg_ms: if window.requests == 0 {
                0.0
            } else {
                window.response_micros_sum as f64 / window.requests as f64 / 1_000.0
            },
            percentiles,
            current_percentiles,
        }
    }

    /// The aggregated total only (for history points).
    pub(crate) fn total_stats(&self) -> EntryStats {
        Self::entry_stats(&self.total, self.timing())
    }

    /// Unix time of the latest collect.
    pub(crate) fn collected_unix_ms(&self) -> u64 {
        self.unix_ms(self.collected_at)
    }

    /// Everything but the user errors and cap flags, which live elsewhere.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let timing = self.timing();
        let mut entries: Vec<EntryStats> = self
            .entries
            .iter()
            .flatten()
            .filter(|entry| entry.counters.requests > 0 || entry.counters.failures > 0)
            .map(|entry| Self::entry_stats(entry, timing))
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.method.cmp(&b.method)));

        let entry_key = |entry_id: u32| {
            self.entries
                .get(entry_id as usize)
                .and_then(Option::as_ref)
                .map_or(("", "(unknown)"), |entry| (&*entry.method, &*entry.name))
        };
        let mut failures: Vec<FailureStats> = self
            .failures
            .iter()
            .flatten()
            .map(|(entry_id, error, occurrences)| {
                let (method, name) = entry_key(*entry_id);
                FailureStats {
                    method: method.to_owned(),
                    name: name.to_owned(),
                    error: error.to_string(),
                    occurrences: *occurrences,
                }
            })
            .collect();
        let mut failures_over_error_cap = 0;
        for entry in self.entries.iter().flatten() {
            if entry.counters.failures_over_cap > 0 {
                failures_over_error_cap += entry.counters.failures_over_cap;
                failures.push(FailureStats {
                    method: entry.method.to_string(),
                    name: entry.name.to_string(),
                    error: OTHER_ERRORS.to_owned(),
                    occurrences: entry.counters.failures_over_cap,
                });
            }
        }
        failures.sort_by(|a, b| {
            b.occurrences
                .cmp(&a.occurrences)
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| a.method.cmp(&b.method))
                .then_with(|| a.error.cmp(&b.error))
        });

        let samples_over_name_cap = self
            .entries
            .first()
            .and_then(Option::as_ref)
            .map_or(0, |overflow| overflow.counters.requests);
        StatsSnapshot {
            start_unix_ms: self.start_unix_ms,
            collected_unix_ms: self.collected_unix_ms(),
            last_request_unix_ms: self.last_request.map(|last| self.unix_ms(last)),
            duration: timing.run_secs,
            current_window_secs: self.window_secs,
            entries,
            total: Self::entry_stats(&self.total, timing),
            failures,
            user_errors: Vec::new(),
            overflow: OverflowStats {
                samples_over_name_cap,
                failures_over_error_cap,
                ..OverflowStats::default()
            },
            requests_cut_off: 0,
        }
    }
}
