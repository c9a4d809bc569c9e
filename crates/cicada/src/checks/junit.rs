//! `--junit FILE`: the run as JUnit XML, the format CI systems show as test reports. One suite holds a test case per
//! check (failed when the check failed), another a test case per request name (failed when any of its requests
//! failed, with its most frequent errors). The request suite has at most one case per stats entry, so it is bounded
//! by `--max-names`; each case lists at most [`MAX_ERRORS_PER_CASE`] error groups.

use std::fmt::Write as _;

use cicada_stats::StatsSnapshot;

use super::CheckReport;

/// Error groups listed in one request name's failure.
pub const MAX_ERRORS_PER_CASE: usize = 10;

/// The JUnit XML document of a run.
pub fn junit_xml(checks: &CheckReport, snapshot: &StatsSnapshot, run_seconds: f64) -> String {
    let mut checks_suite = String::new();
    for check in &checks.checks {
        let _ = write!(
            checks_suite,
            "    <testcase classname=\"cicada.checks\" name=\"{}\" time=\"0\">",
            escape(&check.expr)
        );
        if !check.passed {
            let message = format!(
                "{}: measured {}, expected {}",
                check.name,
                check.measured_text(),
                check.expected_text()
            );
            let _ = write!(
                checks_suite,
                "\n      <failure type=\"check\" message=\"{}\">{}{}</failure>\n    ",
                escape(&message),
                escape(&message),
                check
                    .note
                    .as_ref()
                    .map_or_else(String::new, |note| escape(&format!("\n{note}")))
            );
        }
        checks_suite.push_str("</testcase>\n");
    }
    let checks_failed = checks.checks.iter().filter(|c| !c.passed).count();

    let mut requests_suite = String::new();
    let mut requests_failed = 0;
    for entry in &snapshot.entries {
        let name = if entry.method.is_empty() {
            entry.name.clone()
        } else {
            format!("{} {}", entry.method, entry.name)
        };
        let _ = write!(
            requests_suite,
            "    <testcase classname=\"cicada.requests\" name=\"{}\" time=\"{:.3}\">",
            escape(&name),
            entry.avg_ms / 1000.0
        );
        if entry.num_failures > 0 {
            requests_failed += 1;
            let message = format!(
                "{} of {} requests failed",
                entry.num_failures, entry.num_requests
            );
            let mut details = String::new();
            for failure in snapshot
                .failures
                .iter()
                .filter(|f| f.method == entry.method && f.name == entry.name)
                .take(MAX_ERRORS_PER_CASE)
            {
                let _ = writeln!(details, "{} x {}", failure.occurrences, failure.error);
            }
            let _ = write!(
                requests_suite,
                "\n      <failure type=\"failed requests\" message=\"{}\">{}</failure>\n    ",
                escape(&message),
                escape(&details)
            );
        }
        requests_suite.push_str("</testcase>\n");
    }

    let total = checks.checks.len() + snapshot.entries.len();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"cicada\" tests=\"{total}\" failures=\"{}\" errors=\"0\" time=\"{run_seconds:.3}\">",
        checks_failed + requests_failed
    );
    let _ = write!(
        xml,
        "  <testsuite name=\"cicada checks\" tests=\"{}\" failures=\"{checks_failed}\" errors=\"0\" skipped=\"0\" \
         time=\"{run_seconds:.3}\">\n{checks_suite}  </testsuite>\n",
        checks.checks.len()
    );
    let _ = write!(
        xml,
        "  <testsuite name=\"cicada requests\" tests=\"{}\" failures=\"{requests_failed}\" errors=\"0\" \
         skipped=\"0\" time=\"{run_seconds:.3}\">\n{requests_suite}  </testsuite>\n",
        snapshot.entries.len()
    );
    xml.push_str("</testsuites>\n");
    xml
}

/// Text as XML character data or an attribute value: the five special characters escaped, and characters XML 1.0
/// cannot hold (control characters other than tab and newline) replaced by U+FFFD.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(c),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::{CheckResult, evaluate};

    #[test]
    fn special_characters_are_escaped() {
        assert_eq!(
            escape("a<b & \"c\"\u{1}"),
            "a&lt;b &amp; &quot;c&quot;\u{FFFD}"
        );
    }

    #[test]
    fn a_failed_check_is_a_failed_case() {
        let checks = CheckReport {
            checks: vec![CheckResult {
                expr: "p95<300ms".into(),
                name: "Aggregated".into(),
                metric: "p95".into(),
                op: "<".into(),
                threshold: 300.0,
                unit: "ms".into(),
                measured: Some(412.0),
                passed: false,
                note: None,
            }],
            ..CheckReport::default()
        };
        let xml = junit_xml(&checks, &StatsSnapshot::default(), 3.0);
        assert!(xml.contains("name=\"p95&lt;300ms\""), "{xml}");
        assert!(
            xml.contains("measured 412.0 ms, expected &lt; 300.0 ms"),
            "{xml}"
        );
        assert!(xml.contains("tests=\"1\" failures=\"1\""), "{xml}");
        let empty = junit_xml(
            &evaluate(&[], &StatsSnapshot::default(), None, &[]),
            &StatsSnapshot::default(),
            0.0,
        );
        assert!(empty.contains("tests=\"0\" failures=\"0\""), "{empty}");
    }
}
