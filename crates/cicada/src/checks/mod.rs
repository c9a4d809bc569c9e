//! Checks (service-level objectives) that decide a run's exit code: their grammar ([`Check::parse`]), their
//! evaluation over the final statistics ([`evaluate`]), the early verdict of `--check-abort` ([`Check::cannot_pass`])
//! and the CI reports built from them ([`junit`], [`github`]).
//!
//! A check is `[NAME:]METRIC OP VALUE`, e.g. `p95<300ms`, `/items/[id]:p99<500ms`, `GET /cart:fail_ratio<1%`,
//! `rps>=200`. Without `NAME:` it applies to the aggregate of all requests. docs/ci.md has the grammar.
//!
//! Checks are judged on what a healthy generator measured: when the resource guard (or a worker's) marked seconds of
//! the run as saturated, they are evaluated over the other seconds only ([`cicada_stats::UnmarkedSnapshot`]: the
//! statistics keep the unmarked seconds' histograms beside the whole run's whenever a run has checks), and every
//! result and the summary say how much was left out. A check can stop the run early: ` abort` after a check that
//! can only get worse (`max<`, `min>`) stops the run once it is broken, ` abort-after DURATION` after any check stops
//! the run once it has failed for that long (k6's `abortOnFail` with `delayAbortEval`).

pub mod github;
pub mod junit;

use std::fmt::{self, Write as _};

use std::time::Duration;

use cicada_stats::{EntryStats, HistoryPoint, PERCENTILES, StatsSnapshot, UnmarkedSnapshot};
use serde::{Deserialize, Serialize};

/// Exit code of a run in which a check failed (and nothing graver happened: a lost report, 5, and the guard's stop,
/// 4, win over it; it wins over failed requests, 1). Also the exit code of `cicada compare` when a regression
/// passes `--max-regression`.
pub const EXIT_CHECK_FAILED: i32 = 6;

/// What a check measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// A response-time percentile, as a quantile (`p95` is 0.95); one of those the stats keep.
    Percentile(f64),
    /// Mean response time.
    Avg,
    /// Slowest response time.
    Max,
    /// Fastest response time.
    Min,
    /// Failed requests divided by all requests (0 to 1).
    FailRatio,
    /// Requests per second over the run.
    Rps,
}

impl Metric {
    /// The metric as the grammar writes it (`p95`, `avg`, `fail_ratio`, ...).
    pub fn label(self) -> String {
        match self {
            Metric::Percentile(q) => percentile_label(q),
            Metric::Avg => "avg".into(),
            Metric::Max => "max".into(),
            Metric::Min => "min".into(),
            Metric::FailRatio => "fail_ratio".into(),
            Metric::Rps => "rps".into(),
        }
    }

    /// The unit of its threshold and measured value.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::Percentile(_) | Metric::Avg | Metric::Max | Metric::Min => "ms",
            Metric::FailRatio => "ratio",
            Metric::Rps => "req/s",
        }
    }

    fn is_time(self) -> bool {
        self.unit() == "ms"
    }

    fn measure(self, entry: &EntryStats) -> Option<f64> {
        if entry.num_requests == 0 && self != Metric::FailRatio {
            return None;
        }
        Some(match self {
            Metric::Percentile(q) => entry.percentile(q)?,
            Metric::Avg => entry.avg_ms,
            Metric::Max => entry.max_ms,
            Metric::Min => entry.min_ms,
            Metric::FailRatio => entry.fail_ratio(),
            Metric::Rps => entry.total_rps,
        })
    }
}

/// `p50`, `p999`, `p9999` for 0.5, 0.999, 0.9999.
fn percentile_label(quantile: f64) -> String {
    let digits = format!("{:.4}", quantile * 100.0);
    let digits = digits.trim_end_matches('0').trim_end_matches('.');
    format!("p{}", digits.replace('.', ""))
}

