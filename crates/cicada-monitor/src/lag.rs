//! Scheduler lag: a tokio task that asks to wake every `interval` and records how late it actually woke.
//! When the runtime's threads are saturated (too many users, a blocking call on a worker), every task is
//! late by about the same amount, and so are the timestamps of the requests being measured; the probe makes
//! that visible. Lateness is kept in atomics (the worst since the last [`LagProbe::take_max`] and the latest),
//! so reading it costs nothing and never blocks. The probe also publishes the deadline it is waiting for, so a
//! reader on another thread (the guard's own thread) sees a stall *while it lasts* ([`LagProbe::pending`]),
//! not only once the starved runtime gets round to waking the probe.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
struct Shared {
    max_ns: AtomicU64,
    last_ns: AtomicU64,
    stopped: AtomicBool,
    /// The instant every other time is measured from (so deadlines fit in an atomic).
    origin: std::time::Instant,
    /// The deadline the probe is waiting for, in nanoseconds after `origin`.
    deadline_ns: AtomicU64,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            max_ns: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            origin: std::time::Instant::now(),
            deadline_ns: AtomicU64::new(u64::MAX),
        }
    }

    fn nanos_since_origin(&self, at: std::time::Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }
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
        let shared = Arc::new(Shared::new());
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

    /// How late the probe is *now* for the wake-up it is waiting for: zero while the runtime keeps up, and the
    /// length of the stall so far while the runtime is too busy (or blocked) to wake it. Unlike
    /// [`take_max`](LagProbe::take_max), this sees a stall that has not ended yet; read it from another thread.
    pub fn pending(&self) -> Duration {
        let deadline = self.shared.deadline_ns.load(Ordering::Relaxed);
        let now = self.shared.nanos_since_origin(std::time::Instant::now());
        Duration::from_nanos(now.saturating_sub(deadline))
    }

    /// The worst of [`peek_max`](LagProbe::peek_max) and [`pending`](LagProbe::pending).
    pub fn current(&self) -> Duration {
        self.peek_max().max(self.pending())
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
        if let Some(shared) = shared.upgrade() {
            let at = shared.nanos_since_origin(deadline.into_std());
            shared.deadline_ns.store(at, Ordering::Relaxed);
        }
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
    fn a_stall_is_seen_from_another_thread_while_it_lasts() {
        runtime().block_on(async {
            let probe = LagProbe::spawn(Duration::from_millis(10));
            tokio::time::sleep(Duration::from_millis(50)).await;
            let watcher = probe.clone();
            let seen = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(250));
                watcher.pending()
            });
            // Block the only runtime thread: the probe cannot wake, yet the watcher sees the stall growing.
            std::thread::sleep(Duration::from_millis(400));
            let pending = seen.join().unwrap();
            assert!(
                pending >= Duration::from_millis(150),
                "pending lag {pending:?} seen 250 ms into a 400 ms stall"
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert!(probe.pending() < Duration::from_millis(150));
            assert!(probe.current() >= Duration::from_millis(300));
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
