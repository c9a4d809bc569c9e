//! The guard's decisions: from usage samples to pause, shed, resume, stop or an emergency stop.
//!
//! Pure logic, no I/O and no clock of its own (samples carry their time), so every rule is unit-tested, also
//! against recorded traces. Two inputs: a full [`Observation`] about once a second (CPU, memory, scheduler lag),
//! and a [`MemoryObservation`] 4 to 50 times a second (faster near the limit: [`Policy::next_memory_reading`]),
//! because memory can run out faster than a second.
//!
//! The rules act on evidence of harm, not on busyness:
//! - **CPU over its limit, lag fine**: the generator is busy but still measures correctly. Spawning pauses (adding
//!   users would make it worse) and the interval is marked; nobody is shed. A spawn burst (a spawn rate of
//!   [`GuardLimits::burst_spawn_rate`] or more) is exempt: its CPU is the spawning itself, and it ends by itself.
//! - **Scheduler lag over its limit**: measured latencies include the generator's own delay. Spawning pauses; when
//!   the lag is over in most of the last `shed_after` window (a dip does not reset that), the newest 10% of users
//!   are shed, every `shed_every`, *while shedding is seen to help*: when the lag after a shed is not clearly lower
//!   than before it, shedding stops, the users are given back (the cap is lifted) and the intervals stay marked.
//! - **Memory**: over `max_memory` spawning pauses; while memory still rises, users are shed (a fifth, or half
//!   when the hard limit is less than `fast_shed_within` away at the current growth rate). Growth that would
//!   cross the limit within a second pauses spawning before it does. Near the hard limit (the last quarter of the
//!   gap between the limit and the container's or machine's memory), or when the growth rate would reach it
//!   within `emergency_within`, an **emergency stop**: every user is aborted at once and the reports are written.
//! - **Giving up**: lag or memory over in `give_up_share` of the samples over `give_up_after`, or over with no user
//!   left, stops the test (exit code 4).
//! - **Resume**: under the low-water marks for `resume_after`, the cap is lifted and the runner ramps back toward
//!   the target at the spawn rate.

use std::collections::VecDeque;
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
#[derive(Debug, Clone, PartialEq)]
pub struct GuardLimits {
    /// Share of the available CPU (cores and quota) above which the generator is busy, in percent.
    pub max_cpu_percent: f64,
    /// Memory above which the guard acts.
    pub max_memory_bytes: u64,
    /// The hard memory limit (container or machine): the OOM killer's line.
    pub hard_memory_bytes: u64,
    /// Scheduler lag above which latencies are inflated by the generator itself.
    pub max_lag: Duration,
    /// The window over which sustained lag is judged before shedding.
    pub shed_after: Duration,
    /// While still over: shed again (and judge whether the last shed helped) this often.
    pub shed_every: Duration,
    /// Under the low-water marks this long: resume.
    pub resume_after: Duration,
    /// The window over which "nothing helps" is judged.
    pub give_up_after: Duration,
    /// Share of the samples in `give_up_after` with lag or memory over that stops the test.
    pub give_up_share: f64,
    /// Memory sheds no more often than this while memory is over its limit and rising.
    pub memory_shed_every: Duration,
    /// When the hard limit is this close at the current growth rate, shed half the users, four times a second.
    pub fast_shed_within: Duration,
    /// When the hard limit is this close at the current growth rate, stop at once.
    pub emergency_within: Duration,
    /// A spawn rate (users per second) at or above which a spawn is a burst, whose CPU and lag do not pause it.
    pub burst_spawn_rate: f64,
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
            give_up_share: 0.9,
            memory_shed_every: Duration::from_secs(1),
            fast_shed_within: Duration::from_secs(2),
            emergency_within: Duration::from_millis(250),
            burst_spawn_rate: 1_000.0,
        }
    }

    fn cpu_low_water(&self) -> f64 {
        (self.max_cpu_percent - 15.0).max(self.max_cpu_percent * 0.75)
    }

    fn memory_low_water(&self) -> u64 {
        self.max_memory_bytes / 10 * 9
    }

    fn hard(&self) -> u64 {
        self.hard_memory_bytes.max(self.max_memory_bytes)
    }

    /// Memory at which the guard stops everything: the last quarter of the gap between the limit and the hard
    /// limit, and at least 2% of the hard limit below it (so with `--max-memory` at the hard limit itself, the
    /// emergency line comes first).
    pub fn memory_emergency(&self) -> u64 {
        let hard = self.hard();
        let margin = ((hard - self.max_memory_bytes) / 4).max(hard / 50);
        hard.saturating_sub(margin)
    }
}

