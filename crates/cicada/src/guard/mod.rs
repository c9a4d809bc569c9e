//! The resource guard: the generator watches its own CPU, memory and scheduler lag, and protects the test.
//!
//! Once a second it samples the process and its container ([`cicada_monitor`]), fires `usage_monitor`, marks the
//! interval saturated when CPU or lag is over its limit (latencies measured then are inflated by the generator
//! itself), and in protect mode applies the [`policy`]: pause spawning, shed the newest users, resume when
//! usage is back under the low-water marks, or stop the test when nothing helps. Every action is logged once, fired
//! as an event, counted, and kept for the reports.

pub mod policy;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cicada_monitor::{LagProbe, Monitor, Usage};
use cicada_stats::GeneratorSample;

use crate::environment::Environment;
use crate::runner::{GuardCap, RunnerState};
pub use policy::{Breaches, Decision, GuardLimits, GuardMode, Observation, Policy};

/// Most guard actions kept for reports; later ones are counted, not kept.
const MAX_KEPT_ACTIONS: usize = 1_000;
/// How often the guard samples.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the scheduler-lag probe wants to wake.
const LAG_PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// A memory limit as given on the command line: bytes, or a share of the container's (or machine's) memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryLimit {
    /// An absolute size.
    Bytes(u64),
    /// Percent of the memory the process may use (container limit, else machine memory).
    Percent(f64),
}

impl MemoryLimit {
    /// Bytes this limit allows out of `available`.
    pub fn resolve(self, available: u64) -> u64 {
        match self {
            MemoryLimit::Bytes(bytes) => bytes,
            MemoryLimit::Percent(percent) => (available as f64 * percent / 100.0) as u64,
        }
    }
}

/// Parse `85%`, `2GiB`, `512MB`, `300M` or a plain number of bytes.
pub fn parse_memory_limit(text: &str) -> Result<MemoryLimit, String> {
    let text = text.trim();
    let bad =
        || format!("`{text}` is not a memory size (try 85%, 512MiB, 2GB or a number of bytes)");
    if let Some(percent) = text.strip_suffix('%') {
        let percent: f64 = percent.trim().parse().map_err(|_| bad())?;
        if percent.is_nan() || percent <= 0.0 || percent > 100.0 {
            return Err(format!(
                "`{text}`: a percentage must be above 0 and at most 100"
            ));
        }
        return Ok(MemoryLimit::Percent(percent));
    }
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.trim().parse().map_err(|_| bad())?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1_048_576.0,
        "g" | "gb" => 1e9,
        "gib" => 1_073_741_824.0,
        _ => return Err(bad()),
    };
    if number.is_nan() || number <= 0.0 {
        return Err(bad());
    }
    Ok(MemoryLimit::Bytes((number * multiplier) as u64))
}

/// The guard's settings from the command line.
#[derive(Debug, Clone)]
pub struct GuardSettings {
    /// Off, warn or protect.
    pub mode: GuardMode,
    /// Percent of the available CPU.
    pub max_cpu_percent: f64,
    /// Memory limit.
    pub max_memory: MemoryLimit,
    /// Scheduler lag limit.
    pub max_lag: Duration,
}

/// What kind of action the guard took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardActionKind {
    /// CPU went over its limit (Locust's `cpu_warning`).
    CpuWarning,
    /// A limit was crossed (logged; in protect mode spawning pauses too).
    OverLimit,
    /// Usage went back under every limit.
    BackUnderLimits,
    /// Spawning paused.
    PauseSpawning,
    /// Users were stopped.
    Shed,
    /// The cap was lifted; ramping back toward the target.
    Resume,
    /// The test was stopped.
    StopTest,
}

/// One thing the guard did or noticed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GuardAction {
    /// When, Unix milliseconds.
    pub unix_ms: u64,
    /// Seconds since the guard started (about the start of the test).
    pub run_seconds: f64,
    /// What.
    pub kind: GuardActionKind,
    /// Users running at that moment.
    pub users: u64,
    /// Users stopped by this action.
    pub users_shed: u64,
    /// Why, with the measurements.
    pub reason: String,
}

