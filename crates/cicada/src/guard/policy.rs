//! The guard's decisions: from one usage sample a second to pause, shed, resume or stop, with hysteresis.
//!
//! Pure logic, no I/O and no clock of its own (samples carry their time), so every rule is unit-tested.
//!
//! - Over a limit (CPU share, memory, scheduler lag): stop spawning at once.
//! - CPU or lag still over after `shed_after`: shed a step of users (newest first), again every `shed_every`.
//! - Memory over its limit: shed at once and every second while over, since running users keep allocating and
//!   the next stop is the OOM killer; close to the hard limit (the container's or machine's), in bigger steps.
//! - Over for longer than `give_up_after`, or over with no user left to shed: stop the test.
//! - Under the low-water marks for `resume_after`: lift the cap, and the runner ramps back at the spawn rate.

use std::time::{Duration, Instant};

/// How the guard acts on what it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GuardMode {
    /// No monitoring at all.
    Off,
    /// Monitor, mark saturated windows and warn, but never change the load.
    Warn,
    /// Monitor, warn, and protect the run: pause spawning, shed users, stop the test if nothing helps.
    #[default]
    Protect,
}

/// Limits and timings of the policy.
#[derive(Debug, Clone)]
pub struct GuardLimits {
    /// Share of the available CPU (cores and quota) above which the generator is saturated, in percent.
    pub max_cpu_percent: f64,
    /// Resident memory above which the guard acts.
    pub max_memory_bytes: u64,
    /// The hard memory limit (container or machine): near it, shedding is faster.
    pub hard_memory_bytes: u64,
    /// Scheduler lag above which latencies are inflated by the generator itself.
    pub max_lag: Duration,
    /// Over a limit this long: start shedding.
    pub shed_after: Duration,
    /// While still over: shed again this often.
    pub shed_every: Duration,
    /// Under the low-water marks this long: resume.
    pub resume_after: Duration,
    /// Over a limit this long without recovering: stop the test.
    pub give_up_after: Duration,
}

impl GuardLimits {
    /// The defaults for the given limits.
    pub fn new(
        max_cpu_percent: f64,
        max_memory_bytes: u64,
        hard_memory_bytes: u64,
        max_lag: Duration,
    ) -> Self {
        GuardLimits {
            max_cpu_percent,
            max_memory_bytes,
            hard_memory_bytes,
            max_lag,
            shed_after: Duration::from_secs(3),
            shed_every: Duration::from_secs(2),
            resume_after: Duration::from_secs(5),
            give_up_after: Duration::from_secs(120),
        }
    }

    fn cpu_low_water(&self) -> f64 {
        (self.max_cpu_percent - 15.0).max(self.max_cpu_percent * 0.75)
    }

    fn memory_low_water(&self) -> u64 {
        self.max_memory_bytes / 10 * 9
    }

    /// Memory at which shedding no longer waits: halfway from the limit to the hard limit.
    fn memory_emergency(&self) -> u64 {
        let hard = self.hard_memory_bytes.max(self.max_memory_bytes);
        self.max_memory_bytes + (hard - self.max_memory_bytes) / 2
    }
}

/// What the guard saw in one interval.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// When the sample was taken.
    pub at: Instant,
    /// Process CPU as a share of the available CPU, in percent.
    pub cpu_percent: f64,
    /// Resident memory (or the container's usage when larger).
    pub memory_bytes: u64,
    /// Worst scheduler lag in the interval.
    pub lag: Duration,
    /// Users running now.
    pub users: u64,
}

/// Which limits an observation breaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Breaches {
    /// CPU over `max_cpu_percent`.
    pub cpu: bool,
    /// Memory over `max_memory_bytes`.
    pub memory: bool,
    /// Lag over `max_lag`.
    pub lag: bool,
}

impl Breaches {
    /// True when any limit is broken.
    pub fn any(self) -> bool {
        self.cpu || self.memory || self.lag
    }

    /// True when measured latencies are not trustworthy (CPU or lag).
    pub fn saturated(self) -> bool {
        self.cpu || self.lag
    }

    /// Short text, e.g. "cpu+lag".
    pub fn describe(self) -> String {
        let mut parts = Vec::new();
        if self.cpu {
            parts.push("cpu");
        }
        if self.memory {
            parts.push("memory");
        }
        if self.lag {
            parts.push("lag");
        }
        parts.join("+")
    }
}