/// What the guard saw in one full sample (about a second).
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// When the sample was taken.
    pub at: Instant,
    /// Process CPU as a share of the available CPU, in percent; `None` when it could not be measured.
    pub cpu_percent: Option<f64>,
    /// Memory counted against the limit (RSS, or the container's working set when larger).
    pub memory_bytes: u64,
    /// Worst scheduler lag since the last sample (including a stall still going on).
    pub lag: Duration,
    /// Users running now.
    pub users: u64,
    /// The runner is spawning at a burst rate (see [`GuardLimits::burst_spawn_rate`]), or did so in the last few
    /// seconds (the new users' first polls still load the runtime).
    pub spawn_burst: bool,
}

/// One fast memory reading.
#[derive(Debug, Clone, Copy)]
pub struct MemoryObservation {
    /// When it was read.
    pub at: Instant,
    /// Memory counted against the limit.
    pub memory_bytes: u64,
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
    /// True when any limit is broken: the interval is marked, since latencies measured by a generator that is
    /// out of CPU, late, or short of memory (reclaim stalls, shed users) are not trustworthy.
    pub fn any(self) -> bool {
        self.cpu || self.memory || self.lag
    }

    /// True when the breach is harm the guard acts on beyond pausing (lag or memory).
    pub fn harmful(self) -> bool {
        self.memory || self.lag
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
    /// Stop the test gracefully: the generator cannot recover.
    StopTest(String),
    /// Abort every user now and stop the test: memory is about to run out.
    Emergency(String),
}

/// A lag shed whose effect is still to be judged.
#[derive(Debug, Clone, Copy)]
struct LagShed {
    at: Instant,
    lag_before: Duration,
}

/// The policy's state between samples.
#[derive(Debug)]
pub struct Policy {
    limits: GuardLimits,
    mode: GuardMode,
    /// Full samples within `give_up_after`: when, what was over, the lag.
    window: VecDeque<(Instant, Breaches, Duration)>,
    under_since: Option<Instant>,
    /// Spawning is paused (or users were shed) and not yet resumed.
    holding: bool,
    last_lag_shed: Option<LagShed>,
    /// Shedding for lag was seen not to help in this episode: no more lag shedding until it ends.
    lag_shedding_futile: bool,
    /// Recent fast memory readings, for the growth rate (bounded: see [`GROWTH_WINDOW`]).
    memory: VecDeque<(Instant, u64)>,
    last_memory_shed: Option<Instant>,
    stopped: bool,
}

/// The memory growth rate is taken over this much recent history.
const GROWTH_WINDOW: Duration = Duration::from_millis(300);
/// Most fast readings kept for the growth rate (more than `GROWTH_WINDOW` holds at the guard's fastest, 20 ms).
const MAX_MEMORY_READINGS: usize = 64;

/// The shortest wait between two memory readings: near the limit, or while memory grows toward it.
pub const FASTEST_MEMORY_READING: Duration = Duration::from_millis(20);
/// The longest wait between two memory readings, far below the limit with memory flat. Short enough that the
/// growth window still holds two readings (a rate), long enough that an idle guard wakes 4 times a second, not 50.
pub const SLOWEST_MEMORY_READING: Duration = Duration::from_millis(250);
/// The growth a reading must be ready for from a standing start: the guard waits no longer than memory growing this
/// fast needs to reach the limit. 2 GiB/s is twice a spawn of a million 1 KiB users a second, the fastest growth
/// the guard's tests make.
pub const SPIKE_BYTES_PER_SECOND: f64 = 2.0 * 1_073_741_824.0;
/// Memory that grows at a rate that reaches the limit within this is read at the fastest pace.
const GROWTH_NEAR: Duration = Duration::from_secs(2);

impl Policy {
    /// A policy in the given mode.
    pub fn new(limits: GuardLimits, mode: GuardMode) -> Self {
        Policy {
            limits,
            mode,
            window: VecDeque::new(),
            under_since: None,
            holding: false,
            last_lag_shed: None,
            lag_shedding_futile: false,
            memory: VecDeque::new(),
            last_memory_shed: None,
            stopped: false,
        }
    }

    /// Forget the current episode (the test stopped; a new one starts fresh).
    pub fn reset(&mut self) {
        let (limits, mode) = (self.limits.clone(), self.mode);
        *self = Policy::new(limits, mode);
    }