/// How the measured value is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `>`
    Greater,
    /// `>=`
    GreaterOrEqual,
}

impl Op {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Less => "<",
            Op::LessOrEqual => "<=",
            Op::Greater => ">",
            Op::GreaterOrEqual => ">=",
        }
    }

    fn holds(self, measured: f64, threshold: f64) -> bool {
        match self {
            Op::Less => measured < threshold,
            Op::LessOrEqual => measured <= threshold,
            Op::Greater => measured > threshold,
            Op::GreaterOrEqual => measured >= threshold,
        }
    }
}

/// Which requests a check is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTarget {
    /// `GET` in `GET /items:p95<1s`; `None` matches the name under any method.
    pub method: Option<String>,
    /// The stats name.
    pub name: String,
}

impl fmt::Display for CheckTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.method {
            Some(method) => write!(f, "{method} {}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One parsed check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The expression as given (trimmed).
    pub expr: String,
    /// The requests it is about; `None` for the aggregate of all requests.
    pub target: Option<CheckTarget>,
    /// What it measures.
    pub metric: Metric,
    /// How the measured value must compare with the threshold.
    pub op: Op,
    /// The threshold in the metric's unit ([`Metric::unit`]): milliseconds, a ratio, or requests per second.
    pub threshold: f64,
    /// Whether, and when, this check stops the run before its end (`--check-abort` sets
    /// [`AbortRule::CannotPass`] on every check that can be judged early).
    pub abort: Option<AbortRule>,
}

/// When a check stops the run early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortRule {
    /// Once it can no longer pass (` abort`; only for `max<`, `max<=`, `min>`, `min>=`, whose measured value moves
    /// in one direction only).
    CannotPass,
    /// Once it has failed, judged each second on the statistics so far, for this long without a break
    /// (` abort-after DURATION`; any check).
    FailingFor(Duration),
}

/// The statistics a check is judged on: the whole run's, or those of its unmarked seconds.
#[derive(Clone, Copy, Debug)]
pub struct Measured<'a> {
    total: &'a EntryStats,
    entries: &'a [EntryStats],
}

impl<'a> Measured<'a> {
    /// The statistics of the seconds not marked saturated when there are any marked ones, else the whole run's.
    pub fn of(snapshot: &'a StatsSnapshot, unmarked: Option<&'a UnmarkedSnapshot>) -> Measured<'a> {
        match unmarked.filter(|unmarked| unmarked.marked_seconds > 0) {
            Some(unmarked) => Measured {
                total: &unmarked.total,
                entries: &unmarked.entries,
            },
            None => Measured {
                total: &snapshot.total,
                entries: &snapshot.entries,
            },
        }
    }
}

/// A check that does not follow the grammar: the expression and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{expr}` is not a check: {reason} (write [NAME:]METRIC OP VALUE, e.g. p95<300ms, /items/[id]:p99<1s, fail_ratio<0.01, rps>200)"
)]
pub struct CheckSyntaxError {
    /// The expression.
    pub expr: String,
    /// What is wrong.
    pub reason: String,
}

/// Methods recognised before a name (`GET /items:p95<1s`).
const METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE",
];