/// The limits the guard enforced, for reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GuardLimitsReport {
    /// CPU the process may use, in cores (affinity and container quota).
    pub cores_available: f64,
    /// Memory the process may use (container limit, else machine memory).
    pub memory_limit_bytes: u64,
    /// `--max-cpu`, percent of the available CPU.
    pub max_cpu_percent: f64,
    /// `--max-memory`, resolved to bytes.
    pub max_memory_bytes: u64,
    /// `--max-lag`, milliseconds.
    pub max_lag_ms: f64,
    /// Which cgroup interface the limits came from.
    pub cgroup: String,
}

/// What the guard saw and did over the run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GuardReport {
    /// The guard's mode.
    pub mode: String,
    /// The limits in force.
    pub limits: GuardLimitsReport,
    /// Seconds sampled.
    pub samples: u64,
    /// Seconds in which the generator was saturated (CPU or lag over its limit).
    pub saturated_samples: u64,
    /// Share of the run that was saturated, 0 to 1.
    pub saturated_share: f64,
    /// Highest CPU seen, percent of the available CPU.
    pub peak_cpu_percent: f64,
    /// Highest resident memory seen.
    pub peak_rss_bytes: u64,
    /// Worst scheduler lag seen, milliseconds.
    pub peak_lag_ms: f64,
    /// Users the guard stopped over the run.
    pub users_shed: u64,
    /// Seconds during which spawning was paused.
    pub spawn_paused_seconds: f64,
    /// Why the guard stopped the test, if it did.
    pub stopped_test: Option<String>,
    /// Actions, oldest first (at most 1,000).
    pub actions: Vec<GuardAction>,
    /// Actions beyond those kept.
    pub actions_not_kept: u64,
}

#[derive(Default)]
struct IntervalPeak {
    saturated: bool,
    cpu_percent: f64,
    rss_bytes: u64,
    lag: Duration,
}

struct GuardState {
    report: GuardReport,
    interval: IntervalPeak,
    latest: Option<Usage>,
    paused_since: Option<Instant>,
}

/// A running guard; cheap to clone.
#[derive(Clone)]
pub(crate) struct Guard {
    state: Arc<Mutex<GuardState>>,
}

