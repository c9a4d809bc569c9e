//! Reports at the end of a run (console summary, CSV, Locust's JSON, cicada's JSON, HTML), the console's
//! destination, the exit code of a lost report, and the task-ratio table.
//!
//! The formats themselves live in `cicada_stats::report`; this module decides which ones a run writes, where, and
//! with which run metadata. [`output`] checks every report path before the test starts and writes each report so
//! that it is complete or absent. At the end every report is attempted, whatever happened to the others; those
//! that could not be written are listed together and the run exits with [`EXIT_REPORT_FAILED`].

mod output;

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use cicada_stats::report::{console, csv, json, locust};
use cicada_stats::{Stats, StatsSnapshot};

use crate::checks::CheckReport;
use crate::cluster::health::ClusterReport;
use crate::guard::{Guard, GuardActionKind, GuardReport};
use crate::options::Options;
use crate::user::arrival::ArrivalReport;
use crate::user::run::UserKind;
use crate::user::schedule::ScheduleReport;

pub(crate) use output::{HistoryCsv, ReportOutputs, WriteFailure};

/// Exit code when a report could not be written at the end (disk full, directory removed, stdout closed under
/// `--json`); the other reports are still written. It wins over [`crate::EXIT_GUARD_STOPPED`] and
/// `--exit-code-on-error`.
pub const EXIT_REPORT_FAILED: i32 = 5;

/// Reports that could not be written at the end, each with its flag, path and reason.
#[derive(Debug)]
pub(crate) struct ReportsFailed(pub(crate) Vec<WriteFailure>);

