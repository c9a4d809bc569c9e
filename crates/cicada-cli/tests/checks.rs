//! Checks and `cicada compare` with the real binary: two Lua runs against the demo target on 127.0.0.1:0 (one against
//! a slower endpoint) compared with `--max-regression`, and the GitHub job summary appended to `GITHUB_STEP_SUMMARY`.
//! Assertions are on exit codes, the server's own counts and the files written.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cicada_demo::DemoServer;

/// The demo target on its own runtime.
struct Target {
    runtime: tokio::runtime::Runtime,
    server: Option<DemoServer>,
}

impl Target {
    fn start() -> Target {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime
            .block_on(DemoServer::start("127.0.0.1:0".parse().unwrap()))
            .unwrap();
        Target {
            runtime,
            server: Some(server),
        }
    }

    fn url(&self) -> String {
        self.server.as_ref().unwrap().url()
    }

    fn total(&self) -> u64 {
        self.server.as_ref().unwrap().counters().total()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.shutdown());
        }
    }
}

/// A test whose one task asks for `/slow?ms=DELAY`, recorded as `/page`; two users at most.
fn lua_test(delay_ms: u32) -> String {
    format!(
        "local Visitor = cicada.user {{ name = \"Visitor\", wait_time = cicada.constant(0.01) }}\n\
         Visitor:task(1, function(self) self.client:get(\"/slow?ms={delay_ms}\", {{ name = \"/page\" }}) end)\n"
    )
}

/// Run `cicada` in `dir` with `args`, bounded in time.
fn cicada(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_cicada"))
        .current_dir(dir)
        .args(args)
        // A CI runner's own summary file is not this test's to write into.
        .env_remove("GITHUB_STEP_SUMMARY")
        .envs(env.iter().copied())
        .output()
        .expect("cicada runs");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a run must end by itself"
    );
    output
}

/// A headless two-second run of the test with `delay_ms`, writing `report` (its JSON report).
fn run(
    dir: &Path,
    target: &Target,
    delay_ms: u32,
    report: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let file = format!("test_{delay_ms}.lua");
    std::fs::write(dir.join(&file), lua_test(delay_ms)).unwrap();
    let url = target.url();
    let mut args = vec![
        "-f",
        &file,
        "--headless",
        "--only-summary",
        "-H",
        &url,
        "-u",
        "2",
        "-r",
        "100",
        "-t",
        "2s",
        "--report-json",
        report,
    ];
    args.extend_from_slice(extra);
    cicada(dir, &args, env)
}

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

fn text(output: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn compare_finds_the_regression_of_a_slower_run() {
    let target = Target::start();
    let dir = tempfile::tempdir().unwrap();
    let fast = run(dir.path(), &target, 5, "fast.json", &[], &[]);
    assert_eq!(code(&fast), 0, "{}", text(&fast));
    let slow = run(dir.path(), &target, 80, "slow.json", &[], &[]);
    assert_eq!(code(&slow), 0, "{}", text(&slow));
    assert!(target.total() > 0);

    // The slower run against the faster one: p50 went from about 5 ms to at least 80 ms.
    let compared = cicada(
        dir.path(),
        &[
            "compare",
            "fast.json",
            "slow.json",
            "--max-regression",
            "10%",
        ],
        &[],
    );
    assert_eq!(code(&compared), 6, "{}", text(&compared));
    let stdout = String::from_utf8_lossy(&compared.stdout);
    assert!(stdout.contains("GET /page"), "{stdout}");
    assert!(
        stdout.contains("GET /page: p50"),
        "the p50 regression is named: {stdout}"
    );
    assert!(stdout.contains("regressions beyond 10.0%"), "{stdout}");

    // The other way round it is an improvement; without a bound there is only the table.
    let improved = cicada(
        dir.path(),
        &[
            "compare",
            "slow.json",
            "fast.json",
            "--max-regression",
            "10%",
        ],
        &[],
    );
    assert_eq!(code(&improved), 0, "{}", text(&improved));
    assert!(String::from_utf8_lossy(&improved.stdout).contains("No regression beyond 10.0%"));
    let table_only = cicada(dir.path(), &["compare", "fast.json", "slow.json"], &[]);
    assert_eq!(code(&table_only), 0, "{}", text(&table_only));

    // A file that is not a report is a usage error naming it.
    std::fs::write(dir.path().join("junk.json"), "[1, 2]").unwrap();
    let bad = cicada(dir.path(), &["compare", "fast.json", "junk.json"], &[]);
    assert_eq!(code(&bad), 2, "{}", text(&bad));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("junk.json is not a cicada JSON report"));
    std::fs::write(dir.path().join("other.json"), "{\"users\": 3}").unwrap();
    let other = cicada(dir.path(), &["compare", "other.json", "fast.json"], &[]);
    assert_eq!(code(&other), 2, "{}", text(&other));
    assert!(String::from_utf8_lossy(&other.stderr).contains("missing field `stats`"));
    let missing = cicada(dir.path(), &["compare", "fast.json", "nothing.json"], &[]);
    assert_eq!(code(&missing), 2, "{}", text(&missing));
}

#[test]
fn the_github_summary_is_appended_with_the_checks() {
    let target = Target::start();
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.md");
    std::fs::write(&summary, "# an earlier step\n").unwrap();
    let summary_env = summary.to_str().unwrap();
    let output = run(
        dir.path(),
        &target,
        40,
        "report.json",
        &["--check", "/page:p50>=40ms", "--check", "/page:p95<20ms"],
        &[("GITHUB_STEP_SUMMARY", summary_env)],
    );
    assert_eq!(code(&output), 6, "one check fails: {}", text(&output));
    let markdown = std::fs::read_to_string(&summary).unwrap();
    assert!(
        markdown.starts_with("# an earlier step\n"),
        "appended, not replaced: {markdown}"
    );
    assert!(
        markdown.contains("## cicada load test: 1 of 2 checks failed"),
        "{markdown}"
    );
    assert!(
        markdown.contains("| `/page:p50>=40ms` | ✅ pass |"),
        "{markdown}"
    );
    assert!(
        markdown.contains("| `/page:p95<20ms` | ❌ fail |"),
        "{markdown}"
    );
    assert!(markdown.contains("| GET | /page |"), "{markdown}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0]["passed"], true);
    assert!(checks[0]["measured"].as_f64().unwrap() >= 40.0);
    assert_eq!(checks[1]["passed"], false);
    assert_eq!(checks[1]["name"], "/page");
    assert_eq!(checks[1]["metric"], "p95");
    assert_eq!(checks[1]["op"], "<");
    assert_eq!(checks[1]["threshold"], 20.0);
}
