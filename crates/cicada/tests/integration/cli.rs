//! The test binary as a user runs it: flags, config, environment, exit codes, Ctrl-C, and the report files: CSV and
//! JSON in Locust's shapes (parsed with the `csv` crate and `serde_json`, every column's type checked), report paths
//! refused before any load is sent, and reports lost at the end reported with their own exit code.

use std::path::Path;
use std::time::{Duration, Instant};

use cicada::prelude::*;

use crate::common::{DemoTarget, example, read_csv, run_example};

/// A CSV file as read by the `csv` crate: its header and rows.
fn read_csv_file(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader =
        csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|record| {
            record
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .iter()
                .map(str::to_owned)
                .collect()
        })
        .collect();
    (header, rows)
}

/// The type Locust gives a column, as a tool reading its CSV files may rely on.
#[derive(Clone, Copy, Debug)]
enum Cell {
    /// Any text.
    Text,
    /// A non-negative integer.
    Int,
    /// A Python float: digits with a decimal point.
    Float,
    /// A Python float, or the integer 0 Locust writes for a missing value (min, max, average size).
    FloatOrZero,
    /// An integer (a rounded response time), or `N/A` in a row without requests.
    Percentile,
    /// An integer; a float only when Locust clamps it to the min or the max.
    Median,
    /// `f"{x:2f}"`: six decimals.
    SixDecimals,
    /// `2024-03-09T14:05:00Z`.
    UtcTimestamp,
    /// The generator's columns: empty, or a number.
    OptionalNumber,
}

