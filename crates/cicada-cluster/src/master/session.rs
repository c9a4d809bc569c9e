//! One worker's session on the master, and the liveness watch over all of them.
//!
//! A session is two tasks: the reader (the attach, then every message from the worker, in order, into the
//! registry and the event channel) and the writer (heartbeats every `heartbeat_interval`, and the worker's
//! outbox). Events that change a worker's state are sent while the registry lock is held, through a permit
//! reserved before taking it, so the embedding code sees them in the order the registry changed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, PermitIterator, error::TrySendError};
use tokio::sync::{Notify, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{AttachPolicy, check_attach};
use crate::proto::{self, master_message, worker_message};
use crate::types::{LogLevel, Refusal, RefusalCode, WorkerId, WorkerStatus};

use super::registry::{AttachRecord, Attached, Reliable};
use super::{GoneReason, MasterEvent, Shared};

/// Messages a session's writer may have written that the connection has not taken yet.
const OUTBOUND_BUFFER: usize = 16;

/// How often the liveness watch looks for silent workers, at most (a quarter of `missing_after` when shorter).
const LIVENESS_TICK: Duration = Duration::from_millis(250);

type Outbound = mpsc::Sender<Result<proto::MasterMessage, Status>>;

/// The gRPC service: each call of `Session` becomes one worker session.
pub(crate) struct ClusterService {
    shared: Arc<Shared>,
}

impl ClusterService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl proto::cluster_server::Cluster for ClusterService {
    type SessionStream = ReceiverStream<Result<proto::MasterMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<proto::WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        if *self.shared.shutdown.borrow() {
            return Err(Status::unavailable("the master is shutting down"));
        }
        let address = request.remote_addr();
        let inbound = request.into_inner();
        let (outbound, stream) = mpsc::channel(OUTBOUND_BUFFER);
        tokio::spawn(run_session(
            Arc::clone(&self.shared),
            address,
            inbound,
            outbound,
        ));
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn fetch_test(
        &self,
        request: Request<proto::TestRequest>,
    ) -> Result<Response<proto::TestSource>, Status> {
        let request = request.into_inner();
        let settings = &self.shared.settings;
        // The same order as an attach: nothing about the test before the token matched.
        if let Some(expected) = &settings.token
            && !crate::auth::tokens_match(expected, &request.token)
        {
            return Err(Status::permission_denied(
                "the worker's cluster token is missing or differs from the master's: give both the same token",
            ));
        }
        if request.protocol != crate::PROTOCOL_VERSION || request.version != settings.version {
            return Err(Status::failed_precondition(format!(
                "the worker runs version {:?} (protocol {}) and the master {:?} (protocol {}): run the same \
                 build on the master and every worker",
                request.version,
                request.protocol,
                settings.version,
                crate::PROTOCOL_VERSION
            )));
        }
        match &settings.test_source {
            Some(source) => Ok(Response::new(proto::TestSource {
                name: source.name.clone(),
                payload: source.payload.clone(),
            })),
            None => Err(Status::not_found(
                "this master runs a compiled test, which it cannot send: start the worker with the same test \
                 binary (or script) instead of -f -",
            )),
        }
    }
}

/// How a session ended.
enum End {
    /// Another session speaks for the worker now, or the master forgot it, or shuts down.
    Superseded,
    /// The worker said it leaves.
    Left,
    /// The stream ended or broke without a goodbye: the worker may come back.
    Cut(String),
}

async fn run_session(
    shared: Arc<Shared>,
    address: Option<SocketAddr>,
    mut inbound: Streaming<proto::WorkerMessage>,
    outbound: Outbound,
) {
    let Some(attach) = read_attach(&shared, &mut inbound, &outbound).await else {
        shared.sessions_without_attach.fetch_add(1, Relaxed);
        return;
    };
    let policy = AttachPolicy {
        version: &shared.settings.version,
        test: &shared.settings.test,
        token: shared.settings.token.as_ref(),
    };
    if let Err(refusal) = check_attach(&policy, &attach) {
        refuse(&shared, &attach, address, refusal, &outbound).await;
        return;
    }

    let id = WorkerId::new(&attach.worker_id);
    let record = AttachRecord {
        id: id.clone(),
        hostname: attach.hostname.clone(),
        version: attach.version.clone(),
        pid: attach.pid,
        cores: attach.cores,
        incarnation: attach.incarnation,
        address,
        status: attach
            .status
            .clone()
            .map(WorkerStatus::from_proto)
            .unwrap_or_default(),
    };
    let permits = shared.events.reserve_many(2).await.ok();
    let attached = {
        let mut registry = shared.registry();
        let attached = registry.attach(record, Instant::now());
        if let Ok(ticket) = &attached {
            let info = registry
                .get(id.as_str())
                .map(|entry| entry.info(Instant::now()));
            let events = match (ticket.attached, info) {
                (Attached::New, Some(info)) => vec![MasterEvent::WorkerConnected(info)],
                (Attached::Resumed { was_missing: true }, _) => {
                    vec![MasterEvent::WorkerBack { worker: id.clone() }]
                }
                (Attached::Replaced, Some(info)) => vec![
                    MasterEvent::WorkerGone {
                        worker: id.clone(),
                        reason: GoneReason::Replaced,
                    },
                    MasterEvent::WorkerConnected(info),
                ],
                _ => Vec::new(),
            };
            // Under the lock: the registry's order is the events' order.
            send_with(permits, events);
        }
        attached
    };
    let Ok(ticket) = attached else {
        let refusal = Refusal {
            code: RefusalCode::Full,
            reason: format!(
                "the master already has {} workers, the most it accepts: raise its max_workers or start \
                 fewer workers",
                shared.registry().len()
            ),
        };
        refuse(&shared, &attach, address, refusal, &outbound).await;
        return;
    };
    match ticket.attached {
        Attached::New => tracing::info!(
            "worker {id} attached from {} ({} cores, pid {})",
            address.map_or_else(|| attach.hostname.clone(), |a| a.to_string()),
            attach.cores,
            attach.pid
        ),
        Attached::Resumed { was_missing } => tracing::info!(
            "worker {id} reconnected{}",
            if was_missing { " and is back" } else { "" }
        ),
        Attached::Replaced => {
            tracing::info!("worker {id} restarted: a new process replaces the old one")
        }
    }

    let accepted = proto::MasterMessage {
        kind: Some(master_message::Kind::Accepted(proto::Accepted {
            master_id: shared.settings.master_id.clone(),
            run_id: shared.run_id(),
            delta_ack: ticket.delta_ack,
        })),
    };
    if outbound.send(Ok(accepted)).await.is_err() {
        shared
            .registry()
            .session_ended(id.as_str(), ticket.generation);
        return;
    }
    let writer = tokio::spawn(write_loop(
        Arc::clone(&shared),
        id.clone(),
        ticket.generation,
        outbound,
        ticket.cancel.clone(),
        ticket.wake,
    ));
    let end = read_loop(&shared, &id, ticket.generation, &mut inbound, ticket.cancel).await;
    writer.abort();
    match end {
        End::Superseded => tracing::debug!("a session of worker {id} ended: superseded"),
        End::Left => {}
        End::Cut(why) => {
            tracing::info!("the session of worker {id} broke: {why}");
            shared
                .registry()
                .session_ended(id.as_str(), ticket.generation);
        }
    }
}

/// The first message, which must be an attach; `None` after refusing or dropping the session.
async fn read_attach(
    shared: &Shared,
    inbound: &mut Streaming<proto::WorkerMessage>,
    outbound: &Outbound,
) -> Option<proto::Attach> {
    let mut shutdown = shared.shutdown.subscribe();
    let first = tokio::select! {
        () = turned_true(&mut shutdown) => return None,
        first = tokio::time::timeout(shared.settings.attach_timeout, inbound.message()) => first,
    };
    match first {
        Ok(Ok(Some(proto::WorkerMessage {
            kind: Some(worker_message::Kind::Attach(attach)),
        }))) => Some(attach),
        Ok(Ok(Some(_))) => {
            let refusal = Refusal {
                code: RefusalCode::Protocol,
                reason: "the first message of a session must be an attach".into(),
            };
            let _ = outbound.send(Ok(refused(&refusal))).await;
            None
        }
        Ok(Ok(None)) => None,
        Ok(Err(status)) => {
            tracing::debug!("a session ended before its attach: {status}");
            None
        }
        Err(_) => {
            tracing::debug!(
                "a session sent no attach within {:?}",
                shared.settings.attach_timeout
            );
            None
        }
    }
}

fn refused(refusal: &Refusal) -> proto::MasterMessage {
    proto::MasterMessage {
        kind: Some(master_message::Kind::Refused(proto::Refused {
            reason: refusal.reason.clone(),
            code: refusal.code.to_proto() as i32,
        })),
    }
}

async fn refuse(
    shared: &Shared,
    attach: &proto::Attach,
    address: Option<SocketAddr>,
    refusal: Refusal,
    outbound: &Outbound,
) {
    shared.refusals.fetch_add(1, Relaxed);
    tracing::warn!(
        "refused worker {:?} from {}: {}",
        attach.worker_id,
        address.map_or_else(|| attach.hostname.clone(), |a| a.to_string()),
        refusal.reason
    );
    let _ = outbound.send(Ok(refused(&refusal))).await;
    let event = MasterEvent::WorkerRefused {
        worker: attach.worker_id.clone(),
        hostname: attach.hostname.clone(),
        address,
        refusal,
    };
    if let Err(TrySendError::Full(_)) = shared.events.try_send(event) {
        shared.refusals_not_reported.fetch_add(1, Relaxed);
    }
}

fn send_with(permits: Option<PermitIterator<'_, MasterEvent>>, events: Vec<MasterEvent>) {
    // No permits: the embedding code dropped its receiver and hears nothing any more.
    if let Some(mut permits) = permits {
        for event in events {
            if let Some(permit) = permits.next() {
                permit.send(event);
            }
        }
    }
}

/// Room for two events (a worker's `WorkerBack` and the message's own); while it waits, the worker is marked
/// backpressured so that the liveness watch does not take the master's slowness for the worker's silence.
async fn reserve_two<'a>(
    shared: &'a Shared,
    id: &WorkerId,
    generation: u64,
) -> Option<PermitIterator<'a, MasterEvent>> {
    match shared.events.try_reserve_many(2) {
        Ok(permits) => Some(permits),
        Err(TrySendError::Closed(())) => None,
        Err(TrySendError::Full(())) => {
            set_backpressured(shared, id, generation, true);
            let permits = shared.events.reserve_many(2).await.ok();
            set_backpressured(shared, id, generation, false);
            permits
        }
    }
}

