//! Comparing two runs: per request name (and the aggregate), the change in p50, p95 and p99, the failure ratio and
//! the requests per second between a base run and a new one, read from two cicada JSON reports (`--report-json`).
//! With a bound ([`compare`]'s `max_regression`), each change that makes the new run worse by more than the bound is a
//! regression:
//!
//! - p50, p95, p99: the new value is more than `(1 + bound)` times the base value and at least
//!   [`MIN_LATENCY_CHANGE_MS`] slower (below that, a change is the histogram's resolution and timer noise);
//! - requests per second: the new value is less than `(1 - bound)` times the base value;
//! - failure ratio: the new ratio is more than `(1 + bound)` times the base ratio (so with no failures in the base,
//!   any failure in the new run is a regression).
//!
//! A name found in only one of the runs is shown but cannot regress. The comparison has one row per name of either
//! run, so it is bounded by the two reports' `--max-names`.
//!
//! ```
//! use cicada_stats::report::compare::compare;
//! use cicada_stats::{EntryStats, StatsSnapshot};
//!
//! let run = |p95: f64| StatsSnapshot {
//!     total: EntryStats { name: "Aggregated".into(), num_requests: 100, percentiles: vec![(0.95, p95)], ..EntryStats::default() },
//!     ..StatsSnapshot::default()
//! };
//! let comparison = compare(&run(100.0), &run(125.0), Some(0.10));
//! assert_eq!(comparison.regressions(), ["Aggregated: p95 100.0 ms -> 125.0 ms (+25.0%)"]);
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::AGGREGATED_NAME;
use crate::snapshot::{EntryStats, StatsSnapshot};

/// A report that cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a cicada JSON report.
    #[error("{} is not a cicada JSON report (write one with --report-json FILE): {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// Reads the statistics of a cicada JSON report (`--report-json`, a [`crate::report::json::JsonReport`]).
pub fn read_report(path: &Path) -> Result<StatsSnapshot, CompareError> {
    let text = std::fs::read(path).map_err(|source| CompareError::Read {
        path: path.to_owned(),
        source,
    })?;
    let report: ReportStats =
        serde_json::from_slice(&text).map_err(|source| CompareError::Parse {
            path: path.to_owned(),
            source,
        })?;
    Ok(report.stats)
}

/// The part of a [`crate::report::json::JsonReport`] a comparison reads; unlike `JsonReport` itself, `stats` is
/// required, so that any other JSON object is refused rather than read as an empty run.
#[derive(serde::Deserialize)]
struct ReportStats {
    stats: StatsSnapshot,
}

/// The smallest slowdown of a percentile that counts as a regression, whatever the ratio: response times are kept
/// with two significant digits, so a sub-millisecond percentile moves by tenths of a millisecond from run to run.
pub const MIN_LATENCY_CHANGE_MS: f64 = 1.0;

/// The compared metrics, in the table's order.
const METRICS: [Metric; 5] = [
    Metric::Percentile(0.5, "p50"),
    Metric::Percentile(0.95, "p95"),
    Metric::Percentile(0.99, "p99"),
    Metric::FailRatio,
    Metric::Rps,
];

#[derive(Clone, Copy)]
enum Metric {
    Percentile(f64, &'static str),
    FailRatio,
    Rps,
}

impl Metric {
    fn label(self) -> &'static str {
        match self {
            Metric::Percentile(_, label) => label,
            Metric::FailRatio => "fail_ratio",
            Metric::Rps => "rps",
        }
    }

    fn value(self, entry: &EntryStats) -> Option<f64> {
        match self {
            Metric::Percentile(q, _) => entry.percentile(q),
            Metric::FailRatio => Some(entry.fail_ratio()),
            Metric::Rps => Some(entry.total_rps),
        }
    }

    fn format(self, value: f64) -> String {
        match self {
            Metric::Percentile(..) => format!("{value:.1} ms"),
            Metric::FailRatio => format!("{:.2}%", value * 100.0),
            Metric::Rps => format!("{value:.1}/s"),
        }
    }

    /// Whether going from `base` to `new` makes the run worse by more than `bound`.
    fn regressed(self, base: f64, new: f64, bound: f64) -> bool {
        match self {
            Metric::Rps => new < base * (1.0 - bound),
            Metric::FailRatio => new > base * (1.0 + bound),
            Metric::Percentile(..) => {
                new > base * (1.0 + bound) && new - base >= MIN_LATENCY_CHANGE_MS
            }
        }
    }
}

