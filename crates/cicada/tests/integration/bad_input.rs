//! Bad input becomes counted failures or user errors with clear messages, and the run goes on.

use std::time::Duration;

use cicada::prelude::*;

use crate::common::{DemoTarget, run_test, server_runtime};

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
#[ignore = "needs root to make a private network namespace (unshare -n); run: cargo test -p cicada --test integration -- --ignored bad_input::unknown_hosts"]
fn unknown_hosts_fail_with_a_clear_message() {
    // Resolving a name may ask a DNS server; run in a private network namespace with only loopback so that no
    // packet leaves the machine.
    let probe = std::process::Command::new("unshare")
        .args(["-n", "true"])
        .status();
    assert!(
        matches!(probe, Ok(status) if status.success()),
        "cannot create a network namespace here (needs root and unshare): {probe:?}"
    );
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

#[test]
fn requests_without_a_response_are_named_by_their_path() {
    async fn paths(user: &mut User) -> TaskResult {
        let _ = user.get("/items/7?page=2").send().await;
        let _ = user.post("/cart").name("/cart (add)").send().await;
        let _ = user.get("/search").query(&[("q", "x")]).send().await;
        let _ = user.get("/bad-header").header("x y", "v").send().await;
        stop_user()
    }
    let host = format!("http://127.0.0.1:{}", closed_port());
    let test = Cicada::new().user(UserType::<()>::new("Refused").task(paths));
    let run = run_test(test, &["-H", &host, "-u", "1", "-t", "1s"]);
    assert_eq!(run.exit_code, 1);
    assert_eq!(run.failures("GET", "/items/7?page=2"), 1);
    assert_eq!(run.failures("POST", "/cart (add)"), 1);
    assert_eq!(
        run.failures("GET", "/search"),
        1,
        "the name leaves the query out"
    );
    assert_eq!(
        run.failures("GET", "/bad-header"),
        1,
        "a request failed before it was sent keeps its path"
    );
    let groups = run.failure_groups();
    assert!(groups.iter().all(|g| g.1 != "(invalid URL)"), "{groups:?}");
}

#[test]
fn out_of_range_ports_are_usage_errors() {
    let output = crate::common::run_example(
        "quickstart",
        &["--headless", "-H", "http://127.0.0.1:99999", "-t", "1s"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("port 99999 is out of range"), "{stderr}");
    assert!(
        stderr.contains("http://127.0.0.1:8080"),
        "an example of a valid host: {stderr}"
    );

    let test = Cicada::new().user(
        UserType::<()>::new("OwnHost")
            .host("http://127.0.0.1:70000")
            .task(root),
    );
    assert_eq!(test.run_with_args(["test", "--headless", "-t", "1s"]), 2);
    let test = Cicada::new().user(UserType::<()>::new("NoHost").task(root));
    assert_eq!(
        test.run_with_args(["test", "--headless", "-H", "http://:8080", "-t", "1s"]),
        2
    );
}

/// A server on 127.0.0.1 that reads requests and never answers; counts the requests it read.
fn silent_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::Read;
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = std::sync::Arc::new(AtomicU64::new(0));
    let seen = requests.clone();
    std::thread::spawn(move || {
        // Bounded: the test's users make a handful of connections.
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { return };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    if head.windows(4).any(|w| w == b"\r\n\r\n") {
                        seen.fetch_add(1, Ordering::SeqCst);
                        head.clear();
                    }
                }
            });
        }
    });
    (url, requests)
}

#[test]
fn requests_cut_off_by_the_stop_are_counted_and_a_silent_target_fails_the_run() {
    let (url, accepted) = silent_server();
    let test = Cicada::new().user(UserType::<()>::new("Waiting").task(root));
    let run = run_test(test, &["-H", &url, "-u", "3", "-r", "100", "-t", "2s"]);
    let accepted = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(accepted, 3, "each user sent one request and waited");
    assert_eq!(
        run.exit_code, 1,
        "a run in which no request got a response (every one was cut off) fails"
    );
    assert_eq!(
        run.report["stats"]["requests_cut_off"].as_u64(),
        Some(accepted)
    );
    // Cut off by the generator, not failed by the server: they are not requests or failures.
    assert_eq!(run.total_requests(), 0);
}

