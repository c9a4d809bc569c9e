//! The merged statistics of one generation: all-time histograms and counters per entry, the
//! per-second window ring behind the "current" figures, the bounded per-second request counts
//! of each entry, failure counts, and the conversion of all that into a [`StatsSnapshot`] (or
//! into [`EntryDetail`]s for Locust's JSON).
//!
//! Two kinds of input arrive here through one path ([`EntryUpdate`]): the batches of this
//! process's shards, and [`StatsDelta`]s of other processes. When delta tracking is on, every
//! update also goes to the [`DeltaBook`], from which [`crate::Stats::take_delta`] takes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::delta::book::DeltaBook;
use crate::delta::{DeltaEntry, StatsDelta};
use crate::histogram::{Samples, micros_to_ms, new_histogram, percentiles_ms};
use crate::keys::{
    CappedRegistry, FailureKey, FailureKeyRef, MAX_KEY_TEXT, PairKey, PairKeyRef, Registration,
    clip,
};
use crate::shard::{Batch, DeltaSamples, EntryCounters, OVERFLOW_ENTRY_ID};
use crate::snapshot::{
    EntryDetail, EntryStats, FailureStats, OverflowStats, SecondCounts, StatsSnapshot,
    UnmarkedSnapshot,
};
use crate::unmarked::{Marks, SecondSums, Settle, UnmarkedSums};
use crate::{AGGREGATED_NAME, OTHER_ERRORS, StatsConfig};

/// One second of one entry's samples, as applied to the aggregate and the delta book.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SecondPart<'a> {
    /// Second since the generation's start.
    pub(crate) second: u64,
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    pub(crate) response_micros_sum: u64,
    pub(crate) min_micros: u64,
    pub(crate) max_micros: u64,
    /// The second's response times; `None` when they travel in [`EntryUpdate::earlier`]
    /// instead (a second too old for any current window): then the second counts for the
    /// per-second series but not for the window.
    pub(crate) samples: Option<Samples<'a>>,
}

/// What one entry gained: a shard batch's entry, or an entry of a received delta.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EntryUpdate<'a> {
    /// All-time counters of the update (every second together).
    pub(crate) counters: EntryCounters,
    /// Earliest second of the update.
    pub(crate) first_second: u64,
    /// Response times of the seconds whose part carries no samples.
    pub(crate) earlier: Option<Samples<'a>>,
    pub(crate) seconds: &'a [SecondPart<'a>],
}

/// The mapping between seconds / instants of one generation and Unix time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimeBase {
    start: Instant,
    start_unix_ms: u64,
}

impl TimeBase {
    /// Unix second of `second` since the start.
    pub(crate) fn unix_second(self, second: u64) -> u64 {
        (self.start_unix_ms / 1_000).saturating_add(second)
    }

    /// Second since the start of `unix_second`; a second before the start counts as second 0,
    /// as a sample finished before the start does.
    pub(crate) fn second_of_unix(self, unix_second: u64) -> u64 {
        unix_second.saturating_sub(self.start_unix_ms / 1_000)
    }

    pub(crate) fn unix_ms(self, instant: Instant) -> u64 {
        let since_start = instant.saturating_duration_since(self.start).as_millis();
        self.start_unix_ms
            .saturating_add(u64::try_from(since_start).unwrap_or(u64::MAX))
    }

    /// Unix nanoseconds of `instant` (saturating in the year 2554).
    pub(crate) fn unix_nanos(self, instant: Instant) -> u64 {
        let since_start = instant.saturating_duration_since(self.start).as_nanos();
        self.start_unix_ms
            .saturating_mul(1_000_000)
            .saturating_add(u64::try_from(since_start).unwrap_or(u64::MAX))
    }

    /// The instant of `unix_nanos` (the start for earlier times); `None` if it cannot be
    /// represented.
    pub(crate) fn instant_of_unix_nanos(self, unix_nanos: u64) -> Option<Instant> {
        let since_start = unix_nanos.saturating_sub(self.start_unix_ms.saturating_mul(1_000_000));
        self.start.checked_add(Duration::from_nanos(since_start))
    }
}

/// What merging a delta could not fit under this process's caps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DeltaOverflow {
    /// A name went to the overflow entry.
    pub(crate) names: bool,
    /// A failure went to its entry's "(other errors)" group.
    pub(crate) failures: bool,
}

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

impl SecondSlot {
    fn sums(&self) -> SecondSums {
        SecondSums {
            requests: self.requests,
            failures: self.failures,
            response_micros_sum: self.response_micros_sum,
            min_micros: self.min_micros,
            max_micros: self.max_micros,
        }
    }

