//! Scheduler lag: a tokio task that asks to wake every `interval` and records how late it actually woke.
//! When the runtime's threads are saturated (too many users, a blocking call on a worker), every task is
//! late by about the same amount, and so are the timestamps of the requests being measured; the probe makes
//! that visible. Lateness is kept in atomics (the worst since the last [`LagProbe::take_max`] and the latest),
//! so reading it costs nothing and never blocks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Default)]
struct Shared {
    max_ns: AtomicU64,
    last_ns: AtomicU64,
    stopped: AtomicBool,
}

/// Measures how late a tokio task wakes compared with when it asked to.
///
/// Cloning is cheap (an `Arc`); the probe's task ends at its next wake-up once every clone is dropped or
/// [`stop`](LagProbe::stop) is called. The resolution is the interval: a stall shorter than the time left
/// before the next wake-up is seen only partly (a 300 ms stall is seen as 200–300 ms with the default
/// 100 ms interval), and tokio's timer adds up to about a millisecond even on an idle runtime. On a
/// multi-thread runtime the probe's task can run on any worker, so what it measures is how long a ready task
/// waits for *some* worker: one worker stuck in a blocking call shows only once the others are busy too.
#[derive(Debug, Clone)]
pub struct LagProbe {
    shared: Arc<Shared>,
    interval: Duration,
}

impl LagProbe {
    /// The default interval between wake-ups.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

    /// Spawns the probe's task on the current tokio runtime, waking every `interval` (at least 1 ms).
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (like `tokio::spawn`). The runtime needs its time driver
    /// (`enable_time`, included in `enable_all` and `#[tokio::main]`).
    pub fn spawn(interval: Duration) -> LagProbe {
        let interval = interval.max(Duration::from_millis(1));
        let shared = Arc::new(Shared::default());
        tokio::spawn(run(Arc::downgrade(&shared), interval));
        LagProbe { shared, interval }
    }

    /// The worst lateness seen since the previous call (or since the start), and resets it to zero.
    pub fn take_max(&self) -> Duration {
        Duration::from_nanos(self.shared.max_ns.swap(0, Ordering::Relaxed))
    }

    /// The worst lateness seen since the previous [`take_max`](LagProbe::take_max), without resetting it.
    pub fn peek_max(&self) -> Duration {
        Duration::from_nanos(self.shared.max_ns.load(Ordering::Relaxed))
    }

    /// The lateness of the most recent wake-up.
    pub fn last(&self) -> Duration {
        Duration::from_nanos(self.shared.last_ns.load(Ordering::Relaxed))
    }

    /// The interval the probe asks to wake at.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Ends the probe's task at its next wake-up (for every clone). Values read afterwards stay as they were.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
    }
}

async fn run(shared: Weak<Shared>, interval: Duration) {
    let mut deadline = Instant::now() + interval;
    loop {
        tokio::time::sleep_until(deadline).await;
        let now = Instant::now();
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.stopped.load(Ordering::Relaxed) {
            return;
        }
        let late =
            u64::try_from(now.saturating_duration_since(deadline).as_nanos()).unwrap_or(u64::MAX);
        shared.last_ns.store(late, Ordering::Relaxed);
        shared.max_ns.fetch_max(late, Ordering::Relaxed);
        // Measured from the actual wake-up, so one long stall is counted once, not once per missed tick.
        deadline = now + interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn blocked_runtime_is_seen_as_lag() {
        runtime().block_on(async {
            // A short interval, so that the probe's pending deadline is at most 20 ms into the stall.
            let probe = LagProbe::spawn(Duration::from_millis(20));
            tokio::time::sleep(Duration::from_millis(60)).await;
            probe.take_max();
            // Block the only runtime thread on purpose.
            std::thread::sleep(Duration::from_millis(300));
            tokio::time::sleep(Duration::from_millis(50)).await;
            let max = probe.take_max();
            assert!(
                max >= Duration::from_millis(250),
                "max lag {max:?} after a 300 ms stall"
            );
            assert!(max < Duration::from_secs(5), "max lag {max:?}");
            // Taken: reset to what happened since.
            assert!(probe.peek_max() < Duration::from_millis(250));
        });
    }

    #[test]
    fn idle_runtime_has_small_lag() {
        runtime().block_on(async {
            let probe = LagProbe::spawn(Duration::from_millis(10));
            tokio::time::sleep(Duration::from_millis(300)).await;
            let max = probe.take_max();
            // Wide margin: only a grossly overloaded test machine comes near it.
            assert!(max < Duration::from_millis(150), "idle max lag {max:?}");
            assert!(probe.last() <= Duration::from_millis(150));
            assert_eq!(probe.interval(), Duration::from_millis(10));
        });
    }

    #[test]
    fn task_ends_when_dropped_or_stopped() {
        let runtime = runtime();
        runtime.block_on(async {
            let probe = LagProbe::spawn(Duration::from_millis(5));
            let weak = Arc::downgrade(&probe.shared);
            drop(probe);
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert!(weak.upgrade().is_none());

            let probe = LagProbe::spawn(Duration::from_millis(5));
            let clone = probe.clone();
            probe.stop();
            tokio::time::sleep(Duration::from_millis(30)).await;
            let before = clone.last();
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert_eq!(clone.last(), before);
        });
        assert_eq!(runtime.metrics().num_alive_tasks(), 0);
    }
}
