//! The guard's own thread: reads memory at the pace the [`Policy`] asks for (every 20 ms near the limit or while
//! memory grows toward it, up to 250 ms apart far below it: [`Policy::next_memory_reading`]), takes a full sample
//! every [`SAMPLE_INTERVAL`], re-reads the container's limits every [`LIMITS_INTERVAL`], feeds the [`Policy`] and
//! carries out its decisions. One timer: the thread sleeps until the next memory reading or the next full sample,
//! whichever comes first, and a full sample's own memory figure counts as that moment's reading.
//!
//! It is an OS thread rather than a task on the runtime it watches: a runtime starved by its users (or by a spawn
//! of millions) delays every task on it, and a guard that is delayed with them sees nothing until it is too late.
//! A plain thread that sleeps between ticks costs a few microseconds per tick (`bench/` measures it) and wakes on
//! time whatever the users do. It talks to the runner only through the runner's handle (atomics and an unbounded
//! channel), which never blocks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cicada_monitor::{LagProbe, MemoryReading, Monitor, Usage};

use super::{
    Breaches, Decision, Guard, GuardActionKind, GuardLimitKind, GuardLimits, GuardLimitsReport,
    GuardMode, GuardPhase, GuardSettings, Headroom, LimitBreach, MemoryObservation, Observation,
    Policy, unix_ms,
};
use crate::environment::Environment;
use crate::runner::{GuardCap, RunnerState};

/// How often a full sample (CPU, memory, lag, pressure, descriptors) is taken.
pub(crate) const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the container's limits are discovered again.
pub(crate) const LIMITS_INTERVAL: Duration = Duration::from_secs(2);

pub(super) struct Watcher {
    guard: Guard,
    monitor: Monitor,
    probe: LagProbe,
    settings: GuardSettings,
    env: Arc<Environment>,
    policy: Policy,
    started: Instant,
    /// A limit is over (between crossing it and falling under the low-water marks).
    over: bool,
    cpu_warned: bool,
    /// What the last full sample found over; carried into the fast ticks until the next one.
    last_breaches: Breaches,
    thread_cpu_at_start: Option<Duration>,
    emergency: bool,
    /// A fast reading since the last full sample found memory over its limit: that sample is marked too.
    memory_over_since_sample: bool,
    /// When a spawn burst was last seen: the seconds right after one still pay for it (every new user's first
    /// poll), so they count as the burst's.
    last_burst: Option<Instant>,
}

/// How long after a spawn burst its aftermath (the new users' first polls) is still the burst's.
const BURST_AFTERMATH: Duration = Duration::from_secs(3);

impl Watcher {
    pub(super) fn new(
        guard: Guard,
        monitor: Monitor,
        probe: LagProbe,
        settings: GuardSettings,
        env: Arc<Environment>,
    ) -> Watcher {
        let policy = Policy::new(policy_limits(&monitor, &settings), settings.mode);
        Watcher {
            guard,
            monitor,
            probe,
            settings,
            env,
            policy,
            started: Instant::now(),
            over: false,
            cpu_warned: false,
            last_breaches: Breaches::default(),
            thread_cpu_at_start: None,
            emergency: false,
            memory_over_since_sample: false,
            last_burst: None,
        }
    }

    pub(super) fn run(mut self) {
        self.thread_cpu_at_start = cicada_monitor::thread_cpu_time();
        let start = Instant::now();
        let mut next_sample = start + SAMPLE_INTERVAL;
        let mut next_limits = start + LIMITS_INTERVAL;
        while !self.guard.done() {
            let now = Instant::now();
            let reading = if now >= next_sample {
                next_sample = (next_sample + SAMPLE_INTERVAL).max(now + SAMPLE_INTERVAL / 2);
                self.full_sample(now)
            } else {
                let reading = self.monitor.memory_now();
                self.memory_tick(now, reading);
                reading
            };
            if now >= next_limits {
                self.refresh_limits();
                next_limits = now + LIMITS_INTERVAL;
            }
            let next_reading = now + self.policy.next_memory_reading(now, reading.used_bytes);
            std::thread::sleep(
                next_reading
                    .min(next_sample)
                    .saturating_duration_since(Instant::now()),
            );
        }
        self.probe.stop();
    }

