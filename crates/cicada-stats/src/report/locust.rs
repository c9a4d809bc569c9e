//! Locust's own JSON (`locust --json` / `--json-file`): a list with one object per entry, the
//! keys and value types of Locust's `StatsEntry.serialize()` (`locust/stats.py`), so that
//! scripts and tools written for Locust's output read cicada's.
//!
//! Locust keeps its response times as a histogram keyed by the rounded time in whole
//! milliseconds ([`bucket_response_time`]); cicada records microseconds in an HDR histogram,
//! so `response_times` is rebuilt from that histogram: every bucket at its highest value (the
//! value cicada's percentiles report), rounded the way Locust rounds. A percentile that a
//! Locust tool computes from it is the one in cicada's CSV files whenever both pick the same
//! sample (Locust takes the sample of rank `int(q·n) + 1`, the histogram the one of rank
//! `ceil(q·n)`: the same unless `q·n` is whole).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use cicada_stats::report::locust::{self, LocustEntry};
//! use cicada_stats::{Sample, Stats};
//!
//! let stats = Stats::default();
//! for ms in [3, 147, 3_432] {
//!     stats.record(&Sample {
//!         method: "GET",
//!         name: "/",
//!         response_time: Duration::from_millis(ms),
//!         content_length: 10,
//!         error: None,
//!         finished_at: Instant::now(),
//!     });
//! }
//! stats.collect_final(Duration::from_secs(1));
//! let entries = locust::entries(&stats.entry_details());
//! let mut out = Vec::new();
//! locust::write_json_to(&mut out, &entries).unwrap();
//! let back: Vec<LocustEntry> = serde_json::from_slice(&out).unwrap();
//! assert_eq!(back[0].num_requests, 3);
//! let keys: Vec<u64> = back[0].response_times.keys().copied().collect();
//! assert_eq!(keys, [3, 150, 3_400]);
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ReportError, WRITER_PATH};
use crate::snapshot::EntryDetail;

/// One entry of Locust's JSON list, with Locust's keys in Locust's order. Times are
/// milliseconds, timestamps Unix seconds (floats), as in Locust.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LocustEntry {
    /// Stats name.
    pub name: String,
    /// Request type.
    pub method: String,
    /// When the latest request finished; `null` without requests.
    pub last_request_timestamp: Option<f64>,
    /// When the entry got its first request (the start of that second).
    pub start_time: f64,
    /// Requests, failures included.
    pub num_requests: u64,
    /// Requests without a response time (Locust's async requests); always 0 in cicada,
    /// which times every request.
    pub num_none_requests: u64,
    /// Failed requests.
    pub num_failures: u64,
    /// Sum of the response times.
    pub total_response_time: f64,
    /// Slowest response time (0 without requests).
    pub max_response_time: f64,
    /// Fastest response time; `null` without requests.
    pub min_response_time: Option<f64>,
    /// Sum of the response body sizes in bytes.
    pub total_content_length: u64,
    /// Rounded response time ([`bucket_response_time`]) → requests; JSON object keys are
    /// the numbers as text, as Python's `json` writes an `int`-keyed dict.
    pub response_times: BTreeMap<u64, u64>,
    /// Unix second → requests finished in it (seconds without requests are absent).
    pub num_reqs_per_sec: BTreeMap<u64, u64>,
    /// Unix second → failures in it (seconds without failures are absent).
    pub num_fail_per_sec: BTreeMap<u64, u64>,
}

/// Locust's `bucket_response_time`: a response time rounded to about two significant digits,
/// the key of its response-time histogram. Below 100 ms to the millisecond, below 1 s to
/// 10 ms, below 10 s to 100 ms, from 10 s up to the second; halves go to the even neighbour
/// as Python's `round` does (`12.5` → 12, `145` → 140).
///
/// ```
/// use cicada_stats::report::locust::bucket_response_time;
///
/// assert_eq!(bucket_response_time(0.4), 0);
/// assert_eq!(bucket_response_time(12.5), 12);
/// assert_eq!(bucket_response_time(147.0), 150);
/// assert_eq!(bucket_response_time(3_432.0), 3_400);
/// assert_eq!(bucket_response_time(58_760.0), 59_000);
/// ```
pub fn bucket_response_time(ms: f64) -> u64 {
    let step = if ms < 100.0 {
        1.0
    } else if ms < 1_000.0 {
        10.0
    } else if ms < 10_000.0 {
        100.0
    } else {
        1_000.0
    };
    // `as` saturates: negative or NaN inputs (never produced by the stats) become 0.
    ((ms / step).round_ties_even() * step) as u64
}

