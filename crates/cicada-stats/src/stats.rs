//! The [`Stats`] handle and the state its clones share: configuration, flush epoch,
//! generation clock, the capped registries, the list of mailboxes, the aggregate, user
//! errors and the history ring; and the handle's delta API (`take_delta`, `merge_delta`,
//! epochs) on top of [`crate::delta`].
//!
//! Lock order (outer first), where several are held together: `aggregate` → `names` →
//! `failure_groups` → `mailboxes` → a mailbox's inbox → `clock`; `user_errors` and `history`
//! are taken last (with or without the aggregate). Shards take only the registries (on first
//! sight of a key, one at a time), `clock`, `mailboxes` (on creation) and their own inbox.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::aggregate::{Aggregate, DeltaOverflow};
use crate::delta::{MergeError, StatsDelta};
use crate::keys::{
    CappedRegistry, FailureKey, FailureKeyRef, FrozenIds, PairKey, PairKeyRef, Registration,
};
use crate::shard::{self, LocalShard, MAX_SPARE_BATCHES, Mailbox};
use crate::snapshot::{EntryDetail, HistoryPoint, StatsSnapshot, UnmarkedSnapshot};
use crate::user_errors::UserErrorTable;
use crate::{OTHER_ERRORS, OVERFLOW_NAME, Sample, StatsConfig};

/// Locks `mutex`, ignoring poisoning: every critical section leaves the data consistent
/// (counters and maps), so a panic elsewhere must not take the statistics down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Distinguishes instances in the thread-local shard list.
static NEXT_INSTANCE_ID: AtomicU64 = AtomicU64::new(0);

/// The generation in force and when it started.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    pub(crate) generation: u64,
    pub(crate) start: Instant,
    pub(crate) start_unix_ms: u64,
}

impl Clock {
    fn starting_now(generation: u64) -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Clock {
            generation,
            start: Instant::now(),
            start_unix_ms: u64::try_from(unix.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// State shared by all clones of a [`Stats`] and (weakly) by its shards.
pub(crate) struct Shared {
    pub(crate) instance_id: u64,
    pub(crate) config: StatsConfig,
    /// Bumped by `collect` and `reset`; a shard that sees a new value flushes.
    pub(crate) flush_epoch: AtomicU64,
    /// Bumped by `reset`; mirrors `clock.generation` for a lock-free comparison.
    pub(crate) generation: AtomicU64,
    clock: Mutex<Clock>,
    names: Mutex<CappedRegistry<PairKey>>,
    /// The name registry is full: shards resolve through its frozen map without the lock.
    pub(crate) names_full: AtomicBool,
    pub(crate) name_overflow_warned: AtomicBool,
    failure_groups: Mutex<CappedRegistry<FailureKey>>,
    pub(crate) failures_full: AtomicBool,
    pub(crate) failure_overflow_warned: AtomicBool,
    pub(crate) mailboxes: Mutex<Vec<Arc<Mailbox>>>,
    aggregate: Mutex<Aggregate>,
    user_errors: Mutex<UserErrorTable>,
    history: Mutex<VecDeque<HistoryPoint>>,
    /// Requests recorded through [`Stats::record_cut_off`] since the start or the last reset.
    cut_off: AtomicU64,
    /// Sequence number of the latest [`Stats::take_delta`].
    delta_sequence: AtomicU64,
}

impl Shared {
    pub(crate) fn clock(&self) -> Clock {
        *lock(&self.clock)
    }

    pub(crate) fn register_name(&self, key: PairKeyRef<'_>) -> Registration<PairKey> {
        let mut names = lock(&self.names);
        let registration = names.register(&key, |key| key.to_owned_key());
        if names.is_full() {
            self.names_full.store(true, Ordering::Release);
        }
        registration
    }

    pub(crate) fn frozen_names(&self) -> Option<FrozenIds<PairKey>> {
        lock(&self.names).frozen()
    }

    pub(crate) fn register_failure(&self, key: FailureKeyRef<'_>) -> Registration<FailureKey> {
        let mut groups = lock(&self.failure_groups);
        let registration = groups.register(&key, |key| key.to_owned_key());
        if groups.is_full() {
            self.failures_full.store(true, Ordering::Release);
        }
        registration
    }

    pub(crate) fn frozen_failures(&self) -> Option<FrozenIds<FailureKey>> {
        lock(&self.failure_groups).frozen()
    }

    /// Warns, once per generation, that names went to the overflow entry.
    pub(crate) fn warn_names_over_cap(&self) {
        if !self.name_overflow_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_names = self.config.max_names,
                "more distinct request names than max_names; further names are counted \
                 under \"{OVERFLOW_NAME}\" (use stats names with placeholders, e.g. \
                 \"/item/[id]\")"
            );
        }
    }

    /// Warns, once per generation, that failures went to "(other errors)" groups.
    pub(crate) fn warn_failures_over_cap(&self) {
        if !self.failure_overflow_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_errors = self.config.max_errors,
                "more distinct failure groups than max_errors; further ones are counted \
                 under \"{OTHER_ERRORS}\" of their request name"
            );
        }
    }
}