    fn runner_state(&self) -> RunnerState {
        self.env.runner.state()
    }

    /// Only a test that is spawning or running can be protected; between tests (and while users stop at the
    /// end) there is nothing to shed, though memory may still need an emergency stop.
    fn protecting(&self) -> bool {
        matches!(
            self.runner_state(),
            RunnerState::Spawning | RunnerState::Running
        )
    }

    fn memory_tick(&mut self, now: Instant, reading: MemoryReading) {
        let lag = self.probe.current();
        let limits = self.policy.limits();
        let memory_over = reading.used_bytes > limits.max_memory_bytes;
        self.memory_over_since_sample |= memory_over;
        let saturated = self.last_breaches.any() || memory_over || lag > limits.max_lag;
        {
            let mut state = self.guard.lock();
            let report = &mut state.report;
            report.memory_readings += 1;
            report.peak_rss_bytes = report.peak_rss_bytes.max(reading.rss_bytes);
            let interval = &mut state.interval;
            interval.saturated |= saturated;
            interval.rss_bytes = Some(interval.rss_bytes.unwrap_or(0).max(reading.rss_bytes));
            interval.lag = Some(interval.lag.unwrap_or_default().max(lag));
        }
        let state = self.runner_state();
        if !matches!(
            state,
            RunnerState::Spawning | RunnerState::Running | RunnerState::Stopping
        ) {
            return;
        }
        let decisions = self.policy.observe_memory(&MemoryObservation {
            at: now,
            memory_bytes: reading.used_bytes,
            users: self.env.runner.user_count(),
        });
        for decision in decisions {
            // While users stop at the end only the emergency stop means anything.
            if state == RunnerState::Stopping && !matches!(decision, Decision::Emergency(_)) {
                continue;
            }
            let describe = format!(
                "memory {} MiB of {} MiB allowed (hard limit {} MiB), growing {:.0} MiB/s",
                reading.used_bytes >> 20,
                self.policy.limits().max_memory_bytes >> 20,
                self.policy.limits().hard_memory_bytes >> 20,
                self.policy.memory_growth_per_second() / 1_048_576.0
            );
            self.apply(decision, &describe);
        }
    }

    /// Takes a full sample, feeds its memory figure to the fast path as this moment's reading, and returns it.
    fn full_sample(&mut self, now: Instant) -> MemoryReading {
        let usage = self.monitor.sample();
        let reading = MemoryReading {
            rss_bytes: usage.rss_bytes,
            used_bytes: usage.memory_used_bytes,
        };
        self.memory_tick(now, reading);
        let lag = usage.max_lag.max(self.probe.pending());
        let runner = self.env.runner.clone();
        let users = runner.user_count();
        let cpu = (!usage.interval.is_zero()).then_some(usage.cpu_percent_of_available);
        let bursting = runner.state() == RunnerState::Spawning
            && runner.guard_cap().is_none()
            && runner.spawn_rate() >= self.policy.limits().burst_spawn_rate;
        if bursting {
            self.last_burst = Some(now);
        }
        let observation = Observation {
            at: now,
            cpu_percent: cpu,
            memory_bytes: usage.memory_used_bytes,
            lag,
            users,
            spawn_burst: self
                .last_burst
                .is_some_and(|at| now.duration_since(at) <= BURST_AFTERMATH),
        };
        let breaches = self.policy.breaches(&observation);
        self.last_breaches = breaches;
        let marked = breaches.any() || std::mem::take(&mut self.memory_over_since_sample);
        self.record_sample(&usage, cpu, lag, marked);
        self.env.events.fire_usage_monitor(&self.env, &usage);
        let describe = format!(
            "CPU {} of {:.2} cores, memory {} MiB, scheduler lag {} ms",
            cpu.map_or_else(|| "unknown".to_string(), |c| format!("{c:.0}%")),
            self.monitor.limits().cores_available,
            usage.memory_used_bytes >> 20,
            lag.as_millis()
        );
        if breaches.cpu && !self.cpu_warned {
            self.cpu_warned = true;
            self.env
                .events
                .fire_cpu_warning(&self.env, usage.cpu_percent_of_available);
            self.record_action(GuardActionKind::CpuWarning, users, 0, describe.clone());
        }
        // Crossing back counts only under the low-water marks, so usage hovering at a limit does not flap.
        if breaches.any() && !self.over {
            self.over = true;
            tracing::warn!(
                "the load generator is over its {} limit ({describe}): response times measured now are not reliable",
                breaches.describe(),
            );
            self.record_action(
                GuardActionKind::OverLimit,
                users,
                0,
                format!("{}: {describe}", breaches.describe()),
            );
        } else if self.over && self.policy.below_low_water(&observation) {
            self.over = false;
            self.cpu_warned = false;
            tracing::info!("the load generator is back under its limits ({describe})");
            self.record_action(GuardActionKind::BackUnderLimits, users, 0, describe.clone());
        }
        if self.protecting() {
            for decision in self.policy.observe(&observation) {
                self.apply(decision, &describe);
            }
        } else if !self.emergency {
            self.policy.reset();
            if self.guard.lock().paused_since.is_some() {
                self.guard.close_pause();
            }
        }
        self.update_status(&observation, breaches);
        reading
    }