fn is_int(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn is_python_float(text: &str) -> bool {
    match text.split_once('.') {
        Some((whole, fraction)) => is_int(whole) && is_int(fraction),
        None => false,
    }
}

fn check_cell(kind: Cell, text: &str) -> bool {
    match kind {
        Cell::Text => true,
        Cell::Int => is_int(text),
        Cell::Float => is_python_float(text),
        Cell::FloatOrZero => text == "0" || is_python_float(text),
        Cell::Percentile => text == "N/A" || is_int(text),
        Cell::Median => is_int(text) || is_python_float(text),
        Cell::SixDecimals => {
            is_python_float(text) && text.split_once('.').is_some_and(|(_, f)| f.len() == 6)
        }
        Cell::UtcTimestamp => {
            let bytes = text.as_bytes();
            bytes.len() == 20
                && bytes.iter().enumerate().all(|(i, b)| match i {
                    4 | 7 => *b == b'-',
                    10 => *b == b'T',
                    13 | 16 => *b == b':',
                    19 => *b == b'Z',
                    _ => b.is_ascii_digit(),
                })
        }
        Cell::OptionalNumber => text.is_empty() || text.parse::<f64>().is_ok(),
    }
}

/// Every row has the header's width and every cell its column's type.
fn check_columns(file: &str, header: &[String], rows: &[Vec<String>], kinds: &[Cell]) {
    assert_eq!(header.len(), kinds.len(), "{file}: {header:?}");
    for row in rows {
        assert_eq!(row.len(), header.len(), "{file}: {row:?}");
        for ((cell, kind), name) in row.iter().zip(kinds).zip(header) {
            assert!(
                check_cell(*kind, cell),
                "{file}: column {name} = {cell:?} is not {kind:?}"
            );
        }
    }
}

const PERCENTILE_LABELS: [&str; 11] = [
    "50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%",
];

fn stats_columns() -> (Vec<String>, Vec<Cell>) {
    let mut names: Vec<String> = [
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
    ]
    .map(String::from)
    .to_vec();
    names.extend(PERCENTILE_LABELS.map(String::from));
    let mut kinds = vec![
        Cell::Text,
        Cell::Text,
        Cell::Int,
        Cell::Int,
        Cell::Median,
        Cell::Float,
        Cell::FloatOrZero,
        Cell::FloatOrZero,
        Cell::FloatOrZero,
        Cell::Float,
        Cell::Float,
    ];
    kinds.extend([Cell::Percentile; 11]);
    (names, kinds)
}

fn history_columns() -> (Vec<String>, Vec<Cell>) {
    let mut names: Vec<String> = [
        "Timestamp",
        "User Count",
        "Type",
        "Name",
        "Requests/s",
        "Failures/s",
    ]
    .map(String::from)
    .to_vec();
    names.extend(PERCENTILE_LABELS.map(String::from));
    names.extend(
        [
            "Total Request Count",
            "Total Failure Count",
            "Total Median Response Time",
            "Total Average Response Time",
            "Total Min Response Time",
            "Total Max Response Time",
            "Total Average Content Size",
            "Generator Saturated",
            "Generator CPU %",
            "Generator RSS MB",
            "Generator Lag ms",
            "Users Held Back",
            "Iterations Started",
            "Iterations Dropped",
        ]
        .map(String::from),
    );
    let mut kinds = vec![
        Cell::Int,
        Cell::Int,
        Cell::Text,
        Cell::Text,
        Cell::SixDecimals,
        Cell::SixDecimals,
    ];
    kinds.extend([Cell::Percentile; 11]);
    kinds.extend([
        Cell::Int,
        Cell::Int,
        Cell::Median,
        Cell::Float,
        Cell::FloatOrZero,
        Cell::FloatOrZero,
        Cell::FloatOrZero,
    ]);
    kinds.extend([Cell::OptionalNumber; 7]);
    (names, kinds)
}

/// In a row with requests, a float median is the min or the max (Locust's clamp); percentiles are never `N/A`.
fn check_stats_values(file: &str, row: &[String], count_column: usize, median_column: usize) {
    let requests: u64 = row[count_column].parse().unwrap();
    let median = &row[median_column];
    if requests > 0 && is_python_float(median) {
        assert!(
            median == &row[median_column + 2] || median == &row[median_column + 3],
            "{file}: a float median {median} is neither min nor max in {row:?}"
        );
    }
    let percentiles_from = if count_column == 2 { 11 } else { 6 };
    let na = row[percentiles_from..percentiles_from + 11]
        .iter()
        .filter(|cell| *cell == "N/A")
        .count();
    assert_eq!(na, if requests == 0 { 11 } else { 0 }, "{file}: {row:?}");
}

async fn fast(user: &mut User) -> TaskResult {
    user.get("/fast").send().await?;
    Ok(())
}

async fn broken(user: &mut User) -> TaskResult {
    user.get("/status/500").send().await?;
    Ok(())
}

async fn empty_cart(user: &mut User) -> TaskResult {
    user.get("/items").send().await?;
    Err(TaskError::msg("the cart is empty"))
}

#[test]
fn csv_files_parse_with_locusts_columns_and_types() {
    let target = DemoTarget::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("run");
    let test = Cicada::new().user(
        UserType::<()>::new("Shopper")
            .wait_time(constant(0.05))
            .task(Task::new(fast).weight(3))
            .task(broken)
            .task(empty_cart),
    );
    let exit_code = test.run_with_args([
        "test",
        "--headless",
        "--only-summary",
        "-H",
        &target.url(),
        "-u",
        "3",
        "-r",
        "100",
        "-t",
        "2s",
        "-s",
        "3",
        "--csv",
        prefix.to_str().unwrap(),
        "--csv-full-history",
    ]);
    assert_eq!(exit_code, 1, "failures and user errors make exit code 1");

    let (header, rows) = read_csv_file(&dir.path().join("run_stats.csv"));
    let (names, kinds) = stats_columns();
    assert_eq!(header, names);
    check_columns("stats", &header, &rows, &kinds);
    for row in &rows {
        check_stats_values("stats", row, 2, 4);
    }
    let aggregated = rows.last().unwrap();
    assert_eq!(aggregated[..2], ["", "Aggregated"]);
    let total: u64 = aggregated[2].parse().unwrap();
    assert_eq!(
        total,
        target.counters().total(),
        "every request the server saw"
    );
    let by_name: u64 = rows[..rows.len() - 1]
        .iter()
        .map(|row| row[2].parse::<u64>().unwrap())
        .sum();
    assert_eq!(by_name, total);
    let broken_row = rows
        .iter()
        .find(|row| row[1] == "/status/500")
        .expect("a /status/500 row");
    assert_eq!(
        broken_row[2], broken_row[3],
        "every /status/500 request failed"
    );

    let (header, rows) = read_csv_file(&dir.path().join("run_stats_history.csv"));
    let (names, kinds) = history_columns();
    assert_eq!(header, names, "Locust's columns, then the generator's");
    check_columns("history", &header, &rows, &kinds);
    for row in &rows {
        check_stats_values("history", row, 17, 19);
    }
    assert!(
        rows.iter().any(|row| row[3] == "/fast"),
        "full history has per-name rows"
    );
    assert!(rows.iter().any(|row| row[3] == "Aggregated"));

    let (header, rows) = read_csv_file(&dir.path().join("run_failures.csv"));
    assert_eq!(
        header,
        [
            "Method",
            "Name",
            "Error",
            "Occurrences",
            "First Seen",
            "Last Seen"
        ]
    );
    check_columns(
        "failures",
        &header,
        &rows,
        &[
            Cell::Text,
            Cell::Text,
            Cell::Text,
            Cell::Int,
            Cell::UtcTimestamp,
            Cell::UtcTimestamp,
        ],
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][..2], ["GET", "/status/500"]);
    assert_eq!(
        rows[0][3], broken_row[3],
        "occurrences are the entry's failures"
    );
    assert!(
        rows[0][4] <= rows[0][5],
        "first seen is not after last seen"
    );

    let (header, rows) = read_csv_file(&dir.path().join("run_exceptions.csv"));
    assert_eq!(header, ["Count", "Message", "Traceback", "Nodes"]);
    check_columns(
        "exceptions",
        &header,
        &rows,
        &[Cell::Int, Cell::Text, Cell::Text, Cell::Text],
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][1], "the cart is empty");
    assert_eq!(rows[0][3], "local");
    let items: u64 = read_csv_file(&dir.path().join("run_stats.csv"))
        .1
        .iter()
        .find(|row| row[1] == "/items")
        .map(|row| row[2].parse().unwrap())
        .unwrap();
    assert_eq!(
        rows[0][0],
        items.to_string(),
        "one user error per /items request"
    );
}

