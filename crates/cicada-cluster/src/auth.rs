//! The master's checks on a worker's `Attach`: well-formed and bounded fields, the protocol revision, the
//! shared token (first, and in constant time, so that an unauthenticated peer learns nothing about the master's
//! version or test), the program's version and the test's fingerprint. Each refusal names what differs and how
//! to fix it.

use std::collections::HashSet;

use subtle::ConstantTimeEq;

use crate::PROTOCOL_VERSION;
use crate::proto;
use crate::types::{Refusal, RefusalCode, TestIdentity, Token};

/// Longest worker id, hostname, version or fingerprint accepted at attach, in bytes: the registry keeps them.
pub(crate) const MAX_ATTACH_FIELD_BYTES: usize = 256;

/// Longest test summary accepted at attach (it is compared, never kept).
pub(crate) const MAX_TEST_SUMMARY_BYTES: usize = 256 * 1024;

/// Lines of each side a fingerprint refusal lists before it says how many more differ.
const MAX_DIFFERENCE_LINES: usize = 10;

/// Characters of one summary line a refusal quotes.
const MAX_QUOTED_LINE_CHARS: usize = 160;

/// What the master expects of every worker.
pub(crate) struct AttachPolicy<'a> {
    pub(crate) version: &'a str,
    pub(crate) test: &'a TestIdentity,
    pub(crate) token: Option<&'a Token>,
}

/// Accepts or refuses an attach. Order matters: malformed first, then the token, and only then what would tell
/// an unauthenticated peer about the master.
pub(crate) fn check_attach(
    policy: &AttachPolicy<'_>,
    attach: &proto::Attach,
) -> Result<(), Refusal> {
    check_fields(attach)?;
    if attach.protocol != PROTOCOL_VERSION {
        return Err(refusal(
            RefusalCode::Protocol,
            format!(
                "the worker speaks cluster protocol {} and the master {PROTOCOL_VERSION}: run the same cicada \
                 build on the master and every worker",
                attach.protocol
            ),
        ));
    }
    if let Some(expected) = policy.token {
        if attach.token.is_empty() {
            return Err(refusal(
                RefusalCode::Token,
                "the master requires a cluster token and the worker sent none: give the worker the master's \
                 token (--cluster-token or CICADA_CLUSTER_TOKEN)"
                    .into(),
            ));
        }
        if !tokens_match(expected, &attach.token) {
            return Err(refusal(
                RefusalCode::Token,
                "the worker's cluster token differs from the master's: give both the same token"
                    .into(),
            ));
        }
    }
    if attach.version != policy.version {
        return Err(refusal(
            RefusalCode::Version,
            format!(
                "the worker runs version {:?} and the master {:?}: run the same build on the master and every \
                 worker",
                attach.version, policy.version
            ),
        ));
    }
    if attach.test_fingerprint != policy.test.fingerprint {
        return Err(refusal(
            RefusalCode::Fingerprint,
            describe_test_difference(policy.test, &attach.test_fingerprint, &attach.test_summary),
        ));
    }
    Ok(())
}

fn refusal(code: RefusalCode, reason: String) -> Refusal {
    Refusal { code, reason }
}

fn check_fields(attach: &proto::Attach) -> Result<(), Refusal> {
    if attach.worker_id.is_empty() {
        return Err(refusal(
            RefusalCode::Protocol,
            "the attach carries no worker id".into(),
        ));
    }
    if attach.worker_id.chars().any(char::is_control) {
        return Err(refusal(
            RefusalCode::Protocol,
            "the worker id contains control characters".into(),
        ));
    }
    let bounded = [
        ("worker id", &attach.worker_id),
        ("hostname", &attach.hostname),
        ("version", &attach.version),
        ("test fingerprint", &attach.test_fingerprint),
    ];
    for (what, value) in bounded {
        if value.len() > MAX_ATTACH_FIELD_BYTES {
            return Err(refusal(
                RefusalCode::Protocol,
                format!(
                    "the worker's {what} is {} bytes long, more than the {MAX_ATTACH_FIELD_BYTES} a master accepts",
                    value.len()
                ),
            ));
        }
    }
    if attach.test_summary.len() > MAX_TEST_SUMMARY_BYTES {
        return Err(refusal(
            RefusalCode::Protocol,
            format!(
                "the worker's test summary is {} bytes long, more than the {MAX_TEST_SUMMARY_BYTES} a master accepts",
                attach.test_summary.len()
            ),
        ));
    }
    Ok(())
}

