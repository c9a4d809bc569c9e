//! Shared helpers: a demo target on 127.0.0.1 with exact request counters, run a test in-process or as a real
//! process, and read its JSON report.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cicada::Cicada;
use cicada_demo::{DemoCounters, DemoServer};
use serde_json::Value;

/// The demo target running on its own runtime thread, so the test under run has the machine to itself otherwise.
pub(crate) struct DemoTarget {
    runtime: tokio::runtime::Runtime,
    server: Option<DemoServer>,
}

impl DemoTarget {
    pub(crate) fn start() -> DemoTarget {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("target runtime");
        let server = runtime
            .block_on(DemoServer::start("127.0.0.1:0".parse().unwrap()))
            .expect("demo target starts");
        DemoTarget {
            runtime,
            server: Some(server),
        }
    }

    pub(crate) fn url(&self) -> String {
        self.server.as_ref().unwrap().url()
    }

    pub(crate) fn counters(&self) -> &DemoCounters {
        self.server.as_ref().unwrap().counters()
    }
}

impl Drop for DemoTarget {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

/// A finished in-process run: its exit code and JSON report.
pub(crate) struct Run {
    pub(crate) exit_code: i32,
    pub(crate) report: Value,
    _dir: tempfile::TempDir,
}

impl Run {
    /// Total requests in the report.
    pub(crate) fn total_requests(&self) -> u64 {
        self.report["stats"]["total"]["num_requests"]
            .as_u64()
            .unwrap()
    }

    pub(crate) fn total_failures(&self) -> u64 {
        self.report["stats"]["total"]["num_failures"]
            .as_u64()
            .unwrap()
    }

    /// The stats entry of (method, name), if any.
    pub(crate) fn entry(&self, method: &str, name: &str) -> Option<&Value> {
        self.report["stats"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["method"] == method && e["name"] == name)
    }

    pub(crate) fn requests(&self, method: &str, name: &str) -> u64 {
        self.entry(method, name)
            .map_or(0, |e| e["num_requests"].as_u64().unwrap())
    }

    pub(crate) fn failures(&self, method: &str, name: &str) -> u64 {
        self.entry(method, name)
            .map_or(0, |e| e["num_failures"].as_u64().unwrap())
    }

    /// Failure groups as (method, name, error, occurrences).
    pub(crate) fn failure_groups(&self) -> Vec<(String, String, String, u64)> {
        self.report["stats"]["failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["method"].as_str().unwrap().to_string(),
                    f["name"].as_str().unwrap().to_string(),
                    f["error"].as_str().unwrap().to_string(),
                    f["occurrences"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// User errors as (message, count).
    pub(crate) fn user_errors(&self) -> Vec<(String, u64)> {
        self.report["stats"]["user_errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["message"].as_str().unwrap().to_string(),
                    e["count"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

/// Run a test in this process with `args` (no program name), adding `--headless --only-summary --report-json`.
pub(crate) fn run_test(test: Cicada, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut full: Vec<String> = vec!["test".into(), "--headless".into(), "--only-summary".into()];
    full.extend(args.iter().map(|a| a.to_string()));
    full.push("--report-json".into());
    full.push(json.to_string_lossy().into_owned());
    let started = Instant::now();
    let exit_code = test.run_with_args(full);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a test run must end by itself"
    );
    let report =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON report written"))
            .expect("JSON report parses");
    Run {
        exit_code,
        report,
        _dir: dir,
    }
}

/// Path of a compiled example (cargo test builds examples; build it if it is missing).
pub(crate) fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "cicada", "--example", name])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building example {name}");
    }
    path
}

/// Run a compiled example as a real process, bounded in time.
pub(crate) fn run_example(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(example(name));
    command.args(args);
    for (key, value) in envs {
        command.env(key, value);
    }
    output_within(command, Duration::from_secs(60))
}

/// Wait for a command's output, killing it (by its pid) if it runs past `limit`.
pub(crate) fn output_within(mut command: Command, limit: Duration) -> Output {
    use std::process::Stdio;
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("process starts");
    wait_within(child, limit)
}

/// Wait for a child's output, killing it (by its pid) if it runs past `limit`.
pub(crate) fn wait_within(child: std::process::Child, limit: Duration) -> Output {
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let output = child.wait_with_output().expect("process output");
        let _ = done_tx.send(());
        output
    });
    if done_rx.recv_timeout(limit).is_err() {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!("process {pid} ran longer than {limit:?}");
    }
    waiter.join().unwrap()
}

pub(crate) fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(parse_csv_line).collect()
}

/// Minimal CSV line parsing (quoted fields with doubled quotes), enough for the report files.
fn parse_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// A one-thread runtime for a test's own server, and a listener on 127.0.0.1 and an ephemeral port, bound in it.
pub(crate) fn server_runtime() -> (tokio::runtime::Runtime, tokio::net::TcpListener) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("server runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a listener on 127.0.0.1");
    (runtime, listener)
}

/// A free port on 127.0.0.1 (bound and released: another process could take it, which these tests accept).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process of a compiled example, its output piped, ended by its pid when dropped.
pub(crate) struct Process {
    pub(crate) child: Option<Child>,
}

impl Process {
    pub(crate) fn start(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Process {
        let mut command = Command::new(example(name));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in envs {
            command.env(key, value);
        }
        Process {
            child: Some(command.spawn().expect("process starts")),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Send it a signal (`KILL`, `TERM`, `STOP`, ...) by its pid.
    pub(crate) fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status();
    }

    /// Wait for it to exit, at most `limit`.
    pub(crate) fn wait(mut self, limit: Duration) -> Output {
        wait_within(self.child.take().unwrap(), limit)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