impl std::fmt::Display for ReportsFailed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [only] => write!(formatter, "a report could not be written: {only}"),
            failures => {
                write!(
                    formatter,
                    "{} reports could not be written:",
                    failures.len()
                )?;
                for failure in failures {
                    write!(formatter, "\n  {failure}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ReportsFailed {}

/// Print a table (periodic stats or the final summary): to stdout, or to stderr under `--json`, which keeps stdout
/// for the JSON alone (Locust prints its tables to stderr in every mode).
pub(crate) fn print_console(options: &Options, text: &str) {
    // A closed console is no reason to stop a test; the reports are files.
    if options.json {
        let mut out = std::io::stderr().lock();
        let _ = writeln!(out, "{text}");
    } else {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

/// Everything the final reports say about a run.
pub(crate) struct FinalRun<'a> {
    pub(crate) snapshot: &'a StatsSnapshot,
    /// The checks, evaluated (empty without checks).
    pub(crate) checks: &'a CheckReport,
    pub(crate) guard: Option<&'a GuardReport>,
    /// A master's view of its workers' capacity.
    pub(crate) cluster: Option<&'a ClusterReport>,
    pub(crate) schedules: &'a [ScheduleReport],
    /// Arrival-rate types' iterations (empty when the test has none).
    pub(crate) arrival: &'a [ArrivalReport],
    pub(crate) run_time: Duration,
    pub(crate) host: &'a str,
    pub(crate) stop_reason: &'a str,
    pub(crate) started_unix_ms: u64,
    /// What the `--otlp-endpoint` exporter did.
    pub(crate) otlp: Option<&'a crate::metrics::otlp::OtlpReport>,
}

/// Print the summary and write every report the options ask for into the files checked at the start. Every report
/// is attempted; the error lists those that failed.
pub(crate) fn write_final(
    options: &Options,
    stats: &Stats,
    run: &FinalRun<'_>,
    outputs: ReportOutputs,
    history: Option<HistoryCsv>,
) -> Result<(), ReportsFailed> {
    let snapshot = run.snapshot;
    print_console(options, &summary_text(run));
    let mut failures = Vec::new();

    let locust_entries = if options.json || outputs.locust_json.is_some() {
        locust::entries(&stats.entry_details())
    } else {
        Vec::new()
    };
    if options.json {
        let mut out = std::io::stdout().lock();
        let printed = locust::write_json_to(&mut out, &locust_entries)
            .map_err(|error| output::reason(&error))
            .and_then(|()| {
                writeln!(out)
                    .and_then(|()| out.flush())
                    .map_err(|error| error.to_string())
            });
        if let Err(reason) = printed {
            failures.push(WriteFailure {
                flag: "--json",
                path: "stdout".into(),
                reason,
            });
        }
    }
    let mut attempt =
        |file: &output::OutputFile,
         contents: &dyn Fn(&mut dyn std::io::Write) -> Result<(), String>| {
            if let Err(failure) = file.write(|out| contents(out)) {
                failures.push(failure);
            }
        };
    let from_stats = |error: cicada_stats::report::ReportError| output::reason(&error);
    if let Some(files) = &outputs.csv {
        attempt(&files.stats, &|out| {
            csv::write_stats_to(out, snapshot).map_err(from_stats)
        });
        attempt(&files.failures, &|out| {
            csv::write_failures_to(out, snapshot).map_err(from_stats)
        });
        attempt(&files.exceptions, &|out| {
            csv::write_exceptions_to(out, snapshot).map_err(from_stats)
        });
    }
    if let Some(file) = &outputs.html {
        let data = report_data(&ReportInputs {
            snapshot,
            history: downsample(stats.history(), 2_000),
            guard: run.guard,
            cluster: run.cluster,
            schedules: run.schedules,
            arrival: run.arrival,
            host: run.host,
            started_unix_ms: run.started_unix_ms,
            duration: run.run_time,
            flags: &options.summary(),
        });
        let mut data = data;
        data["checks"] = checks_json(run.checks);
        let html = html_report(&data);
        attempt(file, &|out| {
            out.write_all(html.as_bytes())
                .map_err(|error| error.to_string())
        });
    }
    if let Some(file) = &outputs.locust_json {
        attempt(file, &|out| {
            locust::write_json_to(out, &locust_entries).map_err(from_stats)
        });
    }
    if let Some(file) = &outputs.report_json {
        let report = RunReport {
            report: json::JsonReport {
                stats: snapshot.clone(),
                history: stats.history(),
            },
            generator: run.guard.cloned(),
            cluster: run.cluster.cloned(),
            schedule: run.schedules.to_vec(),
            arrival: run.arrival.to_vec(),
            checks: run.checks.checks.clone(),
            checks_saturated_intervals: run.checks.saturated_intervals,
            checks_excluded_seconds: run.checks.excluded_seconds,
            checks_excluded_requests: run.checks.excluded_requests,
            otlp: run.otlp.cloned(),
        };
        attempt(file, &|out| {
            serde_json::to_writer_pretty(out, &report).map_err(|error| error.to_string())
        });
    }
    if let Some(file) = &outputs.junit {
        let xml = crate::checks::junit::junit_xml(run.checks, snapshot, run.run_time.as_secs_f64());
        attempt(file, &|out| {
            out.write_all(xml.as_bytes())
                .map_err(|error| error.to_string())
        });
    }
    if let Some(path) =
        std::env::var_os(crate::checks::github::SUMMARY_ENV).filter(|p| !p.is_empty())
    {
        let markdown = crate::checks::github::summary_markdown(
            run.checks,
            snapshot,
            run.host,
            run.stop_reason,
        );
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(markdown.as_bytes()));
        if let Err(error) = appended {
            failures.push(WriteFailure {
                flag: crate::checks::github::SUMMARY_ENV,
                path: path.into(),
                reason: format!("cannot append the job summary: {error}"),
            });
        }
    }
    if let Some(history) = history
        && let Err(failure) = history.finish()
    {
        failures.push(failure);
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ReportsFailed(failures))
    }
}

/// The final summary: how the test ended, Locust's tables, the guard's verdict and the paced users' lateness.
fn summary_text(run: &FinalRun<'_>) -> String {
    let snapshot = run.snapshot;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "\nTest finished ({}) after {} against {}\n",
        run.stop_reason,
        humantime::format_duration(Duration::from_secs(run.run_time.as_secs())),
        run.host
    );
    text.push_str(&console::stats_table(snapshot));
    text.push('\n');
    text.push_str(&console::percentiles_table(snapshot));
    if !snapshot.failures.is_empty() {
        text.push('\n');
        text.push_str(&console::failures_table(snapshot));
    }
    if !snapshot.user_errors.is_empty() {
        text.push('\n');
        text.push_str(&console::user_errors_table(snapshot));
    }
    if snapshot.requests_cut_off > 0 {
        let _ = writeln!(
            text,
            "\n{} requests were cut off before their response arrived (their users were stopped): they are not \
             counted as requests or failures{}",
            snapshot.requests_cut_off,
            if snapshot.total.num_requests == 0 {
                ", and no request got a response: the target did not answer"
            } else {
                ""
            }
        );
    }
    text.push_str(&run.checks.summary_text());
    if let Some(guard) = run.guard {
        text.push('\n');
        text.push_str(&guard_summary(guard));
    }
    if let Some(cluster) = run.cluster {
        text.push_str(&cluster_summary(cluster));
    }
    for arrival in run.arrival {
        text.push_str(&arrival_line(arrival));
    }
    for schedule in run.schedules.iter().filter(|s| s.task_starts > 0) {
        let _ = writeln!(
            text,
            "Paced user type {}: {} of {} task starts were late against the {:.0} ms pacing (p50 {:.1} ms, \
             p99 {:.1} ms, worst {:.1} ms late){}",
            schedule.user_type,
            schedule.late_starts,
            schedule.task_starts,
            schedule.period_ms,
            schedule.p50_late_ms,
            schedule.p99_late_ms,
            schedule.max_late_ms,
            if schedule.late_starts > 0 {
                ": the promised rate was not kept, and requests that should have been sent were not measured"
            } else {
                ""
            }
        );
    }
    text
}

/// What the HTML report (and `/report.json`) is made from.
pub(crate) struct ReportInputs<'a> {
    pub(crate) snapshot: &'a StatsSnapshot,
    pub(crate) history: Vec<cicada_stats::HistoryPoint>,
    pub(crate) guard: Option<&'a GuardReport>,
    pub(crate) cluster: Option<&'a ClusterReport>,
    pub(crate) schedules: &'a [ScheduleReport],
    pub(crate) arrival: &'a [ArrivalReport],
    pub(crate) host: &'a str,
    pub(crate) started_unix_ms: u64,
    pub(crate) duration: Duration,
    pub(crate) flags: &'a str,
}

