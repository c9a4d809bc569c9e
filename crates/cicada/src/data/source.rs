//! A distributed source's definition ([`DataSource`]: an iterator, a CSV or a JSON-lines file, or items pushed
//! while the test runs), what it does when it runs out ([`WhenExhausted`]), the readers that turn it into
//! [`Item`]s on the process that owns it, and the check of a file before any load is sent.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::DataError;

/// The largest item, in bytes (a CSV row's fields, a JSON line, an iterator's item as JSON): a file with a
/// larger one is refused before the run, naming the line.
pub const MAX_ITEM_BYTES: usize = 64 * 1024;
/// Items a worker asks for at once unless the source says otherwise ([`DataSource::batch_size`]).
pub const DEFAULT_BATCH_SIZE: usize = 32;
/// The largest batch a source may ask for.
pub const MAX_BATCH_SIZE: usize = 1024;
/// A batch stops growing at this many bytes (at least one item travels), so that it stays far under the
/// cluster's 4 MiB message bound.
pub(crate) const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// The largest file a source reads unless it says otherwise ([`DataSource::max_file_bytes`]).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1024 * 1024 * 1024;

/// What users get when a source has handed out every item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenExhausted {
    /// `next_item` stops the user (as `stop_user()` does): no item is handed out twice. The default.
    #[default]
    StopUser,
    /// `next_item` waits until more items are pushed ([`super::TestData::push`]) or the user is stopped.
    Wait,
    /// The source starts over from its first item (a file is read again, an iterator cloned anew); items
    /// pushed while it runs are handed out once, before it starts over.
    Cycle,
}

/// One item as it travels: where it came from (a file's line, an iterator's position) and its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Item {
    /// The line of a file (from 1), or the position in an iterator (from 1); 0 for a pushed item.
    pub(crate) at: u64,
    pub(crate) value: ItemValue,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ItemValue {
    /// A JSON document (a JSON line, an iterator's or a pushed item).
    Json(String),
    /// A CSV row's fields, read with the file's header row.
    Csv(Vec<String>),
}

impl Item {
    pub(crate) fn size(&self) -> usize {
        match &self.value {
            ItemValue::Json(text) => text.len(),
            ItemValue::Csv(fields) => fields.iter().map(|f| f.len() + 1).sum(),
        }
    }

    /// An item made from a serde value, as JSON.
    pub(crate) fn from_value<T: Serialize + ?Sized>(at: u64, value: &T) -> Result<Item, String> {
        let text = serde_json::to_string(value).map_err(|e| e.to_string())?;
        if text.len() > MAX_ITEM_BYTES {
            return Err(format!(
                "an item of {} bytes, more than the {MAX_ITEM_BYTES} bytes an item may have",
                text.len()
            ));
        }
        Ok(Item {
            at,
            value: ItemValue::Json(text),
        })
    }
}

/// Items as a source's reader yields them.
pub(crate) type ItemIter = Box<dyn Iterator<Item = Result<Item, DataError>> + Send>;

/// Where a source's items come from.
pub(crate) enum Origin {
    /// A clonable iterable: cloned anew at each start (so it can cycle).
    Iter(Box<dyn Fn() -> ItemIter + Send + Sync>),
    /// A one-shot iterator.
    Once(Mutex<Option<ItemIter>>),
    Csv(PathBuf),
    JsonLines(PathBuf),
    /// No items of its own: only what is pushed.
    Pushed,
}

