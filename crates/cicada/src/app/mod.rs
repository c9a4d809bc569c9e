//! The entry point of a test binary: register user types, shapes and event listeners, then run.
//!
//! [`Cicada::run`] reads the options, sets up logging and a multi-threaded tokio runtime that uses every core, and
//! runs the test in its mode. A run is four jobs, each in its own module: [`setup`] (report paths, the demo target,
//! the environment, the runner, the guard, the web UI), [`driver`] (what ends or reshapes the test: run time, load
//! shape, signals, autoquit), [`collector`] (once a second: stats, history, the live CSV and console) and [`finish`]
//! (the final reports and the exit code: 0 when all went well, 1 (or `--exit-code-on-error`) when a request failed
//! or a task raised an error, 2 for bad usage, 4 when the resource guard had to stop the test, 5 when a report could
//! not be written). [`RunMode`] says which of them a process uses.

mod collector;
mod driver;
mod finish;
mod setup;

pub(crate) use driver::RunClock;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use cicada_stats::Stats;

use crate::environment::Environment;
use crate::events::{Events, RequestEvent, UserErrorEvent};
use crate::options::{Options, OptionsError};
use crate::report;
use crate::shape::LoadShape;
use crate::user::UserType;
use crate::user::run::UserKind;
use crate::user::task::TagFilter;

/// Exit code for bad usage or configuration.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the resource guard stopped the test because the generator ran out of CPU or memory.
pub const EXIT_GUARD_STOPPED: i32 = 4;

/// A load test: user types, an optional load shape and event listeners.
///
/// ```no_run
/// use cicada::prelude::*;
///
/// async fn index(user: &mut User) -> TaskResult {
///     user.get("/").send().await?;
///     Ok(())
/// }
///
/// fn main() -> std::process::ExitCode {
///     Cicada::new()
///         .user(UserType::<()>::new("Visitor").wait_time(between(0.5, 1.5)).task(index))
///         .run()
/// }
/// ```
#[derive(Default)]
pub struct Cicada {
    types: Vec<Box<dyn UserKind>>,
    shape: Option<Box<dyn LoadShape>>,
    events: Events,
    exchange: Exchange,
    /// Checks added in code ([`Cicada::check`]), parsed when the run starts.
    checks: Vec<String>,
}

/// What a test registered for custom messages and test data, before the run.
#[derive(Default)]
pub(crate) struct Exchange {
    messages: crate::messages::Registry,
    data: crate::data::Definitions,
    /// The test as source, which a master serves to workers started without one (`-f -`).
    pub(crate) test_source: Option<cicada_cluster::TestSource>,
}

impl Exchange {
    /// The run's message and test data handles, for a process in this mode.
    pub(crate) fn take_parts(
        &mut self,
        mode: crate::runner::RunnerMode,
    ) -> (crate::messages::Messages, crate::data::TestData) {
        let messages = crate::messages::Messages::new(std::mem::take(&mut self.messages), mode);
        let data =
            crate::data::TestData::new(std::mem::take(&mut self.data), mode, messages.clone());
        (messages, data)
    }

    /// Check the registrations; the process that owns the test data (not a worker) reads its files whole.
    fn check(&self, mode: RunMode) -> Result<(), String> {
        self.messages.check()?;
        self.data.check(mode != RunMode::Worker)
    }
}

impl Cicada {
    /// An empty test.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a check that decides the exit code, as `--check EXPR` does (e.g. `"p95<300ms"`, `"/items/[id]:p99<1s"`,
    /// `"fail_ratio<0.01"`); it adds to the checks given on the command line. A check that does not parse ends the
    /// run with exit code 2 before any load, naming it. See docs/ci.md for the grammar.
    pub fn check(mut self, expr: impl Into<String>) -> Self {
        self.checks.push(expr.into());
        self
    }

