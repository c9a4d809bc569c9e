//! Bad input becomes counted failures or user errors with clear messages, and the run goes on.

use std::time::Duration;

use cicada::prelude::*;

use crate::common::{DemoTarget, run_test};

/// A port on 127.0.0.1 nobody listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn root(user: &mut User) -> TaskResult {
    user.get("/").send().await?;
    Ok(())
}

#[test]
fn refused_connections_are_counted_failures() {
    let host = format!("http://127.0.0.1:{}", closed_port());
    let test = Cicada::new().user(
        UserType::<()>::new("Refused")
            .wait_time(constant(0.1))
            .task(root),
    );
    let run = run_test(test, &["-H", &host, "-u", "2", "-r", "100", "-t", "1s"]);
    assert_eq!(run.exit_code, 1);
    assert!(run.total_requests() >= 10);
    assert_eq!(run.total_failures(), run.total_requests());
    let groups = run.failure_groups();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert!(groups[0].2.starts_with("connection refused"), "{groups:?}");
    assert!(
        run.user_errors().is_empty(),
        "a failed request is not also a user error"
    );
}

#[test]
fn timeouts_are_counted_failures() {
    async fn slow(user: &mut User) -> TaskResult {
        user.get("/slow?ms=2000")
            .name("/slow")
            .timeout(Duration::from_millis(200))
            .send()
            .await?;
        Ok(())
    }
    let target = DemoTarget::start();
    let test = Cicada::new().user(UserType::<()>::new("Slow").task(slow));
    let run = run_test(
        test,
        &[
            "-H",
            &target.url(),
            "-u",
            "2",
            "-r",
            "100",
            "-t",
            "1s",
            "-s",
            "1",
        ],
    );
    assert!(run.failures("GET", "/slow") >= 4);
    let groups = run.failure_groups();
    assert!(
        groups.iter().all(|g| g.2 == "timed out after 200ms"),
        "{groups:?}"
    );
    let median = run.entry("GET", "/slow").unwrap()["median_ms"]
        .as_f64()
        .unwrap();
    assert!(
        (190.0..400.0).contains(&median),
        "a timed-out request takes the timeout: {median}"
    );
}

#[test]
fn malformed_urls_and_hosts_are_reported() {
    async fn broken(user: &mut User) -> TaskResult {
        let error = user.get("http://[::1").send().await.unwrap_err();
        assert_eq!(error.kind(), cicada::client::RequestErrorKind::InvalidUrl);
        user.get("/has space").send().await?;
        Ok(())
    }
    let target = DemoTarget::start();
    let test = Cicada::new().user(
        UserType::<()>::new("Broken")
            .wait_time(constant(0.2))
            .task(broken),
    );
    let run = run_test(
        test,
        &["-H", &target.url(), "-u", "1", "-r", "1", "-t", "1s"],
    );
    assert_eq!(run.exit_code, 1);
    assert!(run.failures("GET", "http://[::1") >= 1);
    let groups = run.failure_groups();
    assert!(
        groups
            .iter()
            .any(|g| g.2.starts_with("invalid URL `http://[::1`")),
        "{groups:?}"
    );
    assert_eq!(
        target.counters().total(),
        0,
        "nothing malformed reached the server"
    );

    // A host that is not a URL stops the run before it starts, with exit code 2.
    let test = Cicada::new().user(UserType::<()>::new("U").task(root));
    let code = test.run_with_args(["test", "--headless", "-H", "not a url", "-t", "1s"]);
    assert_eq!(code, 2);
}

#[test]
fn huge_and_non_utf8_bodies() {
    async fn bodies(user: &mut User) -> TaskResult {
        let response = user.get("/bytes/4000000").name("/bytes/big").send().await?;
        assert_eq!(response.content_length(), 4_000_000);
        assert!(response.body_truncated());
        assert_eq!(response.body().len(), 1024 * 1024);
        let response = user
            .get("/bytes/64?invalid_utf8=1")
            .name("/bytes/binary")
            .send()
            .await?;
        assert!(
            response.text().contains('\u{FFFD}'),
            "invalid UTF-8 is replaced, never an error"
        );
        // Parsing binary as JSON is the task's error: counted as a user error, and the run goes on.
        response.json::<serde_json::Value>()?;
        Ok(())
    }
    let target = DemoTarget::start();
    let options = ClientOptions {
        max_body_bytes: 1024 * 1024,
        ..ClientOptions::default()
    };
    let test = Cicada::new().user(
        UserType::<()>::new("Bodies")
            .client_options(options)
            .wait_time(constant(0.1))
            .task(bodies),
    );
    let run = run_test(
        test,
        &[
            "-H",
            &target.url(),
            "-u",
            "1",
            "-r",
            "1",
            "-t",
            "1s",
            "-s",
            "2",
        ],
    );
    let big = run.entry("GET", "/bytes/big").unwrap();
    assert_eq!(big["avg_content_length"].as_f64().unwrap(), 4_000_000.0);
    let errors = run.user_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].1, run.requests("GET", "/bytes/binary"));
    assert_eq!(run.exit_code, 1);
}

#[test]
fn a_panicking_task_is_a_user_error_and_the_user_goes_on() {
    async fn flaky(user: &mut User<u32>) -> TaskResult {
        user.state += 1;
        user.get("/fast").send().await?;
        if user.state.is_multiple_of(2) {
            panic!("task bug number {}", user.state);
        }
        Ok(())
    }
    let target = DemoTarget::start();
    let test = Cicada::new().user(
        UserType::<u32>::new("Flaky")
            .wait_time(constant(0.05))
            .task(flaky),
    );
    let run = run_test(
        test,
        &[
            "-H",
            &target.url(),
            "-u",
            "1",
            "-r",
            "1",
            "-t",
            "1s",
            "-s",
            "1",
        ],
    );
    let requests = run.total_requests();
    assert!(
        requests >= 6,
        "the user kept going after panics: {requests}"
    );
    let panics: u64 = run.user_errors().iter().map(|e| e.1).sum();
    assert_eq!(panics, requests / 2);
    let locations = run.report["stats"]["user_errors"][0]["traceback"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(locations.contains("bad_input.rs"), "{locations}");
}

#[test]
fn unknown_hosts_fail_with_a_clear_message() {
    // Resolving a name may ask a DNS server; run in a private network namespace with only loopback so that no
    // packet leaves the machine.
    let probe = std::process::Command::new("unshare")
        .args(["-n", "true"])
        .status();
    if !matches!(probe, Ok(status) if status.success()) {
        eprintln!(
            "SKIPPED unknown_hosts_fail_with_a_clear_message: cannot create a network namespace here"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let example = crate::common::example("quickstart");
    let script = format!(
        "ip link set lo up; exec {} --headless --only-summary -H http://no-such-host.invalid -u 1 -t 2s --report-json {}",
        example.display(),
        json.display()
    );
    let mut command = std::process::Command::new("unshare");
    command.args(["-n", "sh", "-c", &script]);
    let output = crate::common::output_within(command, Duration::from_secs(60));
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let failures = report["stats"]["failures"].as_array().unwrap();
    assert!(!failures.is_empty());
    for failure in failures {
        let error = failure["error"].as_str().unwrap();
        assert!(
            error.starts_with("could not resolve host `no-such-host.invalid`"),
            "{error}"
        );
    }
}
