//! The worker's session loop: connect, attach, run the session (a writer for heartbeats and the outbox, a
//! reader for the master's heartbeats, commands and custom messages), and on any break wait with backoff and
//! start again, until a shutdown, a final refusal, or `master_lost_after` without a master.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

use crate::PROTOCOL_VERSION;
use crate::proto::{self, master_message, worker_message};
use crate::types::{Command, Refusal, RefusalCode, WorkerStatus};

use super::{ShutdownReport, WorkerConfig, WorkerError, WorkerEvent, WorkerShared};

/// Messages the writer may have handed to the connection that it has not taken yet.
const OUTBOUND_BUFFER: usize = 16;

/// HTTP/2 pings find a dead connection even when no heartbeat is due.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the loop needs from the configuration.
pub(crate) struct Settings {
    endpoint: Endpoint,
    master: String,
    attach: proto::Attach,
    heartbeat_interval: Duration,
    master_silence_timeout: Duration,
    master_lost_after: Duration,
    connect_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    max_message_bytes: usize,
}

impl Settings {
    pub(crate) fn new(
        config: &WorkerConfig,
        endpoint: Endpoint,
        id: String,
        hostname: String,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        Self {
            endpoint,
            master: format!("{}:{}", config.master_host, config.master_port),
            attach: proto::Attach {
                worker_id: id,
                hostname,
                version: config.version.clone(),
                test_fingerprint: config.test.fingerprint.clone(),
                token: config
                    .token
                    .as_ref()
                    .map(|token| token.expose().to_string())
                    .unwrap_or_default(),
                pid: std::process::id(),
                cores: u32::try_from(cores).unwrap_or(u32::MAX),
                protocol: PROTOCOL_VERSION,
                incarnation: fastrand::u64(..),
                test_summary: config.test.summary.clone(),
                status: None,
            },
            heartbeat_interval: config.heartbeat_interval,
            master_silence_timeout: config.master_silence_timeout,
            master_lost_after: config.master_lost_after,
            connect_timeout: config.connect_timeout,
            backoff_min: config.reconnect_backoff_min,
            backoff_max: config.reconnect_backoff_max,
            max_message_bytes: config.max_message_bytes,
        }
    }
}

pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The master's endpoint, with TLS when configured.
pub(crate) fn endpoint(config: &WorkerConfig) -> Result<Endpoint, WorkerError> {
    let host = config.master_host.trim();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let authority = if bare.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{bare}]:{}", config.master_port)
    } else {
        format!("{host}:{}", config.master_port)
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let address = format!("{scheme}://{authority}");
    let mut endpoint = Endpoint::from_shared(address.clone())
        .map_err(|error| WorkerError::MasterAddress {
            address,
            reason: error.to_string(),
        })?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if let Some(tls) = &config.tls {
        endpoint = endpoint
            .tls_config(tls.to_tonic(bare))
            .map_err(WorkerError::Tls)?;
    }
    Ok(endpoint)
}

/// Pauses between attempts: doubling from `min` to `max`, with ±25% jitter.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn pause(&mut self) -> Duration {
        let pause = self.next.mul_f64(0.75 + fastrand::f64() * 0.5);
        self.next = (self.next * 2).min(self.max);
        pause
    }
}

/// A session the master accepted.
struct Session {
    outbound: mpsc::Sender<proto::WorkerMessage>,
    inbound: Streaming<proto::MasterMessage>,
    accepted: proto::Accepted,
}

/// Why an attempt gave no session.
enum AttemptError {
    Refused(Refusal),
    Failed(String),
}

/// How a session ended.
enum SessionEnd {
    /// The master confirmed the worker left.
    Left,
    /// The stop deadline passed.
    Deadline,
    /// Broken; try again.
    Cut(String),
}

/// The loop; when it returns the session has ended for good and the event channel closes.
pub(crate) async fn run(
    shared: Arc<WorkerShared>,
    settings: Settings,
    events: mpsc::Sender<WorkerEvent>,
) {
    let report = run_sessions(&shared, &settings, &events).await;
    shared.connected.store(false, Relaxed);
    shared.finished.send_replace(Some(report));
}