impl Check {
    /// Parses `[NAME:]METRIC OP VALUE`; see the module documentation and docs/ci.md.
    pub fn parse(text: &str) -> Result<Check, CheckSyntaxError> {
        let expr = text.trim().to_string();
        let fail = |reason: String| CheckSyntaxError {
            expr: expr.clone(),
            reason,
        };
        let (condition, abort) = split_abort(&expr).map_err(fail)?;
        let op_at = condition
            .rfind(['<', '>'])
            .ok_or_else(|| fail("it has no comparison (<, <=, > or >=)".into()))?;
        let (op, value_text) = match (
            &condition[op_at..op_at + 1],
            condition[op_at + 1..].strip_prefix('='),
        ) {
            ("<", Some(rest)) => (Op::LessOrEqual, rest),
            ("<", None) => (Op::Less, &condition[op_at + 1..]),
            (_, Some(rest)) => (Op::GreaterOrEqual, rest),
            (_, None) => (Op::Greater, &condition[op_at + 1..]),
        };
        let left = &condition[..op_at];
        let (target_text, metric_text) = match left.rfind(':') {
            Some(colon) => (Some(&left[..colon]), &left[colon + 1..]),
            None => (None, left),
        };
        let metric = parse_metric(metric_text.trim()).map_err(fail)?;
        let threshold = parse_value(metric, value_text.trim()).map_err(fail)?;
        let target = match target_text.map(str::trim) {
            None => None,
            Some("") => return Err(fail("the name before `:` is empty".into())),
            Some(target) => Some(parse_target(target)),
        };
        let check = Check {
            expr: expr.clone(),
            target,
            metric,
            op,
            threshold,
            abort,
        };
        if abort == Some(AbortRule::CannotPass) && !check.judged_early() {
            return Err(fail(
                "only max<, max<=, min> and min>= checks can be known to fail before the end: write                  `abort-after DURATION` to stop once the check has failed for that long"
                    .into(),
            ));
        }
        Ok(check)
    }

    /// The expression without its abort rule.
    fn condition(&self) -> &str {
        split_abort(&self.expr).map_or(self.expr.as_str(), |(condition, _)| condition)
    }

    /// The name a report shows: the target, or `Aggregated`.
    pub fn name(&self) -> String {
        self.target.as_ref().map_or_else(
            || cicada_stats::AGGREGATED_NAME.to_string(),
            ToString::to_string,
        )
    }

    /// Whether this check can still pass, judged from the statistics so far: `false` only for the checks whose
    /// measured value can move in one direction alone as the run goes on (`max<`, `max<=`: the slowest response
    /// never gets faster; `min>`, `min>=`: the fastest never gets slower), once they are already broken. Every other
    /// check (percentiles, averages, failure ratio, rate) can still recover and is never judged early.
    pub fn cannot_pass(&self, measured: Measured<'_>) -> bool {
        if !self.judged_early() {
            return false;
        }
        self.fails_now(measured)
    }

    /// Whether the check fails on the statistics so far (nothing measured yet is not a failure: the run may still
    /// send the requests).
    pub fn fails_now(&self, measured: Measured<'_>) -> bool {
        match self.find(measured) {
            Ok(entry) => self
                .metric
                .measure(entry)
                .is_some_and(|measured| !self.op.holds(measured, self.threshold)),
            Err(_) => false,
        }
    }

    /// Whether `--check-abort` can judge this check before the end: its measured value moves in one direction only
    /// (`max<`, `max<=`, `min>`, `min>=`).
    pub fn judged_early(&self) -> bool {
        matches!(
            (self.metric, self.op),
            (Metric::Max, Op::Less | Op::LessOrEqual)
                | (Metric::Min, Op::Greater | Op::GreaterOrEqual)
        )
    }

    /// The statistics entry this check is about, or why there is none.
    fn find<'a>(&self, measured: Measured<'a>) -> Result<&'a EntryStats, String> {
        let Some(target) = &self.target else {
            return Ok(measured.total);
        };
        let mut matching = measured.entries.iter().filter(|entry| {
            entry.name == target.name && target.method.as_ref().is_none_or(|m| *m == entry.method)
        });
        match (matching.next(), matching.next()) {
            (None, _) => Err(format!("no request named `{target}` was recorded")),
            (Some(only), None) => Ok(only),
            (Some(first), Some(second)) => Err(format!(
                "`{}` names requests of several methods ({}, {}, ...): write `{} {}:{}` to choose one",
                target.name,
                first.method,
                second.method,
                first.method,
                target.name,
                &self.condition()[self.condition().rfind(':').map_or(0, |c| c + 1)..]
            )),
        }
    }
}

