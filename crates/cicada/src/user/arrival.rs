//! Arrival-rate user types: the open workload model (k6's constant- and ramping-arrival-rate executors).
//!
//! A looping user type runs N users that each start their next task when the last one ended (and its wait passed),
//! so a slow target slows the load down. An arrival-rate type instead starts *iterations* at a rate, whatever the
//! response times: iteration `k` is due when the rate's integral since the start reaches `k` (`k / rate` for a
//! constant rate). One iteration is one task of the type, picked by weight (a nested task set runs one pass), run
//! by a pooled user instance whose state persists across iterations. This module owns the rate definition
//! ([`ArrivalRate`], [`Stage`]), the pure schedule (`Schedule`) that decides which due iterations start and which
//! are dropped, the bounded pool of instances, the one timer per type that drives it, and the counters the reports
//! read ([`ArrivalReport`]).
//!
//! An iteration that cannot start when due is *dropped* and counted, never silently lost: because the resource guard
//! holds the generator (paused, shedding or stopped spawning), because every instance is busy (the bound,
//! [`ArrivalRate::max_concurrent`]), or because the scheduler itself woke more than one period (at least
//! [`LATE_FLOOR`]) after the iteration was due (the generator's lag). A stalled scheduler does not catch up with a
//! burst: the iterations it missed are dropped in one step.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::run::{ActiveUserType, Exit, Step, StopLevel, UserControl, pick_weighted, run_task};
use super::task::{Entry, Order, TaskSet};
use super::{User, UserType};

/// Concurrent iterations of one arrival-rate type when [`ArrivalRate::max_concurrent`] is not set: enough for
/// 100 iterations a second that take a second each.
pub const DEFAULT_MAX_CONCURRENT: u32 = 100;

/// The most concurrent iterations (pooled instances) one type may ask for; each instance is a user with its own
/// HTTP client, so this bounds the pool's memory.
pub const MAX_CONCURRENT_LIMIT: u32 = 1_000_000;

/// An iteration whose due time passed by more than its period, and at least by this much, is dropped as late. The
/// floor keeps timer granularity (about a millisecond) from dropping iterations of fast rates.
pub const LATE_FLOOR: Duration = Duration::from_millis(10);

/// How long an instance may sit idle before the pool retires it (its `on_stop` runs), when the rate does not say.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Stages a ramping rate may have (a schedule is looked up stage by stage).
pub const MAX_STAGES: usize = 10_000;

/// Instances of one type get ids from this base up (plus 2^32 per type), apart from looping users' ids.
const INSTANCE_ID_BASE: u64 = 1 << 40;

/// One stage of a ramping arrival rate: move linearly to `target` iterations per second over `duration`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub(crate) duration: Duration,
    pub(crate) target: f64,
}

impl Stage {
    /// Reach `target` iterations per second at the end of `duration`, linearly from the previous stage's target.
    pub fn new(duration: Duration, target: f64) -> Self {
        Stage { duration, target }
    }
}

/// How the rate moves over the test.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RateProfile {
    Constant(f64),
    Ramping { start: f64, stages: Vec<Stage> },
}

/// The rate at which an arrival-rate type starts iterations, and the bound on iterations running at once.
///
/// ```
/// use cicada::prelude::*;
/// use std::time::Duration;
///
/// async fn checkout(user: &mut User) -> TaskResult {
///     user.post("/checkout").send().await?;
///     Ok(())
/// }
///
/// // 50 iterations a second, at most 200 running at once.
/// let steady = UserType::<()>::new("Checkout")
///     .arrival_rate(ArrivalRate::constant(50.0).max_concurrent(200))
///     .task(checkout);
///
/// // From 10/s to 100/s over a minute, hold 100/s for five minutes (and after, until the test stops).
/// let ramp = UserType::<()>::new("Browse")
///     .arrival_rate(ArrivalRate::ramping(10.0, [
///         Stage::new(Duration::from_secs(60), 100.0),
///         Stage::new(Duration::from_secs(300), 100.0),
///     ]))
///     .task(checkout);
/// # let _ = (steady, ramp);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ArrivalRate {
    pub(crate) profile: RateProfile,
    pub(crate) max_concurrent: u32,
    pub(crate) pre_allocated: u32,
    pub(crate) idle_timeout: Duration,
}

