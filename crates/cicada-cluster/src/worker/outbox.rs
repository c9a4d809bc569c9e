//! What a worker has to send: the reliable sequence (statistics deltas and `Stopped` markers, kept until the
//! master acknowledges them and sent again, in order, after a reconnect), the cumulative acknowledgement of
//! commands, custom messages and log lines.
//!
//! Bounds and overflow rules:
//! - reliable entries: at most `capacity` (default 120, two minutes of 1 s deltas). When a new delta finds it
//!   full, the two oldest deltas never written to any session are merged by the embedding code's
//!   [`DeltaMerge`] (the merged one covers both intervals); without a merge function, when it declines, or
//!   when no two such deltas are adjacent, the oldest delta is dropped and counted. A delta once written is
//!   never merged: the master may hold it already and would count it twice.
//! - custom messages: at most `custom_capacity`; beyond, `push_custom` refuses.
//! - log lines: at most `log_capacity`; beyond, the oldest is dropped and counted.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::proto::{self, worker_message};
use crate::types::LogLevel;

/// Merges two consecutive statistics deltas (older first) into one that covers both; `None` if it cannot (the
/// oldest is then dropped). Provided by the embedding code, which knows the payload's format.
pub type DeltaMerge = Arc<dyn Fn(&Bytes, &Bytes) -> Option<Bytes> + Send + Sync>;

#[derive(Debug, Clone)]
enum ReliableKind {
    Delta(Bytes),
    Stopped { final_seq: u64 },
}

#[derive(Debug, Clone)]
struct ReliableEntry {
    seq: u64,
    covers_from: u64,
    kind: ReliableKind,
}

impl ReliableEntry {
    fn is_delta(&self) -> bool {
        matches!(self.kind, ReliableKind::Delta(_))
    }

    fn to_message(&self) -> proto::WorkerMessage {
        let kind = match &self.kind {
            ReliableKind::Delta(payload) => worker_message::Kind::StatsDelta(proto::StatsDelta {
                seq: self.seq,
                payload: payload.clone(),
                covers_from: self.covers_from,
            }),
            ReliableKind::Stopped { final_seq } => worker_message::Kind::Stopped(proto::Stopped {
                final_seq: *final_seq,
                seq: self.seq,
            }),
        };
        proto::WorkerMessage { kind: Some(kind) }
    }
}

/// The custom queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull;

/// Counts of what the overflow rules did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OutboxCounters {
    pub(crate) deltas_dropped: u64,
    pub(crate) deltas_merged: u64,
    pub(crate) customs_refused: u64,
    pub(crate) logs_dropped: u64,
}

pub(crate) struct Outbox {
    reliable: VecDeque<ReliableEntry>,
    capacity: usize,
    merge: Option<DeltaMerge>,
    /// Largest payload a merge may produce (a bigger one could not be sent).
    max_payload: usize,
    next_seq: u64,
    last_delta_seq: u64,
    /// Highest sequence number written in the current session.
    written_through: u64,
    /// Highest sequence number ever written to any session: those at or below may be at the master.
    ever_written_through: u64,
    command_ack: Option<u64>,
    customs: VecDeque<proto::Custom>,
    custom_capacity: usize,
    logs: VecDeque<proto::Log>,
    log_capacity: usize,
    pub(crate) counters: OutboxCounters,
}

impl Outbox {
    pub(crate) fn new(
        capacity: usize,
        merge: Option<DeltaMerge>,
        max_payload: usize,
        custom_capacity: usize,
        log_capacity: usize,
    ) -> Self {
        Self {
            reliable: VecDeque::new(),
            capacity: capacity.max(1),
            merge,
            max_payload,
            next_seq: 1,
            last_delta_seq: 0,
            written_through: 0,
            ever_written_through: 0,
            command_ack: None,
            customs: VecDeque::new(),
            custom_capacity,
            logs: VecDeque::new(),
            log_capacity,
            counters: OutboxCounters::default(),
        }
    }

    /// Reliable entries not yet acknowledged by the master.
    pub(crate) fn unacknowledged(&self) -> usize {
        self.reliable.len()
    }

