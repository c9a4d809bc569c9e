//! The resource guard: the generator watches its own CPU, memory and scheduler lag, and protects the test.
//!
//! The guard runs on an OS thread of its own ([`watcher`]), outside the tokio runtime whose users it watches, so a
//! starved or stalled runtime cannot silence it. Tens of times a second it reads memory and acts on the level and
//! the growth rate (pausing spawning before the limit, shedding users, an emergency stop before the OOM killer);
//! once a second it takes a full sample ([`cicada_monitor`]), fires `usage_monitor`, marks the interval when a
//! limit is over, and applies the [`policy`]; every two seconds it re-reads the container's limits. Every action
//! is logged once, fired as an event, counted, and kept for the reports; [`GuardStatus`] is its typed current
//! state, read by the console, the web UI and the reports.

pub mod policy;
mod watcher;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cicada_monitor::{LagProbe, Limits, Monitor, Usage};
use cicada_stats::GeneratorSample;

use crate::environment::Environment;
pub use policy::{
    Breaches, Decision, GuardLimits, GuardMode, MemoryObservation, Observation, Policy,
};

/// Most guard actions kept for reports; later ones are counted, not kept.
const MAX_KEPT_ACTIONS: usize = 1_000;
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
    /// Memory was about to run out: every user was aborted at once and the test stopped.
    Emergency,
    /// The container's limits changed while running (a resize, a new quota).
    LimitsChanged,
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

/// The limits the guard enforces (the latest, when they changed during the run), for reports.
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

impl GuardLimitsReport {
    fn new(limits: &Limits, settings: &GuardSettings) -> Self {
        GuardLimitsReport {
            cores_available: limits.cores_available,
            memory_limit_bytes: limits.memory_limit_bytes,
            max_cpu_percent: settings.max_cpu_percent,
            max_memory_bytes: settings.max_memory.resolve(limits.memory_limit_bytes),
            max_lag_ms: settings.max_lag.as_secs_f64() * 1e3,
            cgroup: limits.cgroup.as_ref().map_or_else(
                || "none".to_string(),
                |c| match &c.memory {
                    Some(memory) => format!("{:?} ({})", c.version, memory.dir.display()),
                    None => format!("{:?}", c.version),
                },
            ),
        }
    }
}

/// What the guard saw and did over the run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GuardReport {
    /// The guard's mode.
    pub mode: String,
    /// The limits in force.
    pub limits: GuardLimitsReport,
    /// The guard's state at the end (or now, while running).
    pub status: GuardStatus,
    /// Full samples taken (about one a second).
    pub samples: u64,
    /// Full samples in which the generator was saturated: CPU, memory or lag over its limit.
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
    /// Times the container's limits changed during the run.
    pub limit_changes: u64,
    /// CPU time the guard's own thread used, seconds.
    pub guard_cpu_seconds: f64,
    /// The guard's own CPU over the run, percent of one core.
    pub guard_cpu_percent: f64,
    /// Memory readings taken, full samples included (4 a second far below the limit, 50 near it).
    pub memory_readings: u64,
}

/// Which limit a breach is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardLimitKind {
    /// CPU, percent of the CPU available to the process.
    Cpu,
    /// Memory, bytes counted against the container's (or machine's) memory.
    Memory,
    /// Scheduler lag, milliseconds.
    Lag,
}

/// One limit that is over now.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LimitBreach {
    /// Which limit.
    pub limit: GuardLimitKind,
    /// The measured value (percent, bytes or milliseconds, as the limit).
    pub value: f64,
    /// The limit's value, in the same unit.
    pub limit_value: f64,
    /// How far over, in percent of the limit.
    pub over_by_percent: f64,
}

/// How much room is left under each limit (negative when over).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Headroom {
    /// CPU percentage points under `--max-cpu`; `None` before the first CPU sample.
    pub cpu_percent: Option<f64>,
    /// Bytes under `--max-memory`.
    pub memory_bytes: i64,
    /// Bytes under the hard limit (the container's or the machine's memory).
    pub hard_memory_bytes: i64,
    /// Milliseconds under `--max-lag`.
    pub lag_ms: f64,
    /// Memory growth over the last few hundred milliseconds, bytes per second (0 when flat or falling).
    pub memory_growth_bytes_per_second: f64,
}