/// What the runner should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Stop starting users (keep those running).
    PauseSpawning,
    /// Stop this many of the newest users.
    Shed(u64),
    /// Lift the cap: ramp back toward the target at the spawn rate.
    Resume,
    /// Stop the test: the generator cannot recover.
    StopTest(String),
}

/// The policy's state between samples.
#[derive(Debug)]
pub struct Policy {
    limits: GuardLimits,
    mode: GuardMode,
    over_since: Option<Instant>,
    under_since: Option<Instant>,
    last_shed: Option<Instant>,
    /// Spawning is paused (or users were shed) and not yet resumed.
    holding: bool,
    stopped: bool,
}

impl Policy {
    /// A policy in the given mode.
    pub fn new(limits: GuardLimits, mode: GuardMode) -> Self {
        Policy {
            limits,
            mode,
            over_since: None,
            under_since: None,
            last_shed: None,
            holding: false,
            stopped: false,
        }
    }

    /// Forget the current episode (the test stopped; a new one starts fresh).
    pub fn reset(&mut self) {
        self.over_since = None;
        self.under_since = None;
        self.last_shed = None;
        self.holding = false;
        self.stopped = false;
    }

    /// The limits in force.
    pub fn limits(&self) -> &GuardLimits {
        &self.limits
    }

    /// Which limits `observation` breaks.
    pub fn breaches(&self, observation: &Observation) -> Breaches {
        Breaches {
            cpu: observation.cpu_percent > self.limits.max_cpu_percent,
            memory: observation.memory_bytes > self.limits.max_memory_bytes,
            lag: observation.lag > self.limits.max_lag,
        }
    }

    /// Comfortably under every limit: where the guard resumes, and where a crossing counts as over.
    pub fn below_low_water(&self, observation: &Observation) -> bool {
        observation.cpu_percent < self.limits.cpu_low_water()
            && observation.memory_bytes < self.limits.memory_low_water()
            && observation.lag < self.limits.max_lag / 2
    }