    /// Register a user type.
    pub fn user<S: Send + 'static>(mut self, user_type: UserType<S>) -> Self {
        self.types.push(Box::new(user_type));
        self
    }

    /// Drive the user count with a load shape instead of `-u` / `-r`.
    pub fn shape(mut self, shape: impl LoadShape) -> Self {
        self.shape = Some(Box::new(shape));
        self
    }

    /// Runs once, before anything starts.
    pub fn on_init(mut self, listener: impl Fn(&Environment) + Send + Sync + 'static) -> Self {
        self.events.init.push(Box::new(listener));
        self
    }

    /// Runs when a test starts (also when a stopped test is started again).
    pub fn on_test_start(
        mut self,
        listener: impl Fn(&Environment) + Send + Sync + 'static,
    ) -> Self {
        self.events.test_start.push(Box::new(listener));
        self
    }

    /// Runs when a test begins to stop, before users are stopped.
    pub fn on_test_stopping(
        mut self,
        listener: impl Fn(&Environment) + Send + Sync + 'static,
    ) -> Self {
        self.events.test_stopping.push(Box::new(listener));
        self
    }

    /// Runs when every user has stopped.
    pub fn on_test_stop(mut self, listener: impl Fn(&Environment) + Send + Sync + 'static) -> Self {
        self.events.test_stop.push(Box::new(listener));
        self
    }

    /// Runs when the target user count is reached, with that count.
    pub fn on_spawning_complete(
        mut self,
        listener: impl Fn(&Environment, u64) + Send + Sync + 'static,
    ) -> Self {
        self.events.spawning_complete.push(Box::new(listener));
        self
    }

    /// Runs after every request (HTTP or custom). Keep it cheap: it is on the hot path.
    pub fn on_request(
        mut self,
        listener: impl Fn(&RequestEvent<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.events.request.push(Box::new(listener));
        self
    }

    /// Runs when a task returns an error or panics.
    pub fn on_user_error(
        mut self,
        listener: impl Fn(&UserErrorEvent<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.events.user_error.push(Box::new(listener));
        self
    }

    /// Runs once a second with the generator's own usage (CPU, memory, container limits, scheduler lag).
    pub fn on_usage_monitor(
        mut self,
        listener: impl Fn(&Environment, &cicada_monitor::Usage) + Send + Sync + 'static,
    ) -> Self {
        self.events.usage_monitor.push(Box::new(listener));
        self
    }

    /// Runs when the generator's CPU goes over `--max-cpu`, with the CPU share in percent.
    pub fn on_cpu_warning(
        mut self,
        listener: impl Fn(&Environment, f64) + Send + Sync + 'static,
    ) -> Self {
        self.events.cpu_warning.push(Box::new(listener));
        self
    }

    /// Runs on every action of the resource guard (pause, shed, resume, stop) and limit crossing.
    pub fn on_guard_action(
        mut self,
        listener: impl Fn(&Environment, &crate::guard::GuardAction) + Send + Sync + 'static,
    ) -> Self {
        self.events.guard_action.push(Box::new(listener));
        self
    }

    /// Runs on a cluster's events: on a master, workers that connect, go missing, come back or leave, their
    /// heartbeats and merged statistics; on a worker, the heartbeats and statistics it sends.
    pub fn on_cluster(
        mut self,
        listener: impl Fn(&Environment, &crate::events::ClusterEvent<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.events.cluster.push(Box::new(listener));
        self
    }

    /// Runs when the stats are reset.
    pub fn on_reset_stats(
        mut self,
        listener: impl Fn(&Environment) + Send + Sync + 'static,
    ) -> Self {
        self.events.reset_stats.push(Box::new(listener));
        self
    }

    /// Runs after the test, before the exit code is final: call [`Environment::set_exit_code`] to change it.
    pub fn on_quitting(mut self, listener: impl Fn(&Environment) + Send + Sync + 'static) -> Self {
        self.events.quitting.push(Box::new(listener));
        self
    }

    /// Runs last, with the exit code.
    pub fn on_quit(mut self, listener: impl Fn(i32) + Send + Sync + 'static) -> Self {
        self.events.quit.push(Box::new(listener));
        self
    }

    /// Handle custom messages of `kind` (Locust's `runner.register_message`), on whichever side receives them: a
    /// worker gets what its master sends, a master what its workers send, a single process what it sends itself.
    /// Each message's handler runs on a task of its own, so a long handler delays neither the cluster nor other
    /// messages; the data is JSON-decoded into `T`. One handler per kind; kinds starting with `cicada.` are
    /// reserved. Send with `env.messages()` ([`crate::messages::Messages`]).
    ///
    /// ```no_run
    /// use cicada::prelude::*;
    ///
    /// # async fn index(user: &mut User) -> TaskResult { Ok(()) }
    /// Cicada::new()
    ///     .on_message("greeting", |env, message: Message<String>| async move {
    ///         println!("{:?} says {}", message.source, message.data);
    ///         let _ = env.messages().reply(&message.source, "thanks", &"you too");
    ///     })
    ///     .on_test_start(|env| {
    ///         let _ = env.messages().send("greeting", "hello");
    ///     })
    ///     .user(UserType::<()>::new("Visitor").task(index));
    /// ```
    pub fn on_message<T, F, Fut>(mut self, kind: &str, handler: F) -> Self
    where
        T: serde::de::DeserializeOwned + Send + 'static,
        F: Fn(Arc<Environment>, crate::messages::Message<T>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.exchange.messages.register(kind, handler);
        self
    }

    /// Bounds on the custom messages this process sends (size and rate; see [`crate::messages::MessageLimits`]).
    pub fn message_limits(mut self, limits: crate::messages::MessageLimits) -> Self {
        self.exchange.messages.set_limits(limits);
        self
    }

    /// Register a test data source: its items are handed out in order, each once across the whole cluster, to
    /// users that call `user.next_item::<T>(name)`. A file source is checked whole before the run: a missing,
    /// too large or malformed file stops the run with exit code 2, naming the file and the line.
    pub fn data_source(mut self, name: &str, source: crate::data::DataSource) -> Self {
        self.exchange.data.add(name, source);
        self
    }

    /// The test as source (a script and what it requires, in a form the embedding program reads back), for a
    /// master to serve to workers started without a test (`cicada --worker -f -`, Locust's `-f -`); `name` is shown
    /// in messages (the test file's name). Compiled tests have no source: their workers run the same binary.
    pub fn test_source(mut self, name: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        self.exchange.test_source = Some(cicada_cluster::TestSource {
            name: name.into(),
            payload: bytes::Bytes::from(payload.into()),
        });
        self
    }

    /// The test as a cluster compares it: a digest and one line per user type and task. A master refuses a worker
    /// whose digest differs, naming the lines that differ; tools that speak the cluster protocol themselves (the
    /// benchmarks' simulated workers) present it.
    pub fn cluster_identity(&self) -> (String, String) {
        let identity = crate::cluster::test_identity(&self.types);
        (identity.fingerprint, identity.summary)
    }

    /// Run with the process's arguments and return its exit code.
    pub fn run(self) -> ExitCode {
        ExitCode::from(self.run_with_args(std::env::args_os()).clamp(0, 255) as u8)
    }

    /// Run with these arguments (the first is the program name) and return the exit code.
    pub fn run_with_args<I, T>(mut self, args: I) -> i32
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut options = match Options::parse_args(args) {
            Ok(options) => options,
            Err(OptionsError::Cli(error)) => {
                let code = error.exit_code();
                let _ = error.print();
                return code;
            }
            Err(error) => {
                eprintln!("error: {error}");
                return i32::from(EXIT_USAGE);
            }
        };
        if let Err(error) =
            crate::logging::init(options.loglevel, options.logfile.as_deref(), options.worker)
        {
            eprintln!("error: --logfile: {error}");
            return i32::from(EXIT_USAGE);
        }
        for expr in std::mem::take(&mut self.checks) {
            match crate::checks::Check::parse(&expr) {
                Ok(check) => options.checks.push(check),
                Err(error) => {
                    eprintln!("error: Cicada::check: {error}");
                    return i32::from(EXIT_USAGE);
                }
            }
        }
        match self.prepare(&options) {
            Ok(Prepared::Done) => 0,
            Ok(Prepared::Run(types)) => {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .on_thread_park(Stats::flush_current_thread)
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        eprintln!("error: cannot start the async runtime: {error}");
                        return 1;
                    }
                };
                let events = Arc::new(self.events);
                runtime.block_on(run(
                    types,
                    self.shape,
                    events,
                    Arc::new(options),
                    self.exchange,
                ))
            }
            Err(message) => {
                eprintln!("error: {message}");
                i32::from(EXIT_USAGE)
            }
        }
    }

    /// Validate user types against the options; answer `--list` and `--show-task-ratio`.
    fn prepare(&mut self, options: &Options) -> Result<Prepared, String> {
        if self.types.is_empty() {
            return Err("no user types: register at least one with Cicada::user".to_string());
        }
        for name in &options.user_types {
            if !self.types.iter().any(|t| t.name() == name) {
                let known: Vec<_> = self.types.iter().map(|t| t.name().to_string()).collect();
                return Err(format!(
                    "unknown user type `{name}` (this test has: {})",
                    known.join(", ")
                ));
            }
        }
        let mut types = std::mem::take(&mut self.types);
        if !options.user_types.is_empty() {
            types.retain(|t| options.user_types.iter().any(|n| n == t.name()));
        }
        let filter = TagFilter {
            include: options.tags.clone(),
            exclude: options.exclude_tags.clone(),
        };
        types.retain_mut(|t| {
            let keep = t.filter_tags(&filter);
            if !keep {
                tracing::warn!(
                    "user type {} has no task left after tag filtering",
                    t.name()
                );
            }
            keep
        });
        if types.is_empty() {
            return Err(
                "no task is left to run after --tags / --exclude-tags filtering".to_string(),
            );
        }
        crate::user::arrival::check_types(&types, options)?;
        if options.list {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "Available user types:");
            for t in &types {
                let _ = writeln!(out, "    {}", t.name());
            }
            return Ok(Prepared::Done);
        }
        if options.show_task_ratio {
            print!("{}", report::task_ratio_table(&types));
            return Ok(Prepared::Done);
        }
        // A `--worker --processes` parent only starts workers: the files are the master's to check.
        if !(options.worker && options.processes.is_some()) {
            self.exchange.check(RunMode::of(options))?;
        }
        Ok(Prepared::Run(types))
    }
}