/// The data of the HTML report, as its viewer reads it.
pub(crate) fn report_data(inputs: &ReportInputs<'_>) -> serde_json::Value {
    let duration = inputs.duration.as_secs_f64();
    serde_json::json!({
        "title": format!("cicada report: {}", inputs.host),
        "host": inputs.host,
        "started_unix_ms": inputs.started_unix_ms,
        "ended_unix_ms": inputs.started_unix_ms + (duration * 1e3) as u64,
        "duration_seconds": duration,
        "flags": inputs.flags,
        "stats": {
            "entries": inputs.snapshot.entries,
            "total": inputs.snapshot.total,
            "failures": inputs.snapshot.failures,
            "user_errors": inputs.snapshot.user_errors,
        },
        "history": inputs.history,
        "generator": inputs.guard,
        "cluster": inputs.cluster,
        "schedule": inputs.schedules,
        "arrival": inputs.arrival,
    })
}

/// One self-contained HTML file: the report viewer with the data inlined (no network needed to open it).
pub(crate) fn html_report(data: &serde_json::Value) -> String {
    // `</script>` inside a request name would end the script element early: `<` only occurs inside JSON strings,
    // where `\u003c` means the same.
    let json = serde_json::to_string(data)
        .unwrap_or_else(|_| "{}".to_string())
        .replace('<', "\\u003c");
    crate::assets::REPORT_HTML.replacen(crate::assets::REPORT_PLACEHOLDER, &json, 1)
}

/// The JSON report: the stats, their history and what the resource guard saw and did.
#[derive(serde::Serialize)]
struct RunReport {
    #[serde(flatten)]
    report: json::JsonReport,
    generator: Option<GuardReport>,
    /// A master's view of its workers' capacity; absent in a single-process run.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterReport>,
    schedule: Vec<ScheduleReport>,
    /// Arrival-rate types: iterations due, started, completed and dropped (with why); absent without such types.
    /// Per interval, the history points' `generator.iterations_started` / `iterations_dropped`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    arrival: Vec<ArrivalReport>,
    /// Each check with its measured value (empty without checks).
    checks: Vec<crate::checks::CheckResult>,
    /// History intervals marked saturated.
    checks_saturated_intervals: u64,
    /// Seconds marked saturated that the checks left out (0 without checks or marks).
    checks_excluded_seconds: u64,
    /// Requests that finished in those seconds, left out of the checks.
    checks_excluded_requests: u64,
    /// The OTLP exporter's counts (exported, failed, dropped); absent without `--otlp-endpoint`.
    #[serde(skip_serializing_if = "Option::is_none")]
    otlp: Option<crate::metrics::otlp::OtlpReport>,
}