fn name_registry(config: &StatsConfig) -> CappedRegistry<PairKey> {
    // Id 0 (`shard::OVERFLOW_ENTRY_ID`) is the overflow entry in every generation.
    let overflow = PairKey {
        first: "".into(),
        second: OVERFLOW_NAME.into(),
    };
    CappedRegistry::new(config.max_names, vec![overflow])
}

/// Sizes of the calling thread's shard of one [`Stats`] (see [`Stats::thread_shard_sizes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardSizes {
    /// `(method, name)` keys in the shard's map (at most `max_names`).
    pub names: usize,
    /// Failure-group keys in the shard's map (at most `max_errors`).
    pub failure_groups: usize,
}

/// Request statistics of one test run: a cheap-to-clone handle (an `Arc` inside), `Send +
/// Sync`. See the crate documentation for the data flow and the bounds.
///
/// ```
/// use std::time::{Duration, Instant};
/// use cicada_stats::{Sample, Stats, StatsConfig};
///
/// let stats = Stats::new(StatsConfig::default());
/// let worker = stats.clone();
/// std::thread::spawn(move || {
///     worker.record(&Sample {
///         method: "POST",
///         name: "/cart",
///         response_time: Duration::from_millis(3),
///         content_length: 0,
///         error: Some("HTTP 503"),
///         finished_at: Instant::now(),
///     });
/// })
/// .join()
/// .unwrap();
/// stats.collect();
/// let snapshot = stats.snapshot();
/// assert_eq!(snapshot.total.num_failures, 1);
/// assert_eq!(snapshot.failures[0].error, "HTTP 503");
/// ```
#[derive(Clone)]
pub struct Stats {
    shared: Arc<Shared>,
}

impl fmt::Debug for Stats {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Stats")
            .field("instance_id", &self.shared.instance_id)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Default for Stats {
    /// `Stats::new(StatsConfig::default())`.
    fn default() -> Self {
        Stats::new(StatsConfig::default())
    }
}

impl Stats {
    /// Empty statistics, starting now.
    ///
    /// ```
    /// use cicada_stats::{Stats, StatsConfig};
    ///
    /// let stats = Stats::new(StatsConfig { max_names: 50, ..StatsConfig::default() });
    /// assert_eq!(stats.config().max_names, 50);
    /// ```
    pub fn new(config: StatsConfig) -> Stats {
        Stats::with_clock(config, Clock::starting_now(0))
    }

    /// Empty statistics whose generation 0 starts at `clock` (tests that need several
    /// instances on one time base).
    pub(crate) fn with_clock(config: StatsConfig, clock: Clock) -> Stats {
        let shared = Shared {
            instance_id: NEXT_INSTANCE_ID.fetch_add(1, Ordering::Relaxed),
            flush_epoch: AtomicU64::new(0),
            generation: AtomicU64::new(clock.generation),
            clock: Mutex::new(clock),
            names: Mutex::new(name_registry(&config)),
            names_full: AtomicBool::new(config.max_names == 0),
            name_overflow_warned: AtomicBool::new(false),
            failure_groups: Mutex::new(CappedRegistry::new(config.max_errors, Vec::new())),
            failures_full: AtomicBool::new(config.max_errors == 0),
            failure_overflow_warned: AtomicBool::new(false),
            mailboxes: Mutex::new(Vec::new()),
            aggregate: Mutex::new(Aggregate::new(
                &config,
                clock.generation,
                0,
                clock.start,
                clock.start_unix_ms,
            )),
            user_errors: Mutex::new(UserErrorTable::new(config.max_user_errors)),
            history: Mutex::new(VecDeque::new()),
            cut_off: AtomicU64::new(0),
            delta_sequence: AtomicU64::new(0),
            config,
        };
        Stats {
            shared: Arc::new(shared),
        }
    }

