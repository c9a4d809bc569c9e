//! cicada's cluster transport: the sessions between a master and its workers, over one gRPC bidirectional
//! stream per worker (tonic; the protocol is `proto/cicada.proto`, compiled at build time by protox). The crate
//! moves bytes it does not interpret (statistics deltas, guard state, custom messages); the embedding program
//! (cicada) decides what they mean, which users run where, and when to stop.
//!
//! - Master: [`MasterServer::start`] → ([`MasterHandle`], a channel of [`MasterEvent`]s).
//! - Worker: [`WorkerClient::start`] → ([`WorkerHandle`], a channel of [`WorkerEvent`]s).
//!
//! # The protocol
//!
//! ```text
//!  worker                                                      master
//!    | --- TCP (+TLS) + HTTP/2, call Cluster.Session ----------->  |
//!    | --- Attach{worker_id, incarnation, version, fingerprint,     |
//!    |            token, pid, cores, protocol} ----------------->  |  checks token, version, test
//!    | <-- Accepted{master_id, run_id, delta_ack} --------------   |  (or Refused{code, reason}, end)
//!    |                                                             |
//!    | --- WorkerHeartbeat{seq, state, users, cpu, mem, guard} ->  |  every second, both ways
//!    | <-- MasterHeartbeat{seq, delta_ack} ---------------------   |  delta_ack: worker may forget those
//!    | --- StatsDelta{seq, covers_from, payload} -------------->   |  every second; duplicates dropped
//!    | <-- Command{seq, Spawn{users_by_type, rate} | Stop | Quit}  |
//!    | --- Ack{command_seq} ----------------------------------->   |  cumulative
//!    | <-> Custom{kind, payload}, Log{level, text} (worker->master)
//!    | <-- Command{seq, Stop} ----------------------------------   |
//!    | --- StatsDelta{last} , Stopped{final_seq, seq} ---------->  |  users stopped, all deltas sent
//!    | <-- Command{seq, Quit} ----------------------------------   |
//!    | --- Leaving{reason}, end of stream --------------------->   |  master forgets the worker
//!    | <-- end of stream ---------------------------------------   |
//! ```
//!
//! Deltas and `Stopped` markers form the *reliable sequence*: the worker numbers them, keeps each until the
//! master acknowledges it (in `MasterHeartbeat.delta_ack`, or in `Accepted.delta_ack` when a session starts),
//! and after a reconnect sends again, in order, whatever the master does not hold; the master drops a number it
//! already has. So a delta is delivered to the embedding code exactly once and in order, across any number of
//! cuts, as long as the worker's buffer holds. Commands work the same way the other way round: the master keeps
//! a command until the worker acknowledges it and writes it again, under the same number, on the next session.
//!
//! # Failure rules
//!
//! | What happens | What the crate does |
//! | --- | --- |
//! | A worker is silent for `missing_after` (3 s) | [`MasterEvent::WorkerMissing`]; its commands wait in its outbox |
//! | It is heard again (same session woke up, or a reconnect with the same id and incarnation) | [`MasterEvent::WorkerBack`]; unacknowledged commands are written again |
//! | It stays missing for `forget_missing_after` (60 s) | [`MasterEvent::WorkerGone`] ([`GoneReason::Lost`]); it is forgotten |
//! | A new process attaches under a known id | [`MasterEvent::WorkerGone`] ([`GoneReason::Replaced`]), then [`MasterEvent::WorkerConnected`] |
//! | A worker's stream breaks | nothing at once: the worker reconnects with backoff (100 ms doubling to 2 s, jittered); only silence makes it missing |
//! | The master is silent for `master_silence_timeout` (3 s) | the worker drops the session and reconnects, keeping its users and buffering deltas |
//! | No session for `master_lost_after` (60 s) | [`WorkerEvent::MasterLost`], final: the embedding code stops its users and exits |
//! | The worker's delta buffer (120) is full | the two oldest deltas never sent are merged by [`WorkerConfig::delta_merge`], else the oldest is dropped and counted (the master sees the hole as `lost_before`) |
//! | A worker's outbox on the master (256) is full | [`MasterHandle::send`] refuses with [`SendError::QueueFull`]; nothing queued is dropped |
//! | Wrong token, other version, other test, other protocol | [`Refused`](WorkerEvent::Refused) naming the difference, final for the worker; [`MasterEvent::WorkerRefused`] on the master |
//! | The master holds `max_workers` (10,000) | refused as [`RefusalCode::Full`]; the worker retries until `master_lost_after` |
//! | Garbage, plain HTTP/1, or a stream without an attach within 10 s | the connection or stream is dropped; other sessions are not touched |
//! | More than `2 × max_workers + 64` open connections | the new connection is closed at once |
//! | A message above `max_message_bytes` (4 MiB) | refused when queued ([`SendError::TooLarge`], [`WorkerSendError::TooLarge`]); a peer that sends one loses its session |
//! | The embedding code does not read its events | sessions wait (HTTP/2 flow control pushes back to the peer); nothing is lost and the wait is not taken for silence |
//!
//! The same port serves the standard gRPC health service, `grpc.health.v1.Health`: `SERVING` for `""` and for
//! [`CLUSTER_SERVICE`] while the master serves sessions, so that a Kubernetes `grpc:` probe or
//! `grpc_health_probe` can watch the master. It needs no token and tells nothing about the test or the workers.
//!
//! # Security
//!
//! The master listens on 127.0.0.1 unless told otherwise, and refuses to start on any other address without a
//! [`Token`] ([`MasterError::TokenRequired`]). The token is compared in constant time, before anything that
//! would tell an unauthenticated peer about the master. With [`MasterTls`] / [`WorkerTls`] the port speaks TLS
//! (rustls with ring); with a client CA, workers must present a certificate it signed (mTLS). Without TLS the
//! token travels in clear text: use TLS on networks you do not trust.
//!
//! # Example
//!
//! A master and a worker on loopback: the worker attaches, the master tells it to spawn, the worker sends a
//! delta and leaves.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use cicada_cluster::*;
//!
//! // Every wait in the example is bounded.
//! async fn within<F: Future>(what: F) -> Result<F::Output, tokio::time::error::Elapsed> {
//!     tokio::time::timeout(Duration::from_secs(10), what).await
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! runtime.block_on(async {
//!     let test = TestIdentity::new("f00d", "user Visitor weight 1");
//!     let (master, mut master_events) = MasterServer::start(MasterConfig {
//!         bind_port: 0, // any free port on 127.0.0.1
//!         version: "1.0".into(),
//!         test: test.clone(),
//!         ..MasterConfig::default()
//!     })
//!     .await?;
//!
//!     let (worker, mut worker_events) = WorkerClient::start(WorkerConfig {
//!         master_port: master.local_addr().port(),
//!         version: "1.0".into(),
//!         test,
//!         ..WorkerConfig::default()
//!     })?;
//!
//!     let Some(MasterEvent::WorkerConnected(info)) = within(master_events.recv()).await? else {
//!         panic!("no worker");
//!     };
//!     let spawn = Spawn {
//!         users_by_type: [("Visitor".to_string(), 10)].into(),
//!         spawn_rate: 5.0,
//!         ..Spawn::default()
//!     };
//!     master.send(info.id.as_str(), Command::Spawn(spawn))?;
//!
//!     loop {
//!         match within(worker_events.recv()).await? {
//!             Some(WorkerEvent::Command { command: Command::Spawn(spawn), .. }) => {
//!                 assert_eq!(spawn.users_by_type["Visitor"], 10);
//!                 break;
//!             }
//!             Some(_) => continue,
//!             None => panic!("the worker's session ended"),
//!         }
//!     }
//!     worker.send_delta(Bytes::from_static(b"one second of statistics"))?;
//!     loop {
//!         if let Some(MasterEvent::StatsDelta { payload, .. }) = within(master_events.recv()).await? {
//!             assert_eq!(&payload[..], b"one second of statistics");
//!             break;
//!         }
//!     }
//!     assert!(worker.shutdown(Duration::from_secs(5)).await.flushed);
//!     master.shutdown().await;
//!     Ok(())
//! })
//! # }
//! ```

mod auth;
mod master;
mod tls;
mod types;
mod worker;

/// The generated protobuf messages and gRPC client and server (`proto/cicada.proto`), for tools that speak the
/// protocol directly (tests, benchmarks).
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    reason = "generated code"
)]
pub mod proto {
    tonic::include_proto!("cicada.cluster.v1");
}

pub use master::{
    Broadcast, CLUSTER_SERVICE, GoneReason, MasterConfig, MasterCounters, MasterError, MasterEvent,
    MasterHandle, MasterServer, Presence, SendError, WorkerInfo,
};
pub use tls::{MasterTls, TlsFileError, WorkerTls};
pub use types::{
    Command, LogLevel, Refusal, RefusalCode, Spawn, TestIdentity, TestSource, Token, WorkerId,
    WorkerState, WorkerStatus,
};
pub use worker::{
    DeltaMerge, FetchTestError, ShutdownReport, WorkerClient, WorkerConfig, WorkerCounters,
    WorkerError, WorkerEvent, WorkerHandle, WorkerSendError, fetch_test,
};

/// The protocol revision a worker announces in `Attach.protocol`; a master refuses any other.
pub const PROTOCOL_VERSION: u32 = 1;

/// The cluster port, as Locust's (`--master-port`, `--master-bind-port`).
pub const DEFAULT_PORT: u16 = 5557;

/// Bound on one message in either direction: 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
