//! The master's registry of workers: one entry per worker id, connected or missing, with what the worker last
//! said about itself, the reliable sequence received from it (to drop duplicates and count gaps) and its
//! outbox of commands. Pure bookkeeping under one lock: the session and liveness tasks decide what to emit from
//! what these methods answer.
//!
//! Bounds: at most `max_workers` entries (a new worker beyond is refused as `Full`; missing ones count until
//! they are forgotten); each outbox holds at most `queue_capacity` messages, written or not yet acknowledged.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{Notify, watch};

use crate::proto;
use crate::types::{Command, WorkerId, WorkerStatus};

use super::{Presence, WorkerInfo};

/// What the registry keeps of an attach.
pub(crate) struct AttachRecord {
    pub(crate) id: WorkerId,
    pub(crate) hostname: String,
    pub(crate) version: String,
    pub(crate) pid: u32,
    pub(crate) cores: u32,
    pub(crate) incarnation: u64,
    pub(crate) address: Option<SocketAddr>,
    /// The worker's state as its attach gave it.
    pub(crate) status: WorkerStatus,
}

/// How an attach went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attached {
    /// A worker id never seen (or forgotten).
    New,
    /// The same worker process again; `was_missing` if it had been marked missing.
    Resumed { was_missing: bool },
    /// A new process under a known worker id: the old one is gone.
    Replaced,
}

/// What a session needs after it attached.
pub(crate) struct Ticket {
    pub(crate) attached: Attached,
    pub(crate) generation: u64,
    pub(crate) delta_ack: u64,
    pub(crate) cancel: watch::Receiver<bool>,
    pub(crate) wake: Arc<Notify>,
}

/// The registry is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// The session that currently speaks for a worker.
struct SessionSlot {
    generation: u64,
    cancel: watch::Sender<bool>,
    wake: Arc<Notify>,
}

impl SessionSlot {
    fn end(&self) {
        // A closed receiver only means the session already ended.
        let _ = self.cancel.send(true);
    }
}

pub(crate) struct Entry {
    pub(crate) record: AttachRecord,
    pub(crate) status: WorkerStatus,
    pub(crate) heartbeats: u64,
    pub(crate) last_heard: Instant,
    pub(crate) missing_since: Option<Instant>,
    /// The session's reader waits for room in the event channel: the worker is talking, the master is not
    /// listening, so its silence says nothing about the worker.
    pub(crate) backpressured: bool,
    /// The highest reliable sequence number received (0: none yet).
    pub(crate) reliable_last: u64,
    pub(crate) deltas_received: u64,
    pub(crate) deltas_lost: u64,
    pub(crate) deltas_dropped_by_worker: u64,
    pub(crate) duplicates_ignored: u64,
    pub(crate) reconnects: u32,
    pub(crate) attached_at: SystemTime,
    pub(crate) outbox: Outbox,
    session: Option<SessionSlot>,
}

/// What happened to a reliable message (a delta or a Stopped marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reliable {
    /// New: pass it on; `lost_before` sequence numbers between the previous one and this one never arrived (the
    /// worker dropped them when its buffer was full).
    Fresh { lost_before: u64 },
    /// Already received in an earlier session: ignore it.
    Duplicate,
}

impl Entry {
    fn new(record: AttachRecord, now: Instant, queue_capacity: usize) -> Self {
        Self {
            status: record.status.clone(),
            record,
            heartbeats: 0,
            last_heard: now,
            missing_since: None,
            backpressured: false,
            reliable_last: 0,
            deltas_received: 0,
            deltas_lost: 0,
            deltas_dropped_by_worker: 0,
            duplicates_ignored: 0,
            reconnects: 0,
            attached_at: SystemTime::now(),
            outbox: Outbox::new(queue_capacity),
            session: None,
        }
    }

    /// Whether `generation` is the session that speaks for this worker now.
    pub(crate) fn is_current(&self, generation: u64) -> bool {
        self.session
            .as_ref()
            .is_some_and(|session| session.generation == generation)
    }

    /// The worker was heard from; answers whether it had been missing (and is now back).
    pub(crate) fn heard(&mut self, now: Instant) -> bool {
        self.last_heard = now;
        self.missing_since.take().is_some()
    }

