//! Distributed runs in real processes on loopback: a master and workers of the quickstart example against the demo
//! target, with counts compared to the server's own; a worker killed mid-run; a worker with another test or a
//! wrong token; garbage on the master's port; `--processes`.

use std::io::Write;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{DemoTarget, Process, free_port};

fn master_args<'a>(
    port: &'a str,
    target: &'a str,
    json: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "--master",
        "--headless",
        "--only-summary",
        "--master-bind-port",
        port,
        "-H",
        target,
        "--report-json",
        json,
    ];
    args.extend_from_slice(extra);
    args
}

/// A worker's flags. Its guard only warns: on a loaded test machine a protecting guard would (rightly) report lag,
/// and the master would move users between workers, which these tests do not measure. The capacity tests give the
/// worker under test a protecting guard of its own.
fn worker_args(port: &str) -> Vec<&str> {
    vec![
        "--worker",
        "--master-port",
        port,
        "-L",
        "WARNING",
        "--guard",
        "warn",
    ]
}

fn report(path: &std::path::Path, output: &Output) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); exit {:?}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// A master of the quickstart example, headless, against a demo target of the test's own (whose counters are the
/// truth), writing its report into a temporary directory; workers join it with [`ClusterRun::worker`].
pub(crate) struct ClusterRun {
    target: DemoTarget,
    port: String,
    dir: tempfile::TempDir,
    master: Option<Process>,
}

impl ClusterRun {
    /// Start the master with these extra flags (users, run time, `--expect-workers` ...) and environment.
    pub(crate) fn start(extra: &[&str], envs: &[(&str, &str)]) -> ClusterRun {
        let target = DemoTarget::start();
        let port = free_port().to_string();
        let dir = tempfile::tempdir().unwrap();
        let url = target.url();
        let json = dir.path().join("report.json").display().to_string();
        let master = Process::start("quickstart", &master_args(&port, &url, &json, extra), envs);
        ClusterRun {
            target,
            port,
            dir,
            master: Some(master),
        }
    }

    /// A worker of `example` attached to this master, with extra flags and environment.
    fn worker_of(&self, example: &str, extra: &[&str], envs: &[(&str, &str)]) -> Process {
        let mut args = worker_args(&self.port);
        args.extend_from_slice(extra);
        Process::start(example, &args, envs)
    }

    /// A quickstart worker attached to this master.
    pub(crate) fn worker(&self, extra: &[&str]) -> Process {
        self.worker_of("quickstart", extra, &[])
    }

    fn master(&self) -> &Process {
        self.master.as_ref().expect("the master runs")
    }

    /// Wait for the master to end; its output and its JSON report.
    pub(crate) fn finish(&mut self, limit: Duration) -> (Output, Value) {
        let output = self.master.take().expect("finished once").wait(limit);
        let report = report(&self.dir.path().join("report.json"), &output);
        (output, report)
    }

    /// Requests the target itself served.
    pub(crate) fn served(&self) -> u64 {
        self.target.counters().total()
    }
}