    /// The limits in force.
    pub fn limits(&self) -> &GuardLimits {
        &self.limits
    }

    /// Use new limits from now on (the container was resized); the episode goes on.
    pub fn set_limits(&mut self, limits: GuardLimits) {
        self.limits = limits;
    }

    /// Whether spawning is held back now.
    pub fn holding(&self) -> bool {
        self.holding
    }

    /// Which limits `observation` breaks.
    pub fn breaches(&self, observation: &Observation) -> Breaches {
        Breaches {
            cpu: observation
                .cpu_percent
                .is_some_and(|cpu| cpu > self.limits.max_cpu_percent),
            memory: observation.memory_bytes > self.limits.max_memory_bytes,
            lag: observation.lag > self.limits.max_lag,
        }
    }

    /// Comfortably under every limit: where the guard resumes, and where a crossing counts as over again.
    pub fn below_low_water(&self, observation: &Observation) -> bool {
        observation
            .cpu_percent
            .is_none_or(|cpu| cpu < self.limits.cpu_low_water())
            && observation.memory_bytes < self.limits.memory_low_water()
            && observation.lag < self.limits.max_lag / 2
    }

    /// The memory growth rate over the recent readings, bytes per second (0 when flat or falling).
    pub fn memory_growth_per_second(&self) -> f64 {
        let (Some(&(first_at, first)), Some(&(last_at, last))) =
            (self.memory.front(), self.memory.back())
        else {
            return 0.0;
        };
        let seconds = last_at.duration_since(first_at).as_secs_f64();
        if seconds < 0.02 || last <= first {
            return 0.0;
        }
        (last - first) as f64 / seconds
    }

    /// How long the guard may wait before its next memory reading, `used` bytes being in use `now`: no longer than
    /// a spike of [`SPIKE_BYTES_PER_SECOND`] needs to reach the limit, and the fastest pace when memory is over the
    /// limit or grows at a rate that reaches it within [`GROWTH_NEAR`]; between [`FASTEST_MEMORY_READING`] and
    /// [`SLOWEST_MEMORY_READING`]. Far below the limit the guard thus wakes a few times a second; from 40 MiB under
    /// the limit (2 GiB/s × 20 ms) on, every 20 ms, as it always did.
    pub fn next_memory_reading(&self, now: Instant, used: u64) -> Duration {
        let headroom = self.limits.max_memory_bytes.saturating_sub(used) as f64;
        // Only a rate measured on recent readings: between tests the readings are not fed to the policy.
        let recent = self
            .memory
            .back()
            .is_some_and(|&(at, _)| now.saturating_duration_since(at) <= GROWTH_WINDOW);
        let rate = if recent {
            self.memory_growth_per_second()
        } else {
            0.0
        };
        if headroom <= 0.0 || (rate > 0.0 && headroom / rate < GROWTH_NEAR.as_secs_f64()) {
            return FASTEST_MEMORY_READING;
        }
        Duration::from_secs_f64(headroom / SPIKE_BYTES_PER_SECOND)
            .clamp(FASTEST_MEMORY_READING, SLOWEST_MEMORY_READING)
    }

    /// Time until memory reaches the hard limit at the current growth rate; `None` when it is not rising.
    fn time_to_hard(&self, used: u64) -> Option<Duration> {
        let rate = self.memory_growth_per_second();
        (rate > 0.0)
            .then(|| Duration::from_secs_f64(self.limits.hard().saturating_sub(used) as f64 / rate))
    }

    fn pause(&mut self, decisions: &mut Vec<Decision>) {
        if !self.holding {
            self.holding = true;
            decisions.push(Decision::PauseSpawning);
        }
    }

