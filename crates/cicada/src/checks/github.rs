//! The GitHub Actions job summary: when `GITHUB_STEP_SUMMARY` names a file, a Markdown section with the request
//! statistics and the checks is appended to it at the end of the run (GitHub shows it on the run's page). The table
//! has one row per stats entry, so it is bounded by `--max-names`.

use std::fmt::Write as _;

use cicada_stats::StatsSnapshot;

use super::CheckReport;

/// The environment variable GitHub Actions sets to the summary file of the current step.
pub const SUMMARY_ENV: &str = "GITHUB_STEP_SUMMARY";

/// The Markdown section for a run.
pub fn summary_markdown(
    checks: &CheckReport,
    snapshot: &StatsSnapshot,
    host: &str,
    stop_reason: &str,
) -> String {
    let mut text = String::new();
    let verdict = if checks.checks.is_empty() {
        String::new()
    } else if checks.passed() {
        format!(": {} checks passed", checks.checks.len())
    } else {
        format!(
            ": {} of {} checks failed",
            checks.checks.iter().filter(|c| !c.passed).count(),
            checks.checks.len()
        )
    };
    let _ = writeln!(text, "## cicada load test{verdict}\n");
    let _ = writeln!(
        text,
        "Target `{}`, {}; {} requests, {} failed.\n",
        cell(host),
        cell(stop_reason),
        snapshot.total.num_requests,
        snapshot.total.num_failures
    );
    if !checks.checks.is_empty() {
        text.push_str("| Check | Result | Measured | Expected |\n| --- | --- | --- | --- |\n");
        for check in &checks.checks {
            let _ = writeln!(
                text,
                "| `{}` | {} | {} | {} |",
                cell(&check.expr),
                if check.passed { "✅ pass" } else { "❌ fail" },
                cell(&check.measured_text()),
                cell(&check.expected_text())
            );
        }
        if let Some(note) = checks.saturation_note() {
            let _ = writeln!(text, "\n> {note}");
        }
        text.push('\n');
    }
    text.push_str(
        "| Type | Name | Requests | Failures | Avg (ms) | p50 (ms) | p95 (ms) | p99 (ms) | Max (ms) | RPS |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for entry in snapshot
        .entries
        .iter()
        .chain(std::iter::once(&snapshot.total))
    {
        let percentile = |q| {
            entry
                .percentile(q)
                .map_or_else(|| "–".into(), |v| format!("{v:.0}"))
        };
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {:.1} | {} | {} | {} | {:.0} | {:.1} |",
            cell(&entry.method),
            cell(&entry.name),
            entry.num_requests,
            entry.num_failures,
            entry.avg_ms,
            percentile(0.5),
            percentile(0.95),
            percentile(0.99),
            entry.max_ms,
            entry.total_rps
        );
    }
    text.push('\n');
    text
}

/// Text for a Markdown table cell: `|` would end the cell, a newline the row.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{Check, evaluate};

    #[test]
    fn the_summary_has_both_tables() {
        let snapshot = StatsSnapshot::default();
        let report = evaluate(&[Check::parse("a|b:p95<1s").unwrap()], &snapshot, None, &[]);
        let text = summary_markdown(
            &report,
            &snapshot,
            "http://127.0.0.1:1",
            "run time limit reached",
        );
        assert!(
            text.starts_with("## cicada load test: 1 of 1 checks failed"),
            "{text}"
        );
        assert!(
            text.contains("| `a\\|b:p95<1s` | ❌ fail | not measured | < 1000.0 ms |"),
            "{text}"
        );
        assert!(text.contains("| Aggregated | 0 | 0 |"), "{text}");
    }
}