/// Constant time in the tokens' content (a different length answers at once: the length is not secret).
pub(crate) fn tokens_match(expected: &Token, given: &str) -> bool {
    expected.expose().as_bytes().ct_eq(given.as_bytes()).into()
}

/// Names what differs between the master's test and a worker's: the summary lines only one side has.
pub(crate) fn describe_test_difference(
    master: &TestIdentity,
    worker_fingerprint: &str,
    worker_summary: &str,
) -> String {
    let master_lines = summary_lines(&master.summary);
    let worker_lines = summary_lines(worker_summary);
    let master_set: HashSet<&str> = master_lines.iter().copied().collect();
    let worker_set: HashSet<&str> = worker_lines.iter().copied().collect();
    let only_master: Vec<&str> = master_lines
        .iter()
        .copied()
        .filter(|line| !worker_set.contains(line))
        .collect();
    let only_worker: Vec<&str> = worker_lines
        .iter()
        .copied()
        .filter(|line| !master_set.contains(line))
        .collect();

    let mut reason = format!(
        "the worker runs a different test (fingerprint {worker_fingerprint:?}, the master's {:?})",
        master.fingerprint
    );
    if only_master.is_empty() && only_worker.is_empty() {
        reason.push_str(
            "; the summaries list the same items, so they differ in order or in what the summary leaves out",
        );
    } else {
        append_lines(&mut reason, "only on the master", &only_master);
        append_lines(&mut reason, "only on the worker", &only_worker);
    }
    reason.push_str(": build the master and the workers from the same test");
    reason
}

fn summary_lines(summary: &str) -> Vec<&str> {
    let mut seen = HashSet::new();
    summary
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && seen.insert(*line))
        .collect()
}

