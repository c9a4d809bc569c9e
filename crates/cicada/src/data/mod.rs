//! Test data: sources of items handed out in order, each once, to the users of a whole cluster
//! (`user.next_item::<T>("accounts")`), and [`CsvCycle`], a CSV file each process cycles through on its own.
//!
//! The master (or the single process) owns every [`DataSource`] ([`hub`]). Each process that runs users keeps a
//! small queue per source: a take is a pop from that queue (no round trip on the hot path), and when half a batch
//! is left the queue asks the owner for the next batch: over the custom-message channel (kind
//! [`MESSAGE_KIND`], postcard) on a worker, by a direct call in a single process. A worker holds at most about two
//! batches per source; the master reads one batch at a time from a file or an iterator, keeps at most
//! [`MAX_PUSHED_ITEMS`] pushed items and one waiting request per worker and source.
//!
//! Items a worker was handed and had not used when it leaves or dies are **not** handed out again (a batch lost
//! with a broken connection neither): "each item once" wins over "every item used". The master logs how many
//! items a worker that left had been handed.

mod csv_cycle;
mod hub;
mod source;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

pub use csv_cycle::{CsvCycle, DEFAULT_CSV_CYCLE_MAX_BYTES};
pub use hub::MAX_PUSHED_ITEMS;
pub use source::{
    DEFAULT_BATCH_SIZE, DEFAULT_MAX_FILE_BYTES, DataSource, MAX_BATCH_SIZE, MAX_ITEM_BYTES,
    WhenExhausted,
};

use crate::messages::{MessageSource, Messages};
use crate::runner::RunnerMode;
use crate::user::TaskError;
use crate::user::run::{StopLevel, UserControl};
use hub::{Hub, Take};
use source::{Item, ItemValue};

/// The message kind the distributor travels as (reserved: see [`crate::messages::RESERVED_PREFIX`]).
pub(crate) const MESSAGE_KIND: &str = "cicada.data";
/// The most sources a test may register.
pub const MAX_SOURCES: usize = 64;
/// The longest source name, in bytes.
pub const MAX_SOURCE_NAME_BYTES: usize = 128;
/// A worker's request that got no answer this long is sent again (the reply may have been lost with a broken
/// connection; the master answers a request once, so a repeat never hands out more).
const REQUEST_RETRY: Duration = Duration::from_secs(3);
/// A waiting take looks again this often (a retry is due, or the source was refilled locally).
const WAIT_RECHECK: Duration = Duration::from_millis(500);
/// Requests waiting for the master's data task; beyond, one is dropped and the worker asks again.
const MASTER_QUEUE: usize = 4096;

/// What went wrong with test data: every message names the source, or the file and line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("cannot read the test data file {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file is larger than its source allows.
    #[error(
        "the test data file {path} is {size} bytes, more than the {limit} bytes allowed: split it, or raise the \
         limit (DataSource::max_file_bytes, CsvCycle::open_with_limit)"
    )]
    TooBig {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A row or a line of a file is not what it should be.
    #[error("{path} line {line}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line (from 1).
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A CSV file for a [`CsvCycle`] has no row.
    #[error("the test data file {path} has no row to cycle through (only a header, or nothing)")]
    NoRows {
        /// The file.
        path: PathBuf,
    },
    /// An iterator's or a pushed item cannot be sent.
    #[error("test data: {at}: {reason}")]
    Item {
        /// Which item.
        at: String,
        /// Why.
        reason: String,
    },
    /// No source of this name is registered.
    #[error("no test data source {name:?} (this test registers: {known})")]
    UnknownSource {
        /// The name asked for.
        name: String,
        /// The names registered.
        known: String,
    },
    /// A source name is empty, too long or registered twice.
    #[error("test data source name {name:?} is {problem}")]
    BadName {
        /// The name.
        name: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// More than [`MAX_SOURCES`] sources.
    #[error("a test registers at most {MAX_SOURCES} test data sources")]
    TooManySources,
    /// A batch size out of range.
    #[error(
        "test data source {name:?}: a batch of {size} items; it must be between 1 and {MAX_BATCH_SIZE}"
    )]
    BatchSize {
        /// The source.
        name: String,
        /// The size given.
        size: usize,
    },
    /// A one-shot iterator cannot start over.
    #[error(
        "test data source {name:?}: a one-shot iterator (DataSource::once) cannot start over; use \
         DataSource::iter with a clonable iterable, or another WhenExhausted"
    )]
    CannotCycle {
        /// The source.
        name: String,
    },
    /// Too many pushed items wait already.
    #[error("test data source {name:?}: {capacity} pushed items wait already; push fewer")]
    PushFull {
        /// The source.
        name: String,
        /// The bound.
        capacity: usize,
    },
    /// An item does not decode as the type asked for.
    #[error("test data {name:?}: {at} does not decode as {type_name}: {reason}")]
    Decode {
        /// The source.
        name: String,
        /// Where the item came from.
        at: String,
        /// The type asked for.
        type_name: &'static str,
        /// Why.
        reason: String,
    },
    /// A push could not be sent to the master.
    #[error("test data source {name:?}: the push could not be sent to the master: {reason}")]
    Send {
        /// The source.
        name: String,
        /// Why.
        reason: String,
    },
}