    /// Feed one fast memory reading; returns what to do now (in protect mode).
    pub fn observe_memory(&mut self, observation: &MemoryObservation) -> Vec<Decision> {
        let now = observation.at;
        let used = observation.memory_bytes;
        self.memory.push_back((now, used));
        while self.memory.len() > MAX_MEMORY_READINGS
            || self
                .memory
                .front()
                .is_some_and(|&(at, _)| now.duration_since(at) > GROWTH_WINDOW)
        {
            self.memory.pop_front();
        }
        let mut decisions = Vec::new();
        if self.mode != GuardMode::Protect || self.stopped {
            return decisions;
        }
        let limits = &self.limits;
        let time_to_hard = self.time_to_hard(used);
        let rate = self.memory_growth_per_second();
        if used >= limits.memory_emergency()
            || (used >= limits.max_memory_bytes
                && time_to_hard.is_some_and(|t| t < limits.emergency_within))
        {
            self.stopped = true;
            decisions.push(Decision::Emergency(format!(
                "memory {} MiB of a hard limit of {} MiB, growing {:.0} MiB/s",
                used >> 20,
                limits.hard() >> 20,
                rate / 1_048_576.0
            )));
            return decisions;
        }
        if used >= limits.max_memory_bytes {
            self.under_since = None;
            self.pause(&mut decisions);
            let fast = time_to_hard.is_some_and(|t| t < self.limits.fast_shed_within);
            let every = if fast {
                self.limits.memory_shed_every / 4
            } else {
                self.limits.memory_shed_every
            };
            let due = self
                .last_memory_shed
                .is_none_or(|last| now.duration_since(last) >= every);
            // Flat memory over the limit is held, not shed: shedding helps only while it is still rising.
            let rising = rate > self.limits.max_memory_bytes as f64 * 0.01;
            if observation.users > 0 && rising && due {
                let share = if fast { 2 } else { 5 };
                self.last_memory_shed = Some(now);
                decisions.push(Decision::Shed(observation.users.div_ceil(share).max(1)));
            }
        } else if rate > 0.0
            && used as f64 + rate >= self.limits.max_memory_bytes as f64
            && self.memory.len() >= 3
        {
            // At this rate the limit is crossed within a second: stop adding users before it is.
            self.pause(&mut decisions);
        }
        decisions
    }

    /// Feed one full sample; returns what to do now (in protect mode).
    pub fn observe(&mut self, observation: &Observation) -> Vec<Decision> {
        let now = observation.at;
        let breaches = self.breaches(observation);
        // A spawn burst's own lag is no evidence against the users: it ends with the burst.
        let evidence = if observation.spawn_burst {
            (
                Breaches {
                    lag: false,
                    ..breaches
                },
                Duration::ZERO,
            )
        } else {
            (breaches, observation.lag)
        };
        self.window.push_back((now, evidence.0, evidence.1));
        while self
            .window
            .front()
            .is_some_and(|&(at, _, _)| now.duration_since(at) > self.limits.give_up_after)
        {
            self.window.pop_front();
        }
        let mut decisions = Vec::new();
        if self.mode != GuardMode::Protect || self.stopped {
            return decisions;
        }
        if !breaches.any() {
            self.last_lag_shed = None;
            if self.holding && self.below_low_water(observation) {
                let under_since = *self.under_since.get_or_insert(now);
                if now.duration_since(under_since) >= self.limits.resume_after {
                    self.holding = false;
                    self.under_since = None;
                    self.lag_shedding_futile = false;
                    decisions.push(Decision::Resume);
                }
            } else {
                self.under_since = None;
                if !self.holding && self.below_low_water(observation) {
                    // The episode is over: the next one may shed again.
                    self.lag_shedding_futile = false;
                }
            }
            return decisions;
        }
        self.under_since = None;
        if let Some(reason) = self.give_up(observation, breaches) {
            self.stopped = true;
            decisions.push(Decision::StopTest(reason));
            return decisions;
        }
        let burst = observation.spawn_burst;
        let pause_for_cpu_or_lag =
            (breaches.cpu || breaches.lag) && !burst && !self.lag_shedding_futile;
        if breaches.memory || pause_for_cpu_or_lag {
            self.pause(&mut decisions);
        }
        if breaches.lag && !burst && !self.lag_shedding_futile && observation.users > 0 {
            self.shed_for_lag(observation, &mut decisions);
        }
        decisions
    }