#[test]
fn csv_summary_goes_to_stdout_with_a_history_row_a_second() {
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
        ],
        &[],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (header, rows) = read_csv_file(&dir.path().join("run_stats_history.csv"));
    check_columns("history", &header, &rows, &history_columns().1);
    assert!(rows.len() >= 3, "a row per second at least: {}", rows.len());
    assert!(
        rows.iter().all(|row| row[3] == "Aggregated"),
        "without --csv-full-history, the aggregate only"
    );
    assert!(
        rows.iter().any(|row| row[25].parse::<f64>().is_ok()),
        "the generator's CPU is filled in"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Aggregated"), "{stdout}");
    assert!(stdout.contains("Response time percentiles"), "{stdout}");
}

/// Locust's `calculate_response_time_percentile` over a `response_times` dict.
fn locust_percentile(
    response_times: &serde_json::Map<String, serde_json::Value>,
    count: u64,
    quantile: f64,
) -> f64 {
    let mut keys: Vec<(u64, u64)> = response_times
        .iter()
        .map(|(key, value)| (key.parse().unwrap(), value.as_u64().unwrap()))
        .collect();
    keys.sort_unstable_by_key(|(key, _)| std::cmp::Reverse(*key));
    let wanted = (count as f64 * quantile) as u64;
    let mut processed = 0;
    for (key, n) in keys {
        processed += n;
        if count - processed <= wanted {
            return key as f64;
        }
    }
    0.0
}

/// Locust's histogram keys: whole ms below 100, tens below 1000, hundreds below 10 000, then thousands.
fn locust_step(ms: f64) -> f64 {
    match ms {
        ms if ms < 100.0 => 1.0,
        ms if ms < 1_000.0 => 10.0,
        ms if ms < 10_000.0 => 100.0,
        _ => 1_000.0,
    }
}

