//! The entry point of a test binary: register user types, shapes and event listeners, then run.
//!
//! [`Cicada::run`] reads the options, sets up logging and a multi-threaded tokio runtime that uses every core, starts
//! the demo target when no host is given, drives the runner (fixed target, or a load shape), prints the stats table
//! while running, and at the end writes every report and returns the exit code: 0 when all went well, 1 (or
//! `--exit-code-on-error`) when a request failed or a task raised an error, 2 for bad usage, 4 when the resource
//! guard had to stop the test.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cicada_stats::{GeneratorSample, Stats, StatsConfig};

use crate::environment::Environment;
use crate::events::{Events, RequestEvent, UserErrorEvent};
use crate::guard::Guard;
use crate::options::{Options, OptionsError};
use crate::report;
use crate::runner::{self, RunnableType, RunnerState, Target};
use crate::shape::LoadShape;
use crate::user::UserType;
use crate::user::run::UserKind;
use crate::user::task::TagFilter;
use crate::web::{TestClock, WebContext, WebSettings};

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
}

impl Cicada {
    /// An empty test.
    pub fn new() -> Self {
        Self::default()
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
        let options = match Options::parse_args(args) {
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
        if let Err(error) = crate::logging::init(options.loglevel, options.logfile.as_deref()) {
            eprintln!("error: --logfile: {error}");
            return i32::from(EXIT_USAGE);
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
                runtime.block_on(run(types, self.shape, events, Arc::new(options)))
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
        Ok(Prepared::Run(types))
    }
}

enum Prepared {
    Done,
    Run(Vec<Box<dyn UserKind>>),
}

/// How often the stats table is printed while running.
const PRINT_INTERVAL: Duration = Duration::from_secs(2);
/// How often a history point is kept (for charts and reports).
const HISTORY_INTERVAL: Duration = Duration::from_secs(2);

async fn run(
    types: Vec<Box<dyn UserKind>>,
    mut shape: Option<Box<dyn LoadShape>>,
    events: Arc<Events>,
    options: Arc<Options>,
) -> i32 {
    // First, before any load: a SIGTERM must find the handlers in place, and the reserve must exist before memory
    // runs short.
    let mut signals = match crate::signals::StopSignals::install() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("error: cannot install the SIGINT/SIGTERM handlers: {error}");
            return 1;
        }
    };
    let report_reserve = ReportReserve::new();
    // Every report path is checked before any load is sent: a report that cannot be written is a usage error now,
    // not a lost report at the end.
    let mut report_outputs = match report::ReportOutputs::open(&options) {
        Ok(outputs) => outputs,
        Err(error) => {
            eprintln!("error: {error}");
            return i32::from(EXIT_USAGE);
        }
    };
    let mut history_csv = report_outputs.take_history_csv();
    let stats = Stats::new(StatsConfig {
        max_names: options.max_names,
        max_errors: options.max_errors,
        max_user_errors: options.max_errors,
        ..StatsConfig::default()
    });
    let needs_host = types.iter().any(|t| t.host().is_none()) && options.host.is_none();
    let demo = if needs_host {
        match cicada_demo::DemoServer::start(([127, 0, 0, 1], 0).into()).await {
            Ok(demo) => {
                tracing::info!(
                    "no --host given: running against the built-in demo target at {}",
                    demo.url()
                );
                Some(demo)
            }
            Err(error) => {
                eprintln!("error: no --host given and the demo target could not start: {error}");
                return i32::from(EXIT_USAGE);
            }
        }
    } else {
        None
    };
    let host = options
        .host
        .clone()
        .or_else(|| demo.as_ref().map(cicada_demo::DemoServer::url))
        // Every type sets its own host: name the first one in reports.
        .or_else(|| types.iter().find_map(|t| t.host().map(str::to_string)))
        .unwrap_or_default();
    let names: Vec<String> = types.iter().map(|t| t.name().to_string()).collect();
    let parts = runner::channel(names);
    let env = Arc::new(Environment::new(
        stats.clone(),
        parts.handle.clone(),
        events.clone(),
        options.clone(),
        host.clone(),
    ));
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
                return i32::from(EXIT_USAGE);
            }
        }
    }
    events.fire_env("init", &events.init, &env);

    let spawners: Vec<_> = runnable.iter().map(|t| t.spawner.clone()).collect();
    let type_names: Vec<String> = runnable.iter().map(|t| t.name.clone()).collect();
    let runner = env.runner.clone();
    let runner_task = runner::start(parts, runnable, env.clone(), options.stop_timeout);
    let guard = Guard::start(&options.guard_settings(), env.clone());
    // The guard's thread watches until the reports are written, then ends with the run.
    let _guard_thread = guard.as_ref().map(Guard::owner);
    let started = Instant::now();
    let started_unix_ms = unix_now() * 1000;
    let web = Arc::new(WebContext {
        env: env.clone(),
        guard: guard.clone(),
        spawners,
        tasks,
        type_names,
        clock: TestClock::default(),
    });
    let headless = options.headless;
    if !headless {
        let settings = WebSettings {
            address: std::net::SocketAddr::new(options.web_host, options.web_port),
            login: options.web_login.clone(),
            tls: options.tls_cert.clone().zip(options.tls_key.clone()),
        };
        match crate::web::start(&settings, web.clone()).await {
            Ok(address) => {
                let scheme = if settings.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                tracing::info!("web UI: {scheme}://{address}");
            }
            Err(error) => {
                eprintln!("error: {error}");
                runner.quit();
                let _ = runner_task.await;
                return i32::from(EXIT_USAGE);
            }
        }
    }
    if headless || options.autostart {
        web.clock.set(options.run_time);
        if shape.is_none() {
            runner.start(options.users, options.spawn_rate);
        }
    }

    let (stop_reason, forced) = {
        let mut collect_tick = tokio::time::interval(Duration::from_secs(1));
        collect_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_print = Instant::now();
        let mut last_history = Instant::now();
        let mut reset_done = !options.reset_stats;
        let mut last_target: Option<Target> = None;
        let mut generator_since_point: Option<GeneratorSample> = None;
        let print_stats = (headless && !options.only_summary) || options.print_stats;
        // A load shape runs from the moment the test starts (at once when headless, on the start form otherwise).
        let mut shape_started: Option<Instant> = (headless || options.autostart).then(Instant::now);
        let mut autoquit_at: Option<Instant> = None;
        let mut stop_signal = None;
        let reason = loop {
            let deadline = web.clock.deadline();
            tokio::select! {
                _ = collect_tick.tick() => {}
                _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                    web.clock.set(None);
                    if headless {
                        tracing::info!("--run-time limit reached, stopping the test");
                        break "run time limit reached";
                    }
                    tracing::info!("run time limit reached, stopping the test");
                    runner.stop();
                    continue;
                }
                signal = signals.next() => {
                    tracing::info!(
                        "{}: stopping the test gracefully (send it again to exit at once)",
                        signal.stop_reason()
                    );
                    stop_signal = Some(signal);
                    break signal.stop_reason();
                }
                // The guard's emergency stop (or a task's stop_test) ends the run without waiting for the tick.
                _ = runner.wait_for_state(Duration::from_secs(86_400), |s| s == RunnerState::Quitting) => {}
            }
            if runner.state() == RunnerState::Quitting {
                if guard.as_ref().is_some_and(Guard::stopped_test) {
                    break "the resource guard stopped the test";
                }
                break "the test asked to stop";
            }
            let state = runner.state();
            if shape_started.is_none()
                && !matches!(state, RunnerState::Ready | RunnerState::Stopped)
            {
                shape_started = Some(Instant::now());
            }
            if let Some(seconds) = options.autoquit.filter(|_| !headless) {
                match (state, autoquit_at) {
                    (RunnerState::Stopped, None) => {
                        autoquit_at = Some(Instant::now() + Duration::from_secs(seconds));
                    }
                    (RunnerState::Stopped, Some(at)) if Instant::now() >= at => {
                        break "--autoquit after the test stopped";
                    }
                    (RunnerState::Stopped, Some(_)) => {}
                    _ => autoquit_at = None,
                }
            }
            if let (Some(shape), Some(shape_start)) = (shape.as_mut(), shape_started) {
                match shape.tick(shape_start.elapsed()) {
                    Some(target) => {
                        if last_target.as_ref() != Some(&target) {
                            runner.start_target(target.clone());
                            last_target = Some(target);
                        }
                    }
                    None => {
                        tracing::info!("the load shape ended the test");
                        break "the load shape ended";
                    }
                }
            }
            stats.collect();
            if !reset_done && runner.state() == RunnerState::Running {
                reset_done = true;
                stats.reset();
                events.fire_env("reset_stats", &events.reset_stats, &env);
            }
            let user_count = runner.user_count();
            let held_back = runner
                .guard_cap()
                .map_or(0, |cap| runner.target_user_count().saturating_sub(cap));
            let generator = guard.as_ref().map(|g| g.take_interval(held_back));
            if let Some(writer) = history_csv.as_mut()
                && let Err(error) = writer.append_with_generator(
                    &stats.snapshot(),
                    user_count,
                    unix_now(),
                    generator.as_ref(),
                )
            {
                tracing::warn!("writing the history CSV failed: {error}");
            }
            generator_since_point = merge_generator(generator_since_point, generator);
            if last_history.elapsed() >= HISTORY_INTERVAL {
                last_history = Instant::now();
                let mut point = stats.history_point(user_count);
                point.generator = generator_since_point.take();
                stats.push_history_point(point);
            }
            if print_stats && last_print.elapsed() >= PRINT_INTERVAL {
                last_print = Instant::now();
                let mut text = cicada_stats::report::console::stats_table(&stats.snapshot());
                if let Some(guard) = &guard {
                    text.push_str(&report::generator_line(guard, held_back));
                }
                report::print_console(&options, &text);
            }
        };
        (reason, signals.exit_on_next(stop_signal))
    };

    stats.collect();
    let mut point = stats.history_point(runner.user_count());
    point.generator = merge_generator(None, guard.as_ref().map(|g| g.take_interval(0)));
    stats.push_history_point(point);
    runner.quit();
    let _ = runner_task.await;
    forced.abort();
    if !stats.collect_final(Duration::from_secs(3)) {
        tracing::warn!("some samples were still in flight when the final stats were taken");
    }
    stats.push_history(0);
    if let Some(writer) = history_csv.as_mut() {
        let _ = writer.append(&stats.snapshot(), 0, unix_now());
    }
    // Memory that was kept aside goes back now, for the reports.
    drop(report_reserve);
    let snapshot = stats.snapshot();
    let guard_report = guard.as_ref().map(Guard::report);
    let mut exit_code = 0;
    let schedules = env.schedule_reports();
    let final_run = report::FinalRun {
        snapshot: &snapshot,
        guard: guard_report.as_ref(),
        schedules: &schedules,
        run_time: started.elapsed(),
        host: &host,
        stop_reason,
        started_unix_ms,
    };
    let reports_failed = report::write_final(
        &options,
        &stats,
        &final_run,
        report_outputs,
        history_csv.take(),
    )
    .map_err(|error| eprintln!("error: {error}"))
    .is_err();
    // A run whose every request was cut off by the stop got no answer from its target: that is a failed run, though
    // cut-off requests are not failures (a healthy run stopped mid-request has a few).
    let target_silent = snapshot.requests_cut_off > 0 && snapshot.total.num_requests == 0;
    let had_errors =
        snapshot.total.num_failures > 0 || !snapshot.user_errors.is_empty() || target_silent;
    if reports_failed {
        exit_code = report::EXIT_REPORT_FAILED;
    } else if guard_report
        .as_ref()
        .is_some_and(|g| g.stopped_test.is_some())
    {
        exit_code = EXIT_GUARD_STOPPED;
    } else if had_errors {
        exit_code = options.exit_code_on_error;
    }
    events.fire_env("quitting", &events.quitting, &env);
    if let Some(code) = env.exit_code_override() {
        exit_code = code;
    }
    events.fire_quit(exit_code);
    if let Some(demo) = demo {
        demo.shutdown().await;
    }
    exit_code
}

