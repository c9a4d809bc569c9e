//! Checks against the demo target's fixed delays (`/slow?ms=N`): passing and failing checks with their exit codes,
//! the JSON report's `checks`, the JUnit file parsed with an XML parser, a bad expression refused before any load,
//! `--check-abort` and `abort-after` ending a run early with its reports, a failure-ratio check as the run's failure
//! budget, and checks judged on the seconds the guard did not mark saturated.

use std::time::{Duration, Instant};

use cicada::prelude::*;

use crate::common::{DemoTarget, run_test};

async fn slow(user: &mut User) -> TaskResult {
    user.get("/slow?ms=30").name("/slow").send().await?;
    Ok(())
}

async fn fast(user: &mut User) -> TaskResult {
    user.get("/fast").send().await?;
    Ok(())
}

fn test() -> Cicada {
    Cicada::new().user(
        UserType::<()>::new("Visitor")
            .wait_time(constant(0.01))
            .task(slow)
            .task(fast),
    )
}

/// `(expr, passed, measured)` of each check in a JSON report.
fn checks(report: &serde_json::Value) -> Vec<(String, bool, Option<f64>)> {
    report["checks"]
        .as_array()
        .expect("a checks list")
        .iter()
        .map(|c| {
            (
                c["expr"].as_str().unwrap().to_string(),
                c["passed"].as_bool().unwrap(),
                c["measured"].as_f64(),
            )
        })
        .collect()
}

#[test]
fn checks_that_hold_exit_0_and_a_broken_one_exits_6_with_junit() {
    let target = DemoTarget::start();
    let url = target.url();
    let base = ["-H", url.as_str(), "-u", "2", "-r", "100", "-t", "2s"];

    let mut args = base.to_vec();
    args.extend([
        "--check",
        "/slow:p50>=30ms",
        "--check",
        "/slow:p95<5s;GET /fast:max<5s",
    ]);
    let passing = run_test(test().check("fail_ratio<=0"), &args);
    assert_eq!(passing.exit_code, 0);
    let results = checks(&passing.report);
    assert_eq!(
        results
            .iter()
            .map(|(e, p, _)| (e.as_str(), *p))
            .collect::<Vec<_>>(),
        [
            ("/slow:p50>=30ms", true),
            ("/slow:p95<5s", true),
            ("GET /fast:max<5s", true),
            ("fail_ratio<=0", true)
        ],
        "flags first, then the checks added in code"
    );
    assert!(results[0].2.unwrap() >= 30.0, "the server sleeps 30 ms");
    assert_eq!(results[3].2, Some(0.0));

    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let mut args = base.to_vec();
    args.extend([
        "--check",
        "/slow:p50<10ms",
        "--check",
        "rps>0",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let failing = run_test(test(), &args);
    assert_eq!(failing.exit_code, cicada::EXIT_CHECK_FAILED);
    assert_eq!(cicada::EXIT_CHECK_FAILED, 6);
    let results = checks(&failing.report);
    assert!(
        !results[0].1 && results[0].2.unwrap() >= 30.0,
        "{results:?}"
    );
    assert!(results[1].1, "{results:?}");

    let xml = std::fs::read_to_string(&junit).expect("the JUnit file is written");
    let document = roxmltree::Document::parse(&xml).expect("valid XML");
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 2);
    let cases = |suite: &roxmltree::Node| -> Vec<(String, bool)> {
        suite
            .children()
            .filter(|n| n.has_tag_name("testcase"))
            .map(|case| {
                (
                    case.attribute("name").unwrap().to_string(),
                    case.children().any(|n| n.has_tag_name("failure")),
                )
            })
            .collect()
    };
    assert_eq!(suites[0].attribute("name"), Some("cicada checks"));
    assert_eq!(
        cases(&suites[0]),
        [
            ("/slow:p50<10ms".to_string(), true),
            ("rps>0".to_string(), false)
        ]
    );
    assert_eq!(suites[0].attribute("failures"), Some("1"));
    let failure = suites[0]
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    assert!(
        failure
            .attribute("message")
            .unwrap()
            .contains("expected < 10.0 ms"),
        "{xml}"
    );
    assert_eq!(suites[1].attribute("name"), Some("cicada requests"));
    assert_eq!(
        cases(&suites[1]),
        [
            ("GET /fast".to_string(), false),
            ("GET /slow".to_string(), false)
        ]
    );
    assert!(target.counters().total() > 0);
}

#[test]
fn a_bad_check_is_a_usage_error_before_any_load() {
    let target = DemoTarget::start();
    let url = target.url();
    let args = ["test", "--headless", "-H", &url, "-u", "1", "-t", "2s"];
    let mut with_flag = args.to_vec();
    with_flag.extend(["--check", "p95<300"]);
    assert_eq!(test().run_with_args(with_flag), 2);
    let mut with_unknown = args.to_vec();
    with_unknown.extend(["--check", "latency<1s"]);
    assert_eq!(test().run_with_args(with_unknown), 2);
    assert_eq!(test().check("p95 below 300ms").run_with_args(args), 2);
    assert_eq!(target.counters().total(), 0, "nothing was sent");
}

/// A 60 s run with these check flags that a check's abort rule must stop long before its end, with exit code 6 and
/// its report written; the run, for more assertions.
fn run_stopped_early_by(check_flags: &[&str]) -> crate::common::Run {
    let target = DemoTarget::start();
    let url = target.url();
    let mut args = vec!["-H", &url, "-u", "2", "-r", "100", "-t", "60s"];
    args.extend_from_slice(check_flags);
    let started = Instant::now();
    let run = run_test(test(), &args);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped long before its 60 s run time"
    );
    assert_eq!(run.exit_code, cicada::EXIT_CHECK_FAILED);
    assert!(
        run.total_requests() > 0,
        "the report was written with the run's stats"
    );
    run
}