const LOCUST_KEYS: [&str; 14] = [
    "name",
    "method",
    "last_request_timestamp",
    "start_time",
    "num_requests",
    "num_none_requests",
    "num_failures",
    "total_response_time",
    "max_response_time",
    "min_response_time",
    "total_content_length",
    "response_times",
    "num_reqs_per_sec",
    "num_fail_per_sec",
];

#[test]
fn json_prints_locusts_list_alone_on_stdout() {
    let target = DemoTarget::start();
    let dir = tempfile::tempdir().unwrap();
    let locust_name = dir.path().join("locust");
    let report_path = dir.path().join("cicada.json");
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
            "3s",
            "-s",
            "3",
            "--json",
            "--json-file",
            locust_name.to_str().unwrap(),
            "--report-json",
            report_path.to_str().unwrap(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let entries: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is one JSON document");
    let entries = entries.as_array().expect("Locust's list");
    assert!(
        stderr.contains("Response time percentiles"),
        "the summary goes to stderr: {stderr}"
    );
    assert!(
        stderr.matches("Type     Name").count() >= 3,
        "the periodic tables and the summary's go to stderr: {stderr}"
    );

    let mut total = 0;
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    for entry in entries {
        let object = entry.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected = LOCUST_KEYS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected, "Locust's keys");
        let count = entry["num_requests"].as_u64().unwrap();
        total += count;
        assert_eq!(entry["num_none_requests"], 0);
        assert!(entry["num_failures"].is_u64());
        assert!(entry["total_content_length"].is_u64());
        for key in [
            "last_request_timestamp",
            "start_time",
            "total_response_time",
            "max_response_time",
            "min_response_time",
        ] {
            assert!(entry[key].is_f64(), "{key} is a float: {entry}");
        }
        let start = entry["start_time"].as_f64().unwrap();
        assert!(start <= entry["last_request_timestamp"].as_f64().unwrap());
        let response_times = entry["response_times"].as_object().unwrap();
        for key in response_times.keys() {
            let ms: f64 = key.parse::<u64>().expect("integer keys") as f64;
            assert_eq!(
                ms % locust_step(ms),
                0.0,
                "{key} is one of Locust's rounded keys"
            );
        }
        let bucketed: u64 = response_times.values().map(|n| n.as_u64().unwrap()).sum();
        assert_eq!(bucketed, count, "every request is in the distribution");
        let per_second: u64 = entry["num_reqs_per_sec"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(per_second, count, "every request is in a second");
        for second in entry["num_reqs_per_sec"].as_object().unwrap().keys() {
            let second: f64 = second.parse::<u64>().unwrap() as f64;
            assert!(
                (start - 1.0..=start + 10.0).contains(&second),
                "second {second} of a run started at {start}"
            );
        }
        // Percentiles a Locust tool rebuilds from the distribution are cicada's own, rounded as Locust rounds. Locust
        // picks the sample of rank int(q·n) + 1, the histogram the one of rank ceil(q·n): the same one unless q·n is
        // whole (q < 1).
        let own = report["stats"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|own| own["name"] == entry["name"] && own["method"] == entry["method"])
            .unwrap();
        for pair in own["percentiles"].as_array().unwrap() {
            let (quantile, ms) = (pair[0].as_f64().unwrap(), pair[1].as_f64().unwrap());
            let rank = count as f64 * quantile;
            if quantile < 1.0 && (rank - rank.round()).abs() < 1e-9 {
                continue;
            }
            let rebuilt = locust_percentile(response_times, count, quantile);
            let step = locust_step(ms);
            assert_eq!(
                rebuilt,
                (ms / step).round_ties_even() * step,
                "{}: p{quantile} rebuilt from the distribution vs cicada's {ms} ms, rounded as Locust rounds",
                entry["name"]
            );
        }
    }
    assert_eq!(
        total,
        target.counters().total(),
        "every request the server saw"
    );
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("locust.json")).unwrap()).unwrap();
    assert_eq!(
        &file,
        &serde_json::Value::Array(entries.clone()),
        "--json-file NAME writes NAME.json"
    );
    assert!(!locust_name.exists());
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
    let report_path = dir.path().join("report.json");
    std::fs::write(
        &config,
        format!(
            "host = \"{}\"\nusers = 2\nspawn-rate = 100\nrun-time = \"2s\"\nheadless = true\nonly-summary = true\nreport-json = \"{}\"\n",
            target.url(),
            report_path.display()
        ),
    )
    .unwrap();
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
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
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