/// An ordered source of items that the master (or the single process) owns and hands out, each item once, to
/// the users of every worker: `user.next_item::<T>(name)`. Register it with [`crate::Cicada::data_source`].
///
/// ```
/// use cicada::prelude::*;
///
/// #[derive(serde::Deserialize)]
/// struct Account {
///     username: String,
///     password: String,
/// }
///
/// async fn login(user: &mut User) -> TaskResult {
///     let account: Account = user.next_item("accounts").await?; // stops the user when none is left
///     user.post("/login")
///         .form(&[("username", account.username), ("password", account.password)])
///         .send()
///         .await?;
///     Ok(())
/// }
///
/// let test = Cicada::new()
///     .data_source("accounts", DataSource::csv("accounts.csv"))
///     .data_source("item_ids", DataSource::iter(1..=1000u64).when_exhausted(WhenExhausted::Cycle))
///     .user(UserType::<()>::new("Member").task(login));
/// ```
pub struct DataSource {
    pub(crate) origin: Origin,
    pub(crate) when_exhausted: WhenExhausted,
    pub(crate) batch_size: usize,
    pub(crate) max_file_bytes: u64,
}

impl std::fmt::Debug for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataSource")
            .field("origin", &self.label())
            .field("when_exhausted", &self.when_exhausted)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl DataSource {
    fn with(origin: Origin) -> DataSource {
        DataSource {
            origin,
            when_exhausted: WhenExhausted::default(),
            batch_size: DEFAULT_BATCH_SIZE,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }

    /// The items of a clonable iterable (a `Vec`, a range, a `map` over one with a closure that captures
    /// nothing), each sent as JSON. It is cloned anew each time the source starts (over), on the master only.
    pub fn iter<I>(items: I) -> DataSource
    where
        I: IntoIterator + Clone + Send + Sync + 'static,
        I::IntoIter: Send + 'static,
        I::Item: Serialize,
    {
        DataSource::with(Origin::Iter(Box::new(move || {
            json_items(items.clone().into_iter())
        })))
    }

    /// The items of a one-shot iterator (a database cursor, a generator), each sent as JSON. It cannot start
    /// over: [`WhenExhausted::Cycle`] is refused before the run.
    pub fn once<I>(items: I) -> DataSource
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        I::Item: Serialize,
    {
        DataSource::with(Origin::Once(Mutex::new(Some(json_items(
            items.into_iter(),
        )))))
    }

    /// The rows of a CSV file with a header row, decoded into the user's type with serde by column name.
    /// Read on the master only; checked whole before the run (a malformed row is an error naming its line).
    pub fn csv(path: impl Into<PathBuf>) -> DataSource {
        DataSource::with(Origin::Csv(path.into()))
    }

    /// The lines of a JSON-lines file (one JSON document a line; blank lines are skipped). Read on the master
    /// only; checked whole before the run.
    pub fn json_lines(path: impl Into<PathBuf>) -> DataSource {
        DataSource::with(Origin::JsonLines(path.into()))
    }

    /// No items of its own: only those pushed while the test runs ([`super::TestData::push`]). Usually with
    /// [`WhenExhausted::Wait`].
    pub fn pushed() -> DataSource {
        DataSource::with(Origin::Pushed)
    }

    /// What happens when every item was handed out (default [`WhenExhausted::StopUser`]).
    pub fn when_exhausted(mut self, when: WhenExhausted) -> DataSource {
        self.when_exhausted = when;
        self
    }

    /// Items a worker takes from the master at once (default 32, at most 1,024). A worker asks for the next batch
    /// when half of one is left, so it holds at most about two batches; smaller batches keep more of the order,
    /// larger ones cost fewer messages.
    pub fn batch_size(mut self, items: usize) -> DataSource {
        self.batch_size = items;
        self
    }

    /// The largest file this source accepts (default 1 GiB); a larger one is refused before the run.
    pub fn max_file_bytes(mut self, bytes: u64) -> DataSource {
        self.max_file_bytes = bytes;
        self
    }

    /// How logs and errors name it.
    pub(crate) fn label(&self) -> String {
        match &self.origin {
            Origin::Iter(_) => "an iterator".to_string(),
            Origin::Once(_) => "a one-shot iterator".to_string(),
            Origin::Csv(path) => path.display().to_string(),
            Origin::JsonLines(path) => path.display().to_string(),
            Origin::Pushed => "pushed items".to_string(),
        }
    }

    /// Check the source before the run: its settings, and a file whole (size, every row or line); answers how
    /// many items a file holds.
    pub(crate) fn check(&self, name: &str, read_files: bool) -> Result<Option<u64>, DataError> {
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return Err(DataError::BatchSize {
                name: name.to_string(),
                size: self.batch_size,
            });
        }
        if matches!(self.origin, Origin::Once(_)) && self.when_exhausted == WhenExhausted::Cycle {
            return Err(DataError::CannotCycle {
                name: name.to_string(),
            });
        }
        if !read_files {
            return Ok(None);
        }
        match &self.origin {
            Origin::Csv(_) | Origin::JsonLines(_) => {
                let mut count = 0;
                for item in self.open()?.items {
                    item?;
                    count += 1;
                }
                Ok(Some(count))
            }
            _ => Ok(None),
        }
    }

    /// Start reading from the first item.
    pub(crate) fn open(&self) -> Result<Reader, DataError> {
        match &self.origin {
            Origin::Iter(start) => Ok(Reader {
                items: start(),
                headers: None,
            }),
            Origin::Once(iter) => Ok(Reader {
                items: iter
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .unwrap_or_else(|| Box::new(std::iter::empty())),
                headers: None,
            }),
            Origin::Csv(path) => open_csv(path, self.max_file_bytes),
            Origin::JsonLines(path) => open_json_lines(path, self.max_file_bytes),
            Origin::Pushed => Ok(Reader {
                items: Box::new(std::iter::empty()),
                headers: None,
            }),
        }
    }
}

