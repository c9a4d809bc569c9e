//! Metrics for dashboards against real servers on 127.0.0.1: `/metrics` scraped over HTTP and parsed by a Prometheus
//! text parser (on the web UI's port, and on `--metrics-port` in a headless run), and an OTLP collector stand-in
//! (a hyper server decoding `ExportMetricsServiceRequest`s) receiving the exports, alive and dead.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cicada::prelude::*;
use cicada_demo::Route;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;
use serde_json::Value;

use crate::cluster::ClusterRun;
use crate::common::{DemoTarget, Process, run_example, run_test, server_runtime};
use crate::web::UiProcess;

/// The overflow entry's name (cicada_stats::OVERFLOW_NAME).
const OVERFLOW: &str = "(over the name cap)";

/// A parsed scrape: `cicada_requests_total` per (method, name), and every sample.
struct Scraped {
    requests: HashMap<(String, String), f64>,
    scrape: prometheus_parse::Scrape,
}

impl Scraped {
    fn parse(text: &str) -> Scraped {
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"));
        let mut requests = HashMap::new();
        for sample in &scrape.samples {
            if sample.metric == "cicada_requests_total" {
                let prometheus_parse::Value::Counter(value) = sample.value else {
                    panic!("cicada_requests_total is a counter: {sample:?}");
                };
                let key = (
                    sample.labels.get("method").unwrap_or("").to_string(),
                    sample.labels.get("name").unwrap().to_string(),
                );
                requests.insert(key, value);
            }
        }
        Scraped { requests, scrape }
    }

    fn total(&self) -> f64 {
        self.requests.values().sum()
    }

    fn requests(&self, name: &str) -> f64 {
        self.requests
            .iter()
            .filter(|((_, n), _)| n == name)
            .map(|(_, v)| v)
            .sum()
    }

    /// The value of a gauge with one label (or none).
    fn gauge(&self, metric: &str, label: Option<(&str, &str)>) -> f64 {
        let sample = self
            .scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("no {metric} {label:?}"));
        match sample.value {
            prometheus_parse::Value::Gauge(value) => value,
            ref other => panic!("{metric} is not a gauge: {other:?}"),
        }
    }
}

/// `GET /metrics` on `address` (`127.0.0.1:PORT`): the status and the body.
fn scrape(address: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn web_ui_metrics_equal_the_stats_and_the_servers_count() {
    let target = DemoTarget::start();
    // A stop timeout lets in-flight requests finish, so the server's count and cicada's end equal.
    let ui = UiProcess::start(&["-H", &target.url(), "-s", "5"]);
    let (status, body) = ui.call("POST", "/swarm", "user_count=5&spawn_rate=100", "");
    assert_eq!(status, 200, "{body}");
    ui.wait_for("requests on three names", |s| {
        s["stats"].as_array().is_some_and(|rows| rows.len() >= 4)
            && s["stats"]
                .as_array()
                .and_then(|rows| rows.last())
                .and_then(|total| total["num_requests"].as_u64())
                .is_some_and(|n| n >= 10)
    });
    let (status, live) = ui.call("GET", "/metrics", "", "");
    assert_eq!(status, 200, "{live}");
    let live = Scraped::parse(&live);
    assert_eq!(
        live.gauge("cicada_run_state", Some(("state", "running"))),
        1.0
    );
    assert_eq!(live.gauge("cicada_users", None), 5.0);
    assert_eq!(
        live.gauge("cicada_users_by_type", Some(("user_type", "Visitor"))),
        5.0
    );
    assert_eq!(ui.call("POST", "/stop", "", "").0, 200);
    ui.wait_for("stopped", |s| s["state"] == "stopped");
    let served = target.counters().total();
    let stats = ui.wait_for("the count to reach the server's", |s| {
        s["stats"]
            .as_array()
            .and_then(|rows| rows.last())
            .and_then(|total| total["num_requests"].as_u64())
            .is_some_and(|n| n >= served)
    });
    let (status, text) = ui.call("GET", "/metrics", "", "");
    assert_eq!(status, 200, "{text}");
    let scraped = Scraped::parse(&text);
    let rows = stats["stats"].as_array().unwrap();
    let (total, entries) = rows.split_last().unwrap();
    assert_eq!(scraped.total(), total["num_requests"].as_f64().unwrap());
    assert_eq!(scraped.total(), served as f64, "the server's own count");
    assert_eq!(scraped.requests.len(), entries.len(), "one series per name");
    for entry in entries {
        let name = entry["name"].as_str().unwrap();
        assert_eq!(
            scraped.requests(name),
            entry["num_requests"].as_f64().unwrap(),
            "{name}"
        );
    }
    assert_eq!(
        scraped.requests("/"),
        target.counters().route(Route::Index) as f64
    );
    assert_eq!(
        scraped.requests("/items/[id]"),
        target.counters().route(Route::Item) as f64
    );
    assert_eq!(
        scraped.requests("/slow"),
        target.counters().route(Route::Slow) as f64
    );
    assert_eq!(
        scraped.gauge("cicada_run_state", Some(("state", "stopped"))),
        1.0
    );
    assert_eq!(
        scraped.gauge("cicada_run_state", Some(("state", "running"))),
        0.0
    );
    assert_eq!(scraped.gauge("cicada_users", None), 0.0);
    // The summary's count is the request count, and the 50 ms page's median is at least 50 ms.
    let slow_count = scraped
        .scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "cicada_response_time_seconds_count"
                && s.labels.get("name") == Some("/slow")
        })
        .expect("the summary's count");
    assert!(
        matches!(slow_count.value, prometheus_parse::Value::Untyped(n) if n == scraped.requests("/slow")),
        "{slow_count:?}"
    );
    assert!(text.contains("# TYPE cicada_response_time_seconds summary"));
    // The generator's own state is there (the guard runs by default).
    assert!(
        text.contains("cicada_guard_state{state=\"normal\"}"),
        "{text}"
    );
    assert!(text.contains("cicada_generator_memory_bytes "), "{text}");
}

