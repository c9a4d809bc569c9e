//! Histogram conventions shared by shards, the aggregate and statistics deltas: how a response
//! time becomes a recorded value (microseconds, clamped), how histograms are created, how a
//! value maps to its bucket index (the deltas' sparse form), and how quantiles are read back in
//! milliseconds.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::PERCENTILES;
use crate::delta::SparseHistogram;

/// Histograms keep 2 significant digits: any reported quantile is within 1% of the exact one.
const SIGNIFICANT_DIGITS: u8 = 2;

/// Longest response time recorded as is (2^40 µs, about 12.7 days); longer ones are clamped
/// to it so that an auto-resizing histogram never grows past a known size.
pub const MAX_RESPONSE_TIME: Duration = Duration::from_micros(MAX_RECORDED_MICROS);

pub(crate) const MAX_RECORDED_MICROS: u64 = 1 << 40;

/// Bucket layout of a histogram with [`SIGNIFICANT_DIGITS`] = 2 and a lowest discernible value
/// of 1: 256 sub-buckets per bucket (the smallest power of two above 2 × 10²), of which the
/// upper 128 are used past the first bucket. [`bucket_index`] and [`bucket_value`] reproduce
/// hdrhistogram's own index arithmetic (its index functions are private); a unit test checks
/// them against the library for every bucket.
const SUB_BUCKET_HALF_MAGNITUDE: u32 = 7;
const _: () = assert!(
    SIGNIFICANT_DIGITS == 2,
    "the bucket layout below (and the delta wire format) assume 2 significant digits"
);
const SUB_BUCKET_HALF: u64 = 1 << SUB_BUCKET_HALF_MAGNITUDE;
const SUB_BUCKET_MASK: u64 = (SUB_BUCKET_HALF << 1) - 1;
/// `64 - log2(sub-bucket count)`: the leading zeros of the largest value of bucket 0.
const LEADING_ZERO_BASE: u32 = 64 - (SUB_BUCKET_HALF_MAGNITUDE + 1);

/// Index of the bucket holding `micros` (the position in hdrhistogram's counts array).
#[inline]
pub(crate) fn bucket_index(micros: u64) -> u32 {
    let bucket = LEADING_ZERO_BASE - (micros | SUB_BUCKET_MASK).leading_zeros();
    let sub_bucket = micros >> bucket;
    // At most 34 × 128 for the largest recorded value: fits in u32.
    (((u64::from(bucket) + 1) << SUB_BUCKET_HALF_MAGNITUDE) + sub_bucket - SUB_BUCKET_HALF) as u32
}

/// Lowest value of the bucket at `index` (recording it counts in that bucket).
#[inline]
pub(crate) fn bucket_value(index: u32) -> u64 {
    let index = u64::from(index);
    let bucket = index >> SUB_BUCKET_HALF_MAGNITUDE;
    let sub_bucket = (index & (SUB_BUCKET_HALF - 1)) + SUB_BUCKET_HALF;
    match bucket.checked_sub(1) {
        // The lower half of the first bucket: values below 128, one per index.
        None => sub_bucket - SUB_BUCKET_HALF,
        Some(bucket) => sub_bucket << bucket.min(63),
    }
}

/// Index of the bucket of the largest recorded value: no valid sparse histogram goes past it.
pub(crate) fn max_bucket_index() -> u32 {
    bucket_index(MAX_RECORDED_MICROS)
}

/// Samples to add to a histogram: another histogram, the sparse form a delta carries, or a few values.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Samples<'a> {
    /// A histogram of this process.
    Dense(&'a Histogram<u64>),
    /// Buckets received in a delta.
    Sparse(&'a SparseHistogram),
    /// Recorded values (microseconds, already clamped by [`to_micros`]), each counted once.
    Values(&'a [u64]),
}

impl Samples<'_> {
    /// Adds the samples to `target`, exactly (bucket by bucket).
    pub(crate) fn add_to(self, target: &mut Histogram<u64>) {
        match self {
            Samples::Dense(source) => add(target, source),
            Samples::Sparse(source) => source.add_to(target),
            Samples::Values(values) => {
                for &micros in values {
                    record(target, micros);
                }
            }
        }
    }
}

/// Values a batch of one entry carries as they are, before it needs a histogram. Flat out, a runtime thread still
/// parks (and flushes) every 15 to 20 requests; recording 32 values one by one costs less than adding and zeroing
/// a histogram.
pub(crate) const FEW_SAMPLES: usize = 32;
const _: () = assert!(FEW_SAMPLES <= u8::MAX as usize, "FewValues counts in a u8");

/// Up to [`FEW_SAMPLES`] recorded values (microseconds).
///
/// A thread that parks between requests, as at realistic pacing, flushes after almost every one. Handing over a
/// whole histogram for one or two samples cost an add over every bucket and a zeroing of its counts array (about
/// 11 KiB each for times up to 50 ms) at each step between the shard and the aggregate: over 5,000 instructions
/// and tens of KiB of cache traffic per request. A batch with few samples carries the values instead.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FewValues {
    values: [u64; FEW_SAMPLES],
    len: u8,
}