    /// Hands the slot's samples to `settle`.
    fn settle(&self, settle: &mut Settle<'_>) {
        settle.second(
            self.second,
            self.sums(),
            self.histogram.as_ref().map(Samples::Dense),
        );
    }
}

impl SecondPart<'_> {
    fn sums(&self) -> SecondSums {
        SecondSums {
            requests: self.requests,
            failures: self.failures,
            response_micros_sum: self.response_micros_sum,
            min_micros: self.min_micros,
            max_micros: self.max_micros,
        }
    }
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

    /// Adds one second of an entry, if that second can still be part of a window; false (nothing added) when it
    /// cannot, and the caller settles its samples itself. A slot reused for a newer second settles its samples
    /// first.
    fn add(
        &mut self,
        oldest_kept: u64,
        part: &SecondPart<'_>,
        samples: Samples<'_>,
        settle: &mut Settle<'_>,
    ) -> bool {
        let second = part.second;
        let newest_kept = oldest_kept + self.len() - 1;
        if !(oldest_kept..=newest_kept).contains(&second) {
            return false;
        }
        let position = (second % self.len()) as usize;
        let slot = &mut self.slots[position];
        if slot.as_ref().is_some_and(|slot| slot.second != second) {
            // Older than `oldest_kept` (not yet expired): its samples settle, its allocation is reused.
            let mut stale = slot.take().expect("checked above");
            stale.settle(settle);
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
        slot.requests = slot.requests.saturating_add(part.requests);
        slot.failures = slot.failures.saturating_add(part.failures);
        slot.response_micros_sum = slot
            .response_micros_sum
            .saturating_add(part.response_micros_sum);
        slot.min_micros = slot.min_micros.min(part.min_micros);
        slot.max_micros = slot.max_micros.max(part.max_micros);
        samples.add_to(slot.histogram.get_or_insert_with(new_histogram));
        true
    }

    /// Frees slots of seconds before `oldest_kept`; their samples settle.
    fn expire(&mut self, oldest_kept: u64, settle: &mut Settle<'_>) {
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|slot| slot.second < oldest_kept)
                && let Some(stale) = slot.take()
            {
                stale.settle(settle);
            }
        }
    }

    /// The unmarked seconds still in the ring, for an unmarked snapshot.
    fn unmarked_seconds<'a>(
        &'a self,
        marks: &'a Marks,
    ) -> impl Iterator<Item = (SecondSums, &'a Histogram<u64>)> {
        self.slots
            .iter()
            .flatten()
            .filter(move |slot| !marks.is_marked(slot.second))
            .filter_map(|slot| {
                slot.histogram
                    .as_ref()
                    .map(|histogram| (slot.sums(), histogram))
            })
    }

    /// Requests of the marked seconds still in the ring.
    fn marked_requests(&self, marks: &Marks) -> u64 {
        self.slots
            .iter()
            .flatten()
            .filter(|slot| marks.is_marked(slot.second))
            .map(|slot| slot.requests)
            .sum()
    }

    /// Adds the samples of every second in the ring to `target`.
    fn add_all_to(&self, target: &mut Histogram<u64>) {
        for histogram in self
            .slots
            .iter()
            .flatten()
            .filter_map(|slot| slot.histogram.as_ref())
        {
            Samples::Dense(histogram).add_to(target);
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
                sums.requests = sums.requests.saturating_add(slot.requests);
                sums.failures = sums.failures.saturating_add(slot.failures);
                sums.response_micros_sum = sums
                    .response_micros_sum
                    .saturating_add(slot.response_micros_sum);
                sums.min_micros = sums.min_micros.min(slot.min_micros);
                sums.max_micros = sums.max_micros.max(slot.max_micros);
                if let Some(histogram) = &slot.histogram {
                    Samples::Dense(histogram)
                        .add_to(sums.histogram.get_or_insert_with(new_histogram));
                }
            }
        }
        sums
    }

    fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }
}

/// Requests and failures of one entry in one second (12 bytes: the series is long).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SecondCount {
    second: u32,
    requests: u32,
    failures: u32,
}

/// The latest `capacity` seconds with requests of one entry, oldest first: Locust's
/// `num_reqs_per_sec` / `num_fail_per_sec`. Past the capacity the oldest second is dropped.
struct SecondSeries {
    counts: VecDeque<SecondCount>,
    capacity: usize,
}

impl SecondSeries {
    fn new(capacity: usize) -> Self {
        SecondSeries {
            counts: VecDeque::new(),
            capacity,
        }
    }

