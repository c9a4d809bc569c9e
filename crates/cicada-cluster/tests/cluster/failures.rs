//! What the cluster does when things go wrong: a worker falls silent (missing after 3 s, back when heard
//! again or when it reconnects), the network stalls (deltas and commands delivered once, in order, after the
//! reconnect), the master's answers are lost (no duplicates), the master goes away (master lost after the
//! timeout).

use std::time::{Duration, Instant};

use bytes::Bytes;
use cicada_cluster::{Command, GoneReason, MasterConfig, MasterEvent, Presence, WorkerEvent};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_is_missing_after_three_seconds_and_back_when_heard_or_reconnected() {
    // Locust's timings: heartbeats every second, missing after 3 s.
    let (master, mut master_events) = start_master(master_config()).await;
    let address = master.local_addr();
    let (worker, answer) = RawWorker::attach(address, raw_attach_message("w-paused", 7)).await;
    accepted(&answer);
    connected_worker(&mut master_events).await;
    worker.heartbeat(1).await;
    expect_event(&mut master_events, "the heartbeat", |event| {
        matches!(event, MasterEvent::Heartbeat { .. })
    })
    .await;

    // The worker falls silent (its stream stays open, like a process under SIGSTOP).
    let silent_since = Instant::now();
    expect_event(&mut master_events, "missing", |event| {
        matches!(event, MasterEvent::WorkerMissing { worker } if worker.as_str() == "w-paused")
    })
    .await;
    assert!(
        silent_since.elapsed() >= Duration::from_millis(2900),
        "missing after {:?} of silence",
        silent_since.elapsed()
    );
    assert_eq!(
        master.worker("w-paused").unwrap().presence,
        Presence::Missing
    );
    // A command to a missing worker waits for it.
    let seq = master.send("w-paused", Command::Stop).unwrap();

    // It wakes up on the same stream (SIGCONT).
    worker.heartbeat(2).await;
    expect_event(&mut master_events, "back", |event| {
        matches!(event, MasterEvent::WorkerBack { worker } if worker.as_str() == "w-paused")
    })
    .await;
    assert_eq!(
        master.worker("w-paused").unwrap().presence,
        Presence::Connected
    );

    // Its stream breaks; silence makes it missing again; it reconnects as the same process.
    drop(worker);
    expect_event(&mut master_events, "missing again", |event| {
        matches!(event, MasterEvent::WorkerMissing { .. })
    })
    .await;
    let (mut worker, answer) = RawWorker::attach(address, raw_attach_message("w-paused", 7)).await;
    accepted(&answer);
    expect_event(&mut master_events, "back after reconnecting", |event| {
        matches!(event, MasterEvent::WorkerBack { .. })
    })
    .await;
    // The command it did not acknowledge is written again, under its number.
    let command = worker.next_command().await;
    assert_eq!(command.seq, seq);
    let info = master.worker("w-paused").unwrap();
    assert_eq!(info.reconnects, 1);
    assert_eq!(info.presence, Presence::Connected);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_stall_loses_no_delta_and_no_command() {
    let (master, mut master_events) = start_master(master_config()).await;
    let proxy = Proxy::start(master.local_addr()).await;
    let (worker, mut worker_events) = start_worker(cicada_cluster::WorkerConfig {
        connect_timeout: Duration::from_secs(2),
        ..worker_config(proxy.address)
    });
    let id = connected_worker(&mut master_events).await;

    let mut sent = Vec::new();
    for n in 1..=3 {
        let payload = format!("delta-{n}");
        worker.send_delta(Bytes::from(payload.clone())).unwrap();
        sent.push(payload);
    }
    let mut received = Vec::new();
    while received.len() < 3 {
        if let MasterEvent::StatsDelta {
            payload,
            lost_before,
            ..
        } = expect_event(&mut master_events, "a delta", |event| {
            matches!(event, MasterEvent::StatsDelta { .. })
        })
        .await
        {
            assert_eq!(lost_before, 0);
            received.push(String::from_utf8(payload.to_vec()).unwrap());
        }
    }

    // The route stalls: nothing gets through, no connection closes.
    proxy.set(ProxyMode::Stall);
    for n in 4..=9 {
        let payload = format!("delta-{n}");
        worker.send_delta(Bytes::from(payload.clone())).unwrap();
        sent.push(payload);
    }
    expect_event(&mut master_events, "missing", |event| {
        matches!(event, MasterEvent::WorkerMissing { .. })
    })
    .await;
    let stop = master.send(&id, Command::Stop).unwrap();
    expect_event(&mut worker_events, "the worker noticing", |event| {
        matches!(event, WorkerEvent::Disconnected { .. })
    })
    .await;

    // The route is back; the stale connections are gone.
    proxy.close_all();
    proxy.set(ProxyMode::Forward);
    let mut back = false;
    while received.len() < sent.len() || !back {
        match expect_event(&mut master_events, "the rest", |_| true).await {
            MasterEvent::StatsDelta {
                payload,
                lost_before,
                ..
            } => {
                assert_eq!(lost_before, 0);
                received.push(String::from_utf8(payload.to_vec()).unwrap());
            }
            MasterEvent::WorkerBack { .. } => back = true,
            MasterEvent::WorkerGone { .. } | MasterEvent::WorkerConnected(_) => {
                panic!("the worker must come back as itself")
            }
            _ => {}
        }
    }
    assert_eq!(received, sent, "every delta once, in order");
    let connected = expect_event(&mut worker_events, "connected again", |event| {
        matches!(event, WorkerEvent::Connected { .. })
    })
    .await;
    assert!(matches!(
        connected,
        WorkerEvent::Connected { resumed: true, .. }
    ));
    let command = expect_event(
        &mut worker_events,
        "the stop sent during the stall",
        |event| matches!(event, WorkerEvent::Command { .. }),
    )
    .await;
    assert_eq!(
        command,
        WorkerEvent::Command {
            seq: stop,
            command: Command::Stop
        }
    );
    // A new delta after the reconnect is the next one: nothing was delivered twice in between.
    worker.send_delta(Bytes::from_static(b"after")).unwrap();
    let after = expect_event(&mut master_events, "the delta after", |event| {
        matches!(event, MasterEvent::StatsDelta { .. })
    })
    .await;
    assert!(
        matches!(after, MasterEvent::StatsDelta { seq: 10, .. }),
        "{after:?}"
    );
    let info = master.worker(&id).unwrap();
    assert_eq!((info.deltas_received, info.deltas_lost), (10, 0));
    assert!(worker.shutdown(Duration::from_secs(5)).await.flushed);
    // Anything else the worker got was not a second copy of the stop.
    while let Ok(event) = worker_events.try_recv() {
        assert!(!matches!(event, WorkerEvent::Command { .. }), "{event:?}");
    }
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_the_master_holds_are_not_sent_twice_when_its_answers_are_lost() {
    let (master, mut master_events) = start_master(master_config()).await;
    let proxy = Proxy::start(master.local_addr()).await;
    let (worker, mut worker_events) = start_worker(cicada_cluster::WorkerConfig {
        connect_timeout: Duration::from_secs(2),
        ..worker_config(proxy.address)
    });
    let id = connected_worker(&mut master_events).await;
    expect_event(&mut worker_events, "the session", |event| {
        matches!(event, WorkerEvent::Connected { .. })
    })
    .await;

    // The master hears the worker, the worker never hears the master's acknowledgements.
    proxy.set(ProxyMode::MasterMuted);
    for n in 1..=3 {
        worker
            .send_delta(Bytes::from(format!("delta-{n}")))
            .unwrap();
    }
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        if let MasterEvent::StatsDelta { seq, .. } =
            expect_event(&mut master_events, "a delta", |event| {
                matches!(event, MasterEvent::StatsDelta { .. })
            })
            .await
        {
            seqs.push(seq);
        }
    }
    expect_event(
        &mut worker_events,
        "the worker giving up the session",
        |event| matches!(event, WorkerEvent::Disconnected { .. }),
    )
    .await;
    assert!(worker.counters().unacknowledged >= 1, "never acknowledged");

    proxy.close_all();
    proxy.set(ProxyMode::Forward);
    eventually("the worker's buffer empties", || {
        worker.counters().connected && worker.counters().unacknowledged == 0
    })
    .await;
    worker.send_delta(Bytes::from_static(b"delta-4")).unwrap();
    loop {
        let event = expect_event(&mut master_events, "delta 4", |event| {
            matches!(event, MasterEvent::StatsDelta { .. })
        })
        .await;
        let MasterEvent::StatsDelta { seq, .. } = event else {
            unreachable!()
        };
        seqs.push(seq);
        if seq == 4 {
            break;
        }
    }
    assert_eq!(seqs, vec![1, 2, 3, 4], "each delta once");
    let info = master.worker(&id).unwrap();
    assert_eq!(info.deltas_received, 4);
    assert!(worker.shutdown(Duration::from_secs(5)).await.flushed);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_its_master_reports_master_lost_after_the_timeout() {
    let (master, mut master_events) = start_master(master_config()).await;
    let (worker, mut worker_events) = start_worker(cicada_cluster::WorkerConfig {
        master_lost_after: Duration::from_secs(2),
        ..worker_config(master.local_addr())
    });
    connected_worker(&mut master_events).await;
    expect_event(&mut worker_events, "connected", |event| {
        matches!(event, WorkerEvent::Connected { .. })
    })
    .await;
    worker.send_delta(Bytes::from_static(b"kept")).unwrap();

    master.shutdown().await;
    let lost_since = Instant::now();
    expect_event(&mut worker_events, "disconnected", |event| {
        matches!(event, WorkerEvent::Disconnected { .. })
    })
    .await;
    let lost = expect_event(&mut worker_events, "master lost", |event| {
        matches!(event, WorkerEvent::MasterLost { .. })
    })
    .await;
    let WorkerEvent::MasterLost { without_master_for } = lost else {
        unreachable!()
    };
    assert!(
        without_master_for >= Duration::from_secs(2),
        "{without_master_for:?}"
    );
    assert!(lost_since.elapsed() >= Duration::from_millis(1900));
    // Final: the channel closes and nothing more is accepted.
    let closed = tokio::time::timeout(PATIENCE, worker_events.recv()).await;
    assert!(matches!(closed, Ok(None)), "{closed:?}");
    assert!(worker.send_delta(Bytes::new()).is_err());
    let report = worker.shutdown(Duration::from_secs(1)).await;
    assert!(!report.flushed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_missing_too_long_is_forgotten() {
    let (master, mut master_events) = start_master(MasterConfig {
        heartbeat_interval: Duration::from_millis(200),
        missing_after: Duration::from_millis(600),
        forget_missing_after: Duration::from_secs(1),
        ..master_config()
    })
    .await;
    let (worker, answer) =
        RawWorker::attach(master.local_addr(), raw_attach_message("w-gone", 1)).await;
    accepted(&answer);
    connected_worker(&mut master_events).await;
    expect_event(&mut master_events, "missing", |event| {
        matches!(event, MasterEvent::WorkerMissing { .. })
    })
    .await;
    expect_event(&mut master_events, "gone", |event| {
        matches!(
            event,
            MasterEvent::WorkerGone {
                reason: GoneReason::Lost,
                ..
            }
        )
    })
    .await;
    assert!(master.worker("w-gone").is_none());
    assert!(master.send("w-gone", Command::Stop).is_err());
    // Its session was ended with it.
    let mut worker = worker;
    let ended = tokio::time::timeout(PATIENCE, async {
        while let Ok(Some(_)) = worker.inbound.message().await {}
    })
    .await;
    assert!(ended.is_ok());
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_event_reader_is_not_taken_for_silent_workers() {
    // A tiny event channel nobody reads for longer than `missing_after`.
    let (master, mut master_events) = start_master(MasterConfig {
        heartbeat_interval: Duration::from_millis(200),
        missing_after: Duration::from_secs(1),
        event_queue: 16,
        ..master_config()
    })
    .await;
    let (worker, _worker_events) = start_worker(cicada_cluster::WorkerConfig {
        heartbeat_interval: Duration::from_millis(200),
        ..worker_config(master.local_addr())
    });
    connected_worker(&mut master_events).await;
    for n in 0..40 {
        worker.send_delta(Bytes::from(format!("d{n}"))).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut deltas = 0;
    while deltas < 40 {
        match expect_event(&mut master_events, "the deltas", |_| true).await {
            MasterEvent::WorkerMissing { .. } => {
                panic!("the master's slowness was taken for the worker's")
            }
            MasterEvent::StatsDelta { .. } => deltas += 1,
            _ => {}
        }
    }
    assert!(worker.shutdown(Duration::from_secs(5)).await.flushed);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_adopts_running_workers_and_gets_their_buffered_deltas() {
    let (first, mut first_events) = start_master(master_config()).await;
    let port = first.local_addr().port();
    let (worker, mut worker_events) = start_worker(worker_config(first.local_addr()));
    worker.set_status(cicada_cluster::WorkerStatus {
        user_count: 25,
        run_state: Bytes::from_static(b"share of 25"),
        ..cicada_cluster::WorkerStatus::default()
    });
    connected_worker(&mut first_events).await;
    expect_event(&mut worker_events, "the first session", |event| {
        matches!(event, WorkerEvent::Connected { .. })
    })
    .await;

    first.shutdown().await;
    expect_event(&mut worker_events, "the master gone", |event| {
        matches!(event, WorkerEvent::Disconnected { .. })
    })
    .await;
    worker
        .send_delta(Bytes::from_static(b"while away"))
        .unwrap();

    let (second, mut second_events) = start_master(MasterConfig {
        bind_port: port,
        ..master_config()
    })
    .await;
    let connected = expect_event(&mut worker_events, "the new master", |event| {
        matches!(event, WorkerEvent::Connected { .. })
    })
    .await;
    let WorkerEvent::Connected {
        master_id, resumed, ..
    } = connected
    else {
        unreachable!()
    };
    assert_eq!(master_id, second.master_id());
    assert!(!resumed, "a new master has none of the worker's state");
    // The attach itself says what the worker runs: the new master can adopt it before any heartbeat.
    let MasterEvent::WorkerConnected(info) = expect_event(
        &mut second_events,
        "the worker on the new master",
        |event| matches!(event, MasterEvent::WorkerConnected(_)),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!(info.status.user_count, 25);
    assert_eq!(&info.status.run_state[..], b"share of 25");
    let id = info.id.as_str().to_string();
    let delta = expect_event(&mut second_events, "the buffered delta", |event| {
        matches!(event, MasterEvent::StatsDelta { .. })
    })
    .await;
    assert!(
        matches!(delta, MasterEvent::StatsDelta { ref payload, lost_before: 0, .. } if &payload[..] == b"while away")
    );
    // What the worker runs is known to the new master from its heartbeats.
    eventually("the new master knows the worker's users", || {
        second
            .worker(&id)
            .is_some_and(|info| info.status.user_count == 25)
    })
    .await;
    assert!(worker.shutdown(Duration::from_secs(5)).await.flushed);
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_slow_to_read_its_commands_keeps_its_session() {
    let (master, mut master_events) = start_master(MasterConfig {
        heartbeat_interval: Duration::from_millis(200),
        missing_after: Duration::from_secs(1),
        ..master_config()
    })
    .await;
    let (worker, mut worker_events) = start_worker(cicada_cluster::WorkerConfig {
        heartbeat_interval: Duration::from_millis(200),
        master_silence_timeout: Duration::from_secs(1),
        event_queue: 1,
        ..worker_config(master.local_addr())
    });
    let id = connected_worker(&mut master_events).await;
    for _ in 0..5 {
        master.send(&id, Command::Stop).unwrap();
    }
    // Nobody reads the worker's events for a while: its reader waits, its writer goes on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.send_delta(Bytes::from_static(b"meanwhile")).unwrap();
    expect_event(&mut master_events, "the delta sent meanwhile", |event| {
        assert!(
            !matches!(event, MasterEvent::WorkerMissing { .. }),
            "a worker slow to read was taken for a silent one"
        );
        matches!(event, MasterEvent::StatsDelta { .. })
    })
    .await;
    let mut seqs = Vec::new();
    while seqs.len() < 5 {
        if let WorkerEvent::Command { seq, .. } =
            expect_event(&mut worker_events, "the commands", |event| {
                matches!(event, WorkerEvent::Command { .. })
            })
            .await
        {
            seqs.push(seq);
        }
    }
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(worker.counters().reconnects, 0, "the session held");
    assert!(worker.shutdown(Duration::from_secs(5)).await.flushed);
    master.shutdown().await;
}