enum Prepared {
    Done,
    Run(Vec<Box<dyn UserKind>>),
}

/// Which jobs a process does; each mode is a short function composed of the same pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunMode {
    /// One process: it runs the users, collects their stats and writes the reports.
    Local,
    /// A cluster's master: the driver, the collector and the reports, with the users on workers.
    Master,
    /// A cluster's worker: the users, taken from the master, whose stats go to the master.
    Worker,
}

impl RunMode {
    fn of(options: &Options) -> RunMode {
        if options.worker {
            RunMode::Worker
        } else if options.master || options.processes.is_some() {
            RunMode::Master
        } else {
            RunMode::Local
        }
    }
}

/// Run the test in its mode; returns the exit code.
async fn run(
    types: Vec<Box<dyn UserKind>>,
    shape: Option<Box<dyn LoadShape>>,
    events: Arc<Events>,
    options: Arc<Options>,
    exchange: Exchange,
) -> i32 {
    match RunMode::of(&options) {
        RunMode::Worker if options.processes.is_some() => run_local_workers(&options).await,
        RunMode::Worker => run_worker(types, events, options, exchange).await,
        mode => run_driven(types, shape, events, options, mode, exchange).await,
    }
}

/// A local run or a master: set up, drive until something ends the test, collect every second, finish with the
/// reports. A master with `--processes` also starts its workers.
async fn run_driven(
    types: Vec<Box<dyn UserKind>>,
    shape: Option<Box<dyn LoadShape>>,
    events: Arc<Events>,
    options: Arc<Options>,
    mode: RunMode,
    exchange: Exchange,
) -> i32 {
    let (mut setup, mut signals) =
        match setup::RunSetup::build(types, events, options, mode, exchange).await {
            Ok(built) => built,
            Err(code) => return code,
        };
    let mut local_workers = None;
    if let (Some(requested), Some(master)) = (setup.options.processes, setup.cluster.as_ref()) {
        let started = crate::cluster::processes::count(requested).and_then(|count| {
            crate::cluster::processes::LocalWorkers::start(
                count,
                "127.0.0.1",
                master.local_addr().port(),
            )
        });
        match started {
            Ok(workers) => local_workers = Some(workers),
            Err(error) => {
                eprintln!("error: {error}");
                setup.runner.quit();
                return i32::from(EXIT_USAGE);
            }
        }
    }
    if mode == RunMode::Master
        && let Err(code) = setup.wait_for_workers(&mut signals).await
    {
        return code;
    }
    let mut collector = collector::Collector::new(&mut setup);
    let reason = driver::Driver::new(&setup, shape)
        .drive(&mut signals, &mut collector)
        .await;
    // While users stop and reports are written, a further signal ends the process at once.
    let forced_exit = signals.exit_on_next(reason.signal());
    let code = finish::finish(setup, collector, reason).await;
    forced_exit.abort();
    if let Some(mut workers) = local_workers {
        // They quit when the master does; give them a moment before they are ended by pid.
        workers.wait(std::time::Duration::from_secs(10));
    }
    code
}

