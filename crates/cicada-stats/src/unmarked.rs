//! Statistics of the seconds the generator was *not* marked saturated: the seconds the caller
//! marked ([`Marks`], fed by [`crate::Stats::mark_saturated`]) and, per entry, the sums and
//! response times of every other second ([`UnmarkedSums`]), so that pass/fail checks can be
//! judged on what a healthy generator measured.
//!
//! A second is sorted when it leaves the aggregate's window ring (10 s after it ended, by
//! default): by then the guard has said whether it was saturated, so the sort is exact at the
//! granularity of a second. What is still in the ring is sorted when a snapshot is taken.
//! Samples that arrive too late for any second the aggregate still places (a worker's deltas
//! buffered for longer than the window while its master was away) cannot be sorted: they count
//! as unmarked, and [`UnmarkedSums::unsorted_requests`] says how many.
//!
//! Bounds: one [`UnmarkedSums`] (a histogram and six counters) per entry while
//! [`crate::StatsConfig::unmarked_stats`] is on, nothing when it is off; [`Marks`] keeps at most
//! [`MAX_MARKED_RANGES`] ranges of marked seconds (the oldest range is forgotten past that,
//! which only matters for such late samples; the count of marked seconds stays exact).

use std::collections::VecDeque;

use hdrhistogram::Histogram;

use crate::histogram::{Samples, new_histogram};

/// Ranges of marked seconds kept; past it the oldest is forgotten.
pub(crate) const MAX_MARKED_RANGES: usize = 10_000;

/// The seconds (since the generation's start) marked saturated, as merged inclusive ranges.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    ranges: VecDeque<(u64, u64)>,
    /// Distinct seconds ever marked in this generation, forgotten ranges included.
    marked_seconds: u64,
}

impl Marks {
    /// Marks the seconds `first..=last`.
    pub(crate) fn mark(&mut self, first: u64, last: u64) {
        if first > last {
            return;
        }
        // Marks arrive in time order (one per collector tick): the search from the back ends at
        // once.
        let index = self
            .ranges
            .iter()
            .rposition(|&(_, to)| to.saturating_add(1) < first)
            .map_or(0, |index| index + 1);
        self.merge_at(index, first, last);
        self.trim();
    }

    /// Merges `first..=last` into the ranges from `index` on, which end at or after `first - 1`.
    fn merge_at(&mut self, index: usize, mut first: u64, mut last: u64) {
        let mut already = 0;
        while let Some(&(from, to)) = self.ranges.get(index) {
            if from > last.saturating_add(1) {
                break;
            }
            already += to - from + 1;
            first = first.min(from);
            last = last.max(to);
            self.ranges.remove(index);
        }
        self.ranges.insert(index, (first, last));
        self.marked_seconds += (last - first + 1) - already;
    }

    fn trim(&mut self) {
        while self.ranges.len() > MAX_MARKED_RANGES {
            self.ranges.pop_front();
        }
    }

    /// Whether `second` was marked (false for a second older than every range kept).
    pub(crate) fn is_marked(&self, second: u64) -> bool {
        // Lookups are for recent seconds: search from the back.
        for &(from, to) in self.ranges.iter().rev() {
            if second > to {
                return false;
            }
            if second >= from {
                return true;
            }
        }
        false
    }

    /// Distinct seconds marked so far.
    #[cfg(test)]
    pub(crate) fn marked_seconds(&self) -> u64 {
        self.marked_seconds
    }

    /// Marked seconds in `0..end` (for the unmarked share of a run that ended at `end`).
    pub(crate) fn marked_before(&self, end: u64) -> u64 {
        let kept: u64 = self
            .ranges
            .iter()
            .map(|&(from, to)| overlap(from, to, 0, end.saturating_sub(1)))
            .sum();
        let kept_total: u64 = self.ranges.iter().map(|&(from, to)| to - from + 1).sum();
        // Forgotten ranges are older than every kept one, hence before `end` too.
        kept + (self.marked_seconds - kept_total)
    }
}

/// Seconds in both `a_from..=a_to` and `b_from..=b_to`.
fn overlap(a_from: u64, a_to: u64, b_from: u64, b_to: u64) -> u64 {
    let from = a_from.max(b_from);
    let to = a_to.min(b_to);
    if from > to { 0 } else { to - from + 1 }
}

/// One second's sums, as settled out of the window ring or passed by it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SecondSums {
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    pub(crate) response_micros_sum: u64,
    pub(crate) min_micros: u64,
    pub(crate) max_micros: u64,
}