    /// Accepts reliable sequence number `seq` covering `covers_from..=seq`.
    pub(crate) fn accept_reliable(&mut self, covers_from: u64, seq: u64) -> Reliable {
        if seq <= self.reliable_last {
            self.duplicates_ignored += 1;
            return Reliable::Duplicate;
        }
        let covers_from = if covers_from == 0 || covers_from > seq {
            seq
        } else {
            covers_from
        };
        // The first message from a worker may start anywhere: a master that restarted never saw what its
        // predecessor acknowledged. After that, a hole is what the worker dropped.
        let lost_before = if self.reliable_last == 0 {
            0
        } else {
            covers_from.saturating_sub(self.reliable_last + 1)
        };
        self.reliable_last = seq;
        self.deltas_lost += lost_before;
        Reliable::Fresh { lost_before }
    }

    /// Wakes the writer of the current session (after something was queued).
    pub(crate) fn wake_writer(&self) {
        if let Some(session) = &self.session {
            session.wake.notify_one();
        }
    }

    pub(crate) fn info(&self, now: Instant) -> WorkerInfo {
        WorkerInfo {
            id: self.record.id.clone(),
            hostname: self.record.hostname.clone(),
            version: self.record.version.clone(),
            pid: self.record.pid,
            cores: self.record.cores,
            address: self.record.address,
            status: self.status.clone(),
            presence: if self.missing_since.is_some() {
                Presence::Missing
            } else {
                Presence::Connected
            },
            silent_for: now.saturating_duration_since(self.last_heard),
            attached_at: self.attached_at,
            reconnects: self.reconnects,
            heartbeats: self.heartbeats,
            deltas_received: self.deltas_received,
            deltas_lost: self.deltas_lost,
            deltas_dropped_by_worker: self.deltas_dropped_by_worker,
            queued_messages: self.outbox.len(),
        }
    }
}

pub(crate) struct Registry {
    workers: HashMap<WorkerId, Entry>,
    max_workers: usize,
    queue_capacity: usize,
    next_generation: u64,
}

impl Registry {
    pub(crate) fn new(max_workers: usize, queue_capacity: usize) -> Self {
        Self {
            workers: HashMap::new(),
            max_workers,
            queue_capacity,
            next_generation: 1,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Entry> {
        self.workers.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        self.workers.get_mut(id)
    }

    /// The entry of `id` if `generation` is its current session.
    pub(crate) fn current_mut(&mut self, id: &str, generation: u64) -> Option<&mut Entry> {
        self.workers
            .get_mut(id)
            .filter(|entry| entry.is_current(generation))
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.workers.values()
    }

    pub(crate) fn entries_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.workers.values_mut()
    }

    /// Registers a session for a worker; the previous session of the same worker, if any, is told to end.
    pub(crate) fn attach(&mut self, record: AttachRecord, now: Instant) -> Result<Ticket, Full> {
        let generation = self.next_generation;
        let (cancel_sender, cancel) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let slot = SessionSlot {
            generation,
            cancel: cancel_sender,
            wake: Arc::clone(&wake),
        };
        let (attached, delta_ack) = match self.workers.get_mut(&record.id) {
            Some(entry) if entry.record.incarnation == record.incarnation => {
                if let Some(previous) = entry.session.take() {
                    previous.end();
                }
                let was_missing = entry.heard(now);
                entry.reconnects += 1;
                entry.backpressured = false;
                entry.record.address = record.address;
                entry.status = record.status;
                entry.outbox.restart();
                entry.session = Some(slot);
                (Attached::Resumed { was_missing }, entry.reliable_last)
            }
            Some(entry) => {
                if let Some(previous) = entry.session.take() {
                    previous.end();
                }
                let mut fresh = Entry::new(record, now, self.queue_capacity);
                fresh.session = Some(slot);
                *entry = fresh;
                (Attached::Replaced, 0)
            }
            None => {
                if self.workers.len() >= self.max_workers {
                    return Err(Full);
                }
                let mut fresh = Entry::new(record, now, self.queue_capacity);
                fresh.session = Some(slot);
                self.workers.insert(fresh.record.id.clone(), fresh);
                (Attached::New, 0)
            }
        };
        self.next_generation += 1;
        Ok(Ticket {
            attached,
            generation,
            delta_ack,
            cancel,
            wake,
        })
    }

    /// The session `generation` of `id` ended without the worker leaving: the worker stays, and goes missing
    /// if it stays silent.
    pub(crate) fn session_ended(&mut self, id: &str, generation: u64) {
        if let Some(entry) = self.current_mut(id, generation) {
            entry.session = None;
            entry.backpressured = false;
        }
    }

    /// Removes a worker (it left, or the master forgets it), ending its session.
    pub(crate) fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.workers.remove(id)?;
        if let Some(session) = &entry.session {
            session.end();
        }
        Some(entry)
    }