/// One metric of one name in both runs.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricChange {
    /// `p50`, `p95`, `p99`, `fail_ratio` or `rps`.
    pub metric: &'static str,
    /// The base run's value (ms, ratio or requests per second); `None` when it has no such value.
    pub base: Option<f64>,
    /// The new run's value.
    pub new: Option<f64>,
    /// Whether the change passes the bound (always `false` without a bound).
    pub regressed: bool,
    text: String,
}

impl MetricChange {
    /// `+12.5%`, `-3.0%`, `=`, or `n/a`.
    pub fn change_text(&self) -> String {
        match (self.base, self.new) {
            (Some(base), Some(new)) if base == new => "=".into(),
            (Some(base), Some(new)) if base > 0.0 => {
                format!("{:+.1}%", (new - base) / base * 100.0)
            }
            (Some(_), Some(_)) => "new".into(),
            _ => "n/a".into(),
        }
    }
}

/// One request name in both runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ComparisonRow {
    /// Request type (`""` for the aggregate).
    pub method: String,
    /// Stats name.
    pub name: String,
    /// Requests in the base run (0 when the name is not in it).
    pub base_requests: u64,
    /// Requests in the new run.
    pub new_requests: u64,
    /// Each metric, in the table's order.
    pub changes: Vec<MetricChange>,
}

impl ComparisonRow {
    fn label(&self) -> String {
        if self.method.is_empty() {
            self.name.clone()
        } else {
            format!("{} {}", self.method, self.name)
        }
    }
}

/// Two runs compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// One row per name of either run, sorted by name and method, the aggregate last.
    pub rows: Vec<ComparisonRow>,
    /// The bound, as a fraction (0.1 for 10%), when one was given.
    pub max_regression: Option<f64>,
}