/// A worker: the users, driven by the master; no web UI, no reports.
async fn run_worker(
    types: Vec<Box<dyn UserKind>>,
    events: Arc<Events>,
    options: Arc<Options>,
    exchange: Exchange,
) -> i32 {
    let identity = crate::cluster::test_identity(&types);
    let (setup, mut signals) =
        match setup::RunSetup::build(types, events, options.clone(), RunMode::Worker, exchange)
            .await
        {
            Ok(built) => built,
            Err(code) => return code,
        };
    let (handle, cluster_events) = match crate::cluster::worker::connect(&options, identity) {
        Ok(session) => session,
        Err(error) => {
            eprintln!("error: --worker: {error}");
            setup.runner.quit();
            return i32::from(EXIT_USAGE);
        }
    };
    setup.env.messages.connect_worker(handle.clone());
    let code = crate::cluster::worker::WorkerRun {
        env: &setup.env,
        spawners: &setup.web.spawners,
        guard: setup.guard.as_ref(),
        signals: &mut signals,
        handle,
        events: cluster_events,
    }
    .run()
    .await;
    let _ = setup.runner_task.await;
    code
}

/// `--worker --processes N`: N workers of this binary, and this process only waits for them.
async fn run_local_workers(options: &Options) -> i32 {
    let count = match crate::cluster::processes::count(options.processes.unwrap_or(1)) {
        Ok(count) => count,
        Err(error) => {
            eprintln!("error: {error}");
            return i32::from(EXIT_USAGE);
        }
    };
    let mut workers = match crate::cluster::processes::LocalWorkers::start(
        count,
        &options.master_host,
        options.master_port,
    ) {
        Ok(workers) => workers,
        Err(error) => {
            eprintln!("error: {error}");
            return i32::from(EXIT_USAGE);
        }
    };
    let mut signals = match crate::signals::StopSignals::install() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("error: {error}");
            return 1;
        }
    };
    // Until they are all gone, or a signal asks this process to end them (dropping them ends them by pid).
    loop {
        tokio::select! {
            _ = signals.next() => break,
            _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                if workers.all_exited() {
                    break;
                }
            }
        }
    }
    drop(workers);
    0
}