    /// The configuration this instance was created with.
    pub fn config(&self) -> &StatsConfig {
        &self.shared.config
    }

    /// Records one finished request. **Hot path**, called once per request from many threads:
    /// lock-free and allocation-free once this thread has seen `(method, name)` (and, for a
    /// failure, its error text). The sample becomes visible after the next
    /// [`collect`](Self::collect) that follows a flush of this thread's shard.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use cicada_stats::{Sample, Stats};
    ///
    /// let stats = Stats::default();
    /// let sample = Sample {
    ///     method: "GET",
    ///     name: "/",
    ///     response_time: Duration::from_micros(250),
    ///     content_length: 1_024,
    ///     error: None,
    ///     finished_at: Instant::now(),
    /// };
    /// for _ in 0..3 {
    ///     stats.record(&sample);
    /// }
    /// Stats::flush_current_thread();
    /// stats.collect();
    /// assert_eq!(stats.snapshot().total.num_requests, 3);
    /// ```
    #[inline]
    pub fn record(&self, sample: &Sample<'_>) {
        let recorded =
            shard::with_thread_shard(&self.shared, |shard| shard.record(&self.shared, sample));
        if recorded.is_none() {
            self.record_without_thread_shard(sample);
        }
    }

    /// The thread-local shard is unusable (thread teardown, or `record` re-entered from
    /// inside itself, e.g. by a tracing subscriber): record through a one-off shard, whose
    /// drop hands the sample over at once.
    #[cold]
    fn record_without_thread_shard(&self, sample: &Sample<'_>) {
        let mut one_off = LocalShard::new(&self.shared);
        one_off.record(&self.shared, sample);
    }