/// The final summary's line about one arrival-rate type.
fn arrival_line(arrival: &ArrivalReport) -> String {
    let mut line = format!(
        "Arrival-rate type {}: {} iterations due over {:.1} s, {} started ({} completed), {} dropped",
        arrival.user_type,
        arrival.due,
        arrival.active_s,
        arrival.started,
        arrival.completed,
        arrival.dropped
    );
    if arrival.dropped > 0 {
        let mut reasons = Vec::new();
        if arrival.dropped_max_concurrent > 0 {
            reasons.push(format!(
                "{} with all {} instances busy (raise --max-concurrent, or the target is too slow for the rate)",
                arrival.dropped_max_concurrent, arrival.max_concurrent
            ));
        }
        if arrival.dropped_guard > 0 {
            reasons.push(format!(
                "{} while the resource guard held the generator",
                arrival.dropped_guard
            ));
        }
        if arrival.dropped_late > 0 {
            reasons.push(format!(
                "{} because the generator was more than a period late",
                arrival.dropped_late
            ));
        }
        line.push_str(&format!(": {}", reasons.join("; ")));
    }
    line.push_str(&format!(
        "; at most {} running at once\n",
        arrival.peak_concurrent
    ));
    line
}

/// The checks as the HTML report's viewer reads them.
fn checks_json(checks: &CheckReport) -> serde_json::Value {
    serde_json::json!({
        "results": checks.checks,
        "note": checks.saturation_note(),
    })
}

/// One line under the periodic stats table: the generator's own state.
pub(crate) fn generator_line(guard: &Guard, held_back: u64) -> String {
    let Some(usage) = guard.latest() else {
        return String::new();
    };
    let report = guard.report_with_actions(0);
    let mut line = format!(
        "Generator: CPU {:.0}% of {:.2} cores | RSS {} MiB | scheduler lag {} ms | saturated {:.0}% of the run",
        usage.cpu_percent_of_available,
        report.limits.cores_available,
        usage.rss_bytes >> 20,
        usage.max_lag.as_millis(),
        report.saturated_share * 100.0
    );
    if held_back > 0 {
        let _ = write!(line, " | the guard holds {held_back} users back");
    }
    line.push('\n');
    line
}

/// The final summary of the workers' capacity: said only when a worker was over its limits or users were held
/// back.
fn cluster_summary(cluster: &ClusterReport) -> String {
    use crate::cluster::health::ClusterActionKind;
    let capped = cluster
        .actions
        .iter()
        .filter(|a| a.kind == ClusterActionKind::WorkerCapped)
        .count();
    let adopted = cluster
        .actions
        .iter()
        .filter(|a| a.kind == ClusterActionKind::Adopted)
        .count();
    let mut text = String::new();
    if capped > 0 || cluster.hold_seconds > 0.0 || cluster.saturated_worker_seconds > 0 {
        let _ = writeln!(
            text,
            "\nWorkers' capacity: a worker went over its limits {capped} time{} (its users moved to workers with \
             room); the cluster held users back for {:.0} s; worker guards marked {} worker-seconds with users as \
             saturated (those intervals are marked in the history).",
            if capped == 1 { "" } else { "s" },
            cluster.hold_seconds,
            cluster.saturated_worker_seconds
        );
    }
    if adopted > 0 {
        let _ = writeln!(
            text,
            "\nThis master adopted {adopted} workers that were already running the test (a restarted master):              statistics before its start are those the workers still held."
        );
    }
    text
}

/// The final summary of the resource guard.
fn guard_summary(guard: &GuardReport) -> String {
    let mut text = String::from("Load generator (resource guard, ");
    let _ = writeln!(
        text,
        "{}): peak CPU {:.0}% of {:.2} cores, peak RSS {} MiB of {} MiB allowed, worst scheduler lag {:.0} ms",
        guard.mode,
        guard.peak_cpu_percent,
        guard.limits.cores_available,
        guard.peak_rss_bytes >> 20,
        guard.limits.max_memory_bytes >> 20,
        guard.peak_lag_ms
    );
    if guard.saturated_samples > 0 {
        let _ = writeln!(
            text,
            "WARNING: the generator was saturated during {:.1}% of the run ({} of {} seconds): response times measured \
             then include the generator's own delays and are not reliable.",
            guard.saturated_share * 100.0,
            guard.saturated_samples,
            guard.samples
        );
    } else {
        let _ = writeln!(
            text,
            "The generator was never saturated: its measurements are trustworthy."
        );
    }
    if guard.users_shed > 0 || guard.spawn_paused_seconds > 0.0 {
        let _ = writeln!(
            text,
            "The guard paused spawning for {:.0} s and stopped {} users to protect the run.",
            guard.spawn_paused_seconds, guard.users_shed
        );
    }
    if let Some(reason) = &guard.stopped_test {
        let _ = writeln!(text, "The guard stopped the test: {reason}.");
    }
    let acted: Vec<_> = guard
        .actions
        .iter()
        .filter(|a| !matches!(a.kind, GuardActionKind::CpuWarning))
        .collect();
    if !acted.is_empty() {
        let _ = writeln!(text, "Guard actions:");
        for action in acted.iter().take(20) {
            let _ = writeln!(
                text,
                "  {:>7.1}s  {:<18} users {:<6} {}",
                action.run_seconds,
                format!("{:?}", action.kind),
                action.users,
                if action.users_shed > 0 {
                    format!("stopped {} ({})", action.users_shed, action.reason)
                } else {
                    action.reason.clone()
                }
            );
        }
        if acted.len() > 20 {
            let _ = writeln!(
                text,
                "  ... and {} more (see the JSON report)",
                acted.len() - 20
            );
        }
    }
    text
}