/// A source being read.
pub(crate) struct Reader {
    pub(crate) items: ItemIter,
    /// A CSV file's header row.
    pub(crate) headers: Option<Arc<Vec<String>>>,
}

fn json_items<I>(items: I) -> ItemIter
where
    I: Iterator + Send + 'static,
    I::Item: Serialize,
{
    Box::new(items.enumerate().map(|(index, item)| {
        let at = index as u64 + 1;
        Item::from_value(at, &item).map_err(|reason| DataError::Item {
            at: format!("item {at} of the iterator"),
            reason,
        })
    }))
}

/// Open a file, refusing one larger than `limit`.
pub(crate) fn open_file(path: &Path, limit: u64) -> Result<File, DataError> {
    let file = File::open(path).map_err(|error| DataError::Open {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })?;
    let size = file
        .metadata()
        .map_err(|error| DataError::Open {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?
        .len();
    if size > limit {
        return Err(DataError::TooBig {
            path: path.to_path_buf(),
            size,
            limit,
        });
    }
    Ok(file)
}

/// A CSV error as a line of the file.
pub(crate) fn csv_error(path: &Path, error: &csv::Error) -> DataError {
    let line = error.position().map_or(0, csv::Position::line);
    let reason = match error.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields where the header row has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_string(),
        csv::ErrorKind::Deserialize { err, .. } => err.to_string(),
        _ => error.to_string(),
    };
    DataError::Malformed {
        path: path.to_path_buf(),
        line,
        reason,
    }
}

fn open_csv(path: &Path, limit: u64) -> Result<Reader, DataError> {
    let file = open_file(path, limit)?;
    let mut reader = csv::Reader::from_reader(BufReader::new(file));
    let headers = reader
        .headers()
        .map_err(|error| csv_error(path, &error))?
        .iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    if headers.is_empty() {
        return Err(DataError::Malformed {
            path: path.to_path_buf(),
            line: 1,
            reason: "no header row: the first line names the columns".to_string(),
        });
    }
    let path = path.to_path_buf();
    let items = reader.into_records().map(move |record| {
        let record = record.map_err(|error| csv_error(&path, &error))?;
        let line = record.position().map_or(0, csv::Position::line);
        let item = Item {
            at: line,
            value: ItemValue::Csv(record.iter().map(str::to_string).collect()),
        };
        if item.size() > MAX_ITEM_BYTES {
            return Err(DataError::Malformed {
                path: path.clone(),
                line,
                reason: format!(
                    "a row of {} bytes, more than the {MAX_ITEM_BYTES} bytes an item may have",
                    item.size()
                ),
            });
        }
        Ok(item)
    });
    Ok(Reader {
        items: Box::new(items),
        headers: Some(Arc::new(headers)),
    })
}

fn open_json_lines(path: &Path, limit: u64) -> Result<Reader, DataError> {
    let file = open_file(path, limit)?;
    Ok(Reader {
        items: Box::new(JsonLines {
            reader: BufReader::new(file),
            path: path.to_path_buf(),
            line: 0,
            buffer: Vec::new(),
            failed: false,
        }),
        headers: None,
    })
}

/// A JSON-lines file, one line at a time, never holding more than one item's bytes (a longer line is an error,
/// not an allocation).
struct JsonLines {
    reader: BufReader<File>,
    path: PathBuf,
    line: u64,
    buffer: Vec<u8>,
    failed: bool,
}

impl JsonLines {
    fn error(&mut self, reason: String) -> Option<Result<Item, DataError>> {
        self.failed = true;
        Some(Err(DataError::Malformed {
            path: self.path.clone(),
            line: self.line,
            reason,
        }))
    }
}

impl Iterator for JsonLines {
    type Item = Result<Item, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            self.line += 1;
            self.buffer.clear();
            let (read, complete) =
                match read_bounded_line(&mut self.reader, &mut self.buffer, MAX_ITEM_BYTES) {
                    Ok(read) => read,
                    Err(error) => return self.error(error.to_string()),
                };
            if read == 0 {
                return None;
            }
            if !complete {
                return self.error(format!(
                    "a line longer than the {MAX_ITEM_BYTES} bytes an item may have"
                ));
            }
            let Ok(text) = std::str::from_utf8(&self.buffer) else {
                return self.error("not valid UTF-8".to_string());
            };
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            if let Err(error) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
                return self.error(format!("not a JSON document: {error}"));
            }
            return Some(Ok(Item {
                at: self.line,
                value: ItemValue::Json(text.to_string()),
            }));
        }
    }
}

