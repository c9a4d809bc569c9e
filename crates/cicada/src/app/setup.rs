//! Setting a run up, in the order that keeps its promises: signal handlers and the report reserve first (before any
//! load, so that a SIGTERM or a full memory never finds them missing), every report path checked (a bad one is a
//! usage error before anything is sent), then the stats, the demo target when no host is given, the environment,
//! the user types, the runner, the resource guard and the web UI.

use std::sync::Arc;
use std::time::Instant;

use cicada_stats::{Stats, StatsConfig};

use super::{EXIT_USAGE, RunClock, RunMode};
use crate::environment::Environment;
use crate::events::Events;
use crate::guard::{Guard, GuardThreadOwner};
use crate::options::Options;
use crate::report::{self, HistoryCsv as HistoryCsvWriter, ReportOutputs};
use crate::runner::{self, RunnableType, RunnerHandle};
use crate::signals::StopSignals;
use crate::user::run::UserKind;
use crate::web::{WebContext, WebSettings};

/// Everything a run set up, for the driver, the collector and the finish.
pub(super) struct RunSetup {
    pub(super) options: Arc<Options>,
    pub(super) events: Arc<Events>,
    pub(super) reserve: ReportReserve,
    pub(super) report_outputs: ReportOutputs,
    /// The live history CSV, taken by the collector, which appends to it every second.
    pub(super) history_csv: Option<HistoryCsvWriter>,
    pub(super) stats: Stats,
    pub(super) demo: Option<cicada_demo::DemoServer>,
    pub(super) host: String,
    pub(super) env: Arc<Environment>,
    pub(super) runner: RunnerHandle,
    pub(super) runner_task: tokio::task::JoinHandle<()>,
    pub(super) guard: Option<Guard>,
    /// Ends the guard's thread when the run is over (after the reports).
    pub(super) _guard_thread: Option<GuardThreadOwner>,
    pub(super) web: Arc<WebContext>,
    /// A master's cluster port.
    pub(super) cluster: Option<cicada_cluster::MasterHandle>,
    /// A master's view of its workers' capacity (held-back users, marks, actions).
    pub(super) cluster_health: Option<Arc<crate::cluster::health::ClusterHealth>>,
    pub(super) started: Instant,
    pub(super) started_unix_ms: u64,
    /// The `--otlp-endpoint` exporter, sent its final export by the finish.
    pub(super) otlp: Option<crate::metrics::otlp::OtlpExporter>,
}

