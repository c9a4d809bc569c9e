//! OpenTelemetry export: the run's metrics pushed to an OTLP collector (`--otlp-endpoint`, OTLP/HTTP with
//! protobuf) every `--otlp-interval`, and once more at the end of the run.
//!
//! The messages are `opentelemetry-proto`'s prost types, encoded with prost and sent with hyper's client (both
//! already in the build); the full OpenTelemetry SDK would add its own pipeline and queue, and we want ours: one
//! exporter task owns a queue of at most [`QUEUE_CAPACITY`] encoded exports. Its timer takes a [`MetricsView`]
//! (never the hot path), encodes it and queues it; a full queue drops its oldest export and counts the drop (every
//! export is cumulative, so a newer one carries everything an older one did). One export is in flight at a time,
//! each bounded by [`REQUEST_TIMEOUT`]; a dead or slow collector costs the test nothing but counted failures and
//! drops, logged at most once every [`LOG_EVERY`]. At the end, the final export (built after the final stats) goes
//! out with a bound of [`FINAL_WAIT`]; what is still queued then is superseded by it and counted as dropped. No
//! retries: the next export repeats the totals.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint, metric, number_data_point, summary_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tokio::sync::oneshot;

use super::{GUARD_STATES, MetricsSource, MetricsView, RUN_STATES, SUMMARY_QUANTILES};

/// Encoded exports waiting to be sent, at most.
pub(crate) const QUEUE_CAPACITY: usize = 8;
/// How long one export may take (connect, send, answer) before it counts as failed.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the end of a run waits for the final export.
pub(crate) const FINAL_WAIT: Duration = Duration::from_secs(5);
/// Failures and drops are logged at most this often (the first at once).
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(30);
/// The shortest `--otlp-interval` accepted.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// What the exporter did, for the JSON report's `otlp` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct OtlpReport {
    /// The collector's URL.
    pub(crate) endpoint: String,
    /// Exports the collector accepted (a 2xx answer).
    pub(crate) exported: u64,
    /// Exports that failed: no connection, an error status, or no answer within the request timeout.
    pub(crate) failed: u64,
    /// Exports never sent: pushed out of the full queue, or superseded by the final export at the end.
    pub(crate) dropped: u64,
    /// The latest failure, if any.
    pub(crate) last_error: Option<String>,
}

/// A parsed `--otlp-endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    url: String,
    tls: bool,
    host: String,
    port: u16,
    /// Path and query, e.g. `/v1/metrics`.
    path: String,
}

impl Endpoint {
    /// Parse `http://HOST:PORT/v1/metrics` (or `https://`); the message says what to fix.
    pub(crate) fn parse(text: &str) -> Result<Endpoint, String> {
        let url = url::Url::parse(text).map_err(|error| {
            format!("--otlp-endpoint `{text}` is not a URL ({error}); e.g. http://127.0.0.1:4318/v1/metrics")
        })?;
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "--otlp-endpoint `{text}`: the scheme is `{other}`; OTLP/HTTP needs http:// or https:// \
                     (gRPC is not supported)"
                ));
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| format!("--otlp-endpoint `{text}` has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("--otlp-endpoint `{text}` has no port"))?;
        let mut path = url.path().to_string();
        if path == "/" || path.is_empty() {
            // A collector's base URL: OTLP/HTTP's metrics path is fixed.
            path = "/v1/metrics".to_string();
        }
        if let Some(query) = url.query() {
            path.push('?');
            path.push_str(query);
        }
        Ok(Endpoint {
            url: text.to_string(),
            tls,
            host,
            port,
            path,
        })
    }
}

/// The running exporter; [`OtlpExporter::finish`] sends the final export and returns the counters.
pub(crate) struct OtlpExporter {
    endpoint: String,
    finish: oneshot::Sender<MetricsView>,
    task: tokio::task::JoinHandle<OtlpReport>,
}