impl FewValues {
    /// Adds `micros`; `false` (and nothing added) when already full.
    #[inline]
    pub(crate) fn push(&mut self, micros: u64) -> bool {
        match self.values.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = micros;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Adds all of `other`; `false` (and nothing added) when they do not fit.
    pub(crate) fn extend(&mut self, other: &FewValues) -> bool {
        let (len, other_len) = (usize::from(self.len), usize::from(other.len));
        if len + other_len > FEW_SAMPLES {
            return false;
        }
        self.values[len..len + other_len].copy_from_slice(other.as_slice());
        self.len += other.len;
        true
    }

    pub(crate) fn as_slice(&self) -> &[u64] {
        &self.values[..usize::from(self.len)]
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }
}

/// An empty auto-resizing microsecond histogram.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // 2 significant digits with auto-resize is a valid configuration; failure would be a bug
    // in the constant above, not a runtime condition.
    Histogram::new(SIGNIFICANT_DIGITS).expect("valid histogram configuration")
}

/// The value recorded for `response_time`.
#[inline]
pub(crate) fn to_micros(response_time: Duration) -> u64 {
    // u64 arithmetic: `as_micros` would go through u128 on the hot path.
    response_time
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(response_time.subsec_micros()))
        .min(MAX_RECORDED_MICROS)
}

/// Records `micros` (already clamped by [`to_micros`]).
#[inline]
pub(crate) fn record(histogram: &mut Histogram<u64>, micros: u64) {
    // Cannot fail: auto-resize is on and the value is clamped far below the resize limit.
    let _ = histogram.record(micros);
}

/// Adds `source` into `target`; exact (bucket by bucket).
pub(crate) fn add(target: &mut Histogram<u64>, source: &Histogram<u64>) {
    // Cannot fail: both sides auto-resize and hold clamped values; counts saturate.
    let _ = target.add(source);
}

/// Microseconds to fractional milliseconds.
#[inline]
pub(crate) fn micros_to_ms(micros: u64) -> f64 {
    micros as f64 / 1_000.0
}

/// `(quantile, ms)` for each of [`PERCENTILES`], or an empty list for an empty histogram.
///
/// Values are clamped into `[min_micros, max_micros]`, the exact extremes tracked beside the
/// histogram: a bucket's upper bound may exceed the real maximum by up to 1%, and the 100th
/// percentile should print the same number as the max column (Locust clamps its median the
/// same way).
pub(crate) fn percentiles_ms(
    histogram: &Histogram<u64>,
    min_micros: u64,
    max_micros: u64,
) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let (low, high) = if min_micros <= max_micros {
        (min_micros, max_micros)
    } else {
        (histogram.min(), histogram.max())
    };
    histogram
        .value_at_quantiles(PERCENTILES)
        .zip(PERCENTILES)
        .map(|(micros, quantile)| (quantile, micros_to_ms(micros.clamp(low, high))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_values_hold_up_to_their_bound() {
        let mut few = FewValues::default();
        for micros in 0..FEW_SAMPLES as u64 {
            assert!(few.push(micros));
        }
        assert!(!few.push(99), "full");
        assert_eq!(few.as_slice().len(), FEW_SAMPLES);
        let mut other = FewValues::default();
        assert!(other.push(7));
        assert!(!few.extend(&other), "would overflow");
        assert_eq!(few.as_slice().len(), FEW_SAMPLES, "unchanged");
        few.clear();
        assert!(few.extend(&other));
        assert_eq!(few.as_slice(), &[7]);
        let mut histogram = new_histogram();
        Samples::Values(&[10, 10, 2_000]).add_to(&mut histogram);
        assert_eq!(histogram.len(), 3);
        assert_eq!(histogram.count_at(10), 2);
    }

    #[test]
    fn clamps_huge_response_times() {
        assert_eq!(
            to_micros(Duration::from_secs(u64::MAX)),
            MAX_RECORDED_MICROS
        );
        assert_eq!(to_micros(Duration::from_nanos(1_999)), 1);
        let mut histogram = new_histogram();
        record(&mut histogram, to_micros(Duration::MAX));
        assert_eq!(histogram.len(), 1);
    }

    #[test]
    fn bucket_arithmetic_matches_the_library() {
        let histogram = new_histogram();
        for index in 0..=max_bucket_index() {
            let value = bucket_value(index);
            assert_eq!(bucket_index(value), index, "value {value}");
            assert_eq!(histogram.lowest_equivalent(value), value, "index {index}");
            let highest = histogram.highest_equivalent(value);
            assert_eq!(bucket_index(highest), index, "highest {highest}");
        }
        let mut value = 0;
        while value <= MAX_RECORDED_MICROS {
            assert_eq!(
                bucket_value(bucket_index(value)),
                histogram.lowest_equivalent(value),
                "value {value}"
            );
            value = value * 9 / 8 + 1;
        }
        assert_eq!(max_bucket_index(), 34 * 128);
    }

    #[test]
    fn percentiles_of_empty_histogram_are_empty() {
        assert!(percentiles_ms(&new_histogram(), 0, 0).is_empty());
    }

    #[test]
    fn percentiles_are_clamped_to_exact_extremes() {
        let mut histogram = new_histogram();
        for micros in [1_001, 1_002, 1_003] {
            record(&mut histogram, micros);
        }
        let values = percentiles_ms(&histogram, 1_001, 1_003);
        assert_eq!(values.len(), PERCENTILES.len());
        assert_eq!(values.last(), Some(&(1.0, 1.003)));
        assert!(values.iter().all(|&(_, ms)| (1.001..=1.003).contains(&ms)));
    }
}