impl RunSetup {
    /// Set everything up; on failure, the exit code (the error was printed). The signal handlers come back beside
    /// the setup, for the driver to listen to.
    pub(super) async fn build(
        types: Vec<Box<dyn UserKind>>,
        events: Arc<Events>,
        options: Arc<Options>,
        mode: RunMode,
        mut exchange: super::Exchange,
    ) -> Result<(RunSetup, StopSignals), i32> {
        let usage = i32::from(EXIT_USAGE);
        // A worker writes no report and serves no UI: the master does.
        let options = if mode == RunMode::Worker {
            let mut worker = (*options).clone();
            worker.headless = true;
            worker.json = false;
            worker.csv_prefix = None;
            worker.html = None;
            worker.json_file = None;
            worker.report_json = None;
            Arc::new(worker)
        } else {
            options
        };
        let signals = StopSignals::install().map_err(|error| {
            eprintln!("error: cannot install the SIGINT/SIGTERM handlers: {error}");
            1
        })?;
        let reserve = ReportReserve::new();
        // A report that cannot be written is a usage error now, not a lost report at the end.
        let mut report_outputs = ReportOutputs::open(&options).map_err(|error| {
            eprintln!("error: {error}");
            usage
        })?;
        let history_csv = report_outputs.take_history_csv();
        let stats = Stats::new(StatsConfig {
            max_names: options.max_names,
            max_errors: options.max_errors,
            max_user_errors: options.max_errors,
            // Checks are judged on the seconds the generator was not saturated.
            unmarked_stats: !options.checks.is_empty(),
            ..StatsConfig::default()
        });
        // A worker tests the host its master sends.
        let demo = if mode == RunMode::Worker {
            None
        } else {
            start_demo_if_needed(&types, &options).await?
        };
        // Only a master compares its test with its workers'.
        let identity = (mode == RunMode::Master).then(|| crate::cluster::test_identity(&types));
        // A master places users of the looping types only: arrival-rate types run at their rates, split by share.
        let specs: Vec<(u32, Option<u64>)> = types
            .iter()
            .map(|t| match t.arrival() {
                Some(_) => (0, Some(0)),
                None => (t.weight(), t.fixed_count()),
            })
            .collect();
        let has_arrival_types = types.iter().any(|t| t.arrival().is_some());
        let host = options
            .host
            .clone()
            .or_else(|| demo.as_ref().map(cicada_demo::DemoServer::url))
            // Every type sets its own host: name the first one in reports.
            .or_else(|| types.iter().find_map(|t| t.host().map(str::to_string)))
            // A worker's users get the master's host with their first spawn command; until then none runs.
            .or_else(|| (mode == RunMode::Worker).then(|| "http://127.0.0.1".to_string()))
            .unwrap_or_default();
        let names: Vec<String> = types.iter().map(|t| t.name().to_string()).collect();
        let parts = runner::channel(
            names,
            match mode {
                RunMode::Local => runner::RunnerMode::Local,
                RunMode::Master => runner::RunnerMode::Master,
                RunMode::Worker => runner::RunnerMode::Worker,
            },
        );
        let env = Arc::new(Environment::new(
            stats.clone(),
            parts.handle.clone(),
            events.clone(),
            options.clone(),
            host.clone(),
            exchange.take_parts(parts.handle.mode()),
        ));
        env.messages.bind(&env);
        let tasks = report::tasks_json(&types);
        let mut runnable = Vec::with_capacity(types.len());
        for kind in types {
            let name = kind.name().to_string();
            let weight = kind.weight();
            let fixed_count = kind.fixed_count();
            match kind.activate(env.clone(), &host) {
                Ok(spawner) => runnable.push(RunnableType {
                    name,
                    weight,
                    fixed_count,
                    spawner,
                }),
                Err(error) => {
                    eprintln!("error: user type {name}: {error}");
                    return Err(usage);
                }
            }
        }
        events.fire_env("init", &events.init, &env);

        let spawners: Vec<_> = runnable.iter().map(|t| t.spawner.clone()).collect();
        let type_names: Vec<String> = runnable.iter().map(|t| t.name.clone()).collect();
        let runner = env.runner.clone();
        let cluster_health = (mode == RunMode::Master)
            .then(|| Arc::new(crate::cluster::health::ClusterHealth::new()));
        let (runner_task, cluster) = if let Some(health) = &cluster_health {
            let (master, cluster_events) = crate::cluster::master::start_server(
                &options,
                identity.unwrap_or_default(),
                exchange.test_source.take(),
            )
            .await
            .map_err(|error| {
                eprintln!("error: cannot start the master: {error}");
                usage
            })?;
            env.messages.connect_master(master.clone());
            let dispatcher = crate::cluster::master::Dispatcher::new(
                env.clone(),
                master.clone(),
                specs,
                has_arrival_types,
                options.stop_timeout,
                health.clone(),
            );
            let task = tokio::spawn(dispatcher.run(parts.into_commands(), cluster_events));
            (task, Some(master))
        } else {
            (
                runner::start(parts, runnable, env.clone(), options.stop_timeout),
                None,
            )
        };
        let guard = Guard::start(&options.guard_settings(), env.clone());
        let guard_thread = guard.as_ref().map(Guard::owner);
        let web = Arc::new(WebContext {
            env: env.clone(),
            guard: guard.clone(),
            spawners,
            tasks,
            type_names,
            clock: RunClock::default(),
            cluster: cluster.clone(),
            cluster_health: cluster_health.clone(),
        });
        let metrics_source = crate::metrics::MetricsSource::of_web(&web);
        let otlp =
            crate::metrics::start_for_run(&options, &metrics_source, mode == RunMode::Worker)
                .await
                .map_err(|error| {
                    eprintln!("error: {error}");
                    env.runner.quit();
                    usage
                })?;
        let setup = RunSetup {
            options,
            events,
            reserve,
            report_outputs,
            history_csv,
            stats,
            demo,
            host,
            env,
            runner,
            runner_task,
            guard,
            _guard_thread: guard_thread,
            web,
            cluster,
            cluster_health,
            started: Instant::now(),
            started_unix_ms: unix_now() * 1000,
            otlp,
        };
        if !setup.options.headless {
            setup.start_web_ui().await?;
        }
        Ok((setup, signals))
    }

