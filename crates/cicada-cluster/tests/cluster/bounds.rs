//! Every bound holds and says so: workers per master, messages per worker outbox, message size, open
//! connections, and the worker's delta buffer with its drop and merge rules.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cicada_cluster::proto::{self, worker_message};
use cicada_cluster::{
    Command, DeltaMerge, MasterConfig, MasterEvent, SendError, Spawn, WorkerConfig, WorkerSendError,
};
use tokio::net::TcpStream;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_master_refuses_new_workers_but_takes_back_known_ones() {
    let (master, mut master_events) = start_master(MasterConfig {
        max_workers: 2,
        ..master_config()
    })
    .await;
    let address = master.local_addr();
    let (first, answer) = RawWorker::attach(address, raw_attach_message("a", 1)).await;
    accepted(&answer);
    let (_second, answer) = RawWorker::attach(address, raw_attach_message("b", 1)).await;
    accepted(&answer);
    let (_third, answer) = RawWorker::attach(address, raw_attach_message("c", 1)).await;
    let refusal = refused(&answer);
    assert_eq!(refusal.code, proto::RefuseCode::Full as i32);
    assert!(refusal.reason.contains("max_workers"), "{}", refusal.reason);
    expect_event(
        &mut master_events,
        "the refusal",
        |event| matches!(event, MasterEvent::WorkerRefused { worker, .. } if worker == "c"),
    )
    .await;
    // A known worker reconnecting is not a new one.
    drop(first);
    let (_again, answer) = RawWorker::attach(address, raw_attach_message("a", 1)).await;
    accepted(&answer);
    assert_eq!(master.workers().len(), 2);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_does_not_acknowledge_fills_its_outbox_and_sends_are_refused() {
    let (master, mut master_events) = start_master(MasterConfig {
        worker_queue: 3,
        ..master_config()
    })
    .await;
    let (mut worker, answer) =
        RawWorker::attach(master.local_addr(), raw_attach_message("slow", 1)).await;
    accepted(&answer);
    connected_worker(&mut master_events).await;
    for expected in 1..=3 {
        assert_eq!(master.send("slow", Command::Stop), Ok(expected));
    }
    let error = master.send("slow", Command::Stop).unwrap_err();
    assert!(
        matches!(error, SendError::QueueFull { capacity: 3, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("slow"));
    assert!(master.send_custom("slow", "k", Bytes::new()).is_err());
    let broadcast = master.broadcast(&Command::Quit);
    assert!(broadcast.queued.is_empty());
    assert_eq!(broadcast.failed.len(), 1);
    assert_eq!(
        master.send("nobody", Command::Stop),
        Err(SendError::UnknownWorker("nobody".into()))
    );

    // The commands were written; acknowledging them makes room.
    for expected in 1..=3 {
        assert_eq!(worker.next_command().await.seq, expected);
    }
    worker
        .send(worker_message::Kind::Ack(proto::Ack { command_seq: 3 }))
        .await;
    eventually("the outbox empties", || {
        master
            .worker("slow")
            .is_some_and(|info| info.queued_messages == 0)
    })
    .await;
    assert_eq!(master.send("slow", Command::Stop), Ok(4));
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_above_the_size_limit_are_refused_and_cost_only_their_sender() {
    const LIMIT: usize = 64 * 1024;
    let (master, mut master_events) = start_master(MasterConfig {
        max_message_bytes: LIMIT,
        ..master_config()
    })
    .await;
    let address = master.local_addr();
    let (worker, _worker_events) = start_worker(WorkerConfig {
        max_message_bytes: LIMIT,
        ..worker_config(address)
    });
    let id = connected_worker(&mut master_events).await;

    let big = Bytes::from(vec![7_u8; LIMIT + 1]);
    assert!(matches!(
        worker.send_delta(big.clone()),
        Err(WorkerSendError::TooLarge { .. })
    ));
    assert!(matches!(
        worker.send_custom("k", big.clone()),
        Err(WorkerSendError::TooLarge { .. })
    ));
    let spawn = Spawn {
        settings: big.clone(),
        ..Spawn::default()
    };
    assert!(matches!(
        master.send(&id, Command::Spawn(spawn)),
        Err(SendError::TooLarge { .. })
    ));
    assert!(matches!(
        master.send_custom(&id, "k", big.clone()),
        Err(SendError::TooLarge { .. })
    ));
    // A long log line is cut, not refused.
    worker.log(cicada_cluster::LogLevel::Info, "x".repeat(LIMIT * 2));
    let log = expect_event(&mut master_events, "the cut log line", |event| {
        matches!(event, MasterEvent::Log { .. })
    })
    .await;
    assert!(matches!(log, MasterEvent::Log { ref text, .. } if text.len() < LIMIT));

    // A peer that sends one anyway loses its own session, nobody else's.
    let (mut raw, answer) = RawWorker::attach(address, raw_attach_message("oversized", 1)).await;
    accepted(&answer);
    connected_worker(&mut master_events).await;
    raw.send(worker_message::Kind::StatsDelta(proto::StatsDelta {
        seq: 1,
        payload: big,
        covers_from: 1,
    }))
    .await;
    let ended = tokio::time::timeout(PATIENCE, async {
        while let Ok(Some(_)) = raw.inbound.message().await {}
    })
    .await;
    assert!(ended.is_ok(), "the oversized sender's session ended");
    worker.send_delta(Bytes::from_static(b"fine")).unwrap();
    let delta = expect_event(&mut master_events, "the other worker's delta", |event| {
        matches!(event, MasterEvent::StatsDelta { .. })
    })
    .await;
    assert!(matches!(delta, MasterEvent::StatsDelta { ref worker, .. } if worker.as_str() == id));
    assert_eq!(worker.counters().reconnects, 0);
    assert!(worker.shutdown(Duration::from_secs(5)).await.flushed);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_bounded() {
    // One worker allowed: 2 × 1 + 64 = 66 connections.
    let (master, mut master_events) = start_master(MasterConfig {
        max_workers: 1,
        ..master_config()
    })
    .await;
    let address = master.local_addr();
    let (worker, _worker_events) = start_worker(worker_config(address));
    connected_worker(&mut master_events).await;
    let mut idle = Vec::new();
    for _ in 0..80 {
        if let Ok(stream) = TcpStream::connect(address).await {
            idle.push(stream);
        }
    }
    eventually("connections beyond the bound are closed", || {
        master.counters().connections_refused >= 14
    })
    .await;
    drop(idle);
    worker.send_delta(Bytes::from_static(b"alive")).unwrap();
    expect_event(&mut master_events, "the worker's delta", |event| {
        matches!(event, MasterEvent::StatsDelta { .. })
    })
    .await;
    assert_eq!(worker.counters().reconnects, 0);
    assert!(worker.shutdown(Duration::from_secs(5)).await.flushed);
    master.shutdown().await;
}

/// Starts a worker with a 3-delta buffer behind a proxy, delivers delta 1, cuts the route, queues deltas
/// 2..=7, restores the route, and answers every delta event the master then gets, up to seq 7.
async fn overflow_during_a_cut(
    merge: Option<DeltaMerge>,
) -> (
    Vec<(u64, u64, u64, String)>,
    cicada_cluster::WorkerCounters,
    cicada_cluster::WorkerInfo,
) {
    let (master, mut master_events) = start_master(master_config()).await;
    let proxy = Proxy::start(master.local_addr()).await;
    let (worker, _worker_events) = start_worker(WorkerConfig {
        delta_buffer: 3,
        delta_merge: merge,
        ..worker_config(proxy.address)
    });
    let id = connected_worker(&mut master_events).await;
    worker.send_delta(Bytes::from_static(b"d1")).unwrap();
    expect_event(&mut master_events, "delta 1", |event| {
        matches!(event, MasterEvent::StatsDelta { seq: 1, .. })
    })
    .await;
    eventually("delta 1 is acknowledged", || {
        worker.counters().unacknowledged == 0
    })
    .await;

    proxy.set(ProxyMode::Refuse);
    eventually("the worker notices the cut", || {
        !worker.counters().connected
    })
    .await;
    for n in 2..=7 {
        worker.send_delta(Bytes::from(format!("d{n}"))).unwrap();
    }
    assert_eq!(worker.counters().unacknowledged, 3, "the buffer is bounded");
    proxy.set(ProxyMode::Forward);

    let mut deltas = Vec::new();
    loop {
        let event = expect_event(&mut master_events, "the buffered deltas", |event| {
            matches!(event, MasterEvent::StatsDelta { .. })
        })
        .await;
        let MasterEvent::StatsDelta {
            seq,
            covers_from,
            lost_before,
            payload,
            ..
        } = event
        else {
            unreachable!()
        };
        deltas.push((
            seq,
            covers_from,
            lost_before,
            String::from_utf8(payload.to_vec()).unwrap(),
        ));
        if seq == 7 {
            break;
        }
    }
    // The worker's drop count reaches the master with its heartbeats.
    let dropped = worker.counters().deltas_dropped;
    eventually("the master learns the drop count", || {
        master
            .worker(&id)
            .is_some_and(|info| info.deltas_dropped_by_worker == dropped)
    })
    .await;
    let counters = worker.counters();
    let info = master.worker(&id).unwrap();
    assert!(worker.shutdown(Duration::from_secs(5)).await.flushed);
    master.shutdown().await;
    (deltas, counters, info)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_delta_buffer_drops_the_oldest_and_the_master_sees_the_hole() {
    let (deltas, counters, info) = overflow_during_a_cut(None).await;
    assert_eq!(
        deltas,
        vec![
            (5, 5, 3, "d5".to_string()),
            (6, 6, 0, "d6".to_string()),
            (7, 7, 0, "d7".to_string())
        ]
    );
    assert_eq!(counters.deltas_dropped, 3);
    assert_eq!(info.deltas_lost, 3);
    assert_eq!(info.deltas_dropped_by_worker, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_delta_buffer_merges_with_the_embedding_codes_function() {
    let concatenate: DeltaMerge = Arc::new(|older: &Bytes, newer: &Bytes| {
        let mut merged = older.to_vec();
        merged.extend_from_slice(newer);
        Some(Bytes::from(merged))
    });
    let (deltas, counters, info) = overflow_during_a_cut(Some(concatenate)).await;
    assert_eq!(
        deltas,
        vec![
            (5, 2, 0, "d2d3d4d5".to_string()),
            (6, 6, 0, "d6".to_string()),
            (7, 7, 0, "d7".to_string())
        ]
    );
    assert_eq!((counters.deltas_merged, counters.deltas_dropped), (3, 0));
    assert_eq!(info.deltas_lost, 0);
}