impl OtlpExporter {
    /// Start the exporter task.
    pub(crate) fn start(endpoint: Endpoint, interval: Duration, source: MetricsSource) -> Self {
        let (finish, finish_rx) = oneshot::channel();
        let resource = resource(&source);
        let url = endpoint.url.clone();
        let task = tokio::spawn(run(endpoint, interval, source, resource, finish_rx));
        OtlpExporter {
            endpoint: url,
            finish,
            task,
        }
    }

    /// Send `view` (the final stats) as the last export, waiting at most [`FINAL_WAIT`] for it.
    pub(crate) async fn finish(self, view: MetricsView) -> OtlpReport {
        let _ = self.finish.send(view);
        // The task bounds its own final send; the margin only guards against a task that cannot run.
        match tokio::time::timeout(FINAL_WAIT + Duration::from_secs(1), self.task).await {
            Ok(Ok(report)) => report,
            _ => OtlpReport {
                endpoint: self.endpoint,
                last_error: Some("the exporter did not end in time; its counts are lost".into()),
                ..OtlpReport::default()
            },
        }
    }
}

/// Logs the exporter's trouble at most once every [`LOG_EVERY`], saying how much happened in between.
struct TroubleLog {
    last: Option<Instant>,
    failed: u64,
    dropped: u64,
}

impl TroubleLog {
    fn note(&mut self, failed: u64, dropped: u64, what: &str) {
        self.failed += failed;
        self.dropped += dropped;
        if self.last.is_some_and(|last| last.elapsed() < LOG_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        tracing::warn!(
            "OTLP export: {what} ({} failed and {} dropped since the last such message; the test goes on)",
            self.failed,
            self.dropped
        );
        self.failed = 0;
        self.dropped = 0;
    }
}

type Sending = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

async fn run(
    endpoint: Endpoint,
    interval: Duration,
    source: MetricsSource,
    resource: Resource,
    mut finish: oneshot::Receiver<MetricsView>,
) -> OtlpReport {
    let endpoint = Arc::new(endpoint);
    let mut report = OtlpReport {
        endpoint: endpoint.url.clone(),
        ..OtlpReport::default()
    };
    let mut trouble = TroubleLog {
        last: None,
        failed: 0,
        dropped: 0,
    };
    let mut queue: VecDeque<Bytes> = VecDeque::with_capacity(QUEUE_CAPACITY);
    let mut in_flight: Option<Sending> = None;
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let final_view = loop {
        if in_flight.is_none()
            && let Some(body) = queue.pop_front()
        {
            in_flight = Some(Box::pin(send(endpoint.clone(), body, REQUEST_TIMEOUT)));
        }
        tokio::select! {
            _ = timer.tick() => {
                let body = encode(&source.read(), &resource);
                if queue.len() >= QUEUE_CAPACITY {
                    queue.pop_front();
                    report.dropped += 1;
                    trouble.note(0, 1, "the queue is full (the collector is slow or away): dropped the oldest export");
                }
                queue.push_back(body);
            }
            result = async { in_flight.as_mut().expect("guarded by the condition").await }, if in_flight.is_some() => {
                in_flight = None;
                match result {
                    Ok(()) => report.exported += 1,
                    Err(error) => {
                        report.failed += 1;
                        trouble.note(1, 0, &error);
                        report.last_error = Some(error);
                    }
                }
            }
            view = &mut finish => break view.ok(),
        }
    };
    // The final export supersedes everything not yet confirmed.
    report.dropped += queue.len() as u64 + u64::from(in_flight.is_some());
    drop(in_flight);
    if let Some(view) = final_view {
        match send(endpoint.clone(), encode(&view, &resource), FINAL_WAIT).await {
            Ok(()) => report.exported += 1,
            Err(error) => {
                report.failed += 1;
                tracing::warn!("OTLP export: the final export failed: {error}");
                report.last_error = Some(error);
            }
        }
    }
    if report.failed + report.dropped > 0 {
        tracing::info!(
            "OTLP export to {}: {} exported, {} failed, {} dropped",
            report.endpoint,
            report.exported,
            report.failed,
            report.dropped
        );
    }
    report
}

/// POST one export, bounded by `limit` as a whole.
async fn send(endpoint: Arc<Endpoint>, body: Bytes, limit: Duration) -> Result<(), String> {
    match tokio::time::timeout(limit, post(&endpoint, body)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{} did not answer within {}",
            endpoint.url,
            humantime::format_duration(limit)
        )),
    }
}