/// Combine the generator's state over two intervals (worst of each).
fn merge_generator(
    a: Option<GeneratorSample>,
    b: Option<GeneratorSample>,
) -> Option<GeneratorSample> {
    match (a, b) {
        (Some(a), Some(b)) => Some(GeneratorSample {
            saturated: a.saturated || b.saturated,
            cpu_percent: max_of(a.cpu_percent, b.cpu_percent),
            rss_bytes: max_of(a.rss_bytes, b.rss_bytes),
            lag_ms: max_of(a.lag_ms, b.lag_ms),
            users_held_back: a.users_held_back.max(b.users_held_back),
        }),
        (a, b) => a.or(b),
    }
}

/// Memory set aside at the start of a run and given back just before the final reports are written, so that a
/// generator that ran right up to its memory limit (the guard stopped it there) can still build its reports. The
/// pages are written so that they are really resident; the block is above glibc's mmap threshold, so freeing it
/// returns it to the kernel (and to the container's budget) at once.
struct ReportReserve(#[allow(dead_code)] Vec<u8>);

impl ReportReserve {
    /// 8 MiB: a snapshot, the JSON and CSV of a run with the default caps fit in a few MiB; a long run with many
    /// names needs more, which the guard's emergency stop frees by aborting the users.
    const BYTES: usize = 8 << 20;

    fn new() -> Self {
        ReportReserve(vec![0xA5; Self::BYTES])
    }
}

/// The larger of two measurements, either of which may be missing.
fn max_of<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b > a { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
