//! The hot path: per-thread shards that record samples without locks, and the mailboxes
//! through which they hand batches to the aggregate.
//!
//! A [`LocalShard`] lives in a `thread_local!` vector, one per `(thread, Stats instance)`. It
//! maps `(method, name)` to local entries (up to 32 values, then a histogram, + counters) and
//! collects their changes into a batch covering one second of `finished_at`. [`LocalShard::flush`] moves the batch
//! into the shard's [`Mailbox`] under the mailbox mutex (once per flush, never per sample);
//! the aggregate takes batches out in `collect` and hands emptied histograms and buffers back
//! for reuse.

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hashbrown::{DefaultHashBuilder, Equivalent, HashMap, HashTable};
use hdrhistogram::Histogram;

use crate::Sample;
use crate::histogram::{self, FewValues, Samples, new_histogram};
use crate::keys::{
    FailureKey, FailureKeyRef, FrozenIds, MAX_KEY_TEXT, PairKey, PairKeyRef, Registration, clip,
    same_text,
};
use crate::stats::{Shared, lock};

/// Batches a mailbox keeps while nobody collects; later flushes are folded into the newest
/// one, so a run without `collect` cannot grow memory without bound.
pub const MAX_WAITING_BATCHES: usize = 64;

/// Emptied batches a mailbox keeps for reuse.
pub(crate) const MAX_SPARE_BATCHES: usize = 8;

/// Largest `entries × entries` product for which a flush folds into a waiting batch of the
/// same second instead of queueing a new one.
const MAX_SAME_SECOND_FOLD_WORK: usize = 1_024;

/// Global id of the overflow entry in every generation (the name registry reserves it).
pub(crate) const OVERFLOW_ENTRY_ID: u32 = 0;

/// Plain counters of an entry; the histogram lives beside them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryCounters {
    /// When the latest of these samples finished.
    pub(crate) last_finished_at: Option<Instant>,
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    pub(crate) response_micros_sum: u64,
    pub(crate) min_micros: u64,
    pub(crate) max_micros: u64,
    pub(crate) content_bytes: u64,
    /// Failures whose group could not be registered (failure-group cap reached).
    pub(crate) failures_over_cap: u64,
}

impl Default for EntryCounters {
    fn default() -> Self {
        EntryCounters {
            last_finished_at: None,
            requests: 0,
            failures: 0,
            response_micros_sum: 0,
            // So that the first sample always becomes the minimum.
            min_micros: u64::MAX,
            max_micros: 0,
            content_bytes: 0,
            failures_over_cap: 0,
        }
    }
}

impl EntryCounters {
    #[inline]
    pub(crate) fn record(&mut self, micros: u64, content_length: u64, finished_at: Instant) {
        if self.last_finished_at < Some(finished_at) {
            self.last_finished_at = Some(finished_at);
        }
        self.requests += 1;
        self.response_micros_sum = self.response_micros_sum.saturating_add(micros);
        self.min_micros = self.min_micros.min(micros);
        self.max_micros = self.max_micros.max(micros);
        self.content_bytes = self.content_bytes.saturating_add(content_length);
    }

    pub(crate) fn merge(&mut self, other: &EntryCounters) {
        self.last_finished_at = self.last_finished_at.max(other.last_finished_at);
        self.requests = self.requests.saturating_add(other.requests);
        self.failures = self.failures.saturating_add(other.failures);
        self.response_micros_sum = self
            .response_micros_sum
            .saturating_add(other.response_micros_sum);
        self.min_micros = self.min_micros.min(other.min_micros);
        self.max_micros = self.max_micros.max(other.max_micros);
        self.content_bytes = self.content_bytes.saturating_add(other.content_bytes);
        self.failures_over_cap = self
            .failures_over_cap
            .saturating_add(other.failures_over_cap);
    }
}

/// What one entry recorded during one batch.
pub(crate) struct EntryDelta {
    pub(crate) entry_id: u32,
    pub(crate) samples: DeltaSamples,
    pub(crate) counters: EntryCounters,
}

/// The response times of an [`EntryDelta`].
pub(crate) enum DeltaSamples {
    /// At most [`histogram::FEW_SAMPLES`]: the values themselves (see [`FewValues`]).
    Few(FewValues),
    /// More: a histogram, handed back to the shard's spares once added.
    Dense(Histogram<u64>),
}