/// What the guard is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardPhase {
    /// Every limit is fine, or the guard only warns.
    #[default]
    Normal,
    /// Spawning is paused (and users may have been shed) until usage is back under the low-water marks.
    Holding,
    /// The guard stopped the test.
    Stopped,
    /// The guard aborted every user to stay clear of the OOM killer.
    Emergency,
}

/// The guard's current state, in one typed value for the console, the web UI, the reports and a cluster
/// master.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GuardStatus {
    /// What the guard is doing.
    pub phase: GuardPhase,
    /// The limits over now (empty when none).
    pub over: Vec<LimitBreach>,
    /// Room left under each limit.
    pub headroom: Headroom,
    /// Users the guard holds back (the target minus its cap), 0 when none.
    pub users_held_back: u64,
    /// When this state was measured, Unix milliseconds.
    pub measured_unix_ms: u64,
}

/// The peaks of one reporting interval. Memory and lag are read many times a second, so they are always there;
/// CPU needs a full sample, and an interval without one says so instead of showing 0.
#[derive(Default)]
struct IntervalPeak {
    saturated: bool,
    cpu_percent: Option<f64>,
    rss_bytes: Option<u64>,
    lag: Option<Duration>,
}

struct GuardState {
    report: GuardReport,
    interval: IntervalPeak,
    latest: Option<Usage>,
    paused_since: Option<Instant>,
}

/// A running guard; cheap to clone. The guard's thread ends when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Guard {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<GuardState>,
    /// Set when the last [`Guard`] handle is dropped: the thread ends at its next tick.
    done: std::sync::atomic::AtomicBool,
}

/// Ends the guard's thread when dropped: the run keeps it until the reports are written.
pub(crate) struct GuardThreadOwner(Arc<Shared>);

impl Drop for GuardThreadOwner {
    fn drop(&mut self) {
        self.0
            .done
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Guard {
    /// Start watching (and protecting) on a thread of its own. `None` when the guard is off or the machine's
    /// usage cannot be read. Call inside the tokio runtime that runs the users: the scheduler-lag probe lives
    /// there, since that runtime's delay is what it measures.
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
        let report = GuardReport {
            mode: format!("{:?}", settings.mode).to_lowercase(),
            limits: GuardLimitsReport::new(&limits, settings),
            ..GuardReport::default()
        };
        tracing::info!(
            "resource guard ({}): {:.2} cores and {} MiB available; limits: CPU {:.0}%, memory {} MiB, lag {} ms",
            report.mode,
            limits.cores_available,
            limits.memory_limit_bytes >> 20,
            settings.max_cpu_percent,
            report.limits.max_memory_bytes >> 20,
            settings.max_lag.as_millis()
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(GuardState {
                report,
                interval: IntervalPeak::default(),
                latest: None,
                paused_since: None,
            }),
            done: std::sync::atomic::AtomicBool::new(false),
        });
        let guard = Guard {
            shared: shared.clone(),
        };
        let watcher = watcher::Watcher::new(guard.clone(), monitor, probe, settings.clone(), env);
        let spawned = std::thread::Builder::new()
            .name("cicada-guard".to_string())
            .spawn(move || watcher.run());
        if let Err(error) = spawned {
            tracing::warn!(
                "the resource guard's thread could not start ({error}); it is off for this run"
            );
            return None;
        }
        Some(guard)
    }

    /// A handle that stops the guard's thread when dropped (the run keeps it until the reports are written).
    pub(crate) fn owner(&self) -> GuardThreadOwner {
        GuardThreadOwner(self.shared.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GuardState> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn done(&self) -> bool {
        self.shared.done.load(std::sync::atomic::Ordering::Relaxed)
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
            unix_ms: unix_ms(),
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
            lag_ms: peak.lag.map(|lag| lag.as_secs_f64() * 1e3),
            users_held_back,
            ..GeneratorSample::default()
        }
    }

    /// The latest full sample, for the console.
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

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