#[test]
fn headless_metrics_port_counts_grow_within_the_servers_and_the_name_cap_bounds_the_series() {
    let target = DemoTarget::start();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let report_arg = report.to_string_lossy().into_owned();
    // Three names (/, /items/[id], /slow) against a cap of two: the third goes to the overflow entry.
    let mut process = Process::start(
        "quickstart",
        &[
            "--headless",
            "-u",
            "5",
            "-r",
            "10",
            "-s",
            "5",
            "-H",
            &target.url(),
            "--metrics-port",
            "0",
            "--max-names",
            "2",
            "--report-json",
            &report_arg,
        ],
        &[],
    );
    let stderr = process.child.as_mut().unwrap().stderr.take().unwrap();
    let (found_tx, found_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut found = Some(found_tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.split("metrics: http://").nth(1)
                && let Some(tx) = found.take()
            {
                let _ = tx.send(url.trim().trim_end_matches("/metrics").to_string());
            }
        }
    });
    let address = found_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the metrics endpoint announces its address");
    let started = Instant::now();
    let mut previous = 0.0;
    let mut growing_scrapes = 0;
    let mut saw_overflow = false;
    while growing_scrapes < 2 || !saw_overflow {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out: {growing_scrapes} growing scrapes, overflow seen: {saw_overflow}"
        );
        let (status, head, body) = scrape(&address);
        assert_eq!(status, 200, "{body}");
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        // Read after the scrape: every request cicada counted was served before.
        let served = target.counters().total() as f64;
        let scraped = Scraped::parse(&body);
        let total = scraped.total();
        assert!(total <= served, "scraped {total}, served {served}");
        assert!(
            total >= previous,
            "a counter went down: {previous} -> {total}"
        );
        assert!(
            scraped.requests.len() <= 3,
            "at most --max-names series plus the overflow one: {:?}",
            scraped.requests
        );
        if total > previous {
            growing_scrapes += 1;
        }
        previous = total;
        saw_overflow |= scraped
            .requests
            .contains_key(&(String::new(), OVERFLOW.to_string()));
        std::thread::sleep(Duration::from_millis(300));
    }
    process.signal("TERM");
    let output = process.wait(Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let final_total = report["stats"]["total"]["num_requests"].as_f64().unwrap();
    assert!(final_total >= previous, "{final_total} < {previous}");
    assert!(report.get("otlp").is_none(), "no exporter, no otlp section");
}

/// What the stand-in collector received, in arrival order.
type Received = Arc<Mutex<Vec<ExportMetricsServiceRequest>>>;

/// An OTLP/HTTP collector stand-in on 127.0.0.1:0, on its own runtime thread: it decodes each export with the same
/// proto crate and answers 200 with an empty `ExportMetricsServiceResponse`. Dropping it drops its runtime, which
/// ends the server.
struct Collector {
    _runtime: tokio::runtime::Runtime,
    address: std::net::SocketAddr,
    received: Received,
}