impl DeltaSamples {
    pub(crate) fn as_samples(&self) -> Samples<'_> {
        match self {
            DeltaSamples::Few(few) => Samples::Values(few.as_slice()),
            DeltaSamples::Dense(histogram) => Samples::Dense(histogram),
        }
    }

    /// Adds `other` into `self`; a histogram left over (emptied) goes to `spare_histograms`, one needed is taken
    /// from there when it has one.
    fn absorb(&mut self, other: DeltaSamples, spare_histograms: &mut Vec<Histogram<u64>>) {
        let mine = std::mem::replace(self, DeltaSamples::Few(FewValues::default()));
        *self = match (mine, other) {
            (DeltaSamples::Dense(mut mine), DeltaSamples::Dense(mut theirs)) => {
                histogram::add(&mut mine, &theirs);
                theirs.reset();
                spare_histograms.push(theirs);
                DeltaSamples::Dense(mine)
            }
            (DeltaSamples::Dense(mut mine), DeltaSamples::Few(theirs))
            | (DeltaSamples::Few(theirs), DeltaSamples::Dense(mut mine)) => {
                Samples::Values(theirs.as_slice()).add_to(&mut mine);
                DeltaSamples::Dense(mine)
            }
            (DeltaSamples::Few(mut mine), DeltaSamples::Few(theirs)) => {
                if mine.extend(&theirs) {
                    DeltaSamples::Few(mine)
                } else {
                    let mut dense = spare_histograms.pop().unwrap_or_else(new_histogram);
                    Samples::Values(mine.as_slice()).add_to(&mut dense);
                    Samples::Values(theirs.as_slice()).add_to(&mut dense);
                    DeltaSamples::Dense(dense)
                }
            }
        };
    }
}

/// What one failure group counted during one batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FailureDelta {
    pub(crate) failure_id: u32,
    pub(crate) occurrences: u64,
}

/// Everything a shard recorded for one second (of one generation) between two flushes.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) generation: u64,
    /// Second of `finished_at` since the generation's start.
    pub(crate) second: u64,
    pub(crate) entries: Vec<EntryDelta>,
    pub(crate) failures: Vec<FailureDelta>,
}

impl Batch {
    /// Folds `other` (same generation) into `self`, leaving `other` empty; its histograms
    /// that matched one of `self` go to `spare_histograms`. Cost: `O(len × other.len)`.
    fn absorb(&mut self, other: &mut Batch, spare_histograms: &mut Vec<Histogram<u64>>) {
        self.second = self.second.max(other.second);
        for delta in other.entries.drain(..) {
            match self
                .entries
                .iter_mut()
                .find(|mine| mine.entry_id == delta.entry_id)
            {
                Some(mine) => {
                    mine.samples.absorb(delta.samples, spare_histograms);
                    mine.counters.merge(&delta.counters);
                }
                None => self.entries.push(delta),
            }
        }
        for delta in other.failures.drain(..) {
            match self
                .failures
                .iter_mut()
                .find(|mine| mine.failure_id == delta.failure_id)
            {
                Some(mine) => mine.occurrences += delta.occurrences,
                None => self.failures.push(delta),
            }
        }
    }
}

/// The hand-over point between one shard and the aggregate.
#[derive(Default)]
pub(crate) struct Mailbox {
    /// Set by the owning shard when it goes from clean to holding samples, cleared when it
    /// flushes: `collect_final` waits until every mailbox reads `false`.
    pub(crate) holds_unflushed: AtomicBool,
    /// The owning thread exited (or the shard was a one-off); remove once drained.
    pub(crate) orphaned: AtomicBool,
    pub(crate) inbox: Mutex<Inbox>,
}

/// The mutex-protected part of a [`Mailbox`].
#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) batches: Vec<Batch>,
    /// Emptied histograms handed back by the aggregate; a flush swaps them in so that it
    /// does not allocate.
    pub(crate) spare_histograms: Vec<Histogram<u64>>,
    /// Emptied batches (with their vector capacity) handed back by the aggregate.
    pub(crate) spare_batches: Vec<Batch>,
}

struct LocalEntry {
    /// `(method, name)`; `None` for the overflow entry, which no key resolves to.
    key: Option<PairKey>,
    entry_id: u32,
    /// The batch's first samples, until there are more than fit.
    few: FewValues,
    /// The batch's samples once `few` overflowed; otherwise empty (spares handed in are reset), kept for the next
    /// busy batch.
    histogram: Histogram<u64>,
    counters: EntryCounters,
    /// Listed in `LocalShard::pending_entries`.
    pending: bool,
}