    fn shed_for_lag(&mut self, observation: &Observation, decisions: &mut Vec<Decision>) {
        let now = observation.at;
        let recent: Vec<Duration> = self
            .window
            .iter()
            .filter(|&&(at, _, _)| now.duration_since(at) < self.limits.shed_after)
            .map(|&(_, _, lag)| lag)
            .collect();
        let lag_over = recent.iter().filter(|&&l| l > self.limits.max_lag).count();
        // Sustained: over in most of the window (a dip does not reset it), and the window is long enough.
        let covered = self.window.front().is_some_and(|&(at, _, _)| {
            now.duration_since(at) + Duration::from_millis(500) >= self.limits.shed_after
        });
        if !covered || lag_over * 3 < recent.len() * 2 {
            return;
        }
        let average = |lags: &[Duration]| lags.iter().sum::<Duration>() / lags.len().max(1) as u32;
        match self.last_lag_shed {
            Some(last) if now.duration_since(last.at) < self.limits.shed_every => {}
            Some(last) => {
                let since: Vec<Duration> = self
                    .window
                    .iter()
                    .filter(|&&(at, _, _)| at > last.at)
                    .map(|&(_, _, lag)| lag)
                    .collect();
                if average(&since) * 5 > last.lag_before * 4 {
                    // Fewer users did not bring the lag down: shedding more would only shrink the test.
                    self.lag_shedding_futile = true;
                    self.last_lag_shed = None;
                    self.holding = false;
                    decisions.retain(|d| *d != Decision::PauseSpawning);
                    decisions.push(Decision::Resume);
                } else {
                    self.last_lag_shed = Some(LagShed {
                        at: now,
                        lag_before: average(&recent),
                    });
                    decisions.push(Decision::Shed(observation.users.div_ceil(10).max(1)));
                }
            }
            None => {
                self.last_lag_shed = Some(LagShed {
                    at: now,
                    lag_before: average(&recent),
                });
                decisions.push(Decision::Shed(observation.users.div_ceil(10).max(1)));
            }
        }
    }