    /// Feed one observation; returns what to do (in protect mode) now.
    pub fn observe(&mut self, observation: &Observation) -> Vec<Decision> {
        let mut decisions = Vec::new();
        if self.mode != GuardMode::Protect || self.stopped {
            return decisions;
        }
        let now = observation.at;
        let breaches = self.breaches(observation);
        if breaches.any() {
            self.under_since = None;
            let over_since = *self.over_since.get_or_insert(now);
            if !self.holding {
                self.holding = true;
                decisions.push(Decision::PauseSpawning);
            }
            let over_for = now.duration_since(over_since);
            let emergency = observation.memory_bytes >= self.limits.memory_emergency();
            if over_for >= self.limits.give_up_after
                || (observation.users == 0 && over_for >= self.limits.shed_after)
            {
                self.stopped = true;
                decisions.push(Decision::StopTest(format!(
                    "over the {} limit for {}s{}",
                    breaches.describe(),
                    over_for.as_secs(),
                    if observation.users == 0 {
                        " with no user left to shed"
                    } else {
                        ""
                    }
                )));
                return decisions;
            }
            let shed_due = match self.last_shed {
                None => over_for >= self.limits.shed_after,
                Some(last) => now.duration_since(last) >= self.limits.shed_every,
            };
            if observation.users > 0 && (shed_due || breaches.memory) {
                let share = if emergency {
                    4
                } else if breaches.memory {
                    5
                } else {
                    10
                };
                let step = observation.users.div_ceil(share).max(1);
                self.last_shed = Some(now);
                decisions.push(Decision::Shed(step));
            }
        } else {
            self.over_since = None;
            self.last_shed = None;
            if self.holding && self.below_low_water(observation) {
                let under_since = *self.under_since.get_or_insert(now);
                if now.duration_since(under_since) >= self.limits.resume_after {
                    self.holding = false;
                    self.under_since = None;
                    decisions.push(Decision::Resume);
                }
            } else {
                self.under_since = None;
            }
        }
        decisions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn fresh_policy() -> (Policy, Instant) {
        let limits = GuardLimits::new(80.0, 4 * GIB, 8 * GIB, Duration::from_millis(200));
        (Policy::new(limits, GuardMode::Protect), Instant::now())
    }

    fn at(start: Instant, secs: u64, cpu: f64, memory: u64, users: u64) -> Observation {
        Observation {
            at: start + Duration::from_secs(secs),
            cpu_percent: cpu,
            memory_bytes: memory,
            lag: Duration::from_millis(5),
            users,
        }
    }

    #[test]
    fn pauses_then_sheds_then_resumes() {
        let (mut policy, t) = fresh_policy();
        assert!(policy.observe(&at(t, 0, 50.0, GIB, 100)).is_empty());
        assert_eq!(
            policy.observe(&at(t, 1, 95.0, GIB, 100)),
            [Decision::PauseSpawning]
        );
        assert!(policy.observe(&at(t, 2, 95.0, GIB, 100)).is_empty());
        assert!(policy.observe(&at(t, 3, 95.0, GIB, 100)).is_empty());
        assert_eq!(
            policy.observe(&at(t, 4, 95.0, GIB, 100)),
            [Decision::Shed(10)]
        );
        assert!(policy.observe(&at(t, 5, 95.0, GIB, 90)).is_empty());
        assert_eq!(
            policy.observe(&at(t, 6, 95.0, GIB, 90)),
            [Decision::Shed(9)]
        );
        // Between the limit and the low-water mark: hold, neither shed nor resume.
        for s in 7..20 {
            assert!(
                policy.observe(&at(t, s, 70.0, GIB, 81)).is_empty(),
                "second {s}"
            );
        }
        for s in 20..25 {
            assert!(
                policy.observe(&at(t, s, 30.0, GIB, 81)).is_empty(),
                "second {s}"
            );
        }
        assert_eq!(
            policy.observe(&at(t, 25, 30.0, GIB, 81)),
            [Decision::Resume]
        );
        assert!(policy.observe(&at(t, 26, 30.0, GIB, 81)).is_empty());
    }

    #[test]
    fn memory_over_the_limit_sheds_at_once_and_every_second() {
        let (mut policy, t) = fresh_policy();
        assert_eq!(
            policy.observe(&at(t, 0, 10.0, 5 * GIB, 100)),
            [Decision::PauseSpawning, Decision::Shed(20)]
        );
        assert_eq!(
            policy.observe(&at(t, 1, 10.0, 5 * GIB, 80)),
            [Decision::Shed(16)]
        );
    }

    #[test]
    fn memory_emergency_sheds_fast() {
        let (mut policy, t) = fresh_policy();
        let near_hard = 7 * GIB;
        assert_eq!(
            policy.observe(&at(t, 0, 10.0, near_hard, 100)),
            [Decision::PauseSpawning, Decision::Shed(25)]
        );
        assert_eq!(
            policy.observe(&at(t, 1, 10.0, near_hard, 75)),
            [Decision::Shed(19)]
        );
    }

    #[test]
    fn gives_up_when_nothing_helps() {
        let (mut policy, t) = fresh_policy();
        policy.observe(&at(t, 0, 99.0, GIB, 10));
        let mut stopped = None;
        for s in 1..200 {
            if let Some(Decision::StopTest(reason)) = policy.observe(&at(t, s, 99.0, GIB, 10)).pop()
            {
                stopped = Some((s, reason));
                break;
            }
        }
        let (second, reason) = stopped.expect("stops eventually");
        assert_eq!(second, 120);
        assert!(reason.contains("cpu"), "{reason}");
        assert!(
            policy.observe(&at(t, 121, 99.0, GIB, 10)).is_empty(),
            "stops once"
        );

        let (mut policy, t) = fresh_policy();
        policy.observe(&at(t, 0, 10.0, 5 * GIB, 0));
        assert!(matches!(
            policy.observe(&at(t, 3, 10.0, 5 * GIB, 0)).pop(),
            Some(Decision::StopTest(_))
        ));
    }

    #[test]
    fn lag_counts_as_saturation_and_warn_mode_never_acts() {
        let (policy, t) = fresh_policy();
        let mut observation = at(t, 0, 10.0, GIB, 5);
        observation.lag = Duration::from_millis(500);
        let breaches = policy.breaches(&observation);
        assert!(breaches.lag && breaches.saturated() && !breaches.memory);
        let mut warn = Policy::new(policy.limits().clone(), GuardMode::Warn);
        assert!(warn.observe(&observation).is_empty());
    }
}