/// The distributor's messages, postcard-encoded: fixed types on both sides, compact for batches of items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum DataMessage {
    /// A worker asks for the next batch of a source; `seq` numbers its requests per source, from 1.
    Request { source: String, seq: u64 },
    /// The answer to a request: the next items (possibly none) and whether the source stops users.
    Batch {
        source: String,
        seq: u64,
        headers: Option<Vec<String>>,
        items: Vec<Item>,
        exhausted: bool,
    },
    /// This request was answered already (its reply was lost, or is late): ask with the next number.
    Answered { source: String, seq: u64 },
    /// The master has no such source (it runs another version of the test).
    Unknown { source: String },
    /// A worker pushes an item.
    Push { source: String, item: Item },
}

impl DataMessage {
    fn encode(&self) -> Option<Bytes> {
        postcard::to_allocvec(self).ok().map(Bytes::from)
    }
}

/// The sources a test registered, before the run.
#[derive(Default)]
pub(crate) struct Definitions {
    sources: Vec<(String, DataSource)>,
    problems: Vec<DataError>,
}

impl Definitions {
    pub(crate) fn add(&mut self, name: &str, source: DataSource) {
        let problem = if name.is_empty() || name.len() > MAX_SOURCE_NAME_BYTES {
            Some("not valid: a name has 1 to 128 bytes")
        } else if self.sources.iter().any(|(n, _)| n == name) {
            Some("registered twice")
        } else {
            None
        };
        match problem {
            Some(problem) => self.problems.push(DataError::BadName {
                name: name.to_string(),
                problem,
            }),
            None if self.sources.len() >= MAX_SOURCES => {
                self.problems.push(DataError::TooManySources)
            }
            None => self.sources.push((name.to_string(), source)),
        }
    }

    /// Check every source before the run; the process that owns them (not a worker) reads their files whole.
    pub(crate) fn check(&self, owner: bool) -> Result<(), String> {
        if let Some(problem) = self.problems.first() {
            return Err(problem.to_string());
        }
        for (name, source) in &self.sources {
            match source.check(name, owner) {
                Ok(Some(count)) => {
                    tracing::info!("test data {name:?}: {count} items in {}", source.label())
                }
                Ok(None) => {}
                Err(error) => return Err(error.to_string()),
            }
        }
        Ok(())
    }
}

/// The user side of one source: its queue of items taken from the owner.
struct Slot {
    name: String,
    /// How errors name where its items come from.
    label: String,
    /// Its items are a file's lines.
    from_file: bool,
    batch_size: usize,
    queue: Mutex<Queue>,
    /// Items arrived (or the source ran out).
    arrived: Notify,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    headers: Option<Arc<csv::StringRecord>>,
    /// The owner said the source stops its users.
    exhausted: bool,
    /// The request in flight: its number and when it was (last) sent.
    pending: Option<(u64, Instant)>,
    last_seq: u64,
    /// The master does not know this source.
    unknown: bool,
}

impl Slot {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Items left at which the next batch is asked for.
    fn low_water(&self) -> usize {
        self.batch_size / 2
    }
}