impl Guard {
    /// Start sampling (and protecting) on the current runtime. `None` when the guard is off.
    pub(crate) fn start(settings: &GuardSettings, env: Arc<Environment>) -> Option<Guard> {
        if settings.mode == GuardMode::Off {
            return None;
        }
        let mut monitor = match Monitor::new() {
            Ok(monitor) => monitor,
            Err(error) => {
                tracing::warn!(
                    "the resource guard cannot read this machine's usage ({error}); it is off for this run"
                );
                return None;
            }
        };
        let probe = LagProbe::spawn(LAG_PROBE_INTERVAL);
        monitor.attach_lag_probe(&probe);
        let limits = monitor.limits().clone();
        let memory_limit = limits.memory_limit_bytes;
        let max_memory = settings.max_memory.resolve(memory_limit);
        let guard_limits = GuardLimits::new(
            settings.max_cpu_percent,
            max_memory,
            memory_limit,
            settings.max_lag,
        );
        let report = GuardReport {
            mode: format!("{:?}", settings.mode).to_lowercase(),
            limits: GuardLimitsReport {
                cores_available: limits.cores_available,
                memory_limit_bytes: memory_limit,
                max_cpu_percent: settings.max_cpu_percent,
                max_memory_bytes: max_memory,
                max_lag_ms: settings.max_lag.as_secs_f64() * 1e3,
                cgroup: limits.cgroup.as_ref().map_or_else(
                    || "none".to_string(),
                    |c| match &c.memory {
                        Some(memory) => format!("{:?} ({})", c.version, memory.dir.display()),
                        None => format!("{:?}", c.version),
                    },
                ),
            },
            ..GuardReport::default()
        };
        tracing::info!(
            "resource guard ({}): {:.2} cores and {} MiB available; limits: CPU {:.0}%, memory {} MiB, lag {} ms",
            report.mode,
            limits.cores_available,
            memory_limit >> 20,
            settings.max_cpu_percent,
            max_memory >> 20,
            settings.max_lag.as_millis()
        );
        let guard = Guard {
            state: Arc::new(Mutex::new(GuardState {
                report,
                interval: IntervalPeak::default(),
                latest: None,
                paused_since: None,
            })),
        };
        let policy = Policy::new(guard_limits, settings.mode);
        tokio::spawn(guard.clone().run(monitor, probe, policy, env));
        Some(guard)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GuardState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(
        self,
        mut monitor: Monitor,
        _probe: LagProbe,
        mut policy: Policy,
        env: Arc<Environment>,
    ) {
        let started = Instant::now();
        let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick fires at once; CPU needs two samples to have a rate.
        ticker.tick().await;
        monitor.sample();
        let mut over = false;
        let mut cpu_warned = false;
        loop {
            ticker.tick().await;
            let usage = monitor.sample();
            let users = env.runner.user_count();
            let observation = Observation {
                at: Instant::now(),
                cpu_percent: usage.cpu_percent_of_available,
                memory_bytes: usage.memory_used_bytes,
                lag: usage.max_lag,
                users,
            };
            let breaches = policy.breaches(&observation);
            self.record_sample(&usage, breaches);
            env.events.fire_usage_monitor(&env, &usage);
            let describe = || {
                format!(
                    "CPU {:.0}% of {:.2} cores, RSS {} MiB, scheduler lag {} ms",
                    usage.cpu_percent_of_available,
                    monitor.limits().cores_available,
                    usage.rss_bytes >> 20,
                    usage.max_lag.as_millis()
                )
            };
            if breaches.cpu && !cpu_warned {
                cpu_warned = true;
                env.events
                    .fire_cpu_warning(&env, usage.cpu_percent_of_available);
                self.act(
                    &env,
                    started,
                    GuardActionKind::CpuWarning,
                    users,
                    0,
                    describe(),
                );
            }
            // Crossing back counts only under the low-water marks, so usage hovering at a limit does not flap.
            if breaches.any() && !over {
                over = true;
                tracing::warn!(
                    "the load generator is over its {} limit ({}): response times measured now are not reliable",
                    breaches.describe(),
                    describe()
                );
                self.act(
                    &env,
                    started,
                    GuardActionKind::OverLimit,
                    users,
                    0,
                    format!("{}: {}", breaches.describe(), describe()),
                );
            } else if over && policy.below_low_water(&observation) {
                over = false;
                cpu_warned = false;
                tracing::info!(
                    "the load generator is back under its limits ({})",
                    describe()
                );
                self.act(
                    &env,
                    started,
                    GuardActionKind::BackUnderLimits,
                    users,
                    0,
                    describe(),
                );
            }
            // Only a test that is spawning or running can be protected; between tests (and while users stop at
            // the end) there is nothing to act on, and the next test starts with a clean slate.
            if !matches!(
                env.runner.state(),
                RunnerState::Spawning | RunnerState::Running
            ) {
                policy.reset();
                if self.lock().paused_since.is_some() {
                    self.close_pause();
                }
                continue;
            }
            for decision in policy.observe(&observation) {
                match decision {
                    Decision::PauseSpawning => {
                        env.runner.guard(GuardCap::Pause);
                        self.lock().paused_since.get_or_insert(Instant::now());
                        tracing::warn!("resource guard: spawning paused at {users} users");
                        self.act(
                            &env,
                            started,
                            GuardActionKind::PauseSpawning,
                            users,
                            0,
                            describe(),
                        );
                    }
                    Decision::Shed(count) => {
                        env.runner.guard(GuardCap::Shed(count));
                        self.lock().report.users_shed += count;
                        tracing::warn!(
                            "resource guard: stopping the {count} newest of {users} users ({})",
                            describe()
                        );
                        self.act(
                            &env,
                            started,
                            GuardActionKind::Shed,
                            users,
                            count,
                            describe(),
                        );
                    }
                    Decision::Resume => {
                        env.runner.guard(GuardCap::Lift);
                        self.close_pause();
                        tracing::info!(
                            "resource guard: usage is back to normal; ramping back toward the target"
                        );
                        self.act(&env, started, GuardActionKind::Resume, users, 0, describe());
                    }
                    Decision::StopTest(reason) => {
                        tracing::error!(
                            "resource guard: stopping the test: {reason} ({})",
                            describe()
                        );
                        self.lock().report.stopped_test = Some(reason.clone());
                        self.act(&env, started, GuardActionKind::StopTest, users, 0, reason);
                        env.runner.quit();
                    }
                }
            }
        }
    }

    fn record_sample(&self, usage: &Usage, breaches: Breaches) {
        let mut state = self.lock();
        let report = &mut state.report;
        report.samples += 1;
        if breaches.saturated() {
            report.saturated_samples += 1;
        }
        report.saturated_share = report.saturated_samples as f64 / report.samples as f64;
        report.peak_cpu_percent = report.peak_cpu_percent.max(usage.cpu_percent_of_available);
        report.peak_rss_bytes = report.peak_rss_bytes.max(usage.rss_bytes);
        report.peak_lag_ms = report.peak_lag_ms.max(usage.max_lag.as_secs_f64() * 1e3);
        let interval = &mut state.interval;
        interval.saturated |= breaches.saturated();
        interval.cpu_percent = interval.cpu_percent.max(usage.cpu_percent_of_available);
        interval.rss_bytes = interval.rss_bytes.max(usage.rss_bytes);
        interval.lag = interval.lag.max(usage.max_lag);
        state.latest = Some(usage.clone());
    }

    fn act(
        &self,
        env: &Environment,
        started: Instant,
        kind: GuardActionKind,
        users: u64,
        users_shed: u64,
        reason: String,
    ) {
        let action = GuardAction {
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            run_seconds: started.elapsed().as_secs_f64(),
            kind,
            users,
            users_shed,
            reason,
        };
        env.events.fire_guard_action(env, &action);
        let mut state = self.lock();
        if state.report.actions.len() < MAX_KEPT_ACTIONS {
            state.report.actions.push(action);
        } else {
            state.report.actions_not_kept += 1;
        }
    }

    fn close_pause(&self) {
        let mut state = self.lock();
        if let Some(since) = state.paused_since.take() {
            state.report.spawn_paused_seconds += since.elapsed().as_secs_f64();
        }
    }

    /// The generator's peak state since the last call (for a history point), with the users the guard holds back.
    pub(crate) fn take_interval(&self, users_held_back: u64) -> GeneratorSample {
        let mut state = self.lock();
        let peak = std::mem::take(&mut state.interval);
        GeneratorSample {
            saturated: peak.saturated,
            cpu_percent: peak.cpu_percent,
            rss_bytes: peak.rss_bytes,
            lag_ms: peak.lag.as_secs_f64() * 1e3,
            users_held_back,
        }
    }

    /// The latest sample, for the console.
    pub(crate) fn latest(&self) -> Option<Usage> {
        self.lock().latest.clone()
    }

    /// The report so far; a pause still open counts up to now.
    pub(crate) fn report(&self) -> GuardReport {
        self.report_with_actions(usize::MAX)
    }

    /// The report with only the newest `max_actions` actions (the live UI's view).
    pub(crate) fn report_with_actions(&self, max_actions: usize) -> GuardReport {
        let mut state = self.lock();
        // Clone everything but the (up to 1,000) actions, then only the actions asked for.
        let actions = std::mem::take(&mut state.report.actions);
        let mut report = state.report.clone();
        let skip = actions.len().saturating_sub(max_actions);
        report.actions = actions[skip..].to_vec();
        state.report.actions = actions;
        if let Some(since) = state.paused_since {
            report.spawn_paused_seconds += since.elapsed().as_secs_f64();
        }
        report
    }

    /// Whether the guard stopped the test.
    pub(crate) fn stopped_test(&self) -> bool {
        self.lock().report.stopped_test.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_parse() {
        assert_eq!(parse_memory_limit("85%"), Ok(MemoryLimit::Percent(85.0)));
        assert_eq!(
            parse_memory_limit("512MiB"),
            Ok(MemoryLimit::Bytes(512 << 20))
        );
        assert_eq!(
            parse_memory_limit("2GB"),
            Ok(MemoryLimit::Bytes(2_000_000_000))
        );
        assert_eq!(parse_memory_limit("1000"), Ok(MemoryLimit::Bytes(1000)));
        assert!(parse_memory_limit("lots").is_err());
        assert!(parse_memory_limit("150%").is_err());
        assert!(parse_memory_limit("0").is_err());
        assert_eq!(MemoryLimit::Percent(50.0).resolve(1000), 500);
    }
}
