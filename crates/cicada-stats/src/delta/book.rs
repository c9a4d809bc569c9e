//! The delta book: what the aggregate applied since the latest take, kept by global entry and
//! failure id, and turned into a named [`DeltaEntry`] list when taken. It lives inside the
//! aggregate (behind its mutex) once delta tracking is on; user errors and cut-off requests are
//! not copied into it: it remembers how much of their counters was already taken.
//!
//! Bounds (per book, i.e. between two takes): entries and failure groups are those of the
//! registries (`max_names + 1`, `max_errors`); per entry at most
//! `max(per_second_capacity, window_secs + 2)` seconds, the newest `window_secs + 2` of them
//! with a histogram, plus one histogram for the rest. A second past the first bound is dropped
//! oldest first (its counts stay in the entry's totals); the histogram of a second past the
//! second bound is folded into the rest.

use std::collections::VecDeque;

use hdrhistogram::Histogram;

use super::{DeltaEntry, DeltaFailure, DeltaSecond, DeltaUserError, SecondWindow, SparseHistogram};
use crate::aggregate::{EntryUpdate, SecondPart, TimeBase};
use crate::histogram::{Samples, new_histogram};
use crate::keys::{CappedRegistry, FailureKey, PairKey};
use crate::shard::{EntryCounters, OVERFLOW_ENTRY_ID};
use crate::user_errors::UserErrorTable;
use crate::{OVERFLOW_NAME, StatsConfig};

/// One second of a book entry.
#[derive(Debug)]
struct BookSecond {
    second: u64,
    requests: u64,
    failures: u64,
    response_micros_sum: u64,
    min_micros: u64,
    max_micros: u64,
    /// `None`: the second's response times are in the entry's `earlier` histogram (too old for
    /// a window, or one of its parts came without samples).
    histogram: Option<Histogram<u64>>,
}

/// What one entry gained since the latest take.
#[derive(Debug)]
struct BookEntry {
    counters: EntryCounters,
    first_second: u64,
    earlier: Option<Histogram<u64>>,
    /// Ascending by second.
    seconds: VecDeque<BookSecond>,
}

impl BookEntry {
    fn new(first_second: u64) -> Self {
        BookEntry {
            counters: EntryCounters::default(),
            first_second,
            earlier: None,
            seconds: VecDeque::new(),
        }
    }

    fn add_earlier(&mut self, samples: Samples<'_>) {
        samples.add_to(self.earlier.get_or_insert_with(new_histogram));
    }

    /// Adds one second, keeping at most `seconds_cap` seconds and histograms only on the
    /// newest `window_seconds`.
    fn add_second(&mut self, part: &SecondPart<'_>, window_seconds: usize, seconds_cap: usize) {
        let position = self
            .seconds
            .partition_point(|second| second.second < part.second);
        let found = self
            .seconds
            .get(position)
            .is_some_and(|second| second.second == part.second);
        if !found {
            self.seconds.insert(
                position,
                BookSecond {
                    second: part.second,
                    requests: 0,
                    failures: 0,
                    response_micros_sum: 0,
                    min_micros: u64::MAX,
                    max_micros: 0,
                    histogram: None,
                },
            );
        }
        // Seconds before this index keep no histogram.
        let windowless = self.seconds.len().saturating_sub(window_seconds);
        let record = &mut self.seconds[position];
        record.requests = record.requests.saturating_add(part.requests);
        record.failures = record.failures.saturating_add(part.failures);
        record.response_micros_sum = record
            .response_micros_sum
            .saturating_add(part.response_micros_sum);
        record.min_micros = record.min_micros.min(part.min_micros);
        record.max_micros = record.max_micros.max(part.max_micros);
        let mut to_earlier = None;
        match part.samples {
            Some(samples) if !found && position >= windowless => {
                samples.add_to(record.histogram.insert(new_histogram()));
            }
            Some(samples) if record.histogram.is_some() => {
                samples.add_to(record.histogram.as_mut().expect("checked above"));
            }
            Some(samples) => to_earlier = Some(samples),
            // A part without samples makes the whole second windowless.
            None => {
                if let Some(histogram) = record.histogram.take() {
                    self.fold_into_earlier(histogram);
                }
            }
        }
        if let Some(samples) = to_earlier {
            self.add_earlier(samples);
        }
        // The insertion may have pushed one older second out of the newest `window_seconds`;
        // all before it were already windowless.
        for index in (0..windowless).rev() {
            match self.seconds[index].histogram.take() {
                Some(histogram) => self.fold_into_earlier(histogram),
                None => break,
            }
        }
        while self.seconds.len() > seconds_cap {
            if let Some(oldest) = self.seconds.pop_front()
                && let Some(histogram) = oldest.histogram
            {
                self.fold_into_earlier(histogram);
            }
        }
    }