    /// Counts a request that was cut off: its user was stopped (or its task dropped the request) before a
    /// response arrived. It is *not* recorded as a request or a failure (the generator cut it short, not the
    /// server: a healthy run stopped with `--stop-timeout 0` always has a few); it is counted in
    /// [`StatsSnapshot::requests_cut_off`], so that a report can say how many requests the stop cut short. Not on
    /// the hot path: one shared atomic.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cicada_stats::Stats;
    ///
    /// let stats = Stats::default();
    /// stats.record_cut_off();
    /// stats.collect_final(Duration::from_secs(1));
    /// let snapshot = stats.snapshot();
    /// assert_eq!((snapshot.requests_cut_off, snapshot.total.num_requests), (1, 0));
    /// ```
    pub fn record_cut_off(&self) {
        self.shared.cut_off.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a user error (a task returned an error or panicked), grouped by
    /// `(message, location)` and counted; at most [`StatsConfig::max_user_errors`] groups.
    /// Not on the hot path: takes a lock.
    ///
    /// ```
    /// use cicada_stats::Stats;
    ///
    /// let stats = Stats::default();
    /// stats.record_user_error("Shopper", "cart is empty", "src/shopper.rs:42");
    /// stats.record_user_error("Shopper", "cart is empty", "src/shopper.rs:42");
    /// let errors = stats.snapshot().user_errors;
    /// assert_eq!((errors[0].count, errors[0].traceback.as_str()), (2, "src/shopper.rs:42"));
    /// ```
    pub fn record_user_error(&self, user_type: &str, message: &str, location: &str) {
        lock(&self.shared.user_errors).record(user_type, message, location);
    }

    /// Flushes this OS thread's shards (of every `Stats` instance) into their mailboxes.
    /// Meant for tokio's `on_thread_park` hook, so that a thread going idle never sits on
    /// unflushed samples; costs one thread-local access and a flag check per shard when
    /// nothing is pending.
    ///
    /// ```
    /// let runtime_builder_hook = || cicada_stats::Stats::flush_current_thread();
    /// runtime_builder_hook();
    /// ```
    pub fn flush_current_thread() {
        shard::flush_thread_shards();
    }

    /// Merges everything shards have flushed into the aggregate, moves the current window to
    /// now, and asks busy shards to flush at their next record. Called about once a second by
    /// the engine's aggregator (never on the hot path).
    ///
    /// Samples a thread records after its last flush show up one collect later; threads
    /// flush on their own when the second of `finished_at` changes and when they park, so
    /// the completed seconds of the current window are complete.
    pub fn collect(&self) {
        self.collect_at(Instant::now());
    }

    /// [`collect`](Self::collect) with an explicit "now" (deterministic tests, replays).
    /// "Now" never moves backwards: an earlier instant than the previous collect's is ignored.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use cicada_stats::{Sample, Stats};
    ///
    /// let stats = Stats::default();
    /// let start = Instant::now();
    /// for second in 0..5 {
    ///     stats.record(&Sample {
    ///         method: "GET",
    ///         name: "/",
    ///         response_time: Duration::from_millis(1),
    ///         content_length: 0,
    ///         error: None,
    ///         finished_at: start + Duration::from_millis(500 + 1_000 * second),
    ///     });
    /// }
    /// Stats::flush_current_thread();
    /// stats.collect_at(start + Duration::from_millis(5_500));
    /// // Five completed seconds with one request each.
    /// assert_eq!(stats.snapshot().total.current_rps, 1.0);
    /// ```
    pub fn collect_at(&self, now: Instant) {
        drop(self.collect_locked(now));
        self.forget_exited_mailboxes();
    }

    /// The work of `collect_at`, returning the aggregate still locked (for `take_delta`).
    fn collect_locked(&self, now: Instant) -> MutexGuard<'_, Aggregate> {
        let shared = &*self.shared;
        shared.flush_epoch.fetch_add(1, Ordering::Release);

        let mailboxes: Vec<Arc<Mailbox>> = lock(&shared.mailboxes).clone();
        let mut taken = Vec::new();
        for mailbox in &mailboxes {
            let mut inbox = lock(&mailbox.inbox);
            if !inbox.batches.is_empty() {
                taken.push((Arc::clone(mailbox), std::mem::take(&mut inbox.batches)));
            }
        }

        let mut aggregate = lock(&shared.aggregate);
        aggregate.advance(now);
        if !taken.is_empty() {
            let names = lock(&shared.names);
            let failure_groups = lock(&shared.failure_groups);
            for (mailbox, mut batches) in taken {
                let mut emptied_histograms = Vec::new();
                let mut emptied_batches = Vec::with_capacity(batches.len());
                for mut batch in batches.drain(..) {
                    // Batches of an older generation were recorded before a reset: dropped.
                    if batch.generation == aggregate.generation() {
                        aggregate.merge(
                            &mut batch,
                            &names,
                            &failure_groups,
                            &mut emptied_histograms,
                        );
                    }
                    batch.entries.clear();
                    batch.failures.clear();
                    emptied_batches.push(batch);
                }
                let mut inbox = lock(&mailbox.inbox);
                let spare_cap = shared.config.max_names.saturating_add(1);
                let room = spare_cap.saturating_sub(inbox.spare_histograms.len());
                inbox
                    .spare_histograms
                    .extend(emptied_histograms.into_iter().take(room));
                let room = MAX_SPARE_BATCHES.saturating_sub(inbox.spare_batches.len());
                inbox
                    .spare_batches
                    .extend(emptied_batches.into_iter().take(room));
                if inbox.batches.capacity() == 0 {
                    // Hand the (empty) vector back so the shard's next flush does not allocate.
                    inbox.batches = batches;
                }
            }
        }
        aggregate
    }

    /// Forgets mailboxes of exited threads once they are drained.
    fn forget_exited_mailboxes(&self) {
        lock(&self.shared.mailboxes).retain(|mailbox| {
            !(mailbox.orphaned.load(Ordering::Acquire) && lock(&mailbox.inbox).batches.is_empty())
        });
    }

