//! The owner of the items: on the master (or the single process), one [`HubSource`] per registered source reads
//! its items in order and hands out batches, each item once. On a master it also keeps, per worker and source,
//! the number of the last request it answered (a request sent again after a lost reply is not answered twice)
//! and the workers waiting for items of an exhausted [`WhenExhausted::Wait`] source.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::DataError;
use super::source::{DataSource, Item, MAX_BATCH_BYTES, Reader, WhenExhausted};

/// Items pushed and not yet handed out, per source; beyond, a push is refused.
pub const MAX_PUSHED_ITEMS: usize = 10_000;

/// What a take got.
#[derive(Debug, PartialEq)]
pub(crate) enum Take {
    /// The next items, in order (never empty).
    Items(Vec<Item>),
    /// None left, and the source stops its users.
    Exhausted,
    /// None now: the source waits for more (or could not start over).
    Empty,
}

/// One source as its owner reads it.
pub(crate) struct HubSource {
    pub(crate) name: String,
    definition: DataSource,
    reader: Option<Reader>,
    /// The reader was opened at least once.
    opened: bool,
    /// The reader yielded an item since it was (re)opened: a cycle of an empty source would never end.
    yielded: bool,
    /// The file could not be read mid-run: it is not opened again.
    broken: bool,
    headers: Option<Arc<Vec<String>>>,
    /// Items handed back (a reply that could not be queued): they go out first.
    returned: VecDeque<Item>,
    pushed: VecDeque<Item>,
    handed_out: u64,
    /// Workers waiting for items (master only), oldest first, with the request they wait on; at most one entry
    /// per worker.
    pub(crate) waiters: VecDeque<(String, u64)>,
}

impl HubSource {
    fn new(name: String, definition: DataSource) -> HubSource {
        HubSource {
            name,
            definition,
            reader: None,
            opened: false,
            yielded: false,
            broken: false,
            headers: None,
            returned: VecDeque::new(),
            pushed: VecDeque::new(),
            handed_out: 0,
            waiters: VecDeque::new(),
        }
    }

    pub(crate) fn batch_size(&self) -> usize {
        self.definition.batch_size
    }

    /// A CSV source's header row (known once it was opened).
    pub(crate) fn headers(&self) -> Option<Arc<Vec<String>>> {
        self.headers.clone()
    }

    pub(crate) fn handed_out(&self) -> u64 {
        self.handed_out
    }

    /// Up to `max` items (and at most [`MAX_BATCH_BYTES`] of them, but at least one), in order.
    pub(crate) fn take(&mut self, max: usize) -> Take {
        let mut items = Vec::new();
        let mut bytes = 0;
        while items.len() < max.max(1) && bytes < MAX_BATCH_BYTES {
            match self.next() {
                Some(item) => {
                    bytes += item.size();
                    items.push(item);
                }
                None => break,
            }
        }
        if !items.is_empty() {
            self.handed_out += items.len() as u64;
            return Take::Items(items);
        }
        match self.definition.when_exhausted {
            WhenExhausted::StopUser => Take::Exhausted,
            WhenExhausted::Wait | WhenExhausted::Cycle => Take::Empty,
        }
    }

    /// Items that could not be sent after all: they are handed out first, in their order.
    pub(crate) fn give_back(&mut self, items: Vec<Item>) {
        self.handed_out -= items.len() as u64;
        for item in items.into_iter().rev() {
            self.returned.push_front(item);
        }
    }

    pub(crate) fn push(&mut self, item: Item) -> Result<(), DataError> {
        if self.pushed.len() >= MAX_PUSHED_ITEMS {
            return Err(DataError::PushFull {
                name: self.name.clone(),
                capacity: MAX_PUSHED_ITEMS,
            });
        }
        self.pushed.push_back(item);
        Ok(())
    }

    fn next(&mut self) -> Option<Item> {
        if let Some(item) = self.returned.pop_front() {
            return Some(item);
        }
        loop {
            if let Some(reader) = &mut self.reader {
                match reader.items.next() {
                    Some(Ok(item)) => {
                        self.yielded = true;
                        return Some(item);
                    }
                    Some(Err(error)) => {
                        tracing::error!(
                            "test data {:?}: {error}; the source hands out nothing more of it",
                            self.name
                        );
                        self.broken = true;
                        self.reader = None;
                    }
                    None => self.reader = None,
                }
            }
            if let Some(item) = self.pushed.pop_front() {
                return Some(item);
            }
            let start_over = self.definition.when_exhausted == WhenExhausted::Cycle
                && self.yielded
                && !self.broken;
            if (self.opened && !start_over) || self.broken {
                return None;
            }
            if self.opened {
                tracing::debug!("test data {:?}: starting over", self.name);
            }
            self.opened = true;
            self.yielded = false;
            match self.definition.open() {
                Ok(reader) => {
                    self.headers = reader.headers.clone().or(self.headers.take());
                    self.reader = Some(reader);
                }
                Err(error) => {
                    tracing::error!(
                        "test data {:?}: {error}; the source hands out nothing more of it",
                        self.name
                    );
                    self.broken = true;
                }
            }
        }
    }
}

/// Every source of the run, on the process that owns them.
pub(crate) struct Hub {
    sources: Vec<Mutex<HubSource>>,
    /// Master only: per (worker, source index), the number of the last request answered.
    answered: Mutex<HashMap<(String, usize), u64>>,
    /// Master only: items handed to each worker so far (for the log line when it leaves).
    given: Mutex<HashMap<String, u64>>,
}

