//! Login sessions issued by one server instance, in a map bounded by evicting
//! the oldest issued session, so a long load test cannot grow it without end.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

/// Sessions kept at most; beyond it the oldest issued one is forgotten.
pub(crate) const MAX_SESSIONS: usize = 100_000;

/// Session token → user name, plus issue order for eviction.
#[derive(Debug)]
pub(crate) struct SessionStore {
    users: HashMap<String, String>,
    /// Tokens in issue order. Logged-out tokens stay here until evicted, which
    /// keeps this queue (and so the map, a subset of it) within `capacity`.
    issue_order: VecDeque<String>,
    capacity: usize,
    /// Random per instance, so another server's tokens are never valid here.
    instance_tag: u64,
    issued: u64,
}

impl SessionStore {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            users: HashMap::new(),
            issue_order: VecDeque::new(),
            capacity: capacity.max(1),
            instance_tag: RandomState::new().hash_one(0u8),
            issued: 0,
        }
    }

    /// Issues a URL-safe token for `user`, evicting the oldest session at the cap.
    pub(crate) fn issue(&mut self, user: &str) -> String {
        while self.issue_order.len() >= self.capacity {
            if let Some(oldest) = self.issue_order.pop_front() {
                self.users.remove(&oldest);
            }
        }
        self.issued += 1;
        let token = format!(
            "u-{}-{:x}-{}",
            url_safe_prefix(user),
            self.instance_tag,
            self.issued
        );
        self.users.insert(token.clone(), user.to_owned());
        self.issue_order.push_back(token.clone());
        token
    }

    pub(crate) fn user(&self, token: &str) -> Option<&str> {
        self.users.get(token).map(String::as_str)
    }

    pub(crate) fn revoke(&mut self, token: &str) {
        self.users.remove(token);
    }
}

/// Up to 32 characters of `user` with everything but `[A-Za-z0-9_]` as `_`;
/// the token stays readable in traces yet safe in a cookie and a URL.
fn url_safe_prefix(user: &str) -> String {
    user.chars()
        .take(32)
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_distinct_url_safe_tokens() {
        let mut store = SessionStore::new(10);
        let first = store.issue("al ice;=");
        let second = store.issue("al ice;=");
        assert_ne!(first, second);
        assert!(first.starts_with("u-al_ice__-"));
        assert!(
            first
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(store.user(&first), Some("al ice;="));
    }

    #[test]
    fn other_instances_tokens_are_unknown() {
        let mut one = SessionStore::new(10);
        let other = SessionStore::new(10);
        let token = one.issue("bob");
        assert_eq!(other.user(&token), None);
    }

    #[test]
    fn evicts_oldest_at_capacity() {
        let mut store = SessionStore::new(2);
        let a = store.issue("a");
        let b = store.issue("b");
        let c = store.issue("c");
        assert_eq!(store.user(&a), None);
        assert_eq!(store.user(&b), Some("b"));
        assert_eq!(store.user(&c), Some("c"));
    }

    #[test]
    fn revoke_and_churn_stay_bounded() {
        let mut store = SessionStore::new(3);
        for _ in 0..100 {
            let token = store.issue("x");
            store.revoke(&token);
            assert_eq!(store.user(&token), None);
        }
        assert!(store.issue_order.len() <= 3);
        assert!(store.users.is_empty());
    }
}
