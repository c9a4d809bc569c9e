//! Custom messages: in one process a message is handled by the process that sent it; across a master and two
//! worker processes of the `messages` example, the master's message reaches every worker (whose users then
//! request each account the master split among them, counted by the target) and each worker's answer reaches the
//! master (whose handler writes it to a file the test reads); a payload over the size bound and a sender over the
//! rate bound are refused with their documented errors.

use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cicada::messages::{MessageError, MessageLimits};
use cicada::prelude::*;
use serde_json::Value;

use crate::common::{Process, free_port, run_test};
use crate::data::{PathCounter, assert_each_once};

/// A headless master of an example against a target of the test's own, with its JSON report in a temporary
/// directory; workers of the same example join it.
pub(crate) struct Cluster {
    example: &'static str,
    port: String,
    dir: tempfile::TempDir,
    master: Process,
}

impl Cluster {
    pub(crate) fn start(
        example: &'static str,
        port: &str,
        target: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("report.json").display().to_string();
        let mut args = vec![
            "--master",
            "--headless",
            "--only-summary",
            "--master-bind-port",
            port,
            "-H",
            target,
            "--report-json",
            &json,
        ];
        args.extend_from_slice(extra);
        let master = Process::start(example, &args, envs);
        Cluster {
            example,
            port: port.to_string(),
            dir,
            master,
        }
    }

    pub(crate) fn worker(&self, extra: &[&str], envs: &[(&str, &str)]) -> Process {
        let mut args = vec!["--worker", "--master-port", &self.port, "-L", "WARNING"];
        args.extend_from_slice(extra);
        Process::start(self.example, &args, envs)
    }

    /// Stop the master as Ctrl-C would (the test stops, every report is written); its output and JSON report.
    pub(crate) fn stop(self) -> (Output, Value) {
        self.master.signal("INT");
        let output = self.master.wait(Duration::from_secs(60));
        let path = self.dir.path().join("report.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "no report ({e}); exit {:?}\nstderr:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output, serde_json::from_str(&text).unwrap())
    }
}

/// The accounts the `messages` example's master hands out.
const ACCOUNTS: u64 = 12;

/// The acknowledgements written by the example's `ack` handler: `(source, count)`. Only whole lines count: the test
/// polls the file while the master's handler may be writing its next line.
fn acks(path: &std::path::Path) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    whole
        .lines()
        .map(|line| {
            let (source, count) = line.rsplit_once(' ').expect("source count");
            (source.to_string(), count.parse().unwrap())
        })
        .collect()
}

#[test]
fn a_single_process_handles_the_messages_it_sends() {
    let target = PathCounter::start();
    let dir = tempfile::tempdir().unwrap();
    let ack_file = dir.path().join("acks.txt");
    let ack_path = ack_file.display().to_string();
    let process = Process::start(
        "messages",
        &[
            "--headless",
            "--only-summary",
            "-H",
            target.url(),
            "-u",
            "3",
            "-r",
            "10",
            "-t",
            "120s",
        ],
        &[("MESSAGES_ACK_FILE", &ack_path)],
    );
    target.wait_for("every account viewed", Duration::from_secs(60), |t| {
        t.total_under("/items/") >= ACCOUNTS
    });
    process.signal("INT");
    let output = process.wait(Duration::from_secs(60));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_each_once(&target, "/items/", 1..=ACCOUNTS);
    assert_eq!(acks(&ack_file), vec![("local".to_string(), ACCOUNTS)]);
}

#[test]
fn messages_go_from_the_master_to_every_worker_and_back() {
    let target = PathCounter::start();
    let dir = tempfile::tempdir().unwrap();
    let ack_file = dir.path().join("acks.txt");
    let ack_path = ack_file.display().to_string();
    let port = free_port().to_string();
    let cluster = Cluster::start(
        "messages",
        &port,
        target.url(),
        &["-u", "4", "-r", "20", "-t", "120s", "--expect-workers", "2"],
        &[("MESSAGES_ACK_FILE", &ack_path)],
    );
    let _workers = [cluster.worker(&[], &[]), cluster.worker(&[], &[])];
    // Master to workers: each worker's users view the accounts of its share, which only the message carried.
    target.wait_for("every account viewed", Duration::from_secs(60), |t| {
        t.total_under("/items/") >= ACCOUNTS
    });
    // Workers to master: both acknowledgements written by the master's handler.
    let started = std::time::Instant::now();
    while acks(&ack_file).len() < 2 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (output, _report) = cluster.stop();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_each_once(&target, "/items/", 1..=ACCOUNTS);
    let acks = acks(&ack_file);
    assert_eq!(acks.len(), 2, "{acks:?}");
    assert_ne!(
        acks[0].0, acks[1].0,
        "one acknowledgement from each worker: {acks:?}"
    );
    assert!(
        acks.iter()
            .all(|(source, _)| source != "local" && source != "master"),
        "{acks:?}"
    );
    assert_eq!(acks.iter().map(|(_, count)| count).sum::<u64>(), ACCOUNTS);
}

#[test]
fn a_payload_over_the_size_bound_and_a_sender_over_the_rate_are_refused() {
    let target = PathCounter::start();
    static HANDLED: AtomicU64 = AtomicU64::new(0);
    async fn wait_then_stop(user: &mut User) -> TaskResult {
        // The handler runs on its own task: wait (bounded) for it, then end the test.
        for _ in 0..200 {
            if HANDLED.load(Ordering::SeqCst) >= 10 {
                break;
            }
            cicada::tokio::time::sleep(Duration::from_millis(25)).await;
        }
        user.get("/done").send().await?;
        stop_test()
    }
    let outcomes: Arc<Mutex<Vec<Result<(), MessageError>>>> = Arc::default();
    let seen = outcomes.clone();
    let test = Cicada::new()
        .message_limits(MessageLimits {
            max_payload_bytes: 64 * 1024,
            per_second: 0.01,
            burst: 2,
        })
        .on_message("blob", |_env, message: Message<String>| async move {
            HANDLED.fetch_add(message.data.len() as u64, Ordering::SeqCst);
        })
        .on_test_start(move |env| {
            let mut outcomes = seen.lock().unwrap();
            outcomes.push(env.messages().send("blob", &"x".repeat(100 * 1024)));
            outcomes.push(env.messages().send("blob", "small"));
            outcomes.push(env.messages().send("blob", "again"));
            outcomes.push(env.messages().send("blob", "one too many"));
        })
        .user(UserType::<()>::new("Waiter").task(wait_then_stop));
    let run = run_test(test, &["-H", target.url(), "-u", "1", "-t", "50s"]);
    assert_eq!(run.exit_code, 0);
    let outcomes = outcomes.lock().unwrap();
    match &outcomes[0] {
        Err(MessageError::TooLarge { kind, size, limit }) => {
            assert_eq!(
                (kind.as_str(), *size, *limit),
                ("blob", 100 * 1024 + 2, 64 * 1024)
            );
            let text = outcomes[0].as_ref().unwrap_err().to_string();
            assert!(text.contains("more than the 65536 bytes"), "{text}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(outcomes[1], Ok(()));
    assert_eq!(outcomes[2], Ok(()));
    assert!(
        matches!(outcomes[3], Err(MessageError::RateLimited { burst: 2, .. })),
        "{:?}",
        outcomes[3]
    );
    // The two messages sent were handled by this same process ("small" + "again").
    assert_eq!(HANDLED.load(Ordering::SeqCst), 10);
    assert_eq!(target.total_under("/done"), 1);
}
