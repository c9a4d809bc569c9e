//! The distributor's protocol over a real cluster connection (a master and a worker of `cicada-cluster` on
//! loopback, in this process): order, pushes from either side served to a waiting worker, a request sent again
//! answered once, a waiting take ended by its user's stop, an exhausted source stopping its users; and a single
//! process taking its own items.

use std::time::Duration;

use super::*;
use crate::user::{Flow, TaskErrorKind};

fn is_stop_user(error: TaskError) -> bool {
    matches!(error.into_kind(), TaskErrorKind::Flow(Flow::StopUser))
}

struct Pair {
    master_data: TestData,
    worker_data: TestData,
    _master: cicada_cluster::MasterHandle,
    _worker: cicada_cluster::WorkerHandle,
}

/// A master and a worker, each with its test data, the cluster events routed as the run routes them.
async fn pair(sources: impl Fn() -> Definitions) -> Pair {
    let (master, mut master_events) =
        cicada_cluster::MasterServer::start(cicada_cluster::MasterConfig {
            bind_port: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    let (worker, mut worker_events) =
        cicada_cluster::WorkerClient::start(cicada_cluster::WorkerConfig {
            master_port: master.local_addr().port(),
            dedicated_thread: false,
            ..Default::default()
        })
        .unwrap();
    let master_messages = Messages::new(crate::messages::Registry::default(), RunnerMode::Master);
    master_messages.connect_master(master.clone());
    let master_data = TestData::new(sources(), RunnerMode::Master, master_messages);
    master_data.start();
    let worker_messages = Messages::new(crate::messages::Registry::default(), RunnerMode::Worker);
    worker_messages.connect_worker(worker.clone());
    let worker_data = TestData::new(sources(), RunnerMode::Worker, worker_messages);
    let data = master_data.clone();
    tokio::spawn(async move {
        while let Some(event) = master_events.recv().await {
            match event {
                cicada_cluster::MasterEvent::Custom {
                    worker, payload, ..
                } => data.on_message(MessageSource::Worker(worker.as_str().into()), &payload),
                cicada_cluster::MasterEvent::WorkerGone { worker, .. } => {
                    data.worker_gone(worker.as_str())
                }
                _ => {}
            }
        }
    });
    let data = worker_data.clone();
    tokio::spawn(async move {
        while let Some(event) = worker_events.recv().await {
            if let cicada_cluster::WorkerEvent::Custom { payload, .. } = event {
                data.on_message(MessageSource::Master, &payload);
            }
        }
    });
    Pair {
        master_data,
        worker_data,
        _master: master,
        _worker: worker,
    }
}

async fn take(data: &TestData, name: &str, control: &UserControl) -> Result<u64, TaskError> {
    tokio::time::timeout(
        Duration::from_secs(20),
        data.next_item::<u64>(name, control),
    )
    .await
    .expect("a take answers within 20 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_takes_in_order_waits_for_pushes_and_stops_waiting_when_stopped() {
    let pair = pair(|| {
        let mut sources = Definitions::default();
        sources.add(
            "jobs",
            DataSource::iter(1..=3u64)
                .batch_size(2)
                .when_exhausted(WhenExhausted::Wait),
        );
        sources
    })
    .await;
    let control = UserControl::new();
    for expected in 1..=3 {
        assert_eq!(
            take(&pair.worker_data, "jobs", &control).await.unwrap(),
            expected
        );
    }
    // Nothing left: the take waits; an item pushed by the worker (through the master) ends the wait.
    let waiting = {
        let data = pair.worker_data.clone();
        let control = control.clone();
        tokio::spawn(async move { take(&data, "jobs", &control).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    pair.worker_data.push("jobs", &4u64).unwrap();
    assert_eq!(waiting.await.unwrap(), 4);
    // An item pushed on the master goes to the waiting worker too.
    let waiting = {
        let data = pair.worker_data.clone();
        let control = control.clone();
        tokio::spawn(async move { take(&data, "jobs", &control).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    pair.master_data.push("jobs", &5u64).unwrap();
    assert_eq!(waiting.await.unwrap(), 5);
    assert_eq!(pair.master_data.handed_out("jobs"), Some(5));
    // A user stopped while it waits stops waiting, whatever the stop timeout.
    let waiting = {
        let data = pair.worker_data.clone();
        let control = control.clone();
        tokio::spawn(async move { take(&data, "jobs", &control).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    control.request(StopLevel::Stopping);
    assert!(is_stop_user(waiting.await.unwrap().unwrap_err()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_again_is_answered_once_and_an_exhausted_source_stops_users() {
    let pair = pair(|| {
        let mut sources = Definitions::default();
        sources.add("ids", DataSource::iter(1..=10u64).batch_size(4));
        sources
    })
    .await;
    let control = UserControl::new();
    assert_eq!(take(&pair.worker_data, "ids", &control).await.unwrap(), 1);
    // The first request was answered with 4 items; a copy of it (a lost reply's retry) hands out nothing more.
    let before = pair.master_data.handed_out("ids").unwrap();
    let again = DataMessage::Request {
        source: "ids".into(),
        seq: 1,
    };
    pair.worker_data
        .send(&MessageSource::Master, &again)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pair.master_data.handed_out("ids").unwrap(), before);
    for expected in 2..=10 {
        assert_eq!(
            take(&pair.worker_data, "ids", &control).await.unwrap(),
            expected
        );
    }
    assert!(is_stop_user(
        take(&pair.worker_data, "ids", &control).await.unwrap_err()
    ));
    assert_eq!(pair.master_data.handed_out("ids"), Some(10));
    // A source the master does not know is a user error, not a hang.
    let unknown = take(&pair.worker_data, "nope", &control).await.unwrap_err();
    assert!(
        unknown.to_string().contains("no test data source"),
        "{unknown}"
    );
}

#[tokio::test]
async fn a_single_process_takes_its_own_items_and_decodes_csv_rows() {
    use std::io::Write;
    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Row {
        name: String,
        age: u32,
    }
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"name,age\nalice,30\nbob,x\n").unwrap();
    let mut sources = Definitions::default();
    sources.add("rows", DataSource::csv(file.path()));
    let messages = Messages::new(crate::messages::Registry::default(), RunnerMode::Local);
    let data = TestData::new(sources, RunnerMode::Local, messages);
    let control = UserControl::new();
    let row: Row = data.next_item("rows", &control).await.unwrap();
    assert_eq!(
        row,
        Row {
            name: "alice".into(),
            age: 30
        }
    );
    let error = data
        .next_item::<Row>("rows", &control)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("line 3") && error.contains("Row"), "{error}");
    let stop = data.next_item::<Row>("rows", &control).await.unwrap_err();
    assert!(is_stop_user(stop));
    assert_eq!(data.handed_out("rows"), Some(2));
}