    fn add(&mut self, second: u64, requests: u64, failures: u64) {
        if self.capacity == 0 || (requests == 0 && failures == 0) {
            return;
        }
        let narrow = |value: u64| u32::try_from(value).unwrap_or(u32::MAX);
        let second = narrow(second);
        // Batches arrive in order but for stragglers of the previous second or two: look
        // from the back.
        match self.counts.iter().rposition(|count| count.second <= second) {
            Some(index) if self.counts[index].second == second => {
                let count = &mut self.counts[index];
                count.requests = count.requests.saturating_add(narrow(requests));
                count.failures = count.failures.saturating_add(narrow(failures));
            }
            found => {
                let index = found.map_or(0, |index| index + 1);
                self.counts.insert(
                    index,
                    SecondCount {
                        second,
                        requests: narrow(requests),
                        failures: narrow(failures),
                    },
                );
                if self.counts.len() > self.capacity {
                    // Also drops a straggler older than everything kept.
                    self.counts.pop_front();
                }
            }
        }
    }

    /// `(second, requests, failures)`, oldest first.
    fn iter(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.counts.iter().map(|count| {
            (
                u64::from(count.second),
                u64::from(count.requests),
                u64::from(count.failures),
            )
        })
    }
}

/// Merged statistics of one entry (or the total).
pub(crate) struct AggEntry {
    method: Box<str>,
    name: Box<str>,
    /// The response times of the seconds no longer in the window ring: with the ring's, all of them
    /// ([`AggEntry::histogram`]). A sample is added to one of the two only, so a merge (a thousand workers'
    /// deltas a second on a master) records each bucket once, not twice.
    settled: Histogram<u64>,
    counters: EntryCounters,
    window: SecondRing,
    /// Second (since the generation's start) of the first batch that mentioned this entry.
    first_second: u64,
    seconds: SecondSeries,
    /// The seconds not marked saturated, when [`StatsConfig::unmarked_stats`] is on.
    unmarked: Option<Box<UnmarkedSums>>,
}

impl AggEntry {
    fn new(
        method: &str,
        name: &str,
        window_secs: u64,
        first_second: u64,
        series_capacity: usize,
        keeps_unmarked: bool,
    ) -> Self {
        AggEntry {
            unmarked: keeps_unmarked.then(Box::default),
            method: method.into(),
            name: name.into(),
            settled: new_histogram(),
            counters: EntryCounters::default(),
            window: SecondRing::new(window_secs),
            first_second,
            seconds: SecondSeries::new(series_capacity),
        }
    }

    /// Every response time of the entry: the settled seconds and those still in the window.
    fn histogram(&self) -> Histogram<u64> {
        let mut histogram = self.settled.clone();
        self.window.add_all_to(&mut histogram);
        histogram
    }

    fn apply(&mut self, update: &EntryUpdate<'_>, oldest_kept: u64, marks: &Marks) {
        self.counters.merge(&update.counters);
        let mut settle = Settle {
            all: &mut self.settled,
            unmarked: self.unmarked.as_deref_mut().map(|sums| (sums, marks)),
        };
        if let Some(earlier) = update.earlier {
            // The seconds that carry no samples of their own: theirs are `earlier`'s.
            let mut sums = SecondSums {
                requests: 0,
                failures: 0,
                response_micros_sum: 0,
                min_micros: u64::MAX,
                max_micros: 0,
            };
            for part in update.seconds.iter().filter(|part| part.samples.is_none()) {
                sums.requests = sums.requests.saturating_add(part.requests);
                sums.failures = sums.failures.saturating_add(part.failures);
            }
            settle.unsorted(earlier, sums);
        }
        for part in update.seconds {
            if let Some(samples) = part.samples
                && !self.window.add(oldest_kept, part, samples, &mut settle)
            {
                settle.second(part.second, part.sums(), Some(samples));
            }
            self.seconds.add(part.second, part.requests, part.failures);
        }
        self.first_second = self.first_second.min(update.first_second);
    }

    fn expire(&mut self, oldest_kept: u64, marks: &Marks) {
        if self.window.is_empty() {
            return;
        }
        let mut settle = Settle {
            all: &mut self.settled,
            unmarked: self.unmarked.as_deref_mut().map(|sums| (sums, marks)),
        };
        self.window.expire(oldest_kept, &mut settle);
    }

    /// The unmarked sums with the unmarked seconds still in the window, and the requests of
    /// marked seconds (settled or not); `None` when unmarked statistics are off.
    fn unmarked(&self, marks: &Marks) -> Option<(UnmarkedSums, u64)> {
        let settled = self.unmarked.as_deref()?;
        let in_window: Vec<_> = self.window.unmarked_seconds(marks).collect();
        let sums = settled.merged_with(&in_window);
        let excluded = settled
            .excluded_requests
            .saturating_add(self.window.marked_requests(marks));
        Some((sums, excluded))
    }
}