async fn run_sessions(
    shared: &WorkerShared,
    settings: &Settings,
    events: &mpsc::Sender<WorkerEvent>,
) -> ShutdownReport {
    let mut stop = shared.stop.subscribe();
    let mut backoff = Backoff::new(settings.backoff_min, settings.backoff_max);
    let mut without_master_since = Instant::now();
    let mut master_id: Option<String> = None;
    let mut last_command_seq = 0_u64;
    let mut sessions = 0_u64;
    let mut failures_in_a_row = 0_u32;
    let not_flushed = |shared: &WorkerShared| ShutdownReport {
        flushed: false,
        unacknowledged: shared.outbox().unacknowledged(),
    };
    loop {
        let deadline = *stop.borrow_and_update();
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return not_flushed(shared);
        }
        let attempt = tokio::select! {
            attempt = attach(settings, shared.status()) => attempt,
            () = sleep_until_deadline(deadline) => return not_flushed(shared),
        };
        match attempt {
            Ok(session) => {
                failures_in_a_row = 0;
                backoff.reset();
                sessions += 1;
                if sessions > 1 {
                    shared.reconnects.fetch_add(1, Relaxed);
                }
                let resumed = master_id.as_deref() == Some(session.accepted.master_id.as_str());
                if !resumed {
                    // A new master numbers its commands from 1 again.
                    last_command_seq = 0;
                    master_id = Some(session.accepted.master_id.clone());
                }
                shared.outbox().restart_session(session.accepted.delta_ack);
                shared.connected.store(true, Relaxed);
                tracing::info!(
                    "attached to the master at {} as {}{}",
                    settings.master,
                    shared.id,
                    if resumed { " (resumed)" } else { "" }
                );
                let connected = WorkerEvent::Connected {
                    master_id: session.accepted.master_id.clone(),
                    run_id: session.accepted.run_id.clone(),
                    resumed,
                };
                let end = run_session(
                    shared,
                    settings,
                    session,
                    connected,
                    events,
                    &mut last_command_seq,
                )
                .await;
                shared.connected.store(false, Relaxed);
                without_master_since = Instant::now();
                match end {
                    SessionEnd::Left => {
                        return ShutdownReport {
                            flushed: true,
                            unacknowledged: 0,
                        };
                    }
                    SessionEnd::Deadline => return not_flushed(shared),
                    SessionEnd::Cut(reason) => {
                        tracing::warn!("the session with the master broke: {reason}; reconnecting");
                        // Only news: an embedding that is behind with its events must not keep the worker
                        // from reconnecting.
                        let _ = events.try_send(WorkerEvent::Disconnected { reason });
                    }
                }
            }
            Err(AttemptError::Refused(refusal)) if refusal.code != RefusalCode::Full => {
                tracing::error!("the master refused this worker: {}", refusal.reason);
                deliver(events, WorkerEvent::Refused(refusal), &mut stop).await;
                return not_flushed(shared);
            }
            Err(AttemptError::Refused(refusal)) => {
                tracing::warn!("the master is full: {}; retrying", refusal.reason);
            }
            Err(AttemptError::Failed(reason)) => {
                failures_in_a_row += 1;
                if failures_in_a_row == 1 {
                    tracing::warn!(
                        "cannot attach to the master at {}: {reason}; retrying",
                        settings.master
                    );
                } else {
                    tracing::debug!(
                        "cannot attach to the master at {}: {reason}",
                        settings.master
                    );
                }
            }
        }

        let lost_at = without_master_since + settings.master_lost_after;
        let now = Instant::now();
        if now >= lost_at && stop.borrow().is_none() {
            let without_master_for = now - without_master_since;
            tracing::error!(
                "no master at {} for {without_master_for:?}: giving up",
                settings.master
            );
            deliver(
                events,
                WorkerEvent::MasterLost { without_master_for },
                &mut stop,
            )
            .await;
            return not_flushed(shared);
        }
        let mut wake_at = (now + backoff.pause()).min(lost_at);
        if let Some(deadline) = *stop.borrow() {
            wake_at = wake_at.min(deadline);
        }
        tokio::select! {
            () = tokio::time::sleep_until(wake_at) => {}
            // A shutdown asks to try again at once, to say goodbye while there is time.
            _ = stop.changed() => {}
        }
    }
}

