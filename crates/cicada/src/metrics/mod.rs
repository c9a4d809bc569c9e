//! Metrics for dashboards: what a Prometheus scrape of `/metrics` and an OTLP export read, and the headless
//! `--metrics-port` endpoint.
//!
//! Nothing here is on the hot path. A scrape (or the OTLP exporter's timer) takes one [`MetricsView`]: the run's
//! stats snapshot (the aggregate the collector merges about once a second), the runner's user counts, the resource
//! guard's latest state and sample, and on a master its connected workers. [`prometheus`] writes that view in
//! Prometheus' text format, [`otlp`] as an OTLP `ExportMetricsServiceRequest`; both publish the same metric families
//! (docs/metrics.md lists them).
//!
//! Bounds: one series per `(method, name)` entry of the snapshot, and the snapshot holds at most `--max-names`
//! entries plus the one overflow entry (name [`cicada_stats::OVERFLOW_NAME`]); one series per user type (fixed when
//! the test starts), and per arrival-rate type and drop reason; fixed label sets for the run's and the guard's
//! states. A view is therefore at most about
//! `max_names + 1` entries, whatever the run's length.

pub(crate) mod otlp;
pub(crate) mod prometheus;

use std::net::SocketAddr;
use std::sync::Arc;

use cicada_stats::StatsSnapshot;

use crate::environment::Environment;
use crate::guard::{Guard, GuardPhase};

/// The quantiles of the response-time summaries: the current window's percentiles, which the stats keep for these
/// (and more) quantiles.
pub(crate) const SUMMARY_QUANTILES: [f64; 4] = [0.5, 0.9, 0.95, 0.99];

/// Every state the runner can be in, for the `cicada_run_state{state}` set (one series each, the current one 1).
pub(crate) const RUN_STATES: [&str; 6] = [
    "ready", "spawning", "running", "stopping", "stopped", "quitting",
];

/// Every phase of the resource guard, for the `cicada_guard_state{state}` set.
pub(crate) const GUARD_STATES: [(GuardPhase, &str); 4] = [
    (GuardPhase::Normal, "normal"),
    (GuardPhase::Holding, "holding"),
    (GuardPhase::Stopped, "stopped"),
    (GuardPhase::Emergency, "emergency"),
];

/// Where a scrape or an export reads from: the run's environment (stats, runner), its guard and, on a master, the
/// cluster. Cheap to clone.
#[derive(Clone)]
pub(crate) struct MetricsSource {
    pub(crate) env: Arc<Environment>,
    pub(crate) guard: Option<Guard>,
    pub(crate) cluster: Option<cicada_cluster::MasterHandle>,
}

/// The generator's own state, as the resource guard measured it last.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct GeneratorView {
    pub(crate) phase: GuardPhase,
    /// Over a limit now (CPU, memory or lag).
    pub(crate) saturated: bool,
    /// Process CPU as a share of the CPU available to it (cores and quota), 0 to 1 (briefly more).
    pub(crate) cpu_ratio: Option<f64>,
    /// The memory counted against the limit (RSS, or the cgroup's working set when larger).
    pub(crate) memory_bytes: Option<u64>,
    /// The memory limit in force (container or machine).
    pub(crate) memory_limit_bytes: u64,
    /// The guard's own memory bar (`--max-memory`, resolved).
    pub(crate) max_memory_bytes: u64,
    /// The worst scheduler lag since the previous full sample.
    pub(crate) lag_seconds: Option<f64>,
    /// Full samples (about one a second) in which the generator was saturated, since the start.
    pub(crate) saturated_samples: u64,
    /// Users the guard holds back now.
    pub(crate) users_held_back: u64,
}

/// One reading of everything the metrics publish.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricsView {
    pub(crate) snapshot: StatsSnapshot,
    /// The runner's state ([`RUN_STATES`]).
    pub(crate) run_state: &'static str,
    pub(crate) users: u64,
    pub(crate) target_users: u64,
    /// Users per user type, in the test's order.
    pub(crate) users_by_type: Vec<(String, u64)>,
    /// `None` when the guard is off or has no sample yet.
    pub(crate) generator: Option<GeneratorView>,
    /// Connected workers, on a master.
    pub(crate) workers: Option<u64>,
    /// The arrival-rate types' iterations (started, dropped by reason) and target rates, in the test's order.
    pub(crate) arrival: Vec<crate::user::ArrivalReport>,
    /// The target host, for the OTLP resource.
    pub(crate) host: String,
}

