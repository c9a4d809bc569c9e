//! The web UI's server in a real process: the API the browser uses, downloads, authentication, TLS, autostart and
//! autoquit, the HTML report, a cluster master's workers and their forwarded log lines; and (where Chromium and the
//! UI build are available) the browser end to end, for one process and for a master with two workers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use cicada_demo::Route;

use crate::common::{DemoTarget, example, free_port};

/// Lines of a UI process's stderr kept for the tests, at most (the first ones).
const STDERR_LINES_KEPT: usize = 2_000;

/// A test binary serving its web UI on an ephemeral port.
pub(crate) struct UiProcess {
    child: Child,
    /// `127.0.0.1:PORT`: where to connect, and the Host the UI answers to.
    address: String,
    /// Its stderr (its log), the first [`STDERR_LINES_KEPT`] lines.
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// An HTTP answer: status, headers (lower-case names) and body.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl UiProcess {
    pub(crate) fn start(args: &[&str]) -> UiProcess {
        UiProcess::start_with_env(args, &[])
    }

    fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> UiProcess {
        let mut command = Command::new(example("quickstart"));
        command
            .args(["--web-port", "0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("test binary starts");
        let stderr = child.stderr.take().unwrap();
        let (found_tx, found_rx) = std::sync::mpsc::channel();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = lines.clone();
        std::thread::spawn(move || {
            let mut found = Some(found_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("web UI: ").nth(1)
                    && let Some(tx) = found.take()
                {
                    let _ = tx.send(url.trim().to_string());
                }
                let mut kept = kept.lock().unwrap();
                if kept.len() < STDERR_LINES_KEPT {
                    kept.push(line);
                }
            }
        });
        let url = found_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the web UI announces its address");
        let address = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            // Bound to every address: reach it on the loopback one.
            .replace("0.0.0.0:", "127.0.0.1:")
            .to_string();
        UiProcess {
            child,
            address,
            stderr: lines,
        }
    }

    /// The stderr lines so far that contain all of `parts`.
    fn stderr_lines_with(&self, parts: &[&str]) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|line| parts.iter().all(|part| line.contains(part)))
            .cloned()
            .collect()
    }

    fn port(&self) -> &str {
        self.address.rsplit(':').next().unwrap()
    }

