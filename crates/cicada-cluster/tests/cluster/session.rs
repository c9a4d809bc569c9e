//! A session's normal life: attach, heartbeats both ways, commands in order and acknowledged, deltas
//! acknowledged, stop with the last delta before `Stopped`, quit and leave; a restarted worker process
//! replacing its predecessor.

use std::time::Duration;

use bytes::Bytes;
use cicada_cluster::proto::worker_message;
use cicada_cluster::{
    Command, GoneReason, LogLevel, MasterEvent, Presence, Spawn, WorkerEvent, WorkerState,
    WorkerStatus,
};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_attaches_and_heartbeats_flow_both_ways() {
    let (master, mut master_events) = start_master(master_config()).await;
    let (worker, mut worker_events) = start_worker(worker_config(master.local_addr()));
    worker.set_status(WorkerStatus {
        state: WorkerState::Running,
        user_count: 7,
        cpu_percent: 12.5,
        memory_bytes: 1 << 20,
        guard_state: Bytes::from_static(b"calm"),
        run_state: Bytes::from_static(b"seven users"),
    });

    let id = connected_worker(&mut master_events).await;
    assert_eq!(id, worker.worker_id().as_str());
    let connected = expect_event(&mut worker_events, "connected", |event| {
        matches!(event, WorkerEvent::Connected { .. })
    })
    .await;
    let WorkerEvent::Connected {
        master_id, resumed, ..
    } = connected
    else {
        unreachable!()
    };
    assert_eq!(master_id, master.master_id());
    assert!(!resumed, "a first session is not resumed");

    let heartbeat = expect_event(
        &mut master_events,
        "a heartbeat with the status",
        |event| matches!(event, MasterEvent::Heartbeat { status, .. } if status.user_count == 7),
    )
    .await;
    let MasterEvent::Heartbeat {
        worker: from,
        status,
    } = heartbeat
    else {
        unreachable!()
    };
    assert_eq!(from.as_str(), id);
    assert_eq!(status.state, WorkerState::Running);
    assert_eq!(&status.guard_state[..], b"calm");
    assert_eq!(&status.run_state[..], b"seven users");

    let info = master.worker(&id).expect("registered");
    assert_eq!(info.presence, Presence::Connected);
    assert_eq!(info.pid, std::process::id());
    assert!(info.heartbeats >= 1);
    assert_eq!(info.status.memory_bytes, 1 << 20);
    assert!(
        info.address
            .is_some_and(|address| address.ip().is_loopback())
    );

    // A delta is acknowledged by the master's heartbeat: the worker's buffer empties.
    worker.send_delta(Bytes::from_static(b"d1")).unwrap();
    expect_event(&mut master_events, "the delta", |event| {
        matches!(event, MasterEvent::StatsDelta { seq: 1, .. })
    })
    .await;
    eventually("the delta is acknowledged", || {
        worker.counters().unacknowledged == 0
    })
    .await;
    assert!(worker.counters().connected);

    assert!(worker.shutdown(Duration::from_secs(5)).await.flushed);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_arrive_once_in_order_and_stop_flushes_before_stopped() {
    let (master, mut master_events) = start_master(master_config()).await;
    let (worker, mut worker_events) = start_worker(worker_config(master.local_addr()));
    let id = connected_worker(&mut master_events).await;

    let spawn = Spawn {
        users_by_type: [("Visitor".to_string(), 40), ("Admin".to_string(), 2)].into(),
        spawn_rate: 8.0,
        host: Some("http://127.0.0.1:9".into()),
        settings: Bytes::from_static(b"{\"stop_timeout\":5}"),
    };
    let first = master.send(&id, Command::Spawn(spawn.clone())).unwrap();
    let second = master.send(&id, Command::Stop).unwrap();
    assert_eq!((first, second), (1, 2));
    master
        .send_custom(&id, "greeting", Bytes::from_static(b"hi"))
        .unwrap();

    let mut commands = Vec::new();
    while commands.len() < 2 {
        if let WorkerEvent::Command { seq, command } =
            expect_event(&mut worker_events, "a command", |event| {
                matches!(event, WorkerEvent::Command { .. })
            })
            .await
        {
            commands.push((seq, command));
        }
    }
    assert_eq!(
        commands,
        vec![(1, Command::Spawn(spawn)), (2, Command::Stop)]
    );
    expect_event(&mut worker_events, "the custom message", |event| {
        matches!(event, WorkerEvent::Custom { kind, payload } if kind == "greeting" && &payload[..] == b"hi")
    })
    .await;
    eventually("the commands are acknowledged", || {
        master
            .worker(&id)
            .is_some_and(|info| info.queued_messages == 0)
    })
    .await;

    // The worker's answer to Stop: its last delta, then Stopped naming it.
    worker.send_delta(Bytes::from_static(b"last")).unwrap();
    worker
        .send_custom("spawning_complete", Bytes::from_static(b"42"))
        .unwrap();
    worker.log(LogLevel::Warn, "users stopped");
    assert_eq!(worker.stopped(), 1);
    let mut delta_seen = false;
    let mut custom_seen = false;
    let mut log_seen = false;
    loop {
        match expect_event(&mut master_events, "the stop's messages", |_| true).await {
            MasterEvent::StatsDelta {
                seq: 1, payload, ..
            } => {
                assert_eq!(&payload[..], b"last");
                delta_seen = true;
            }
            MasterEvent::WorkerStopped {
                final_seq,
                deltas_lost,
                worker: from,
            } => {
                assert!(delta_seen, "Stopped came before the delta it names");
                assert_eq!((final_seq, deltas_lost, from.as_str()), (1, 0, id.as_str()));
                break;
            }
            MasterEvent::Custom { kind, payload, .. } => {
                assert_eq!(
                    (kind.as_str(), &payload[..]),
                    ("spawning_complete", &b"42"[..])
                );
                custom_seen = true;
            }
            MasterEvent::Log { level, text, .. } => {
                assert_eq!((level, text.as_str()), (LogLevel::Warn, "users stopped"));
                log_seen = true;
            }
            _ => {}
        }
    }

    master.send(&id, Command::Quit).unwrap();
    expect_event(&mut worker_events, "quit", |event| {
        matches!(
            event,
            WorkerEvent::Command {
                command: Command::Quit,
                ..
            }
        )
    })
    .await;
    let report = worker.shutdown(Duration::from_secs(5)).await;
    assert!(report.flushed, "{report:?}");
    assert_eq!(report.unacknowledged, 0);
    // Custom messages and logs travel in their own queues: by the goodbye they are through.
    let gone = expect_event(&mut master_events, "the worker leaving", |event| {
        custom_seen |= matches!(event, MasterEvent::Custom { .. });
        log_seen |= matches!(event, MasterEvent::Log { .. });
        matches!(event, MasterEvent::WorkerGone { .. })
    })
    .await;
    assert!(matches!(
        gone,
        MasterEvent::WorkerGone {
            reason: GoneReason::Left { .. },
            ..
        }
    ));
    assert!(
        custom_seen && log_seen,
        "custom {custom_seen}, log {log_seen}"
    );
    assert!(
        master.workers().is_empty(),
        "a worker that left is forgotten"
    );
    assert!(
        worker.send_delta(Bytes::new()).is_err(),
        "nothing is queued after the session ended"
    );
    // The worker's event channel closes after the shutdown.
    let closed = tokio::time::timeout(PATIENCE, async {
        while worker_events.recv().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok());
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_worker() {
    let (master, mut master_events) = start_master(master_config()).await;
    let (first, mut first_events) = start_worker(worker_config(master.local_addr()));
    let (second, mut second_events) = start_worker(worker_config(master.local_addr()));
    connected_worker(&mut master_events).await;
    connected_worker(&mut master_events).await;
    let broadcast = master.broadcast(&Command::Stop);
    assert_eq!(broadcast.queued.len(), 2);
    assert!(broadcast.failed.is_empty());
    for events in [&mut first_events, &mut second_events] {
        expect_event(events, "stop", |event| {
            matches!(
                event,
                WorkerEvent::Command {
                    command: Command::Stop,
                    ..
                }
            )
        })
        .await;
    }
    assert!(first.shutdown(Duration::from_secs(5)).await.flushed);
    assert!(second.shutdown(Duration::from_secs(5)).await.flushed);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_process_replaces_its_predecessor() {
    let (master, mut master_events) = start_master(master_config()).await;
    let address = master.local_addr();
    let (old, answer) = RawWorker::attach(address, raw_attach_message("w-restart", 1)).await;
    accepted(&answer);
    connected_worker(&mut master_events).await;
    old.send(worker_message::Kind::StatsDelta(
        cicada_cluster::proto::StatsDelta {
            seq: 1,
            payload: Bytes::from_static(b"old"),
            covers_from: 1,
        },
    ))
    .await;
    expect_event(&mut master_events, "the old delta", |event| {
        matches!(event, MasterEvent::StatsDelta { .. })
    })
    .await;

    // Same id, new incarnation: a new process whose numbers start again at 1.
    let (new, answer) = RawWorker::attach(address, raw_attach_message("w-restart", 2)).await;
    assert_eq!(
        accepted(&answer).delta_ack,
        0,
        "nothing is held for a new process"
    );
    expect_event(&mut master_events, "the old one gone", |event| {
        matches!(
            event,
            MasterEvent::WorkerGone {
                reason: GoneReason::Replaced,
                ..
            }
        )
    })
    .await;
    connected_worker(&mut master_events).await;
    new.send(worker_message::Kind::StatsDelta(
        cicada_cluster::proto::StatsDelta {
            seq: 1,
            payload: Bytes::from_static(b"new"),
            covers_from: 1,
        },
    ))
    .await;
    let delta = expect_event(&mut master_events, "the new delta", |event| {
        matches!(event, MasterEvent::StatsDelta { .. })
    })
    .await;
    assert!(
        matches!(delta, MasterEvent::StatsDelta { seq: 1, ref payload, .. } if &payload[..] == b"new")
    );
    assert_eq!(master.workers().len(), 1);
    drop(old);
    master.shutdown().await;
}