impl LocalEntry {
    /// Whether this batch's samples are in the histogram (`few` overflowed).
    #[inline]
    fn is_dense(&self) -> bool {
        !self.histogram.is_empty()
    }

    #[inline]
    fn record_micros(&mut self, micros: u64) {
        if self.is_dense() {
            histogram::record(&mut self.histogram, micros);
        } else if !self.few.push(micros) {
            self.spill(micros);
        }
    }

    #[cold]
    fn spill(&mut self, micros: u64) {
        Samples::Values(self.few.as_slice()).add_to(&mut self.histogram);
        self.few.clear();
        histogram::record(&mut self.histogram, micros);
    }

    /// The batch's samples, leaving the entry empty; a histogram handed over is replaced by `fresh()`.
    fn take_samples(&mut self, fresh: impl FnOnce() -> Histogram<u64>) -> DeltaSamples {
        if self.is_dense() {
            DeltaSamples::Dense(std::mem::replace(&mut self.histogram, fresh()))
        } else {
            DeltaSamples::Few(std::mem::take(&mut self.few))
        }
    }

    fn discard_samples(&mut self) {
        if self.is_dense() {
            self.histogram.reset();
        }
        self.few.clear();
    }
}

struct LocalFailure {
    failure_id: u32,
    /// Occurrences since the last flush; non-zero means listed in `pending_failures`.
    pending: u64,
}

/// One thread's recorder for one `Stats` instance.
pub(crate) struct LocalShard {
    instance_id: u64,
    shared: Weak<Shared>,
    mailbox: Arc<Mailbox>,
    generation: u64,
    start: Instant,
    seen_flush_epoch: u64,
    /// Indexes into `entries`, hashed by their `(method, name)` (keys live in the entries,
    /// stored once); only names registered globally, never overflow ones.
    names: HashTable<u32>,
    name_hasher: DefaultHashBuilder,
    /// Entry of the previous named sample: a task often repeats its request, and comparing
    /// two short strings is cheaper than hashing them.
    last_entry: Option<u32>,
    entries: Vec<LocalEntry>,
    overflow_entry: Option<u32>,
    /// The name registry's frozen map once it is full, for lock-free resolution.
    frozen_names: Option<FrozenIds<PairKey>>,
    /// `(global entry id, error)` → index in `failures`.
    failure_index: HashMap<FailureKey, u32>,
    failures: Vec<LocalFailure>,
    frozen_failures: Option<FrozenIds<FailureKey>>,
    /// Indexes of entries / failures changed since the last flush, so a flush touches only
    /// those. Capacity is reserved as entries are added, so pushing never allocates.
    pending_entries: Vec<u32>,
    pending_failures: Vec<u32>,
    holds_samples: bool,
    batch_second: u64,
    /// Start of the second after `batch_second`: a sample finishing before it belongs to
    /// the current batch (one `Instant` comparison instead of a subtraction).
    batch_end: Instant,
    /// This shard already reported a name / failure over the cap (to warn at most once per
    /// shard before touching the shared "warned" flag).
    saw_name_overflow: bool,
    saw_failure_overflow: bool,
}