/// Why [`fetch_test_source`] got no test.
#[derive(Debug, thiserror::Error)]
pub enum FetchSourceError {
    /// The command line is not usable (the message says what to fix).
    #[error("{0}")]
    Usage(String),
    /// The master refused (token, version), or runs a compiled test it cannot send.
    #[error("{0}")]
    Refused(String),
    /// No master answered within `--master-timeout`.
    #[error("{0}")]
    Unreachable(String),
}

impl FetchSourceError {
    /// The process exit code for this error: 2 (usage, refused) or 3 (no master, as a worker that lost its master).
    pub fn exit_code(&self) -> i32 {
        match self {
            FetchSourceError::Usage(_) | FetchSourceError::Refused(_) => i32::from(EXIT_USAGE),
            FetchSourceError::Unreachable(_) => crate::cluster::EXIT_MASTER_LOST,
        }
    }
}

/// For a worker started without a test (`-f -`): fetch the master's test as source, with the master's address,
/// token and TLS settings taken from this command line (the same flags, environment variables and config file as
/// a run), waiting for the master up to `--master-timeout`. Returns the test's name and its payload (what the
/// master gave [`Cicada::test_source`]); the worker then builds the test from it and runs it with the same
/// arguments.
pub fn fetch_test_source<I, T>(args: I) -> Result<(String, Vec<u8>), FetchSourceError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let options = Options::parse_args(args).map_err(|error| match error {
        OptionsError::Cli(error) => FetchSourceError::Usage(error.to_string()),
        error => FetchSourceError::Usage(format!("error: {error}")),
    })?;
    if !options.worker {
        return Err(FetchSourceError::Usage(
            "-f - takes the test from a cluster master: start a worker with it (--worker -f - --master-host HOST)"
                .into(),
        ));
    }
    let config = crate::cluster::worker::config(&options, cicada_cluster::TestIdentity::default())
        .map_err(FetchSourceError::Usage)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| FetchSourceError::Usage(format!("cannot start a runtime: {error}")))?;
    let fetched = runtime.block_on(cicada_cluster::fetch_test(&config, options.master_timeout));
    match fetched {
        Ok(source) => Ok((source.name, source.payload.to_vec())),
        Err(error @ cicada_cluster::FetchTestError::Unreachable { .. }) => {
            Err(FetchSourceError::Unreachable(error.to_string()))
        }
        Err(error @ cicada_cluster::FetchTestError::Refused { .. }) => {
            Err(FetchSourceError::Refused(error.to_string()))
        }
        Err(error) => Err(FetchSourceError::Usage(error.to_string())),
    }
}