    fn fold_into_earlier(&mut self, histogram: Histogram<u64>) {
        match &mut self.earlier {
            Some(earlier) => Samples::Dense(&histogram).add_to(earlier),
            None => self.earlier = Some(histogram),
        }
    }
}

/// What one failure group gained since the latest take.
#[derive(Clone, Copy, Debug)]
struct BookFailure {
    occurrences: u64,
    first_second: u64,
    last_second: u64,
}

/// Everything applied to an aggregate since the latest take (see the module documentation).
#[derive(Debug)]
pub(crate) struct DeltaBook {
    /// Indexed by global entry id.
    entries: Vec<Option<BookEntry>>,
    /// Ids with `Some` in `entries`.
    touched_entries: Vec<u32>,
    /// Indexed by global failure id.
    failures: Vec<Option<BookFailure>>,
    touched_failures: Vec<u32>,
    /// Count of each user-error group (by its index in the table) already taken.
    user_errors_taken: Vec<u64>,
    user_errors_over_cap_taken: u64,
    cut_off_taken: u64,
    /// Newest seconds per entry that keep their histogram: the current window's seconds.
    window_seconds: usize,
    /// Seconds per entry kept at all.
    seconds_cap: usize,
}

impl DeltaBook {
    pub(crate) fn new(config: &StatsConfig) -> Self {
        // As the aggregate's window ring: the window, the second in progress and one more.
        let window_seconds = usize::try_from(config.window_secs())
            .unwrap_or(usize::MAX)
            .saturating_add(2);
        DeltaBook {
            entries: Vec::new(),
            touched_entries: Vec::new(),
            failures: Vec::new(),
            touched_failures: Vec::new(),
            user_errors_taken: Vec::new(),
            user_errors_over_cap_taken: 0,
            cut_off_taken: 0,
            window_seconds,
            seconds_cap: config.per_second_capacity.max(window_seconds),
        }
    }

    fn entry(&mut self, entry_id: u32, first_second: u64) -> &mut BookEntry {
        let id = entry_id as usize;
        if self.entries.len() <= id {
            self.entries.resize_with(id + 1, || None);
        }
        let slot = &mut self.entries[id];
        if slot.is_none() {
            self.touched_entries.push(entry_id);
        }
        slot.get_or_insert_with(|| BookEntry::new(first_second))
    }

    /// Records an update of entry `entry_id`, as the aggregate applied it.
    pub(crate) fn add_entry(&mut self, entry_id: u32, update: &EntryUpdate<'_>) {
        let (window_seconds, seconds_cap) = (self.window_seconds, self.seconds_cap);
        let entry = self.entry(entry_id, update.first_second);
        entry.counters.merge(&update.counters);
        entry.first_second = entry.first_second.min(update.first_second);
        if let Some(earlier) = update.earlier {
            entry.add_earlier(earlier);
        }
        for part in update.seconds {
            entry.add_second(part, window_seconds, seconds_cap);
        }
    }

    /// Seeds the book with an entry merged before tracking started: its totals, its
    /// per-second counts (without windows) and all its response times as `earlier`.
    pub(crate) fn seed_entry(
        &mut self,
        entry_id: u32,
        counters: EntryCounters,
        first_second: u64,
        histogram: &Histogram<u64>,
        seconds: impl Iterator<Item = (u64, u64, u64)>,
    ) {
        let (window_seconds, seconds_cap) = (self.window_seconds, self.seconds_cap);
        let entry = self.entry(entry_id, first_second);
        entry.counters.merge(&counters);
        entry.add_earlier(Samples::Dense(histogram));
        for (second, requests, failures) in seconds {
            let part = SecondPart {
                second,
                requests,
                failures,
                response_micros_sum: 0,
                min_micros: u64::MAX,
                max_micros: 0,
                samples: None,
            };
            entry.add_second(&part, window_seconds, seconds_cap);
        }
    }

