//! Wait times: how long a user pauses after each task.
//!
//! The same four policies as Locust (`between`, `constant`, `constant_pacing`, `constant_throughput`) plus a custom
//! function. Pacing policies measure from the start of the task, so a slow task shortens the pause instead of
//! lowering the rate; how late a task started against its schedule is what the pacing can't hide.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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

    /// The schedule period for pacing policies (used to measure how late tasks start).
    pub fn pacing_period(&self) -> Option<Duration> {
        match self {
            WaitTime::ConstantPacing(period) => Some(*period),
            WaitTime::ConstantThroughput(rate) if *rate > 0.0 => Some(seconds(1.0 / rate)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