/// Locust's entry for one [`EntryDetail`].
impl From<&EntryDetail> for LocustEntry {
    fn from(detail: &EntryDetail) -> Self {
        let mut response_times = BTreeMap::new();
        for &(ms, count) in &detail.response_times {
            *response_times.entry(bucket_response_time(ms)).or_insert(0) += count;
        }
        let num_reqs_per_sec = detail
            .per_second
            .iter()
            .filter(|second| second.requests > 0)
            .map(|second| (second.unix_second, second.requests))
            .collect();
        let num_fail_per_sec = detail
            .per_second
            .iter()
            .filter(|second| second.failures > 0)
            .map(|second| (second.unix_second, second.failures))
            .collect();
        LocustEntry {
            name: detail.name.clone(),
            method: detail.method.clone(),
            last_request_timestamp: detail
                .last_request_unix_ms
                .map(|unix_ms| unix_ms as f64 / 1_000.0),
            start_time: detail.first_request_unix_ms as f64 / 1_000.0,
            num_requests: detail.num_requests,
            num_none_requests: 0,
            num_failures: detail.num_failures,
            total_response_time: detail.total_response_ms,
            max_response_time: detail.max_ms,
            min_response_time: detail.min_ms,
            total_content_length: detail.total_content_length,
            response_times,
            num_reqs_per_sec,
            num_fail_per_sec,
        }
    }
}

/// Locust's list for these entries (Locust lists entries only, no Aggregated row).
pub fn entries(details: &[EntryDetail]) -> Vec<LocustEntry> {
    details.iter().map(LocustEntry::from).collect()
}