    /// Like [`collect`](Self::collect), but first waits (at most `timeout`) until every shard
    /// that holds samples has flushed; used at the end of a test so that the final report
    /// contains every sample. Flushes the calling thread itself. Returns `false` if it timed
    /// out, i.e. some thread holds samples and neither records, parks nor exits.
    ///
    /// Blocks the calling thread (sleeping in short steps): from async code, call it through
    /// `spawn_blocking`, or after the runtime's workers went idle.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use cicada_stats::{Sample, Stats};
    ///
    /// let stats = Stats::default();
    /// let handles: Vec<_> = (0..2)
    ///     .map(|_| {
    ///         let stats = stats.clone();
    ///         std::thread::spawn(move || {
    ///             stats.record(&Sample {
    ///                 method: "GET",
    ///                 name: "/",
    ///                 response_time: Duration::from_millis(1),
    ///                 content_length: 0,
    ///                 error: None,
    ///                 finished_at: Instant::now(),
    ///             })
    ///         })
    ///     })
    ///     .collect();
    /// handles.into_iter().for_each(|handle| handle.join().unwrap());
    /// assert!(stats.collect_final(Duration::from_secs(1)));
    /// assert_eq!(stats.snapshot().total.num_requests, 2);
    /// ```
    pub fn collect_final(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        Self::flush_current_thread();
        self.shared.flush_epoch.fetch_add(1, Ordering::Release);
        let mut pause = Duration::from_micros(50);
        let all_flushed = loop {
            let all_flushed = lock(&self.shared.mailboxes)
                .iter()
                .all(|mailbox| !mailbox.holds_unflushed.load(Ordering::Acquire));
            let now = Instant::now();
            if all_flushed || now >= deadline {
                break all_flushed;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(5));
        };
        self.collect();
        all_flushed
    }

    /// A copy of the aggregate as of the latest collect: entries sorted by `(name, method)`,
    /// failures and user errors most frequent first.
    ///
    /// ```
    /// use cicada_stats::Stats;
    ///
    /// let snapshot = Stats::default().snapshot();
    /// assert_eq!((snapshot.total.method.as_str(), snapshot.total.name.as_str()), ("", "Aggregated"));
    /// ```
    pub fn snapshot(&self) -> StatsSnapshot {
        let shared = &*self.shared;
        let mut snapshot = lock(&shared.aggregate).snapshot();
        let user_errors = lock(&shared.user_errors);
        snapshot.user_errors = user_errors.to_stats();
        snapshot.overflow.user_errors_over_cap = user_errors.over_cap();
        drop(user_errors);
        snapshot.overflow.names_at_cap = lock(&shared.names).is_full();
        snapshot.overflow.errors_at_cap = lock(&shared.failure_groups).is_full();
        snapshot.requests_cut_off = shared.cut_off.load(Ordering::Relaxed);
        snapshot
    }

    /// Marks the seconds from `from` to `to` as saturated: every second of the run they touch
    /// (seconds since the start or the latest [`reset`](Self::reset)). The engine calls it once a
    /// second with the interval the resource guard (or a worker's) marked. Marked seconds are
    /// left out of [`unmarked_snapshot`](Self::unmarked_snapshot); nothing else changes.
    pub fn mark_saturated(&self, from: Instant, to: Instant) {
        lock(&self.shared.aggregate).mark_saturated(from, to);
    }

    /// The statistics of the seconds not marked saturated, as of the latest collect: what a
    /// healthy generator measured. `None` unless [`StatsConfig::unmarked_stats`] is on.
    ///
    /// Sorting is by the second a request finished in, exact for every second that left the
    /// current window after it was marked (marks come once a second, the window is
    /// [`StatsConfig::current_window`]).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use cicada_stats::{Sample, Stats, StatsConfig};
    ///
    /// let stats = Stats::new(StatsConfig { unmarked_stats: true, ..StatsConfig::default() });
    /// let start = Instant::now();
    /// for (second, millis) in [(0, 10), (1, 900), (2, 12)] {
    ///     stats.record(&Sample {
    ///         method: "GET",
    ///         name: "/",
    ///         response_time: Duration::from_millis(millis),
    ///         content_length: 0,
    ///         error: None,
    ///         finished_at: start + Duration::from_millis(100 + 1_000 * second),
    ///     });
    /// }
    /// // The generator was saturated during the second second.
    /// stats.mark_saturated(start + Duration::from_millis(1_200), start + Duration::from_millis(1_800));
    /// Stats::flush_current_thread();
    /// stats.collect_at(start + Duration::from_secs(3));
    /// let unmarked = stats.unmarked_snapshot().unwrap();
    /// assert_eq!((unmarked.total.num_requests, unmarked.excluded_requests), (2, 1));
    /// assert_eq!(unmarked.total.max_ms, 12.0);
    /// assert_eq!(stats.snapshot().total.max_ms, 900.0);
    /// ```
    pub fn unmarked_snapshot(&self) -> Option<UnmarkedSnapshot> {
        lock(&self.shared.aggregate).unmarked_snapshot()
    }