    /// Records `occurrences` failures of group `failure_id`.
    pub(crate) fn add_failure(
        &mut self,
        failure_id: u32,
        occurrences: u64,
        first_second: u64,
        last_second: u64,
    ) {
        let id = failure_id as usize;
        if self.failures.len() <= id {
            self.failures.resize_with(id + 1, || None);
        }
        let slot = &mut self.failures[id];
        match slot {
            Some(failure) => {
                failure.occurrences = failure.occurrences.saturating_add(occurrences);
                failure.first_second = failure.first_second.min(first_second);
                failure.last_second = failure.last_second.max(last_second);
            }
            None => {
                *slot = Some(BookFailure {
                    occurrences,
                    first_second,
                    last_second,
                });
                self.touched_failures.push(failure_id);
            }
        }
    }

    /// The entries (by ascending id, each with its failure groups) as named delta entries,
    /// with seconds and instants on Unix time; leaves the book without entries or failures.
    pub(crate) fn take_entries(
        &mut self,
        names: &CappedRegistry<PairKey>,
        failure_groups: &CappedRegistry<FailureKey>,
        time: TimeBase,
    ) -> Vec<DeltaEntry> {
        self.touched_entries.sort_unstable();
        let mut position_of_id = vec![None; self.entries.len()];
        let mut entries = Vec::with_capacity(self.touched_entries.len());
        for &entry_id in &self.touched_entries {
            let Some(entry) = self.entries[entry_id as usize].take() else {
                continue;
            };
            position_of_id[entry_id as usize] = Some(entries.len());
            entries.push(Self::named_entry(entry_id, entry, names, time));
        }
        self.touched_entries.clear();

        self.touched_failures.sort_unstable();
        for &failure_id in &self.touched_failures {
            let Some(failure) = self.failures[failure_id as usize].take() else {
                continue;
            };
            let Some(key) = failure_groups.key(failure_id) else {
                continue;
            };
            let position = match position_of_id.get(key.entry as usize).copied().flatten() {
                Some(position) => position,
                // A failure comes with its request, so its entry is here; should it not be,
                // the group still travels, under an entry without requests.
                None => {
                    if position_of_id.len() <= key.entry as usize {
                        position_of_id.resize(key.entry as usize + 1, None);
                    }
                    position_of_id[key.entry as usize] = Some(entries.len());
                    let mut empty = BookEntry::new(failure.first_second);
                    empty.counters.min_micros = u64::MAX;
                    entries.push(Self::named_entry(key.entry, empty, names, time));
                    entries.len() - 1
                }
            };
            entries[position].failure_groups.push(DeltaFailure {
                error: key.error.to_string(),
                occurrences: failure.occurrences,
                first_unix_second: time.unix_second(failure.first_second),
                last_unix_second: time.unix_second(failure.last_second),
            });
        }
        self.touched_failures.clear();
        entries
    }

    fn named_entry(
        entry_id: u32,
        entry: BookEntry,
        names: &CappedRegistry<PairKey>,
        time: TimeBase,
    ) -> DeltaEntry {
        let over_name_cap = entry_id == OVERFLOW_ENTRY_ID;
        let (method, name) = if over_name_cap {
            ("", OVERFLOW_NAME)
        } else {
            names
                .key(entry_id)
                .map_or(("", "(unknown)"), |key| (&*key.first, &*key.second))
        };
        let counters = entry.counters;
        DeltaEntry {
            method: method.to_owned(),
            name: name.to_owned(),
            over_name_cap,
            requests: counters.requests,
            failures: counters.failures,
            failures_over_cap: counters.failures_over_cap,
            response_micros_sum: counters.response_micros_sum,
            min_micros: counters.min_micros,
            max_micros: counters.max_micros,
            content_bytes: counters.content_bytes,
            first_unix_second: time.unix_second(entry.first_second),
            last_finished_unix_nanos: counters
                .last_finished_at
                .map(|instant| time.unix_nanos(instant)),
            earlier: entry
                .earlier
                .as_ref()
                .map_or_else(SparseHistogram::default, SparseHistogram::from_histogram),
            seconds: entry
                .seconds
                .iter()
                .map(|second| DeltaSecond {
                    unix_second: time.unix_second(second.second),
                    requests: second.requests,
                    failures: second.failures,
                    window: second.histogram.as_ref().map(|histogram| SecondWindow {
                        response_micros_sum: second.response_micros_sum,
                        min_micros: second.min_micros,
                        max_micros: second.max_micros,
                        histogram: SparseHistogram::from_histogram(histogram),
                    }),
                })
                .collect(),
            failure_groups: Vec::new(),
        }
    }