impl MetricsSource {
    /// What the web UI's handlers share is what a scrape reads.
    pub(crate) fn of_web(web: &crate::web::WebContext) -> MetricsSource {
        MetricsSource {
            env: web.env.clone(),
            guard: web.guard.clone(),
            cluster: web.cluster.clone(),
        }
    }

    /// Read the run now (a stats snapshot, a look at the runner, the guard and the cluster).
    pub(crate) fn read(&self) -> MetricsView {
        let runner = self.env.runner();
        let generator = self.guard.as_ref().map(|guard| {
            let latest = guard.latest();
            let report = guard.report_with_actions(0);
            GeneratorView {
                phase: report.status.phase,
                saturated: !report.status.over.is_empty(),
                cpu_ratio: latest
                    .as_ref()
                    .map(|usage| usage.cpu_percent_of_available / 100.0),
                memory_bytes: latest.as_ref().map(|usage| usage.memory_used_bytes),
                memory_limit_bytes: report.limits.memory_limit_bytes,
                max_memory_bytes: report.limits.max_memory_bytes,
                lag_seconds: latest.as_ref().map(|usage| usage.max_lag.as_secs_f64()),
                saturated_samples: report.saturated_samples,
                users_held_back: report.status.users_held_back,
            }
        });
        let workers = self.cluster.as_ref().map(|master| {
            master
                .workers()
                .iter()
                .filter(|worker| worker.presence == cicada_cluster::Presence::Connected)
                .count() as u64
        });
        MetricsView {
            snapshot: self.env.stats().snapshot(),
            run_state: runner.state().as_str(),
            users: runner.user_count(),
            target_users: runner.target_user_count(),
            users_by_type: runner.user_counts(),
            generator,
            workers,
            arrival: self.env.arrival_reports(),
            host: self.env.host(),
        }
    }
}

/// Why the headless metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "--metrics-port: cannot listen on {address}: {source} (is the port in use? try --metrics-port 0)"
)]
pub(crate) struct MetricsBindError {
    address: SocketAddr,
    source: std::io::Error,
}

/// Serve `GET /metrics` on `address` (port 0 picks a free one) for as long as the process runs; returns the bound
/// address, which the caller logs. Used by headless runs (`--metrics-port`); with the web UI, `/metrics` is one of
/// its routes too.
pub(crate) async fn serve(
    address: SocketAddr,
    source: MetricsSource,
) -> Result<SocketAddr, MetricsBindError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| MetricsBindError { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsBindError { address, source })?;
    let router = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let source = source.clone();
                async move { prometheus::response(&source.read()) }
            }),
        )
        .fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                "not found: the metrics are at /metrics\n",
            )
        });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::warn!("the metrics endpoint stopped: {error}");
        }
    });
    Ok(bound)
}

/// Start what the options ask for: the `--metrics-port` endpoint (announced in the log as
/// `metrics: http://ADDRESS/metrics`) and the `--otlp-endpoint` exporter, which a worker does not run (its master
/// exports the cluster's metrics). The error is a usage error, said in one line, before any load.
pub(crate) async fn start_for_run(
    options: &crate::options::Options,
    source: &MetricsSource,
    worker: bool,
) -> Result<Option<otlp::OtlpExporter>, String> {
    if let Some(port) = options.metrics_port {
        match serve(SocketAddr::new(options.metrics_host, port), source.clone()).await {
            Ok(address) => tracing::info!("metrics: http://{address}/metrics"),
            // A worker's metrics are extra (its master has the cluster's), and local workers that read the
            // master's config file would all ask for the master's port: a worker goes on without them.
            Err(error) if worker => tracing::warn!("{error}; this worker serves no metrics"),
            Err(error) => return Err(error.to_string()),
        }
    }
    let Some(endpoint) = &options.otlp_endpoint else {
        return Ok(None);
    };
    let endpoint = otlp::Endpoint::parse(endpoint)?;
    if options.otlp_interval < otlp::MIN_INTERVAL {
        return Err(format!(
            "--otlp-interval {} is too short: give at least {}",
            humantime::format_duration(options.otlp_interval),
            humantime::format_duration(otlp::MIN_INTERVAL)
        ));
    }
    if worker {
        tracing::warn!(
            "--otlp-endpoint is ignored on a worker: its master exports the cluster's metrics"
        );
        return Ok(None);
    }
    Ok(Some(otlp::OtlpExporter::start(
        endpoint,
        options.otlp_interval,
        source.clone(),
    )))
}