/// Read one line (without its newline) into `buffer`, keeping at most `limit` bytes: answers the bytes read from
/// the file (0 at its end) and whether the line fit.
fn read_bounded_line(
    reader: &mut impl BufRead,
    buffer: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<(usize, bool)> {
    let mut read = 0;
    let mut fits = true;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok((read, fits));
        }
        let (chunk, found_newline) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..end], true),
            None => (available, false),
        };
        if fits && buffer.len() + chunk.len() <= limit {
            buffer.extend_from_slice(chunk);
        } else {
            fits = false;
        }
        let consumed = chunk.len() + usize::from(found_newline);
        reader.consume(consumed);
        read += consumed;
        if found_newline {
            return Ok((read, fits));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file
    }

    fn values(source: &DataSource) -> Vec<ItemValue> {
        source
            .open()
            .unwrap()
            .items
            .map(|i| i.unwrap().value)
            .collect()
    }

    #[test]
    fn an_iterator_is_read_as_json_and_cloned_at_each_start() {
        let source = DataSource::iter(vec![1u32, 2, 3]);
        let expected = vec![
            ItemValue::Json("1".into()),
            ItemValue::Json("2".into()),
            ItemValue::Json("3".into()),
        ];
        assert_eq!(values(&source), expected);
        assert_eq!(values(&source), expected);
        let once = DataSource::once(vec!["a"]);
        assert_eq!(values(&once), vec![ItemValue::Json("\"a\"".into())]);
        assert_eq!(values(&once), vec![]);
    }

    #[test]
    fn a_csv_file_is_read_with_its_header_and_lines() {
        let csv = file("username,password\nalice,a1\n\"bob, jr\",b2\n");
        let source = DataSource::csv(csv.path());
        assert_eq!(source.check("accounts", true).unwrap(), Some(2));
        let reader = source.open().unwrap();
        assert_eq!(
            reader.headers.as_deref().unwrap(),
            &vec!["username".to_string(), "password".to_string()]
        );
        let items: Vec<Item> = reader.items.map(Result::unwrap).collect();
        assert_eq!(items[0].at, 2);
        assert_eq!(
            items[1].value,
            ItemValue::Csv(vec!["bob, jr".into(), "b2".into()])
        );
    }

    #[test]
    fn a_malformed_csv_row_names_its_file_and_line() {
        let csv = file("a,b\n1,2\n3,4\n5\n");
        let error = DataSource::csv(csv.path())
            .check("x", true)
            .unwrap_err()
            .to_string();
        assert!(error.contains(&csv.path().display().to_string()), "{error}");
        assert!(error.contains("line 4"), "{error}");
        assert!(
            error.contains("1 fields where the header row has 2"),
            "{error}"
        );
    }

    #[test]
    fn json_lines_are_checked_line_by_line() {
        let good = file("{\"id\":1}\n\n{\"id\":2}\n");
        assert_eq!(
            DataSource::json_lines(good.path())
                .check("x", true)
                .unwrap(),
            Some(2)
        );
        let bad = file("{\"id\":1}\n{\"id\":\n");
        let error = DataSource::json_lines(bad.path())
            .check("x", true)
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 2"), "{error}");
        let long = file(&format!("\"{}\"\n1\n", "x".repeat(MAX_ITEM_BYTES + 10)));
        let error = DataSource::json_lines(long.path())
            .check("x", true)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 1") && error.contains("longer"),
            "{error}"
        );
    }

    #[test]
    fn a_file_over_its_limit_or_missing_is_refused() {
        let csv = file("a\n1\n2\n");
        let error = DataSource::csv(csv.path())
            .max_file_bytes(3)
            .check("x", true)
            .unwrap_err();
        assert!(matches!(
            error,
            DataError::TooBig {
                size: 6,
                limit: 3,
                ..
            }
        ));
        let missing = DataSource::csv("/nonexistent/accounts.csv").check("x", true);
        assert!(matches!(missing, Err(DataError::Open { .. })));
        // A worker does not read the file: the master does.
        assert_eq!(
            DataSource::csv("/nonexistent/accounts.csv")
                .check("x", false)
                .unwrap(),
            None
        );
    }

    #[test]
    fn settings_are_checked() {
        assert!(matches!(
            DataSource::iter(vec![1]).batch_size(0).check("x", false),
            Err(DataError::BatchSize { .. })
        ));
        assert!(matches!(
            DataSource::once(vec![1])
                .when_exhausted(WhenExhausted::Cycle)
                .check("x", false),
            Err(DataError::CannotCycle { .. })
        ));
    }

    #[test]
    fn a_bounded_line_never_keeps_more_than_its_limit() {
        let mut reader = std::io::Cursor::new(b"abcdefgh\nxy\nlast".to_vec());
        let mut buffer = Vec::new();
        assert_eq!(
            read_bounded_line(&mut reader, &mut buffer, 4).unwrap(),
            (9, false)
        );
        assert!(buffer.len() <= 4);
        buffer.clear();
        assert_eq!(
            read_bounded_line(&mut reader, &mut buffer, 4).unwrap(),
            (3, true)
        );
        assert_eq!(buffer, b"xy");
        buffer.clear();
        assert_eq!(
            read_bounded_line(&mut reader, &mut buffer, 4).unwrap(),
            (4, true)
        );
        assert_eq!(buffer, b"last");
        buffer.clear();
        assert_eq!(
            read_bounded_line(&mut reader, &mut buffer, 4).unwrap(),
            (0, true)
        );
    }
}