    /// Workers silent for `missing_after` that are not yet missing.
    pub(crate) fn newly_silent(&self, now: Instant, missing_after: Duration) -> Vec<WorkerId> {
        self.workers
            .values()
            .filter(|entry| Self::is_silent(entry, now, missing_after))
            .map(|entry| entry.record.id.clone())
            .collect()
    }

    fn is_silent(entry: &Entry, now: Instant, missing_after: Duration) -> bool {
        entry.missing_since.is_none()
            && !entry.backpressured
            && now.saturating_duration_since(entry.last_heard) >= missing_after
    }

    /// Marks `id` missing if it is still silent; answers whether it did.
    pub(crate) fn mark_missing(&mut self, id: &str, now: Instant, missing_after: Duration) -> bool {
        match self.workers.get_mut(id) {
            Some(entry) if Self::is_silent(entry, now, missing_after) => {
                entry.missing_since = Some(now);
                true
            }
            _ => false,
        }
    }

    /// Workers missing for `forget_after`.
    pub(crate) fn forgettable(&self, now: Instant, forget_after: Duration) -> Vec<WorkerId> {
        self.workers
            .values()
            .filter(|entry| Self::is_forgettable(entry, now, forget_after))
            .map(|entry| entry.record.id.clone())
            .collect()
    }

    fn is_forgettable(entry: &Entry, now: Instant, forget_after: Duration) -> bool {
        entry
            .missing_since
            .is_some_and(|since| now.saturating_duration_since(since) >= forget_after)
    }

    /// Removes `id` if it is still missing for `forget_after`.
    pub(crate) fn forget_if_missing(
        &mut self,
        id: &str,
        now: Instant,
        forget_after: Duration,
    ) -> Option<Entry> {
        let forgettable = self
            .workers
            .get(id)
            .is_some_and(|entry| Self::is_forgettable(entry, now, forget_after));
        if forgettable { self.remove(id) } else { None }
    }

    /// Ends every session (the master shuts down).
    pub(crate) fn end_all_sessions(&mut self) {
        for entry in self.workers.values_mut() {
            if let Some(session) = entry.session.take() {
                session.end();
            }
        }
    }
}

/// A message waiting to be written to a worker.
#[derive(Debug, Clone, PartialEq)]
enum Outgoing {
    Command(proto::Command),
    Custom(proto::Custom),
}

/// The outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull;