/// `/tasks` of the web UI: each user type's share of users and its tasks' shares.
pub(crate) fn tasks_json(types: &[Box<dyn UserKind>]) -> serde_json::Value {
    let weighted: u64 = types
        .iter()
        .filter(|t| t.fixed_count().is_none())
        .map(|t| u64::from(t.weight()))
        .sum();
    let user_types: Vec<_> = types
        .iter()
        .map(|kind| {
            let share = match kind.fixed_count() {
                None if weighted > 0 => f64::from(kind.weight()) / weighted as f64,
                _ => 0.0,
            };
            serde_json::json!({
                "name": kind.name(),
                "share": share,
                "fixed_count": kind.fixed_count(),
                "tasks": kind.ratio_rows(),
            })
        })
        .collect();
    serde_json::json!({ "user_types": user_types })
}

/// `--show-task-ratio`: each user type's share of users, and each task's share of its user's time.
pub(crate) fn task_ratio_table(types: &[Box<dyn UserKind>]) -> String {
    let weighted: u64 = types
        .iter()
        .filter(|t| t.fixed_count().is_none())
        .map(|t| u64::from(t.weight()))
        .sum();
    let mut text = String::from("\n Task ratio per user type and total task ratio\n\n");
    for kind in types {
        let share = match kind.fixed_count() {
            Some(count) => format!("fixed count {count}"),
            None if weighted > 0 => {
                format!("{:.1}%", 100.0 * f64::from(kind.weight()) / weighted as f64)
            }
            None => "0.0%".to_string(),
        };
        let _ = writeln!(text, "{} ({share})", kind.name());
        for row in kind.ratio_rows() {
            let _ = writeln!(
                text,
                "{:indent$}{:>6.1}%  {:>6.1}% of all  {}",
                "",
                100.0 * row.share,
                100.0 * row.total_share,
                row.name,
                indent = 4 + 4 * row.depth
            );
        }
    }
    text
}

/// History for charts (the web UI and the HTML report): at most `max` points.
/// Keep at most `max` points of `points`: the last of each bucket, saturated if any point in it was.
pub(crate) fn downsample(
    points: Vec<cicada_stats::HistoryPoint>,
    max: usize,
) -> Vec<cicada_stats::HistoryPoint> {
    let max = max.max(2);
    if points.len() <= max {
        return points;
    }
    let bucket = points.len().div_ceil(max);
    points
        .chunks(bucket)
        .map(|chunk| {
            let mut last = chunk[chunk.len() - 1].clone();
            let saturated = chunk
                .iter()
                .any(|p| p.generator.is_some_and(|g| g.saturated));
            if let Some(generator) = last.generator.as_mut() {
                generator.saturated = saturated;
            }
            last
        })
        .collect()
}

#[cfg(test)]
mod downsample_tests {
    use cicada_stats::{GeneratorSample, HistoryPoint};

    use super::downsample;

    #[test]
    fn downsampling_keeps_saturation_and_the_bound() {
        let points: Vec<HistoryPoint> = (0..10_000)
            .map(|i| {
                let mut point = HistoryPoint::default();
                point.unix_ms = i;
                point.generator = Some(GeneratorSample {
                    saturated: i == 4_321,
                    ..GeneratorSample::default()
                });
                point
            })
            .collect();
        let kept = downsample(points, 2_000);
        assert!(kept.len() <= 2_000);
        assert_eq!(kept.last().unwrap().unix_ms, 9_999);
        assert_eq!(
            kept.iter()
                .filter(|p| p.generator.unwrap().saturated)
                .count(),
            1
        );
    }
}
