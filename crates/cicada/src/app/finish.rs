//! The end of a run: the last history point while users still run, every user stopped (with `--stop-timeout`),
//! the final stats, the reserve given back, the checks evaluated, every report written, and the exit code decided (a
//! report that could not be written beats the guard's stop, which beats a failed check, which beats failed requests;
//! `on_quitting` has the last word).

use std::time::Duration;

use super::EXIT_GUARD_STOPPED;
use super::collector::Collector;
use super::driver::StopReason;
use super::setup::{RunSetup, unix_now};
use crate::guard::Guard;
use crate::report;

/// Finish the run; returns the exit code.
pub(super) async fn finish(setup: RunSetup, mut collector: Collector, reason: StopReason) -> i32 {
    collector.last_running_point(&setup);
    let RunSetup {
        options,
        events,
        reserve,
        report_outputs,
        stats,
        demo,
        host,
        env,
        runner,
        runner_task,
        guard,
        _guard_thread,
        cluster,
        cluster_health,
        started,
        started_unix_ms,
        otlp,
        web,
        ..
    } = setup;
    runner.quit();
    let _ = runner_task.await;
    if let Some(master) = cluster {
        master.shutdown().await;
    }
    if !stats.collect_final(Duration::from_secs(3)) {
        tracing::warn!("some samples were still in flight when the final stats were taken");
    }
    // The last point holds the arrival-rate types' iterations since the collector's last point.
    let mut last_point = stats.history_point(0);
    super::collector::add_arrival_interval(&mut last_point.generator, &env);
    stats.push_history_point(last_point);
    let mut history_csv = collector.take_history_csv();
    if let Some(writer) = history_csv.as_mut() {
        let _ = writer.append(&stats.snapshot(), 0, unix_now());
    }
    // The run's time ends with its users, not with the exports and reports that follow.
    let run_time = started.elapsed();
    // The final export carries the final stats; its wait is bounded (a dead collector costs at most that).
    let otlp_report = match otlp {
        Some(exporter) => Some(
            exporter
                .finish(crate::metrics::MetricsSource::of_web(&web).read())
                .await,
        ),
        None => None,
    };
    // Memory that was kept aside goes back now, for the reports.
    drop(reserve);
    let snapshot = stats.snapshot();
    let guard_report = guard.as_ref().map(Guard::report);
    let cluster_report = cluster_health.as_ref().map(|health| health.report());
    let schedules = env.schedule_reports();
    let arrival = env.arrival_reports();
    let checks = crate::checks::evaluate(
        &options.checks,
        &snapshot,
        stats.unmarked_snapshot().as_ref(),
        &stats.history(),
    );
    let final_run = report::FinalRun {
        checks: &checks,
        snapshot: &snapshot,
        guard: guard_report.as_ref(),
        cluster: cluster_report.as_ref(),
        schedules: &schedules,
        arrival: &arrival,
        run_time,
        host: &host,
        stop_reason: reason.as_str(),
        started_unix_ms,
        otlp: otlp_report.as_ref(),
    };
    let reports_failed =
        report::write_final(&options, &stats, &final_run, report_outputs, history_csv)
            .map_err(|error| eprintln!("error: {error}"))
            .is_err();
    // A run whose every request was cut off by the stop got no answer from its target: that is a failed run, though
    // cut-off requests are not failures (a healthy run stopped mid-request has a few).
    let target_silent = snapshot.requests_cut_off > 0 && snapshot.total.num_requests == 0;
    // A check on the aggregate failure ratio is the run's failure budget: it, not any single failure, decides.
    let failures_count = snapshot.total.num_failures > 0 && !checks.has_aggregate_fail_ratio();
    let had_errors = failures_count || !snapshot.user_errors.is_empty() || target_silent;
    let mut exit_code = if reports_failed {
        report::EXIT_REPORT_FAILED
    } else if guard_report
        .as_ref()
        .is_some_and(|g| g.stopped_test.is_some())
    {
        EXIT_GUARD_STOPPED
    } else if !checks.passed() {
        crate::checks::EXIT_CHECK_FAILED
    } else if had_errors {
        options.exit_code_on_error
    } else {
        0
    };
    events.fire_env("quitting", &events.quitting, &env);
    if let Some(code) = env.exit_code_override() {
        exit_code = code;
    }
    events.fire_quit(exit_code);
    if let Some(demo) = demo {
        demo.shutdown().await;
    }
    exit_code
}