    /// Whether nothing at all waits to be written or acknowledged.
    #[cfg(test)]
    pub(crate) fn is_drained(&self) -> bool {
        self.reliable.is_empty()
            && self.command_ack.is_none()
            && self.customs.is_empty()
            && self.logs.is_empty()
    }

    /// Whether everything has been written to the current session (acknowledged or not).
    pub(crate) fn all_written(&self) -> bool {
        self.reliable
            .back()
            .is_none_or(|entry| entry.seq <= self.written_through)
            && self.command_ack.is_none()
            && self.customs.is_empty()
            && self.logs.is_empty()
    }

    /// Queues a delta; answers its sequence number.
    pub(crate) fn push_delta(&mut self, payload: Bytes) -> u64 {
        if self.reliable.len() >= self.capacity {
            self.make_room();
        }
        let seq = self.take_seq();
        self.last_delta_seq = seq;
        self.reliable.push_back(ReliableEntry {
            seq,
            covers_from: seq,
            kind: ReliableKind::Delta(payload),
        });
        seq
    }

    /// Queues a `Stopped` marker after every delta queued so far; answers the last delta's number.
    pub(crate) fn push_stopped(&mut self) -> u64 {
        if self.reliable.len() >= self.capacity {
            self.make_room();
        }
        let final_seq = self.last_delta_seq;
        let seq = self.take_seq();
        self.reliable.push_back(ReliableEntry {
            seq,
            covers_from: seq,
            kind: ReliableKind::Stopped { final_seq },
        });
        final_seq
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn make_room(&mut self) {
        if self.merge_oldest_unwritten() {
            self.counters.deltas_merged += 1;
            return;
        }
        let oldest_delta = self
            .reliable
            .iter()
            .position(ReliableEntry::is_delta)
            .unwrap_or(0);
        if let Some(entry) = self.reliable.remove(oldest_delta)
            && entry.is_delta()
        {
            self.counters.deltas_dropped += 1;
        }
    }

    fn merge_oldest_unwritten(&mut self) -> bool {
        let Some(merge) = self.merge.clone() else {
            return false;
        };
        let first_unwritten = self
            .reliable
            .iter()
            .position(|entry| entry.seq > self.ever_written_through);
        let Some(start) = first_unwritten else {
            return false;
        };
        let Some(index) = (start..self.reliable.len().saturating_sub(1))
            .find(|&index| self.reliable[index].is_delta() && self.reliable[index + 1].is_delta())
        else {
            return false;
        };
        let (ReliableKind::Delta(older), ReliableKind::Delta(newer)) =
            (&self.reliable[index].kind, &self.reliable[index + 1].kind)
        else {
            return false;
        };
        let Some(merged) = merge(older, newer).filter(|merged| merged.len() <= self.max_payload)
        else {
            return false;
        };
        let covers_from = self.reliable[index].covers_from;
        self.reliable.remove(index);
        let entry = &mut self.reliable[index];
        entry.covers_from = covers_from;
        entry.kind = ReliableKind::Delta(merged);
        true
    }

    /// The master holds everything up to `seq`.
    pub(crate) fn acknowledge(&mut self, seq: u64) {
        while self.reliable.front().is_some_and(|entry| entry.seq <= seq) {
            self.reliable.pop_front();
        }
    }

    /// A new session, whose master holds everything up to `delta_ack`: the rest is written again, in order.
    pub(crate) fn restart_session(&mut self, delta_ack: u64) {
        // A master claiming more than was ever numbered must not make new entries look written.
        let delta_ack = delta_ack.min(self.next_seq - 1);
        self.acknowledge(delta_ack);
        self.written_through = delta_ack;
    }

    /// Every command up to `seq` reached the embedding code (acknowledgements are cumulative).
    pub(crate) fn acknowledge_command(&mut self, seq: u64) {
        self.command_ack = Some(self.command_ack.map_or(seq, |ack| ack.max(seq)));
    }

    pub(crate) fn push_custom(&mut self, kind: String, payload: Bytes) -> Result<(), QueueFull> {
        if self.customs.len() >= self.custom_capacity {
            self.counters.customs_refused += 1;
            return Err(QueueFull);
        }
        self.customs.push_back(proto::Custom { kind, payload });
        Ok(())
    }

    pub(crate) fn push_log(&mut self, level: LogLevel, text: String) {
        if self.log_capacity == 0 {
            self.counters.logs_dropped += 1;
            return;
        }
        if self.logs.len() >= self.log_capacity {
            self.logs.pop_front();
            self.counters.logs_dropped += 1;
        }
        self.logs.push_back(proto::Log {
            level: level.to_proto() as i32,
            text,
        });
    }

    /// The next message to write, in this order: the command acknowledgement, the reliable sequence, custom
    /// messages, log lines.
    pub(crate) fn next_message(&mut self) -> Option<proto::WorkerMessage> {
        if let Some(command_seq) = self.command_ack.take() {
            return Some(proto::WorkerMessage {
                kind: Some(worker_message::Kind::Ack(proto::Ack { command_seq })),
            });
        }
        if let Some(entry) = self
            .reliable
            .iter()
            .find(|entry| entry.seq > self.written_through)
        {
            let message = entry.to_message();
            self.written_through = entry.seq;
            self.ever_written_through = self.ever_written_through.max(entry.seq);
            return Some(message);
        }
        if let Some(custom) = self.customs.pop_front() {
            return Some(proto::WorkerMessage {
                kind: Some(worker_message::Kind::Custom(custom)),
            });
        }
        self.logs.pop_front().map(|log| proto::WorkerMessage {
            kind: Some(worker_message::Kind::Log(log)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (seq, covers_from, payload) of each delta written until the outbox has nothing more.
    fn written(outbox: &mut Outbox) -> Vec<(u64, u64, String)> {
        let mut deltas = Vec::new();
        while let Some(message) = outbox.next_message() {
            if let Some(worker_message::Kind::StatsDelta(delta)) = message.kind {
                deltas.push((
                    delta.seq,
                    delta.covers_from,
                    String::from_utf8(delta.payload.to_vec()).unwrap(),
                ));
            }
        }
        deltas
    }

    fn outbox(capacity: usize, merge: Option<DeltaMerge>) -> Outbox {
        Outbox::new(capacity, merge, 1 << 20, 4, 2)
    }

    fn concatenate() -> DeltaMerge {
        Arc::new(|a: &Bytes, b: &Bytes| {
            let mut merged = a.to_vec();
            merged.extend_from_slice(b);
            Some(Bytes::from(merged))
        })
    }

    #[test]
    fn unacknowledged_deltas_are_written_again_after_a_reconnect() {
        let mut outbox = outbox(10, None);
        for payload in ["a", "b", "c"] {
            outbox.push_delta(Bytes::from(payload));
        }
        assert_eq!(written(&mut outbox).len(), 3);
        assert!(written(&mut outbox).is_empty(), "written once per session");
        outbox.acknowledge(1);
        // The master of the new session holds 2 already: only 3 goes again.
        outbox.restart_session(2);
        assert_eq!(written(&mut outbox), vec![(3, 3, "c".to_string())]);
        outbox.acknowledge(3);
        assert!(outbox.is_drained());
    }

    #[test]
    fn an_acknowledgement_beyond_what_was_numbered_hides_nothing() {
        let mut outbox = outbox(10, None);
        outbox.push_delta(Bytes::from("a"));
        outbox.restart_session(1_000);
        outbox.push_delta(Bytes::from("b"));
        assert_eq!(written(&mut outbox), vec![(2, 2, "b".to_string())]);
    }

    #[test]
    fn a_full_buffer_without_merge_drops_the_oldest_and_counts_it() {
        let mut outbox = outbox(2, None);
        for payload in ["a", "b", "c"] {
            outbox.push_delta(Bytes::from(payload));
        }
        assert_eq!(outbox.counters.deltas_dropped, 1);
        assert_eq!(
            written(&mut outbox),
            vec![(2, 2, "b".into()), (3, 3, "c".into())]
        );
    }

    #[test]
    fn a_full_buffer_merges_the_oldest_unwritten_deltas() {
        let mut outbox = outbox(3, Some(concatenate()));
        outbox.push_delta(Bytes::from("a"));
        // "a" reached a session that then broke: it may be at the master, so it is never merged.
        assert_eq!(written(&mut outbox).len(), 1);
        outbox.restart_session(0);
        for payload in ["b", "c", "d", "e"] {
            outbox.push_delta(Bytes::from(payload));
        }
        assert_eq!(outbox.counters.deltas_merged, 2);
        assert_eq!(outbox.counters.deltas_dropped, 0);
        assert_eq!(
            written(&mut outbox),
            vec![(1, 1, "a".into()), (4, 2, "bcd".into()), (5, 5, "e".into())]
        );
    }

    #[test]
    fn a_declined_or_oversized_merge_drops_the_oldest() {
        let decline: DeltaMerge = Arc::new(|_: &Bytes, _: &Bytes| None);
        let mut outbox = outbox(2, Some(decline));
        for payload in ["a", "b", "c"] {
            outbox.push_delta(Bytes::from(payload));
        }
        assert_eq!(outbox.counters.deltas_dropped, 1);

        let mut small = Outbox::new(2, Some(concatenate()), 1, 4, 2);
        for payload in ["a", "b", "c"] {
            small.push_delta(Bytes::from(payload));
        }
        assert_eq!(small.counters.deltas_dropped, 1);
        assert_eq!(small.counters.deltas_merged, 0);
    }

    #[test]
    fn stopped_follows_every_delta_and_names_the_last() {
        let mut outbox = outbox(10, None);
        outbox.push_delta(Bytes::from("a"));
        outbox.push_delta(Bytes::from("b"));
        assert_eq!(outbox.push_stopped(), 2);
        let mut kinds = Vec::new();
        while let Some(message) = outbox.next_message() {
            kinds.push(match message.kind.unwrap() {
                worker_message::Kind::StatsDelta(delta) => format!("delta {}", delta.seq),
                worker_message::Kind::Stopped(stopped) => {
                    format!("stopped {} at {}", stopped.final_seq, stopped.seq)
                }
                other => format!("{other:?}"),
            });
        }
        assert_eq!(kinds, ["delta 1", "delta 2", "stopped 2 at 3"]);
    }

    #[test]
    fn overflow_drops_deltas_before_markers() {
        let mut outbox = outbox(2, None);
        outbox.push_stopped();
        outbox.push_delta(Bytes::from("a"));
        outbox.push_delta(Bytes::from("b"));
        assert_eq!(outbox.counters.deltas_dropped, 1);
        assert_eq!(outbox.unacknowledged(), 2);
        let first = outbox.next_message().unwrap();
        assert!(matches!(first.kind, Some(worker_message::Kind::Stopped(_))));
    }

    #[test]
    fn the_acknowledgement_goes_first_and_is_cumulative() {
        let mut outbox = outbox(4, None);
        outbox.push_log(LogLevel::Info, "hello".into());
        outbox.push_delta(Bytes::from("a"));
        outbox.acknowledge_command(3);
        outbox.acknowledge_command(2);
        let first = outbox.next_message().unwrap();
        assert_eq!(
            first.kind,
            Some(worker_message::Kind::Ack(proto::Ack { command_seq: 3 }))
        );
        assert!(matches!(
            outbox.next_message().unwrap().kind,
            Some(worker_message::Kind::StatsDelta(_))
        ));
        assert!(matches!(
            outbox.next_message().unwrap().kind,
            Some(worker_message::Kind::Log(_))
        ));
        assert!(outbox.all_written());
    }

    #[test]
    fn customs_are_refused_and_logs_dropped_when_full() {
        let mut outbox = outbox(4, None);
        for _ in 0..4 {
            outbox.push_custom("k".into(), Bytes::new()).unwrap();
        }
        assert_eq!(outbox.push_custom("k".into(), Bytes::new()), Err(QueueFull));
        for line in ["1", "2", "3"] {
            outbox.push_log(LogLevel::Warn, line.into());
        }
        assert_eq!(outbox.counters.logs_dropped, 1);
        assert_eq!(outbox.counters.customs_refused, 1);
    }
}
