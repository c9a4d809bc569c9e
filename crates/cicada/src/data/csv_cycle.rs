//! [`CsvCycle`]: per-user data from a CSV file that each process cycles through on its own (no master involved):
//! rows decoded into the test's type once, when the file is opened, then handed out round-robin to the users
//! that share it.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::de::DeserializeOwned;

use super::DataError;
use super::source::{csv_error, open_file};

/// The largest file [`CsvCycle::open`] reads (every row is kept in memory, decoded).
pub const DEFAULT_CSV_CYCLE_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The rows of a CSV file with a header row, decoded into `T` by column name, handed out in order and from the
/// start again after the last: `accounts.next()`. Cheap to clone; clones share the position, so the users of a
/// process that share one get the rows in turn. Each process (each worker) reads its own copy of the file.
///
/// ```no_run
/// use cicada::prelude::*;
///
/// #[derive(Clone, Default, serde::Deserialize)]
/// struct Account {
///     username: String,
///     password: String,
/// }
///
/// async fn login(user: &mut User<Account>) -> TaskResult {
///     let form = [("username", user.state.username.clone()), ("password", user.state.password.clone())];
///     user.post("/login").form(&form).send().await?;
///     Ok(())
/// }
///
/// fn main() -> std::process::ExitCode {
///     // A missing or malformed file is an error naming the file and the line, before any load is sent.
///     let accounts = match CsvCycle::<Account>::open("accounts.csv") {
///         Ok(accounts) => accounts,
///         Err(error) => {
///             eprintln!("error: {error}");
///             return std::process::ExitCode::from(cicada::EXIT_USAGE);
///         }
///     };
///     Cicada::new()
///         .user(UserType::with_state("Member", move || accounts.next().clone()).task(login))
///         .run()
/// }
/// ```
pub struct CsvCycle<T> {
    rows: Arc<[T]>,
    next: Arc<AtomicUsize>,
    path: Arc<Path>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for CsvCycle<T> {
    fn clone(&self) -> Self {
        CsvCycle {
            rows: self.rows.clone(),
            next: self.next.clone(),
            path: self.path.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for CsvCycle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvCycle")
            .field("path", &self.path)
            .field("rows", &self.rows.len())
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> CsvCycle<T> {
    /// Read and decode every row of `path` (at most [`DEFAULT_CSV_CYCLE_MAX_BYTES`]).
    pub fn open(path: impl AsRef<Path>) -> Result<CsvCycle<T>, DataError> {
        Self::open_with_limit(path, DEFAULT_CSV_CYCLE_MAX_BYTES)
    }

    /// Read and decode every row of a file of at most `max_bytes`.
    pub fn open_with_limit(
        path: impl AsRef<Path>,
        max_bytes: u64,
    ) -> Result<CsvCycle<T>, DataError> {
        let path = path.as_ref();
        let file = open_file(path, max_bytes)?;
        let mut reader = csv::Reader::from_reader(std::io::BufReader::new(file));
        let headers = reader.headers().map_err(|e| csv_error(path, &e))?.clone();
        let mut rows = Vec::new();
        let mut record = csv::StringRecord::new();
        loop {
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {
                    let row = record
                        .deserialize::<T>(Some(&headers))
                        .map_err(|e| csv_error(path, &e))?;
                    rows.push(row);
                }
                Err(error) => return Err(csv_error(path, &error)),
            }
        }
        if rows.is_empty() {
            return Err(DataError::NoRows {
                path: PathBuf::from(path),
            });
        }
        Ok(CsvCycle {
            rows: rows.into(),
            next: Arc::new(AtomicUsize::new(0)),
            path: Arc::from(path),
            _type: PhantomData,
        })
    }
}

impl<T> CsvCycle<T> {
    /// The next row, and after the last the first again. Lock-free; the row is borrowed (clone what you keep).
    pub fn next(&self) -> &T {
        let position = self.next.fetch_add(1, Ordering::Relaxed);
        &self.rows[position % self.rows.len()]
    }

    /// How many rows the file has.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Never true: a file without rows is refused when opened.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
    struct Account {
        username: String,
        age: u32,
    }

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file
    }

    #[test]
    fn rows_cycle_in_order_across_clones() {
        let csv = file("age,username\n30,alice\n40,bob\n");
        let cycle = CsvCycle::<Account>::open(csv.path()).unwrap();
        let shared = cycle.clone();
        assert_eq!(cycle.len(), 2);
        assert_eq!(cycle.next().username, "alice");
        assert_eq!(shared.next().username, "bob");
        assert_eq!(
            cycle.next(),
            &Account {
                username: "alice".into(),
                age: 30
            }
        );
    }

    #[test]
    fn a_row_that_does_not_decode_names_its_file_and_line() {
        let csv = file("username,age\nalice,30\nbob,forty\n");
        let error = CsvCycle::<Account>::open(csv.path())
            .unwrap_err()
            .to_string();
        assert!(error.contains(&csv.path().display().to_string()), "{error}");
        assert!(error.contains("line 3"), "{error}");
        let short = file("username,age\nalice\n");
        let error = CsvCycle::<Account>::open(short.path())
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn an_empty_big_or_missing_file_is_refused() {
        let empty = file("username,age\n");
        assert!(matches!(
            CsvCycle::<Account>::open(empty.path()),
            Err(DataError::NoRows { .. })
        ));
        let csv = file("username,age\nalice,30\n");
        assert!(matches!(
            CsvCycle::<Account>::open_with_limit(csv.path(), 4),
            Err(DataError::TooBig { .. })
        ));
        assert!(matches!(
            CsvCycle::<Account>::open("/nonexistent/users.csv"),
            Err(DataError::Open { .. })
        ));
    }
}