    /// Locust's raw per-entry data as of the latest collect (distribution, sums and
    /// per-second counts), for Locust's JSON list; entries sorted like the snapshot's. Heavier
    /// than [`snapshot`](Self::snapshot): meant for the end of a run.
    ///
    /// ```
    /// use cicada_stats::Stats;
    ///
    /// assert!(Stats::default().entry_details().is_empty());
    /// ```
    pub fn entry_details(&self) -> Vec<EntryDetail> {
        lock(&self.shared.aggregate).entry_details()
    }

    /// Clears everything (Locust's "reset stats"): entries, failures, user errors, history,
    /// and the name and error registries, also what was merged from deltas; the run's start
    /// moves to now and the [`epoch`](Self::epoch) to the next. Samples recorded before the
    /// reset but flushed after it are dropped, and so is what the next delta would have held
    /// (delta tracking stays on).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use cicada_stats::{Sample, Stats};
    ///
    /// let stats = Stats::default();
    /// stats.record(&Sample {
    ///     method: "GET",
    ///     name: "/",
    ///     response_time: Duration::from_millis(1),
    ///     content_length: 0,
    ///     error: None,
    ///     finished_at: Instant::now(),
    /// });
    /// stats.reset();
    /// stats.collect_final(Duration::from_secs(1));
    /// assert_eq!(stats.snapshot().total.num_requests, 0);
    /// ```
    pub fn reset(&self) {
        self.reset_with_epoch(|epoch| epoch.wrapping_add(1));
    }

    /// [`reset`](Self::reset), then the statistics are at `epoch` ([`epoch`](Self::epoch)):
    /// a worker follows its master's reset with the master's new epoch, so that the master
    /// merges its deltas again (see [`StatsDelta`]). Any value may be given, also the current
    /// one; the reset happens all the same.
    ///
    /// ```
    /// use cicada_stats::Stats;
    ///
    /// let (master, worker) = (Stats::default(), Stats::default());
    /// master.reset();
    /// assert!(master.merge_delta(&worker.take_delta()).is_err());
    /// worker.reset_to_epoch(master.epoch());
    /// assert!(master.merge_delta(&worker.take_delta()).is_ok());
    /// ```
    pub fn reset_to_epoch(&self, epoch: u64) {
        self.reset_with_epoch(|_| epoch);
    }

    fn reset_with_epoch(&self, next_epoch: impl FnOnce(u64) -> u64) {
        let shared = &*self.shared;
        let mut aggregate = lock(&shared.aggregate);
        let mut names = lock(&shared.names);
        let mut failure_groups = lock(&shared.failure_groups);

        let clock = {
            let mut clock = lock(&shared.clock);
            *clock = Clock::starting_now(clock.generation + 1);
            *clock
        };
        shared.generation.store(clock.generation, Ordering::Release);

        names.clear();
        shared.names_full.store(names.is_full(), Ordering::Release);
        shared.name_overflow_warned.store(false, Ordering::Relaxed);
        failure_groups.clear();
        shared
            .failures_full
            .store(failure_groups.is_full(), Ordering::Release);
        shared
            .failure_overflow_warned
            .store(false, Ordering::Relaxed);
        drop(failure_groups);
        drop(names);

        for mailbox in lock(&shared.mailboxes).iter() {
            let mut inbox = lock(&mailbox.inbox);
            inbox.batches.clear();
        }
        let tracks_deltas = aggregate.tracks_deltas();
        *aggregate = Aggregate::new(
            &shared.config,
            clock.generation,
            next_epoch(aggregate.epoch()),
            clock.start,
            clock.start_unix_ms,
        );
        if tracks_deltas {
            aggregate.start_tracking_deltas(&shared.config);
        }
        // Cleared under the aggregate's lock, so that a delta taken meanwhile sees all of
        // the old epoch or none of it.
        lock(&shared.user_errors).clear();
        shared.cut_off.store(0, Ordering::Relaxed);
        drop(aggregate);

        lock(&shared.history).clear();
        // Shards notice the new generation at their next record or flush.
        shared.flush_epoch.fetch_add(1, Ordering::Release);
    }

    /// The epoch of the statistics: 0 at creation, one more at every [`reset`](Self::reset)
    /// (or the value given to [`reset_to_epoch`](Self::reset_to_epoch)). Deltas carry it, and
    /// [`merge_delta`](Self::merge_delta) merges only deltas of its own epoch.
    ///
    /// ```
    /// use cicada_stats::Stats;
    ///
    /// let stats = Stats::default();
    /// assert_eq!(stats.epoch(), 0);
    /// stats.reset();
    /// assert_eq!(stats.epoch(), 1);
    /// ```
    pub fn epoch(&self) -> u64 {
        lock(&self.shared.aggregate).epoch()
    }