/// Run quickstart with `args` against a fresh counting target; the run must be refused with exit code 2 and an
/// error naming `flag` and `path`, before the target sees a single request.
fn refused_before_any_load(args: &[&str], flag: &str, path: &str, why: &str) {
    let target = DemoTarget::start();
    let url = target.url();
    let mut full = vec![
        "--headless",
        "--only-summary",
        "-H",
        &url,
        "-u",
        "2",
        "-r",
        "100",
        "-t",
        "5s",
    ];
    full.extend_from_slice(args);
    let started = Instant::now();
    let output = run_example("quickstart", &full, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    let line = stderr
        .lines()
        .find(|line| line.starts_with("error:"))
        .unwrap_or_else(|| panic!("{args:?}: no error line in {stderr}"));
    assert!(
        line.starts_with(&format!("error: {flag} {path}")),
        "{args:?}: {line}"
    );
    assert!(line.contains(why), "{args:?}: {line}");
    assert_eq!(
        target.counters().total(),
        0,
        "{args:?}: the target saw requests"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{args:?}: refused at once, not after the run"
    );
}

#[test]
fn report_paths_that_cannot_be_written_are_usage_errors_before_any_load() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let path = |name: &str| root.join(name).to_string_lossy().into_owned();
    std::fs::write(root.join("file.txt"), "not a directory").unwrap();
    std::fs::create_dir(root.join("kept")).unwrap();

    refused_before_any_load(
        &["--csv", "/dev/full"],
        "--csv",
        "/dev/full",
        "names a device",
    );
    refused_before_any_load(
        &["--html", "/dev/full"],
        "--html",
        "/dev/full",
        "is a device",
    );
    refused_before_any_load(
        &["--report-json", "/dev/null"],
        "--report-json",
        "/dev/null",
        "is a device",
    );
    let missing = path("missing/locust");
    refused_before_any_load(
        &["--json-file", &missing],
        "--json-file",
        &format!("{missing}.json"),
        "does not exist",
    );
    let directory = path("kept");
    refused_before_any_load(
        &["--html", &directory],
        "--html",
        &directory,
        "is a directory",
    );
    let under_file = path("file.txt/run");
    refused_before_any_load(
        &["--csv", &under_file],
        "--csv",
        &format!("{under_file}_stats.csv"),
        "is not a directory",
    );
    let shared = path("kept/report");
    let same = path("kept/./report");
    refused_before_any_load(
        &["--html", &shared, "--report-json", &same],
        "--report-json",
        &same,
        "--html writes to the same file",
    );
    let history = path("kept/run_stats_history.csv");
    refused_before_any_load(
        &["--csv", &path("kept/run"), "--html", &history],
        "--html",
        &history,
        "--csv writes to the same file",
    );
    let log = path("missing/cicada.log");
    // `--logfile` was checked at start already; its message has a colon after the flag.
    refused_before_any_load(&["--logfile", &log], "--logfile:", "", "No such file");

    // A good --csv next to a bad --html leaves nothing behind: not even the history CSV.
    let prefix = path("kept/run");
    refused_before_any_load(
        &["--csv", &prefix, "--html", "/dev/full"],
        "--html",
        "/dev/full",
        "is a device",
    );
    let left: Vec<_> = std::fs::read_dir(root.join("kept")).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");

    // A directory without write permission (root writes anywhere: then there is nothing to test).
    let read_only = root.join("read-only");
    std::fs::create_dir(&read_only).unwrap();
    let mut permissions = std::fs::metadata(&read_only).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o555);
    std::fs::set_permissions(&read_only, permissions).unwrap();
    // Root writes into read-only directories: it is refused files in /proc instead.
    let report = if std::fs::write(read_only.join("probe"), "").is_ok() {
        "/proc/cicada-report.html".to_string()
    } else {
        path("read-only/report.html")
    };
    refused_before_any_load(
        &["--html", &report],
        "--html",
        &report,
        "cannot create files in",
    );
}