impl ArrivalRate {
    /// Start `per_second` iterations every second.
    pub fn constant(per_second: f64) -> Self {
        ArrivalRate {
            profile: RateProfile::Constant(per_second),
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            pre_allocated: 0,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }

    /// Start at `start` iterations per second, then follow the stages (linear ramps, as k6's stages). After the last
    /// stage its target rate holds until the test stops (end with `Stage::new(.., 0.0)` to stop starting
    /// iterations).
    pub fn ramping(start: f64, stages: impl IntoIterator<Item = Stage>) -> Self {
        ArrivalRate {
            profile: RateProfile::Ramping {
                start,
                stages: stages.into_iter().collect(),
            },
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            pre_allocated: 0,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }

    /// At most this many iterations run at once (default [`DEFAULT_MAX_CONCURRENT`]); an iteration due while all
    /// are busy is dropped and counted. This is also the largest the pool of user instances grows.
    pub fn max_concurrent(mut self, bound: u32) -> Self {
        self.max_concurrent = bound;
        self
    }

    /// Create this many instances (running their `on_start`) when the test starts, instead of on first need.
    pub fn pre_allocated(mut self, instances: u32) -> Self {
        self.pre_allocated = instances;
        self
    }

    /// The rate in words, for the log.
    pub(crate) fn describe(&self) -> String {
        match &self.profile {
            RateProfile::Constant(rate) => format!("{rate} iterations/s"),
            RateProfile::Ramping { start, stages } => format!(
                "from {start} iterations/s through {} stage{}",
                stages.len(),
                if stages.len() == 1 { "" } else { "s" }
            ),
        }
    }

    /// Retire an instance (running its `on_stop`) once it has been idle this long, down to `pre_allocated`
    /// instances (default [`DEFAULT_IDLE_TIMEOUT`]): after a ramp down, the pool shrinks with the need.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// What is wrong with this rate, for a usage error naming the user type.
    pub(crate) fn problem(&self) -> Option<String> {
        let bad_rate = |rate: f64| !rate.is_finite() || rate < 0.0;
        match &self.profile {
            RateProfile::Constant(rate) if bad_rate(*rate) => {
                return Some(format!(
                    "the arrival rate {rate} is not a number of iterations per second (0 or more)"
                ));
            }
            RateProfile::Ramping { start, stages } => {
                if bad_rate(*start) || stages.iter().any(|s| bad_rate(s.target)) {
                    return Some(
                        "a ramping arrival rate's start and stage targets must be iterations per second (0 or more)"
                            .to_string(),
                    );
                }
                if stages.len() > MAX_STAGES {
                    return Some(format!(
                        "a ramping arrival rate has {} stages, more than {MAX_STAGES}",
                        stages.len()
                    ));
                }
            }
            RateProfile::Constant(_) => {}
        }
        if self.max_concurrent == 0 || self.max_concurrent > MAX_CONCURRENT_LIMIT {
            return Some(format!(
                "max_concurrent is {}: give 1 to {MAX_CONCURRENT_LIMIT} concurrent iterations",
                self.max_concurrent
            ));
        }
        if self.pre_allocated > self.max_concurrent {
            return Some(format!(
                "pre_allocated ({}) is more than max_concurrent ({})",
                self.pre_allocated, self.max_concurrent
            ));
        }
        None
    }

    /// One worker's part of this rate in a cluster: every rate times `share` (0 to 1), and the bound and the
    /// instances made in advance likewise (rounded up, a bound of at least 1).
    pub(crate) fn scaled(mut self, share: f64) -> Self {
        let share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.profile = match self.profile {
            RateProfile::Constant(rate) => RateProfile::Constant(rate * share),
            RateProfile::Ramping { start, stages } => RateProfile::Ramping {
                start: start * share,
                stages: stages
                    .into_iter()
                    .map(|stage| Stage::new(stage.duration, stage.target * share))
                    .collect(),
            },
        };
        let part = |count: u32| (f64::from(count) * share).ceil() as u32;
        self.max_concurrent = part(self.max_concurrent).max(1);
        self.pre_allocated = part(self.pre_allocated).min(self.max_concurrent);
        self
    }

    /// This rate with the command line's overrides: `--arrival-rate` replaces a constant rate (a ramping one keeps
    /// its stages), `--max-concurrent` the bound.
    pub(crate) fn overridden(mut self, rate: Option<f64>, max_concurrent: Option<u32>) -> Self {
        if let (Some(rate), RateProfile::Constant(_)) = (rate, &self.profile) {
            self.profile = RateProfile::Constant(rate);
        }
        if let Some(bound) = max_concurrent {
            self.max_concurrent = bound;
            self.pre_allocated = self.pre_allocated.min(bound);
        }
        self
    }
}

impl<S: Send + 'static> UserType<S> {
    /// Make this an arrival-rate type (the open model): iterations start at `rate` whatever the response times,
    /// instead of users looping. Wait times do not apply; `-u` does not count these. See
    /// [`ArrivalRate`] and docs/arrival-rate.md.
    pub fn arrival_rate(mut self, rate: ArrivalRate) -> Self {
        self.arrival = Some(rate);
        self
    }
}

/// A cluster worker's part of the arrival-rate types, from its master's spawn command: its share of every rate and
/// bound, and the master's command-line overrides (which replace the worker's own).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ClusterSplit {
    pub(crate) share: f64,
    pub(crate) rate: Option<f64>,
    pub(crate) max_concurrent: Option<u32>,
}

impl ClusterSplit {
    /// `rate` as this worker runs it.
    pub(crate) fn apply(&self, rate: ArrivalRate) -> ArrivalRate {
        rate.overridden(self.rate, self.max_concurrent)
            .scaled(self.share)
    }
}

/// Check a test's arrival-rate types before the run: every rate (with the command line's overrides) must make
/// sense. The error is the usage error's message.
pub(crate) fn check_types(
    types: &[Box<dyn super::run::UserKind>],
    options: &crate::options::Options,
) -> Result<(), String> {
    for kind in types {
        if let Some(rate) = kind.arrival()
            && let Some(problem) = rate
                .clone()
                .overridden(options.arrival_rate, options.max_concurrent)
                .problem()
        {
            return Err(format!("user type {}: {problem}", kind.name()));
        }
    }
    Ok(())
}

/// A linear piece of the rate: from `start_rate` at `start_s` to `end_rate` at `end_s` (seconds since the start).
#[derive(Debug, Clone, Copy)]
struct Segment {
    start_s: f64,
    end_s: f64,
    start_rate: f64,
    end_rate: f64,
    /// Iterations due before this segment (the rate's integral up to `start_s`).
    start_count: f64,
}

impl Segment {
    fn slope(&self) -> f64 {
        let length = self.end_s - self.start_s;
        if length > 0.0 {
            (self.end_rate - self.start_rate) / length
        } else {
            0.0
        }
    }

    fn end_count(&self) -> f64 {
        self.start_count + (self.start_rate + self.end_rate) / 2.0 * (self.end_s - self.start_s)
    }

