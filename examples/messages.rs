//! Custom messages, as in Locust's `custom_messages.py`: when the test starts, the master splits a list of test
//! accounts across its workers with a message to each; a worker's handler keeps its share for its users and
//! answers with an acknowledgement, which the master's handler logs. In a single process the messages are handled
//! by the process that sends them, so the same test runs unchanged.
//!
//! Each user takes an account of its process's share and views it once (`/items/{account}`): across the cluster,
//! every account is viewed exactly once. With `MESSAGES_ACK_FILE` set, the master (or the single process) also
//! appends one line per acknowledgement to that file (`<source> <count>`).
//!
//! ```text
//! cargo run --example messages -- --headless -u 4 -r 4 -t 10s
//! cargo run --example messages -- --headless -u 4 -r 4 -t 10s --processes 2
//! ```

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use cicada::prelude::*;
use serde::{Deserialize, Serialize};

/// Accounts the master hands out when the test starts.
const ACCOUNTS: u64 = 12;

/// This process's share of the accounts, for its users.
static SHARE: Mutex<VecDeque<u64>> = Mutex::new(VecDeque::new());

/// A worker's answer to its share.
#[derive(Debug, Serialize, Deserialize)]
struct Ack {
    count: usize,
}

/// Master (or single process): split the accounts across the workers, one message each.
fn hand_out_accounts(env: &Environment) {
    if env.runner().mode() == cicada::runner::RunnerMode::Worker {
        return;
    }
    let accounts: Vec<u64> = (1..=ACCOUNTS).collect();
    let workers = env.messages().workers();
    let sent = if workers.is_empty() {
        // A single process: the message comes back to this process's own handler.
        env.messages().send("accounts", &accounts)
    } else {
        let chunk = accounts.len().div_ceil(workers.len());
        workers
            .iter()
            .zip(accounts.chunks(chunk))
            .try_for_each(|(worker, share)| {
                env.messages().send_to_worker(worker, "accounts", share)
            })
    };
    if let Err(error) = sent {
        eprintln!("error: the accounts were not sent: {error}");
    }
}

/// Worker (or single process): keep the share, and say thanks.
async fn take_accounts(env: Arc<Environment>, message: Message<Vec<u64>>) {
    let count = message.data.len();
    SHARE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(message.data);
    if let Err(error) = env.messages().reply(&message.source, "ack", &Ack { count }) {
        eprintln!("error: the acknowledgement was not sent: {error}");
    }
}

/// Master (or single process): log each acknowledgement.
async fn acknowledged(_env: Arc<Environment>, message: Message<Ack>) {
    let source = match &message.source {
        MessageSource::Worker(id) => id.as_str(),
        MessageSource::Master => "master",
        MessageSource::Local => "local",
    };
    println!("{source} took {} accounts", message.data.count);
    if let Some(path) = std::env::var_os("MESSAGES_ACK_FILE") {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| writeln!(file, "{source} {}", message.data.count));
        if let Err(error) = appended {
            eprintln!("error: {}: {error}", path.to_string_lossy());
        }
    }
}

async fn view_account(user: &mut User) -> TaskResult {
    let account = SHARE.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
    if let Some(account) = account {
        user.get(&format!("/items/{account}"))
            .name("/items/[account]")
            .send()
            .await?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    Cicada::new()
        .on_message("accounts", take_accounts)
        .on_message("ack", acknowledged)
        .on_test_start(hand_out_accounts)
        .user(
            UserType::<()>::new("Member")
                .wait_time(between(0.1, 0.2))
                .task(view_account),
        )
        .run()
}
