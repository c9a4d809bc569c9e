//! The web UI's server in a real process: the API the browser uses, downloads, authentication, TLS, autostart and
//! autoquit, the HTML report; and (where Chromium and the UI build are available) the browser end to end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{DemoTarget, example};

/// A test binary serving its web UI on an ephemeral port.
struct UiProcess {
    child: Child,
    address: String,
}

impl UiProcess {
    fn start(args: &[&str]) -> UiProcess {
        let mut child = Command::new(example("quickstart"))
            .args(["--web-port", "0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("test binary starts");
        let stderr = child.stderr.take().unwrap();
        let (found_tx, found_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut found = Some(found_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("web UI: ").nth(1)
                    && let Some(tx) = found.take()
                {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = found_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the web UI announces its address");
        let address = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        UiProcess { child, address }
    }

    /// One request, `Connection: close`; returns (status, body).
    fn call(&self, method: &str, path: &str, body: &str, extra_headers: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{extra_headers}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            self.address,
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let response = String::from_utf8_lossy(&response).to_string();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        (status, body)
    }

    fn json(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, "", "");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    fn wait_for(&self, what: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
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
    assert_eq!(ui.json("/stats/requests")["state"], "ready");

    let (status, body) = ui.call("POST", "/swarm", "user_count=4&spawn_rate=100", "");
    assert_eq!(status, 200, "{body}");
    ui.wait_for("4 users", |s| {
        s["user_count"] == 4 && s["state"] == "running"
    });
    let (status, _) = ui.call("POST", "/swarm", "user_count=6&spawn_rate=100", "");
    assert_eq!(status, 200);
    let snapshot = ui.wait_for("6 users and requests", |s| {
        s["user_count"] == 6 && s["total"]["num_requests"].as_u64().unwrap_or(0) > 0
    });
    assert!(
        snapshot["generator"]["cpu_percent"].is_number(),
        "{snapshot:#}"
    );
    let (status, body) = ui.call("POST", "/swarm", "user_count=lots", "");
    assert_eq!(status, 400, "bad input is refused: {body}");

    let (_, csv) = ui.call("GET", "/stats/requests/csv", "", "");
    assert!(
        csv.starts_with("Type,Name,Request Count,Failure Count"),
        "{csv}"
    );
    let (_, report) = ui.call("GET", "/report?download=1", "", "");
    assert!(report.contains("cicada-data") && report.contains("Aggregated"));
    assert!(
        !report.contains("__CICADA_REPORT_DATA__"),
        "the data replaced the placeholder"
    );
    let history = ui.json("/stats/history");
    assert!(history["points"].is_array());
    assert!(!ui.json("/logs")["logs"].as_array().unwrap().is_empty());
    assert_eq!(ui.json("/tasks")["user_types"][0]["name"], "Visitor");

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

#[test]
fn tls_serves_the_ui_over_https() {
    let Ok(curl) = Command::new("curl").arg("--version").output() else {
        eprintln!("SKIPPED tls_serves_the_ui_over_https: curl is not installed");
        return;
    };
    assert!(curl.status.success());
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
    let output = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "10",
            &format!("https://{}/config", ui.address),
        ])
        .output()
        .unwrap();
    let config: Value = serde_json::from_slice(&output.stdout).expect("JSON over HTTPS");
    assert_eq!(config["user_types"][0], "Visitor");
}

#[test]
fn the_browser_drives_a_test_end_to_end() {
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    let skip = |why: &str| eprintln!("SKIPPED the_browser_drives_a_test_end_to_end: {why}");
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        return skip("Chromium is not installed (apt-get install chromium)");
    }
    if !web.join("node_modules/playwright-core").exists() || !web.join("e2e/ui.mjs").exists() {
        return skip(
            "the web UI's npm dependencies are not installed (cargo build runs npm ci in web/)",
        );
    }
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