    /// Seconds after `start_s` at which the integral reaches `count` (which lies within this segment).
    fn offset_of(&self, count: f64) -> f64 {
        let needed = (count - self.start_count).max(0.0);
        let slope = self.slope();
        // The root of slope/2 x² + r0 x - needed = 0 written so that it holds for slope 0 and loses no precision.
        let root = (self.start_rate * self.start_rate + 2.0 * slope * needed)
            .max(0.0)
            .sqrt();
        let denominator = self.start_rate + root;
        if denominator > 0.0 {
            2.0 * needed / denominator
        } else {
            0.0
        }
    }
}

/// One iteration that is due: when, and how late it may still start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DueIteration {
    pub(crate) index: u64,
    pub(crate) due_s: f64,
}

/// What became of one due iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Started,
    /// The resource guard held the generator.
    DroppedGuard,
    /// The scheduler woke more than a period after the iteration was due.
    DroppedLate,
    /// Every instance was busy.
    DroppedBound,
}

/// When each iteration is due: a pure function of the rate and the seconds since the start, so that a due time
/// never drifts with how late the timer fires. Iteration `k` (from 0) is due when the rate's integral reaches `k`.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    segments: Vec<Segment>,
    /// After the last segment: this rate from `tail_start_s`, where `tail_count` iterations were due.
    tail_start_s: f64,
    tail_count: f64,
    tail_rate: f64,
    /// The next iteration not yet handed out (started or dropped): also the count of due iterations so far.
    next_index: u64,
}

impl Schedule {
    pub(crate) fn new(profile: &RateProfile) -> Self {
        match profile {
            RateProfile::Constant(rate) => Schedule {
                segments: Vec::new(),
                tail_start_s: 0.0,
                tail_count: 0.0,
                tail_rate: *rate,
                next_index: 0,
            },
            RateProfile::Ramping { start, stages } => {
                let mut segments = Vec::with_capacity(stages.len());
                let (mut time, mut rate, mut count) = (0.0, *start, 0.0);
                for stage in stages {
                    let segment = Segment {
                        start_s: time,
                        end_s: time + stage.duration.as_secs_f64(),
                        start_rate: rate,
                        end_rate: stage.target,
                        start_count: count,
                    };
                    count = segment.end_count();
                    time = segment.end_s;
                    rate = stage.target;
                    segments.push(segment);
                }
                Schedule {
                    segments,
                    tail_start_s: time,
                    tail_count: count,
                    tail_rate: rate,
                    next_index: 0,
                }
            }
        }
    }

    /// Iterations due so far (every one was started or dropped).
    #[cfg(test)]
    pub(crate) fn due_count(&self) -> u64 {
        self.next_index
    }

    /// The target rate at `at_s` seconds.
    pub(crate) fn rate_at(&self, at_s: f64) -> f64 {
        for segment in &self.segments {
            if at_s < segment.end_s {
                return segment.start_rate + segment.slope() * (at_s - segment.start_s).max(0.0);
            }
        }
        self.tail_rate
    }

    /// Iterations due by `at_s` seconds (the rate's integral, not rounded).
    pub(crate) fn count_at(&self, at_s: f64) -> f64 {
        for segment in &self.segments {
            if at_s < segment.end_s {
                let x = (at_s - segment.start_s).max(0.0);
                return segment.start_count
                    + segment.start_rate * x
                    + segment.slope() * x * x / 2.0;
            }
        }
        self.tail_count + self.tail_rate * (at_s - self.tail_start_s).max(0.0)
    }

    /// When iteration `index` is due; `None` when the rate never gets there.
    fn due_s(&self, index: u64) -> Option<f64> {
        let count = index as f64;
        for segment in &self.segments {
            if count <= segment.end_count() {
                return Some(segment.start_s + segment.offset_of(count));
            }
        }
        if count <= self.tail_count {
            return Some(self.tail_start_s);
        }
        (self.tail_rate > 0.0)
            .then(|| self.tail_start_s + (count - self.tail_count) / self.tail_rate)
    }

    /// When the next iteration is due; `None` when no further one ever is.
    pub(crate) fn next_due_s(&self) -> Option<f64> {
        self.due_s(self.next_index)
    }

    /// How late an iteration due at `due_s` may start: one period, at least [`LATE_FLOOR`].
    fn late_limit_s(&self, due_s: f64) -> f64 {
        let rate = self.rate_at(due_s);
        let period = if rate > 0.0 {
            1.0 / rate
        } else {
            f64::INFINITY
        };
        period.max(LATE_FLOOR.as_secs_f64())
    }

    /// From now on, a constant `rate` (a load shape's or the API's change). The iterations due so far stay counted.
    pub(crate) fn set_constant(&mut self, now_s: f64, rate: f64) {
        self.tail_count = self.count_at(now_s);
        self.tail_start_s = now_s;
        self.tail_rate = rate;
        self.segments.clear();
    }

    /// Hand out every iteration due by `now_s`: each one is started (when `held` is false and `try_start` finds
    /// an instance) or dropped, and `outcome` hears of each. Iterations more than their period late are dropped
    /// in one step, however many there are, so a stall costs no burst and no time.
    pub(crate) fn run_due(
        &mut self,
        now_s: f64,
        held: bool,
        mut try_start: impl FnMut(DueIteration) -> bool,
        mut outcome: impl FnMut(Outcome, u64),
    ) {
        // The iterations missed by a stall: every one due before now minus the current late limit.
        let cutoff_s = now_s - self.late_limit_s(now_s);
        if let Some(first_due) = self.next_due_s()
            && first_due < cutoff_s
        {
            let on_time_from = self.count_at(cutoff_s).ceil().max(0.0) as u64;
            let missed = on_time_from.saturating_sub(self.next_index);
            if missed > 0 {
                outcome(
                    if held {
                        Outcome::DroppedGuard
                    } else {
                        Outcome::DroppedLate
                    },
                    missed,
                );
                self.next_index += missed;
            }
        }
        while let Some(due_s) = self.next_due_s().filter(|&due| due <= now_s) {
            let due = DueIteration {
                index: self.next_index,
                due_s,
            };
            self.next_index += 1;
            let result = if held {
                Outcome::DroppedGuard
            } else if now_s - due_s > self.late_limit_s(due_s) {
                Outcome::DroppedLate
            } else if try_start(due) {
                Outcome::Started
            } else {
                Outcome::DroppedBound
            };
            outcome(result, 1);
        }
    }
}

