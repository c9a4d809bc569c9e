//! Arrival-rate user types (the open model) against the demo target: the rate is held by the schedule's own count,
//! iterations the bound prevented are dropped and reported (JSON report, history, history CSV), the server saw every
//! started iteration, a ramp follows its stages, a load shape sets a rate, the command line overrides the code, and
//! a cluster splits the rate over its workers and sums their counts.

use std::time::Duration;

use cicada::prelude::*;
use cicada_demo::Route;
use serde_json::Value;

use crate::common::{DemoTarget, Process, free_port, read_csv, run_example, run_test};

async fn slow_200(user: &mut User) -> TaskResult {
    user.get("/slow?ms=200").send().await?;
    Ok(())
}

async fn slow_100(user: &mut User) -> TaskResult {
    user.get("/slow?ms=100").send().await?;
    Ok(())
}

async fn slow_20(user: &mut User) -> TaskResult {
    user.get("/slow?ms=20").send().await?;
    Ok(())
}

async fn fast(user: &mut User) -> TaskResult {
    user.get("/fast").send().await?;
    Ok(())
}

/// The report's `arrival` entry of the one arrival-rate type.
fn arrival(report: &Value) -> &Value {
    let entries = report["arrival"].as_array().expect("an arrival section");
    assert_eq!(entries.len(), 1, "{entries:?}");
    &entries[0]
}

