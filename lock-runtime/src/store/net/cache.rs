//! The one bounded cache of the crate, with one eviction policy.
//!
//! Used where forgetting is always safe and only costs a little: RavenDB's
//! known keys (a forgotten key costs one read before a write), etcd's
//! observations (a forgotten one costs one read before a watch) and the lock
//! client's takeover observations (a forgotten one restarts the holder's ttl
//! count: it delays a takeover, never hastens it).
//!
//! **Policy: two generations.** Entries live in a young and an old map of at most
//! `capacity / 2` keys each. Reading ([`BoundedCache::get`],
//! [`BoundedCache::get_mut`]) or writing a key moves it into the young map. When
//! a new key finds the young map full, the old map is dropped whole, the young
//! one becomes the old one, and a fresh young map starts. So the cache never
//! holds more than `capacity` keys, a key used at least once every
//! `capacity / 2` insertions of other keys is never dropped, and a key left
//! unused is dropped within `capacity` insertions of other keys. Every
//! operation is O(1) (amortized), with no clock and no per-entry bookkeeping;
//! the memory of a dropped generation is given back.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use foldhash::fast::RandomState;

/// A map of at most `capacity` entries that drops the least recently used
/// generation when full (see the module docs). Not synchronized: the owner
/// puts it behind its own lock.
#[derive(Debug)]
pub(crate) struct BoundedCache<K, V, S = RandomState> {
    young: HashMap<K, V, S>,
    old: HashMap<K, V, S>,
    generation: usize,
}

impl<K: Hash + Eq, V> BoundedCache<K, V> {
    /// A cache of at most `capacity` entries (at least 2).
    pub(crate) fn new(capacity: usize) -> Self {
        BoundedCache {
            young: HashMap::default(),
            old: HashMap::default(),
            generation: (capacity / 2).max(1),
        }
    }
}

impl<K: Hash + Eq, V, S: BuildHasher + Default> BoundedCache<K, V, S> {
    #[cfg(test)]
    /// The most entries it holds.
    pub(crate) fn capacity(&self) -> usize {
        self.generation * 2
    }

    #[cfg(test)]
    /// How many entries it holds now.
    pub(crate) fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Whether it holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.young.is_empty() && self.old.is_empty()
    }

    #[cfg_attr(not(any(feature = "etcd", feature = "ravendb")), allow(dead_code))]
    /// The value at `key`, marking it used.
    pub(crate) fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_mut(key).map(|value| &*value)
    }

    /// The value at `key`, mutably, marking it used.
    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.young.contains_key(key) {
            let (key, value) = self.old.remove_entry(key)?;
            self.make_room();
            self.young.insert(key, value);
        }
        self.young.get_mut(key)
    }

    #[cfg(test)]
    /// Whether `key` is held (without marking it used).
    pub(crate) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.young.contains_key(key) || self.old.contains_key(key)
    }

    /// Sets `key` to `value`, marking it used; returns the value it replaces.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(slot) = self.young.get_mut(&key) {
            return Some(std::mem::replace(slot, value));
        }
        let previous = self.old.remove(&key);
        self.make_room();
        self.young.insert(key, value);
        previous
    }

    /// Removes `key`; returns its value.
    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.is_empty() {
            return None;
        }
        self.young.remove(key).or_else(|| self.old.remove(key))
    }

    /// Before a key enters the young map: when it is full, the old generation
    /// goes and the young one takes its place.
    fn make_room(&mut self) {
        if self.young.len() >= self.generation {
            self.old = std::mem::take(&mut self.young);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_holds_more_than_its_capacity() {
        let mut cache = BoundedCache::new(8);
        assert_eq!(cache.capacity(), 8);
        for i in 0..1000u32 {
            cache.insert(i, i);
            assert!(cache.len() <= 8, "{} entries", cache.len());
            assert_eq!(cache.get(&i), Some(&i), "the newest key is held");
        }
        assert!(cache.len() > 4);
        assert_eq!(BoundedCache::<u8, u8>::new(0).capacity(), 2);
    }

    #[test]
    fn used_keys_survive_idle_keys_go() {
        let mut cache: BoundedCache<String, u32> = BoundedCache::new(8);
        cache.insert("hot".into(), 0);
        for i in 0..100u32 {
            cache.insert(format!("k{i}"), i);
            // Used once per generation (4 insertions): never dropped.
            if i % 3 == 0 {
                assert!(cache.get("hot").is_some(), "hot dropped at {i}");
            }
        }
        assert!(cache.contains_key("hot"));
        // Left unused, it goes within `capacity` insertions.
        for i in 100..108u32 {
            cache.insert(format!("k{i}"), i);
        }
        assert!(!cache.contains_key("hot"));
        assert!(!cache.contains_key("k0"));
    }

    #[test]
    fn insert_get_mut_remove() {
        let mut cache: BoundedCache<&str, u32> = BoundedCache::new(4);
        assert!(cache.is_empty());
        assert_eq!(cache.insert("a", 1), None);
        assert_eq!(cache.insert("a", 2), Some(1));
        cache.insert("b", 3);
        cache.insert("c", 4); // "a" and "b" are now the old generation
        if let Some(value) = cache.get_mut("a") {
            *value += 10;
        }
        assert_eq!(cache.get("a"), Some(&12));
        assert_eq!(cache.insert("b", 5), Some(3));
        assert_eq!(cache.remove("a"), Some(12));
        assert_eq!(cache.remove("a"), None);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("zzz"), None);
    }
}