    /// A master started headless (or with `--autostart`) waits for `--expect-workers` before the test starts,
    /// at most `--expect-workers-max-wait`.
    pub(super) async fn wait_for_workers(&self, signals: &mut StopSignals) -> Result<(), i32> {
        let options = &self.options;
        let Some(master) = &self.cluster else {
            return Ok(());
        };
        if !(options.headless || options.autostart) {
            return Ok(());
        }
        let expected = options.expect_workers.max(1);
        let started = Instant::now();
        let mut logged = Instant::now();
        loop {
            let connected = master
                .workers()
                .iter()
                .filter(|w| w.presence == cicada_cluster::Presence::Connected)
                .count() as u64;
            if connected >= expected {
                tracing::info!("cluster: {connected} workers connected, starting the test");
                return Ok(());
            }
            if let Some(limit) = options.expect_workers_max_wait
                && started.elapsed() >= limit
            {
                eprintln!(
                    "error: only {connected} of the {expected} workers (--expect-workers) connected within {}",
                    humantime::format_duration(limit)
                );
                self.runner.quit();
                return Err(1);
            }
            if logged.elapsed() >= std::time::Duration::from_secs(5) {
                logged = Instant::now();
                tracing::info!(
                    "cluster: waiting for workers ({connected} of {expected} connected)"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                _ = signals.next() => {
                    self.runner.quit();
                    return Err(0);
                }
            }
        }
    }

    async fn start_web_ui(&self) -> Result<(), i32> {
        let options = &self.options;
        let settings = WebSettings {
            address: std::net::SocketAddr::new(options.web_host, options.web_port),
            login: options.web_login.clone(),
            tls: options.tls_cert.clone().zip(options.tls_key.clone()),
        };
        match crate::web::start(&settings, self.web.clone()).await {
            Ok(address) => {
                let scheme = if settings.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                tracing::info!("web UI: {scheme}://{address}");
                Ok(())
            }
            Err(error) => {
                eprintln!("error: {error}");
                self.runner.quit();
                Err(i32::from(EXIT_USAGE))
            }
        }
    }
}

async fn start_demo_if_needed(
    types: &[Box<dyn UserKind>],
    options: &Options,
) -> Result<Option<cicada_demo::DemoServer>, i32> {
    let needs_host = types.iter().any(|t| t.host().is_none()) && options.host.is_none();
    if !needs_host {
        return Ok(None);
    }
    match cicada_demo::DemoServer::start(([127, 0, 0, 1], 0).into()).await {
        Ok(demo) => {
            tracing::info!(
                "no --host given: running against the built-in demo target at {}",
                demo.url()
            );
            Ok(Some(demo))
        }
        Err(error) => {
            eprintln!("error: no --host given and the demo target could not start: {error}");
            Err(i32::from(EXIT_USAGE))
        }
    }
}

/// Memory set aside at the start of a run and given back just before the final reports are written, so that a
/// generator that ran right up to its memory limit (the guard stopped it there) can still build its reports. The
/// pages are written so that they are really resident; the block is above glibc's mmap threshold, so freeing it
/// returns it to the kernel (and to the container's budget) at once.
pub(super) struct ReportReserve(#[allow(dead_code)] Vec<u8>);

impl ReportReserve {
    /// 8 MiB: a snapshot, the JSON and CSV of a run with the default caps fit in a few MiB; a long run with many
    /// names needs more, which the guard's emergency stop frees by aborting the users.
    const BYTES: usize = 8 << 20;

    fn new() -> Self {
        ReportReserve(vec![0xA5; Self::BYTES])
    }
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