    fn refresh_limits(&mut self) {
        let Some(change) = self.monitor.refresh_limits() else {
            return;
        };
        self.policy
            .set_limits(policy_limits(&self.monitor, &self.settings));
        {
            let mut state = self.guard.lock();
            state.report.limits = GuardLimitsReport::new(&change.after, &self.settings);
            state.report.limit_changes += 1;
        }
        let text = change.describe();
        tracing::warn!("the container's limits changed: {text}; the guard follows the new limits");
        self.record_action(
            GuardActionKind::LimitsChanged,
            self.env.runner.user_count(),
            0,
            text,
        );
    }

    fn apply(&mut self, decision: Decision, describe: &str) {
        let runner = self.env.runner.clone();
        let users = runner.user_count();
        match decision {
            Decision::PauseSpawning => {
                runner.guard(GuardCap::Pause);
                self.guard.lock().paused_since.get_or_insert(Instant::now());
                tracing::warn!("resource guard: spawning paused at {users} users ({describe})");
                self.record_action(
                    GuardActionKind::PauseSpawning,
                    users,
                    0,
                    describe.to_string(),
                );
            }
            Decision::Shed(count) => {
                runner.guard(GuardCap::Shed(count));
                self.guard.lock().report.users_shed += count;
                tracing::warn!(
                    "resource guard: stopping the {count} newest of {users} users ({describe})"
                );
                self.record_action(GuardActionKind::Shed, users, count, describe.to_string());
            }
            Decision::Resume => {
                runner.guard(GuardCap::Lift);
                self.guard.close_pause();
                tracing::info!("resource guard: ramping back toward the target ({describe})");
                self.record_action(GuardActionKind::Resume, users, 0, describe.to_string());
            }
            Decision::StopTest(reason) => {
                tracing::error!("resource guard: stopping the test: {reason} ({describe})");
                self.guard.lock().report.stopped_test = Some(reason.clone());
                self.record_action(GuardActionKind::StopTest, users, 0, reason);
                runner.quit();
                self.set_phase(GuardPhase::Stopped);
            }
            Decision::Emergency(reason) => {
                // Users first: every millisecond counts, and the log line allocates.
                runner.emergency_stop();
                self.emergency = true;
                tracing::error!(
                    "resource guard: EMERGENCY STOP, every user aborted to stay clear of the OOM killer: {reason}"
                );
                self.guard.lock().report.stopped_test = Some(format!("emergency stop: {reason}"));
                self.record_action(GuardActionKind::Emergency, users, users, reason);
                self.set_phase(GuardPhase::Emergency);
            }
        }
    }

    fn record_action(&self, kind: GuardActionKind, users: u64, users_shed: u64, reason: String) {
        self.guard
            .act(&self.env, self.started, kind, users, users_shed, reason);
    }