    /// Collects (like [`collect`](Self::collect)) and returns everything recorded since the
    /// previous `take_delta` as a [`StatsDelta`], for another process to
    /// [`merge_delta`](Self::merge_delta): the worker side of a distributed run, called about
    /// once a second. This process's own snapshot, details and history are not changed: a
    /// delta is a copy of what went into them.
    ///
    /// The first call starts tracking and returns everything since the start (or the last
    /// reset): what had been collected before it travels with exact totals, failures and
    /// per-second counts, but without per-second histograms, so it does not count in the
    /// receiver's current window (a worker that calls `take_delta` from its start loses
    /// nothing). Samples a thread has not yet flushed arrive in a later delta; at the end of a
    /// run, call [`collect_final`](Self::collect_final) and then `take_delta`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use cicada_stats::{Sample, Stats};
    ///
    /// let worker = Stats::default();
    /// let master = Stats::default();
    /// for delta_number in 0..3 {
    ///     worker.record(&Sample {
    ///         method: "GET",
    ///         name: "/",
    ///         response_time: Duration::from_millis(delta_number + 1),
    ///         content_length: 0,
    ///         error: None,
    ///         finished_at: Instant::now(),
    ///     });
    ///     worker.collect_final(Duration::from_secs(1));
    ///     master.merge_delta(&worker.take_delta()).unwrap();
    /// }
    /// master.collect();
    /// assert_eq!(master.snapshot().total.num_requests, 3);
    /// assert_eq!(master.snapshot().total.max_ms, 3.0);
    /// ```
    pub fn take_delta(&self) -> StatsDelta {
        let shared = &*self.shared;
        // Tracking starts before the collect, so that the batches it merges are tracked with
        // their per-second histograms.
        lock(&shared.aggregate).start_tracking_deltas(&shared.config);
        let mut aggregate = self.collect_locked(Instant::now());
        let names = lock(&shared.names);
        let failure_groups = lock(&shared.failure_groups);
        let entries = aggregate.take_delta_entries(&names, &failure_groups);
        drop(failure_groups);
        drop(names);
        let epoch = aggregate.epoch();
        let (user_errors, user_errors_over_cap, requests_cut_off) = match aggregate.book_mut() {
            Some(book) => {
                let (user_errors, over_cap) = book.take_user_errors(&lock(&shared.user_errors));
                let cut_off = book.take_cut_off(shared.cut_off.load(Ordering::Relaxed));
                (user_errors, over_cap, cut_off)
            }
            // Cannot happen: only a reset replaces the aggregate, and it keeps tracking on.
            None => (Vec::new(), 0, 0),
        };
        drop(aggregate);
        self.forget_exited_mailboxes();
        StatsDelta {
            epoch,
            sequence: shared.delta_sequence.fetch_add(1, Ordering::Relaxed) + 1,
            entries,
            user_errors,
            user_errors_over_cap,
            requests_cut_off,
        }
    }

