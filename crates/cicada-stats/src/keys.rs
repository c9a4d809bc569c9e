//! Owned hash-map keys and their borrowed twins, plus the capped registries that hand out
//! global ids for them.
//!
//! Hot-path lookups use the borrowed twin through [`hashbrown::Equivalent`], so finding an
//! already-seen `(method, name)` hashes two `&str` and allocates nothing. Both twins derive
//! `Hash` over the same field sequence (`Box<str>` and `&str` hash like `str`), which is what
//! makes the lookup sound.

use std::sync::Arc;

use hashbrown::{Equivalent, HashMap};

/// An owned pair of strings: `(method, name)` of an entry, or `(message, location)` of a user
/// error.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct PairKey {
    pub(crate) first: Box<str>,
    pub(crate) second: Box<str>,
}

impl PairKey {
    /// The borrowed twin, which hashes identically.
    pub(crate) fn borrowed(&self) -> PairKeyRef<'_> {
        PairKeyRef {
            first: &self.first,
            second: &self.second,
        }
    }
}

/// Borrowed form of [`PairKey`].
#[derive(Clone, Copy, Debug, Hash)]
pub(crate) struct PairKeyRef<'a> {
    pub(crate) first: &'a str,
    pub(crate) second: &'a str,
}

impl PairKeyRef<'_> {
    pub(crate) fn to_owned_key(self) -> PairKey {
        PairKey {
            first: self.first.into(),
            second: self.second.into(),
        }
    }
}

impl Equivalent<PairKey> for PairKeyRef<'_> {
    #[inline]
    fn equivalent(&self, key: &PairKey) -> bool {
        same_text(&key.second, self.second) && same_text(&key.first, self.first)
    }
}

/// Longest method, name or error text kept, in bytes; longer ones are cut (at a character
/// boundary) before lookup, so texts sharing the first 1 KiB count as one.
pub(crate) const MAX_KEY_TEXT: usize = 1_024;

/// `text` cut to at most `max` bytes at a character boundary.
#[inline]
pub(crate) fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        text
    } else {
        &text[..text.floor_char_boundary(max)]
    }
}

/// String equality tuned for the short keys of the hot path: compares 8-byte words inline
/// where `==` would call `memcmp`, whose call overhead dominated the lookup in profiles.
#[inline]
pub(crate) fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let length = a.len();
    if length < 8 {
        return a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0;
    }
    let word = |bytes: &[u8], at: usize| {
        u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8-byte slice"))
    };
    let mut at = 0;
    while at + 8 < length {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    // The last word overlaps the previous one when the length is not a multiple of 8.
    word(a, length - 8) == word(b, length - 8)
}

/// An owned failure-group key: global entry id and error text.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct FailureKey {
    pub(crate) entry: u32,
    pub(crate) error: Box<str>,
}

/// Borrowed form of [`FailureKey`].
#[derive(Clone, Copy, Debug, Hash)]
pub(crate) struct FailureKeyRef<'a> {
    pub(crate) entry: u32,
    pub(crate) error: &'a str,
}

impl FailureKeyRef<'_> {
    pub(crate) fn to_owned_key(self) -> FailureKey {
        FailureKey {
            entry: self.entry,
            error: self.error.into(),
        }
    }
}

impl Equivalent<FailureKey> for FailureKeyRef<'_> {
    #[inline]
    fn equivalent(&self, key: &FailureKey) -> bool {
        key.entry == self.entry && same_text(&key.error, self.error)
    }
}

/// A key-to-id map frozen once its registry is full; shards look unknown keys up in it
/// without taking the registry lock.
pub(crate) type FrozenIds<K> = Arc<HashMap<K, u32>>;

/// Outcome of [`CappedRegistry::register`].
pub(crate) enum Registration<K> {
    /// The key has this id (newly assigned or already known).
    Id(u32),
    /// The registry is full and the key is not in it; the frozen map is returned so the
    /// caller can resolve later keys without the lock.
    Full(FrozenIds<K>),
}

/// Assigns dense ids to at most `cap` distinct keys. Ids below `reserved.len()` are fixed
/// placeholders (the overflow entry) that are never looked up by key.
pub(crate) struct CappedRegistry<K> {
    cap: usize,
    ids: HashMap<K, u32>,
    /// Set when `ids` reached `cap`; from then on the map never changes until [`Self::clear`].
    frozen: Option<FrozenIds<K>>,
    /// Key of every id, for the aggregate to name what it merges.
    keys_by_id: Vec<K>,
    reserved: usize,
}