/// Compare `base` with `new`; `max_regression` is the bound as a fraction (0.1 for 10%).
pub fn compare(
    base: &StatsSnapshot,
    new: &StatsSnapshot,
    max_regression: Option<f64>,
) -> Comparison {
    let mut keys: Vec<(&str, &str)> = base
        .entries
        .iter()
        .chain(&new.entries)
        .map(|e| (e.name.as_str(), e.method.as_str()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut rows: Vec<ComparisonRow> = keys
        .into_iter()
        .map(|(name, method)| {
            row(
                method,
                name,
                base.entry(method, name),
                new.entry(method, name),
                max_regression,
            )
        })
        .collect();
    rows.push(row(
        "",
        AGGREGATED_NAME,
        Some(&base.total),
        Some(&new.total),
        max_regression,
    ));
    Comparison {
        rows,
        max_regression,
    }
}

fn row(
    method: &str,
    name: &str,
    base: Option<&EntryStats>,
    new: Option<&EntryStats>,
    bound: Option<f64>,
) -> ComparisonRow {
    let base = base.filter(|e| e.num_requests > 0);
    let new = new.filter(|e| e.num_requests > 0);
    let changes = METRICS
        .iter()
        .map(|metric| {
            let base_value = base.and_then(|e| metric.value(e));
            let new_value = new.and_then(|e| metric.value(e));
            let regressed = match (base_value, new_value, bound) {
                (Some(b), Some(n), Some(bound)) => metric.regressed(b, n, bound),
                _ => false,
            };
            let text = format!(
                "{} {} -> {}",
                metric.label(),
                base_value.map_or_else(|| "–".into(), |v| metric.format(v)),
                new_value.map_or_else(|| "–".into(), |v| metric.format(v)),
            );
            MetricChange {
                metric: metric.label(),
                base: base_value,
                new: new_value,
                regressed,
                text,
            }
        })
        .collect();
    ComparisonRow {
        method: method.to_string(),
        name: name.to_string(),
        base_requests: base.map_or(0, |e| e.num_requests),
        new_requests: new.map_or(0, |e| e.num_requests),
        changes,
    }
}

impl Comparison {
    /// Every regression past the bound, as `NAME: METRIC BASE -> NEW (CHANGE)`.
    pub fn regressions(&self) -> Vec<String> {
        self.rows
            .iter()
            .flat_map(|row| {
                row.changes
                    .iter()
                    .filter(|c| c.regressed)
                    .map(move |c| format!("{}: {} ({})", row.label(), c.text, c.change_text()))
            })
            .collect()
    }

    /// The comparison as a console table, followed by the regressions (when a bound was given).
    pub fn table(&self) -> String {
        let mut text = String::new();
        let _ = write!(text, "{:<40} {:>9} {:>9}", "Name", "Reqs base", "Reqs new");
        for metric in METRICS {
            let _ = write!(text, " | {:^32}", metric.label());
        }
        text.push('\n');
        for row in &self.rows {
            let mut label = row.label();
            if label.chars().count() > 40 {
                label = label.chars().take(39).collect::<String>() + "…";
            }
            let _ = write!(
                text,
                "{label:<40} {:>9} {:>9}",
                row.base_requests, row.new_requests
            );
            for (change, metric) in row.changes.iter().zip(METRICS) {
                let cell = format!(
                    "{} -> {} {}{}",
                    change.base.map_or_else(|| "–".into(), |v| metric.format(v)),
                    change.new.map_or_else(|| "–".into(), |v| metric.format(v)),
                    change.change_text(),
                    if change.regressed { " !" } else { "" }
                );
                let _ = write!(text, " | {cell:>32}");
            }
            text.push('\n');
        }
        if let Some(bound) = self.max_regression {
            let regressions = self.regressions();
            if regressions.is_empty() {
                let _ = writeln!(text, "\nNo regression beyond {:.1}%.", bound * 100.0);
            } else {
                let _ = writeln!(
                    text,
                    "\n{} regressions beyond {:.1}% (marked !):",
                    regressions.len(),
                    bound * 100.0
                );
                for regression in regressions {
                    let _ = writeln!(text, "  {regression}");
                }
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(method: &str, name: &str, p50: f64, failures: u64, rps: f64) -> EntryStats {
        EntryStats {
            method: method.into(),
            name: name.into(),
            num_requests: 100,
            num_failures: failures,
            total_rps: rps,
            percentiles: vec![(0.5, p50), (0.95, p50 * 2.0), (0.99, p50 * 3.0)],
            ..EntryStats::default()
        }
    }

    fn run(entries: Vec<EntryStats>, total: EntryStats) -> StatsSnapshot {
        StatsSnapshot {
            entries,
            total,
            ..StatsSnapshot::default()
        }
    }

    #[test]
    fn each_direction_of_worse_is_a_regression() {
        let base = run(
            vec![
                entry("GET", "/a", 10.0, 0, 100.0),
                entry("GET", "/b", 10.0, 1, 100.0),
            ],
            entry("", AGGREGATED_NAME, 10.0, 1, 200.0),
        );
        let new = run(
            vec![
                entry("GET", "/a", 10.5, 1, 100.0),
                entry("GET", "/c", 50.0, 0, 100.0),
            ],
            entry("", AGGREGATED_NAME, 10.0, 1, 150.0),
        );
        let comparison = compare(&base, &new, Some(0.10));
        let labels: Vec<String> = comparison.rows.iter().map(ComparisonRow::label).collect();
        assert_eq!(labels, ["GET /a", "GET /b", "GET /c", "Aggregated"]);
        // /a: 5% slower is within the bound (and under 1 ms); a failure where there was none is not.
        assert_eq!(
            comparison.regressions(),
            [
                "GET /a: fail_ratio 0.00% -> 1.00% (new)",
                "Aggregated: rps 200.0/s -> 150.0/s (-25.0%)"
            ]
        );
        // Names in one run only cannot regress.
        assert!(
            comparison.rows[1]
                .changes
                .iter()
                .all(|c| !c.regressed && c.new.is_none())
        );
        let table = comparison.table();
        assert!(table.contains("2 regressions beyond 10.0%"), "{table}");
        assert!(compare(&base, &new, None).regressions().is_empty());
        assert!(compare(&base, &base, Some(0.0)).regressions().is_empty());
        // 0.2 ms -> 0.3 ms is +50%, but within the histogram's resolution.
        let tiny = |p50| run(vec![], entry("", AGGREGATED_NAME, p50, 0, 1.0));
        assert!(
            compare(&tiny(0.2), &tiny(0.3), Some(0.1))
                .regressions()
                .is_empty()
        );
        assert_eq!(
            compare(&tiny(0.2), &tiny(1.5), Some(0.1))
                .regressions()
                .len(),
            3
        );
    }
}