async fn post(endpoint: &Endpoint, body: Bytes) -> Result<(), String> {
    let address = resolve(endpoint).await?;
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|error| format!("cannot connect to {}: {error}", endpoint.url))?;
    let _ = tcp.set_nodelay(true);
    let request = http::Request::post(&endpoint.path)
        .header(http::header::HOST, host_header(endpoint))
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .header(
            http::header::USER_AGENT,
            concat!("cicada/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body))
        .map_err(|error| format!("cannot build the request: {error}"))?;
    let status = if endpoint.tls {
        let connector = tokio_rustls::TlsConnector::from(tls_config());
        let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
            .map_err(|error| format!("--otlp-endpoint host `{}`: {error}", endpoint.host))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|error| format!("TLS with {}: {error}", endpoint.url))?;
        exchange(hyper_util::rt::TokioIo::new(tls), request, endpoint).await?
    } else {
        exchange(hyper_util::rt::TokioIo::new(tcp), request, endpoint).await?
    };
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{} answered {status}", endpoint.url))
    }
}

async fn exchange<IO>(
    io: IO,
    request: http::Request<Full<Bytes>>,
    endpoint: &Endpoint,
) -> Result<http::StatusCode, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|error| format!("HTTP with {}: {error}", endpoint.url))?;
    let connection = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| format!("sending to {}: {error}", endpoint.url))?;
    let status = response.status();
    // Read the (small) answer so that the connection ends cleanly; its content (a partial success) is not used.
    let _ = response.into_body().collect().await;
    connection.abort();
    Ok(status)
}

async fn resolve(endpoint: &Endpoint) -> Result<SocketAddr, String> {
    tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|error| format!("cannot resolve {}: {error}", endpoint.host))?
        .next()
        .ok_or_else(|| format!("{} resolves to no address", endpoint.host))
}

fn host_header(endpoint: &Endpoint) -> String {
    if endpoint.host.contains(':') {
        format!("[{}]:{}", endpoint.host, endpoint.port)
    } else {
        format!("{}:{}", endpoint.host, endpoint.port)
    }
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
            Arc::new(config.unwrap_or_else(|_| {
                // The ring provider supports the default versions; this branch is not reached.
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            }))
        })
        .clone()
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..KeyValue::default()
    }
}

/// The resource: who exports (`service.name=cicada`, its version, the role, the machine) and what is tested.
fn resource(source: &MetricsSource) -> Resource {
    let role = match (source.env.options().master, source.env.options().processes) {
        (true, _) | (_, Some(_)) => "master",
        _ => "local",
    };
    let mut attributes = vec![
        string_attribute("service.name", "cicada"),
        string_attribute("service.version", env!("CARGO_PKG_VERSION")),
        string_attribute("cicada.role", role),
        string_attribute("cicada.target.host", &source.env.host()),
    ];
    if let Ok(hostname) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        attributes.push(string_attribute("host.name", hostname.trim()));
    }
    Resource {
        attributes,
        ..Resource::default()
    }
}

/// The view as one encoded `ExportMetricsServiceRequest`.
pub(crate) fn encode(view: &MetricsView, resource: &Resource) -> Bytes {
    Bytes::from(request(view, resource).encode_to_vec())
}

fn unix_now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn point(attributes: Vec<KeyValue>, start: u64, now: u64, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..NumberDataPoint::default()
    }
}

fn metric(name: &str, description: &str, unit: &str, data: metric::Data) -> Metric {
    Metric {
        name: name.to_string(),
        description: description.to_string(),
        unit: unit.to_string(),
        data: Some(data),
        ..Metric::default()
    }
}

