//! Wait times: how long a user pauses after each task.
//!
//! The same four policies as Locust (`between`, `constant`, `constant_pacing`, `constant_throughput`) plus a custom
//! function. Pacing policies measure from the start of the task, so a slow task shortens the pause instead of
//! lowering the rate; how late a task started against its schedule is what the pacing can't hide.
//!
//! Think times (every policy but the two pacing ones) end on a shared grid of wake-ups ([`think_deadline`]): a
//! pause of `p` ends at the grid point nearest to `now + p`, the grid being a power of two milliseconds no wider
//! than `p / 16` and 32 ms, so a pause is off by at most `p / 32` (16 ms for a 1 s pause, 8 ms for 0.5 s) and is
//! unbiased on average. Users whose pauses end close together then wake together, and the runtime wakes up once
//! for all of them instead of once per user: at 500 users waiting 0.5-1.5 s that is about 16 users per wake-up
//! instead of one, and their requests reach a sleeping server together, which then wakes once for them: most of
//! the CPU a request costs at such rates (bench/README.md: 44 µs per request with a 16 ms grid, 33 µs with this
//! one, 31 µs with a 64 ms grid). The price is burstiness on the grid's scale: requests that would have been
//! spread over 32 ms leave within a millisecond, which a server that is sensitive to it sees as short queues.
//! Pauses under 32 ms are not rounded, and pacing policies keep their exact deadlines.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// What a custom wait function gets to decide with.
pub struct WaitContext<'a> {
    /// How long the task that just finished took.
    pub task_elapsed: Duration,
    /// The user's random number generator.
    pub rng: &'a mut fastrand::Rng,
}

/// A wait-time policy.
#[derive(Clone)]
pub enum WaitTime {
    /// A uniformly random pause between two bounds.
    Between(Duration, Duration),
    /// Always the same pause.
    Constant(Duration),
    /// Start tasks this far apart, whatever they take (a task longer than the period starts the next at once).
    ConstantPacing(Duration),
    /// Run this many tasks per second per user (pacing of `1 / rate`).
    ConstantThroughput(f64),
    /// A function of your own.
    Custom(Arc<dyn Fn(&mut WaitContext<'_>) -> Duration + Send + Sync>),
}

impl fmt::Debug for WaitTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitTime::Between(low, high) => write!(f, "between({low:?}, {high:?})"),
            WaitTime::Constant(pause) => write!(f, "constant({pause:?})"),
            WaitTime::ConstantPacing(period) => write!(f, "constant_pacing({period:?})"),
            WaitTime::ConstantThroughput(rate) => write!(f, "constant_throughput({rate})"),
            WaitTime::Custom(_) => f.write_str("custom"),
        }
    }
}

impl Default for WaitTime {
    /// No wait at all, like a Locust user without `wait_time`.
    fn default() -> Self {
        WaitTime::Constant(Duration::ZERO)
    }
}

fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or(Duration::MAX)
}

/// A random pause between `min` and `max` seconds.
///
/// ```
/// use cicada::prelude::*;
/// let _ = UserType::<()>::new("Browser").wait_time(between(1.0, 2.5));
/// ```
pub fn between(min: f64, max: f64) -> WaitTime {
    let (low, high) = if min <= max { (min, max) } else { (max, min) };
    WaitTime::Between(seconds(low), seconds(high))
}

/// The same pause of `secs` seconds after every task.
pub fn constant(secs: f64) -> WaitTime {
    WaitTime::Constant(seconds(secs))
}

/// Start a task every `secs` seconds per user, however long the task takes.
pub fn constant_pacing(secs: f64) -> WaitTime {
    WaitTime::ConstantPacing(seconds(secs))
}

/// Run `tasks_per_second` tasks per second per user.
pub fn constant_throughput(tasks_per_second: f64) -> WaitTime {
    WaitTime::ConstantThroughput(tasks_per_second)
}