fn set_backpressured(shared: &Shared, id: &WorkerId, generation: u64, on: bool) {
    if let Some(entry) = shared.registry().current_mut(id.as_str(), generation) {
        entry.backpressured = on;
        if !on {
            // The wait is over: the silence clock starts now, not when the worker last got through.
            entry.last_heard = Instant::now();
        }
    }
}

async fn read_loop(
    shared: &Shared,
    id: &WorkerId,
    generation: u64,
    inbound: &mut Streaming<proto::WorkerMessage>,
    mut cancel: watch::Receiver<bool>,
) -> End {
    loop {
        let message = tokio::select! {
            biased;
            () = turned_true(&mut cancel) => return End::Superseded,
            message = inbound.message() => message,
        };
        let kind = match message {
            Ok(Some(proto::WorkerMessage { kind: Some(kind) })) => kind,
            // A kind this master does not know (a newer worker): skip it.
            Ok(Some(proto::WorkerMessage { kind: None })) => continue,
            Ok(None) => return End::Cut("the worker closed its stream without leaving".into()),
            Err(status) => return End::Cut(status.message().to_string()),
        };
        if let Some(end) = handle_message(shared, id, generation, kind).await {
            return end;
        }
    }
}

/// Applies one message from the worker; `Some` ends the session.
async fn handle_message(
    shared: &Shared,
    id: &WorkerId,
    generation: u64,
    kind: worker_message::Kind,
) -> Option<End> {
    use worker_message::Kind;
    let permits = reserve_two(shared, id, generation).await;
    let mut registry = shared.registry();
    let now = Instant::now();
    let Some(entry) = registry.current_mut(id.as_str(), generation) else {
        return Some(End::Superseded);
    };
    let mut events = Vec::with_capacity(2);
    if entry.heard(now) {
        tracing::info!("worker {id} is heard from again");
        events.push(MasterEvent::WorkerBack { worker: id.clone() });
    }
    let mut end = None;
    match kind {
        Kind::Heartbeat(heartbeat) => {
            entry.heartbeats += 1;
            entry.deltas_dropped_by_worker = heartbeat.deltas_dropped;
            entry.status = WorkerStatus::from_proto(heartbeat);
            events.push(MasterEvent::Heartbeat {
                worker: id.clone(),
                status: entry.status.clone(),
            });
        }
        Kind::StatsDelta(delta) => {
            if let Reliable::Fresh { lost_before } =
                entry.accept_reliable(delta.covers_from, delta.seq)
            {
                entry.deltas_received += 1;
                events.push(MasterEvent::StatsDelta {
                    worker: id.clone(),
                    seq: delta.seq,
                    covers_from: if delta.covers_from == 0 || delta.covers_from > delta.seq {
                        delta.seq
                    } else {
                        delta.covers_from
                    },
                    lost_before,
                    payload: delta.payload,
                });
            }
        }
        Kind::Stopped(stopped) => {
            if let Reliable::Fresh { .. } = entry.accept_reliable(stopped.seq, stopped.seq) {
                events.push(MasterEvent::WorkerStopped {
                    worker: id.clone(),
                    final_seq: stopped.final_seq,
                    deltas_lost: entry.deltas_lost,
                });
            }
        }
        Kind::Ack(ack) => entry.outbox.acknowledge(ack.command_seq),
        Kind::Custom(custom) => events.push(MasterEvent::Custom {
            worker: id.clone(),
            kind: custom.kind,
            payload: custom.payload,
        }),
        Kind::Log(log) => events.push(MasterEvent::Log {
            worker: id.clone(),
            level: LogLevel::from_proto(log.level()),
            text: log.text,
        }),
        Kind::Leaving(leaving) => {
            registry.remove(id.as_str());
            tracing::info!("worker {id} left: {}", leaving.reason);
            events.push(MasterEvent::WorkerGone {
                worker: id.clone(),
                reason: GoneReason::Left {
                    reason: leaving.reason,
                },
            });
            end = Some(End::Left);
        }
        Kind::Attach(_) => {
            end = Some(End::Cut("the worker sent a second attach".into()));
        }
    }
    send_with(permits, events);
    end
}