impl Hub {
    pub(crate) fn new(sources: Vec<(String, DataSource)>) -> Hub {
        Hub {
            sources: sources
                .into_iter()
                .map(|(name, definition)| Mutex::new(HubSource::new(name, definition)))
                .collect(),
            answered: Mutex::new(HashMap::new()),
            given: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn source(&self, index: usize) -> MutexGuard<'_, HubSource> {
        self.sources[index]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a request (worker, source, number) is new; the caller answers it and then calls [`Hub::answered`].
    pub(crate) fn is_new_request(&self, worker: &str, index: usize, seq: u64) -> bool {
        let answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        answered
            .get(&(worker.to_string(), index))
            .is_none_or(|last| seq > *last)
    }

    pub(crate) fn answered(&self, worker: &str, index: usize, seq: u64, items: usize) {
        self.answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((worker.to_string(), index), seq);
        *self
            .given
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(worker.to_string())
            .or_default() += items as u64;
    }

    /// A worker is missing: it waits for nothing any more (it asks again when it is back).
    pub(crate) fn worker_missing(&self, worker: &str) {
        for index in 0..self.sources.len() {
            self.source(index).waiters.retain(|(w, _)| w != worker);
        }
    }

    /// A worker left: forget it. Answers the items it was handed in all.
    pub(crate) fn worker_gone(&self, worker: &str) -> u64 {
        self.worker_missing(worker);
        self.answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(w, _), _| w != worker);
        self.given
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(worker)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::source::ItemValue;

    fn numbers(take: Take) -> Vec<String> {
        match take {
            Take::Items(items) => items
                .into_iter()
                .map(|i| match i.value {
                    ItemValue::Json(text) => text,
                    ItemValue::Csv(fields) => fields.join(","),
                })
                .collect(),
            other => panic!("expected items, got {other:?}"),
        }
    }

    fn source(definition: DataSource) -> HubSource {
        HubSource::new("s".into(), definition)
    }

    #[test]
    fn items_go_out_once_in_order_then_the_policy_applies() {
        let mut stop = source(DataSource::iter(1..=5u32));
        assert_eq!(numbers(stop.take(2)), ["1", "2"]);
        assert_eq!(numbers(stop.take(10)), ["3", "4", "5"]);
        assert_eq!(stop.take(2), Take::Exhausted);
        assert_eq!(stop.handed_out(), 5);

        let mut wait = source(DataSource::iter(1..=2u32).when_exhausted(WhenExhausted::Wait));
        assert_eq!(numbers(wait.take(5)), ["1", "2"]);
        assert_eq!(wait.take(5), Take::Empty);
        wait.push(Item::from_value(0, &7).unwrap()).unwrap();
        assert_eq!(numbers(wait.take(5)), ["7"]);
        assert_eq!(wait.take(5), Take::Empty);

        let mut cycle = source(DataSource::iter(1..=3u32).when_exhausted(WhenExhausted::Cycle));
        assert_eq!(numbers(cycle.take(2)), ["1", "2"]);
        assert_eq!(numbers(cycle.take(2)), ["3", "1"]);
        assert_eq!(numbers(cycle.take(4)), ["2", "3", "1", "2"]);
    }

    #[test]
    fn an_empty_source_does_not_cycle_forever() {
        let mut empty =
            source(DataSource::iter(Vec::<u32>::new()).when_exhausted(WhenExhausted::Cycle));
        assert_eq!(empty.take(3), Take::Empty);
        assert_eq!(empty.take(3), Take::Empty);
        let mut pushed = source(DataSource::pushed().when_exhausted(WhenExhausted::Cycle));
        assert_eq!(pushed.take(3), Take::Empty);
        pushed.push(Item::from_value(0, &1).unwrap()).unwrap();
        assert_eq!(numbers(pushed.take(3)), ["1"]);
    }

    #[test]
    fn given_back_items_go_out_first_and_pushes_are_bounded() {
        let mut source = source(DataSource::iter(1..=4u32));
        let Take::Items(first) = source.take(2) else {
            panic!()
        };
        source.give_back(first);
        assert_eq!(source.handed_out(), 0);
        assert_eq!(numbers(source.take(3)), ["1", "2", "3"]);
        for _ in 0..MAX_PUSHED_ITEMS {
            source.push(Item::from_value(0, &0).unwrap()).unwrap();
        }
        assert!(matches!(
            source.push(Item::from_value(0, &0).unwrap()),
            Err(DataError::PushFull { .. })
        ));
    }

    #[test]
    fn a_request_is_answered_once_per_worker_and_forgotten_with_it() {
        let hub = Hub::new(vec![("s".into(), DataSource::iter(1..=4u32))]);
        assert!(hub.is_new_request("w1", 0, 1));
        hub.answered("w1", 0, 1, 2);
        assert!(!hub.is_new_request("w1", 0, 1));
        assert!(hub.is_new_request("w1", 0, 2));
        assert!(hub.is_new_request("w2", 0, 1));
        hub.source(0).waiters.push_back(("w1".into(), 2));
        assert_eq!(hub.worker_gone("w1"), 2);
        assert!(hub.source(0).waiters.is_empty());
        assert!(hub.is_new_request("w1", 0, 1));
    }

    #[test]
    fn a_batch_stops_at_its_byte_bound() {
        let big = "x".repeat(60 * 1024);
        let mut source = source(DataSource::iter(vec![big; 40]));
        let Take::Items(items) = source.take(40) else {
            panic!()
        };
        assert!(items.len() < 40 && items.len() >= 16, "{}", items.len());
    }
}