/// Writes the list as Locust does (`json.dumps(..., indent=4)`), without a trailing newline
/// (add one when printing, as Python's `print` does).
pub fn write_json_to<W: Write>(writer: W, entries: &[LocustEntry]) -> Result<(), ReportError> {
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(writer, formatter);
    entries
        .serialize(&mut serializer)
        .map_err(|source| ReportError::Json {
            path: Path::new(WRITER_PATH).to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SecondCounts;

    #[test]
    fn buckets_round_like_python() {
        // Python: round(x) / int(round(x, -1)) / int(round(x, -2)) / int(round(x, -3))
        let cases = [
            (0.0, 0),
            (0.5, 0),
            (1.5, 2),
            (99.4, 99),
            (99.6, 100),
            (100.0, 100),
            (104.9, 100),
            (105.0, 100),
            (115.0, 120),
            (999.0, 1_000),
            (1_000.0, 1_000),
            (1_050.0, 1_000),
            (1_150.0, 1_200),
            (9_999.0, 10_000),
            (10_500.0, 10_000),
            (11_500.0, 12_000),
        ];
        for (ms, key) in cases {
            assert_eq!(bucket_response_time(ms), key, "{ms}");
        }
    }

    fn detail() -> EntryDetail {
        EntryDetail {
            method: "GET".into(),
            name: "/item/[id]".into(),
            first_request_unix_ms: 1_700_000_000_000,
            last_request_unix_ms: Some(1_700_000_002_250),
            num_requests: 5,
            num_failures: 1,
            total_response_ms: 300.125,
            min_ms: Some(0.125),
            max_ms: 147.0,
            total_content_length: 2_048,
            response_times: vec![(0.125, 1), (0.75, 1), (1.2, 1), (144.0, 1), (147.0, 1)],
            per_second: vec![
                SecondCounts {
                    unix_second: 1_700_000_000,
                    requests: 3,
                    failures: 0,
                },
                SecondCounts {
                    unix_second: 1_700_000_002,
                    requests: 2,
                    failures: 1,
                },
            ],
        }
    }

    #[test]
    fn json_has_locusts_keys_order_and_types() {
        let mut out = Vec::new();
        write_json_to(&mut out, &entries(&[detail()])).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("[\n    {\n        \"name\": \"/item/[id]\",\n"),
            "{text}"
        );
        let keys: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with("        \"") && line.contains("\": "))
            .map(|line| line.trim().split('"').nth(1).unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "name",
                "method",
                "last_request_timestamp",
                "start_time",
                "num_requests",
                "num_none_requests",
                "num_failures",
                "total_response_time",
                "max_response_time",
                "min_response_time",
                "total_content_length",
                "response_times",
                "num_reqs_per_sec",
                "num_fail_per_sec",
            ]
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let entry = &value[0];
        assert_eq!(entry["last_request_timestamp"], 1_700_000_002.25);
        assert_eq!(entry["start_time"], 1_700_000_000.0);
        assert_eq!(entry["num_none_requests"], 0);
        assert_eq!(entry["total_response_time"], 300.125);
        assert_eq!(entry["min_response_time"], 0.125);
        assert_eq!(
            entry["response_times"],
            serde_json::json!({ "0": 1, "1": 2, "140": 1, "150": 1 })
        );
        assert_eq!(
            entry["num_reqs_per_sec"],
            serde_json::json!({ "1700000000": 3, "1700000002": 2 })
        );
        assert_eq!(
            entry["num_fail_per_sec"],
            serde_json::json!({ "1700000002": 1 })
        );
    }

    /// Locust's `calculate_response_time_percentile`.
    fn locust_percentile(response_times: &BTreeMap<u64, u64>, count: u64, quantile: f64) -> u64 {
        let wanted = (count as f64 * quantile) as u64;
        let mut processed = 0;
        for (&key, &n) in response_times.iter().rev() {
            processed += n;
            if count - processed <= wanted {
                return key;
            }
        }
        0
    }

    #[test]
    fn percentiles_rebuilt_the_locust_way_match_the_histograms() {
        use std::time::{Duration, Instant};

        let stats = crate::Stats::default();
        // 0.5 ms to 30 s, spread over every rounding step, with a fractional part.
        let mut micros = 500;
        while micros < 30_000_000 {
            stats.record(&crate::Sample {
                method: "GET",
                name: "/spread",
                response_time: Duration::from_micros(micros),
                content_length: 0,
                error: None,
                finished_at: Instant::now(),
            });
            micros = micros * 21 / 20 + 7;
        }
        stats.collect_final(Duration::from_secs(1));
        let snapshot = stats.snapshot();
        let own = &snapshot.entries[0];
        let entry = LocustEntry::from(&stats.entry_details()[0]);
        assert_eq!(entry.response_times.values().sum::<u64>(), own.num_requests);
        for &(quantile, ms) in &own.percentiles {
            let rebuilt = locust_percentile(&entry.response_times, own.num_requests, quantile);
            // Locust picks the sample of rank int(q·n) + 1, the histogram the one of rank ceil(q·n).
            // Otherwise the same sample, so the same key as the CSV's percentile.
            let rank = own.num_requests as f64 * quantile;
            if quantile < 1.0 && (rank - rank.round()).abs() < 1e-9 {
                continue;
            }
            assert_eq!(
                rebuilt,
                bucket_response_time(ms),
                "p{quantile}: rebuilt {rebuilt}, histogram {ms}"
            );
        }
    }

    #[test]
    fn an_entry_without_requests_has_nulls_like_locust() {
        let empty = EntryDetail {
            name: "/never".into(),
            ..EntryDetail::default()
        };
        let value = serde_json::to_value(LocustEntry::from(&empty)).unwrap();
        assert!(value["min_response_time"].is_null());
        assert!(value["last_request_timestamp"].is_null());
        assert_eq!(value["response_times"], serde_json::json!({}));
        let mut out = Vec::new();
        write_json_to(&mut out, &[]).unwrap();
        assert_eq!(out, b"[]");
    }
}
