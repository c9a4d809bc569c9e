//! User errors on their way out: the traceback text kept in the exceptions table, and the rate-limited log line.
//!
//! A bug in a task can repeat thousands of times a second; every occurrence is counted in the stats, but the log
//! gets at most one line per second for each distinct error (user type, message and location), and that line says
//! how many occurrences were left out since the previous one. At most [`MAX_TRACKED_ERRORS`] distinct errors are
//! tracked per user type; errors past that share one budget of a line per second.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Distinct errors a user type's log limiter tracks.
pub(crate) const MAX_TRACKED_ERRORS: usize = 1_024;
/// Least time between two log lines of the same error.
const LOG_INTERVAL: Duration = Duration::from_secs(1);
/// Frames of a backtrace kept in the exceptions table.
const MAX_FRAMES: usize = 24;

/// The key errors past [`MAX_TRACKED_ERRORS`] share.
const OVERFLOW_KEY: u64 = u64::MAX;

struct Tracked {
    last_logged: Instant,
    suppressed: u64,
}

/// Decides which user errors are logged.
pub(crate) struct ErrorLog {
    hasher: RandomState,
    tracked: Mutex<HashMap<u64, Tracked>>,
}

impl ErrorLog {
    pub(crate) fn new() -> Self {
        ErrorLog {
            hasher: RandomState::new(),
            tracked: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this occurrence of (`message`, `location`) is logged now: `Some(left out since the last line)`, or
    /// `None` when it is left out.
    pub(crate) fn admit(&self, message: &str, location: &str, now: Instant) -> Option<u64> {
        let key = self
            .hasher
            .hash_one((message, location))
            .min(OVERFLOW_KEY - 1);
        let mut tracked = self.tracked.lock().unwrap_or_else(|p| p.into_inner());
        let key = if tracked.contains_key(&key) || tracked.len() < MAX_TRACKED_ERRORS {
            key
        } else {
            OVERFLOW_KEY
        };
        match tracked.get_mut(&key) {
            Some(entry) if now.saturating_duration_since(entry.last_logged) < LOG_INTERVAL => {
                entry.suppressed += 1;
                None
            }
            Some(entry) => {
                entry.last_logged = now;
                Some(std::mem::take(&mut entry.suppressed))
            }
            None => {
                tracked.insert(
                    key,
                    Tracked {
                        last_logged: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// The frames of a captured backtrace that say where in the test an error came from: without the capture
/// machinery and error conversions above it, and without the runtime's frames below the task.
pub(crate) fn trimmed_backtrace(backtrace: &Backtrace) -> Option<String> {
    if backtrace.status() != BacktraceStatus::Captured {
        return None;
    }
    let text = backtrace.to_string();
    let mut frames: Vec<String> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let starts_frame = trimmed
            .split_once(": ")
            .is_some_and(|(number, _)| number.chars().all(|c| c.is_ascii_digit()));
        if starts_frame {
            frames.push(trimmed.to_string());
        } else if let Some(frame) = frames.last_mut() {
            frame.push_str("\n    ");
            frame.push_str(trimmed);
        }
    }
    let is_machinery = |frame: &str| {
        frame.contains("std::backtrace")
            || frame.contains("cicada::user::TaskError")
            || frame.contains("cicada::user::panic")
            || frame.contains("core::convert")
            || frame.contains("core::result")
            || frame.contains("core::panicking")
            || frame.contains("std::panicking")
            || frame.contains("std::panic")
            || frame.contains("rust_begin_unwind")
            || frame.contains("__rustc")
    };
    let kept: Vec<String> = frames
        .into_iter()
        .skip_while(|frame| is_machinery(frame))
        .take_while(|frame| !frame.contains("cicada::user::run::") && !frame.contains("tokio::"))
        .take(MAX_FRAMES)
        .collect();
    (!kept.is_empty()).then(|| kept.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_per_error_with_the_count_left_out() {
        let log = ErrorLog::new();
        let start = Instant::now();
        assert_eq!(log.admit("boom", "task a", start), Some(0));
        assert_eq!(log.admit("boom", "task a", start), None);
        assert_eq!(
            log.admit("boom", "task a", start + Duration::from_millis(500)),
            None
        );
        assert_eq!(
            log.admit("other", "task a", start),
            Some(0),
            "distinct errors do not share a budget"
        );
        assert_eq!(
            log.admit("boom", "task a", start + Duration::from_secs(1)),
            Some(2)
        );
        assert_eq!(
            log.admit("boom", "task a", start + Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn errors_past_the_bound_share_one_budget() {
        let log = ErrorLog::new();
        let now = Instant::now();
        for i in 0..MAX_TRACKED_ERRORS {
            assert!(log.admit(&format!("e{i}"), "", now).is_some());
        }
        assert_eq!(log.admit("new one", "", now), Some(0));
        assert_eq!(log.admit("another new one", "", now), None);
        assert!(log.tracked.lock().unwrap().len() <= MAX_TRACKED_ERRORS + 1);
    }

    #[test]
    fn backtraces_lose_their_machinery() {
        assert_eq!(trimmed_backtrace(&Backtrace::disabled()), None);
        let captured = Backtrace::force_capture();
        let text = trimmed_backtrace(&captured).unwrap_or_default();
        assert!(!text.contains("std::backtrace"), "{text}");
    }
}