fn append_lines(reason: &mut String, heading: &str, lines: &[&str]) {
    if lines.is_empty() {
        return;
    }
    reason.push_str("; ");
    reason.push_str(heading);
    reason.push_str(": ");
    for (index, line) in lines.iter().take(MAX_DIFFERENCE_LINES).enumerate() {
        if index > 0 {
            reason.push_str(", ");
        }
        reason.push('"');
        let mut chars = line.chars();
        reason.extend(chars.by_ref().take(MAX_QUOTED_LINE_CHARS));
        if chars.next().is_some() {
            reason.push('…');
        }
        reason.push('"');
    }
    if lines.len() > MAX_DIFFERENCE_LINES {
        reason.push_str(&format!(" and {} more", lines.len() - MAX_DIFFERENCE_LINES));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_identity() -> TestIdentity {
        TestIdentity::new(
            "abc123",
            "user Visitor weight 1\ntask Visitor.index weight 1\ntask Visitor.view_item weight 3",
        )
    }

    fn attach(token: &str) -> proto::Attach {
        proto::Attach {
            worker_id: "host_1_ab".into(),
            hostname: "host".into(),
            version: "0.1.0".into(),
            test_fingerprint: "abc123".into(),
            token: token.into(),
            pid: 1,
            cores: 2,
            protocol: PROTOCOL_VERSION,
            incarnation: 7,
            test_summary: test_identity().summary,
            status: None,
        }
    }

    fn check(token: Option<&Token>, attach: &proto::Attach) -> Result<(), Refusal> {
        let test = test_identity();
        check_attach(
            &AttachPolicy {
                version: "0.1.0",
                test: &test,
                token,
            },
            attach,
        )
    }

    #[test]
    fn an_equal_worker_is_accepted_with_or_without_a_token() {
        let token = Token::new("s3cret").unwrap();
        assert_eq!(check(Some(&token), &attach("s3cret")), Ok(()));
        assert_eq!(check(None, &attach("")), Ok(()));
    }

    #[test]
    fn a_wrong_or_missing_token_is_refused_before_anything_is_revealed() {
        let token = Token::new("s3cret").unwrap();
        let mut wrong = attach("guess");
        wrong.version = "9.9.9".into();
        let refusal = check(Some(&token), &wrong).unwrap_err();
        assert_eq!(refusal.code, RefusalCode::Token);
        assert!(!refusal.reason.contains("0.1.0"), "{}", refusal.reason);
        assert!(!refusal.reason.contains("s3cret"));
        let missing = check(Some(&token), &attach("")).unwrap_err();
        assert_eq!(missing.code, RefusalCode::Token);
        assert!(missing.reason.contains("sent none"), "{}", missing.reason);
    }

    #[test]
    fn a_different_version_names_both() {
        let mut other = attach("");
        other.version = "0.2.0".into();
        let refusal = check(None, &other).unwrap_err();
        assert_eq!(refusal.code, RefusalCode::Version);
        assert!(refusal.reason.contains("\"0.2.0\"") && refusal.reason.contains("\"0.1.0\""));
    }

    #[test]
    fn a_different_protocol_is_refused() {
        let mut other = attach("");
        other.protocol = PROTOCOL_VERSION + 1;
        assert_eq!(check(None, &other).unwrap_err().code, RefusalCode::Protocol);
    }

    #[test]
    fn a_different_test_names_the_lines_that_differ() {
        let mut other = attach("");
        other.test_fingerprint = "def456".into();
        other.test_summary =
            "user Visitor weight 1\ntask Visitor.index weight 1\ntask Visitor.view_item weight 5"
                .into();
        let refusal = check(None, &other).unwrap_err();
        assert_eq!(refusal.code, RefusalCode::Fingerprint);
        assert!(
            refusal
                .reason
                .contains("only on the master: \"task Visitor.view_item weight 3\""),
            "{}",
            refusal.reason
        );
        assert!(
            refusal
                .reason
                .contains("only on the worker: \"task Visitor.view_item weight 5\""),
            "{}",
            refusal.reason
        );
        assert!(!refusal.reason.contains("Visitor.index"));
    }

    #[test]
    fn a_long_difference_is_cut_short() {
        let master = TestIdentity::new("a", "");
        let summary: String = (0..50).map(|i| format!("task T.t{i} weight 1\n")).collect();
        let reason = describe_test_difference(&master, "b", &summary);
        assert!(reason.contains("and 40 more"), "{reason}");
        let long_line = "x".repeat(1000);
        let reason = describe_test_difference(&master, "b", &long_line);
        assert!(reason.len() < 600, "{}", reason.len());
    }

    #[test]
    fn equal_summaries_with_different_fingerprints_say_so() {
        let mut other = attach("");
        other.test_fingerprint = "zzz".into();
        let refusal = check(None, &other).unwrap_err();
        assert!(
            refusal.reason.contains("list the same items"),
            "{}",
            refusal.reason
        );
    }

    #[test]
    fn oversized_or_malformed_fields_are_refused() {
        let mut long = attach("");
        long.hostname = "h".repeat(MAX_ATTACH_FIELD_BYTES + 1);
        assert_eq!(check(None, &long).unwrap_err().code, RefusalCode::Protocol);
        let mut empty = attach("");
        empty.worker_id.clear();
        assert_eq!(check(None, &empty).unwrap_err().code, RefusalCode::Protocol);
        let mut control = attach("");
        control.worker_id = "a\nb".into();
        assert_eq!(
            check(None, &control).unwrap_err().code,
            RefusalCode::Protocol
        );
    }

    #[test]
    fn tokens_compare_by_content() {
        let token = Token::new("abcdef").unwrap();
        assert!(tokens_match(&token, "abcdef"));
        assert!(!tokens_match(&token, "abcdeg"));
        assert!(!tokens_match(&token, "abcde"));
        assert!(!tokens_match(&token, ""));
    }
}