#[derive(Debug)]
struct Layer {
    text: &'static str,
    cause: Option<Box<Layer>>,
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text)
    }
}

impl std::error::Error for Layer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|c| c as _)
    }
}

#[test]
fn exceptions_keep_the_task_and_the_cause_chain() {
    async fn load_cart(user: &mut User) -> TaskResult {
        user.get("/fast").send().await?;
        Err(Layer {
            text: "loading the cart failed",
            cause: Some(Box::new(Layer {
                text: "the cart service said no",
                cause: Some(Box::new(Layer {
                    text: "timeout",
                    cause: None,
                })),
            })),
        })?;
        Ok(())
    }
    let target = DemoTarget::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("run");
    let test = Cicada::new().user(
        UserType::<()>::new("Cart")
            .wait_time(constant(0.1))
            .task(load_cart),
    );
    let run = run_test(
        test,
        &[
            "-H",
            &target.url(),
            "-u",
            "1",
            "-t",
            "1s",
            "--csv",
            prefix.to_str().unwrap(),
        ],
    );
    assert_eq!(run.exit_code, 1);
    let chain = "loading the cart failed: the cart service said no: timeout";
    let errors = &run.report["stats"]["user_errors"];
    assert_eq!(errors[0]["message"], chain);
    assert!(
        errors[0]["traceback"]
            .as_str()
            .unwrap()
            .starts_with("task load_cart"),
        "{errors}"
    );
    assert_eq!(
        errors[0]["count"].as_u64().unwrap(),
        target.counters().total(),
        "one error per task run"
    );
    let exceptions = crate::common::read_csv(&dir.path().join("run_exceptions.csv"));
    assert_eq!(exceptions[1][1], chain, "{exceptions:?}");
}

#[test]
fn user_errors_are_logged_at_most_once_a_second_each() {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU64, Ordering};
    // A server whose item pages are not JSON: every task of the example raises the same user error.
    let (runtime, listener) = server_runtime();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = std::sync::Arc::new(AtomicU64::new(0));
    let counted = served.clone();
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"<html>not an item</html>"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.log");
    let json = dir.path().join("run.json");
    let started = std::time::Instant::now();
    let output = crate::common::run_example(
        "item_checks",
        &[
            "--headless",
            "--only-summary",
            "-H",
            &url,
            "-u",
            "5",
            "-r",
            "100",
            "-t",
            "3s",
            "--logfile",
            log.to_str().unwrap(),
            "--report-json",
            json.to_str().unwrap(),
        ],
        &[],
    );
    let elapsed = started.elapsed().as_secs() + 1;
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let errors = report["stats"]["user_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let message = errors[0]["message"].as_str().unwrap();
    assert_eq!(
        message,
        "the item page did not parse: expected value at line 1 column 1"
    );
    let count = errors[0]["count"].as_u64().unwrap();
    let items = &report["stats"]["entries"][0];
    assert_eq!(items["name"], "/items/[id]");
    let cut_off = report["stats"]["requests_cut_off"].as_u64().unwrap();
    let received = items["num_requests"].as_u64().unwrap();
    let served = served.load(Ordering::SeqCst);
    assert!(
        received <= served && received + cut_off >= served,
        "every page served was received, or cut off by the stop: {received} + {cut_off} vs {served}"
    );
    assert_eq!(
        count,
        items["num_requests"].as_u64().unwrap(),
        "every item page that got its response raised the error"
    );
    assert!(count >= 1, "the error was hit: {count}");

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(message)).collect();
    assert!(!lines.is_empty(), "the error is logged:\n{text}");
    assert!(
        lines.len() as u64 <= elapsed,
        "at most one line a second: {} lines in {elapsed} s\n{text}",
        lines.len()
    );
    let left_out: u64 = lines
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" (")?;
            rest.split_once(" more like it")?.0.parse::<u64>().ok()
        })
        .sum();
    assert!(
        lines.len() as u64 + left_out <= count,
        "logged and left out occurrences add up to at most the count"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.contains("user error in task view_item")),
        "{text}"
    );
}