/// One arrival-rate type's counts, shared by its scheduler and the reports. Updated once per iteration, never per
/// request.
pub(crate) struct ArrivalCounters {
    user_type: String,
    max_concurrent: AtomicU64,
    due: AtomicU64,
    started: AtomicU64,
    completed: AtomicU64,
    dropped_bound: AtomicU64,
    dropped_guard: AtomicU64,
    dropped_late: AtomicU64,
    /// Since the collector last took them (for the history).
    interval_started: AtomicU64,
    interval_dropped: AtomicU64,
    interval_dropped_guard: AtomicU64,
    busy: AtomicU64,
    peak_busy: AtomicU64,
    instances_created: AtomicU64,
    instances_retired: AtomicU64,
    /// The scheduler's own clock: microseconds it ran, over every test of the process.
    active_micros: AtomicU64,
    rate_bits: AtomicU64,
}

/// What the reports say about one arrival-rate type.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArrivalReport {
    /// User type.
    pub user_type: String,
    /// The target rate when the report was made, iterations per second.
    pub rate_per_s: f64,
    /// The bound on concurrent iterations.
    pub max_concurrent: u64,
    /// Iterations due by the schedule (each was started or dropped).
    pub due: u64,
    /// Iterations started.
    pub started: u64,
    /// Iterations that ran to their end (a stop's killed iterations did not).
    pub completed: u64,
    /// Iterations dropped, for any reason.
    pub dropped: u64,
    /// Dropped because every instance was busy (the bound).
    pub dropped_max_concurrent: u64,
    /// Dropped because the resource guard held the generator.
    pub dropped_guard: u64,
    /// Dropped because the scheduler woke more than a period late (the generator's lag).
    pub dropped_late: u64,
    /// Most iterations running at once.
    pub peak_concurrent: u64,
    /// User instances created (each ran `on_start`).
    pub instances_created: u64,
    /// Instances the pool retired after their idle timeout (each ran `on_stop`).
    pub instances_retired: u64,
    /// Seconds the scheduler ran, by its own clock.
    pub active_s: f64,
}

impl ArrivalReport {
    /// The dropped iterations by reason, as metrics label them: `max_concurrent`, `guard`, `late`.
    pub fn dropped_by_reason(&self) -> [(&'static str, u64); 3] {
        [
            ("max_concurrent", self.dropped_max_concurrent),
            ("guard", self.dropped_guard),
            ("late", self.dropped_late),
        ]
    }
}

/// Iterations of every arrival-rate type in one collector interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ArrivalInterval {
    pub(crate) started: u64,
    pub(crate) dropped: u64,
    pub(crate) dropped_by_guard: u64,
}