/// One failure group as merged: `(method, name)` by entry id, the error, and when it was seen.
struct FailureGroup {
    entry_id: u32,
    error: Box<str>,
    occurrences: u64,
    first_second: u64,
    last_second: u64,
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
    /// The caller-visible label of the generation that deltas carry ([`crate::Stats::epoch`]).
    epoch: u64,
    start: Instant,
    start_unix_ms: u64,
    window_secs: u64,
    /// Seconds kept per entry in its [`SecondSeries`].
    per_second_capacity: usize,
    /// Indexed by global entry id; `None` until a batch mentions the id.
    entries: Vec<Option<AggEntry>>,
    /// Its series is empty: Locust's JSON lists entries only.
    total: AggEntry,
    /// Indexed by global failure id.
    failures: Vec<Option<FailureGroup>>,
    last_request: Option<Instant>,
    /// Time of the latest collect: "now" for the current window.
    collected_at: Instant,
    /// Seconds the caller marked saturated ([`crate::Stats::mark_saturated`]).
    marks: Marks,
    /// Whether entries keep [`UnmarkedSums`] ([`StatsConfig::unmarked_stats`]).
    keeps_unmarked: bool,
    /// Whether deltas of other processes were merged (a master): marks are placed by Unix second.
    merges_deltas: bool,
    /// What was applied since the latest [`crate::Stats::take_delta`]; `None` until the first.
    book: Option<DeltaBook>,
}