fn parse_metric(text: &str) -> Result<Metric, String> {
    Ok(match text {
        "avg" | "mean" => Metric::Avg,
        "max" => Metric::Max,
        "min" => Metric::Min,
        "median" => Metric::Percentile(0.5),
        "fail_ratio" => Metric::FailRatio,
        "rps" => Metric::Rps,
        "" => return Err("the metric is missing before the comparison".into()),
        _ => {
            let kept: Vec<String> = PERCENTILES
                .iter()
                .filter(|q| **q < 1.0)
                .map(|q| percentile_label(*q))
                .collect();
            return text
                .strip_prefix('p')
                .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|_| {
                    PERCENTILES
                        .iter()
                        .find(|q| **q < 1.0 && percentile_label(**q) == text)
                })
                .map(|q| Metric::Percentile(*q))
                .ok_or_else(|| {
                    format!(
                        "unknown metric `{text}` (known: {}, avg, min, max, fail_ratio, rps)",
                        kept.join(", ")
                    )
                });
        }
    })
}

/// Splits a trailing ` abort` or ` abort-after DURATION` off a check.
fn split_abort(expr: &str) -> Result<(&str, Option<AbortRule>), String> {
    let ends_word = |before: &str| before.ends_with(char::is_whitespace);
    if let Some(before) = expr.strip_suffix("abort")
        && ends_word(before)
    {
        return Ok((before.trim_end(), Some(AbortRule::CannotPass)));
    }
    if let Some(at) = expr.rfind("abort-after")
        && ends_word(&expr[..at])
    {
        let duration_text = expr[at + "abort-after".len()..].trim();
        let duration = humantime::parse_duration(duration_text)
            .ok()
            .filter(|duration| !duration.is_zero())
            .ok_or_else(|| {
                format!("`abort-after` needs a duration such as 30s or 2m, not `{duration_text}`")
            })?;
        return Ok((expr[..at].trim_end(), Some(AbortRule::FailingFor(duration))));
    }
    Ok((expr, None))
}

fn parse_value(metric: Metric, text: &str) -> Result<f64, String> {
    let number = |digits: &str| -> Result<f64, String> {
        digits
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| format!("`{text}` is not a number of zero or more"))
    };
    if text.is_empty() {
        return Err("the value is missing after the comparison".into());
    }
    if metric.is_time() {
        if let Some(ms) = text.strip_suffix("ms") {
            number(ms)
        } else if let Some(s) = text.strip_suffix('s') {
            Ok(number(s)? * 1000.0)
        } else if number(text).is_ok() {
            Err(format!("`{text}` needs a unit: ms or s (e.g. {text}ms)"))
        } else {
            Err(format!("`{text}` is not a duration such as 300ms or 1.5s"))
        }
    } else if metric == Metric::FailRatio {
        let ratio = match text.strip_suffix('%') {
            Some(percent) => number(percent)? / 100.0,
            None => number(text)?,
        };
        if ratio > 1.0 {
            return Err(format!(
                "`{text}` is more than 1: a failure ratio is 0 to 1 (or 0% to 100%)"
            ));
        }
        Ok(ratio)
    } else {
        number(text.strip_suffix("/s").unwrap_or(text))
    }
}

fn parse_target(text: &str) -> CheckTarget {
    if let Some((method, name)) = text.split_once(' ')
        && METHODS.contains(&method)
        && !name.trim().is_empty()
    {
        return CheckTarget {
            method: Some(method.to_string()),
            name: name.trim().to_string(),
        };
    }
    CheckTarget {
        method: None,
        name: text.to_string(),
    }
}