impl ArrivalCounters {
    pub(crate) fn new(user_type: &str) -> Self {
        let zero = || AtomicU64::new(0);
        ArrivalCounters {
            user_type: user_type.to_string(),
            max_concurrent: zero(),
            due: zero(),
            started: zero(),
            completed: zero(),
            dropped_bound: zero(),
            dropped_guard: zero(),
            dropped_late: zero(),
            interval_started: zero(),
            interval_dropped: zero(),
            interval_dropped_guard: zero(),
            busy: zero(),
            peak_busy: zero(),
            instances_created: zero(),
            instances_retired: zero(),
            active_micros: zero(),
            rate_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    pub(crate) fn user_type(&self) -> &str {
        &self.user_type
    }

    fn count(&self, outcome: Outcome, n: u64) {
        self.due.fetch_add(n, Ordering::Relaxed);
        let total = match outcome {
            Outcome::Started => {
                self.interval_started.fetch_add(n, Ordering::Relaxed);
                &self.started
            }
            Outcome::DroppedGuard => {
                self.interval_dropped_guard.fetch_add(n, Ordering::Relaxed);
                &self.dropped_guard
            }
            Outcome::DroppedLate => &self.dropped_late,
            Outcome::DroppedBound => &self.dropped_bound,
        };
        if outcome != Outcome::Started {
            self.interval_dropped.fetch_add(n, Ordering::Relaxed);
        }
        total.fetch_add(n, Ordering::Relaxed);
    }

    fn iteration_began(&self) {
        let busy = self.busy.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_busy.fetch_max(busy, Ordering::Relaxed);
    }

    /// The counts since the last call.
    pub(crate) fn take_interval(&self) -> ArrivalInterval {
        ArrivalInterval {
            started: self.interval_started.swap(0, Ordering::Relaxed),
            dropped: self.interval_dropped.swap(0, Ordering::Relaxed),
            dropped_by_guard: self.interval_dropped_guard.swap(0, Ordering::Relaxed),
        }
    }

    pub(crate) fn report(&self) -> ArrivalReport {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (bound, guard, late) = (
            load(&self.dropped_bound),
            load(&self.dropped_guard),
            load(&self.dropped_late),
        );
        ArrivalReport {
            user_type: self.user_type.clone(),
            rate_per_s: f64::from_bits(load(&self.rate_bits)),
            max_concurrent: load(&self.max_concurrent),
            due: load(&self.due),
            started: load(&self.started),
            completed: load(&self.completed),
            dropped: bound + guard + late,
            dropped_max_concurrent: bound,
            dropped_guard: guard,
            dropped_late: late,
            peak_concurrent: load(&self.peak_busy),
            instances_created: load(&self.instances_created),
            instances_retired: load(&self.instances_retired),
            active_s: load(&self.active_micros) as f64 / 1e6,
        }
    }
}

/// What an arrival-rate type runs with: its active user type (definition, client, context), its rate with the
/// command line's overrides, its counters and its place among the test's types.
pub(crate) struct ArrivalParts<S> {
    pub(crate) active: Arc<ActiveUserType<S>>,
    pub(crate) rate: ArrivalRate,
    pub(crate) counters: Arc<ArrivalCounters>,
    pub(crate) type_index: usize,
}

/// An idle instance waiting for its next iteration, or for being retired.
struct Slot {
    go: Notify,
    /// Set before `go` is notified when the scheduler retires this idle instance (the pool shrinks).
    retire: AtomicBool,
    /// When it last went idle: microseconds since its type's scheduler started.
    idle_since_micros: AtomicU64,
}

/// The idle instances of one type, least recently used at the front: an iteration takes the most recently used
/// one (its connections are the warmest), the pool shrinks from the front. At most `max_concurrent` long.
struct Pool {
    idle: Mutex<VecDeque<Arc<Slot>>>,
    /// When the scheduler started, the zero of `idle_since_micros`.
    start: tokio::time::Instant,
}

impl Pool {
    fn idle(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Slot>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn micros_now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// Aborts every instance's task when the scheduler's task ends or is aborted, so no instance outlives its type.
struct Instances(Vec<JoinHandle<()>>);

impl Drop for Instances {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

/// The scheduler's side of one type's pool: creating instances, handing iterations to idle ones, retiring the
/// ones idle for longer than the rate's idle timeout.
struct PoolKeeper<S> {
    active: Arc<ActiveUserType<S>>,
    control: Arc<UserControl>,
    counters: Arc<ArrivalCounters>,
    pool: Arc<Pool>,
    instances: Instances,
    /// Instances alive (idle or busy), lowered by each instance's task when it ends.
    live: Arc<AtomicU64>,
    next_instance: u64,
    type_index: usize,
    max_concurrent: u64,
    pre_allocated: u64,
    idle_timeout: Duration,
}

impl<S: Send + 'static> PoolKeeper<S> {
    fn spawn(&mut self, first_iteration: bool) {
        self.next_instance += 1;
        let id = INSTANCE_ID_BASE + ((self.type_index as u64) << 32) + self.next_instance;
        self.counters
            .instances_created
            .fetch_add(1, Ordering::Relaxed);
        self.live.fetch_add(1, Ordering::Relaxed);
        // Finished instances (retired, stop_user) leave the list here, so it stays within the bound.
        self.instances.0.retain(|handle| !handle.is_finished());
        self.instances.0.push(tokio::spawn(run_instance(
            self.active.clone(),
            self.active.new_user(id, self.control.clone()),
            self.pool.clone(),
            self.counters.clone(),
            self.live.clone(),
            self.control.clone(),
            first_iteration,
        )));
    }

    /// Start one iteration on an idle instance, or on a new one while the pool is under its bound.
    fn try_start(&mut self) -> bool {
        let idle = self.pool.idle().pop_back();
        if let Some(slot) = idle {
            self.counters.iteration_began();
            slot.go.notify_one();
            true
        } else if self.live.load(Ordering::Relaxed) < self.max_concurrent {
            self.counters.iteration_began();
            self.spawn(true);
            true
        } else {
            false
        }
    }

    /// Hand out the iterations due by `now_s`.
    fn hand_out(&mut self, schedule: &mut Schedule, now_s: f64) {
        let held = self.active.context.env.runner.spawning_held();
        let counters = self.counters.clone();
        schedule.run_due(
            now_s,
            held,
            |_due| self.try_start(),
            |outcome, n| counters.count(outcome, n),
        );
    }

    /// Retire the instances idle for longer than the idle timeout, keeping `pre_allocated`. Returns when the next
    /// one would be due for retirement, if any is idle above that.
    fn shrink(&mut self) -> Option<tokio::time::Instant> {
        let now = self.pool.micros_now();
        let timeout = self.idle_timeout.as_micros() as u64;
        let mut idle = self.pool.idle();
        while self.live.load(Ordering::Relaxed) > self.pre_allocated {
            let oldest = idle.front()?;
            let since = oldest.idle_since_micros.load(Ordering::Relaxed);
            if now.saturating_sub(since) < timeout {
                return Some(self.pool.start + Duration::from_micros(since + timeout));
            }
            let slot = idle.pop_front().expect("a front element");
            slot.retire.store(true, Ordering::Release);
            slot.go.notify_one();
            // Counted here, so that the next check does not retire one too many before the instance has left.
            self.live.fetch_sub(1, Ordering::Relaxed);
            self.counters
                .instances_retired
                .fetch_add(1, Ordering::Relaxed);
        }
        None
    }
}

/// Run one arrival-rate type until `control` stops it: the one timer that hands due iterations to instances and
/// retires the idle ones. `rates` carries rate changes (a load shape's) as constant rates from the moment they
/// arrive.
pub(crate) async fn run_arrival<S: Send + 'static>(
    parts: ArrivalParts<S>,
    control: Arc<UserControl>,
    mut rates: watch::Receiver<Option<f64>>,
) {
    let ArrivalParts {
        active,
        rate,
        counters,
        type_index,
    } = parts;
    counters
        .max_concurrent
        .store(u64::from(rate.max_concurrent), Ordering::Relaxed);
    let start = tokio::time::Instant::now();
    let mut keeper = PoolKeeper {
        active,
        control: control.clone(),
        counters: counters.clone(),
        pool: Arc::new(Pool {
            // Grows with the pool (a bound of a million must not cost its stack up front).
            idle: Mutex::new(VecDeque::new()),
            start,
        }),
        instances: Instances(Vec::new()),
        live: Arc::new(AtomicU64::new(0)),
        next_instance: 0,
        type_index,
        max_concurrent: u64::from(rate.max_concurrent),
        pre_allocated: u64::from(rate.pre_allocated),
        idle_timeout: rate.idle_timeout,
    };
    for _ in 0..rate.pre_allocated {
        keeper.spawn(false);
    }
    let mut schedule = Schedule::new(&rate.profile);
    let seconds = || start.elapsed().as_secs_f64();
    let mut rates_open = true;
    let mut active_recorded = Duration::ZERO;
    let record_active = |active_recorded: &mut Duration| {
        let elapsed = start.elapsed();
        counters.active_micros.fetch_add(
            (elapsed - *active_recorded).as_micros() as u64,
            Ordering::Relaxed,
        );
        *active_recorded = elapsed;
    };
    let mut next_retirement: Option<tokio::time::Instant> = None;
    // The type's one timer: the next due iteration or the next idle instance to retire, whichever comes first.
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    loop {
        counters
            .rate_bits
            .store(schedule.rate_at(seconds()).to_bits(), Ordering::Relaxed);
        let next_due = schedule
            .next_due_s()
            .and_then(|due| Duration::try_from_secs_f64(due).ok())
            .and_then(|due| start.checked_add(due));
        let wake = match (next_due, next_retirement) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = wake {
            sleep.as_mut().reset(at);
        }
        tokio::select! {
            biased;
            _ = control.reached(StopLevel::Stopping) => break,
            changed = rates.changed(), if rates_open => {
                match changed {
                    Err(_) => rates_open = false,
                    Ok(()) => {
                        let wanted = *rates.borrow_and_update();
                        if let Some(rate) = wanted.filter(|r| r.is_finite() && *r >= 0.0) {
                            // The iterations due up to now are handed out under the old rate first.
                            let now = seconds();
                            keeper.hand_out(&mut schedule, now);
                            schedule.set_constant(now, rate);
                        }
                    }
                }
                continue;
            }
            _ = &mut sleep, if wake.is_some() => {}
        }
        keeper.hand_out(&mut schedule, seconds());
        next_retirement = keeper.shrink().or_else(|| {
            // Instances busy now may go idle with no iteration due to wake the timer (a rate of 0): look again then.
            (keeper.live.load(Ordering::Relaxed) > keeper.pre_allocated)
                .then(|| tokio::time::Instant::now() + keeper.idle_timeout)
        });
        record_active(&mut active_recorded);
    }
    record_active(&mut active_recorded);
    // Stopping: idle instances leave at once, busy ones after their iteration (or when killed); each runs its
    // on_stop. Nothing is handed out any more, so the idle stack is dropped here. (Aborting this task meanwhile
    // aborts the instances through `keeper.instances`.)
    keeper.pool.idle().clear();
    for handle in &mut keeper.instances.0 {
        let _ = handle.await;
    }
}

/// Lowers the live count when an instance's task ends or is aborted, unless the scheduler already did when it
/// retired the instance.
struct LiveNotice {
    live: Arc<AtomicU64>,
    slot: Arc<Slot>,
}

impl Drop for LiveNotice {
    fn drop(&mut self) {
        if !self.slot.retire.load(Ordering::Acquire) {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Lowers the busy count when an iteration ends, however it ends.
struct BusyNotice<'a>(&'a ArrivalCounters);

impl Drop for BusyNotice<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One pooled instance: `on_start` once, then one iteration per go from the scheduler, `on_stop` at the end (when
/// the test stops, the scheduler retires it, or a task stops it).
async fn run_instance<S: Send + 'static>(
    active: Arc<ActiveUserType<S>>,
    mut user: User<S>,
    pool: Arc<Pool>,
    counters: Arc<ArrivalCounters>,
    live: Arc<AtomicU64>,
    control: Arc<UserControl>,
    first_iteration: bool,
) {
    let slot = Arc::new(Slot {
        go: Notify::new(),
        retire: AtomicBool::new(false),
        idle_since_micros: AtomicU64::new(0),
    });
    let _live = LiveNotice {
        live,
        slot: slot.clone(),
    };
    let definition = &active.definition;
    let mut busy = first_iteration.then(|| BusyNotice(&counters));
    let exit = {
        let main = async {
            if let Some(hook) = &definition.on_start
                && let Step::Exit(exit @ (Exit::StopUser | Exit::StopTest)) =
                    run_task(&mut user, hook.as_ref(), "on_start").await
            {
                return exit;
            }
            loop {
                if busy.is_none() {
                    slot.idle_since_micros
                        .store(pool.micros_now(), Ordering::Relaxed);
                    pool.idle().push_back(slot.clone());
                    tokio::select! {
                        biased;
                        // An iteration handed over before the stop still runs (it was counted as started).
                        _ = slot.go.notified() => {
                            if slot.retire.load(Ordering::Acquire) {
                                return Exit::Stopped;
                            }
                            busy = Some(BusyNotice(&counters));
                        }
                        _ = control.reached(StopLevel::Stopping) => return Exit::Stopped,
                    }
                }
                let exit = run_iteration(&mut user, &definition.root).await;
                counters.completed.fetch_add(1, Ordering::Relaxed);
                busy = None;
                if let Some(exit @ (Exit::StopUser | Exit::StopTest)) = exit {
                    return exit;
                }
            }
        };
        tokio::select! {
            biased;
            _ = control.reached(StopLevel::Killed) => Exit::Stopped,
            exit = main => exit,
        }
    };
    drop(busy);
    if let Some(hook) = &definition.on_stop {
        run_task(&mut user, hook.as_ref(), "on_stop").await;
    }
    if exit == Exit::StopTest {
        tracing::info!(
            "an iteration of {} asked to stop the test",
            user.user_type()
        );
        user.environment().runner.quit();
    }
}

/// One iteration: one task of the type, picked by weight; a nested set runs one pass. Returns the exit a task
/// asked for (stop this instance, stop the test), if any.
async fn run_iteration<S: Send + 'static>(user: &mut User<S>, root: &TaskSet<S>) -> Option<Exit> {
    let total: u64 = root.entries.iter().map(|e| u64::from(e.weight())).sum();
    let entry = pick_weighted(&root.entries, total, user.rng())?;
    match entry {
        Entry::Task(task) => match run_task(user, task.run.as_ref(), &task.name).await {
            Step::Exit(exit) => Some(exit),
            Step::Continue | Step::Reschedule => None,
        },
        Entry::Set(set) => one_pass(user, set).await,
    }
}

type PassFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Exit>> + Send + 'a>>;

/// One pass of a nested task set: `on_start`, its tasks (all in order for a sequential set, weights as repeats;
/// one weighted pick for a random set), `on_stop`. An interrupt ends the pass.
fn one_pass<'a, S: Send + 'static>(user: &'a mut User<S>, set: &'a TaskSet<S>) -> PassFuture<'a> {
    Box::pin(async move {
        if let Some(hook) = &set.on_start
            && let Step::Exit(exit) = run_task(user, hook.as_ref(), "on_start").await
        {
            return stop_exit(exit);
        }
        let mut exit = None;
        let picked: Vec<&Entry<S>> = match set.order {
            Order::Sequential => set
                .entries
                .iter()
                .flat_map(|e| std::iter::repeat_n(e, e.weight() as usize))
                .collect(),
            Order::Random => {
                let total: u64 = set.entries.iter().map(|e| u64::from(e.weight())).sum();
                pick_weighted(&set.entries, total, user.rng())
                    .into_iter()
                    .collect()
            }
        };
        for entry in picked {
            let step = match entry {
                Entry::Task(task) => match run_task(user, task.run.as_ref(), &task.name).await {
                    Step::Exit(exit) => Some(exit),
                    _ => None,
                },
                Entry::Set(nested) => one_pass(user, nested).await,
            };
            if let Some(ended) = step {
                exit = stop_exit(ended);
                break;
            }
        }
        if let Some(hook) = &set.on_stop {
            run_task(user, hook.as_ref(), "on_stop").await;
        }
        exit
    })
}

/// Only stopping the instance or the test leaves the iteration's caller; an interrupt just ends the pass.
fn stop_exit(exit: Exit) -> Option<Exit> {
    matches!(exit, Exit::StopUser | Exit::StopTest).then_some(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drive a schedule with a fake clock from `from_ms` to `to_ms` (both included) in `step_ms` steps.
    fn drive(
        schedule: &mut Schedule,
        (from_ms, to_ms, step_ms): (u64, u64, u64),
        held: bool,
        mut try_start: impl FnMut(DueIteration, f64) -> bool,
        tally: &mut [u64; 4],
    ) {
        for ms in (from_ms..=to_ms).step_by(step_ms as usize) {
            let now = ms as f64 / 1e3;
            schedule.run_due(
                now,
                held,
                |due| try_start(due, now),
                |outcome, n| tally[outcome as usize] += n,
            );
        }
    }

    #[test]
    fn a_constant_rate_does_not_drift() {
        let mut schedule = Schedule::new(&RateProfile::Constant(100.0));
        let mut due_times = Vec::new();
        let mut tally = [0; 4];
        // A clock that advances unevenly (3 ms, 7 ms ...) must not move any due time.
        let mut now_ms = 0;
        let mut step = 0;
        while now_ms <= 10_000 {
            schedule.run_due(
                now_ms as f64 / 1e3,
                false,
                |due| {
                    due_times.push(due);
                    true
                },
                |outcome, n| tally[outcome as usize] += n,
            );
            step += 1;
            now_ms += if step % 2 == 0 { 3 } else { 7 };
        }
        for due in &due_times {
            assert!(
                (due.due_s - due.index as f64 / 100.0).abs() < 1e-9,
                "{due:?}"
            );
        }
        assert_eq!(tally[Outcome::Started as usize], 1_001);
        assert_eq!(schedule.due_count(), 1_001);
        assert_eq!(tally.iter().sum::<u64>(), schedule.due_count());
    }

    #[test]
    fn a_stall_drops_what_it_missed_without_a_burst() {
        let mut schedule = Schedule::new(&RateProfile::Constant(100.0));
        let mut tally = [0; 4];
        drive(&mut schedule, (0, 1_000, 1), false, |_, _| true, &mut tally);
        assert_eq!(tally[Outcome::Started as usize], 101);
        // The scheduler sleeps two seconds, then wakes at 3.0 s.
        let mut started_at_wake = 0;
        schedule.run_due(
            3.0,
            false,
            |_| {
                started_at_wake += 1;
                true
            },
            |outcome, n| tally[outcome as usize] += n,
        );
        // Only the iterations due within the last period (at 2.99 s and 3.0 s) start; none of the 198 before.
        assert_eq!(started_at_wake, 2);
        assert_eq!(tally[Outcome::DroppedLate as usize], 198);
        assert_eq!(schedule.due_count(), 301);
        assert_eq!(tally.iter().sum::<u64>(), 301);
        // And the schedule goes on where it was: the next iteration is due at 3.01 s.
        assert!((schedule.next_due_s().unwrap() - 3.01).abs() < 1e-9);
    }

    #[test]
    fn a_full_pool_and_a_holding_guard_drop_and_count() {
        let mut schedule = Schedule::new(&RateProfile::Constant(100.0));
        let mut tally = [0; 4];
        // Five instances, each busy for 200 ms: at most 25 iterations a second can start.
        let mut busy_until: Vec<f64> = Vec::new();
        drive(
            &mut schedule,
            (0, 4_000, 1),
            false,
            |_, now| {
                busy_until.retain(|&end| end > now);
                if busy_until.len() < 5 {
                    busy_until.push(now + 0.2);
                    true
                } else {
                    false
                }
            },
            &mut tally,
        );
        let started = tally[Outcome::Started as usize];
        assert!((95..=105).contains(&started), "{tally:?}");
        assert_eq!(tally[Outcome::DroppedBound as usize], 401 - started);
        // The guard holds for a second: every iteration due then is dropped as the guard's.
        drive(
            &mut schedule,
            (4_001, 5_000, 1),
            true,
            |_, _| true,
            &mut tally,
        );
        assert_eq!(tally[Outcome::DroppedGuard as usize], 100);
        assert_eq!(tally.iter().sum::<u64>(), schedule.due_count());
        assert_eq!(schedule.due_count(), 501);
    }

    #[test]
    fn a_ramp_follows_its_stages_and_holds_the_last_rate() {
        let rate = ArrivalRate::ramping(
            0.0,
            [
                Stage::new(Duration::from_secs(10), 100.0),
                Stage::new(Duration::from_secs(5), 100.0),
            ],
        );
        let mut schedule = Schedule::new(&rate.profile);
        // 0 to 100/s over 10 s: 5 t² iterations by t; k is due at sqrt(k / 5).
        assert!((schedule.count_at(10.0) - 500.0).abs() < 1e-9);
        assert!((schedule.due_s(125).unwrap() - 5.0).abs() < 1e-9);
        assert!((schedule.rate_at(2.5) - 25.0).abs() < 1e-9);
        // Then 100/s: 500 more by 15 s, and the last rate holds after the stages.
        assert!((schedule.count_at(15.0) - 1_000.0).abs() < 1e-9);
        assert!((schedule.due_s(1_100).unwrap() - 16.0).abs() < 1e-9);
        let mut tally = [0; 4];
        drive(
            &mut schedule,
            (0, 20_000, 1),
            false,
            |_, _| true,
            &mut tally,
        );
        assert_eq!(tally[Outcome::Started as usize], 1_501);
    }

    #[test]
    fn a_new_rate_continues_the_count_and_zero_stops_iterations() {
        let mut schedule = Schedule::new(&RateProfile::Constant(10.0));
        let mut tally = [0; 4];
        drive(
            &mut schedule,
            (0, 1_000, 10),
            false,
            |_, _| true,
            &mut tally,
        );
        assert_eq!(schedule.due_count(), 11);
        schedule.set_constant(1.0, 100.0);
        assert!((schedule.next_due_s().unwrap() - 1.01).abs() < 1e-9);
        drive(
            &mut schedule,
            (1_010, 2_000, 10),
            false,
            |_, _| true,
            &mut tally,
        );
        assert_eq!(schedule.due_count(), 111);
        schedule.set_constant(2.0, 0.0);
        assert_eq!(schedule.next_due_s(), None);
    }

    #[test]
    fn a_workers_part_scales_rates_bounds_and_instances() {
        let ramp = ArrivalRate::ramping(10.0, [Stage::new(Duration::from_secs(60), 100.0)])
            .max_concurrent(5)
            .pre_allocated(3);
        let part = ramp.scaled(0.5);
        assert_eq!(
            part.profile,
            RateProfile::Ramping {
                start: 5.0,
                stages: vec![Stage::new(Duration::from_secs(60), 50.0)],
            }
        );
        // Rounded up, and never a bound of 0.
        assert_eq!((part.max_concurrent, part.pre_allocated), (3, 2));
        let sliver = ArrivalRate::constant(40.0).max_concurrent(1).scaled(0.1);
        assert_eq!(sliver.profile, RateProfile::Constant(4.0));
        assert_eq!(sliver.max_concurrent, 1);
        // The master's overrides come first, then the part.
        let split = ClusterSplit {
            share: 0.25,
            rate: Some(80.0),
            max_concurrent: Some(40),
        };
        let applied = split.apply(ArrivalRate::constant(1.0));
        assert_eq!(applied.profile, RateProfile::Constant(20.0));
        assert_eq!(applied.max_concurrent, 10);
    }

    #[test]
    fn bad_rates_are_named_and_overrides_apply_to_constant_rates_only() {
        assert!(ArrivalRate::constant(-1.0).problem().is_some());
        assert!(ArrivalRate::constant(f64::NAN).problem().is_some());
        assert!(
            ArrivalRate::constant(5.0)
                .max_concurrent(0)
                .problem()
                .is_some()
        );
        assert!(
            ArrivalRate::constant(5.0)
                .max_concurrent(2)
                .pre_allocated(3)
                .problem()
                .is_some()
        );
        assert_eq!(ArrivalRate::constant(5.0).problem(), None);
        let constant = ArrivalRate::constant(5.0).overridden(Some(50.0), Some(7));
        assert_eq!(constant.profile, RateProfile::Constant(50.0));
        assert_eq!(constant.max_concurrent, 7);
        let ramp = ArrivalRate::ramping(1.0, [Stage::new(Duration::from_secs(1), 2.0)]);
        assert_eq!(ramp.clone().overridden(Some(50.0), None), ramp);
    }
}