impl Aggregate {
    pub(crate) fn new(
        config: &StatsConfig,
        generation: u64,
        epoch: u64,
        start: Instant,
        start_unix_ms: u64,
    ) -> Self {
        let window_secs = config.window_secs();
        Aggregate {
            generation,
            epoch,
            start,
            start_unix_ms,
            window_secs,
            per_second_capacity: config.per_second_capacity,
            entries: Vec::new(),
            total: AggEntry::new(
                "",
                AGGREGATED_NAME,
                window_secs,
                0,
                0,
                config.unmarked_stats,
            ),
            failures: Vec::new(),
            last_request: None,
            collected_at: start,
            marks: Marks::default(),
            keeps_unmarked: config.unmarked_stats,
            merges_deltas: false,
            book: None,
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn time_base(&self) -> TimeBase {
        TimeBase {
            start: self.start,
            start_unix_ms: self.start_unix_ms,
        }
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
            entry.expire(oldest_kept, &self.marks);
        }
        self.total.expire(oldest_kept, &self.marks);
    }

    /// Marks the seconds from `from` to `to` (both included, each second they touch) as
    /// saturated.
    ///
    /// A master places its workers' samples by Unix second, which each worker derives from its
    /// own clock's start: a worker's second may be one off the master's. There the marks are
    /// widened by a second on each side, so that no sample of a marked interval counts as
    /// unmarked.
    pub(crate) fn mark_saturated(&mut self, from: Instant, to: Instant) {
        let to = to.max(from);
        if self.merges_deltas {
            let time = self.time_base();
            let second = |instant: Instant| time.second_of_unix(time.unix_ms(instant) / 1_000);
            self.marks
                .mark(second(from).saturating_sub(1), second(to).saturating_add(1));
        } else {
            let second = |instant: Instant| instant.saturating_duration_since(self.start).as_secs();
            self.marks.mark(second(from), second(to));
        }
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
        let second = batch.second;
        for delta in batch.entries.drain(..) {
            let counters = delta.counters;
            let part = SecondPart {
                second,
                requests: counters.requests,
                failures: counters.failures,
                response_micros_sum: counters.response_micros_sum,
                min_micros: counters.min_micros,
                max_micros: counters.max_micros,
                samples: Some(delta.samples.as_samples()),
            };
            let update = EntryUpdate {
                counters,
                first_second: second,
                earlier: None,
                seconds: &[part],
            };
            self.apply_entry(delta.entry_id, names, &update);
            if let DeltaSamples::Dense(mut histogram) = delta.samples {
                histogram.reset();
                emptied.push(histogram);
            }
        }
        for delta in batch.failures.drain(..) {
            self.apply_failure(
                delta.failure_id,
                failure_groups,
                delta.occurrences,
                second,
                second,
            );
        }
    }

    /// Applies one entry's update to the entry (created on first sight, named from `names`),
    /// the total and the delta book.
    fn apply_entry(
        &mut self,
        entry_id: u32,
        names: &CappedRegistry<PairKey>,
        update: &EntryUpdate<'_>,
    ) {
        let oldest_kept = self.oldest_kept_second();
        let window_secs = self.window_secs;
        let series_capacity = self.per_second_capacity;
        let keeps_unmarked = self.keeps_unmarked;
        let id = entry_id as usize;
        if self.entries.len() <= id {
            self.entries.resize_with(id + 1, || None);
        }
        let entry = self.entries[id].get_or_insert_with(|| {
            let (method, name) = names
                .key(entry_id)
                .map_or(("", "(unknown)"), |key| (&*key.first, &*key.second));
            AggEntry::new(
                method,
                name,
                window_secs,
                update.first_second,
                series_capacity,
                keeps_unmarked,
            )
        });
        entry.apply(update, oldest_kept, &self.marks);
        self.total.apply(update, oldest_kept, &self.marks);
        if update.counters.last_finished_at > self.last_request {
            self.last_request = update.counters.last_finished_at;
        }
        if let Some(book) = &mut self.book {
            book.add_entry(entry_id, update);
        }
    }

    /// Counts `occurrences` failures of group `failure_id` seen from `first_second` to
    /// `last_second`, in the aggregate and the delta book.
    fn apply_failure(
        &mut self,
        failure_id: u32,
        failure_groups: &CappedRegistry<FailureKey>,
        occurrences: u64,
        first_second: u64,
        last_second: u64,
    ) {
        let id = failure_id as usize;
        if self.failures.len() <= id {
            self.failures.resize_with(id + 1, || None);
        }
        let group = self.failures[id].get_or_insert_with(|| {
            let key = failure_groups.key(failure_id);
            FailureGroup {
                entry_id: key.map_or(u32::MAX, |key| key.entry),
                error: key.map_or_else(|| "(unknown)".into(), |key| key.error.clone()),
                occurrences: 0,
                first_second,
                last_second,
            }
        });
        group.occurrences = group.occurrences.saturating_add(occurrences);
        group.first_second = group.first_second.min(first_second);
        group.last_second = group.last_second.max(last_second);
        if let Some(book) = &mut self.book {
            book.add_failure(failure_id, occurrences, first_second, last_second);
        }
    }

    /// Merges a delta of another process as if its samples had been recorded here: names and
    /// failure groups are registered under this process's caps (what does not fit goes to the
    /// overflow entry and "(other errors)" groups), Unix seconds are mapped onto this
    /// generation's seconds.
    pub(crate) fn merge_delta(
        &mut self,
        delta: &StatsDelta,
        names: &mut CappedRegistry<PairKey>,
        failure_groups: &mut CappedRegistry<FailureKey>,
    ) -> DeltaOverflow {
        self.merges_deltas = true;
        let time = self.time_base();
        let mut overflow = DeltaOverflow::default();
        let mut parts = Vec::new();
        let mut failures = Vec::new();
        for entry in &delta.entries {
            let entry_id = if entry.over_name_cap {
                // Past the sender's cap: past this process's too (it sees all the sender's names).
                overflow.names = true;
                OVERFLOW_ENTRY_ID
            } else {
                let key = PairKeyRef {
                    first: clip(&entry.method, MAX_KEY_TEXT),
                    second: clip(&entry.name, MAX_KEY_TEXT),
                };
                match names.register(&key, |key| key.to_owned_key()) {
                    Registration::Id(id) => id,
                    Registration::Full(_) => {
                        overflow.names = true;
                        OVERFLOW_ENTRY_ID
                    }
                }
            };

            // Failure groups first: those past the cap count in the entry's counters.
            let mut counters = entry.counters(time);
            failures.clear();
            for failure in &entry.failure_groups {
                let key = FailureKeyRef {
                    entry: entry_id,
                    error: clip(&failure.error, MAX_KEY_TEXT),
                };
                match failure_groups.register(&key, |key| key.to_owned_key()) {
                    Registration::Id(failure_id) => failures.push((failure_id, failure)),
                    Registration::Full(_) => {
                        overflow.failures = true;
                        counters.failures_over_cap = counters
                            .failures_over_cap
                            .saturating_add(failure.occurrences);
                    }
                }
            }

            parts.clear();
            parts.extend(entry.seconds.iter().map(|second| {
                let window = second.window.as_ref();
                SecondPart {
                    second: time.second_of_unix(second.unix_second),
                    requests: second.requests,
                    failures: second.failures,
                    response_micros_sum: window.map_or(0, |window| window.response_micros_sum),
                    min_micros: window.map_or(u64::MAX, |window| window.min_micros),
                    max_micros: window.map_or(0, |window| window.max_micros),
                    samples: window.map(|window| Samples::Sparse(&window.histogram)),
                }
            }));
            let update = EntryUpdate {
                counters,
                first_second: time.second_of_unix(entry.first_unix_second),
                earlier: (!entry.earlier.is_empty()).then_some(Samples::Sparse(&entry.earlier)),
                seconds: &parts,
            };
            self.apply_entry(entry_id, names, &update);
            for &(failure_id, failure) in &failures {
                self.apply_failure(
                    failure_id,
                    failure_groups,
                    failure.occurrences,
                    time.second_of_unix(failure.first_unix_second),
                    time.second_of_unix(failure.last_unix_second),
                );
            }
        }
        overflow
    }

    /// Whether updates are tracked for deltas.
    pub(crate) fn tracks_deltas(&self) -> bool {
        self.book.is_some()
    }

    /// Starts tracking updates for deltas, seeding the book with everything merged so far, so
    /// that the first delta holds every sample since the start of the generation. The seeded
    /// part carries its response times without per-second histograms (see
    /// [`crate::Stats::take_delta`]).
    pub(crate) fn start_tracking_deltas(&mut self, config: &StatsConfig) {
        if self.book.is_some() {
            return;
        }
        let mut book = DeltaBook::new(config);
        for (entry_id, entry) in self.entries.iter().enumerate() {
            let Some(entry) = entry else { continue };
            if entry.counters.requests == 0 && entry.counters.failures == 0 {
                continue;
            }
            // Ids are u32 (see the registry).
            book.seed_entry(
                entry_id as u32,
                entry.counters,
                entry.first_second,
                &entry.histogram(),
                entry.seconds.iter(),
            );
        }
        for (failure_id, group) in self.failures.iter().enumerate() {
            if let Some(group) = group {
                book.add_failure(
                    failure_id as u32,
                    group.occurrences,
                    group.first_second,
                    group.last_second,
                );
            }
        }
        self.book = Some(book);
    }

    /// The book of updates since the latest take, if tracking is on.
    pub(crate) fn book_mut(&mut self) -> Option<&mut DeltaBook> {
        self.book.as_mut()
    }

    /// Takes the tracked entries (with their failure groups) as named delta entries, leaving
    /// the book empty; nothing when tracking is off.
    pub(crate) fn take_delta_entries(
        &mut self,
        names: &CappedRegistry<PairKey>,
        failure_groups: &CappedRegistry<FailureKey>,
    ) -> Vec<DeltaEntry> {
        let time = self.time_base();
        self.book.as_mut().map_or_else(Vec::new, |book| {
            book.take_entries(names, failure_groups, time)
        })
    }

    fn unix_ms(&self, instant: Instant) -> u64 {
        self.time_base().unix_ms(instant)
    }

    /// Unix second of `second` since the generation's start.
    fn unix_second(&self, second: u64) -> u64 {
        self.time_base().unix_second(second)
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
            percentiles_ms(&entry.histogram(), counters.min_micros, counters.max_micros);
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

    /// Entry statistics of the unmarked seconds only: counts, response times and rates (per
    /// unmarked second of the run); the "current" figures are left empty.
    fn unmarked_entry_stats(
        entry: &AggEntry,
        sums: &UnmarkedSums,
        unmarked_secs: f64,
    ) -> EntryStats {
        let requests = sums.requests;
        let per_unmarked_second = |count: u64| {
            if unmarked_secs > 0.0 {
                count as f64 / unmarked_secs
            } else {
                0.0
            }
        };
        let percentiles = percentiles_ms(&sums.histogram, sums.min_micros, sums.max_micros);
        let (min_ms, max_ms, avg_ms) = if requests == 0 {
            (0.0, 0.0, 0.0)
        } else {
            (
                micros_to_ms(sums.min_micros),
                micros_to_ms(sums.max_micros),
                sums.response_micros_sum as f64 / requests as f64 / 1_000.0,
            )
        };
        EntryStats {
            method: entry.method.to_string(),
            name: entry.name.to_string(),
            num_requests: requests,
            num_failures: sums.failures,
            min_ms,
            max_ms,
            avg_ms,
            median_ms: percentiles.first().map_or(0.0, |&(_, median_ms)| median_ms),
            avg_content_length: 0.0,
            total_rps: per_unmarked_second(requests),
            total_fail_per_s: per_unmarked_second(sums.failures),
            percentiles,
            ..EntryStats::default()
        }
    }

    /// The statistics of the seconds not marked saturated, or `None` when
    /// [`StatsConfig::unmarked_stats`] is off.
    pub(crate) fn unmarked_snapshot(&self) -> Option<UnmarkedSnapshot> {
        if !self.keeps_unmarked {
            return None;
        }
        let timing = self.timing();
        let run_seconds = timing.run_secs.ceil() as u64;
        let marked_seconds = self.marks.marked_before(run_seconds);
        let unmarked_secs = (timing.run_secs - marked_seconds as f64).max(0.0);
        let mut entries: Vec<EntryStats> = self
            .entries
            .iter()
            .flatten()
            .filter(|entry| entry.counters.requests > 0 || entry.counters.failures > 0)
            .filter_map(|entry| {
                let (sums, _) = entry.unmarked(&self.marks)?;
                Some(Self::unmarked_entry_stats(entry, &sums, unmarked_secs))
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.method.cmp(&b.method)));
        let (total_sums, excluded_requests) = self.total.unmarked(&self.marks)?;
        Some(UnmarkedSnapshot {
            total: Self::unmarked_entry_stats(&self.total, &total_sums, unmarked_secs),
            entries,
            run_secs: timing.run_secs,
            unmarked_secs,
            marked_seconds,
            excluded_requests,
            unsorted_requests: total_sums.unsorted_requests,
        })
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
            .map(|group| {
                let (method, name) = entry_key(group.entry_id);
                FailureStats {
                    method: method.to_owned(),
                    name: name.to_owned(),
                    error: group.error.to_string(),
                    occurrences: group.occurrences,
                    first_seen_unix_secs: Some(self.unix_second(group.first_second)),
                    last_seen_unix_secs: Some(self.unix_second(group.last_second)),
                }
            })
            .collect();
        let mut failures_over_error_cap = 0;
        for entry in self.entries.iter().flatten() {
            if entry.counters.failures_over_cap > 0 {
                failures_over_error_cap =
                    u64::saturating_add(failures_over_error_cap, entry.counters.failures_over_cap);
                failures.push(FailureStats {
                    method: entry.method.to_string(),
                    name: entry.name.to_string(),
                    error: OTHER_ERRORS.to_owned(),
                    occurrences: entry.counters.failures_over_cap,
                    // Not tracked for failures past the group cap.
                    first_seen_unix_secs: None,
                    last_seen_unix_secs: None,
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

    /// Locust's per-entry raw data of every entry with requests or failures, sorted by
    /// `(name, method)` like the snapshot's entries.
    pub(crate) fn entry_details(&self) -> Vec<EntryDetail> {
        let mut details: Vec<EntryDetail> = self
            .entries
            .iter()
            .flatten()
            .filter(|entry| entry.counters.requests > 0 || entry.counters.failures > 0)
            .map(|entry| self.entry_detail(entry))
            .collect();
        details.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.method.cmp(&b.method)));
        details
    }

    fn entry_detail(&self, entry: &AggEntry) -> EntryDetail {
        let counters = &entry.counters;
        let has_requests = counters.requests > 0;
        let mut response_times: Vec<(f64, u64)> = Vec::new();
        if has_requests {
            let histogram = entry.histogram();
            for bucket in histogram.iter_recorded() {
                // The bucket's highest value, as the histogram's percentiles report it: a percentile rebuilt from
                // this distribution is the one cicada reports.
                let highest = histogram
                    .highest_equivalent(bucket.value_iterated_to())
                    // Not `clamp`, which panics on an inverted range (a malformed delta).
                    .max(counters.min_micros)
                    .min(counters.max_micros);
                let ms = micros_to_ms(highest);
                match response_times.last_mut() {
                    // Clamping can fold the outermost buckets onto the same value.
                    Some((last_ms, count)) if *last_ms == ms => {
                        *count = count.saturating_add(bucket.count_at_value());
                    }
                    _ => response_times.push((ms, bucket.count_at_value())),
                }
            }
        }
        EntryDetail {
            method: entry.method.to_string(),
            name: entry.name.to_string(),
            first_request_unix_ms: self
                .start_unix_ms
                .saturating_add(entry.first_second.saturating_mul(1_000)),
            last_request_unix_ms: entry
                .counters
                .last_finished_at
                .map(|last| self.unix_ms(last)),
            num_requests: counters.requests,
            num_failures: counters.failures,
            total_response_ms: micros_to_ms(counters.response_micros_sum),
            min_ms: has_requests.then(|| micros_to_ms(counters.min_micros)),
            max_ms: if has_requests {
                micros_to_ms(counters.max_micros)
            } else {
                0.0
            },
            total_content_length: counters.content_bytes,
            response_times,
            per_second: entry
                .seconds
                .counts
                .iter()
                .map(|count| SecondCounts {
                    unix_second: self.unix_second(u64::from(count.second)),
                    requests: u64::from(count.requests),
                    failures: u64::from(count.failures),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{Sample, Stats};

    fn counts(series: &SecondSeries) -> Vec<(u32, u32, u32)> {
        series
            .counts
            .iter()
            .map(|count| (count.second, count.requests, count.failures))
            .collect()
    }

    #[test]
    fn a_series_merges_seconds_takes_stragglers_and_keeps_the_latest() {
        let mut series = SecondSeries::new(3);
        series.add(5, 2, 0);
        series.add(5, 1, 1);
        series.add(7, 4, 0);
        series.add(6, 1, 0); // a straggler of an earlier second
        series.add(8, 0, 0); // nothing happened: not kept
        assert_eq!(counts(&series), [(5, 3, 1), (6, 1, 0), (7, 4, 0)]);
        series.add(9, 1, 0);
        assert_eq!(counts(&series), [(6, 1, 0), (7, 4, 0), (9, 1, 0)]);
        series.add(2, 9, 9); // older than everything kept while full: dropped
        assert_eq!(counts(&series), [(6, 1, 0), (7, 4, 0), (9, 1, 0)]);
        let mut none = SecondSeries::new(0);
        none.add(1, 1, 1);
        assert!(none.counts.is_empty());
    }

    fn record(stats: &Stats, at: Instant, micros: u64, error: Option<&str>) {
        stats.record(&Sample {
            method: "GET",
            name: "/cart",
            response_time: Duration::from_micros(micros),
            content_length: 10,
            error,
            finished_at: at,
        });
    }

    #[test]
    fn details_have_the_distribution_and_the_seconds() {
        let stats = Stats::default();
        let start = Instant::now();
        record(&stats, start + Duration::from_millis(100), 1_250, None);
        record(
            &stats,
            start + Duration::from_millis(200),
            147_000,
            Some("HTTP 500"),
        );
        record(&stats, start + Duration::from_millis(2_100), 3_000, None);
        Stats::flush_current_thread();
        stats.collect_at(start + Duration::from_millis(3_000));

        let details = stats.entry_details();
        assert_eq!(details.len(), 1);
        let detail = &details[0];
        assert_eq!((detail.num_requests, detail.num_failures), (3, 1));
        assert_eq!(detail.total_response_ms, 151.25);
        assert_eq!((detail.min_ms, detail.max_ms), (Some(1.25), 147.0));
        assert_eq!(detail.total_content_length, 30);
        assert_eq!(detail.response_times.iter().map(|(_, n)| n).sum::<u64>(), 3);
        for (&(ms, _), exact) in detail.response_times.iter().zip([1.25, 3.0, 147.0]) {
            assert!(
                (ms - exact).abs() <= exact * 0.01,
                "{ms} is not within 1% of {exact}"
            );
            assert!((1.25..=147.0).contains(&ms), "{ms} lies outside [min, max]");
        }
        let seconds: Vec<(u64, u64)> = detail
            .per_second
            .iter()
            .map(|second| (second.requests, second.failures))
            .collect();
        assert_eq!(seconds, [(2, 1), (1, 0)]);
        assert_eq!(
            detail.per_second[1].unix_second - detail.per_second[0].unix_second,
            2
        );
        let snapshot = stats.snapshot();
        assert_eq!(
            detail.first_request_unix_ms / 1_000,
            snapshot.start_unix_ms / 1_000
        );
        assert_eq!(detail.last_request_unix_ms, snapshot.last_request_unix_ms);
        let failure = &snapshot.failures[0];
        assert_eq!(
            failure.first_seen_unix_secs,
            Some(detail.per_second[0].unix_second)
        );
        assert_eq!(failure.last_seen_unix_secs, failure.first_seen_unix_secs);
    }

    #[test]
    fn details_keep_the_latest_seconds_and_exact_counts() {
        let stats = Stats::new(StatsConfig {
            per_second_capacity: 2,
            ..StatsConfig::default()
        });
        let start = Instant::now();
        for second in 0..5 {
            record(
                &stats,
                start + Duration::from_millis(100 + 1_000 * second),
                1_000,
                None,
            );
            Stats::flush_current_thread();
            stats.collect_at(start + Duration::from_millis(500 + 1_000 * second));
        }
        let detail = &stats.entry_details()[0];
        assert_eq!(detail.num_requests, 5);
        assert_eq!(detail.per_second.len(), 2);
        assert_eq!(
            detail.per_second[1].unix_second - detail.per_second[0].unix_second,
            1
        );
    }
}