    fn record_sample(&self, usage: &Usage, cpu: Option<f64>, lag: Duration, marked: bool) {
        let thread_cpu = cicada_monitor::thread_cpu_time()
            .zip(self.thread_cpu_at_start)
            .map(|(now, start)| now.saturating_sub(start));
        let mut state = self.guard.lock();
        let report = &mut state.report;
        report.samples += 1;
        if marked {
            report.saturated_samples += 1;
        }
        report.saturated_share = report.saturated_samples as f64 / report.samples as f64;
        if let Some(cpu) = cpu {
            report.peak_cpu_percent = report.peak_cpu_percent.max(cpu);
        }
        report.peak_rss_bytes = report.peak_rss_bytes.max(usage.rss_bytes);
        report.peak_lag_ms = report.peak_lag_ms.max(lag.as_secs_f64() * 1e3);
        if let Some(thread_cpu) = thread_cpu {
            report.guard_cpu_seconds = thread_cpu.as_secs_f64();
            report.guard_cpu_percent =
                thread_cpu.as_secs_f64() / self.started.elapsed().as_secs_f64().max(1e-3) * 100.0;
        }
        let interval = &mut state.interval;
        interval.saturated |= marked;
        if let Some(cpu) = cpu {
            interval.cpu_percent = Some(interval.cpu_percent.unwrap_or(0.0).max(cpu));
        }
        interval.rss_bytes = Some(interval.rss_bytes.unwrap_or(0).max(usage.rss_bytes));
        interval.lag = Some(interval.lag.unwrap_or_default().max(lag));
        state.latest = Some(usage.clone());
    }

    fn set_phase(&self, phase: GuardPhase) {
        self.guard.lock().report.status.phase = phase;
    }

    fn update_status(&self, observation: &Observation, breaches: Breaches) {
        let limits = self.policy.limits();
        let runner = &self.env.runner;
        let held_back = runner
            .guard_cap()
            .map_or(0, |cap| runner.target_user_count().saturating_sub(cap));
        let mut over = Vec::new();
        let breach = |limit, value: f64, limit_value: f64| LimitBreach {
            limit,
            value,
            limit_value,
            over_by_percent: if limit_value > 0.0 {
                (value - limit_value) / limit_value * 100.0
            } else {
                0.0
            },
        };
        if breaches.cpu
            && let Some(cpu) = observation.cpu_percent
        {
            over.push(breach(GuardLimitKind::Cpu, cpu, limits.max_cpu_percent));
        }
        if breaches.memory {
            over.push(breach(
                GuardLimitKind::Memory,
                observation.memory_bytes as f64,
                limits.max_memory_bytes as f64,
            ));
        }
        let lag_ms = observation.lag.as_secs_f64() * 1e3;
        let max_lag_ms = limits.max_lag.as_secs_f64() * 1e3;
        if breaches.lag {
            over.push(breach(GuardLimitKind::Lag, lag_ms, max_lag_ms));
        }
        let headroom = Headroom {
            cpu_percent: observation
                .cpu_percent
                .map(|cpu| limits.max_cpu_percent - cpu),
            memory_bytes: limits.max_memory_bytes as i64 - observation.memory_bytes as i64,
            hard_memory_bytes: limits.hard_memory_bytes as i64 - observation.memory_bytes as i64,
            lag_ms: max_lag_ms - lag_ms,
            memory_growth_bytes_per_second: self.policy.memory_growth_per_second(),
        };
        let mut state = self.guard.lock();
        let status = &mut state.report.status;
        if !matches!(status.phase, GuardPhase::Stopped | GuardPhase::Emergency) {
            status.phase = if self.policy.holding() && self.settings.mode == GuardMode::Protect {
                GuardPhase::Holding
            } else {
                GuardPhase::Normal
            };
        }
        status.over = over;
        status.headroom = headroom;
        status.users_held_back = held_back;
        status.measured_unix_ms = unix_ms();
    }
}

/// The policy's limits for the monitor's current view of the container.
fn policy_limits(monitor: &Monitor, settings: &GuardSettings) -> GuardLimits {
    let memory_limit = monitor.limits().memory_limit_bytes;
    GuardLimits::new(
        settings.max_cpu_percent,
        settings.max_memory.resolve(memory_limit),
        memory_limit,
        settings.max_lag,
    )
}
