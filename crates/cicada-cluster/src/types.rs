//! The types both ends of a session share: who a worker is ([`WorkerId`], [`TestIdentity`]), what it reports
//! ([`WorkerStatus`]), what the master tells it ([`Command`]), why a master refuses it ([`Refusal`]) and the
//! shared secret ([`Token`]), with their conversions to and from the generated protobuf messages.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::proto;

/// A worker's identity, stable for the life of its process and kept across reconnects.
///
/// Cheap to clone (a shared string), so that every event can carry it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(Arc<str>);

impl WorkerId {
    /// Wraps a worker id.
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::borrow::Borrow<str> for WorkerId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for WorkerId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What test a process runs: a short digest that must be equal on master and workers, and a human-readable
/// summary (one item per line, e.g. `user Visitor weight 1` / `task Visitor.index weight 3`) from which a
/// refusal names the difference. Both are computed by the embedding program; this crate only compares them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestIdentity {
    /// The digest compared at attach (equal digests: same test).
    pub fingerprint: String,
    /// One line per item of the test, compared line by line when the digests differ.
    pub summary: String,
}

impl TestIdentity {
    /// A test identity from its digest and its summary.
    pub fn new(fingerprint: impl Into<String>, summary: impl Into<String>) -> Self {
        Self {
            fingerprint: fingerprint.into(),
            summary: summary.into(),
        }
    }
}

/// The shared cluster secret. Its `Debug` output never shows it; it is compared in constant time (its length
/// is not secret).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token from its text. Empty text is no token: `None`.
    pub fn new(secret: impl Into<String>) -> Option<Self> {
        let secret = secret.into();
        (!secret.is_empty()).then_some(Self(secret))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A worker's runner state, as Locust names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum WorkerState {
    /// Attached, no users yet.
    #[default]
    Ready,
    /// Starting users toward its target.
    Spawning,
    /// At its target.
    Running,
    /// Stopping its users.
    Stopping,
    /// Every user stopped.
    Stopped,
}

impl WorkerState {
    /// Locust's name for the state (`ready`, `spawning`, `running`, `stopping`, `stopped`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Spawning => "spawning",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }

    pub(crate) fn to_proto(self) -> proto::WorkerState {
        match self {
            Self::Ready => proto::WorkerState::Ready,
            Self::Spawning => proto::WorkerState::Spawning,
            Self::Running => proto::WorkerState::Running,
            Self::Stopping => proto::WorkerState::Stopping,
            Self::Stopped => proto::WorkerState::Stopped,
        }
    }

    pub(crate) fn from_proto(state: proto::WorkerState) -> Self {
        match state {
            proto::WorkerState::Unspecified | proto::WorkerState::Ready => Self::Ready,
            proto::WorkerState::Spawning => Self::Spawning,
            proto::WorkerState::Running => Self::Running,
            proto::WorkerState::Stopping => Self::Stopping,
            proto::WorkerState::Stopped => Self::Stopped,
        }
    }
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a worker says about itself in each heartbeat: the embedding program sets it on the worker
/// ([`crate::WorkerHandle::set_status`]) and reads it on the master.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerStatus {
    /// The runner's state.
    pub state: WorkerState,
    /// Users running now.
    pub user_count: u64,
    /// The worker process's CPU use in percent of one core.
    pub cpu_percent: f32,
    /// The worker process's resident memory.
    pub memory_bytes: u64,
    /// The worker's resource guard state, serialised by the embedding program.
    pub guard_state: Bytes,
    /// What the worker runs (its share of the users, its statistics epoch), serialised by the embedding program;
    /// it travels with every heartbeat and with each attach, so a master that restarted can adopt the worker.
    pub run_state: Bytes,
}

impl WorkerStatus {
    pub(crate) fn to_proto(&self, seq: u64) -> proto::WorkerHeartbeat {
        proto::WorkerHeartbeat {
            seq,
            state: self.state.to_proto() as i32,
            user_count: self.user_count,
            cpu_percent: self.cpu_percent,
            memory_bytes: self.memory_bytes,
            guard_state: self.guard_state.clone(),
            deltas_dropped: 0,
            run_state: self.run_state.clone(),
        }
    }

    pub(crate) fn from_proto(heartbeat: proto::WorkerHeartbeat) -> Self {
        Self {
            state: WorkerState::from_proto(heartbeat.state()),
            user_count: heartbeat.user_count,
            cpu_percent: heartbeat.cpu_percent,
            memory_bytes: heartbeat.memory_bytes,
            guard_state: heartbeat.guard_state,
            run_state: heartbeat.run_state,
        }
    }
}

/// Severity of a log line a worker forwards to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// An error.
    Error,
    /// A warning.
    Warn,
    /// Information.
    Info,
    /// Detail for debugging.
    Debug,
}

impl LogLevel {
    pub(crate) fn to_proto(self) -> proto::LogLevel {
        match self {
            Self::Error => proto::LogLevel::Error,
            Self::Warn => proto::LogLevel::Warn,
            Self::Info => proto::LogLevel::Info,
            Self::Debug => proto::LogLevel::Debug,
        }
    }

    pub(crate) fn from_proto(level: proto::LogLevel) -> Self {
        match level {
            proto::LogLevel::Error => Self::Error,
            proto::LogLevel::Warn => Self::Warn,
            proto::LogLevel::Unspecified | proto::LogLevel::Info => Self::Info,
            proto::LogLevel::Debug => Self::Debug,
        }
    }
}