/// One evaluated check, as the summary, the JSON and HTML reports and JUnit show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The expression as given.
    pub expr: String,
    /// The request name it is about (`GET /x` when a method was given), or `Aggregated`.
    pub name: String,
    /// `p95`, `avg`, `max`, `min`, `fail_ratio`, `rps`.
    pub metric: String,
    /// `<`, `<=`, `>` or `>=`.
    pub op: String,
    /// The threshold, in `unit`.
    pub threshold: f64,
    /// `ms`, `ratio` or `req/s`.
    pub unit: String,
    /// The value measured over the run; `null` when nothing could be measured (then the check failed).
    pub measured: Option<f64>,
    /// Whether the check held.
    pub passed: bool,
    /// Why nothing was measured, or that the run had saturated intervals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl CheckResult {
    /// `412.3 ms`, `0.0120`, `231.4 req/s`.
    pub fn measured_text(&self) -> String {
        self.measured
            .map_or_else(|| "not measured".into(), |v| format_value(v, &self.unit))
    }

    /// `< 300 ms`
    pub fn expected_text(&self) -> String {
        format!("{} {}", self.op, format_value(self.threshold, &self.unit))
    }
}

fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "ratio" => format!("{value:.4}"),
        "ms" => format!("{value:.1} ms"),
        _ => format!("{value:.1} {unit}"),
    }
}

/// Every check of a run, evaluated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Each check, in the order given.
    pub checks: Vec<CheckResult>,
    /// History intervals the resource guard (or a worker's) marked as saturated.
    pub saturated_intervals: u64,
    /// History intervals with the generator's state.
    pub intervals: u64,
    /// Seconds of the run marked saturated and left out of the checks (0 when none were marked, or when the run's
    /// statistics did not keep its unmarked seconds).
    #[serde(default)]
    pub excluded_seconds: u64,
    /// Requests that finished in those seconds, left out.
    #[serde(default)]
    pub excluded_requests: u64,
    /// The seconds the checks were judged on (the run's duration without the marked seconds).
    #[serde(default)]
    pub evaluated_seconds: f64,
}

impl CheckReport {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// Whether a check on the aggregate's failure ratio was given: it then decides about failed requests.
    pub(crate) fn has_aggregate_fail_ratio(&self) -> bool {
        self.checks
            .iter()
            .any(|c| c.metric == "fail_ratio" && c.name == cicada_stats::AGGREGATED_NAME)
    }

    /// The checks' part of the console summary.
    pub fn summary_text(&self) -> String {
        let mut text = String::new();
        if self.checks.is_empty() {
            return text;
        }
        let failed = self.checks.iter().filter(|c| !c.passed).count();
        let _ = writeln!(
            text,
            "\nChecks: {} of {} passed",
            self.checks.len() - failed,
            self.checks.len()
        );
        for check in &self.checks {
            let _ = writeln!(
                text,
                "  {}  {:<32} measured {:<16} expected {}{}",
                if check.passed { "PASS" } else { "FAIL" },
                check.expr,
                check.measured_text(),
                check.expected_text(),
                check
                    .note
                    .as_ref()
                    .filter(|_| check.measured.is_none())
                    .map_or_else(String::new, |note| format!(" ({note})"))
            );
        }
        if let Some(note) = self.saturation_note() {
            let _ = writeln!(text, "  {note}");
        }
        text
    }

    /// What the saturated intervals mean for the checks, when there were any.
    pub fn saturation_note(&self) -> Option<String> {
        if self.excluded_seconds > 0 {
            return Some(format!(
                "The generator was marked saturated for {} s of the run: the checks were evaluated over the other \
                 {:.0} s, leaving out the {} requests that finished while it was saturated.",
                self.excluded_seconds, self.evaluated_seconds, self.excluded_requests
            ));
        }
        (self.saturated_intervals > 0).then(|| {
            format!(
                "The generator was marked saturated in {} of {} intervals: the checks were evaluated over the whole \
                 run, those intervals included, so a failed response-time or rate check may be the generator's own \
                 delay.",
                self.saturated_intervals, self.intervals
            )
        })
    }
}