impl LocalShard {
    /// A shard for `shared`, with its mailbox registered for collection.
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        let mailbox = Arc::new(Mailbox::default());
        lock(&shared.mailboxes).push(Arc::clone(&mailbox));
        let clock = shared.clock();
        LocalShard {
            instance_id: shared.instance_id,
            shared: Arc::downgrade(shared),
            mailbox,
            generation: clock.generation,
            start: clock.start,
            seen_flush_epoch: shared.flush_epoch.load(Ordering::Relaxed),
            names: HashTable::new(),
            name_hasher: DefaultHashBuilder::default(),
            last_entry: None,
            entries: Vec::new(),
            overflow_entry: None,
            frozen_names: None,
            failure_index: HashMap::new(),
            failures: Vec::new(),
            frozen_failures: None,
            pending_entries: Vec::new(),
            pending_failures: Vec::new(),
            holds_samples: false,
            batch_second: 0,
            batch_end: clock.start,
            saw_name_overflow: false,
            saw_failure_overflow: false,
        }
    }

    /// Sizes of the local maps (diagnostics and tests).
    pub(crate) fn sizes(&self) -> (usize, usize) {
        (self.names.len(), self.failure_index.len())
    }

    #[inline]
    fn second_of(&self, finished_at: Instant) -> u64 {
        finished_at.saturating_duration_since(self.start).as_secs()
    }

    /// Records one sample. `shared` must be the instance this shard belongs to.
    #[inline]
    pub(crate) fn record(&mut self, shared: &Shared, sample: &Sample<'_>) {
        // The only shared-memory access of a hit: has `collect` (or `reset`) asked for a flush?
        let flush_epoch = shared.flush_epoch.load(Ordering::Relaxed);
        if flush_epoch != self.seen_flush_epoch {
            self.seen_flush_epoch = flush_epoch;
            self.flush(shared);
        }

        if self.holds_samples && sample.finished_at >= self.batch_end {
            // A batch covers one second, so the aggregate can place it in its window ring.
            self.flush(shared);
        }
        if !self.holds_samples {
            self.start_batch(sample.finished_at);
        }
        // A sample of an earlier second (out of order) counts for the batch's second.

        let method = clip(sample.method, MAX_KEY_TEXT);
        let name = clip(sample.name, MAX_KEY_TEXT);
        let index = self.entry_index(shared, method, name) as usize;
        let micros = histogram::to_micros(sample.response_time);
        let entry = &mut self.entries[index];
        entry.record_micros(micros);
        entry
            .counters
            .record(micros, sample.content_length, sample.finished_at);
        if !entry.pending {
            entry.pending = true;
            self.pending_entries.push(index as u32);
        }
        if let Some(error) = sample.error {
            entry.counters.failures += 1;
            let entry_id = entry.entry_id;
            match self.failure_slot(shared, entry_id, clip(error, MAX_KEY_TEXT)) {
                Some(slot) => {
                    let failure = &mut self.failures[slot as usize];
                    if failure.pending == 0 {
                        self.pending_failures.push(slot);
                    }
                    failure.pending += 1;
                }
                None => self.entries[index].counters.failures_over_cap += 1,
            }
        }
    }

    #[cold]
    fn start_batch(&mut self, finished_at: Instant) {
        // Computed after any flush, which may have moved the shard to a new generation.
        let second = self.second_of(finished_at);
        self.holds_samples = true;
        self.batch_second = second;
        self.batch_end = self
            .start
            .checked_add(Duration::from_secs(second.saturating_add(1)))
            .unwrap_or(finished_at);
        self.mailbox.holds_unflushed.store(true, Ordering::Release);
    }

    #[inline]
    fn entry_index(&mut self, shared: &Shared, method: &str, name: &str) -> u32 {
        if let Some(last) = self.last_entry
            && let Some(key) = &self.entries[last as usize].key
            && same_text(&key.second, name)
            && same_text(&key.first, method)
        {
            return last;
        }
        let key = PairKeyRef {
            first: method,
            second: name,
        };
        let hash = self.name_hasher.hash_one(key);
        let entries = &self.entries;
        let found = self.names.find(hash, |&index| {
            entries[index as usize]
                .key
                .as_ref()
                .is_some_and(|owned| key.equivalent(owned))
        });
        match found {
            Some(&index) => {
                self.last_entry = Some(index);
                index
            }
            None => self.entry_index_slow(shared, key, hash),
        }
    }

    /// First sight of `key` on this thread: resolve its global id (taking the registry lock
    /// only while the registry has room) or route it to the overflow entry.
    #[cold]
    fn entry_index_slow(&mut self, shared: &Shared, key: PairKeyRef<'_>, hash: u64) -> u32 {
        if self.frozen_names.is_none() && shared.names_full.load(Ordering::Acquire) {
            self.frozen_names = shared.frozen_names();
        }
        let entry_id = match &self.frozen_names {
            Some(frozen) => frozen.get(&key).copied(),
            None => match shared.register_name(key) {
                Registration::Id(id) => Some(id),
                Registration::Full(frozen) => {
                    let id = frozen.get(&key).copied();
                    self.frozen_names = Some(frozen);
                    id
                }
            },
        };
        match entry_id {
            Some(entry_id) => {
                let index = self.push_entry(Some(key.to_owned_key()), entry_id);
                let (entries, hasher) = (&self.entries, &self.name_hasher);
                self.names.insert_unique(hash, index, |&index| {
                    let key = entries[index as usize].key.as_ref();
                    hasher.hash_one(key.expect("only named entries are in the table").borrowed())
                });
                self.last_entry = Some(index);
                index
            }
            None => self.overflow_index(shared),
        }
    }

    fn overflow_index(&mut self, shared: &Shared) -> u32 {
        if !self.saw_name_overflow {
            self.saw_name_overflow = true;
            shared.warn_names_over_cap();
        }
        match self.overflow_entry {
            Some(index) => index,
            None => {
                let index = self.push_entry(None, OVERFLOW_ENTRY_ID);
                self.overflow_entry = Some(index);
                index
            }
        }
    }

    fn push_entry(&mut self, key: Option<PairKey>, entry_id: u32) -> u32 {
        // The name map holds at most `max_names` keys (≤ u32::MAX, see the registry).
        let index = self.entries.len() as u32;
        self.entries.push(LocalEntry {
            key,
            entry_id,
            few: FewValues::default(),
            histogram: new_histogram(),
            counters: EntryCounters::default(),
            pending: false,
        });
        let missing = self.entries.len() - self.pending_entries.len();
        self.pending_entries.reserve(missing);
        index
    }

    /// Index in `failures` of `(entry_id, error)`, or `None` when the failure-group cap is
    /// reached and the group is unknown.
    #[inline]
    fn failure_slot(&mut self, shared: &Shared, entry_id: u32, error: &str) -> Option<u32> {
        let key = FailureKeyRef {
            entry: entry_id,
            error,
        };
        match self.failure_index.get(&key) {
            Some(&slot) => Some(slot),
            None => self.failure_slot_slow(shared, key),
        }
    }

    #[cold]
    fn failure_slot_slow(&mut self, shared: &Shared, key: FailureKeyRef<'_>) -> Option<u32> {
        if self.frozen_failures.is_none() && shared.failures_full.load(Ordering::Acquire) {
            self.frozen_failures = shared.frozen_failures();
        }
        let failure_id = match &self.frozen_failures {
            Some(frozen) => frozen.get(&key).copied(),
            None => match shared.register_failure(key) {
                Registration::Id(id) => Some(id),
                Registration::Full(frozen) => {
                    let id = frozen.get(&key).copied();
                    self.frozen_failures = Some(frozen);
                    id
                }
            },
        };
        let Some(failure_id) = failure_id else {
            if !self.saw_failure_overflow {
                self.saw_failure_overflow = true;
                shared.warn_failures_over_cap();
            }
            return None;
        };
        let slot = self.failures.len() as u32;
        self.failures.push(LocalFailure {
            failure_id,
            pending: 0,
        });
        let missing = self.failures.len() - self.pending_failures.len();
        self.pending_failures.reserve(missing);
        self.failure_index.insert(key.to_owned_key(), slot);
        Some(slot)
    }

    /// Hands the current batch to the mailbox, or drops it if `reset` started a new
    /// generation (then also forgets every local mapping, which belonged to the old one).
    pub(crate) fn flush(&mut self, shared: &Shared) {
        if shared.generation.load(Ordering::Acquire) != self.generation {
            self.rebind(shared);
            return;
        }
        if !self.holds_samples {
            return;
        }
        {
            let mut inbox = lock(&self.mailbox.inbox);
            let inbox = &mut *inbox;
            let mut batch = inbox.spare_batches.pop().unwrap_or_default();
            batch.generation = self.generation;
            batch.second = self.batch_second;
            for &index in &self.pending_entries {
                let entry = &mut self.entries[index as usize];
                let spare_histograms = &mut inbox.spare_histograms;
                let samples =
                    entry.take_samples(|| spare_histograms.pop().unwrap_or_else(new_histogram));
                batch.entries.push(EntryDelta {
                    entry_id: entry.entry_id,
                    samples,
                    counters: std::mem::take(&mut entry.counters),
                });
                entry.pending = false;
            }
            for &slot in &self.pending_failures {
                let failure = &mut self.failures[slot as usize];
                batch.failures.push(FailureDelta {
                    failure_id: failure.failure_id,
                    occurrences: std::mem::take(&mut failure.pending),
                });
            }
            let queue_full = inbox.batches.len() >= MAX_WAITING_BATCHES;
            match inbox.batches.last_mut() {
                // Frequent flushes of one second (a thread that parks often) fold into one
                // batch, so waiting batches and their histograms do not pile up; folding is
                // skipped when the entry lists are long enough to make it costly.
                Some(newest)
                    if queue_full
                        || (newest.generation == batch.generation
                            && newest.second == batch.second
                            && newest.entries.len() * batch.entries.len()
                                <= MAX_SAME_SECOND_FOLD_WORK) =>
                {
                    newest.absorb(&mut batch, &mut inbox.spare_histograms);
                    if inbox.spare_batches.len() < MAX_SPARE_BATCHES {
                        inbox.spare_batches.push(batch);
                    }
                }
                _ => inbox.batches.push(batch),
            }
        }
        self.pending_entries.clear();
        self.pending_failures.clear();
        self.holds_samples = false;
        self.mailbox.holds_unflushed.store(false, Ordering::Release);
    }

    /// Flushes if samples are pending; for `flush_current_thread` and thread exit.
    pub(crate) fn flush_if_pending(&mut self) {
        if !self.holds_samples {
            return;
        }
        match self.shared.upgrade() {
            Some(shared) => self.flush(&shared),
            // The `Stats` is gone: nobody will read the samples.
            None => self.discard_pending(),
        }
    }

    /// Moves to the current generation: local ids belonged to the old one.
    fn rebind(&mut self, shared: &Shared) {
        let clock = shared.clock();
        self.generation = clock.generation;
        self.start = clock.start;
        self.names.clear();
        self.last_entry = None;
        self.entries.clear();
        self.overflow_entry = None;
        self.frozen_names = None;
        self.failure_index.clear();
        self.failures.clear();
        self.frozen_failures = None;
        self.saw_name_overflow = false;
        self.saw_failure_overflow = false;
        self.discard_pending();
    }

    fn discard_pending(&mut self) {
        for &index in &self.pending_entries {
            if let Some(entry) = self.entries.get_mut(index as usize) {
                entry.discard_samples();
                entry.counters = EntryCounters::default();
                entry.pending = false;
            }
        }
        for &slot in &self.pending_failures {
            if let Some(failure) = self.failures.get_mut(slot as usize) {
                failure.pending = 0;
            }
        }
        self.pending_entries.clear();
        self.pending_failures.clear();
        self.holds_samples = false;
        self.mailbox.holds_unflushed.store(false, Ordering::Release);
    }

    fn is_live(&self) -> bool {
        self.shared.strong_count() > 0
    }
}