impl Collector {
    fn start() -> Collector {
        use http_body_util::BodyExt;
        let (runtime, listener) = server_runtime();
        let received: Received = Arc::default();
        let address = listener.local_addr().unwrap();
        let kept = received.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let kept = kept.clone();
                            async move {
                                let path_ok = request.uri().path() == "/v1/metrics";
                                let protobuf = request
                                    .headers()
                                    .get("content-type")
                                    .is_some_and(|v| v == "application/x-protobuf");
                                let body = request.into_body().collect().await?.to_bytes();
                                let status = match ExportMetricsServiceRequest::decode(body) {
                                    Ok(export) if path_ok && protobuf => {
                                        kept.lock().unwrap().push(export);
                                        200
                                    }
                                    _ => 400,
                                };
                                let answer =
                                    ExportMetricsServiceResponse::default().encode_to_vec();
                                Ok::<_, hyper::Error>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/x-protobuf")
                                        .body(http_body_util::Full::new(bytes::Bytes::from(answer)))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Collector {
            _runtime: runtime,
            address,
            received,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/v1/metrics", self.address)
    }
}

/// The sum of a cumulative `Sum` metric's points in one export, and the export's newest point time.
fn sum_of(export: &ExportMetricsServiceRequest, name: &str) -> Option<(f64, u64)> {
    let metric = export.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == name)?;
    let metric::Data::Sum(sum) = metric.data.as_ref()? else {
        panic!("{name} is not a sum");
    };
    assert!(sum.is_monotonic, "{name} is a counter");
    let mut total = 0.0;
    let mut newest = 0;
    for point in &sum.data_points {
        if let Some(number_data_point::Value::AsDouble(value)) = point.value {
            total += value;
        }
        newest = newest.max(point.time_unix_nano);
    }
    Some((total, newest))
}

/// The single point of a gauge metric in one export.
fn gauge_of(export: &ExportMetricsServiceRequest, name: &str) -> Option<f64> {
    let metric = export.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == name)?;
    let metric::Data::Gauge(gauge) = metric.data.as_ref()? else {
        panic!("{name} is not a gauge");
    };
    match gauge.data_points.first()?.value {
        Some(number_data_point::Value::AsDouble(value)) => Some(value),
        _ => None,
    }
}

/// Each series' `name` attribute of a metric in one export.
fn names_of(export: &ExportMetricsServiceRequest, metric_name: &str) -> Vec<String> {
    let Some(metric) = export.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == metric_name)
    else {
        return Vec::new();
    };
    let Some(metric::Data::Sum(sum)) = metric.data.as_ref() else {
        return Vec::new();
    };
    sum.data_points
        .iter()
        .filter_map(|point| {
            point
                .attributes
                .iter()
                .find(|a| a.key == "name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
        })
        .collect()
}

async fn item(user: &mut User) -> TaskResult {
    // Up to 20 distinct names against a cap of 3.
    let id = user.rng().u32(1..=20);
    // Without a stats name, each path is its own name.
    user.get(&format!("/items/{id}")).send().await?;
    Ok(())
}

fn many_names_test() -> Cicada {
    Cicada::new().user(
        UserType::<()>::new("Browser")
            .wait_time(constant(0.02))
            .task(item),
    )
}

#[test]
fn otlp_collector_receives_the_final_counts_and_the_name_cap_bounds_the_series() {
    let target = DemoTarget::start();
    let collector = Collector::start();
    let run = run_test(
        many_names_test(),
        &[
            "-H",
            &target.url(),
            "-u",
            "2",
            "-r",
            "10",
            "-t",
            "2s",
            "-s",
            "5",
            "--max-names",
            "3",
            "--otlp-endpoint",
            &collector.endpoint(),
            "--otlp-interval",
            "300ms",
        ],
    );
    assert_eq!(run.exit_code, 0);
    let received = collector.received.lock().unwrap().clone();
    assert!(!received.is_empty(), "the collector received exports");
    // Cumulative counters only grow: the final export is the one with the newest points.
    let (final_count, _) = received
        .iter()
        .filter_map(|export| sum_of(export, "cicada.requests"))
        .max_by_key(|&(_, time)| time)
        .expect("an export with requests");
    assert_eq!(
        final_count,
        run.total_requests() as f64,
        "the final export's count is the run's"
    );
    assert_eq!(run.total_requests(), target.counters().total());
    let otlp = &run.report["otlp"];
    assert_eq!(otlp["failed"], 0, "{otlp}");
    assert!(otlp["exported"].as_u64().unwrap() >= 1, "{otlp}");
    assert!(
        received.len() >= otlp["exported"].as_u64().unwrap() as usize,
        "every export the report counts as exported arrived: {otlp}"
    );
    // The resource says who sent it.
    let resource = received[0].resource_metrics[0].resource.as_ref().unwrap();
    let service = resource
        .attributes
        .iter()
        .find(|a| a.key == "service.name")
        .and_then(|a| a.value.as_ref()?.value.as_ref());
    assert_eq!(
        service,
        Some(&any_value::Value::StringValue("cicada".into()))
    );
    // No export has more series than the cap plus the overflow entry; the overflow entry is there.
    for export in &received {
        assert!(names_of(export, "cicada.requests").len() <= 4);
    }
    let last = received.last().unwrap();
    assert!(
        names_of(last, "cicada.requests").contains(&OVERFLOW.to_string()),
        "{:?}",
        names_of(last, "cicada.requests")
    );
}