async fn sleep_until_deadline(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Hands an event to the embedding code, waiting for room unless a shutdown was asked for (then the event is
/// dropped if there is no room: nobody may be reading any more).
async fn deliver(
    events: &mpsc::Sender<WorkerEvent>,
    event: WorkerEvent,
    stop: &mut watch::Receiver<Option<Instant>>,
) {
    if stop.borrow().is_some() {
        let _ = events.try_send(event);
        return;
    }
    tokio::select! {
        _ = events.send(event) => {}
        _ = stop.wait_for(Option::is_some) => {}
    }
}

/// Connects and attaches, bounded by `connect_timeout` for each step.
async fn attach(settings: &Settings, status: WorkerStatus) -> Result<Session, AttemptError> {
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        AttemptError::Failed(format!("{what}: {error}"))
    };
    let timed_out = |what: &str| {
        AttemptError::Failed(format!(
            "{what} took longer than {:?}",
            settings.connect_timeout
        ))
    };
    let channel: Channel =
        tokio::time::timeout(settings.connect_timeout, settings.endpoint.connect())
            .await
            .map_err(|_| timed_out("connecting"))?
            .map_err(|error| failed("connecting", &DisplayChain(&error)))?;
    let mut client = proto::cluster_client::ClusterClient::new(channel)
        .max_decoding_message_size(settings.max_message_bytes)
        .max_encoding_message_size(settings.max_message_bytes);
    let (outbound, stream) = mpsc::channel(OUTBOUND_BUFFER);
    let attach = proto::WorkerMessage {
        kind: Some(worker_message::Kind::Attach(proto::Attach {
            status: Some(status.to_proto(0)),
            ..settings.attach.clone()
        })),
    };
    outbound
        .try_send(attach)
        .map_err(|_| AttemptError::Failed("the new session's queue refused the attach".into()))?;
    let response = tokio::time::timeout(
        settings.connect_timeout,
        client.session(ReceiverStream::new(stream)),
    )
    .await
    .map_err(|_| timed_out("opening the session"))?
    .map_err(|status| failed("opening the session", &status.message()))?;
    let mut inbound = response.into_inner();
    let first = tokio::time::timeout(settings.connect_timeout, inbound.message())
        .await
        .map_err(|_| timed_out("waiting for the master's answer"))?
        .map_err(|status| failed("waiting for the master's answer", &status.message()))?;
    match first.and_then(|message| message.kind) {
        Some(master_message::Kind::Accepted(accepted)) => Ok(Session {
            outbound,
            inbound,
            accepted,
        }),
        Some(master_message::Kind::Refused(refused)) => Err(AttemptError::Refused(Refusal {
            code: RefusalCode::from_proto(refused.code()),
            reason: refused.reason,
        })),
        Some(_) => Err(AttemptError::Failed(
            "the master answered the attach with something else than accepted or refused".into(),
        )),
        None => Err(AttemptError::Failed(
            "the master ended the session without answering the attach".into(),
        )),
    }
}

/// An error with its causes, `outer: inner: root`.
struct DisplayChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

async fn run_session(
    shared: &WorkerShared,
    settings: &Settings,
    session: Session,
    connected: WorkerEvent,
    events: &mpsc::Sender<WorkerEvent>,
    last_command_seq: &mut u64,
) -> SessionEnd {
    let Session {
        outbound,
        mut inbound,
        ..
    } = session;
    let left = AtomicBool::new(false);
    let writer = write_loop(shared, settings, outbound, &left);
    let reader = read_loop(
        shared,
        connected,
        settings,
        &mut inbound,
        events,
        last_command_seq,
        &left,
    );
    tokio::pin!(writer);
    tokio::pin!(reader);
    let mut writer_done = false;
    loop {
        tokio::select! {
            end = &mut reader => return end,
            writer_end = &mut writer, if !writer_done => {
                writer_done = true;
                if let Some(reason) = writer_end {
                    return SessionEnd::Cut(reason);
                }
                // The writer said goodbye; the reader waits for the master to end the stream.
            }
        }
    }
}

/// Writes heartbeats and the outbox until the connection refuses (`Some(reason)`) or, after a stop was asked
/// for and everything was written, the goodbye is written (`None`).
async fn write_loop(
    shared: &WorkerShared,
    settings: &Settings,
    outbound: mpsc::Sender<proto::WorkerMessage>,
    left: &AtomicBool,
) -> Option<String> {
    let gone = || Some("the connection to the master closed".to_string());
    let mut stop = shared.stop.subscribe();
    let mut ticker = tokio::time::interval(settings.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let heartbeat = || {
        let seq = shared.heartbeat_seq.fetch_add(1, Relaxed) + 1;
        let dropped = shared.outbox().counters.deltas_dropped;
        let mut heartbeat = shared.status().to_proto(seq);
        heartbeat.deltas_dropped = dropped;
        proto::WorkerMessage {
            kind: Some(worker_message::Kind::Heartbeat(heartbeat)),
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = ticker.tick() => {
                shared.heartbeat_now.store(false, Relaxed);
                if outbound.send(heartbeat()).await.is_err() {
                    return gone();
                }
            }
            () = shared.wake.notified() => {
                if shared.heartbeat_now.swap(false, Relaxed) && outbound.send(heartbeat()).await.is_err() {
                    return gone();
                }
            }
            _ = stop.changed() => {}
        }
        loop {
            let next = shared.outbox().next_message();
            let Some(message) = next else { break };
            if outbound.send(message).await.is_err() {
                return gone();
            }
        }
        let stopping = stop.borrow_and_update().is_some();
        if stopping && shared.outbox().all_written() {
            let goodbye = proto::WorkerMessage {
                kind: Some(worker_message::Kind::Leaving(proto::Leaving {
                    reason: "the worker shuts down".into(),
                })),
            };
            if outbound.send(goodbye).await.is_err() {
                return gone();
            }
            left.store(true, Relaxed);
            // Dropping the sender ends the worker's half of the stream after the goodbye.
            return None;
        }
    }
}

/// Reads the master's messages; first hands `connected` to the embedding code (while the writer already sends
/// heartbeats, so that a slow event reader does not make the worker look silent).
async fn read_loop(
    shared: &WorkerShared,
    connected: WorkerEvent,
    settings: &Settings,
    inbound: &mut Streaming<proto::MasterMessage>,
    events: &mpsc::Sender<WorkerEvent>,
    last_command_seq: &mut u64,
    left: &AtomicBool,
) -> SessionEnd {
    let mut stop = shared.stop.subscribe();
    deliver(events, connected, &mut stop).await;
    loop {
        let deadline = *stop.borrow_and_update();
        let message = tokio::select! {
            biased;
            message = tokio::time::timeout(settings.master_silence_timeout, inbound.message()) => message,
            () = sleep_until_deadline(deadline) => return SessionEnd::Deadline,
            _ = stop.changed() => continue,
        };
        let kind = match message {
            Ok(Ok(Some(proto::MasterMessage { kind: Some(kind) }))) => kind,
            // A kind this worker does not know (a newer master): skip it.
            Ok(Ok(Some(proto::MasterMessage { kind: None }))) => continue,
            Ok(Ok(None)) if left.load(Relaxed) => return SessionEnd::Left,
            Ok(Ok(None)) => return SessionEnd::Cut("the master ended the session".into()),
            Ok(Err(status)) => return SessionEnd::Cut(status.message().to_string()),
            Err(_) => {
                return SessionEnd::Cut(format!(
                    "no word from the master for {:?}",
                    settings.master_silence_timeout
                ));
            }
        };
        match kind {
            master_message::Kind::Heartbeat(heartbeat) => {
                shared.outbox().acknowledge(heartbeat.delta_ack);
            }
            master_message::Kind::Command(command) => {
                let seq = command.seq;
                if seq > *last_command_seq {
                    *last_command_seq = seq;
                    match Command::from_proto(command) {
                        Some(command) => {
                            deliver(events, WorkerEvent::Command { seq, command }, &mut stop).await;
                        }
                        None => tracing::warn!(
                            "skipped command {seq} of a kind this worker does not know"
                        ),
                    }
                }
                // Also for a command sent again after a reconnect: the master may have missed the first ack.
                shared.outbox().acknowledge_command(seq);
                shared.wake.notify_one();
            }
            master_message::Kind::Custom(custom) => {
                let event = WorkerEvent::Custom {
                    kind: custom.kind,
                    payload: custom.payload,
                };
                deliver(events, event, &mut stop).await;
            }
            master_message::Kind::Accepted(_) | master_message::Kind::Refused(_) => {
                return SessionEnd::Cut("the master answered an attach twice".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_bound_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let pauses: Vec<Duration> = (0..5).map(|_| backoff.pause()).collect();
        let bounds = [100, 200, 400, 400, 400];
        for (pause, bound) in pauses.iter().zip(bounds) {
            let bound = Duration::from_millis(bound);
            assert!(
                *pause >= bound.mul_f64(0.75) && *pause <= bound.mul_f64(1.25),
                "{pause:?} vs {bound:?}"
            );
        }
        backoff.reset();
        assert!(backoff.pause() <= Duration::from_millis(125));
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "127.0.0.1",
            "::1",
            "[::1]",
            "localhost",
            "LOCALHOST",
            "127.3.2.1",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["10.0.0.1", "example.invalid", "0.0.0.0"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn ipv6_masters_get_brackets() {
        let config = WorkerConfig {
            master_host: "::1".into(),
            master_port: 6000,
            ..WorkerConfig::default()
        };
        assert_eq!(
            endpoint(&config).unwrap().uri().to_string(),
            "http://[::1]:6000/"
        );
        let config = WorkerConfig {
            master_host: "bad host".into(),
            ..WorkerConfig::default()
        };
        assert!(matches!(
            endpoint(&config),
            Err(WorkerError::MasterAddress { .. })
        ));
    }
}