impl Drop for LocalShard {
    fn drop(&mut self) {
        // The thread exits (or a one-off shard ends): hand over what is left.
        self.flush_if_pending();
        self.mailbox.orphaned.store(true, Ordering::Release);
    }
}

thread_local! {
    /// This thread's shards, one per live `Stats` instance it recorded into (usually one, so
    /// the lookup is a compare of the first element).
    static THREAD_SHARDS: RefCell<Vec<LocalShard>> = const { RefCell::new(Vec::new()) };
}

/// Runs `action` on this thread's shard for `shared`, creating it on first use. Returns
/// `None` when the thread-local is unusable (being destroyed, or re-entered); the caller then
/// records through a one-off shard.
#[inline]
pub(crate) fn with_thread_shard<R>(
    shared: &Arc<Shared>,
    action: impl FnOnce(&mut LocalShard) -> R,
) -> Option<R> {
    THREAD_SHARDS
        .try_with(|cell| {
            let mut shards = cell.try_borrow_mut().ok()?;
            let position = match shards
                .iter()
                .position(|shard| shard.instance_id == shared.instance_id)
            {
                Some(position) => position,
                None => {
                    // First record of this instance on this thread; also the moment to drop
                    // shards of instances that no longer exist.
                    shards.retain(LocalShard::is_live);
                    shards.push(LocalShard::new(shared));
                    shards.len() - 1
                }
            };
            Some(action(&mut shards[position]))
        })
        .ok()
        .flatten()
}

/// Runs `action` on this thread's shard for `shared` if it exists.
pub(crate) fn with_existing_thread_shard<R>(
    shared: &Shared,
    action: impl FnOnce(&LocalShard) -> R,
) -> Option<R> {
    THREAD_SHARDS
        .try_with(|cell| {
            let shards = cell.try_borrow().ok()?;
            shards
                .iter()
                .find(|shard| shard.instance_id == shared.instance_id)
                .map(action)
        })
        .ok()
        .flatten()
}

/// Flushes every shard of this thread that holds samples, and drops the shards of
/// instances that no longer exist.
pub(crate) fn flush_thread_shards() {
    // `try_with`/`try_borrow_mut`: during thread teardown or a re-entrant call there is
    // nothing safe to do, and the shard's Drop flushes anyway.
    let _ = THREAD_SHARDS.try_with(|cell| {
        if let Ok(mut shards) = cell.try_borrow_mut() {
            shards.retain(LocalShard::is_live);
            for shard in shards.iter_mut() {
                shard.flush_if_pending();
            }
        }
    });
}