/// A worker's whole target: how many users of each type to run, and how fast to get there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spawn {
    /// Users to run per user type (the target, not a difference).
    pub users_by_type: BTreeMap<String, u64>,
    /// Users started (or stopped) per second on this worker.
    pub spawn_rate: f64,
    /// The host to test when it changed (from the web UI).
    pub host: Option<String>,
    /// Settings of the embedding program that travel with the command, serialised by it.
    pub settings: Bytes,
}

/// What the master tells a worker to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run this many users of each type.
    Spawn(Spawn),
    /// Stop every user, flush the last delta and say so with [`crate::WorkerHandle::stopped`].
    Stop,
    /// Stop and leave: the worker ends its session ([`crate::WorkerHandle::shutdown`]) and its process.
    Quit,
}

impl Command {
    /// A short name for logs: `spawn`, `stop`, `quit`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Spawn(_) => "spawn",
            Self::Stop => "stop",
            Self::Quit => "quit",
        }
    }

    pub(crate) fn to_proto(&self, seq: u64) -> proto::Command {
        use proto::command::Kind;
        let kind = match self {
            Self::Spawn(spawn) => Kind::Spawn(proto::Spawn {
                users_by_type: spawn
                    .users_by_type
                    .iter()
                    .map(|(name, count)| (name.clone(), *count))
                    .collect(),
                spawn_rate: spawn.spawn_rate,
                host: spawn.host.clone().unwrap_or_default(),
                settings: spawn.settings.clone(),
            }),
            Self::Stop => Kind::Stop(proto::Stop {}),
            Self::Quit => Kind::Quit(proto::Quit {}),
        };
        proto::Command {
            seq,
            kind: Some(kind),
        }
    }

    /// `None` for a command without a kind (from a newer master): the worker acknowledges and skips it.
    pub(crate) fn from_proto(command: proto::Command) -> Option<Self> {
        use proto::command::Kind;
        Some(match command.kind? {
            Kind::Spawn(spawn) => Self::Spawn(Spawn {
                users_by_type: spawn.users_by_type.into_iter().collect(),
                spawn_rate: spawn.spawn_rate,
                host: (!spawn.host.is_empty()).then_some(spawn.host),
                settings: spawn.settings,
            }),
            Kind::Stop(_) => Self::Stop,
            Kind::Quit(_) => Self::Quit,
        })
    }
}

/// Why a master refused a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalCode {
    /// The first message was not a valid attach, or the protocol revisions differ.
    Protocol,
    /// The programs' versions differ.
    Version,
    /// The tests differ.
    Fingerprint,
    /// The token is missing or wrong.
    Token,
    /// The master holds its maximum number of workers (the only refusal a worker retries).
    Full,
}

impl RefusalCode {
    pub(crate) fn to_proto(self) -> proto::RefuseCode {
        match self {
            Self::Protocol => proto::RefuseCode::Protocol,
            Self::Version => proto::RefuseCode::Version,
            Self::Fingerprint => proto::RefuseCode::Fingerprint,
            Self::Token => proto::RefuseCode::Token,
            Self::Full => proto::RefuseCode::Full,
        }
    }

    pub(crate) fn from_proto(code: proto::RefuseCode) -> Self {
        match code {
            proto::RefuseCode::Unspecified | proto::RefuseCode::Protocol => Self::Protocol,
            proto::RefuseCode::Version => Self::Version,
            proto::RefuseCode::Fingerprint => Self::Fingerprint,
            proto::RefuseCode::Token => Self::Token,
            proto::RefuseCode::Full => Self::Full,
        }
    }
}

/// A master's refusal: its code and a message that names what differs and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of refusal.
    pub code: RefusalCode,
    /// The message shown to the operator on both sides.
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_survive_the_wire() {
        let spawn = Command::Spawn(Spawn {
            users_by_type: [("Visitor".to_string(), 7), ("Admin".to_string(), 1)]
                .into_iter()
                .collect(),
            spawn_rate: 2.5,
            host: Some("http://127.0.0.1:8080".into()),
            settings: Bytes::from_static(b"{}"),
        });
        for command in [spawn, Command::Stop, Command::Quit] {
            let wire = command.to_proto(9);
            assert_eq!(wire.seq, 9);
            assert_eq!(Command::from_proto(wire), Some(command));
        }
        assert_eq!(
            Command::from_proto(proto::Command { seq: 1, kind: None }),
            None
        );
    }

    #[test]
    fn an_empty_host_means_unchanged() {
        let wire = Command::Spawn(Spawn::default()).to_proto(1);
        let Some(Command::Spawn(spawn)) = Command::from_proto(wire) else {
            panic!("not a spawn");
        };
        assert_eq!(spawn.host, None);
    }

    #[test]
    fn status_survives_the_wire() {
        let status = WorkerStatus {
            state: WorkerState::Running,
            user_count: 12,
            cpu_percent: 37.5,
            memory_bytes: 1 << 30,
            guard_state: Bytes::from_static(b"ok"),
            run_state: Bytes::from_static(b"share"),
        };
        let wire = status.to_proto(4);
        assert_eq!(wire.seq, 4);
        assert_eq!(WorkerStatus::from_proto(wire), status);
    }

    #[test]
    fn tokens_hide_their_secret_and_empty_is_none() {
        let token = Token::new("s3cret").unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
        assert_eq!(Token::new(""), None);
    }
}

/// A test as source, served by a master to workers started without one (`cicada --worker -f -`): a name (the test
/// file's, for messages) and a payload the embedding program builds and reads (the file and the modules it needs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestSource {
    /// The test's name, e.g. its file name.
    pub name: String,
    /// What the embedding program needs to build the test.
    pub payload: Bytes,
}