fn cumulative(points: Vec<NumberDataPoint>) -> metric::Data {
    metric::Data::Sum(Sum {
        data_points: points,
        aggregation_temporality: AggregationTemporality::Cumulative as i32,
        is_monotonic: true,
    })
}

fn gauge(points: Vec<NumberDataPoint>) -> metric::Data {
    metric::Data::Gauge(Gauge {
        data_points: points,
    })
}

/// The same families as the Prometheus endpoint, under OpenTelemetry names (dots, the unit apart).
pub(crate) fn request(view: &MetricsView, resource: &Resource) -> ExportMetricsServiceRequest {
    let snapshot = &view.snapshot;
    let start = snapshot.start_unix_ms.saturating_mul(1_000_000);
    let now = unix_now_nanos();
    let entry_attributes = |entry: &cicada_stats::EntryStats| {
        vec![
            string_attribute("method", &entry.method),
            string_attribute("name", &entry.name),
        ]
    };
    let mut metrics = Vec::new();
    if !snapshot.entries.is_empty() {
        let requests = snapshot
            .entries
            .iter()
            .map(|e| point(entry_attributes(e), start, now, e.num_requests as f64))
            .collect();
        let failures = snapshot
            .entries
            .iter()
            .map(|e| point(entry_attributes(e), start, now, e.num_failures as f64))
            .collect();
        let response_times = snapshot
            .entries
            .iter()
            .map(|e| SummaryDataPoint {
                attributes: entry_attributes(e),
                start_time_unix_nano: start,
                time_unix_nano: now,
                count: e.num_requests,
                sum: e.avg_ms * e.num_requests as f64 / 1e3,
                quantile_values: SUMMARY_QUANTILES
                    .iter()
                    .filter_map(|&q| {
                        e.current_percentile(q)
                            .map(|ms| summary_data_point::ValueAtQuantile {
                                quantile: q,
                                value: ms / 1e3,
                            })
                    })
                    .collect(),
                ..SummaryDataPoint::default()
            })
            .collect();
        metrics.push(metric(
            "cicada.requests",
            "Requests recorded per (method, name), failures included.",
            "{request}",
            cumulative(requests),
        ));
        metrics.push(metric(
            "cicada.failures",
            "Failed requests per (method, name).",
            "{request}",
            cumulative(failures),
        ));
        metrics.push(metric(
            "cicada.response_time",
            "Response times per (method, name): quantiles over the stats' current window, sum and count over the run.",
            "s",
            metric::Data::Summary(Summary {
                data_points: response_times,
            }),
        ));
    }
    let single = |value: f64| vec![point(Vec::new(), start, now, value)];
    metrics.push(metric(
        "cicada.current_rps",
        "Requests per second over the stats' current window, all names together.",
        "{request}/s",
        gauge(single(snapshot.total.current_rps)),
    ));
    metrics.push(metric(
        "cicada.current_failures_per_second",
        "Failures per second over the stats' current window, all names together.",
        "{request}/s",
        gauge(single(snapshot.total.current_fail_per_s)),
    ));
    metrics.push(metric(
        "cicada.requests_cut_off",
        "Requests cut short by a stop.",
        "{request}",
        cumulative(single(snapshot.requests_cut_off as f64)),
    ));
    metrics.push(metric(
        "cicada.samples_over_name_cap",
        "Samples recorded in the overflow entry.",
        "{request}",
        cumulative(single(snapshot.overflow.samples_over_name_cap as f64)),
    ));
    metrics.push(metric(
        "cicada.users",
        "Running users.",
        "{user}",
        gauge(single(view.users as f64)),
    ));
    metrics.push(metric(
        "cicada.target_users",
        "The user count the run is heading for.",
        "{user}",
        gauge(single(view.target_users as f64)),
    ));
    if !view.users_by_type.is_empty() {
        metrics.push(metric(
            "cicada.users_by_type",
            "Running users per user type.",
            "{user}",
            gauge(
                view.users_by_type
                    .iter()
                    .map(|(user_type, users)| {
                        point(
                            vec![string_attribute("user_type", user_type)],
                            start,
                            now,
                            *users as f64,
                        )
                    })
                    .collect(),
            ),
        ));
    }
    if !view.arrival.is_empty() {
        let per_type =
            |value: &dyn Fn(&crate::user::ArrivalReport) -> f64| -> Vec<NumberDataPoint> {
                view.arrival
                    .iter()
                    .map(|a| {
                        point(
                            vec![string_attribute("user_type", &a.user_type)],
                            start,
                            now,
                            value(a),
                        )
                    })
                    .collect()
            };
        metrics.push(metric(
            "cicada.iterations.started",
            "Iterations an arrival-rate type started.",
            "{iteration}",
            cumulative(per_type(&|a| a.started as f64)),
        ));
        let dropped = view
            .arrival
            .iter()
            .flat_map(|a| {
                a.dropped_by_reason().map(|(reason, dropped)| {
                    point(
                        vec![
                            string_attribute("user_type", &a.user_type),
                            string_attribute("reason", reason),
                        ],
                        start,
                        now,
                        dropped as f64,
                    )
                })
            })
            .collect();
        metrics.push(metric(
            "cicada.iterations.dropped",
            "Iterations an arrival-rate type could not start when due, by reason.",
            "{iteration}",
            cumulative(dropped),
        ));
        metrics.push(metric(
            "cicada.arrival_rate",
            "The iterations per second an arrival-rate type is asked to start now.",
            "{iteration}/s",
            gauge(per_type(&|a| a.rate_per_s)),
        ));
    }
    metrics.push(metric(
        "cicada.run_state",
        "The runner's state: 1 for the current one, 0 for the others.",
        "1",
        gauge(
            RUN_STATES
                .iter()
                .map(|state| {
                    point(
                        vec![string_attribute("state", state)],
                        start,
                        now,
                        f64::from(u8::from(*state == view.run_state)),
                    )
                })
                .collect(),
        ),
    ));
    if let Some(workers) = view.workers {
        metrics.push(metric(
            "cicada.workers",
            "Connected workers (on a master).",
            "{worker}",
            gauge(single(workers as f64)),
        ));
    }
    if let Some(generator) = &view.generator {
        metrics.push(metric(
            "cicada.guard_state",
            "The resource guard's phase: 1 for the current one, 0 for the others.",
            "1",
            gauge(
                GUARD_STATES
                    .iter()
                    .map(|(phase, name)| {
                        point(
                            vec![string_attribute("state", name)],
                            start,
                            now,
                            f64::from(u8::from(*phase == generator.phase)),
                        )
                    })
                    .collect(),
            ),
        ));
        metrics.push(metric(
            "cicada.generator.saturated",
            "1 while the generator is over a limit (CPU, memory or scheduler lag).",
            "1",
            gauge(single(f64::from(u8::from(generator.saturated)))),
        ));
        metrics.push(metric(
            "cicada.generator.saturated_samples",
            "The guard's samples (about one a second) in which the generator was saturated.",
            "{sample}",
            cumulative(single(generator.saturated_samples as f64)),
        ));
        metrics.push(metric(
            "cicada.generator.users_held_back",
            "Users the guard holds back.",
            "{user}",
            gauge(single(generator.users_held_back as f64)),
        ));
        metrics.push(metric(
            "cicada.generator.memory_limit",
            "The memory limit in force: the container's, else the machine's.",
            "By",
            gauge(single(generator.memory_limit_bytes as f64)),
        ));
        metrics.push(metric(
            "cicada.generator.max_memory",
            "The guard's memory bar (--max-memory, resolved).",
            "By",
            gauge(single(generator.max_memory_bytes as f64)),
        ));
        if let Some(cpu) = generator.cpu_ratio {
            metrics.push(metric(
                "cicada.generator.cpu",
                "The generator's CPU as a share of the CPU available to it, 0 to 1.",
                "1",
                gauge(single(cpu)),
            ));
        }
        if let Some(memory) = generator.memory_bytes {
            metrics.push(metric(
                "cicada.generator.memory",
                "The generator's memory counted against the limit.",
                "By",
                gauge(single(memory as f64)),
            ));
        }
        if let Some(lag) = generator.lag_seconds {
            metrics.push(metric(
                "cicada.generator.lag",
                "The worst scheduler (event-loop) lag since the guard's previous sample.",
                "s",
                gauge(single(lag)),
            ));
        }
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "cicada".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..InstrumentationScope::default()
                }),
                metrics,
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_bad_ones_say_why() {
        let plain = Endpoint::parse("http://127.0.0.1:4318/v1/metrics").unwrap();
        assert_eq!((plain.host.as_str(), plain.port), ("127.0.0.1", 4318));
        assert_eq!(plain.path, "/v1/metrics");
        assert!(!plain.tls);
        let base = Endpoint::parse("http://[::1]:4318").unwrap();
        assert_eq!(
            (base.host.as_str(), base.path.as_str()),
            ("::1", "/v1/metrics")
        );
        assert_eq!(host_header(&base), "[::1]:4318");
        assert!(
            Endpoint::parse("https://collector.example:4318/v1/metrics")
                .unwrap()
                .tls
        );
        let grpc = Endpoint::parse("grpc://127.0.0.1:4317").unwrap_err();
        assert!(grpc.contains("gRPC is not supported"), "{grpc}");
        let nonsense = Endpoint::parse("not a url").unwrap_err();
        assert!(nonsense.contains("--otlp-endpoint"), "{nonsense}");
    }

    #[test]
    fn the_request_decodes_with_cumulative_counters() {
        let entry = cicada_stats::EntryStats {
            method: "GET".into(),
            name: "/".into(),
            num_requests: 7,
            num_failures: 1,
            avg_ms: 10.0,
            current_percentiles: vec![(0.5, 8.0), (0.9, 9.0), (0.95, 12.0), (0.99, 20.0)],
            ..cicada_stats::EntryStats::default()
        };
        let view = MetricsView {
            snapshot: cicada_stats::StatsSnapshot {
                entries: vec![entry],
                ..cicada_stats::StatsSnapshot::default()
            },
            run_state: "running",
            users: 2,
            target_users: 2,
            users_by_type: vec![("Visitor".into(), 2)],
            generator: None,
            workers: Some(1),
            arrival: Vec::new(),
            host: "http://127.0.0.1:1".into(),
        };
        let bytes = encode(&view, &Resource::default());
        let decoded = ExportMetricsServiceRequest::decode(bytes).unwrap();
        let metrics = &decoded.resource_metrics[0].scope_metrics[0].metrics;
        let requests = metrics
            .iter()
            .find(|m| m.name == "cicada.requests")
            .unwrap();
        match requests.data.as_ref().unwrap() {
            metric::Data::Sum(sum) => {
                assert!(sum.is_monotonic);
                assert_eq!(
                    sum.aggregation_temporality,
                    AggregationTemporality::Cumulative as i32
                );
                assert_eq!(
                    sum.data_points[0].value,
                    Some(number_data_point::Value::AsDouble(7.0))
                );
            }
            other => panic!("not a sum: {other:?}"),
        }
        let summary = metrics
            .iter()
            .find(|m| m.name == "cicada.response_time")
            .unwrap();
        match summary.data.as_ref().unwrap() {
            metric::Data::Summary(summary) => {
                let point = &summary.data_points[0];
                assert_eq!(point.count, 7);
                assert!((point.sum - 0.07).abs() < 1e-9);
                assert_eq!(point.quantile_values.len(), 4);
            }
            other => panic!("not a summary: {other:?}"),
        }
        assert!(metrics.iter().any(|m| m.name == "cicada.workers"));
    }
}