fn count(entry: &Value, field: &str) -> u64 {
    entry[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {entry}"))
}

/// `(due, started, dropped)` of an arrival entry; every due iteration was either started or dropped.
fn due_started_dropped(entry: &Value) -> (u64, u64, u64) {
    let (due, started, dropped) = (
        count(entry, "due"),
        count(entry, "started"),
        count(entry, "dropped"),
    );
    assert_eq!(started + dropped, due, "{entry}");
    (due, started, dropped)
}

/// Per history point: (iterations started, iterations dropped).
fn history_iterations(report: &Value) -> Vec<(u64, u64)> {
    report["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|point| {
            let generator = &point["generator"];
            (
                generator["iterations_started"].as_u64().unwrap_or(0),
                generator["iterations_dropped"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn a_bound_too_small_for_a_slow_server_drops_and_counts_the_rest() {
    let target = DemoTarget::start();
    let url = target.url();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("run");
    let prefix = prefix.to_str().unwrap();
    // 100 iterations a second of 200 ms each need about 20 at once; 5 can start about 25 a second.
    let test = Cicada::new().user(
        UserType::<()>::new("Slow")
            .arrival_rate(ArrivalRate::constant(100.0).max_concurrent(5))
            .task(slow_200),
    );
    let run = run_test(
        test,
        &[
            "-H", &url, "-t", "4s", "-s", "5s", "--guard", "warn", "--csv", prefix,
        ],
    );
    assert_eq!(run.exit_code, 0);
    let entry = arrival(&run.report);
    // Every due iteration was started or dropped, and the schedule's count is the rate times its own clock.
    let (due, started, dropped) = due_started_dropped(entry);
    let completed = count(entry, "completed");
    let active_s = entry["active_s"].as_f64().unwrap();
    let expected = (100.0 * active_s).floor() + 1.0;
    assert!(
        (due as f64 - expected).abs() <= expected * 0.02,
        "due {due} against {expected} over {active_s} s"
    );
    assert!(dropped > 0, "{entry}");
    assert!(count(entry, "dropped_max_concurrent") > 0, "{entry}");
    assert!(count(entry, "peak_concurrent") <= 5, "{entry}");
    assert!(count(entry, "instances_created") <= 5, "{entry}");
    // The stop timeout let every started iteration finish, and the server saw each of them.
    assert_eq!(completed, started, "{entry}");
    assert_eq!(target.counters().route(Route::Slow), started);
    assert_eq!(run.requests("GET", "/slow?ms=200"), started);
    // The history's intervals add up to the totals.
    let history = history_iterations(&run.report);
    assert_eq!(history.iter().map(|h| h.0).sum::<u64>(), started);
    assert_eq!(history.iter().map(|h| h.1).sum::<u64>(), dropped);
    // The live history CSV has the columns, with the drops of the seconds it wrote.
    let rows = read_csv(std::path::Path::new(&format!("{prefix}_stats_history.csv")));
    let header = &rows[0];
    let column = |name: &str| header.iter().position(|h| h == name).expect(name);
    let dropped_column = column("Iterations Dropped");
    let started_column = column("Iterations Started");
    let csv_dropped: u64 = rows[1..]
        .iter()
        .filter_map(|row| row[dropped_column].parse::<u64>().ok())
        .sum();
    let csv_started: u64 = rows[1..]
        .iter()
        .filter_map(|row| row[started_column].parse::<u64>().ok())
        .sum();
    assert!(
        csv_dropped > 0 && csv_dropped <= dropped,
        "{csv_dropped} of {dropped}"
    );
    assert!(csv_started <= started, "{csv_started} of {started}");
}

#[test]
fn with_room_the_rate_is_held_and_nothing_is_dropped_for_want_of_instances() {
    let target = DemoTarget::start();
    let url = target.url();
    let test = Cicada::new().user(
        UserType::<()>::new("Steady")
            .arrival_rate(ArrivalRate::constant(50.0).max_concurrent(50))
            .task(slow_20),
    );
    let run = run_test(
        test,
        &["-H", &url, "-t", "4s", "-s", "5s", "--guard", "warn"],
    );
    assert_eq!(run.exit_code, 0);
    let entry = arrival(&run.report);
    let (_, started, _) = due_started_dropped(entry);
    assert_eq!(count(entry, "dropped_max_concurrent"), 0, "{entry}");
    assert_eq!(count(entry, "dropped_guard"), 0, "{entry}");
    let active_s = entry["active_s"].as_f64().unwrap();
    let expected = 50.0 * active_s;
    assert!(
        (started as f64 - expected).abs() <= expected * 0.02,
        "started {started} against {expected:.1} ({active_s} s by the scheduler's clock): {entry}"
    );
    assert_eq!(count(entry, "completed"), started);
    assert_eq!(target.counters().route(Route::Slow), started);
}

#[test]
fn a_ramping_rate_follows_its_stages() {
    let target = DemoTarget::start();
    let url = target.url();
    // 10/s for 2 s, up to 60/s over 2 s, then 60/s: 20 + 70 + 60 (t - 4) iterations by t >= 4 s.
    let test = Cicada::new().user(
        UserType::<()>::new("Ramp")
            .arrival_rate(
                ArrivalRate::ramping(
                    10.0,
                    [
                        Stage::new(Duration::from_secs(2), 10.0),
                        Stage::new(Duration::from_secs(2), 60.0),
                    ],
                )
                .max_concurrent(100),
            )
            .task(fast),
    );
    let run = run_test(
        test,
        &["-H", &url, "-t", "7s", "-s", "5s", "--guard", "warn"],
    );
    assert_eq!(run.exit_code, 0);
    let entry = arrival(&run.report);
    let (due, started, _) = due_started_dropped(entry);
    assert_eq!(count(entry, "dropped_max_concurrent"), 0, "{entry}");
    let active_s = entry["active_s"].as_f64().unwrap();
    assert!(active_s > 4.0, "{entry}");
    let integral = 90.0 + 60.0 * (active_s - 4.0);
    assert!(
        (due as f64 - integral).abs() <= integral * 0.02 + 1.0,
        "due {due} against the stages' {integral:.1} over {active_s} s"
    );
    assert!(started as f64 >= integral * 0.95, "{entry}");
    assert_eq!(
        target.counters().route(Route::Fast),
        count(entry, "completed")
    );
    // Per interval: the first history point (about 10/s) starts far fewer than the busiest (60/s).
    let history = history_iterations(&run.report);
    assert_eq!(history.iter().map(|h| h.0).sum::<u64>(), started);
    let first = history
        .iter()
        .find(|h| h.0 > 0)
        .expect("a point with iterations")
        .0;
    let busiest = history.iter().map(|h| h.0).max().unwrap();
    assert!(
        first * 2 < busiest,
        "first {first}, busiest {busiest}: {history:?}"
    );
}

/// A shape that keeps no looping users and runs the arrival-rate type at 40/s instead of its own 1/s.
struct FortyPerSecond;

impl LoadShape for FortyPerSecond {
    fn tick(&mut self, run_time: Duration) -> Option<Target> {
        (run_time < Duration::from_secs(3)).then_some(Target {
            users: 0,
            spawn_rate: 1.0,
            user_types: None,
        })
    }

    fn arrival_rate(&mut self, _run_time: Duration, user_type: &str) -> Option<f64> {
        (user_type == "Shaped").then_some(40.0)
    }
}

#[test]
fn a_load_shape_sets_the_rate() {
    let target = DemoTarget::start();
    let url = target.url();
    let test = Cicada::new()
        .user(
            UserType::<()>::new("Shaped")
                .arrival_rate(ArrivalRate::constant(1.0))
                .task(fast),
        )
        .shape(FortyPerSecond);
    let run = run_test(test, &["-H", &url, "-s", "5s", "--guard", "warn"]);
    assert_eq!(run.exit_code, 0);
    let entry = arrival(&run.report);
    // At its own 1/s the type would start about 3; the shape's 40/s from its first tick starts dozens.
    assert!(count(entry, "started") > 40, "{entry}");
    assert_eq!(entry["rate_per_s"].as_f64(), Some(40.0), "{entry}");
    assert_eq!(
        target.counters().route(Route::Fast),
        count(entry, "completed")
    );
}

#[test]
fn the_example_mixes_looping_users_and_an_overridden_rate_from_the_command_line() {
    let target = DemoTarget::start();
    let url = target.url();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = run_example(
        "arrival_rate",
        &[
            "--headless",
            "--only-summary",
            "-H",
            &url,
            "-u",
            "2",
            "-t",
            "3s",
            "-s",
            "3s",
            "--arrival-rate",
            "30",
            "--max-concurrent",
            "2",
            "--guard",
            "warn",
            "--report-json",
            json.to_str().unwrap(),
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let entry = arrival(&report);
    assert_eq!(entry["user_type"], "Checkout");
    assert_eq!(entry["max_concurrent"], 2);
    assert_eq!(entry["rate_per_s"].as_f64(), Some(30.0));
    // Two instances of 200 ms iterations cannot keep up with 30/s.
    assert!(count(entry, "dropped_max_concurrent") > 0, "{entry}");
    assert!(count(entry, "instances_created") <= 2, "{entry}");
    // The looping users ran beside it, and each pooled instance logged in once.
    assert!(target.counters().route(Route::Items) > 0);
    assert_eq!(
        target.counters().route(Route::Login),
        count(entry, "instances_created")
    );
    assert_eq!(
        target.counters().route(Route::Slow),
        count(entry, "completed")
    );
    assert!(stdout.contains("Arrival-rate type Checkout:"), "{stdout}");
}

#[test]
fn bad_rates_and_bounds_are_usage_errors() {
    let test = || {
        Cicada::new().user(
            UserType::<()>::new("Open")
                .arrival_rate(ArrivalRate::constant(5.0))
                .task(fast),
        )
    };
    assert_eq!(
        test().run_with_args(["test", "--headless", "--max-concurrent", "0"]),
        2
    );
    let negative = Cicada::new().user(
        UserType::<()>::new("Open")
            .arrival_rate(ArrivalRate::constant(-1.0))
            .task(fast),
    );
    assert_eq!(
        negative.run_with_args(["test", "--headless", "-t", "1s"]),
        2
    );
}

#[test]
fn a_cluster_splits_the_rate_over_its_workers_and_sums_their_counts() {
    let target = DemoTarget::start();
    let url = target.url();
    let port = free_port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json").display().to_string();
    // The master's --arrival-rate and --max-concurrent travel to its workers, each running its part (by cores).
    let master = Process::start(
        "arrival_rate",
        &[
            "--master",
            "--headless",
            "--only-summary",
            "--master-bind-port",
            &port,
            "--expect-workers",
            "2",
            "-H",
            &url,
            "-u",
            "2",
            "-t",
            "5s",
            "-s",
            "3s",
            "--arrival-rate",
            "40",
            "--max-concurrent",
            "40",
            "--report-json",
            &json,
        ],
        &[],
    );
    let worker_args = [
        "--worker",
        "--master-port",
        &port,
        "-L",
        "WARNING",
        "--guard",
        "warn",
    ];
    let workers: Vec<Process> = (0..2)
        .map(|_| Process::start("arrival_rate", &worker_args, &[]))
        .collect();
    let output = master.wait(Duration::from_secs(60));
    for worker in workers {
        let _ = worker.wait(Duration::from_secs(30));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let entry = arrival(&report);
    // Two workers with the same cores: 20/s and a bound of 20 each, summed by the master.
    assert_eq!(entry["rate_per_s"].as_f64(), Some(40.0), "{entry}");
    assert_eq!(count(entry, "max_concurrent"), 40, "{entry}");
    let (due, _, _) = due_started_dropped(entry);
    let active_s = entry["active_s"].as_f64().unwrap();
    let expected = 40.0 * active_s;
    assert!(
        (due as f64) <= expected + 2.0 && (due as f64) >= 0.8 * expected,
        "due {due} for 40/s over {active_s} s: {entry}"
    );
    // The server saw every completed iteration's checkout, and the history holds every started iteration.
    assert_eq!(
        target.counters().route(Route::Slow),
        count(entry, "completed")
    );
    let started_in_history: u64 = history_iterations(&report).iter().map(|(s, _)| s).sum();
    assert_eq!(started_in_history, count(entry, "started"));
}

#[test]
fn while_the_guard_holds_iterations_are_dropped_as_its_own_and_the_intervals_marked() {
    let target = DemoTarget::start();
    let url = target.url();
    // No process fits in 1 MiB: the guard holds the generator from its first sample, then stops the test.
    let test = Cicada::new().user(
        UserType::<()>::new("Held")
            .arrival_rate(ArrivalRate::constant(20.0))
            .task(fast),
    );
    let run = run_test(test, &["-H", &url, "-t", "20s", "--max-memory", "1MiB"]);
    assert_eq!(run.exit_code, cicada::EXIT_GUARD_STOPPED);
    let entry = arrival(&run.report);
    assert!(count(entry, "dropped_guard") > 0, "{entry}");
    due_started_dropped(entry);
    let points = run.report["history"].as_array().unwrap();
    assert!(
        points.iter().any(|p| p["generator"]["saturated"] == true
            && p["generator"]["iterations_dropped"].as_u64() > Some(0)),
        "an interval with the guard's drops is marked: {points:?}"
    );
    assert_eq!(
        target.counters().route(Route::Fast),
        count(entry, "completed")
    );
}

/// An instance that logs in when it is created and out when it leaves.
async fn log_in(user: &mut User) -> TaskResult {
    let name = format!("instance{}", user.id());
    user.post("/login")
        .form(&[("username", name.as_str()), ("password", "secret")])
        .send()
        .await?;
    Ok(())
}

async fn log_out(user: &mut User) -> TaskResult {
    user.post("/logout").send().await?;
    Ok(())
}

#[test]
fn after_a_ramp_down_the_idle_instances_are_retired_and_run_on_stop() {
    let target = DemoTarget::start();
    let url = target.url();
    // 30/s of 100 ms iterations for 2 s (about 3 instances busy), then nothing: with a 1 s idle timeout every
    // instance but the one pre-allocated is retired well before the test ends.
    let test = Cicada::new().user(
        UserType::<()>::new("Shrinking")
            .arrival_rate(
                ArrivalRate::ramping(
                    30.0,
                    [
                        Stage::new(Duration::from_secs(2), 30.0),
                        Stage::new(Duration::ZERO, 0.0),
                    ],
                )
                .pre_allocated(1)
                .idle_timeout(Duration::from_secs(1)),
            )
            .on_start(log_in)
            .on_stop(log_out)
            .task(slow_100),
    );
    let run = run_test(
        test,
        &["-H", &url, "-t", "7s", "-s", "5s", "--guard", "warn"],
    );
    assert_eq!(run.exit_code, 0);
    let entry = arrival(&run.report);
    let created = count(entry, "instances_created");
    assert!(created >= 2, "{entry}");
    assert_eq!(count(entry, "instances_retired"), created - 1, "{entry}");
    // Every instance logged in once and out once: the retired ones when they were retired, the last at the stop.
    assert_eq!(target.counters().route(Route::Login), created);
    assert_eq!(target.counters().route(Route::Logout), created);
    assert_eq!(
        target.counters().route(Route::Slow),
        count(entry, "completed")
    );
}
