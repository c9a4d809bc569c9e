//! The test binary as a user runs it: flags, config, environment, exit codes, Ctrl-C, CSV and JSON files.

use std::time::Duration;

use crate::common::{DemoTarget, example, read_csv, run_example};

#[test]
fn csv_files_have_locust_names_and_columns() {
    let target = DemoTarget::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("run");
    let output = run_example(
        "quickstart",
        &[
            "--headless",
            "-H",
            &target.url(),
            "-u",
            "5",
            "-r",
            "50",
            "-t",
            "3s",
            "--csv",
            prefix.to_str().unwrap(),
            "--csv-full-history",
        ],
        &[],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stats = read_csv(&dir.path().join("run_stats.csv"));
    assert_eq!(
        stats[0],
        [
            "Type",
            "Name",
            "Request Count",
            "Failure Count",
            "Median Response Time",
            "Average Response Time",
            "Min Response Time",
            "Max Response Time",
            "Average Content Size",
            "Requests/s",
            "Failures/s",
            "50%",
            "66%",
            "75%",
            "80%",
            "90%",
            "95%",
            "98%",
            "99%",
            "99.9%",
            "99.99%",
            "100%"
        ]
    );
    let aggregated = stats.last().unwrap();
    assert_eq!(aggregated[1], "Aggregated");
    let total: u64 = aggregated[2].parse().unwrap();
    assert!(total > 0);
    let by_name: u64 = stats[1..stats.len() - 1]
        .iter()
        .map(|row| row[2].parse::<u64>().unwrap())
        .sum();
    assert_eq!(by_name, total);
    assert!(
        stats
            .iter()
            .any(|row| row[0] == "GET" && row[1] == "/items/[id]")
    );
    let history = read_csv(&dir.path().join("run_stats_history.csv"));
    assert_eq!(history[0][0], "Timestamp");
    assert_eq!(history[0][1], "User Count");
    assert_eq!(
        history[0][24], "Generator Saturated",
        "the generator's own state follows Locust's columns"
    );
    assert!(
        history
            .iter()
            .skip(1)
            .any(|row| row[25].parse::<f64>().is_ok()),
        "generator CPU is filled in"
    );
    assert!(history.len() >= 3, "a row per second at least");
    assert!(
        history.iter().any(|row| row[3] == "/items/[id]"),
        "full history has per-name rows"
    );
    let failures = read_csv(&dir.path().join("run_failures.csv"));
    assert_eq!(failures[0], ["Method", "Name", "Error", "Occurrences"]);
    let exceptions = read_csv(&dir.path().join("run_exceptions.csv"));
    assert_eq!(exceptions[0], ["Count", "Message", "Traceback", "Nodes"]);
    // The summary tables were printed.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Aggregated"), "{stdout}");
    assert!(stdout.contains("Response time percentiles"), "{stdout}");
}

#[test]
fn json_on_stdout_matches_the_server_count() {
    let target = DemoTarget::start();
    let output = run_example(
        "quickstart",
        &[
            "--headless",
            "-H",
            &target.url(),
            "-u",
            "3",
            "-r",
            "50",
            "-t",
            "2s",
            "-s",
            "3",
            "--json",
            "--only-summary",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("stdout is JSON");
    assert_eq!(
        report["stats"]["total"]["num_requests"].as_u64().unwrap(),
        target.counters().total()
    );
    assert!(!report["history"].as_array().unwrap().is_empty());
}

#[test]
fn exit_codes() {
    let target = DemoTarget::start();
    // The demo's /fail page makes quickstart's requests fail only if we point it at a failing host path.
    let failing_host = format!("{}/status/500", target.url());
    let output = run_example(
        "quickstart",
        &[
            "--headless",
            "-H",
            &failing_host,
            "-u",
            "1",
            "-t",
            "1s",
            "--only-summary",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    let output = run_example(
        "quickstart",
        &[
            "--headless",
            "-H",
            &failing_host,
            "-u",
            "1",
            "-t",
            "1s",
            "--only-summary",
            "--exit-code-on-error",
            "3",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(3));

    for bad in [
        &["--users", "lots"][..],
        &["-r", "-1"],
        &["--run-time", "soon"],
        &["--no-such-flag"],
        &["NoSuchUser"],
    ] {
        let output = run_example("quickstart", bad, &[]);
        assert_eq!(output.status.code(), Some(2), "{bad:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.lines().any(|l| l.starts_with("error:")),
            "{bad:?}: {stderr}"
        );
    }
}

#[test]
fn environment_and_config_file() {
    let target = DemoTarget::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cicada.toml");
    std::fs::write(&config, format!("host = \"{}\"\nusers = 2\nspawn-rate = 100\nrun-time = \"2s\"\nheadless = true\nonly-summary = true\njson = true\n", target.url())).unwrap();
    let output = run_example(
        "quickstart",
        &["--config", config.to_str().unwrap()],
        &[("CICADA_USERS", "4")],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let max_users = report["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user_count"].as_u64().unwrap())
        .max();
    assert_eq!(max_users, Some(4), "the environment beats the config file");

    std::fs::write(&config, "userz = 2\n").unwrap();
    let output = run_example("quickstart", &["--config", config.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown key `userz`"));
}

#[test]
fn list_and_task_ratio() {
    let output = run_example("weighted_tags", &["--list"], &[]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Browser") && stdout.contains("Buyer"),
        "{stdout}"
    );
    let output = run_example("weighted_tags", &["--show-task-ratio"], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Browser (75.0%)"), "{stdout}");
    assert!(stdout.contains("Buyer (25.0%)"), "{stdout}");
}

#[test]
fn ctrl_c_stops_gracefully_and_writes_reports() {
    let target = DemoTarget::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("interrupted");
    let mut command = std::process::Command::new(example("quickstart"));
    command.args([
        "--headless",
        "-H",
        &target.url(),
        "-u",
        "5",
        "-r",
        "50",
        "-t",
        "60s",
        "--csv",
        prefix.to_str().unwrap(),
        "--only-summary",
    ]);
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = std::time::Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("did not stop after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0));
    let stats = read_csv(&dir.path().join("interrupted_stats.csv"));
    let total: u64 = stats.last().unwrap()[2].parse().unwrap();
    assert!(total > 0);
}