    /// One request, `Connection: close`, with `Host: <address>` unless `headers` has a Host line.
    fn send(&self, method: &str, path: &str, body: &str, headers: &str) -> Answer {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let has_host = headers
            .lines()
            .any(|line| line.to_ascii_lowercase().starts_with("host:"));
        let host = if has_host {
            String::new()
        } else {
            format!("Host: {}\r\n", self.address)
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\n{host}Connection: close\r\n{headers}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let response = String::from_utf8_lossy(&response).to_string();
        let status = response[9..12].parse().unwrap();
        let (headers, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        Answer {
            status,
            headers: headers.to_ascii_lowercase(),
            body: body.to_string(),
        }
    }

    /// One request; returns (status, body).
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: &str,
        extra_headers: &str,
    ) -> (u16, String) {
        let answer = self.send(method, path, body, extra_headers);
        (answer.status, answer.body)
    }

    pub(crate) fn json(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, "", "");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    pub(crate) fn wait_for(&self, what: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let snapshot = self.json("/stats/requests");
            if done(&snapshot) {
                return snapshot;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}: {snapshot:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait for the process to end by itself; returns its exit code.
    fn wait_exit(mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("the UI process did not end by itself");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for UiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Aggregated row: Locust puts it last in `stats`.
fn aggregated(snapshot: &Value) -> &Value {
    let row = snapshot["stats"]
        .as_array()
        .and_then(|rows| rows.last())
        .unwrap_or_else(|| panic!("no stats rows: {snapshot:#}"));
    assert_eq!(row["name"], "Aggregated", "{snapshot:#}");
    row
}

fn total_requests(snapshot: &Value) -> u64 {
    aggregated(snapshot)["num_requests"].as_u64().unwrap()
}

/// A key of a JSON object and the check of its value's type.
type KeyCheck = (&'static str, fn(&Value) -> bool);

/// Locust's whole milliseconds, or `null` where Locust has `None`.
fn whole_or_null(value: &Value) -> bool {
    value.is_u64() || value.is_null()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// After a refused request: the runner never left `ready`, and no request reached the target.
fn assert_nothing_started(ui: &UiProcess, target: &DemoTarget) {
    // Long enough for a started test to have spawned users and sent requests.
    std::thread::sleep(Duration::from_millis(1_500));
    let snapshot = ui.json("/stats/requests");
    assert_eq!(snapshot["state"], "ready", "{snapshot:#}");
    assert_eq!(snapshot["user_count"], 0);
    assert_eq!(
        target.counters().total(),
        0,
        "no request reached the target"
    );
}

#[test]
fn the_api_starts_reshapes_stops_and_downloads() {
    let target = DemoTarget::start();
    let ui = UiProcess::start(&["-H", &target.url(), "--autoquit", "1"]);
    let (status, page) = ui.call("GET", "/", "", "");
    assert_eq!(status, 200);
    assert!(
        page.contains("<html") || page.contains("<!doctype html"),
        "{page}"
    );
    let config = ui.json("/config");
    assert_eq!(config["user_types"][0], "Visitor");
    assert_eq!(config["max_users"], 10_000_000);
    assert_eq!(ui.json("/stats/requests")["state"], "ready");

    let (status, body) = ui.call("POST", "/swarm", "user_count=4&spawn_rate=100", "");
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["success"], true);
    assert_eq!(answer["host"], target.url());
    ui.wait_for("4 users", |s| {
        s["user_count"] == 4 && s["state"] == "running"
    });
    let (status, _) = ui.call("POST", "/swarm", "user_count=6&spawn_rate=100", "");
    assert_eq!(status, 200);
    let snapshot = ui.wait_for("6 users and requests", |s| {
        s["user_count"] == 6 && total_requests(s) > 0
    });
    assert_eq!(snapshot["cicada"]["target_user_count"], 6);
    assert_eq!(snapshot["cicada"]["user_counts"]["Visitor"], 6);
    assert!(
        snapshot["cicada"]["generator"]["cpu_percent"].is_number(),
        "{snapshot:#}"
    );
    let (status, body) = ui.call("POST", "/swarm", "user_count=lots", "");
    assert_eq!(status, 400, "bad input is refused: {body}");

    let (_, csv) = ui.call("GET", "/stats/requests/csv", "", "");
    assert!(
        csv.starts_with("Type,Name,Request Count,Failure Count"),
        "{csv}"
    );
    for route in ["/report?download=1", "/stats/report"] {
        let (status, report) = ui.call("GET", route, "", "");
        assert_eq!(status, 200, "{route}");
        assert!(report.contains("cicada-data") && report.contains("Aggregated"));
        assert!(
            !report.contains("__CICADA_REPORT_DATA__"),
            "the data replaced the placeholder"
        );
    }
    let history = ui.json("/stats/history");
    assert!(history["points"].is_array());
    assert!(!ui.json("/logs")["logs"].as_array().unwrap().is_empty());
    let tasks = ui.json("/tasks");
    assert_eq!(tasks["cicada"]["user_types"][0]["name"], "Visitor");
    // Locust's shape: every running user is a Visitor, whose tasks share its time.
    assert_eq!(tasks["per_class"]["Visitor"]["ratio"], 1.0);
    let shares: f64 = tasks["per_class"]["Visitor"]["tasks"]
        .as_object()
        .unwrap()
        .values()
        .map(|task| task["ratio"].as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "{tasks:#}");
    assert!(
        (tasks["total"]["Visitor"]["tasks"]["view_item"]["ratio"]
            .as_f64()
            .unwrap()
            - 0.6)
            .abs()
            < 1e-9,
        "weights 1, 3, 1: {tasks:#}"
    );
    assert!(ui.json("/exceptions")["exceptions"].is_array());

    let (status, _) = ui.call("POST", "/stop", "", "");
    assert_eq!(status, 200);
    ui.wait_for("stopped", |s| {
        s["state"] == "stopped" && s["user_count"] == 0
    });
    assert!(target.counters().total() > 0);
    assert_eq!(
        ui.wait_exit(Duration::from_secs(15)),
        Some(0),
        "--autoquit ends the process after the stop"
    );
}

#[test]
fn stats_requests_has_locusts_keys_and_counts_equal_the_servers() {
    let target = DemoTarget::start();
    // A stop timeout lets in-flight requests finish, so the server's count and cicada's must end equal.
    let ui = UiProcess::start(&["-H", &target.url(), "-s", "5"]);
    let (status, body) = ui.call("POST", "/swarm", "user_count=5&spawn_rate=100", "");
    assert_eq!(status, 200, "{body}");
    ui.wait_for("requests on two names", |s| {
        s["stats"].as_array().is_some_and(|rows| rows.len() >= 3) && total_requests(s) >= 10
    });
    assert_eq!(ui.call("POST", "/stop", "", "").0, 200);
    ui.wait_for("stopped", |s| s["state"] == "stopped");
    let served = target.counters().total();
    let snapshot = ui.wait_for("the count to reach the server's", |s| {
        total_requests(s) >= served
    });

    let top: [KeyCheck; 10] = [
        ("state", Value::is_string),
        ("user_count", Value::is_u64),
        ("total_rps", Value::is_number),
        ("total_fail_per_sec", Value::is_number),
        ("fail_ratio", Value::is_number),
        ("current_rps", Value::is_number),
        ("current_fail_per_sec", Value::is_number),
        ("current_response_time_percentile_1", whole_or_null),
        ("stats", Value::is_array),
        ("errors", Value::is_array),
    ];
    for (key, is_right) in top {
        assert!(is_right(&snapshot[key]), "{key}: {}", snapshot[key]);
    }
    assert!(
        snapshot.get("workers").is_none() && snapshot.get("worker_count").is_none(),
        "no workers when not distributed"
    );
    let current = &snapshot["current_response_time_percentiles"];
    for key in [
        "response_time_percentile_0.5",
        "response_time_percentile_0.95",
    ] {
        assert!(whole_or_null(&current[key]), "{key}: {current}");
    }
    let entry_keys: [KeyCheck; 18] = [
        ("name", Value::is_string),
        ("safe_name", Value::is_string),
        ("num_requests", Value::is_u64),
        ("num_failures", Value::is_u64),
        ("avg_response_time", Value::is_number),
        ("min_response_time", Value::is_u64),
        ("max_response_time", Value::is_u64),
        ("current_rps", Value::is_number),
        ("current_fail_per_sec", Value::is_number),
        ("median_response_time", Value::is_u64),
        ("ninetieth_response_time", Value::is_u64),
        ("ninety_ninth_response_time", Value::is_u64),
        ("avg_content_length", Value::is_number),
        ("total_rps", Value::is_number),
        ("total_fail_per_sec", Value::is_number),
        ("response_time_percentile_0.95", Value::is_u64),
        ("response_time_percentile_0.99", Value::is_u64),
        ("method", |v| v.is_string() || v.is_null()),
    ];
    let rows = snapshot["stats"].as_array().unwrap();
    for row in rows {
        for (key, is_right) in entry_keys {
            assert!(is_right(&row[key]), "{key}: {row:#}");
        }
    }
    let (total, entries) = rows.split_last().unwrap();
    assert_eq!(total["name"], "Aggregated");
    assert!(
        total["method"].is_null(),
        "Locust's Aggregated row has no method"
    );
    assert!(entries.iter().all(|e| e["method"] == "GET"));
    assert_eq!(
        total["num_requests"].as_u64().unwrap(),
        served,
        "cicada's count equals the server's"
    );
    let per_name = |name: &str| {
        entries
            .iter()
            .find(|e| e["name"] == name)
            .map_or(0, |e| e["num_requests"].as_u64().unwrap())
    };
    assert_eq!(per_name("/"), target.counters().route(Route::Index));
    assert_eq!(
        per_name("/items/[id]"),
        target.counters().route(Route::Item)
    );
    assert_eq!(per_name("/slow"), target.counters().route(Route::Slow));
    let slow = entries.iter().find(|e| e["name"] == "/slow");
    if let Some(slow) = slow {
        assert!(
            slow["median_response_time"].as_u64().unwrap() >= 50,
            "whole milliseconds of a 50 ms page: {slow:#}"
        );
    }
    assert_eq!(snapshot["errors"].as_array().unwrap().len(), 0);
    assert_eq!(snapshot["fail_ratio"], 0.0);
    assert_eq!(snapshot["cicada"]["version"], 1);
    assert_eq!(
        ui.json("/exceptions"),
        serde_json::json!({ "exceptions": [] })
    );
}

#[test]
fn requests_for_another_host_are_refused_and_start_nothing() {
    let target = DemoTarget::start();
    let ui = UiProcess::start(&["-H", &target.url()]);
    // DNS rebinding: evil.example resolves to the UI, so the browser's request names it as the Host.
    let evil = "Host: evil.example\r\nOrigin: http://evil.example\r\n";
    let body = format!("user_count=5&spawn_rate=100&host={}", target.url());
    let answer = ui.send("POST", "/swarm", &body, evil);
    assert_eq!(answer.status, 403, "{}", answer.body);
    let refusal: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(refusal["success"], false);
    let message = refusal["message"].as_str().unwrap();
    assert!(
        message.contains("evil.example") && message.contains("--web-allowed-host"),
        "the refusal says what was wrong and how to allow a name: {message}"
    );
    // Reading the stats through the rebound name is refused too.
    assert_eq!(
        ui.call("GET", "/stats/requests", "", "Host: evil.example\r\n")
            .0,
        403
    );
    let port = ui.port();
    assert_eq!(
        ui.call(
            "GET",
            "/config",
            "",
            &format!("Host: evil.example:{port}\r\n")
        )
        .0,
        403
    );
    assert_nothing_started(&ui, &target);
    // The names of a loopback address are the UI's own.
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (status, body) = ui.call("GET", "/config", "", &format!("Host: {host}\r\n"));
        assert_eq!(status, 200, "{host}: {body}");
    }
}

#[test]
fn cross_site_posts_are_refused_and_same_origin_ones_accepted() {
    let target = DemoTarget::start();
    let ui = UiProcess::start(&["-H", &target.url(), "-s", "5"]);
    // A form on another site, posting to the UI's real address.
    let answer = ui.send(
        "POST",
        "/swarm",
        "user_count=5&spawn_rate=100",
        "Origin: http://evil.example\r\n",
    );
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.body.contains("cross-site"), "{}", answer.body);
    let answer = ui.send(
        "POST",
        "/swarm",
        "user_count=5&spawn_rate=100",
        "Referer: http://evil.example/page.html\r\n",
    );
    assert_eq!(
        answer.status, 403,
        "without Origin the Referer counts: {}",
        answer.body
    );
    let answer = ui.send(
        "POST",
        "/swarm",
        "user_count=5&spawn_rate=100",
        "Origin: null\r\n",
    );
    assert_eq!(answer.status, 403, "an opaque origin: {}", answer.body);
    assert_nothing_started(&ui, &target);

    // Controls are POST-only, as in Locust.
    for path in ["/stop", "/stats/reset", "/swarm"] {
        let answer = ui.send("GET", path, "", "");
        assert_eq!(answer.status, 405, "GET {path}: {}", answer.body);
        assert!(answer.headers.contains("allow: post"), "{}", answer.headers);
    }
    assert_eq!(ui.json("/stats/requests")["state"], "ready");

    // The UI's own page.
    let same = format!("Origin: http://{}\r\n", ui.address);
    let answer = ui.send("POST", "/swarm", "user_count=3&spawn_rate=100", &same);
    assert_eq!(answer.status, 200, "{}", answer.body);
    ui.wait_for("requests", |s| total_requests(s) > 0);
    let referer = format!("Referer: http://localhost:{}/#stats\r\n", ui.port());
    assert_eq!(ui.send("POST", "/stop", "", &referer).status, 200);
    ui.wait_for("stopped", |s| s["state"] == "stopped");
    assert!(target.counters().total() > 0);
}

#[test]
fn user_count_and_spawn_rate_are_bounded() {
    let target = DemoTarget::start();
    let ui = UiProcess::start(&["-H", &target.url()]);
    for (form, says) in [
        ("user_count=99999999999999&spawn_rate=1", "10000000"),
        ("user_count=10000001&spawn_rate=1", "10000000"),
        ("user_count=-1&spawn_rate=1", "user_count"),
        ("user_count=1&spawn_rate=0", "spawn_rate"),
        ("user_count=1&spawn_rate=-5", "spawn_rate"),
        ("user_count=1&spawn_rate=NaN", "spawn_rate"),
        ("user_count=1&spawn_rate=inf", "spawn_rate"),
        ("user_count=1&spawn_rate=1000001", "1000000"),
    ] {
        let (status, body) = ui.call("POST", "/swarm", form, "");
        assert_eq!(status, 400, "{form}: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["success"], false, "{form}");
        assert!(
            answer["message"].as_str().unwrap().contains(says),
            "{form}: {body}"
        );
    }
    assert_nothing_started(&ui, &target);
}

#[test]
fn rates_are_over_the_tests_own_time_not_the_idle_time_before_it() {
    let target = DemoTarget::start();
    let ui = UiProcess::start(&["-H", &target.url(), "-s", "5"]);
    // The UI sits idle first: rates over the process's lifetime would be several times too low.
    std::thread::sleep(Duration::from_secs(4));
    let started = Instant::now();
    let started_unix_ms = unix_ms();
    let (status, body) = ui.call("POST", "/swarm", "user_count=20&spawn_rate=200", "");
    assert_eq!(status, 200, "{body}");
    ui.wait_for("requests", |s| total_requests(s) >= 10);
    assert_eq!(ui.call("POST", "/stop", "", "").0, 200);
    ui.wait_for("stopped", |s| s["state"] == "stopped");
    let served = target.counters().total();
    let snapshot = ui.wait_for("every request counted", |s| total_requests(s) >= served);
    let test_seconds = started.elapsed().as_secs_f64();

    let requests = total_requests(&snapshot) as f64;
    let total_rps = snapshot["total_rps"].as_f64().unwrap();
    assert!(total_rps > 0.0, "{snapshot:#}");
    let extras = &snapshot["cicada"];
    assert!(
        extras["stats_started_unix_ms"].as_u64().unwrap() >= started_unix_ms,
        "the statistics start with the test: {extras:#}"
    );
    let divisor = requests / total_rps;
    assert!(
        (divisor - extras["stats_seconds"].as_f64().unwrap()).abs() < 1e-3,
        "total_rps is the count over stats_seconds: {snapshot:#}"
    );
    assert!(
        divisor <= test_seconds,
        "total_rps = {total_rps} for {requests} requests means {divisor:.2} s, but the test ran {test_seconds:.2} s"
    );
    let csv = ui.call("GET", "/stats/requests/csv", "", "").1;
    let aggregated_row = csv.lines().last().unwrap();
    let csv_rps: f64 = aggregated_row.split(',').nth(9).unwrap().parse().unwrap();
    assert!(
        (csv_rps - total_rps).abs() <= 0.01 * total_rps + 0.01,
        "the CSV's Requests/s is the same rate: {aggregated_row} vs {total_rps}"
    );

    // The current rate is over the seconds the test has run (not a fixed 10 s window): once the last request's
    // second is complete, and while the test is younger than the window, it covers every request.
    let deadline = started + Duration::from_secs(9);
    loop {
        let snapshot = ui.json("/stats/requests");
        let current_rps = snapshot["current_rps"].as_f64().unwrap();
        let seconds_since_start = started.elapsed().as_secs_f64();
        if current_rps > 0.0 && requests / current_rps <= seconds_since_start {
            break;
        }
        if Instant::now() >= deadline {
            assert!(
                test_seconds > 6.0,
                "current_rps {current_rps} for {requests} requests covers {:.2} s, but the test started {seconds_since_start:.2} s ago",
                requests / current_rps
            );
            eprintln!(
                "the test run took {test_seconds:.1} s (a loaded machine): the current window is not checked"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn allowed_host_names_and_a_wildcard_bind() {
    let target = DemoTarget::start();
    let ui = UiProcess::start_with_env(
        &["-H", &target.url(), "--web-host", "0.0.0.0"],
        &[(
            "CICADA_WEB_ALLOWED_HOSTS",
            "loadtest.example,proxy.example:8443",
        )],
    );
    let port = ui.port().to_string();
    for (host, expected) in [
        (format!("127.0.0.1:{port}"), 200),
        ("loadtest.example".to_string(), 200),
        ("LoadTest.example:9000".to_string(), 200),
        ("proxy.example:8443".to_string(), 200),
        ("proxy.example".to_string(), 403),
        (format!("evil.example:{port}"), 403),
    ] {
        let (status, body) = ui.call("GET", "/config", "", &format!("Host: {host}\r\n"));
        assert_eq!(status, expected, "{host}: {body}");
    }
    // A page served under an allowed name may post (e.g. behind a TLS proxy).
    let headers = "Host: loadtest.example\r\nOrigin: https://loadtest.example\r\n";
    assert_eq!(ui.send("POST", "/stats/reset", "", headers).status, 200);
    let headers = "Host: loadtest.example\r\nOrigin: https://evil.example\r\n";
    assert_eq!(ui.send("POST", "/stats/reset", "", headers).status, 403);

    let bad = crate::common::run_example(
        "quickstart",
        &[
            "--web-port",
            "0",
            "--web-allowed-host",
            "http://x.example/ui",
        ],
        &[],
    );
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("--web-allowed-host") && stderr.contains("http://x.example/ui"),
        "{stderr}"
    );
}

#[test]
fn basic_authentication_guards_every_route() {
    let target = DemoTarget::start();
    let ui = UiProcess::start(&["-H", &target.url(), "--web-login", "ann:secret"]);
    assert_eq!(ui.call("GET", "/", "", "").0, 401);
    assert_eq!(ui.call("POST", "/swarm", "user_count=1", "").0, 401);
    let good = "Authorization: Basic YW5uOnNlY3JldA==\r\n";
    assert_eq!(ui.call("GET", "/config", "", good).0, 200);
    let wrong = "Authorization: Basic YW5uOndyb25n\r\n";
    assert_eq!(ui.call("GET", "/config", "", wrong).0, 401);
}

#[test]
fn autostart_runs_and_writes_the_html_report() {
    let target = DemoTarget::start();
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let ui = UiProcess::start(&[
        "-H",
        &target.url(),
        "--autostart",
        "-u",
        "3",
        "-r",
        "100",
        "-t",
        "2s",
        "--autoquit",
        "1",
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(ui.wait_exit(Duration::from_secs(30)), Some(0));
    let text = std::fs::read_to_string(&html).unwrap();
    let data = text
        .split("<script id=\"cicada-data\" type=\"application/json\">")
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .expect("the report carries its data");
    let data: Value = serde_json::from_str(data).unwrap();
    assert!(data["stats"]["total"]["num_requests"].as_u64().unwrap() > 0);
    assert_eq!(data["host"], target.url());
    assert!(
        data["generator"]["limits"]["cores_available"]
            .as_f64()
            .unwrap()
            >= 1.0
    );
    assert!(
        !text.contains("src=\"http"),
        "self-contained: no external scripts"
    );
}

/// GET `path` over HTTPS from `address`, trusting only `cert` (a certificate for `localhost`), with `Host:
/// localhost:PORT`; returns the response body.
fn https_get(
    address: &std::net::SocketAddr,
    cert: &rcgen::CertifiedKey<rcgen::KeyPair>,
    path: &str,
) -> String {
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connection =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    let socket = std::net::TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        address.port()
    )
    .unwrap();
    let mut response = Vec::new();
    // A peer that closes without close_notify ends the read with UnexpectedEof; what came before is the response.
    if let Err(error) = tls.read_to_end(&mut response) {
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}");
    }
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

#[test]
fn tls_serves_the_ui_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let target = DemoTarget::start();
    let ui = UiProcess::start(&[
        "-H",
        &target.url(),
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]);
    let address: std::net::SocketAddr = ui.address.parse().unwrap();
    let body = https_get(&address, &cert, "/config");
    let config: Value = serde_json::from_str(&body).expect("JSON over HTTPS");
    assert_eq!(config["user_types"][0], "Visitor");
}

#[test]
#[ignore = "needs Debian's Chromium (apt-get install chromium) and the web UI built with npm; run: cargo test -p cicada --test integration -- --ignored web::the_browser"]
fn the_browser_drives_a_test_end_to_end() {
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is not installed: apt-get install chromium"
    );
    assert!(
        web.join("node_modules/playwright-core").exists() && web.join("e2e/ui.mjs").exists(),
        "the web UI's npm dependencies are not installed (cargo build runs npm ci in web/, unless CICADA_SKIP_WEB_BUILD is set)"
    );
    let target = DemoTarget::start();
    let ui = UiProcess::start(&["-H", &target.url()]);
    let artifacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let mut command = Command::new("node");
    command
        .arg("e2e/ui.mjs")
        .current_dir(&web)
        .env("CICADA_UI_URL", format!("http://{}", ui.address))
        .env("CICADA_ARTIFACTS", &artifacts);
    let output = crate::common::output_within(command, Duration::from_secs(180));
    assert!(
        output.status.success(),
        "e2e failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        artifacts.join("ui-running.png").exists(),
        "a screenshot of the running UI is kept"
    );
    assert!(
        target.counters().total() > 0,
        "the test the browser started sent requests"
    );
}

/// A quickstart worker attached to a master on 127.0.0.1, logging at its default level (INFO); killed (by its
/// pid) when dropped.
struct WorkerProcess {
    child: Child,
}

impl WorkerProcess {
    fn start(master_port: &str) -> WorkerProcess {
        let child = Command::new(example("quickstart"))
            // A short --master-timeout: a worker whose master is gone does not outlive the test by long.
            .args([
                "--worker",
                "--master-port",
                master_port,
                "--master-timeout",
                "15s",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("worker starts");
        WorkerProcess { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, by pid; answers once the process is gone, with the signal that ended it.
    fn kill(&mut self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.child.kill().unwrap();
        self.child.wait().unwrap().signal()
    }

    /// Whether it has ended, and by which signal.
    fn ended_by(&mut self) -> Option<Option<i32>> {
        use std::os::unix::process::ExitStatusExt;
        self.child.try_wait().unwrap().map(|status| status.signal())
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A master of the quickstart example serving its UI, with two workers, already running 4 users across them.
struct MasterWithWorkers {
    // Dropped in this order: the workers first, so none waits for a master that is gone.
    workers: Vec<WorkerProcess>,
    ui: UiProcess,
    target: DemoTarget,
}

impl MasterWithWorkers {
    const USERS: u64 = 4;

    fn start() -> MasterWithWorkers {
        let target = DemoTarget::start();
        let port = free_port().to_string();
        let users = Self::USERS.to_string();
        let ui = UiProcess::start(&[
            "--master",
            "--master-bind-port",
            &port,
            "--expect-workers",
            "2",
            "--autostart",
            "-u",
            &users,
            "-r",
            &users,
            "-H",
            &target.url(),
        ]);
        let workers = vec![WorkerProcess::start(&port), WorkerProcess::start(&port)];
        MasterWithWorkers {
            workers,
            ui,
            target,
        }
    }

    /// The snapshot's workers, once `done` holds for them (30 s at most).
    fn wait_for_workers(&self, what: &str, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let snapshot = self.ui.wait_for(what, |snapshot| {
            snapshot["workers"]
                .as_array()
                .is_some_and(|workers| done(workers))
        });
        snapshot["workers"].as_array().unwrap().clone()
    }

    /// Both workers running, with the master's users split across them; their ids by pid.
    fn wait_running(&self) -> Vec<(u32, String)> {
        let workers = self.wait_for_workers("two running workers with all the users", |workers| {
            workers.len() == 2
                && workers.iter().all(|w| {
                    w["state"] == "running"
                        && w["user_count"].as_u64() > Some(0)
                        // 0 until the worker's guard took its first sample.
                        && w["memory_usage"].as_u64() > Some(0)
                })
                && workers
                    .iter()
                    .filter_map(|w| w["user_count"].as_u64())
                    .sum::<u64>()
                    == Self::USERS
        });
        let ids: Vec<(u32, String)> = workers
            .iter()
            .map(|w| {
                (
                    u32::try_from(w["pid"].as_u64().unwrap()).unwrap(),
                    w["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        for worker in &self.workers {
            assert!(
                ids.iter().any(|(pid, _)| *pid == worker.pid()),
                "worker pid {} is listed: {workers:?}",
                worker.pid()
            );
        }
        for worker in &workers {
            assert!(worker["cores"].as_u64() > Some(0), "{worker}");
            assert!(
                worker["last_heard_seconds"].as_f64() < Some(3.0),
                "{worker}"
            );
            assert!(
                worker["guard_phase"].is_string() && worker["guard_over"].is_array(),
                "the guard's phase and limits over, read from its heartbeat: {worker}"
            );
        }
        ids
    }

    /// `/logs`, once it holds a line of `worker` that contains `text` (30 s at most).
    fn wait_for_log_line(&self, worker: &str, text: &str) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let logs = self.ui.json("/logs")["logs"].as_array().unwrap().clone();
            if logs.iter().any(|line| {
                line["worker"] == worker
                    && line["message"].as_str().is_some_and(|m| m.contains(text))
            }) {
                return logs;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no line of worker {worker} with {text:?} in /logs: {logs:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn a_masters_logs_carry_its_workers_lines_and_a_killed_worker_shows_missing() {
    let mut cluster = MasterWithWorkers::start();
    let ids = cluster.wait_running();
    assert_eq!(cluster.ui.json("/stats/requests")["worker_count"], 2);
    for (_, id) in &ids {
        // Logged by the worker itself when it attached, at INFO, and forwarded.
        let logs = cluster.wait_for_log_line(id, "worker: attached to master");
        let line = logs
            .iter()
            .find(|line| line["worker"] == id.as_str())
            .unwrap();
        assert_eq!(line["level"], "INFO", "{line}");
        assert!(line["unix_ms"].as_u64() > Some(0), "{line}");
        assert!(
            logs.iter().any(|line| line["worker"].is_null()
                && line["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("cluster: worker"))),
            "the master's own lines carry no worker: {logs:#?}"
        );
        assert!(
            !cluster
                .ui
                .stderr_lines_with(&["worker: attached to master", &format!("worker={id}")])
                .is_empty(),
            "the forwarded line is in the master's own log output too"
        );
    }

    let (killed_pid, killed_id) = ids[0].clone();
    let survivor_id = ids[1].1.clone();
    let killed = cluster
        .workers
        .iter_mut()
        .find(|w| w.pid() == killed_pid)
        .unwrap();
    assert_eq!(killed.kill(), Some(9), "ended by SIGKILL");
    let workers = cluster.wait_for_workers(
        "the killed worker missing, its users on the other",
        |workers| {
            let killed = workers.iter().find(|w| w["id"] == killed_id.as_str());
            let survivor = workers.iter().find(|w| w["id"] == survivor_id.as_str());
            killed.is_some_and(|w| w["state"] == "missing")
                && survivor.is_some_and(|w| {
                    w["state"] == "running"
                        && w["user_count"].as_u64() == Some(MasterWithWorkers::USERS)
                })
        },
    );
    assert_eq!(
        cluster.ui.json("/stats/requests")["worker_count"],
        1,
        "Locust's worker_count: the workers heard from"
    );
    let missing = workers
        .iter()
        .find(|w| w["id"] == killed_id.as_str())
        .unwrap();
    assert!(
        missing["last_heard_seconds"].as_f64() >= Some(3.0),
        "missing after 3 s of silence: {missing}"
    );
    assert!(
        cluster.target.counters().total() > 0,
        "the workers sent requests"
    );
}

#[test]
#[ignore = "needs Debian's Chromium (apt-get install chromium) and the web UI built with npm; run: cargo test -p cicada --test integration -- --ignored web::the_browser"]
fn the_browser_shows_a_masters_workers_their_logs_and_a_killed_one_missing() {
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is not installed: apt-get install chromium"
    );
    assert!(
        web.join("node_modules/playwright-core").exists() && web.join("e2e/workers.mjs").exists(),
        "the web UI's npm dependencies are not installed (cargo build runs npm ci in web/, unless CICADA_SKIP_WEB_BUILD is set)"
    );
    let mut cluster = MasterWithWorkers::start();
    let ids = cluster.wait_running();
    let (killed_pid, killed_id) = ids[1].clone();
    let artifacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-artifacts/workers");
    std::fs::create_dir_all(&artifacts).unwrap();
    let mut command = Command::new("node");
    command
        .arg("e2e/workers.mjs")
        .current_dir(&web)
        .env("CICADA_UI_URL", format!("http://{}", cluster.ui.address))
        .env("CICADA_EXPECT_WORKERS", "2")
        // The browser test kills this worker (our child) by its pid, and watches the tab.
        .env("CICADA_KILL_PID", killed_pid.to_string())
        .env("CICADA_ARTIFACTS", &artifacts);
    let output = crate::common::output_within(command, Duration::from_secs(120));
    assert!(
        output.status.success(),
        "e2e failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let killed = cluster
        .workers
        .iter_mut()
        .find(|w| w.pid() == killed_pid)
        .unwrap();
    assert_eq!(
        killed.ended_by(),
        Some(Some(9)),
        "the browser test killed it with SIGKILL"
    );
    let snapshot = cluster.ui.json("/stats/requests");
    let row = snapshot["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == killed_id.as_str())
        .unwrap_or_else(|| panic!("{snapshot:#}"));
    assert_eq!(row["state"], "missing", "{row}");
    for (_, id) in &ids {
        cluster.wait_for_log_line(id, "worker: attached to master");
    }
    for shot in ["workers.png", "logs.png", "workers-missing.png"] {
        assert!(
            artifacts.join(shot).exists(),
            "the screenshot {shot} is kept"
        );
    }
}