/// A wait time computed by your own function.
///
/// ```
/// use cicada::prelude::*;
/// use std::time::Duration;
/// // Think for twice as long as the page took to load.
/// let _ = UserType::<()>::new("Reader").wait_time(custom_wait(|ctx| ctx.task_elapsed * 2));
/// ```
pub fn custom_wait(
    f: impl Fn(&mut WaitContext<'_>) -> Duration + Send + Sync + 'static,
) -> WaitTime {
    WaitTime::Custom(Arc::new(f))
}

impl WaitTime {
    /// The pause after a task that took `task_elapsed`.
    pub fn next_wait(&self, task_elapsed: Duration, rng: &mut fastrand::Rng) -> Duration {
        match self {
            WaitTime::Between(low, high) => {
                let span = high.saturating_sub(*low);
                *low + span.mul_f64(rng.f64())
            }
            WaitTime::Constant(pause) => *pause,
            WaitTime::ConstantPacing(period) => period.saturating_sub(task_elapsed),
            WaitTime::ConstantThroughput(rate) => {
                if *rate > 0.0 {
                    seconds(1.0 / rate).saturating_sub(task_elapsed)
                } else {
                    Duration::MAX
                }
            }
            WaitTime::Custom(f) => f(&mut WaitContext { task_elapsed, rng }),
        }
    }

    /// Whether [`next_wait`](Self::next_wait) depends on how long the task took: the runner reads the clock around a
    /// task only for these (two clock reads per task saved on the others' hot path).
    pub(crate) fn uses_task_time(&self) -> bool {
        matches!(
            self,
            WaitTime::ConstantPacing(_) | WaitTime::ConstantThroughput(_) | WaitTime::Custom(_)
        )
    }

    /// The schedule period for pacing policies (used to measure how late tasks start).
    pub fn pacing_period(&self) -> Option<Duration> {
        match self {
            WaitTime::ConstantPacing(period) => Some(*period),
            WaitTime::ConstantThroughput(rate) if *rate > 0.0 => Some(seconds(1.0 / rate)),
            _ => None,
        }
    }
}

/// Widest spacing of the think-time wake-up grid.
pub(crate) const MAX_WAKE_GRID: Duration = Duration::from_millis(32);

/// A pause is rounded onto a grid at most this fraction of it wide (so off by at most half of that).
const WAKE_GRID_DIVISOR: u32 = 16;

/// The instant all grids count from, so that grids of different widths (powers of two) line up.
fn grid_anchor() -> Instant {
    static ANCHOR: OnceLock<Instant> = OnceLock::new();
    *ANCHOR.get_or_init(Instant::now)
}

/// When a think time of `pause` started at `now` ends: the point of the wake-up grid nearest to `now + pause`
/// (see the module documentation), never before `now`. Pauses under 32 ms are not rounded.
pub(crate) fn think_deadline(now: Instant, pause: Duration) -> Instant {
    let exact = now
        .checked_add(pause)
        .unwrap_or(now + Duration::from_secs(86_400 * 365));
    let widest = (pause / WAKE_GRID_DIVISOR).min(MAX_WAKE_GRID).as_millis() as u64;
    if widest < 2 {
        return exact;
    }
    // The largest power of two not above `widest` milliseconds.
    let grid_micros = (1u64 << (63 - widest.leading_zeros())) * 1_000;
    let anchor = grid_anchor();
    let Some(offset) = exact.checked_duration_since(anchor) else {
        return exact;
    };
    let offset_micros = u64::try_from(offset.as_micros()).unwrap_or(u64::MAX / 2);
    let nearest = (offset_micros + grid_micros / 2) / grid_micros * grid_micros;
    (anchor + Duration::from_micros(nearest)).max(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_deadlines_share_a_grid_and_stay_close() {
        let now = Instant::now();
        let anchor = grid_anchor();
        for step in 0..2_000u64 {
            let start = now + Duration::from_micros(step * 977);
            let pause = Duration::from_micros(500_000 + step * 501);
            let deadline = think_deadline(start, pause);
            let exact = start + pause;
            let error = if deadline > exact {
                deadline - exact
            } else {
                exact - deadline
            };
            assert!(error <= pause / 32, "{error:?} off for {pause:?}");
            // 0.5-1.5 s pauses land on a 16 or 32 ms grid, so they line up with each other.
            let since = deadline.duration_since(anchor).as_micros();
            assert_eq!(since % 16_000, 0, "{since}");
        }
        // Short pauses are exact.
        let short = Duration::from_millis(31);
        assert_eq!(think_deadline(now, short), now + short);
        assert_eq!(think_deadline(now, Duration::ZERO), now);
        // Huge pauses do not overflow.
        assert!(think_deadline(now, Duration::MAX) > now);
    }

    #[test]
    fn between_stays_in_bounds() {
        let mut rng = fastrand::Rng::with_seed(7);
        let wait = between(0.5, 1.5);
        for _ in 0..1000 {
            let pause = wait.next_wait(Duration::ZERO, &mut rng);
            assert!(pause >= Duration::from_millis(500) && pause <= Duration::from_millis(1500));
        }
        assert!(
            matches!(between(2.0, 1.0), WaitTime::Between(low, _) if low == Duration::from_secs(1))
        );
    }

    #[test]
    fn pacing_subtracts_task_time() {
        let mut rng = fastrand::Rng::with_seed(1);
        let pacing = constant_pacing(1.0);
        assert_eq!(
            pacing.next_wait(Duration::from_millis(300), &mut rng),
            Duration::from_millis(700)
        );
        assert_eq!(
            pacing.next_wait(Duration::from_secs(3), &mut rng),
            Duration::ZERO
        );
        let throughput = constant_throughput(4.0);
        assert_eq!(
            throughput.next_wait(Duration::from_millis(50), &mut rng),
            Duration::from_millis(200)
        );
        assert_eq!(throughput.pacing_period(), Some(Duration::from_millis(250)));
        assert_eq!(
            constant(0.2).next_wait(Duration::from_secs(9), &mut rng),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn custom_sees_task_time() {
        let mut rng = fastrand::Rng::with_seed(1);
        let wait = custom_wait(|ctx| ctx.task_elapsed * 2);
        assert_eq!(
            wait.next_wait(Duration::from_millis(10), &mut rng),
            Duration::from_millis(20)
        );
    }
}
