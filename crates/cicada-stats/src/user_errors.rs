//! The bounded table of user errors (a task returned an error or panicked), grouped by
//! `(message, location)`. Not on the hot path: it lives behind a mutex.
//!
//! A group's user type is the least (in string order) of the user types that raised it, so
//! that it does not depend on the order in which occurrences arrive (threads, or the deltas of
//! several processes).

use hashbrown::HashMap;

use crate::OTHER_USER_ERRORS;
use crate::keys::{MAX_KEY_TEXT, PairKey, PairKeyRef, clip};
use crate::snapshot::UserErrorStats;

/// Longest user-error message or location kept, in bytes (a backtrace fits); longer ones
/// are cut, and group by the kept part.
const MAX_USER_ERROR_TEXT: usize = 4 * 1_024;

/// Counts user errors per `(message, location)`, at most `cap` groups; later groups are
/// counted in `over_cap`.
pub(crate) struct UserErrorTable {
    cap: usize,
    index: HashMap<PairKey, usize>,
    groups: Vec<UserErrorStats>,
    over_cap: u64,
    warned: bool,
}

impl UserErrorTable {
    pub(crate) fn new(cap: usize) -> Self {
        UserErrorTable {
            cap,
            index: HashMap::new(),
            groups: Vec::new(),
            over_cap: 0,
            warned: false,
        }
    }

    pub(crate) fn record(&mut self, user_type: &str, message: &str, location: &str) {
        self.record_n(user_type, message, location, 1);
    }

    /// Counts `count` occurrences of one error.
    pub(crate) fn record_n(&mut self, user_type: &str, message: &str, location: &str, count: u64) {
        if count == 0 {
            return;
        }
        let user_type = clip(user_type, MAX_KEY_TEXT);
        let message = clip(message, MAX_USER_ERROR_TEXT);
        let location = clip(location, MAX_USER_ERROR_TEXT);
        let key = PairKeyRef {
            first: message,
            second: location,
        };
        if let Some(&position) = self.index.get(&key) {
            let group = &mut self.groups[position];
            group.count = group.count.saturating_add(count);
            if *user_type < *group.user_type {
                user_type.clone_into(&mut group.user_type);
            }
            return;
        }
        if self.groups.len() >= self.cap {
            self.add_over_cap(count);
        } else {
            self.index.insert(key.to_owned_key(), self.groups.len());
            self.groups.push(UserErrorStats {
                count,
                message: message.to_owned(),
                traceback: location.to_owned(),
                user_type: user_type.to_owned(),
            });
        }
    }

    /// Counts `count` occurrences in the group past the cap.
    pub(crate) fn add_over_cap(&mut self, count: u64) {
        if count == 0 {
            return;
        }
        self.over_cap = self.over_cap.saturating_add(count);
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                max_user_errors = self.cap,
                "more distinct user errors than max_user_errors; further ones are counted \
                 under \"{OTHER_USER_ERRORS}\""
            );
        }
    }

    /// The groups in the order they were registered (an index never changes until `clear`).
    pub(crate) fn groups(&self) -> &[UserErrorStats] {
        &self.groups
    }

    /// Groups, most frequent first, then the overflow group if it counted anything.
    pub(crate) fn to_stats(&self) -> Vec<UserErrorStats> {
        let mut groups = self.groups.clone();
        groups.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.message.cmp(&b.message))
                .then_with(|| a.traceback.cmp(&b.traceback))
        });
        if self.over_cap > 0 {
            groups.push(UserErrorStats {
                count: self.over_cap,
                message: OTHER_USER_ERRORS.to_owned(),
                traceback: String::new(),
                user_type: String::new(),
            });
        }
        groups
    }

    pub(crate) fn over_cap(&self) -> u64 {
        self.over_cap
    }

    pub(crate) fn clear(&mut self) {
        *self = UserErrorTable::new(self.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_message_and_location_within_cap() {
        let mut table = UserErrorTable::new(2);
        table.record("Shopper", "boom", "tasks.rs:10");
        table.record("Visitor", "boom", "tasks.rs:10");
        table.record("Shopper", "boom", "tasks.rs:20");
        table.record("Browser", "other", "tasks.rs:30");
        table.record("Browser", "yet another", "tasks.rs:40");
        let stats = table.to_stats();
        assert_eq!(stats.len(), 3);
        assert_eq!(
            (stats[0].count, &*stats[0].message, &*stats[0].traceback),
            (2, "boom", "tasks.rs:10")
        );
        // The least user type of the group, whichever came first.
        assert_eq!(stats[0].user_type, "Shopper");
        table.record("Admin", "boom", "tasks.rs:10");
        assert_eq!(table.to_stats()[0].user_type, "Admin");
        assert_eq!((stats[2].count, &*stats[2].message), (2, OTHER_USER_ERRORS));
        assert_eq!(table.over_cap(), 2);
        table.clear();
        assert!(table.to_stats().is_empty());
    }
}