    /// The growth of each user-error group (and of the groups past the cap) since the latest
    /// take.
    pub(crate) fn take_user_errors(
        &mut self,
        table: &UserErrorTable,
    ) -> (Vec<DeltaUserError>, u64) {
        let groups = table.groups();
        if self.user_errors_taken.len() > groups.len() {
            // The table was cleared without the book (cannot happen: both reset together).
            self.user_errors_taken.clear();
        }
        self.user_errors_taken.resize(groups.len(), 0);
        let mut user_errors = Vec::new();
        for (group, taken) in groups.iter().zip(&mut self.user_errors_taken) {
            let count = group.count.saturating_sub(*taken);
            if count > 0 {
                user_errors.push(DeltaUserError {
                    message: group.message.clone(),
                    location: group.traceback.clone(),
                    user_type: group.user_type.clone(),
                    count,
                });
                *taken = group.count;
            }
        }
        let over_cap = table
            .over_cap()
            .saturating_sub(self.user_errors_over_cap_taken);
        self.user_errors_over_cap_taken = table.over_cap();
        (user_errors, over_cap)
    }

    /// Requests cut off since the latest take, given the counter's current value.
    pub(crate) fn take_cut_off(&mut self, cut_off: u64) -> u64 {
        let new = cut_off.saturating_sub(self.cut_off_taken);
        self.cut_off_taken = cut_off;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(second: u64, histogram: Option<&Histogram<u64>>) -> SecondPart<'_> {
        SecondPart {
            second,
            requests: 1,
            failures: 0,
            response_micros_sum: 10,
            min_micros: 10,
            max_micros: 10,
            samples: histogram.map(Samples::Dense),
        }
    }

    fn seconds(entry: &BookEntry) -> Vec<(u64, bool)> {
        entry
            .seconds
            .iter()
            .map(|second| (second.second, second.histogram.is_some()))
            .collect()
    }

    #[test]
    fn only_the_newest_seconds_keep_histograms_and_the_oldest_are_dropped() {
        let mut histogram = new_histogram();
        histogram.record(10).unwrap();
        let mut entry = BookEntry::new(0);
        // Window of 3 seconds with histograms, 5 seconds at most.
        for second in [4, 2, 6, 3, 9, 8, 1] {
            entry.add_second(&part(second, Some(&histogram)), 3, 5);
        }
        assert_eq!(
            seconds(&entry),
            [(3, false), (4, false), (6, true), (8, true), (9, true)]
        );
        // Samples that left the window, and the dropped seconds', are in `earlier`.
        let earlier = entry.earlier.as_ref().unwrap().len();
        assert_eq!(earlier, 4);
        // A straggler of a windowless second stays windowless.
        entry.add_second(&part(4, Some(&histogram)), 3, 5);
        assert_eq!(entry.earlier.as_ref().unwrap().len(), 5);
        // A part without samples makes its second windowless.
        entry.add_second(&part(8, None), 3, 5);
        assert_eq!(
            seconds(&entry),
            [(3, false), (4, false), (6, true), (8, false), (9, true)]
        );
        assert_eq!(entry.earlier.as_ref().unwrap().len(), 6);
        let requests: u64 = entry.seconds.iter().map(|second| second.requests).sum();
        assert_eq!(requests, 1 + 2 + 1 + 2 + 1);
    }
}
