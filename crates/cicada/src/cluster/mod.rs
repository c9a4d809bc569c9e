//! The engine's side of a cluster: a master that hands users to workers and merges their statistics
//! ([`master`]), a worker that runs its share and reports back ([`worker`]) and forwards its log lines
//! ([`forward_logs`]), and `--processes`, which starts workers of this same binary on this machine ([`processes`]).
//! The transport, the sessions and their failure rules live in the `cicada-cluster` crate; this module decides
//! what travels (a worker's share of the target, the statistics epoch, the statistics as
//! [`cicada_stats::StatsDelta`]) and what the run does with it.

pub(crate) mod forward_logs;
pub(crate) mod health;
pub(crate) mod master;
pub(crate) mod placement;
pub(crate) mod processes;
pub(crate) mod worker;

use cicada_cluster::TestIdentity;
use serde::{Deserialize, Serialize};

use crate::user::run::UserKind;

/// The version a master and its workers must share.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit code of a worker that lost its master for longer than `--master-timeout` (its users were stopped).
pub(crate) const EXIT_MASTER_LOST: i32 = 3;

/// What travels with a spawn command beside the users: the master's statistics epoch, so that a worker whose
/// counts belong to an earlier test (the master reset its statistics) starts afresh at the master's epoch, and the
/// master's `--stop-timeout`, so that the users of the whole cluster stop as the master's options say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct SpawnSettings {
    /// The master's [`cicada_stats::Stats::epoch`].
    pub(crate) epoch: u64,
    /// The master's `--stop-timeout`, milliseconds.
    pub(crate) stop_timeout_ms: u64,
    /// The whole cluster's target, users: a master that restarts takes it back from its workers.
    pub(crate) cluster_users: u64,
    /// The whole cluster's spawn rate, users per second.
    pub(crate) cluster_spawn_rate: f64,
    /// This worker's part of every arrival-rate type's rate and bound, 0 to 1 (0: it runs none of them).
    pub(crate) arrival_share: f64,
    /// The master's `--arrival-rate`, which replaces the worker's own.
    pub(crate) arrival_rate: Option<f64>,
    /// The master's `--max-concurrent`, which replaces the worker's own.
    pub(crate) max_concurrent: Option<u32>,
}

/// What a worker runs, in every heartbeat and attach (`WorkerStatus::run_state`): a master that restarted adopts
/// the worker's users and statistics epoch from it instead of starting the test again, and every master learns from
/// it whether the worker's guard marked the last second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct WorkerRunState {
    /// The worker's statistics epoch (its deltas carry it).
    pub(crate) epoch: u64,
    /// Its share of the users, per user type in registration order (the last spawn command's).
    pub(crate) share: Vec<u64>,
    /// The settings of the last spawn command.
    pub(crate) settings: SpawnSettings,
    /// Its guard marked the time since the last heartbeat as saturated (CPU, memory or lag over a limit).
    pub(crate) saturated: bool,
    /// Its arrival-rate types' counts so far (the master sums them over its workers).
    pub(crate) arrival: Vec<crate::user::ArrivalReport>,
    /// Ticks the mark still stays (the worker's own bookkeeping; not sent).
    #[serde(skip)]
    pub(crate) saturated_ticks: u8,
}

impl WorkerRunState {
    pub(crate) fn encode(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// `None` for a worker that sent nothing (or something this version cannot read).
    pub(crate) fn decode(bytes: &[u8]) -> Option<WorkerRunState> {
        if bytes.is_empty() {
            return None;
        }
        serde_json::from_slice(bytes).ok()
    }
}

impl SpawnSettings {
    pub(crate) fn encode(self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(&self).unwrap_or_default())
    }

    pub(crate) fn decode(bytes: &[u8]) -> SpawnSettings {
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}

/// Encode a statistics delta for the wire (postcard: compact, and the delta's histograms are already packed).
pub(crate) fn encode_delta(delta: &cicada_stats::StatsDelta) -> Option<bytes::Bytes> {
    match postcard::to_allocvec(delta) {
        Ok(bytes) => Some(bytes.into()),
        Err(error) => {
            tracing::error!("cannot encode a statistics delta: {error}");
            None
        }
    }
}

/// Decode a statistics delta from the wire.
pub(crate) fn decode_delta(bytes: &[u8]) -> Result<cicada_stats::StatsDelta, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// The test a process runs, as the master compares it with its workers': one line per user type and task (name,
/// weight or fixed count, tasks and their shares), and a digest of those lines. A worker built from other code, or
/// run with other `--tags`, is refused with the lines that differ.
pub(crate) fn test_identity(types: &[Box<dyn UserKind>]) -> TestIdentity {
    let mut summary = String::new();
    for kind in types {
        let count = match kind.fixed_count() {
            Some(count) => format!("fixed count {count}"),
            None => format!("weight {}", kind.weight()),
        };
        summary.push_str(&format!("user type {} ({count})\n", kind.name()));
        for row in kind.ratio_rows() {
            summary.push_str(&format!(
                "  {}{} {:.4}\n",
                "  ".repeat(row.depth),
                row.name,
                row.share
            ));
        }
    }
    TestIdentity::new(format!("{:016x}", fnv1a(summary.as_bytes())), summary)
}

/// FNV-1a, 64 bits: a stable digest (the same in every process and build), which is all a fingerprint needs.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_stable_and_settings_round_trip() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let settings = SpawnSettings {
            epoch: 7,
            stop_timeout_ms: 5_000,
            cluster_users: 300,
            cluster_spawn_rate: 12.5,
            arrival_share: 0.5,
            arrival_rate: Some(40.0),
            max_concurrent: None,
        };
        assert_eq!(SpawnSettings::decode(&settings.encode()), settings);
        assert_eq!(SpawnSettings::decode(b"garbage"), SpawnSettings::default());
        let run = WorkerRunState {
            epoch: 7,
            share: vec![3, 4],
            settings,
            saturated: true,
            saturated_ticks: 0,
            arrival: Vec::new(),
        };
        assert_eq!(WorkerRunState::decode(&run.encode()), Some(run));
        assert_eq!(WorkerRunState::decode(b""), None);
        assert_eq!(WorkerRunState::decode(b"garbage"), None);
    }
}