/// Evaluate `checks` over the final statistics: over the seconds not marked saturated when `unmarked` has marked
/// ones, else over the whole run; `history` tells which intervals were saturated.
pub fn evaluate(
    checks: &[Check],
    snapshot: &StatsSnapshot,
    unmarked: Option<&UnmarkedSnapshot>,
    history: &[HistoryPoint],
) -> CheckReport {
    let measured_on = Measured::of(snapshot, unmarked);
    let excluding = unmarked.filter(|unmarked| unmarked.marked_seconds > 0);
    let intervals = history.iter().filter(|p| p.generator.is_some()).count() as u64;
    let saturated_intervals = history
        .iter()
        .filter(|p| p.generator.is_some_and(|g| g.saturated))
        .count() as u64;
    let checks = checks
        .iter()
        .map(|check| {
            let (measured, mut note) = match check.find(measured_on) {
                Ok(entry) => match check.metric.measure(entry) {
                    Some(value) => (Some(value), None),
                    None if excluding.is_some() => (
                        None,
                        Some(format!(
                            "every request of `{}` finished while the generator was saturated",
                            check.name()
                        )),
                    ),
                    None => (None, Some(format!("no requests of `{}`", check.name()))),
                },
                Err(_)
                    if excluding.is_some() && check.find(Measured::of(snapshot, None)).is_ok() =>
                {
                    (
                        None,
                        Some(format!(
                            "every request of `{}` finished while the generator was saturated",
                            check.name()
                        )),
                    )
                }
                Err(reason) => (None, Some(reason)),
            };
            if measured.is_some() {
                if excluding.is_some() {
                    note = Some("measured over the seconds the generator was not saturated".into());
                } else if saturated_intervals > 0 && check.metric != Metric::FailRatio {
                    note = Some("measured over a run with saturated intervals".into());
                }
            }
            CheckResult {
                expr: check.expr.clone(),
                name: check.name(),
                metric: check.metric.label(),
                op: check.op.as_str().into(),
                threshold: check.threshold,
                unit: check.metric.unit().into(),
                measured,
                passed: measured.is_some_and(|m| check.op.holds(m, check.threshold)),
                note,
            }
        })
        .collect();
    CheckReport {
        checks,
        saturated_intervals,
        intervals,
        excluded_seconds: excluding.map_or(0, |unmarked| unmarked.marked_seconds),
        excluded_requests: excluding.map_or(0, |unmarked| unmarked.excluded_requests),
        evaluated_seconds: excluding.map_or(snapshot.duration, |unmarked| unmarked.unmarked_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(method: &str, name: &str, requests: u64, failures: u64) -> EntryStats {
        EntryStats {
            method: method.into(),
            name: name.into(),
            num_requests: requests,
            num_failures: failures,
            min_ms: 10.0,
            max_ms: 900.0,
            avg_ms: 120.0,
            total_rps: 250.0,
            percentiles: PERCENTILES.iter().map(|q| (*q, q * 1000.0)).collect(),
            ..EntryStats::default()
        }
    }

    fn snapshot() -> StatsSnapshot {
        StatsSnapshot {
            entries: vec![
                entry("GET", "/items/[id]", 100, 0),
                entry("GET", "/cart", 10, 5),
                entry("POST", "/cart", 10, 0),
            ],
            total: entry("", "Aggregated", 120, 5),
            ..StatsSnapshot::default()
        }
    }

    #[test]
    fn the_grammar_reads_every_documented_form() {
        let check = Check::parse(" p95<300ms ").unwrap();
        assert_eq!(check.expr, "p95<300ms");
        assert_eq!(
            (check.metric, check.op, check.threshold),
            (Metric::Percentile(0.95), Op::Less, 300.0)
        );
        assert_eq!(check.target, None);
        assert_eq!(Check::parse("p99<1s").unwrap().threshold, 1000.0);
        assert_eq!(Check::parse("p999 <= 2.5s").unwrap().op, Op::LessOrEqual);
        assert_eq!(
            Check::parse("p999<2s").unwrap().metric,
            Metric::Percentile(0.999)
        );
        assert_eq!(
            Check::parse("p9999<2s").unwrap().metric,
            Metric::Percentile(0.9999)
        );
        assert_eq!(Check::parse("avg<100ms").unwrap().metric, Metric::Avg);
        assert_eq!(Check::parse("fail_ratio<0.01").unwrap().threshold, 0.01);
        assert_eq!(Check::parse("fail_ratio<=1%").unwrap().threshold, 0.01);
        let rps = Check::parse("rps>=200").unwrap();
        assert_eq!(
            (rps.metric, rps.op, rps.threshold),
            (Metric::Rps, Op::GreaterOrEqual, 200.0)
        );
        assert_eq!(Check::parse("rps>200/s").unwrap().threshold, 200.0);
        let named = Check::parse("/items/[id]:p99<500ms").unwrap();
        assert_eq!(
            named.target,
            Some(CheckTarget {
                method: None,
                name: "/items/[id]".into()
            })
        );
        let with_method = Check::parse("POST /cart:max<2s").unwrap();
        assert_eq!(
            with_method.target,
            Some(CheckTarget {
                method: Some("POST".into()),
                name: "/cart".into()
            })
        );
        // A name may hold colons itself: the last colon before the metric separates them.
        let url = Check::parse("http://127.0.0.1/x:avg<5ms").unwrap();
        assert_eq!(url.target.unwrap().name, "http://127.0.0.1/x");
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (text, says) in [
            ("p95", "no comparison"),
            ("p95<300", "needs a unit"),
            ("p42<1s", "unknown metric `p42`"),
            ("p100<1s", "unknown metric"),
            ("latency<1s", "unknown metric `latency`"),
            ("<1s", "metric is missing"),
            ("p95<", "value is missing"),
            ("p95<fast", "not a duration"),
            ("p95<-3ms", "not a number"),
            ("fail_ratio<2", "more than 1"),
            ("rps>-1", "not a number"),
            (":p95<1s", "name before `:` is empty"),
        ] {
            let error = Check::parse(text).unwrap_err();
            assert_eq!(error.expr, text);
            assert!(error.to_string().contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn checks_are_measured_on_their_entry() {
        let checks: Vec<Check> = [
            "p95<1s",
            "p95<900ms",
            "/items/[id]:avg<=120ms",
            "/cart:p50<1s",
            "GET /cart:fail_ratio<0.5",
            "POST /cart:fail_ratio<0.5",
            "/nothing:p95<1s",
            "rps>100",
            "min>=10ms",
        ]
        .iter()
        .map(|t| Check::parse(t).unwrap())
        .collect();
        let report = evaluate(&checks, &snapshot(), None, &[]);
        let passed: Vec<bool> = report.checks.iter().map(|c| c.passed).collect();
        assert_eq!(
            passed,
            [true, false, true, false, false, true, false, true, true]
        );
        assert_eq!(report.checks[0].measured, Some(950.0));
        assert!(
            report.checks[3]
                .note
                .as_ref()
                .unwrap()
                .contains("GET /cart:p50<1s")
        );
        assert!(
            report.checks[6]
                .note
                .as_ref()
                .unwrap()
                .contains("no request named")
        );
        assert_eq!(report.checks[4].name, "GET /cart");
        assert!(!report.passed());
        assert!(report.summary_text().contains("5 of 9 passed"));
    }

    #[test]
    fn only_monotone_checks_are_judged_early() {
        let snapshot = snapshot();
        let measured = Measured::of(&snapshot, None);
        let cannot_pass = |expr: &str| Check::parse(expr).unwrap().cannot_pass(measured);
        assert!(cannot_pass("max<500ms"));
        assert!(!cannot_pass("max<1s"));
        assert!(cannot_pass("min>20ms"));
        // Broken now, but can still recover.
        assert!(!cannot_pass("p95<100ms"));
        assert!(!cannot_pass("fail_ratio<0.01"));
        assert!(!cannot_pass("max>5s"));
        assert!(Check::parse("p95<100ms").unwrap().fails_now(measured));
    }

    #[test]
    fn abort_rules_follow_a_check() {
        let check = Check::parse("max<2s abort").unwrap();
        assert_eq!(check.abort, Some(AbortRule::CannotPass));
        assert_eq!((check.metric, check.threshold), (Metric::Max, 2_000.0));
        assert_eq!(check.expr, "max<2s abort");
        let check = Check::parse("/cart:p95 < 300ms  abort-after 1m30s").unwrap();
        assert_eq!(
            check.abort,
            Some(AbortRule::FailingFor(Duration::from_secs(90)))
        );
        assert_eq!(check.name(), "/cart");
        assert_eq!(check.threshold, 300.0);
        assert_eq!(Check::parse("p95<1s").unwrap().abort, None);
        // A name may end in "abort": only a separate word after the value is the rule.
        assert_eq!(Check::parse("/abort:max<1s").unwrap().abort, None);
        let error = Check::parse("p95<300ms abort").unwrap_err();
        assert!(error.reason.contains("abort-after"), "{error}");
        let error = Check::parse("p95<300ms abort-after soon").unwrap_err();
        assert!(error.reason.contains("30s"), "{error}");
    }

    #[test]
    fn marked_seconds_are_left_out_when_the_run_kept_them() {
        let whole = snapshot();
        let mut fast_total = entry("", "Aggregated", 350, 0);
        fast_total.percentiles = vec![(0.95, 90.0)];
        let unmarked = UnmarkedSnapshot {
            entries: vec![entry("GET", "/items/[id]", 350, 0)],
            total: fast_total,
            run_secs: 20.0,
            unmarked_secs: 17.0,
            marked_seconds: 3,
            excluded_requests: 50,
            ..UnmarkedSnapshot::default()
        };
        let checks = [
            Check::parse("p95<100ms").unwrap(),
            Check::parse("GET /cart:p95<1s").unwrap(),
        ];
        let report = evaluate(&checks, &whole, Some(&unmarked), &[]);
        assert_eq!(report.checks[0].measured, Some(90.0));
        assert!(report.checks[0].passed);
        // `GET /cart` had requests only in marked seconds.
        assert!(!report.checks[1].passed);
        assert!(
            report.checks[1]
                .note
                .as_ref()
                .unwrap()
                .contains("saturated")
        );
        assert_eq!((report.excluded_seconds, report.excluded_requests), (3, 50));
        assert!(
            report.summary_text().contains("for 3 s of the run"),
            "{}",
            report.summary_text()
        );
        // Without marked seconds the whole run counts, as without unmarked statistics.
        let none_marked = UnmarkedSnapshot::default();
        let report = evaluate(&checks[..1], &whole, Some(&none_marked), &[]);
        assert_eq!(report.checks[0].measured, Some(950.0));
        assert_eq!(report.excluded_seconds, 0);
    }

    #[test]
    fn saturated_intervals_are_said() {
        let mut points = vec![HistoryPoint::default(); 4];
        for (i, point) in points.iter_mut().enumerate() {
            point.generator = Some(cicada_stats::GeneratorSample {
                saturated: i == 2,
                ..Default::default()
            });
        }
        let report = evaluate(
            &[Check::parse("p95<1s").unwrap()],
            &snapshot(),
            None,
            &points,
        );
        assert_eq!((report.saturated_intervals, report.intervals), (1, 4));
        assert!(report.checks[0].passed);
        assert!(report.checks[0].note.is_some());
        assert!(
            report
                .summary_text()
                .contains("saturated in 1 of 4 intervals")
        );
    }
}
