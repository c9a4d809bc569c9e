//! Test data against a server of the test's own that counts every path it is asked for: in one process, every item
//! of a source requested exactly once, a cycling source started over, a waiting source served by pushes, a
//! malformed file refused before any load; across a master and two worker processes of the `test_data` example,
//! each product requested exactly once, and a worker killed mid-run taking only its own prefetched items with it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cicada::prelude::*;

use crate::common::{free_port, run_test, server_runtime};
use crate::messages::Cluster;

/// Distinct paths a [`PathCounter`] keeps apart; more are counted under `(other)`.
const MAX_PATHS: usize = 100_000;

/// An HTTP server on 127.0.0.1 that answers `ok` to everything and counts requests per path (without the query),
/// on a runtime thread of its own.
pub(crate) struct PathCounter {
    runtime: Option<tokio::runtime::Runtime>,
    url: String,
    counts: Arc<Mutex<HashMap<String, u64>>>,
}

impl PathCounter {
    pub(crate) fn start() -> PathCounter {
        let (runtime, listener) = server_runtime();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let counted = counts.clone();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let mut counts = counted.lock().unwrap();
                            let path = request.uri().path();
                            let key = if counts.len() < MAX_PATHS || counts.contains_key(path) {
                                path.to_string()
                            } else {
                                "(other)".to_string()
                            };
                            *counts.entry(key).or_default() += 1;
                            async {
                                Ok::<_, Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        PathCounter {
            runtime: Some(runtime),
            url,
            counts,
        }
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Requests per path whose path starts with `prefix`.
    pub(crate) fn under(&self, prefix: &str) -> HashMap<String, u64> {
        self.counts
            .lock()
            .unwrap()
            .iter()
            .filter(|(path, _)| path.starts_with(prefix))
            .map(|(path, count)| (path.clone(), *count))
            .collect()
    }

    /// Requests on paths starting with `prefix`, in all.
    pub(crate) fn total_under(&self, prefix: &str) -> u64 {
        self.under(prefix).values().sum()
    }

    /// Requests in all.
    pub(crate) fn total(&self) -> u64 {
        self.counts.lock().unwrap().values().sum()
    }

    /// Wait until `done` holds, at most `limit` (then panic naming `what`).
    pub(crate) fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&PathCounter) -> bool,
    ) {
        let started = Instant::now();
        while !done(self) {
            assert!(
                started.elapsed() < limit,
                "{what} did not happen within {limit:?}; the target saw {:?}",
                self.counts.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PathCounter {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Every path `{prefix}{n}` for n in `ids` was requested exactly once, and no other path under `prefix`.
pub(crate) fn assert_each_once(
    target: &PathCounter,
    prefix: &str,
    ids: std::ops::RangeInclusive<u64>,
) {
    let counts = target.under(prefix);
    let mut wrong: Vec<(String, u64)> = counts
        .iter()
        .filter(|(_, count)| **count != 1)
        .map(|(path, count)| (path.clone(), *count))
        .collect();
    wrong.sort();
    assert!(wrong.is_empty(), "requested more than once: {wrong:?}");
    let missing: Vec<u64> = ids
        .clone()
        .filter(|id| !counts.contains_key(&format!("{prefix}{id}")))
        .collect();
    assert!(missing.is_empty(), "never requested: {missing:?}");
    assert_eq!(
        counts.len() as u64,
        ids.end() - ids.start() + 1,
        "{counts:?}"
    );
}

/// Quit the run once `done` holds (checked every 50 ms from a thread of its own), so that the run ends on an
/// outcome rather than on a clock.
fn quit_when(
    test: Cicada,
    done: impl Fn(&cicada::data::TestData) -> bool + Send + Sync + 'static,
) -> Cicada {
    let done = Arc::new(done);
    test.on_test_start(move |env| {
        let runner = env.runner().clone();
        let data = env.data().clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(45) {
                if done(&data) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            runner.quit();
        });
    })
}

async fn view_id(user: &mut User) -> TaskResult {
    let id: u64 = user.next_item("ids").await?;
    user.get(&format!("/items/{id}"))
        .name("/items/[id]")
        .send()
        .await?;
    Ok(())
}

#[test]
fn each_item_of_a_source_is_requested_exactly_once_in_one_process() {
    const ITEMS: u64 = 300;
    let target = PathCounter::start();
    let test = Cicada::new()
        .data_source("ids", DataSource::iter(1..=ITEMS).batch_size(8))
        .user(UserType::<()>::new("Viewer").task(view_id));
    // Done when every item was handed out; the stop timeout lets the last requests finish.
    let test = quit_when(test, move |data| data.handed_out("ids") == Some(ITEMS));
    let run = run_test(
        test,
        &[
            "-H",
            target.url(),
            "-u",
            "5",
            "-r",
            "100",
            "-t",
            "50s",
            "-s",
            "10s",
        ],
    );
    assert_eq!(run.exit_code, 0);
    assert_each_once(&target, "/items/", 1..=ITEMS);
    assert_eq!(run.requests("GET", "/items/[id]"), ITEMS);
    assert_eq!(run.failures("GET", "/items/[id]"), 0);
    assert!(run.user_errors().is_empty(), "{:?}", run.user_errors());
}

#[test]
fn a_cycling_source_starts_over_in_order() {
    let target = PathCounter::start();
    static TAKEN: AtomicU64 = AtomicU64::new(0);
    async fn take(user: &mut User) -> TaskResult {
        let id: u64 = user.next_item("ids").await?;
        user.get(&format!("/cycle/{id}")).send().await?;
        if TAKEN.fetch_add(1, Ordering::SeqCst) + 1 == 25 {
            return stop_test();
        }
        Ok(())
    }
    let test = Cicada::new()
        .data_source(
            "ids",
            DataSource::iter(vec![1u64, 2, 3, 4, 5, 6, 7, 8, 9, 10])
                .batch_size(4)
                .when_exhausted(WhenExhausted::Cycle),
        )
        .user(UserType::<()>::new("Cycler").task(take));
    let run = run_test(test, &["-H", target.url(), "-u", "1", "-t", "50s"]);
    assert_eq!(run.exit_code, 0);
    // One user, 25 takes of 1..=10: twice round, then 1..=5 a third time.
    let counts = target.under("/cycle/");
    for id in 1..=10u64 {
        let expected = if id <= 5 { 3 } else { 2 };
        assert_eq!(
            counts.get(&format!("/cycle/{id}")),
            Some(&expected),
            "{counts:?}"
        );
    }
}

#[test]
fn a_waiting_source_serves_pushed_items_and_its_waiting_users_stop_with_the_test() {
    let target = PathCounter::start();
    async fn take_job(user: &mut User) -> TaskResult {
        let job: u64 = user.next_item("jobs").await?;
        user.get(&format!("/jobs/{job}")).send().await?;
        Ok(())
    }
    async fn push_jobs(user: &mut User) -> TaskResult {
        // The source's own 5 jobs are taken first; then 6..=10 arrive one by one while the takers wait.
        for job in 6..=10u64 {
            cicada::tokio::time::sleep(Duration::from_millis(200)).await;
            user.environment().data().push("jobs", &job)?;
        }
        stop_user()
    }
    let test = Cicada::new()
        .data_source(
            "jobs",
            DataSource::iter(1..=5u64)
                .batch_size(2)
                .when_exhausted(WhenExhausted::Wait),
        )
        .user(UserType::<()>::new("Taker").weight(3).task(take_job))
        .user(UserType::<()>::new("Pusher").fixed_count(1).task(push_jobs));
    let test = quit_when(test, |data| data.handed_out("jobs") == Some(10));
    let started = Instant::now();
    // A long stop timeout: the takers still waiting for a job must stop waiting when the test stops, not run it out.
    let run = run_test(
        test,
        &[
            "-H",
            target.url(),
            "-u",
            "4",
            "-r",
            "100",
            "-t",
            "50s",
            "-s",
            "40s",
        ],
    );
    assert_eq!(run.exit_code, 0);
    target.wait_for("the last job's request", Duration::from_secs(5), |t| {
        t.total_under("/jobs/") == 10
    });
    assert_each_once(&target, "/jobs/", 1..=10);
    assert!(
        started.elapsed() < Duration::from_secs(35),
        "the waiting takers held the stop for the stop timeout ({:?})",
        started.elapsed()
    );
    assert!(run.user_errors().is_empty(), "{:?}", run.user_errors());
}

#[test]
fn a_malformed_or_too_large_source_file_stops_the_run_before_any_load() {
    let target = PathCounter::start();
    let dir = tempfile::tempdir().unwrap();
    let malformed = dir.path().join("accounts.csv");
    std::fs::write(&malformed, "username,password\nalice,a\nbob\n").unwrap();
    let big = dir.path().join("big.jsonl");
    std::fs::write(&big, "{\"id\":1}\n".repeat(100)).unwrap();
    for source in [
        DataSource::csv(&malformed),
        DataSource::json_lines(&big).max_file_bytes(100),
        DataSource::csv(dir.path().join("missing.csv")),
    ] {
        let test = Cicada::new()
            .data_source("ids", source)
            .user(UserType::<()>::new("Viewer").task(view_id));
        let code = test.run_with_args([
            "test",
            "--headless",
            "--only-summary",
            "-H",
            target.url(),
            "-u",
            "2",
            "-t",
            "5s",
        ]);
        assert_eq!(code, 2);
    }
    assert_eq!(target.total(), 0, "no load may be sent");
}

/// The `test_data` example's buyers, as a cluster: products.jsonl has 200 products.
const PRODUCTS: u64 = 200;

#[test]
fn a_cluster_hands_each_product_to_exactly_one_user_of_one_worker() {
    let target = PathCounter::start();
    let port = free_port().to_string();
    let cluster = Cluster::start(
        "test_data",
        &port,
        target.url(),
        &[
            "-u",
            "6",
            "-r",
            "20",
            "-t",
            "120s",
            "--expect-workers",
            "2",
            "Buyer",
        ],
        &[],
    );
    let _workers = [
        cluster.worker(&["Buyer"], &[]),
        cluster.worker(&["Buyer"], &[]),
    ];
    target.wait_for("every product viewed", Duration::from_secs(90), |t| {
        t.total_under("/items/") >= PRODUCTS
    });
    let (output, report) = cluster.stop();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_each_once(&target, "/items/", 1..=PRODUCTS);
    let merged = report["stats"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "/items/[id]")
        .map(|e| e["num_requests"].as_u64().unwrap());
    assert_eq!(merged, Some(PRODUCTS), "the master's merged count");
}

#[test]
fn a_worker_killed_mid_run_takes_only_its_prefetched_items_with_it() {
    let target = PathCounter::start();
    let port = free_port().to_string();
    let cluster = Cluster::start(
        "test_data",
        &port,
        target.url(),
        &[
            "-u",
            "2",
            "-r",
            "20",
            "-t",
            "120s",
            "--expect-workers",
            "2",
            "Buyer",
        ],
        &[],
    );
    let doomed = cluster.worker(&["Buyer"], &[]);
    let _survivor = cluster.worker(&["Buyer"], &[]);
    // Both workers have taken batches and viewed some products.
    target.wait_for("the first products viewed", Duration::from_secs(60), |t| {
        t.total_under("/items/") >= 30
    });
    doomed.signal("KILL");
    // The survivor goes on until no product is left. The doomed worker held at most a batch and a half (16 + 8
    // products) plus one batch in flight.
    let lost_at_most = 16 + 8 + 16;
    target.wait_for(
        "the survivor's last products",
        Duration::from_secs(90),
        |t| t.total_under("/items/") >= PRODUCTS - lost_at_most,
    );
    let mut last = target.total_under("/items/");
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
        let now = target.total_under("/items/");
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    let (output, _report) = cluster.stop();
    assert!(output.status.code().is_some(), "the master ended by itself");
    let counts = target.under("/items/");
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "handed out twice: {twice:?}");
    assert!(
        counts.keys().all(|path| {
            path.trim_start_matches("/items/")
                .parse::<u64>()
                .is_ok_and(|id| (1..=PRODUCTS).contains(&id))
        }),
        "{counts:?}"
    );
    assert!(
        counts.len() as u64 >= PRODUCTS - lost_at_most,
        "{}",
        counts.len()
    );
}