/// Messages for one worker. Commands stay after they are written until the worker acknowledges them, and are
/// written again, in order and under the same number, on the worker's next session (the worker ignores a
/// number it already has). Custom messages are written once (at most once: one in flight during a cut is lost).
///
/// Bound: `pending + unacknowledged <= capacity`; past it, `push_*` refuses the new message and the caller
/// reports [`crate::SendError::QueueFull`].
#[derive(Debug)]
pub(crate) struct Outbox {
    pending: VecDeque<Outgoing>,
    unacknowledged: VecDeque<proto::Command>,
    next_seq: u64,
    capacity: usize,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            pending: VecDeque::new(),
            unacknowledged: VecDeque::new(),
            next_seq: 1,
            capacity,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len() + self.unacknowledged.len()
    }

    /// Queues a command; answers its number.
    pub(crate) fn push_command(&mut self, command: &Command) -> Result<u64, QueueFull> {
        if self.len() >= self.capacity {
            return Err(QueueFull);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending
            .push_back(Outgoing::Command(command.to_proto(seq)));
        Ok(seq)
    }

    pub(crate) fn push_custom(&mut self, kind: &str, payload: Bytes) -> Result<(), QueueFull> {
        if self.len() >= self.capacity {
            return Err(QueueFull);
        }
        self.pending.push_back(Outgoing::Custom(proto::Custom {
            kind: kind.to_string(),
            payload,
        }));
        Ok(())
    }

    /// The next message to write; a command moves to the unacknowledged ones.
    pub(crate) fn next_message(&mut self) -> Option<proto::MasterMessage> {
        use proto::master_message::Kind;
        let kind = match self.pending.pop_front()? {
            Outgoing::Command(command) => {
                self.unacknowledged.push_back(command.clone());
                Kind::Command(command)
            }
            Outgoing::Custom(custom) => Kind::Custom(custom),
        };
        Some(proto::MasterMessage { kind: Some(kind) })
    }

    /// The worker has every command up to `seq`.
    pub(crate) fn acknowledge(&mut self, seq: u64) {
        while self
            .unacknowledged
            .front()
            .is_some_and(|command| command.seq <= seq)
        {
            self.unacknowledged.pop_front();
        }
        // After a restart the acknowledged commands may still wait in `pending`.
        self.pending.retain(
            |outgoing| !matches!(outgoing, Outgoing::Command(command) if command.seq <= seq),
        );
    }

    /// A new session: what was written but not acknowledged goes out again first, in order.
    pub(crate) fn restart(&mut self) {
        while let Some(command) = self.unacknowledged.pop_back() {
            self.pending.push_front(Outgoing::Command(command));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, incarnation: u64) -> AttachRecord {
        AttachRecord {
            id: WorkerId::new(id),
            hostname: "host".into(),
            version: "1".into(),
            pid: 1,
            cores: 1,
            incarnation,
            address: None,
            status: WorkerStatus::default(),
        }
    }

    fn command_seqs(outbox: &mut Outbox) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Some(message) = outbox.next_message() {
            if let Some(proto::master_message::Kind::Command(command)) = message.kind {
                seqs.push(command.seq);
            }
        }
        seqs
    }

    #[test]
    fn unacknowledged_commands_go_out_again_in_order_after_a_restart() {
        let mut outbox = Outbox::new(8);
        for _ in 0..3 {
            outbox.push_command(&Command::Stop).unwrap();
        }
        assert_eq!(command_seqs(&mut outbox), vec![1, 2, 3]);
        outbox.acknowledge(1);
        outbox.push_command(&Command::Quit).unwrap();
        outbox.restart();
        assert_eq!(command_seqs(&mut outbox), vec![2, 3, 4]);
        outbox.acknowledge(4);
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn an_acknowledgement_also_clears_pending_resends() {
        let mut outbox = Outbox::new(8);
        outbox.push_command(&Command::Stop).unwrap();
        outbox.push_command(&Command::Stop).unwrap();
        assert_eq!(command_seqs(&mut outbox), vec![1, 2]);
        outbox.restart();
        outbox.acknowledge(2);
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn a_full_outbox_refuses_and_counts_unacknowledged_commands() {
        let mut outbox = Outbox::new(2);
        outbox.push_command(&Command::Stop).unwrap();
        outbox.push_custom("x", Bytes::new()).unwrap();
        assert_eq!(outbox.push_command(&Command::Stop), Err(QueueFull));
        // Written but unacknowledged still counts; the custom message does not once written.
        command_seqs(&mut outbox);
        assert_eq!(outbox.len(), 1);
        outbox.push_command(&Command::Quit).unwrap();
        assert_eq!(outbox.push_custom("y", Bytes::new()), Err(QueueFull));
        outbox.acknowledge(1);
        outbox.push_custom("y", Bytes::new()).unwrap();
    }

    #[test]
    fn reliable_sequence_drops_duplicates_and_counts_holes() {
        let mut registry = Registry::new(4, 4);
        let now = Instant::now();
        registry.attach(record("w", 1), now).unwrap();
        let entry = registry.get_mut("w").unwrap();
        // A worker whose first deltas a previous master acknowledged starts anywhere.
        assert_eq!(
            entry.accept_reliable(5, 5),
            Reliable::Fresh { lost_before: 0 }
        );
        assert_eq!(
            entry.accept_reliable(6, 6),
            Reliable::Fresh { lost_before: 0 }
        );
        assert_eq!(entry.accept_reliable(6, 6), Reliable::Duplicate);
        // 7 and 8 were dropped by the worker; 9..=11 were merged into one.
        assert_eq!(
            entry.accept_reliable(9, 11),
            Reliable::Fresh { lost_before: 2 }
        );
        assert_eq!(
            entry.accept_reliable(0, 12),
            Reliable::Fresh { lost_before: 0 }
        );
        assert_eq!(entry.deltas_lost, 2);
        assert_eq!(entry.duplicates_ignored, 1);
    }

    #[test]
    fn the_same_process_resumes_a_new_one_replaces() {
        let mut registry = Registry::new(4, 4);
        let now = Instant::now();
        let first = registry.attach(record("w", 1), now).unwrap();
        assert_eq!(first.attached, Attached::New);
        registry.get_mut("w").unwrap().accept_reliable(1, 3);
        let second = registry.attach(record("w", 1), now).unwrap();
        assert_eq!(second.attached, Attached::Resumed { was_missing: false });
        assert_eq!(second.delta_ack, 3);
        // The superseded session was told to end.
        assert!(*first.cancel.borrow());
        assert!(!registry.get("w").unwrap().is_current(first.generation));
        let third = registry.attach(record("w", 2), now).unwrap();
        assert_eq!(third.attached, Attached::Replaced);
        assert_eq!(third.delta_ack, 0);
        assert!(*second.cancel.borrow());
    }

    #[test]
    fn silence_makes_missing_then_forgotten_and_a_heartbeat_brings_back() {
        let mut registry = Registry::new(4, 4);
        let start = Instant::now();
        let ticket = registry.attach(record("w", 1), start).unwrap();
        let missing_after = Duration::from_secs(3);
        let forget_after = Duration::from_secs(60);
        assert!(
            registry
                .newly_silent(start + Duration::from_secs(2), missing_after)
                .is_empty()
        );
        let later = start + Duration::from_secs(3);
        assert_eq!(
            registry.newly_silent(later, missing_after),
            vec![WorkerId::new("w")]
        );
        assert!(registry.mark_missing("w", later, missing_after));
        assert!(
            !registry.mark_missing("w", later, missing_after),
            "only once"
        );
        assert!(registry.get_mut("w").unwrap().heard(later), "back");
        assert!(registry.mark_missing("w", later + missing_after, missing_after));
        let much_later = later + missing_after + forget_after;
        assert_eq!(
            registry.forgettable(much_later, forget_after),
            vec![WorkerId::new("w")]
        );
        let gone = registry
            .forget_if_missing("w", much_later, forget_after)
            .unwrap();
        assert_eq!(gone.record.id.as_str(), "w");
        assert_eq!(registry.len(), 0);
        assert!(*ticket.cancel.borrow(), "its session was told to end");
    }

    #[test]
    fn a_backpressured_worker_is_not_silent() {
        let mut registry = Registry::new(4, 4);
        let start = Instant::now();
        registry.attach(record("w", 1), start).unwrap();
        registry.get_mut("w").unwrap().backpressured = true;
        assert!(
            registry
                .newly_silent(start + Duration::from_secs(10), Duration::from_secs(3))
                .is_empty()
        );
    }

    #[test]
    fn the_registry_is_bounded_but_known_workers_come_back() {
        let mut registry = Registry::new(1, 4);
        let now = Instant::now();
        registry.attach(record("a", 1), now).unwrap();
        assert!(matches!(registry.attach(record("b", 1), now), Err(Full)));
        assert!(registry.attach(record("a", 1), now).is_ok());
        assert!(registry.attach(record("a", 2), now).is_ok());
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn an_ended_session_leaves_the_worker_until_it_is_silent() {
        let mut registry = Registry::new(4, 4);
        let now = Instant::now();
        let ticket = registry.attach(record("w", 1), now).unwrap();
        registry.session_ended("w", ticket.generation);
        assert!(registry.get("w").is_some());
        assert!(!registry.get("w").unwrap().is_current(ticket.generation));
    }
}
