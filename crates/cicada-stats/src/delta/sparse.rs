//! The sparse form of a response-time histogram that a [`StatsDelta`](crate::StatsDelta)
//! carries: the non-empty buckets as `(bucket index, count)`, ascending.
//!
//! On the wire it is one byte string of LEB128 varints, one token per non-empty bucket: a
//! bucket right after the previous one is `count << 1` (one byte for a count below 64); a
//! bucket after a run of empty ones is `gap << 1 | 1` followed by the count. A dense histogram
//! (a busy second) thus costs one or two bytes a bucket, a sparse one about two; this is
//! hdrhistogram's V2 encoding without its 40-byte header. The bytes are decoded and checked when
//! the delta is deserialised, so merging a received delta cannot fail halfway.

use std::fmt;

use hdrhistogram::Histogram;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::histogram::{bucket_index, bucket_value, max_bucket_index};

/// Non-empty buckets of a histogram, ascending by index, every count above zero.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SparseHistogram {
    buckets: Vec<(u32, u64)>,
}

/// Why bytes are not a sparse histogram.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SparseError {
    #[error("a varint is cut short or longer than 64 bits")]
    BadVarint,
    #[error("bucket index {0} is past the largest recordable response time")]
    IndexOutOfRange(u64),
    #[error("a bucket has a count of zero")]
    ZeroCount,
}

impl SparseHistogram {
    /// The non-empty buckets of `histogram`.
    pub(crate) fn from_histogram(histogram: &Histogram<u64>) -> Self {
        let mut buckets = Vec::new();
        if !histogram.is_empty() {
            buckets.extend(histogram.iter_recorded().map(|bucket| {
                (
                    bucket_index(bucket.value_iterated_to()),
                    bucket.count_at_value(),
                )
            }));
        }
        SparseHistogram { buckets }
    }

    /// Adds every bucket to `target` (exactly: each count lands in the same bucket).
    pub(crate) fn add_to(&self, target: &mut Histogram<u64>) {
        for &(index, count) in &self.buckets {
            // Cannot fail: the index was checked against the largest recordable value and
            // the target auto-resizes; counts saturate.
            let _ = target.record_n(bucket_value(index), count);
        }
    }

    /// Whether no bucket holds a sample.
    pub(crate) fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Samples held (saturating).
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0u64, |sum, &(_, count)| sum.saturating_add(count))
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.buckets.len() * 3);
        let mut next_index = 0u64;
        for &(index, count) in &self.buckets {
            let index = u64::from(index);
            let gap = index - next_index;
            if gap == 0 && count < 1 << 63 {
                write_varint(&mut bytes, count << 1);
            } else {
                // The gap is below the largest bucket index: the shift cannot overflow.
                write_varint(&mut bytes, gap << 1 | 1);
                write_varint(&mut bytes, count);
            }
            next_index = index + 1;
        }
        bytes
    }

    fn decode(mut bytes: &[u8]) -> Result<Self, SparseError> {
        let max_index = u64::from(max_bucket_index());
        let mut buckets = Vec::new();
        let mut next_index = 0u64;
        while !bytes.is_empty() {
            let token = read_varint(&mut bytes)?;
            let (gap, count) = if token & 1 == 0 {
                (0, token >> 1)
            } else {
                (token >> 1, read_varint(&mut bytes)?)
            };
            let index = next_index
                .checked_add(gap)
                .filter(|&index| index <= max_index)
                .ok_or(SparseError::IndexOutOfRange(next_index.saturating_add(gap)))?;
            if count == 0 {
                return Err(SparseError::ZeroCount);
            }
            // `index <= max_index`, which fits in u32.
            buckets.push((index as u32, count));
            next_index = index + 1;
        }
        Ok(SparseHistogram { buckets })
    }
}

fn write_varint(bytes: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        bytes.push((value as u8) | 0x80);
        value >>= 7;
    }
    bytes.push(value as u8);
}

fn read_varint(bytes: &mut &[u8]) -> Result<u64, SparseError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or(SparseError::BadVarint)?;
        *bytes = rest;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(SparseError::BadVarint);
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(SparseError::BadVarint)
}

impl Serialize for SparseHistogram {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for SparseHistogram {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;

        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = SparseHistogram;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("the bytes of a sparse histogram")
            }

            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Self::Value, E> {
                SparseHistogram::decode(bytes).map_err(E::custom)
            }

            // Formats without a byte-string type (JSON) write a sequence of numbers.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                SparseHistogram::decode(&bytes).map_err(de::Error::custom)
            }
        }

        deserializer.deserialize_bytes(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::{MAX_RECORDED_MICROS, new_histogram, record};

    fn recorded(histogram: &Histogram<u64>) -> Vec<(u64, u64)> {
        histogram
            .iter_recorded()
            .map(|bucket| (bucket.value_iterated_to(), bucket.count_at_value()))
            .collect()
    }

    #[test]
    fn round_trips_through_bytes_and_into_a_histogram() {
        let mut histogram = new_histogram();
        for micros in [
            0, 1, 127, 128, 255, 256, 999, 1_000, 1_001, 45_678, 3_000_000,
        ] {
            record(&mut histogram, micros);
        }
        let _ = histogram.record_n(1_000, 1_000_000);
        let _ = histogram.record_n(2_000, u64::MAX / 2);
        record(&mut histogram, MAX_RECORDED_MICROS);
        for micros in 300..900 {
            record(&mut histogram, micros);
        }
        let sparse = SparseHistogram::from_histogram(&histogram);
        assert_eq!(sparse.len(), histogram.len());
        let decoded = SparseHistogram::decode(&sparse.encode()).unwrap();
        assert_eq!(decoded, sparse);
        let mut rebuilt = new_histogram();
        decoded.add_to(&mut rebuilt);
        assert_eq!(recorded(&rebuilt), recorded(&histogram));
        assert_eq!(rebuilt.max(), histogram.max());
        assert_eq!(rebuilt.min(), histogram.min());

        let json = serde_json::to_string(&sparse).unwrap();
        let back: SparseHistogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sparse);
        assert!(SparseHistogram::from_histogram(&new_histogram()).is_empty());
    }

    #[test]
    fn rejects_malformed_bytes() {
        assert_eq!(
            SparseHistogram::decode(&[0x80]),
            Err(SparseError::BadVarint)
        );
        assert_eq!(SparseHistogram::decode(&[3]), Err(SparseError::BadVarint));
        assert_eq!(
            SparseHistogram::decode(&[3, 0]),
            Err(SparseError::ZeroCount)
        );
        assert_eq!(SparseHistogram::decode(&[0]), Err(SparseError::ZeroCount));
        let mut too_far = Vec::new();
        write_varint(&mut too_far, (u64::from(max_bucket_index()) + 1) << 1 | 1);
        write_varint(&mut too_far, 1);
        assert!(matches!(
            SparseHistogram::decode(&too_far),
            Err(SparseError::IndexOutOfRange(_))
        ));
        let mut overlong = vec![0xff; 9];
        overlong.push(0x02);
        assert_eq!(
            SparseHistogram::decode(&overlong),
            Err(SparseError::BadVarint)
        );
        let mut max = Vec::new();
        write_varint(&mut max, u64::MAX);
        assert_eq!(read_varint(&mut max.as_slice()), Ok(u64::MAX));
        assert!(serde_json::from_str::<SparseHistogram>("[3, 0]").is_err());
    }
}