impl<K: std::hash::Hash + Eq + Clone> CappedRegistry<K> {
    /// A registry whose first ids belong to `reserved` placeholder keys.
    pub(crate) fn new(cap: usize, reserved: Vec<K>) -> Self {
        // Ids are u32 (half the size of usize in shard maps); a cap beyond that is a
        // misconfiguration, so it is quietly lowered.
        let cap = cap.min(u32::MAX as usize - reserved.len());
        let mut registry = CappedRegistry {
            cap,
            ids: HashMap::new(),
            frozen: None,
            reserved: reserved.len(),
            keys_by_id: reserved,
        };
        registry.freeze_if_full();
        registry
    }

    /// The id of `key`, registering it while there is room.
    pub(crate) fn register<Q>(&mut self, key: &Q, to_owned: impl FnOnce(&Q) -> K) -> Registration<K>
    where
        Q: std::hash::Hash + Equivalent<K> + ?Sized,
    {
        if let Some(frozen) = &self.frozen {
            return match frozen.get(key) {
                Some(&id) => Registration::Id(id),
                None => Registration::Full(Arc::clone(frozen)),
            };
        }
        if let Some(&id) = self.ids.get(key) {
            return Registration::Id(id);
        }
        let owned = to_owned(key);
        // Fits: `new` limits the cap so that every id stays within u32.
        let id = self.keys_by_id.len() as u32;
        self.keys_by_id.push(owned.clone());
        self.ids.insert(owned, id);
        self.freeze_if_full();
        Registration::Id(id)
    }

    fn freeze_if_full(&mut self) {
        if self.frozen.is_none() && self.ids.len() >= self.cap {
            self.frozen = Some(Arc::new(std::mem::take(&mut self.ids)));
        }
    }

    /// The frozen map, once the registry is full.
    pub(crate) fn frozen(&self) -> Option<FrozenIds<K>> {
        self.frozen.clone()
    }

    /// Whether the cap is reached.
    pub(crate) fn is_full(&self) -> bool {
        self.frozen.is_some()
    }

    /// Key of `id`.
    pub(crate) fn key(&self, id: u32) -> Option<&K> {
        self.keys_by_id.get(id as usize)
    }

    /// Forget every registered key (the reserved placeholders stay).
    pub(crate) fn clear(&mut self) {
        self.keys_by_id.truncate(self.reserved);
        self.ids = HashMap::new();
        self.frozen = None;
        self.freeze_if_full();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(first: &str, second: &str) -> PairKeyRef<'static> {
        PairKeyRef {
            first: Box::leak(first.into()),
            second: Box::leak(second.into()),
        }
    }

    #[test]
    fn borrowed_key_finds_owned_key() {
        let mut map: HashMap<PairKey, u32> = HashMap::new();
        map.insert(pair("GET", "/a").to_owned_key(), 7);
        assert_eq!(map.get(&pair("GET", "/a")), Some(&7));
        assert_eq!(map.get(&pair("GE", "T/a")), None);
        let mut failures: HashMap<FailureKey, u32> = HashMap::new();
        let key = FailureKeyRef {
            entry: 3,
            error: "boom",
        };
        failures.insert(key.to_owned_key(), 1);
        assert_eq!(failures.get(&key), Some(&1));
    }

    #[test]
    fn same_text_agrees_with_equality() {
        let texts = [
            "",
            "a",
            "b",
            "GET",
            "POST",
            "/item/1",
            "/item/2",
            "/item/[id]",
            "/item/[id]x",
            "/exactly/16bytes",
            "/exactly/16bytez",
            "/api/v1/items/[id]/reviews",
            "é",
            "ê",
        ];
        for a in texts {
            for b in texts {
                assert_eq!(same_text(a, b), a == b, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn clipping_respects_character_boundaries() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip(&"x".repeat(2_000), MAX_KEY_TEXT).len(), MAX_KEY_TEXT);
    }

    #[test]
    fn registry_freezes_at_cap_and_clears() {
        let placeholder = pair("", "overflow").to_owned_key();
        let mut registry = CappedRegistry::new(2, vec![placeholder]);
        let id = |registry: &mut CappedRegistry<PairKey>, name: &str| match registry
            .register(&pair("GET", name), |key| key.to_owned_key())
        {
            Registration::Id(id) => Some(id),
            Registration::Full(_) => None,
        };
        assert_eq!(id(&mut registry, "/a"), Some(1));
        assert!(!registry.is_full());
        assert_eq!(id(&mut registry, "/b"), Some(2));
        assert!(registry.is_full());
        assert_eq!(id(&mut registry, "/a"), Some(1));
        assert_eq!(id(&mut registry, "/c"), None);
        assert_eq!(registry.key(2).map(|key| &*key.second), Some("/b"));
        registry.clear();
        assert!(!registry.is_full());
        assert_eq!(id(&mut registry, "/c"), Some(1));
    }

    #[test]
    fn zero_cap_is_full_from_the_start() {
        let registry: CappedRegistry<PairKey> = CappedRegistry::new(0, Vec::new());
        assert!(registry.is_full());
    }
}