#[test]
fn a_dead_collector_costs_at_most_the_final_wait_and_is_counted() {
    let target = DemoTarget::start();
    // Accepts connections and never answers, for at most a minute.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok((stream, _)) = listener.accept() {
                held.push(stream);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let run_time = Duration::from_secs(2);
    let started = Instant::now();
    let run = run_test(
        many_names_test(),
        &[
            "-H",
            &target.url(),
            "-u",
            "2",
            "-r",
            "10",
            "-t",
            "2s",
            "--otlp-endpoint",
            &format!("http://{address}/v1/metrics"),
            "--otlp-interval",
            "100ms",
        ],
    );
    let took = started.elapsed();
    assert_eq!(run.exit_code, 0);
    // The run's time, the final export's bound (5 s), and room for start-up and stop on a loaded machine.
    let bound = run_time + Duration::from_secs(5) + Duration::from_secs(8);
    assert!(took < bound, "the run took {took:?}, bound {bound:?}");
    let otlp = &run.report["otlp"];
    assert_eq!(otlp["exported"], 0, "{otlp}");
    assert!(
        otlp["failed"].as_u64().unwrap() >= 1,
        "the final export failed: {otlp}"
    );
    assert!(
        otlp["dropped"].as_u64().unwrap() >= 1,
        "exports never sent are counted: {otlp}"
    );
    assert!(
        otlp["last_error"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{otlp}"
    );
    assert!(run.total_requests() > 0);
}

#[test]
fn bad_metrics_options_are_usage_errors_before_any_load() {
    let target = DemoTarget::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--otlp-endpoint", "grpc://127.0.0.1:4317"],
            "gRPC is not supported",
        ),
        (&["--otlp-endpoint", "127.0.0.1:4318"], "--otlp-endpoint"),
        (
            &[
                "--otlp-endpoint",
                "http://127.0.0.1:4318",
                "--otlp-interval",
                "10ms",
            ],
            "--otlp-interval",
        ),
        (&["--metrics-port", &taken_port], "--metrics-port"),
    ];
    for (flags, says) in cases {
        let mut args = vec!["--headless", "-u", "2", "-r", "10", "-t", "2s"];
        let url = target.url();
        args.extend(["-H", url.as_str()]);
        args.extend(flags);
        let output = run_example("quickstart", &args, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{flags:?} should say {says}: {stderr}"
        );
    }
    assert_eq!(target.counters().total(), 0, "no load was sent");
}

#[test]
fn a_masters_export_is_the_merged_clusters_with_its_worker_count() {
    let collector = Collector::start();
    let endpoint = collector.endpoint();
    let mut run = ClusterRun::start(
        &[
            "--expect-workers",
            "2",
            "-u",
            "10",
            "-r",
            "100",
            "-t",
            "4s",
            "-s",
            "5",
            "--otlp-endpoint",
            &endpoint,
            "--otlp-interval",
            "300ms",
        ],
        &[],
    );
    let workers: Vec<Process> = (0..2).map(|_| run.worker(&[])).collect();
    let (output, report) = run.finish(Duration::from_secs(90));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let reported = report["stats"]["total"]["num_requests"].as_u64().unwrap();
    assert!(reported > 0, "{stderr}");
    assert_eq!(run.served(), reported, "{stderr}");
    let received = collector.received.lock().unwrap().clone();
    let (final_count, _) = received
        .iter()
        .filter_map(|export| sum_of(export, "cicada.requests"))
        .max_by_key(|&(_, time)| time)
        .unwrap_or_else(|| panic!("no export with requests: {stderr}"));
    assert_eq!(
        final_count, reported as f64,
        "the master's final export is the merged cluster's count"
    );
    assert!(
        received
            .iter()
            .any(|export| gauge_of(export, "cicada.workers") == Some(2.0)),
        "an export while both workers ran counts them"
    );
    let role = received[0].resource_metrics[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|a| a.key == "cicada.role")
        .and_then(|a| a.value.as_ref()?.value.clone());
    assert_eq!(role, Some(any_value::Value::StringValue("master".into())));
    assert_eq!(report["otlp"]["failed"], 0, "{}", report["otlp"]);
    for worker in workers {
        let out = worker.wait(Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(0), "a worker quits with its master");
    }
}