/// Sums and response times of one entry's unmarked seconds.
#[derive(Debug)]
pub(crate) struct UnmarkedSums {
    pub(crate) histogram: Histogram<u64>,
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    pub(crate) response_micros_sum: u64,
    pub(crate) min_micros: u64,
    pub(crate) max_micros: u64,
    /// Requests of seconds excluded because they were marked.
    pub(crate) excluded_requests: u64,
    /// Requests counted as unmarked because their second could no longer be told.
    pub(crate) unsorted_requests: u64,
}

impl Default for UnmarkedSums {
    fn default() -> Self {
        UnmarkedSums {
            histogram: new_histogram(),
            requests: 0,
            failures: 0,
            response_micros_sum: 0,
            min_micros: u64::MAX,
            max_micros: 0,
            excluded_requests: 0,
            unsorted_requests: 0,
        }
    }
}

impl UnmarkedSums {
    pub(crate) fn add(&mut self, sums: SecondSums, samples: Option<Samples<'_>>) {
        self.requests = self.requests.saturating_add(sums.requests);
        self.failures = self.failures.saturating_add(sums.failures);
        self.response_micros_sum = self
            .response_micros_sum
            .saturating_add(sums.response_micros_sum);
        self.min_micros = self.min_micros.min(sums.min_micros);
        self.max_micros = self.max_micros.max(sums.max_micros);
        if let Some(samples) = samples {
            samples.add_to(&mut self.histogram);
        }
    }

    /// These sums with `extra` seconds added (the unmarked seconds still in the window, for a snapshot).
    pub(crate) fn merged_with(&self, extra: &[(SecondSums, &Histogram<u64>)]) -> UnmarkedSums {
        let mut merged = UnmarkedSums {
            histogram: self.histogram.clone(),
            ..*self
        };
        for &(sums, histogram) in extra {
            merged.add(sums, Some(Samples::Dense(histogram)));
        }
        merged
    }
}

/// Where a second's samples go when they leave the window ring (or never enter it): always
/// into the entry's all-time histogram, and, when unmarked statistics are kept, into the
/// unmarked sums unless the second was marked.
pub(crate) struct Settle<'a> {
    pub(crate) all: &'a mut Histogram<u64>,
    pub(crate) unmarked: Option<(&'a mut UnmarkedSums, &'a Marks)>,
}

impl Settle<'_> {
    /// Settles one second of samples.
    pub(crate) fn second(&mut self, second: u64, sums: SecondSums, samples: Option<Samples<'_>>) {
        if let Some(samples) = samples {
            samples.add_to(self.all);
        }
        if let Some((unmarked, marks)) = &mut self.unmarked {
            if marks.is_marked(second) {
                unmarked.excluded_requests =
                    unmarked.excluded_requests.saturating_add(sums.requests);
            } else {
                unmarked.add(sums, samples);
            }
        }
    }

    /// Settles samples whose second is unknown (they count as unmarked).
    pub(crate) fn unsorted(&mut self, samples: Samples<'_>, sums: SecondSums) {
        samples.add_to(self.all);
        if let Some((unmarked, _)) = &mut self.unmarked {
            unmarked.unsorted_requests = unmarked.unsorted_requests.saturating_add(sums.requests);
            unmarked.add(sums, Some(samples));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_merge_and_count_each_second_once() {
        let mut marks = Marks::default();
        marks.mark(3, 4);
        marks.mark(4, 6);
        marks.mark(10, 10);
        marks.mark(7, 7); // joins 3..=6 and is out of order before 10
        assert_eq!(marks.marked_seconds(), 6);
        for second in [3, 4, 5, 6, 7, 10] {
            assert!(marks.is_marked(second), "{second}");
        }
        for second in [0, 2, 8, 9, 11] {
            assert!(!marks.is_marked(second), "{second}");
        }
        assert_eq!(marks.marked_before(6), 3);
        assert_eq!(marks.marked_before(100), 6);
        marks.mark(0, 20);
        assert_eq!(marks.marked_seconds(), 21);
        assert_eq!(marks.ranges.len(), 1);
    }

    #[test]
    fn marks_are_bounded_and_keep_their_count() {
        let mut marks = Marks::default();
        for range in 0..(MAX_MARKED_RANGES as u64 + 5) {
            marks.mark(range * 2, range * 2);
        }
        assert_eq!(marks.ranges.len(), MAX_MARKED_RANGES);
        assert_eq!(marks.marked_seconds(), MAX_MARKED_RANGES as u64 + 5);
        assert_eq!(marks.marked_before(u64::MAX), MAX_MARKED_RANGES as u64 + 5);
        // The forgotten oldest seconds read as unmarked; recent ones are still known.
        assert!(!marks.is_marked(0));
        assert!(marks.is_marked((MAX_MARKED_RANGES as u64 + 4) * 2));
    }
}