/// Spawn quickstart; once it has passed its start-up checks (its history CSV exists), call `mid_run`; return its
/// exit code and stderr.
fn run_and_meddle(args: &[&str], history: &Path, mid_run: impl FnOnce()) -> (Option<i32>, String) {
    use std::io::Read as _;
    let mut child = std::process::Command::new(example("quickstart"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let kill = |child: &mut std::process::Child, why: &str| {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        let _ = child.wait();
        panic!("{why}");
    };
    while !history.exists() {
        if started.elapsed() > Duration::from_secs(30) {
            kill(&mut child, "the run never started");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    mid_run();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            kill(&mut child, "the run did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), stderr_reader.join().unwrap())
}

#[test]
fn a_report_lost_at_the_end_exits_5_and_every_other_report_is_written() {
    let target = DemoTarget::start();
    let dir = tempfile::tempdir().unwrap();
    let csv_dir = dir.path().join("csv");
    let html_dir = dir.path().join("html");
    let json_dir = dir.path().join("json");
    for directory in [&csv_dir, &html_dir, &json_dir] {
        std::fs::create_dir(directory).unwrap();
    }
    let history = csv_dir.join("run_stats_history.csv");
    let html = html_dir.join("report.html");
    // Every request fails: without the lost reports the exit code would be 1.
    let failing_host = format!("{}/status/500", target.url());
    let args = [
        "--headless",
        "--only-summary",
        "-H",
        &failing_host,
        "-u",
        "2",
        "-r",
        "100",
        "-t",
        "3s",
        "--csv",
        &csv_dir.join("run").to_string_lossy(),
        "--html",
        &html.to_string_lossy(),
        "--json-file",
        &json_dir.join("locust").to_string_lossy(),
        "--report-json",
        &json_dir.join("cicada.json").to_string_lossy(),
    ]
    .map(|arg| arg.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stderr) = run_and_meddle(&args, &history, || {
        std::fs::remove_dir_all(&html_dir).unwrap();
        std::fs::remove_file(&history).unwrap();
    });
    assert_eq!(code, Some(5), "{stderr}");
    assert!(
        stderr.contains("error: 2 reports could not be written"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("--html {}: ", html.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "--csv {}: the file was removed or replaced",
            history.display()
        )),
        "{stderr}"
    );
    assert!(
        !html_dir.exists(),
        "nothing recreated the removed directory"
    );

    let (_, stats) = read_csv_file(&csv_dir.join("run_stats.csv"));
    let total: u64 = stats.last().unwrap()[2].parse().unwrap();
    assert_eq!(total, target.counters().total());
    assert_eq!(
        stats.last().unwrap()[3],
        stats.last().unwrap()[2],
        "every request failed"
    );
    let (_, failures) = read_csv_file(&csv_dir.join("run_failures.csv"));
    assert!(!failures.is_empty());
    read_csv_file(&csv_dir.join("run_exceptions.csv"));
    let locust: serde_json::Value =
        serde_json::from_slice(&std::fs::read(json_dir.join("locust.json")).unwrap()).unwrap();
    let locust_total: u64 = locust
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["num_requests"].as_u64().unwrap())
        .sum();
    assert_eq!(locust_total, total);
    let own: serde_json::Value =
        serde_json::from_slice(&std::fs::read(json_dir.join("cicada.json")).unwrap()).unwrap();
    assert_eq!(own["stats"]["total"]["num_requests"].as_u64(), Some(total));
    let mut left: Vec<String> = std::fs::read_dir(&csv_dir)
        .unwrap()
        .chain(std::fs::read_dir(&json_dir).unwrap())
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort_unstable();
    assert_eq!(
        left,
        [
            "cicada.json",
            "locust.json",
            "run_exceptions.csv",
            "run_failures.csv",
            "run_stats.csv"
        ],
        "no temporary file is left"
    );
}