#[test]
fn check_abort_ends_the_run_once_a_max_check_is_broken() {
    let run = run_stopped_early_by(&[
        "--check",
        "/slow:max<10ms",
        "--check",
        "p99<1ms",
        "--check-abort",
    ]);
    assert!(!checks(&run.report)[0].1);
}

/// One request in four fails (`/status/500`), the others succeed.
async fn every_fourth_fails(user: &mut User<u64>) -> TaskResult {
    user.state += 1;
    let path = if user.state.is_multiple_of(4) {
        "/status/500"
    } else {
        "/fast"
    };
    user.get(path).send().await?;
    Ok(())
}

#[test]
fn a_failure_ratio_check_is_the_failure_budget() {
    let target = DemoTarget::start();
    let url = target.url();
    let test = || {
        Cicada::new().user(
            UserType::<u64>::new("Visitor")
                .wait_time(constant(0.01))
                .task(every_fourth_fails),
        )
    };
    let base = ["-H", url.as_str(), "-u", "2", "-r", "100", "-t", "2s"];
    let with = |check: &str| {
        let mut args = base.to_vec();
        args.extend(["--check", check]);
        run_test(test(), &args)
    };
    let within = with("fail_ratio<0.5");
    assert!(within.total_failures() > 0);
    assert_eq!(within.exit_code, 0, "the failures are within the budget");
    let over = with("fail_ratio<10%");
    assert_eq!(over.exit_code, cicada::EXIT_CHECK_FAILED);
    let measured = checks(&over.report)[0].2.unwrap();
    assert!(
        (0.2..=0.3).contains(&measured),
        "one in four failed: {measured}"
    );
    // A latency check alone is no failure budget: failed requests still exit 1.
    let latency_only = with("p95<5s");
    assert!(latency_only.total_failures() > 0);
    assert_eq!(latency_only.exit_code, 1);
}

/// `guard_demo`'s `MemorySpike` run with a memory limit (`--guard warn`: marks, never changes the load), its JSON
/// report and exit code.
fn memory_spike_run(url: &str, max_memory: &str) -> (Option<i32>, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let output = crate::common::run_example(
        "guard_demo",
        &[
            "--headless",
            "--only-summary",
            "-H",
            url,
            "-u",
            "1",
            "-r",
            "10",
            "-t",
            "6s",
            "--guard",
            "warn",
            "--max-memory",
            max_memory,
            // Only memory marks seconds here: a busy test machine must not.
            "--max-cpu",
            "100",
            "--max-lag",
            "10s",
            "--check",
            "max<380ms",
            "--report-json",
            report.to_str().unwrap(),
            "MemorySpike",
        ],
        &[("GUARD_DEMO_SPIKE_MIB", "512")],
    );
    let json = std::fs::read_to_string(&report).unwrap_or_else(|_| {
        panic!(
            "no report; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), serde_json::from_str(&json).unwrap())
}

#[test]
fn checks_leave_out_the_seconds_the_guard_marked_saturated() {
    let target = DemoTarget::start();
    let url = target.url();
    // The 512 MiB spike passes a 200 MiB limit: the guard marks the seconds of the two slow requests.
    let (code, report) = memory_spike_run(&url, "200MiB");
    let whole_max = report["stats"]["total"]["max_ms"].as_f64().unwrap();
    assert!(
        whole_max >= 400.0,
        "the run saw the slow requests: {whole_max}"
    );
    let (_, passed, measured) = checks(&report)[0].clone();
    assert!(
        passed,
        "judged on the unmarked seconds: {:#}",
        report["checks"]
    );
    assert!(measured.unwrap() < 380.0);
    assert!(report["checks_excluded_seconds"].as_u64().unwrap() >= 1);
    assert!(report["checks_excluded_requests"].as_u64().unwrap() >= 2);
    assert_eq!(code, Some(0), "{:#}", report["checks"]);

    // Under a limit the spike stays below, nothing is marked: the same check fails on the whole run.
    let (code, report) = memory_spike_run(&url, "8GiB");
    assert_eq!(report["checks_excluded_seconds"], 0);
    assert!(!checks(&report)[0].1);
    assert_eq!(code, Some(cicada::EXIT_CHECK_FAILED));
}

#[test]
fn abort_after_stops_a_run_whose_check_keeps_failing() {
    // `/slow` answers in 30 ms: a p50 under 1 ms can never hold, and it is not a check that can be judged early by
    // itself; `abort-after` stops the run once it has failed for 2 s.
    let run = run_stopped_early_by(&[
        "--check",
        "/slow:p50<1ms abort-after 2s",
        "--check",
        "p99<10s",
    ]);
    let results = checks(&run.report);
    assert!(!results[0].1 && results[1].1, "{results:?}");
}