/// The run's test data: `env.data()`. Cheap to clone.
#[derive(Clone)]
pub struct TestData {
    inner: Arc<Inner>,
}

struct Inner {
    mode: RunnerMode,
    slots: Vec<Slot>,
    by_name: HashMap<String, usize>,
    /// The items' owner, on a master or a single process.
    hub: Option<Hub>,
    messages: Messages,
    /// A master's data task.
    master_queue: OnceLock<mpsc::Sender<(String, DataMessage)>>,
    /// Problems logged once each (bounded by the sources).
    logged: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for TestData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestData")
            .field("mode", &self.inner.mode)
            .field("sources", &self.names())
            .finish_non_exhaustive()
    }
}

impl TestData {
    pub(crate) fn new(definitions: Definitions, mode: RunnerMode, messages: Messages) -> TestData {
        let slots: Vec<Slot> = definitions
            .sources
            .iter()
            .map(|(name, source)| Slot {
                name: name.clone(),
                label: source.label(),
                from_file: matches!(
                    source.origin,
                    source::Origin::Csv(_) | source::Origin::JsonLines(_)
                ),
                batch_size: source.batch_size.clamp(1, MAX_BATCH_SIZE),
                queue: Mutex::new(Queue::default()),
                arrived: Notify::new(),
            })
            .collect();
        let by_name = slots
            .iter()
            .enumerate()
            .map(|(index, slot)| (slot.name.clone(), index))
            .collect();
        // A worker does not own the items: its master does.
        let hub = (mode != RunnerMode::Worker).then(|| Hub::new(definitions.sources));
        TestData {
            inner: Arc::new(Inner {
                mode,
                slots,
                by_name,
                hub,
                messages,
                master_queue: OnceLock::new(),
                logged: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// A master starts the task that answers its workers' requests (file reads stay off the dispatcher).
    pub(crate) fn start(&self) {
        if self.inner.mode != RunnerMode::Master || self.inner.slots.is_empty() {
            return;
        }
        let (sender, mut receiver) = mpsc::channel(MASTER_QUEUE);
        if self.inner.master_queue.set(sender).is_ok() {
            let data = self.clone();
            tokio::spawn(async move {
                while let Some((worker, message)) = receiver.recv().await {
                    data.master_handle(&worker, message);
                }
            });
        }
    }

    /// The registered source names.
    pub fn names(&self) -> Vec<&str> {
        self.inner.slots.iter().map(|s| s.name.as_str()).collect()
    }

    /// Items of a source handed out so far, on the process that owns them (a master or a single process);
    /// `None` on a worker or for an unknown name.
    pub fn handed_out(&self, name: &str) -> Option<u64> {
        let index = *self.inner.by_name.get(name)?;
        Some(self.inner.hub.as_ref()?.source(index).handed_out())
    }

    /// Add an item at the end of a source (after its own items), for users waiting on it
    /// ([`WhenExhausted::Wait`]) or to come. On a worker the item goes to the master (fire and forget: a master
    /// whose push queue is full logs that it dropped it).
    pub fn push<T: Serialize + ?Sized>(&self, name: &str, item: &T) -> Result<(), DataError> {
        let index = self.index(name)?;
        let item = Item::from_value(0, item).map_err(|reason| DataError::Item {
            at: format!("an item pushed to {name:?}"),
            reason,
        })?;
        match self.inner.mode {
            RunnerMode::Worker => {
                let message = DataMessage::Push {
                    source: name.to_string(),
                    item,
                };
                self.send(&MessageSource::Master, &message)
                    .map_err(|reason| DataError::Send {
                        name: name.to_string(),
                        reason,
                    })
            }
            RunnerMode::Local | RunnerMode::Master => self.push_here(index, item),
        }
    }

    fn push_here(&self, index: usize, item: Item) -> Result<(), DataError> {
        let hub = self.inner.hub.as_ref().expect("an owner has a hub");
        hub.source(index).push(item)?;
        if self.inner.mode == RunnerMode::Master {
            self.serve_waiters(index);
        } else {
            let slot = &self.inner.slots[index];
            slot.queue().exhausted = false;
            slot.arrived.notify_waiters();
        }
        Ok(())
    }

    fn index(&self, name: &str) -> Result<usize, DataError> {
        self.inner
            .by_name
            .get(name)
            .copied()
            .ok_or_else(|| DataError::UnknownSource {
                name: name.to_string(),
                known: if self.inner.slots.is_empty() {
                    "none; register one with Cicada::data_source".to_string()
                } else {
                    self.names().join(", ")
                },
            })
    }

    /// The next item of a source for a user: a pop from the local queue; the next batch is asked for when half
    /// of one is left. Out of items: stops the user, waits, or (cycle) the owner started over.
    pub(crate) async fn next_item<T: DeserializeOwned>(
        &self,
        name: &str,
        control: &UserControl,
    ) -> Result<T, TaskError> {
        let index = self.index(name).map_err(TaskError::msg)?;
        let slot = &self.inner.slots[index];
        loop {
            let arrived = slot.arrived.notified();
            tokio::pin!(arrived);
            // Registered before looking, so that an arrival between the look and the wait is not missed.
            arrived.as_mut().enable();
            let (popped, request, stop) = {
                let mut queue = slot.queue();
                let popped = queue
                    .items
                    .pop_front()
                    .map(|item| (item, queue.headers.clone()));
                let request = self.due_request(slot, &mut queue);
                let stop = popped.is_none() && (queue.exhausted || queue.unknown);
                (popped, request, stop.then_some(queue.unknown))
            };
            if let Some(seq) = request {
                self.refill(index, seq);
            }
            if let Some((item, headers)) = popped {
                return decode(slot, item, headers.as_deref()).map_err(TaskError::msg);
            }
            if let Some(unknown) = stop {
                if unknown {
                    return Err(TaskError::msg(DataError::UnknownSource {
                        name: name.to_string(),
                        known: "the master has no source of this name: it runs another version of the test"
                            .to_string(),
                    }));
                }
                return Err(TaskError::flow(crate::user::Flow::StopUser));
            }
            if request.is_some() && !slot.queue().items.is_empty() {
                continue; // a local refill just filled it
            }
            tokio::select! {
                _ = arrived => {}
                _ = control.reached(StopLevel::Stopping) => {
                    return Err(TaskError::flow(crate::user::Flow::StopUser));
                }
                _ = tokio::time::sleep(WAIT_RECHECK) => {}
            }
        }
    }

    /// Whether the queue should ask for a batch now (low, not exhausted, no request in flight, or one that got no
    /// answer for [`REQUEST_RETRY`]); marks it asked and answers the request's number.
    fn due_request(&self, slot: &Slot, queue: &mut Queue) -> Option<u64> {
        if queue.exhausted || queue.unknown || queue.items.len() > slot.low_water() {
            return None;
        }
        let now = Instant::now();
        match queue.pending {
            None => {
                queue.last_seq += 1;
                queue.pending = Some((queue.last_seq, now));
                Some(queue.last_seq)
            }
            // A worker sends the same request again: the master answers each number once.
            Some((seq, sent)) if self.inner.mode == RunnerMode::Worker => {
                (now.duration_since(sent) >= REQUEST_RETRY).then(|| {
                    queue.pending = Some((seq, now));
                    seq
                })
            }
            Some(_) => None,
        }
    }

    /// Ask the owner for the next batch: a direct take in a single process, a message on a worker.
    fn refill(&self, index: usize, seq: u64) {
        let slot = &self.inner.slots[index];
        match (&self.inner.hub, self.inner.mode) {
            (Some(hub), RunnerMode::Local) => {
                let (take, headers) = {
                    let mut source = hub.source(index);
                    let batch = source.batch_size();
                    let take = source.take(batch);
                    (take, source.headers())
                };
                let mut queue = slot.queue();
                queue.pending = None;
                match take {
                    Take::Items(items) => {
                        if queue.headers.is_none() {
                            queue.headers =
                                headers.map(|h| Arc::new(csv::StringRecord::from(h.to_vec())));
                        }
                        queue.items.extend(items);
                    }
                    Take::Exhausted => queue.exhausted = true,
                    // Nothing changed: waking the other waiters would only make them ask again.
                    Take::Empty => return,
                }
                drop(queue);
                slot.arrived.notify_waiters();
            }
            (None, RunnerMode::Worker) => {
                let request = DataMessage::Request {
                    source: slot.name.clone(),
                    seq,
                };
                if let Err(reason) = self.send(&MessageSource::Master, &request) {
                    tracing::debug!(
                        "test data {:?}: a request could not be sent: {reason}",
                        slot.name
                    );
                    // Asked again at the next take, or by a waiting one within WAIT_RECHECK.
                    slot.queue().pending = None;
                }
            }
            // A master runs no users.
            _ => {}
        }
    }

    fn send(&self, to: &MessageSource, message: &DataMessage) -> Result<(), String> {
        let payload = message
            .encode()
            .ok_or_else(|| "the message does not encode".to_string())?;
        self.inner
            .messages
            .send_engine(to, MESSAGE_KIND, payload)
            .map_err(|error| error.to_string())
    }

    /// A distributor message arrived: on a worker, a batch (a pop away from the users); on a master, a request or
    /// a push, queued for its data task.
    pub(crate) fn on_message(&self, source: MessageSource, payload: &[u8]) {
        let message: DataMessage = match postcard::from_bytes(payload) {
            Ok(message) => message,
            Err(error) => {
                self.log_once(
                    "decode",
                    format!("a test data message from {source:?} does not decode: {error}"),
                );
                return;
            }
        };
        match (self.inner.mode, source) {
            (RunnerMode::Worker, MessageSource::Master) => self.worker_handle(message),
            (RunnerMode::Master, MessageSource::Worker(worker)) => {
                if let Some(queue) = self.inner.master_queue.get()
                    && queue.try_send((worker, message)).is_err()
                {
                    // The worker asks again after REQUEST_RETRY.
                    tracing::debug!(
                        "test data: the master's queue is full; a request waits for its retry"
                    );
                }
            }
            _ => {}
        }
    }

    fn worker_handle(&self, message: DataMessage) {
        let (name, seq) = match &message {
            DataMessage::Batch { source, seq, .. } | DataMessage::Answered { source, seq } => {
                (source, Some(*seq))
            }
            DataMessage::Unknown { source } => (source, None),
            DataMessage::Request { .. } | DataMessage::Push { .. } => return,
        };
        let Some(&index) = self.inner.by_name.get(name) else {
            return;
        };
        let slot = &self.inner.slots[index];
        let mut queue = slot.queue();
        if seq.is_some() && queue.pending.map(|(pending, _)| pending) == seq {
            queue.pending = None;
        }
        match message {
            DataMessage::Batch {
                headers,
                items,
                exhausted,
                ..
            } => {
                if let Some(headers) = headers
                    && queue.headers.is_none()
                {
                    queue.headers = Some(Arc::new(csv::StringRecord::from(headers)));
                }
                // Every item handed out is kept, even from a late reply: none is handed out twice.
                queue.items.extend(items);
                queue.exhausted |= exhausted;
            }
            DataMessage::Unknown { source } => {
                queue.unknown = true;
                drop(queue);
                self.log_once(
                    &source,
                    format!("test data {source:?}: the master has no source of this name (it runs another version of the test)"),
                );
            }
            _ => {}
        }
        slot.arrived.notify_waiters();
    }

    /// The master's data task: answer a request (once per number), or take a push.
    fn master_handle(&self, worker: &str, message: DataMessage) {
        let Some(hub) = &self.inner.hub else { return };
        let name = match &message {
            DataMessage::Request { source, .. } | DataMessage::Push { source, .. } => {
                source.clone()
            }
            _ => return,
        };
        let Some(&index) = self.inner.by_name.get(&name) else {
            let reply = DataMessage::Unknown { source: name };
            let _ = self.send(&MessageSource::Worker(worker.to_string()), &reply);
            return;
        };
        match message {
            DataMessage::Request { seq, .. } => {
                if !hub.is_new_request(worker, index, seq) {
                    let waiting = hub
                        .source(index)
                        .waiters
                        .iter()
                        .any(|(w, s)| w == worker && *s == seq);
                    if !waiting {
                        let reply = DataMessage::Answered { source: name, seq };
                        let _ = self.send(&MessageSource::Worker(worker.to_string()), &reply);
                    }
                    return;
                }
                let mut source = hub.source(index);
                if !self.answer(hub, &mut source, index, worker, seq) {
                    source.waiters.retain(|(w, _)| w != worker);
                    source.waiters.push_back((worker.to_string(), seq));
                }
            }
            DataMessage::Push { item, .. } => {
                if let Err(error) = self.push_here(index, item) {
                    self.log_once(
                        &format!("push {name}"),
                        format!("a push from worker {worker} was dropped: {error}"),
                    );
                }
            }
            _ => {}
        }
    }

    /// Answer one request from the source; false when the source has nothing now (the worker waits).
    fn answer(
        &self,
        hub: &Hub,
        source: &mut hub::HubSource,
        index: usize,
        worker: &str,
        seq: u64,
    ) -> bool {
        let batch = source.batch_size();
        let (items, exhausted) = match source.take(batch) {
            Take::Items(items) => (items, false),
            Take::Exhausted => (Vec::new(), true),
            Take::Empty => return false,
        };
        let count = items.len();
        let reply = DataMessage::Batch {
            source: source.name.clone(),
            seq,
            headers: source.headers().map(|h| h.to_vec()),
            items,
            exhausted,
        };
        match self.send(&MessageSource::Worker(worker.to_string()), &reply) {
            Ok(()) => hub.answered(worker, index, seq, count),
            Err(reason) => {
                // Not sent: the items go out first to whoever asks next; this worker asks again.
                if let DataMessage::Batch { items, .. } = reply {
                    source.give_back(items);
                }
                tracing::debug!(
                    "test data {:?}: a batch for worker {worker} was not sent: {reason}",
                    source.name
                );
            }
        }
        true
    }

    /// Items arrived on a master: answer the workers waiting for them, oldest first.
    fn serve_waiters(&self, index: usize) {
        let Some(hub) = &self.inner.hub else { return };
        let mut source = hub.source(index);
        while let Some((worker, seq)) = source.waiters.front().cloned() {
            if !self.answer(hub, &mut source, index, &worker, seq) {
                break;
            }
            source.waiters.pop_front();
        }
    }

    /// A master's worker went missing: it waits for nothing (it asks again when it is back).
    pub(crate) fn worker_missing(&self, worker: &str) {
        if let Some(hub) = &self.inner.hub {
            hub.worker_missing(worker);
        }
    }

    /// A master's worker left: what it was handed and had not used is not handed out again.
    pub(crate) fn worker_gone(&self, worker: &str) {
        if let Some(hub) = &self.inner.hub {
            let given = hub.worker_gone(worker);
            if given > 0 {
                tracing::info!(
                    "test data: worker {worker} left after it was handed {given} items; those it had not used are \
                     not handed out again"
                );
            }
        }
    }

    fn log_once(&self, key: &str, line: String) {
        let mut logged = self.inner.logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.len() < 2 * MAX_SOURCES + 8 && logged.insert(key.to_string()) {
            tracing::warn!("{line}");
        }
    }
}

/// An item as the user's type.
fn decode<T: DeserializeOwned>(
    slot: &Slot,
    item: Item,
    headers: Option<&csv::StringRecord>,
) -> Result<T, DataError> {
    let decoded = match item.value {
        ItemValue::Json(text) => serde_json::from_str(&text).map_err(|e| e.to_string()),
        ItemValue::Csv(fields) => csv::StringRecord::from(fields)
            .deserialize(headers)
            .map_err(|e| match e.kind() {
                csv::ErrorKind::Deserialize { err, .. } => err.to_string(),
                _ => e.to_string(),
            }),
    };
    decoded.map_err(|reason| DataError::Decode {
        name: slot.name.clone(),
        at: match item.at {
            0 => "a pushed item".to_string(),
            at if slot.from_file => format!("{} line {at}", slot.label),
            at => format!("item {at} of {}", slot.label),
        },
        type_name: std::any::type_name::<T>(),
        reason,
    })
}