    /// Whether the test must stop: harm (lag or memory) in most of the give-up window, or harm with no user left.
    fn give_up(&self, observation: &Observation, breaches: Breaches) -> Option<String> {
        let harmful = self.window.iter().filter(|(_, b, _)| b.harmful()).count();
        let span = self.window.front().map_or(Duration::ZERO, |&(at, _, _)| {
            observation.at.duration_since(at)
        });
        if span + Duration::from_secs(1) >= self.limits.give_up_after
            && harmful as f64 >= self.window.len() as f64 * self.limits.give_up_share
        {
            return Some(format!(
                "over the {} limit in {harmful} of the last {} samples ({}s)",
                breaches.describe(),
                self.window.len(),
                self.limits.give_up_after.as_secs()
            ));
        }
        let recent_harm = self
            .window
            .iter()
            .filter(|&&(at, _, _)| observation.at.duration_since(at) < self.limits.shed_after)
            .all(|(_, b, _)| b.harmful());
        if observation.users == 0
            && breaches.harmful()
            && recent_harm
            && span >= self.limits.shed_after
        {
            return Some(format!(
                "over the {} limit with no user left to shed",
                breaches.describe()
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn policy() -> (Policy, Instant) {
        let limits = GuardLimits::new(80.0, 4 * GIB, 8 * GIB, Duration::from_millis(200));
        (Policy::new(limits, GuardMode::Protect), Instant::now())
    }

    fn sample(
        start: Instant,
        millis: u64,
        cpu: f64,
        memory: u64,
        lag_ms: u64,
        users: u64,
    ) -> Observation {
        Observation {
            at: start + Duration::from_millis(millis),
            cpu_percent: Some(cpu),
            memory_bytes: memory,
            lag: Duration::from_millis(lag_ms),
            users,
            spawn_burst: false,
        }
    }

    fn memory(start: Instant, millis: u64, bytes: u64, users: u64) -> MemoryObservation {
        MemoryObservation {
            at: start + Duration::from_millis(millis),
            memory_bytes: bytes,
            users,
        }
    }

    #[test]
    fn busy_cpu_with_low_lag_pauses_and_never_sheds() {
        let (mut policy, t) = policy();
        assert!(policy.observe(&sample(t, 0, 50.0, GIB, 5, 50)).is_empty());
        assert_eq!(
            policy.observe(&sample(t, 1_000, 99.0, GIB, 5, 50)),
            [Decision::PauseSpawning]
        );
        // A no-wait test keeps its core busy to the end: no shed, no stop, however long.
        for s in 2..400 {
            assert!(
                policy
                    .observe(&sample(t, s * 1_000, 99.0, GIB, 5, 50))
                    .is_empty(),
                "second {s}"
            );
        }
        assert!(
            policy.breaches(&sample(t, 0, 99.0, GIB, 5, 50)).any(),
            "marked"
        );
    }

    #[test]
    fn a_spawn_burst_is_not_paused_by_its_own_cpu_or_lag() {
        let (mut policy, t) = policy();
        for s in 0..5 {
            let mut observation = sample(t, s * 1_000, 100.0, GIB, 900, 200_000 * s);
            observation.spawn_burst = true;
            assert!(policy.observe(&observation).is_empty(), "second {s}");
        }
        // Once the burst is over, a generator still late is handled as usual.
        assert_eq!(
            policy.observe(&sample(t, 5_000, 100.0, GIB, 900, 1_000_000)),
            [Decision::PauseSpawning]
        );
    }

    #[test]
    fn sustained_lag_sheds_while_it_helps() {
        let (mut policy, t) = policy();
        assert_eq!(
            policy.observe(&sample(t, 0, 99.0, GIB, 500, 100)),
            [Decision::PauseSpawning]
        );
        assert!(
            policy
                .observe(&sample(t, 1_000, 99.0, GIB, 500, 100))
                .is_empty()
        );
        // One dip inside the window does not reset the clock.
        assert!(
            policy
                .observe(&sample(t, 2_000, 99.0, GIB, 50, 100))
                .is_empty()
        );
        assert_eq!(
            policy.observe(&sample(t, 3_000, 99.0, GIB, 500, 100)),
            [Decision::Shed(10)]
        );
        // The lag halves after the shed: it helps, so shed again.
        assert!(
            policy
                .observe(&sample(t, 4_000, 99.0, GIB, 250, 90))
                .is_empty()
        );
        assert_eq!(
            policy.observe(&sample(t, 5_000, 99.0, GIB, 250, 90)),
            [Decision::Shed(9)]
        );
        // Now the lag is under its limit and low: resume after 5 s.
        for s in 6..11 {
            assert!(
                policy
                    .observe(&sample(t, s * 1_000, 40.0, GIB, 10, 81))
                    .is_empty(),
                "second {s}"
            );
        }
        assert_eq!(
            policy.observe(&sample(t, 11_000, 40.0, GIB, 10, 81)),
            [Decision::Resume]
        );
    }

    #[test]
    fn shedding_that_does_not_help_stops_and_gives_the_users_back() {
        let (mut policy, t) = policy();
        // A CPU quota: the lag stays at 300 ms whatever the user count.
        let mut decisions = Vec::new();
        for s in 0..8 {
            decisions.push(policy.observe(&sample(t, s * 1_000, 100.0, GIB, 300, 50)));
        }
        assert_eq!(decisions[0], [Decision::PauseSpawning]);
        assert_eq!(decisions[3], [Decision::Shed(5)]);
        assert_eq!(decisions[5], [Decision::Resume], "{decisions:?}");
        assert!(decisions[6..].iter().all(Vec::is_empty), "{decisions:?}");
        assert!(!policy.holding());
        // It stays marked and, if it lasts, the test stops rather than report fiction.
        let mut stopped = None;
        for s in 8..200 {
            if let Some(Decision::StopTest(reason)) = policy
                .observe(&sample(t, s * 1_000, 100.0, GIB, 300, 50))
                .pop()
            {
                stopped = Some((s, reason));
                break;
            }
        }
        let (second, reason) = stopped.expect("stops eventually");
        assert_eq!(second, 119);
        assert!(reason.contains("lag"), "{reason}");
    }

    #[test]
    fn dips_do_not_reset_the_give_up_window() {
        let (mut policy, t) = policy();
        let mut stopped_at = None;
        for s in 0..200u64 {
            // Over 19 seconds in 20: the old rule (a dip resets the clock) never gave up.
            let lag = if s % 20 == 19 { 10 } else { 500 };
            let observation = sample(t, s * 1_000, 100.0, GIB, lag, 0);
            if let Some(Decision::StopTest(_)) = policy.observe(&observation).pop() {
                stopped_at = Some(s);
                break;
            }
        }
        assert!(stopped_at.is_some_and(|s| s <= 121), "{stopped_at:?}");
    }

    #[test]
    fn no_user_left_and_still_over_stops() {
        let (mut policy, t) = policy();
        let mut last = Vec::new();
        for s in 0..4 {
            last = policy.observe(&sample(t, s * 1_000, 10.0, 5 * GIB, 5, 0));
        }
        assert!(
            matches!(last.pop(), Some(Decision::StopTest(reason)) if reason.contains("no user"))
        );
    }

    #[test]
    fn memory_over_and_rising_sheds_flat_holds() {
        let (mut policy, t) = policy();
        // 4.1 GiB and rising 100 MiB/s (hard limit 8 GiB is ~40 s away): pause and shed a fifth.
        let mut all = Vec::new();
        for i in 0..10u64 {
            all.extend(policy.observe_memory(&memory(
                t,
                i * 20,
                4 * GIB + 100 * MIB + i * 2 * MIB,
                100,
            )));
        }
        assert_eq!(all, [Decision::PauseSpawning, Decision::Shed(20)]);
        // Flat over the limit: held, not shed.
        for i in 10..200u64 {
            assert!(
                policy
                    .observe_memory(&memory(t, i * 20, 4 * GIB + 200 * MIB, 80))
                    .is_empty(),
                "reading {i}"
            );
        }
    }

    #[test]
    fn growth_toward_the_limit_pauses_before_the_crossing() {
        let (mut policy, t) = policy();
        // 3.6 GiB growing 1 GiB/s: the 4 GiB limit is under a second away.
        let mut all = Vec::new();
        for i in 0..5u64 {
            all.extend(policy.observe_memory(&memory(t, i * 20, 3600 * MIB + i * 20 * MIB, 10)));
        }
        assert_eq!(all, [Decision::PauseSpawning]);
    }

    /// A recorded trace: 15 users each keeping 1 MiB more per 0.1 s task in a 300 MiB container (`--max-memory`
    /// 85%), read every 20 ms; before the second pass the OOM killer ended this run.
    #[test]
    fn fast_growth_in_a_small_container_ends_in_an_emergency_stop_before_the_hard_limit() {
        let hard = 300 * MIB;
        let limits = GuardLimits::new(90.0, hard * 85 / 100, hard, Duration::from_millis(100));
        let mut policy = Policy::new(limits.clone(), GuardMode::Protect);
        let t = Instant::now();
        let mut used = 20 * MIB;
        let mut users = 15u64;
        let mut decisions = Vec::new();
        for i in 0..500u64 {
            // 150 MiB/s, each user's share; a shed user frees what it held.
            used += users * MIB / 5;
            let now = memory(t, i * 20, used, users);
            for decision in policy.observe_memory(&now) {
                if let Decision::Shed(n) = decision {
                    used -= used.saturating_sub(20 * MIB) * n / users;
                    users -= n;
                }
                decisions.push((i, used, decision));
            }
            assert!(
                used < hard,
                "reached the hard limit at reading {i}: {decisions:?}"
            );
            if decisions
                .iter()
                .any(|(_, _, d)| matches!(d, Decision::Emergency(_)))
            {
                break;
            }
        }
        let emergency = decisions
            .iter()
            .find(|(_, _, d)| matches!(d, Decision::Emergency(_)));
        let sheds = decisions
            .iter()
            .filter(|(_, _, d)| matches!(d, Decision::Shed(_)))
            .count();
        assert!(sheds >= 1 || emergency.is_some(), "{decisions:?}");
        if let Some((_, used, _)) = emergency {
            assert!(*used < hard, "{decisions:?}");
        }
    }

    #[test]
    fn a_fast_spike_stops_at_once_near_the_hard_limit() {
        let (mut policy, t) = policy();
        let limits = policy.limits().clone();
        // 1 GiB/s from 4.5 GiB: the hard limit is seconds away, the emergency line sooner.
        let mut emergency = None;
        for i in 0..400u64 {
            let used = 4 * GIB + 512 * MIB + i * 20 * MIB;
            if let Some(Decision::Emergency(reason)) = policy
                .observe_memory(&memory(t, i * 20, used, 100))
                .into_iter()
                .find(|d| matches!(d, Decision::Emergency(_)))
            {
                emergency = Some((used, reason));
                break;
            }
        }
        let (used, reason) = emergency.expect("an emergency stop");
        assert!(used < limits.hard_memory_bytes, "{used}");
        assert!(reason.contains("MiB/s"), "{reason}");
        assert!(
            policy
                .observe_memory(&memory(t, 9_000, 7 * GIB, 100))
                .is_empty(),
            "once"
        );
    }

    #[test]
    fn memory_over_marks_the_interval_and_limits_can_change() {
        let (mut policy, t) = policy();
        let over = sample(t, 0, 10.0, 5 * GIB, 5, 10);
        assert!(policy.breaches(&over).any() && policy.breaches(&over).memory);
        let mut raised = policy.limits().clone();
        raised.max_memory_bytes = 6 * GIB;
        raised.hard_memory_bytes = 12 * GIB;
        policy.set_limits(raised);
        assert!(!policy.breaches(&over).any());
    }

    #[test]
    fn unknown_cpu_is_not_a_breach_and_warn_mode_never_acts() {
        let (policy, t) = policy();
        let mut observation = sample(t, 0, 10.0, GIB, 500, 5);
        observation.cpu_percent = None;
        let breaches = policy.breaches(&observation);
        assert!(breaches.lag && !breaches.cpu && !breaches.memory);
        let mut warn = Policy::new(policy.limits().clone(), GuardMode::Warn);
        assert!(warn.observe(&observation).is_empty());
        assert!(warn.observe_memory(&memory(t, 0, 7 * GIB, 5)).is_empty());
    }

    #[test]
    fn emergency_line_sits_in_the_last_quarter_of_the_gap() {
        let limits = GuardLimits::new(90.0, 255 * MIB, 300 * MIB, Duration::from_millis(100));
        let line = limits.memory_emergency();
        assert!(line > 288 * MIB && line < 300 * MIB, "{}", line >> 20);
        // No gap (the limit is the hard limit): 2% below it.
        let limits = GuardLimits::new(90.0, 300 * MIB, 300 * MIB, Duration::from_millis(100));
        assert_eq!(limits.memory_emergency(), 300 * MIB - 300 * MIB / 50);
    }

    #[test]
    fn memory_is_read_slowly_far_from_the_limit_and_fast_near_it() {
        let (mut policy, t) = policy();
        // 4 GiB limit. Far below it, flat: the slowest pace.
        assert_eq!(
            policy.next_memory_reading(t, 100 * MIB),
            SLOWEST_MEMORY_READING
        );
        // 300 MiB under it: a 2 GiB/s spike needs about 146 ms to cross, so the guard waits no longer.
        let wait = policy.next_memory_reading(t, 4 * GIB - 300 * MIB);
        assert!(
            wait > Duration::from_millis(140) && wait < Duration::from_millis(150),
            "{wait:?}"
        );
        // Within 40 MiB of it, and over it: the fastest pace.
        assert_eq!(
            policy.next_memory_reading(t, 4 * GIB - 30 * MIB),
            FASTEST_MEMORY_READING
        );
        assert_eq!(
            policy.next_memory_reading(t, 5 * GIB),
            FASTEST_MEMORY_READING
        );
        // Far below it but growing at a rate that reaches it within 2 s (1 GiB in 300 ms from 2 GiB): fast.
        policy.observe_memory(&memory(t, 0, 2 * GIB, 10));
        policy.observe_memory(&memory(t, 300, 3 * GIB, 10));
        assert_eq!(
            policy.next_memory_reading(t + Duration::from_millis(300), 3 * GIB),
            FASTEST_MEMORY_READING
        );
        // Slow growth (10 MiB/s) far from the limit does not hurry the guard.
        let (mut policy, t) = self::policy();
        policy.observe_memory(&memory(t, 0, GIB, 10));
        policy.observe_memory(&memory(t, 250, GIB + 2 * MIB + MIB / 2, 10));
        assert_eq!(
            policy.next_memory_reading(t + Duration::from_millis(250), GIB + 3 * MIB),
            SLOWEST_MEMORY_READING
        );
        // A rate from readings long past (the policy is not fed between tests) is not a rate now.
        let (mut policy, t) = self::policy();
        policy.observe_memory(&memory(t, 0, 2 * GIB, 10));
        policy.observe_memory(&memory(t, 300, 3 * GIB, 10));
        assert_eq!(
            policy.next_memory_reading(t + Duration::from_secs(60), 3 * GIB),
            Duration::from_secs_f64(GIB as f64 / SPIKE_BYTES_PER_SECOND)
                .min(SLOWEST_MEMORY_READING)
        );
    }

    #[test]
    fn a_spike_from_a_standing_start_is_read_before_it_crosses_the_limit() {
        // Memory jumps at 1.5 GiB/s (under the spike rate) from far below a 300 MiB container's 255 MiB limit;
        // every reading comes before it crosses, until the 20 ms floor, from which on it is read every 20 ms.
        let limits = GuardLimits::new(80.0, 255 * MIB, 300 * MIB, Duration::from_millis(200));
        let mut policy = Policy::new(limits, GuardMode::Protect);
        let t = Instant::now();
        let rate = 1.5 * 1_073_741_824.0;
        let mut at = Duration::ZERO;
        let mut used = 10 * MIB;
        loop {
            let wait = policy.next_memory_reading(t + at, used);
            if wait == FASTEST_MEMORY_READING {
                break;
            }
            let next = used + (rate * wait.as_secs_f64()) as u64;
            assert!(
                next < 255 * MIB,
                "crossed between readings: {used} -> {next} in {wait:?}"
            );
            at += wait;
            used = next;
            policy.observe_memory(&memory(t, at.as_millis() as u64, used, 10));
        }
        assert!(used < 255 * MIB);
    }
}
