//! The resource guard in real processes: CPU starvation, memory growth, a unique-URL flood. Each asserts on the
//! process's own JSON report and exit code.

use std::time::Duration;

use serde_json::Value;

use crate::common::{example, output_within};

/// Run the guard demo with `args`, return (exit code, JSON report).
fn guard_demo(args: &[&str], envs: &[(&str, &str)], limit: Duration) -> (Option<i32>, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let mut command = std::process::Command::new(example("guard_demo"));
    command.args([
        "--headless",
        "--only-summary",
        "--json-file",
        json.to_str().unwrap(),
    ]);
    command.args(args);
    for (key, value) in envs {
        command.env(key, value);
    }
    let output = output_within(command, limit);
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), serde_json::from_str(&text).unwrap())
}

fn actions(report: &Value) -> Vec<String> {
    report["generator"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap().to_string())
        .collect()
}

fn user_counts(report: &Value) -> Vec<u64> {
    report["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user_count"].as_u64().unwrap())
        .collect()
}

#[test]
fn cpu_starvation_pauses_sheds_marks_and_recovers() {
    // Twenty burners want about two cores; the guard allows 40% of them. The burn stops after 12 s.
    let (code, report) = guard_demo(
        &[
            "-u",
            "20",
            "-r",
            "100",
            "-t",
            "40s",
            "--max-cpu",
            "40",
            "--max-lag",
            "2s",
            "CpuBurner",
        ],
        &[("GUARD_DEMO_SECONDS", "12")],
        Duration::from_secs(90),
    );
    assert_eq!(code, Some(0), "{report:#}");
    let kinds = actions(&report);
    for expected in ["cpu_warning", "pause_spawning", "shed", "resume"] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "no {expected} in {kinds:?}"
        );
    }
    let generator = &report["generator"];
    assert!(generator["saturated_samples"].as_u64().unwrap() >= 2);
    assert!(generator["users_shed"].as_u64().unwrap() >= 2);
    let points = report["history"].as_array().unwrap();
    assert!(
        points.iter().any(|p| p["generator"]["saturated"] == true),
        "saturated windows are marked in the history"
    );
    let counts = user_counts(&report);
    let lowest = counts.iter().skip(2).min().copied().unwrap();
    assert!(lowest < 20, "users were shed: {counts:?}");
    let last_running = counts[counts.len() - 2];
    assert_eq!(
        last_running, 20,
        "users ramped back once the burn stopped: {counts:?}"
    );
}

#[test]
fn memory_growth_is_held_under_the_limit() {
    let limit: u64 = 300 << 20;
    let (code, report) = guard_demo(
        &[
            "-u",
            "8",
            "-r",
            "100",
            "-t",
            "20s",
            "--max-memory",
            "300MiB",
            "MemoryHog",
        ],
        &[("GUARD_DEMO_SECONDS", "60")],
        Duration::from_secs(90),
    );
    let generator = &report["generator"];
    assert!(
        generator["users_shed"].as_u64().unwrap() >= 1,
        "{generator:#}"
    );
    let peak = generator["peak_rss_bytes"].as_u64().unwrap();
    // Sampling once a second while 8 users add 8 MiB/s each: at most about two seconds of growth over.
    assert!(peak < limit + (128 << 20), "peak RSS {} MiB", peak >> 20);
    assert!(code == Some(0) || code == Some(4), "exit code {code:?}");
    assert!(report["stats"].is_object(), "the reports were written");
}

#[test]
fn a_million_distinct_urls_cost_little_memory() {
    let (code, report) = guard_demo(
        &[
            "-u",
            "4",
            "-r",
            "100",
            "-t",
            "30s",
            "--max-names",
            "1000",
            "--max-cpu",
            "100",
            "--guard",
            "warn",
            "UrlFlood",
        ],
        &[],
        Duration::from_secs(120),
    );
    assert_eq!(code, Some(0));
    let stats = &report["stats"];
    let entries = stats["entries"].as_array().unwrap();
    assert!(entries.len() <= 1001, "{} entries", entries.len());
    let total = stats["total"]["num_requests"].as_u64().unwrap();
    let overflow: u64 = entries
        .iter()
        .filter(|e| e["name"].as_str().unwrap().contains("over the name cap"))
        .map(|e| e["num_requests"].as_u64().unwrap())
        .sum();
    assert_eq!(
        overflow + 1000,
        total,
        "the overflow entry counts every name past the cap"
    );
    assert!(
        total >= 1_000_000,
        "only {total} distinct names were recorded"
    );
    let rss: Vec<u64> = report["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["generator"]["rss_bytes"].as_u64())
        .filter(|r| *r > 0)
        .collect();
    let growth = rss.iter().max().unwrap() - rss[0];
    assert!(
        growth < 50 << 20,
        "RSS grew by {} MiB: {rss:?}",
        growth >> 20
    );
}

/// The memory cgroup directory of this process (cgroup v1), if there is one we may write.
fn own_memory_cgroup() -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_string())
    })?;
    let dir = std::path::Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
    dir.join("memory.limit_in_bytes").exists().then_some(dir)
}

#[test]
fn a_real_container_memory_limit_is_found_and_respected() {
    let Some(parent) = own_memory_cgroup() else {
        eprintln!(
            "SKIPPED a_real_container_memory_limit_is_found_and_respected: no cgroup v1 memory controller here"
        );
        return;
    };
    let cgroup = parent.join(format!("cicada-guard-test-{}", std::process::id()));
    if std::fs::create_dir(&cgroup).is_err()
        || std::fs::write(
            cgroup.join("memory.limit_in_bytes"),
            (400u64 << 20).to_string(),
        )
        .is_err()
    {
        let _ = std::fs::remove_dir(&cgroup);
        eprintln!(
            "SKIPPED a_real_container_memory_limit_is_found_and_respected: cannot create a memory cgroup here"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {} --headless --only-summary -u 3 -r 100 -t 20s --json-file {} MemoryHog",
        cgroup.display(),
        example("guard_demo").display(),
        json.display()
    );
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", &script])
        .env("GUARD_DEMO_SECONDS", "60");
    let output = output_within(command, Duration::from_secs(90));
    let removed = std::fs::remove_dir(&cgroup);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        matches!(output.status.code(), Some(0) | Some(4)),
        "not OOM-killed: {:?}\n{stderr}",
        output.status
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let generator = &report["generator"];
    assert_eq!(
        generator["limits"]["memory_limit_bytes"].as_u64(),
        Some(400 << 20),
        "the guard found the cgroup's limit: {generator:#}"
    );
    assert_eq!(
        generator["limits"]["max_memory_bytes"].as_u64(),
        Some((400u64 << 20) * 85 / 100)
    );
    assert!(generator["users_shed"].as_u64().unwrap() >= 1);
    assert!(generator["peak_rss_bytes"].as_u64().unwrap() < 400 << 20);
    removed.unwrap();
}