async fn write_loop(
    shared: Arc<Shared>,
    id: WorkerId,
    generation: u64,
    outbound: Outbound,
    mut cancel: watch::Receiver<bool>,
    wake: Arc<Notify>,
) {
    let mut ticker = tokio::time::interval(shared.settings.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat_seq = 0_u64;
    loop {
        tokio::select! {
            biased;
            () = turned_true(&mut cancel) => return,
            () = wake.notified() => {}
            _ = ticker.tick() => {
                heartbeat_seq += 1;
                let Some(delta_ack) = shared
                    .registry()
                    .current_mut(id.as_str(), generation)
                    .map(|entry| entry.reliable_last)
                else {
                    return;
                };
                let heartbeat = proto::MasterMessage {
                    kind: Some(master_message::Kind::Heartbeat(proto::MasterHeartbeat {
                        seq: heartbeat_seq,
                        delta_ack,
                    })),
                };
                if outbound.send(Ok(heartbeat)).await.is_err() {
                    return;
                }
            }
        }
        loop {
            let next = match shared.registry().current_mut(id.as_str(), generation) {
                Some(entry) => entry.outbox.next_message(),
                None => return,
            };
            let Some(message) = next else { break };
            if outbound.send(Ok(message)).await.is_err() {
                return;
            }
        }
    }
}

/// Waits until a flag turns true or its sender is gone (the guard `wait_for` answers must not live across an
/// await in a task that moves between threads).
pub(crate) async fn turned_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|on| *on).await;
}