    /// Folds a delta of another process in, exactly as if its samples had been recorded here
    /// (the master side of a distributed run): names, failure groups and user errors are
    /// registered under this instance's caps, and what does not fit goes to the same overflow
    /// entry and groups as a local sample would. Merging is commutative and associative (see
    /// [`StatsDelta`] for the guarantees). The samples show in the next
    /// [`snapshot`](Self::snapshot) at once; the current window counts a second of the delta
    /// if it is no more than one second past the latest [`collect`](Self::collect), so a
    /// master collects about once a second, as a single process does.
    ///
    /// Refuses (and merges nothing of) a delta of another [`epoch`](Self::epoch). Does not
    /// look at the sequence number: dropping duplicates is the caller's job.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use cicada_stats::{Sample, Stats};
    ///
    /// let master = Stats::default();
    /// for worker_number in 0..2 {
    ///     let worker = Stats::default();
    ///     worker.record(&Sample {
    ///         method: "GET",
    ///         name: "/",
    ///         response_time: Duration::from_millis(1),
    ///         content_length: 0,
    ///         error: Some("HTTP 500"),
    ///         finished_at: Instant::now(),
    ///     });
    ///     worker.record_user_error("Shopper", "cart is empty", "src/shopper.rs:42");
    ///     worker.collect_final(Duration::from_secs(1));
    ///     master.merge_delta(&worker.take_delta()).unwrap();
    /// }
    /// let snapshot = master.snapshot();
    /// assert_eq!(snapshot.failures[0].occurrences, 2);
    /// assert_eq!(snapshot.user_errors[0].count, 2);
    /// ```
    pub fn merge_delta(&self, delta: &StatsDelta) -> Result<(), MergeError> {
        let shared = &*self.shared;
        let mut aggregate = lock(&shared.aggregate);
        if delta.epoch != aggregate.epoch() {
            return Err(MergeError::EpochMismatch {
                delta_epoch: delta.epoch,
                stats_epoch: aggregate.epoch(),
            });
        }
        let mut names = lock(&shared.names);
        let mut failure_groups = lock(&shared.failure_groups);
        let overflow: DeltaOverflow = aggregate.merge_delta(delta, &mut names, &mut failure_groups);
        if names.is_full() {
            shared.names_full.store(true, Ordering::Release);
        }
        if failure_groups.is_full() {
            shared.failures_full.store(true, Ordering::Release);
        }
        drop(failure_groups);
        drop(names);
        {
            let mut user_errors = lock(&shared.user_errors);
            for error in &delta.user_errors {
                user_errors.record_n(
                    &error.user_type,
                    &error.message,
                    &error.location,
                    error.count,
                );
            }
            user_errors.add_over_cap(delta.user_errors_over_cap);
        }
        shared
            .cut_off
            .fetch_add(delta.requests_cut_off, Ordering::Relaxed);
        drop(aggregate);
        if overflow.names {
            shared.warn_names_over_cap();
        }
        if overflow.failures {
            shared.warn_failures_over_cap();
        }
        Ok(())
    }

    /// The history point for the aggregate as of the latest collect (current rates and
    /// percentiles of the total), with `user_count`.
    ///
    /// ```
    /// use cicada_stats::Stats;
    ///
    /// let point = Stats::default().history_point(7);
    /// assert_eq!((point.user_count, point.total_requests), (7, 0));
    /// ```
    pub fn history_point(&self, user_count: u64) -> HistoryPoint {
        let aggregate = lock(&self.shared.aggregate);
        HistoryPoint::from_total(
            &aggregate.total_stats(),
            aggregate.collected_unix_ms(),
            user_count,
        )
    }

    /// Appends [`history_point`](Self::history_point)`(user_count)` to the history ring (the
    /// engine calls it every 2 s). The ring keeps [`StatsConfig::history_capacity`] points.
    ///
    /// ```
    /// use cicada_stats::{Stats, StatsConfig};
    ///
    /// let stats = Stats::new(StatsConfig { history_capacity: 2, ..StatsConfig::default() });
    /// for users in 1..=3 {
    ///     stats.push_history(users);
    /// }
    /// let users: Vec<u64> = stats.history().iter().map(|point| point.user_count).collect();
    /// assert_eq!(users, [2, 3]);
    /// ```
    pub fn push_history(&self, user_count: u64) {
        let point = self.history_point(user_count);
        self.push_history_point(point);
    }

    /// Appends a point built by the caller (e.g. a `history_point` with extra fields set).
    pub fn push_history_point(&self, point: HistoryPoint) {
        let capacity = self.shared.config.history_capacity;
        if capacity == 0 {
            return;
        }
        let mut history = lock(&self.shared.history);
        while history.len() >= capacity {
            history.pop_front();
        }
        history.push_back(point);
    }

    /// The history ring, oldest first; at most [`StatsConfig::history_capacity`] points.
    pub fn history(&self) -> Vec<HistoryPoint> {
        lock(&self.shared.history).iter().cloned().collect()
    }

    /// Sizes of the calling thread's shard for this instance, or `None` if this thread has
    /// not recorded into it (diagnostics; the bound tests use it).
    ///
    /// ```
    /// use cicada_stats::Stats;
    ///
    /// assert_eq!(Stats::default().thread_shard_sizes(), None);
    /// ```
    pub fn thread_shard_sizes(&self) -> Option<ShardSizes> {
        shard::with_existing_thread_shard(&self.shared, |shard| {
            let (names, failure_groups) = shard.sizes();
            ShardSizes {
                names,
                failure_groups,
            }
        })
    }
}

#[cfg(test)]
mod tests;
