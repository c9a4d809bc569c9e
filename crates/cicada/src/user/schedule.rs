//! How late paced tasks start against their schedule (coordinated omission).
//!
//! A user with `constant_pacing` or `constant_throughput` promises to start a task every period. When the target
//! slows down (or the generator starves), tasks start late and the rate silently drops: the requests that should
//! have been sent at the bad moment are never measured. This records, per user type, how late each task started,
//! so the reports can say how far the promised rate was kept.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A task counts as late when it starts more than this share of its period after its scheduled time.
const LATE_SHARE: f64 = 0.05;
/// ... and at least this late, so that timer jitter on short periods is not called lateness.
const LATE_FLOOR: Duration = Duration::from_millis(1);

/// Lateness of one user type's paced tasks. Tasks are paced (milliseconds at least apart per user), so a lock per
/// task start is far off the request hot path.
pub(crate) struct ScheduleLag {
    user_type: String,
    period: Duration,
    starts: AtomicU64,
    late: AtomicU64,
    /// Microseconds late, 2 significant digits; bounded in size by hdrhistogram's range.
    histogram: Mutex<hdrhistogram::Histogram<u64>>,
}

/// What the reports say about one paced user type.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScheduleReport {
    /// User type.
    pub user_type: String,
    /// Promised time between task starts, milliseconds.
    pub period_ms: f64,
    /// Task starts that had a schedule.
    pub task_starts: u64,
    /// Starts later than 5% of the period (and at least 1 ms).
    pub late_starts: u64,
    /// Median lateness, milliseconds.
    pub p50_late_ms: f64,
    /// 99th percentile lateness, milliseconds.
    pub p99_late_ms: f64,
    /// Worst lateness, milliseconds.
    pub max_late_ms: f64,
}

impl ScheduleLag {
    pub(crate) fn new(user_type: &str, period: Duration) -> Self {
        ScheduleLag {
            user_type: user_type.to_string(),
            period,
            starts: AtomicU64::new(0),
            late: AtomicU64::new(0),
            histogram: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2)
                    .expect("static bounds are valid"),
            ),
        }
    }

    /// A task paced at `period` started `late` after its scheduled time.
    pub(crate) fn record(&self, late: Duration, period: Duration) {
        self.starts.fetch_add(1, Ordering::Relaxed);
        if late > LATE_FLOOR && late.as_secs_f64() > period.as_secs_f64() * LATE_SHARE {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        let micros = (late.as_micros() as u64).clamp(1, 3_600_000_000);
        self.histogram
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .saturating_record(micros);
    }

    pub(crate) fn report(&self) -> ScheduleReport {
        let histogram = self.histogram.lock().unwrap_or_else(|p| p.into_inner());
        let ms = |micros: u64| micros as f64 / 1e3;
        let empty = histogram.is_empty();
        ScheduleReport {
            user_type: self.user_type.clone(),
            period_ms: self.period.as_secs_f64() * 1e3,
            task_starts: self.starts.load(Ordering::Relaxed),
            late_starts: self.late.load(Ordering::Relaxed),
            p50_late_ms: if empty {
                0.0
            } else {
                ms(histogram.value_at_quantile(0.5))
            },
            p99_late_ms: if empty {
                0.0
            } else {
                ms(histogram.value_at_quantile(0.99))
            },
            max_late_ms: if empty { 0.0 } else { ms(histogram.max()) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_counted_against_the_period() {
        let lag = ScheduleLag::new("Paced", Duration::from_millis(100));
        let period = Duration::from_millis(100);
        lag.record(Duration::from_micros(300), period);
        lag.record(Duration::from_millis(2), period);
        lag.record(Duration::from_millis(40), period);
        let report = lag.report();
        assert_eq!(report.task_starts, 3);
        assert_eq!(
            report.late_starts, 1,
            "only the 40 ms start is over 5% of 100 ms"
        );
        assert!((report.max_late_ms - 40.0).abs() < 0.5, "{report:?}");
    }
}