/// The user counts of the report's history points.
fn user_counts(report: &Value) -> Vec<u64> {
    report["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user_count"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_master_and_three_workers_count_exactly_what_the_server_saw() {
    let mut run = ClusterRun::start(
        &[
            "--expect-workers",
            "3",
            "-u",
            "30",
            "-r",
            "30",
            "-t",
            "5s",
            "-s",
            "5",
        ],
        &[],
    );
    let workers: Vec<Process> = (0..3).map(|_| run.worker(&[])).collect();
    let (output, report) = run.finish(Duration::from_secs(90));
    let reported = report["stats"]["total"]["num_requests"].as_u64().unwrap();
    assert!(reported > 0, "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(
        run.served(),
        reported,
        "the server's count equals the master's merged count; stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        matches!(output.status.code(), Some(0) | Some(1)),
        "{:?}",
        output.status
    );
    let peak = user_counts(&report).into_iter().max().unwrap();
    assert_eq!(peak, 30, "the cluster ran the whole target");
    for worker in workers {
        let out = worker.wait(Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(0), "a worker quits with its master");
    }
}

#[test]
fn a_killed_workers_users_move_to_the_others() {
    let mut run = ClusterRun::start(
        &[
            "--expect-workers",
            "2",
            "-u",
            "20",
            "-r",
            "100",
            "-t",
            "14s",
        ],
        &[],
    );
    let doomed = run.worker(&[]);
    let _survivor = run.worker(&[]);
    // Both run their share; then one dies without a word.
    std::thread::sleep(Duration::from_secs(5));
    doomed.signal("KILL");
    let (_, report) = run.finish(Duration::from_secs(90));
    // The history keeps a point every 2 s: after the kill, missing after 3 s and re-dispatched at once, the last
    // points before the stop show the whole target again, on one worker.
    let running = user_counts(&report);
    let last_running = running[running.len().saturating_sub(3)..]
        .iter()
        .copied()
        .max()
        .unwrap();
    assert_eq!(
        last_running, 20,
        "the survivor took the killed worker's users: {running:?}"
    );
}

#[test]
fn workers_with_another_test_or_a_wrong_token_are_refused() {
    let token = [("CICADA_CLUSTER_TOKEN", "right")];
    let mut run = ClusterRun::start(
        &[
            "--expect-workers",
            "1",
            "--expect-workers-max-wait",
            "8s",
            "-u",
            "1",
            "-t",
            "1s",
        ],
        &token,
    );
    // Garbage and plain HTTP/1 on the master's port: refused, no harm done.
    std::thread::sleep(Duration::from_millis(500));
    for bytes in [
        &b"\x00\x01garbage\xff\xfe"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        if let Ok(mut stream) = std::net::TcpStream::connect(format!("127.0.0.1:{}", run.port)) {
            let _ = stream.write_all(bytes);
        }
    }
    let other_test = run.worker_of("login_flow", &[], &token);
    let wrong_token = run.worker_of("quickstart", &[], &[("CICADA_CLUSTER_TOKEN", "wrong")]);
    for refused in [other_test, wrong_token] {
        let out = refused.wait(Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("refused"), "{stderr}");
    }
    // No worker it accepts came: the master gives up after --expect-workers-max-wait, still standing.
    let output = run.master.take().unwrap().wait(Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--expect-workers"), "{stderr}");
}

#[test]
fn processes_starts_a_master_and_local_workers() {
    let target = DemoTarget::start();
    let url = target.url();
    let port = free_port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let json_arg = json.display().to_string();
    let master = Process::start(
        "quickstart",
        &[
            "--processes",
            "2",
            "--headless",
            "--only-summary",
            "--master-bind-port",
            &port,
            "--expect-workers",
            "2",
            "-H",
            &url,
            "-u",
            "6",
            "-r",
            "50",
            "-t",
            "3s",
            "-s",
            "5",
            "--report-json",
            &json_arg,
        ],
        &[],
    );
    let output = master.wait(Duration::from_secs(90));
    let report = report(&json, &output);
    let reported = report["stats"]["total"]["num_requests"].as_u64().unwrap();
    assert!(reported > 0);
    assert_eq!(target.counters().total(), reported);
}

#[test]
fn a_stalled_worker_goes_missing_then_is_taken_back() {
    let mut run = ClusterRun::start(
        &[
            "--expect-workers",
            "2",
            "-u",
            "10",
            "-r",
            "100",
            "-t",
            "20s",
            "-s",
            "5",
        ],
        &[],
    );
    let stalled = run.worker(&[]);
    let steady = run.worker(&[]);
    std::thread::sleep(Duration::from_secs(4));
    stalled.signal("STOP");
    std::thread::sleep(Duration::from_secs(5));
    stalled.signal("CONT");
    let (output, report) = run.finish(Duration::from_secs(90));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        stderr.contains("is missing"),
        "the stalled worker was seen missing:\n{stderr}"
    );
    assert!(stderr.contains("is back"), "and taken back:\n{stderr}");
    let history = user_counts(&report);
    assert_eq!(
        history[history.len().saturating_sub(3)..].iter().max(),
        Some(&10),
        "rebalanced to the whole target: {history:?}"
    );
    for worker in [stalled, steady] {
        let out = worker.wait(Duration::from_secs(30));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn workers_keep_their_users_without_a_master_then_stop_and_exit_3() {
    let mut run = ClusterRun::start(
        &["--expect-workers", "1", "-u", "4", "-r", "100", "-t", "60s"],
        &[],
    );
    let worker = run.worker(&["--master-timeout", "5s"]);
    std::thread::sleep(Duration::from_secs(3));
    run.master().signal("KILL");
    let killed_at = Instant::now();
    let _ = run.master.take().unwrap().wait(Duration::from_secs(10));
    let at_kill = run.served();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        run.served() > at_kill,
        "the worker's users went on without their master"
    );
    let output = worker.wait(Duration::from_secs(60));
    assert_eq!(
        output.status.code(),
        Some(3),
        "a worker that lost its master exits 3:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let waited = killed_at.elapsed();
    assert!(
        waited >= Duration::from_secs(5),
        "it waited for --master-timeout: {waited:?}"
    );
    let after_exit = run.served();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(run.served(), after_exit, "its users stopped");
}

#[test]
fn a_master_over_tls_takes_workers_that_trust_it_and_no_others() {
    let certs = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = certs.path().join("cluster.pem");
    let key_path = certs.path().join("cluster.key");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let (cert_arg, key_arg) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let mut run = ClusterRun::start(
        &[
            "--cluster-tls-cert",
            &cert_arg,
            "--cluster-tls-key",
            &key_arg,
            "--expect-workers",
            "1",
            "-u",
            "3",
            "-r",
            "100",
            "-t",
            "3s",
            "-s",
            "5",
        ],
        &[],
    );
    // A worker that speaks plain gRPC to a TLS port never attaches: it gives up after its master timeout.
    let plain = run.worker(&["--master-timeout", "3s"]);
    let trusting = run.worker(&["--master-host", "localhost", "--cluster-tls-ca", &cert_arg]);
    let (_, report) = run.finish(Duration::from_secs(90));
    let reported = report["stats"]["total"]["num_requests"].as_u64().unwrap();
    assert!(reported > 0);
    assert_eq!(run.served(), reported, "only the trusting worker ran users");
    assert_eq!(
        trusting.wait(Duration::from_secs(30)).status.code(),
        Some(0)
    );
    assert_eq!(plain.wait(Duration::from_secs(30)).status.code(), Some(3));
}

#[test]
fn a_masters_stats_reset_is_followed_by_its_workers() {
    let mut run = ClusterRun::start(
        &[
            "--expect-workers",
            "2",
            "-u",
            "4",
            "-r",
            "100",
            "-t",
            "6s",
            "-s",
            "5",
            "--reset-stats",
        ],
        &[],
    );
    let _workers: Vec<Process> = (0..2).map(|_| run.worker(&[])).collect();
    let (output, report) = run.finish(Duration::from_secs(90));
    let reported = report["stats"]["total"]["num_requests"].as_u64().unwrap();
    // Counted from the reset on (so fewer than the server saw), but counted: the workers moved to the new epoch.
    assert!(reported > 0, "{}", String::from_utf8_lossy(&output.stderr));
    assert!(reported <= run.served());
}

/// A master with its web UI (the test autostarts), so that a test can watch its workers while it runs; its stderr
/// is kept for the test's messages.
struct WatchedMaster {
    process: Process,
    address: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl WatchedMaster {
    fn start(port: &str, target: &str, json: &str, extra: &[&str]) -> WatchedMaster {
        let mut args = vec![
            "--master",
            "--autostart",
            "--web-port",
            "0",
            "--master-bind-port",
            port,
            "-H",
            target,
            "--report-json",
            json,
        ];
        args.extend_from_slice(extra);
        let mut process = Process::start("quickstart", &args, &[]);
        let stderr = process.child.as_mut().unwrap().stderr.take().unwrap();
        let kept = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (found_tx, found_rx) = std::sync::mpsc::channel();
        let sink = kept.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut found = Some(found_tx);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(url) = line.split("web UI: ").nth(1)
                    && let Some(tx) = found.take()
                {
                    let _ = tx.send(url.trim().trim_start_matches("http://").to_string());
                }
                let mut kept = sink.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        let address = found_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the master announces its web UI");
        WatchedMaster {
            process,
            address,
            stderr: kept,
        }
    }

    /// `GET /stats/requests`, the workers' part: (id, state, users) of each.
    fn workers(&self) -> Vec<(String, String, u64)> {
        self.requests()["workers"]
            .as_array()
            .map(|workers| {
                workers
                    .iter()
                    .map(|w| {
                        (
                            w["id"].as_str().unwrap_or_default().to_string(),
                            w["state"].as_str().unwrap_or_default().to_string(),
                            w["user_count"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `GET /stats/requests`.
    fn requests(&self) -> Value {
        let mut stream = std::net::TcpStream::connect(&self.address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET /stats/requests HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address
        )
        .unwrap();
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    /// Poll the workers until `done` holds, at most `limit`; the last list seen.
    fn wait_for_workers(
        &self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&[(String, String, u64)]) -> bool,
    ) -> Vec<(String, String, u64)> {
        let started = Instant::now();
        loop {
            let workers = self.workers();
            if done(&workers) {
                return workers;
            }
            assert!(
                started.elapsed() < limit,
                "timed out waiting for {what}: {workers:?}\nmaster's log:\n{}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The worker (id, state, users) with this pid: worker ids are `host_pid_random`.
fn worker_with_pid(workers: &[(String, String, u64)], pid: u32) -> Option<(String, String, u64)> {
    let marker = format!("_{pid}_");
    workers.iter().find(|w| w.0.contains(&marker)).cloned()
}

/// A capacity test's set-up: a demo target, and a watched master of 20 users for two workers (`run_time`), with its
/// JSON report in a temporary directory (kept alive by the returned `TempDir`).
fn capacity_master(
    run_time: &str,
) -> (DemoTarget, String, tempfile::TempDir, String, WatchedMaster) {
    let target = DemoTarget::start();
    let port = free_port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json").display().to_string();
    let master = WatchedMaster::start(
        &port,
        &target.url(),
        &json,
        &[
            "--expect-workers",
            "2",
            "-u",
            "20",
            "-r",
            "100",
            "-t",
            run_time,
            "-s",
            "5",
        ],
    );
    (target, port, dir, json, master)
}

/// The kinds of the cluster actions in a master's report.
fn cluster_actions(report: &Value) -> Vec<String> {
    report["cluster"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_worker_over_its_limits_gets_no_users_and_they_run_where_there_is_room() {
    let (target, port, _dir, json, master) = capacity_master("40s");
    // One worker's memory limit is far below what any process uses: its guard holds its users at 0.
    let starved = Process::start(
        "quickstart",
        &["--worker", "--master-port", &port, "--max-memory", "1MiB"],
        &[],
    );
    let healthy = Process::start("quickstart", &worker_args(&port), &[]);
    let (starved_pid, healthy_pid) = (starved.pid(), healthy.pid());
    let placed = master.wait_for_workers(
        "the whole target on the worker with room",
        Duration::from_secs(30),
        |workers| worker_with_pid(workers, healthy_pid).is_some_and(|w| w.2 == 20),
    );
    if let Some(starved) = worker_with_pid(&placed, starved_pid) {
        assert_eq!(starved.2, 0, "the starved worker runs nobody: {placed:?}");
    }
    // The web UI's data says why.
    let capacity = &master.requests()["cicada"]["cluster"];
    assert!(
        capacity["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "worker_capped"),
        "{capacity:#}"
    );
    // The starved worker cannot run anyone at all: its guard stops it and it leaves (exit 4) rather than hold a
    // share it cannot run.
    let output = starved.wait(Duration::from_secs(30));
    assert_eq!(
        output.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A third worker takes a share of the target: the total stays at 20.
    let joining = Process::start("quickstart", &worker_args(&port), &[]);
    let joining_pid = joining.pid();
    let shared = master.wait_for_workers(
        "the target split between the healthy worker and the new one",
        Duration::from_secs(30),
        |workers| {
            let healthy = worker_with_pid(workers, healthy_pid).map_or(0, |w| w.2);
            let joined = worker_with_pid(workers, joining_pid).map_or(0, |w| w.2);
            healthy == 10 && joined == 10
        },
    );
    assert!(
        worker_with_pid(&shared, starved_pid).is_none(),
        "{shared:?}"
    );
    master.process.signal("TERM");
    let output = master.process.wait(Duration::from_secs(60));
    let report = report(std::path::Path::new(&json), &output);
    let actions = cluster_actions(&report);
    assert!(actions.iter().any(|a| a == "worker_capped"), "{actions:?}");
    // Every request the workers sent was counted by the master (the starved one sent none).
    assert_eq!(
        report["stats"]["total"]["num_requests"].as_u64().unwrap(),
        target.counters().total(),
        "{}",
        master.stderr.lock().unwrap()
    );
}

#[test]
fn a_restarted_master_adopts_the_running_workers_and_counts_what_they_kept() {
    let target = DemoTarget::start();
    let port = free_port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let url = target.url();
    let first_json = dir.path().join("first.json").display().to_string();
    let first = Process::start(
        "quickstart",
        &master_args(
            &port,
            &url,
            &first_json,
            // The reset moves the test's statistics to epoch 1: a new master starts at 0 and must take 1 over.
            &[
                "--expect-workers",
                "2",
                "-u",
                "10",
                "-r",
                "100",
                "-t",
                "60s",
                "--reset-stats",
            ],
        ),
        &[],
    );
    let worker_flags = {
        let mut flags = worker_args(&port);
        flags.extend_from_slice(&["--master-timeout", "30s"]);
        flags
    };
    let workers: Vec<Process> = (0..2)
        .map(|_| Process::start("quickstart", &worker_flags, &[]))
        .collect();
    let started = Instant::now();
    while target.counters().total() < 20 {
        assert!(started.elapsed() < Duration::from_secs(30), "no load");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every user spawned, the reset done and followed by the workers (the master checks every 250 ms).
    std::thread::sleep(Duration::from_secs(4));
    first.signal("KILL");
    let _ = first.wait(Duration::from_secs(10));
    let served_at_kill = target.counters().total();
    // The workers go on without a master, keeping their statistics for the next one.
    std::thread::sleep(Duration::from_secs(3));
    assert!(target.counters().total() > served_at_kill);

    let second_json = dir.path().join("second.json").display().to_string();
    let second = Process::start(
        "quickstart",
        &master_args(
            &port,
            &url,
            &second_json,
            &["--expect-workers", "2", "-u", "10", "-r", "100", "-t", "8s"],
        ),
        &[],
    );
    let output = second.wait(Duration::from_secs(90));
    let served_at_end = target.counters().total();
    let report = report(std::path::Path::new(&second_json), &output);
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{log}");
    let adopted = cluster_actions(&report)
        .iter()
        .filter(|kind| *kind == "adopted")
        .count();
    assert_eq!(adopted, 2, "both workers were adopted: {log}");
    // The new master counted every request since the old one died, those sent while no master was there included
    // (the workers kept them as deltas of the test's statistics epoch, which the new master took over).
    let counted = report["stats"]["total"]["num_requests"].as_u64().unwrap();
    assert!(
        counted >= served_at_end - served_at_kill,
        "counted {counted}, served since the kill {}: {log}",
        served_at_end - served_at_kill
    );
    assert!(counted <= served_at_end);
    // No user was restarted: the first point of the new master's history has all of them.
    let users = user_counts(&report);
    assert_eq!(users.first().copied(), Some(10), "{users:?}");
    for worker in workers {
        let output = worker.wait(Duration::from_secs(30));
        assert_eq!(output.status.code(), Some(0));
    }
}

#[test]
fn a_worker_that_stays_over_its_limits_has_its_users_moved_to_one_with_room() {
    let (target, port, _dir, json, master) = capacity_master("60s");
    // A CPU bar no process can stay under: this worker's guard is over its CPU limit from its first sample on. CPU
    // over a limit pauses spawning and marks the seconds, but never sheds: only the master can move these users.
    let over_args = [
        "--worker",
        "--master-port",
        &port,
        "-L",
        "WARNING",
        "--max-cpu",
        "0.01",
    ];
    let over = Process::start("quickstart", &over_args, &[]);
    let healthy = Process::start("quickstart", &worker_args(&port), &[]);
    let (over_pid, healthy_pid) = (over.pid(), healthy.pid());
    let moved = master.wait_for_workers(
        "every user moved to the worker with room",
        Duration::from_secs(45),
        |workers| {
            worker_with_pid(workers, healthy_pid).is_some_and(|w| w.2 == 20)
                && worker_with_pid(workers, over_pid).is_some_and(|w| w.2 == 0)
        },
    );
    // The worker over its limits is still attached (it was not lost or stopped): it just runs nobody.
    assert!(
        worker_with_pid(&moved, over_pid).is_some_and(|w| w.1 != "missing"),
        "{moved:?}"
    );
    master.process.signal("TERM");
    let output = master.process.wait(Duration::from_secs(60));
    let report = report(std::path::Path::new(&json), &output);
    let actions = cluster_actions(&report);
    assert!(actions.iter().any(|a| a == "worker_capped"), "{actions:?}");
    assert!(actions.iter().any(|a| a == "moving_off"), "{actions:?}");
    assert_eq!(
        report["stats"]["total"]["num_requests"].as_u64().unwrap(),
        target.counters().total()
    );
    drop(over);
}

#[test]
fn a_compiled_tests_master_sends_no_test_and_an_absent_master_is_exit_3() {
    let port = free_port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json").display().to_string();
    let master = Process::start(
        "quickstart",
        &master_args(
            &port,
            "http://127.0.0.1:9",
            &json,
            &["--expect-workers", "1", "-u", "1", "-t", "30s"],
        ),
        &[],
    );
    let args = [
        "cicada",
        "--worker",
        "--master-port",
        &port,
        "--master-timeout",
        "20s",
    ];
    let error = cicada::fetch_test_source(args).unwrap_err();
    assert!(
        matches!(error, cicada::FetchSourceError::Refused(_)),
        "{error}"
    );
    assert!(error.to_string().contains("compiled test"), "{error}");
    assert_eq!(error.exit_code(), 2);
    drop(master);

    let nobody = free_port().to_string();
    let args = [
        "cicada",
        "--worker",
        "--master-port",
        &nobody,
        "--master-timeout",
        "1s",
    ];
    let error = cicada::fetch_test_source(args).unwrap_err();
    assert!(
        matches!(error, cicada::FetchSourceError::Unreachable(_)),
        "{error}"
    );
    assert_eq!(error.exit_code(), 3);
}