/// Marks silent workers missing and forgets those missing too long, until the master shuts down.
pub(crate) async fn watch_liveness(shared: Arc<Shared>) {
    let tick = LIVENESS_TICK.min(shared.settings.missing_after / 4);
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = shared.shutdown.subscribe();
    let missing_after = shared.settings.missing_after;
    let forget_after = shared.settings.forget_missing_after;
    loop {
        tokio::select! {
            () = turned_true(&mut shutdown) => return,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let (silent, forgettable) = {
            let registry = shared.registry();
            (
                registry.newly_silent(now, missing_after),
                registry.forgettable(now, forget_after),
            )
        };
        for id in silent {
            let permit = shared.events.reserve().await.ok();
            // The event goes out under the lock, so that a `WorkerBack` cannot overtake it.
            let mut registry = shared.registry();
            if registry.mark_missing(id.as_str(), now, missing_after) {
                tracing::warn!("worker {id} is missing: silent for {missing_after:?}");
                if let Some(permit) = permit {
                    permit.send(MasterEvent::WorkerMissing { worker: id });
                }
            }
            drop(registry);
        }
        for id in forgettable {
            let permit = shared.events.reserve().await.ok();
            let mut registry = shared.registry();
            if registry
                .forget_if_missing(id.as_str(), now, forget_after)
                .is_some()
            {
                tracing::warn!("worker {id} was missing for {forget_after:?}: forgotten");
                if let Some(permit) = permit {
                    permit.send(MasterEvent::WorkerGone {
                        worker: id,
                        reason: GoneReason::Lost,
                    });
                }
            }
            drop(registry);
        }
    }
}
