//! The in-memory store: the embedded default and the reference implementation.
//!
//! One process-local map behind a mutex. The index comes from one counter for
//! the whole store, so it grows across delete and re-create of a key, like an
//! etcd revision or a RavenDB Raft index. Waiters block on a per-key
//! [`tokio::sync::Notify`] instead of polling.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{
    Capabilities, CompareExchange, DeleteOutcome, Entry, Expect, LeaseId, Listed, PutOutcome,
    Record, StoreError, Stored,
};

/// An in-process compare-exchange store.
///
/// Cheap to clone; clones share the same map, so several [`crate::LockClient`]s
/// built on clones of one store contend with each other as separate service
/// instances would on a real backend.
///
/// ```
/// use lock_runtime::store::{memory::MemoryStore, CompareExchange, Expect, PutOutcome, Record};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let record = Record { owner: "me".into(), nonce: 1, ttl_ms: 1000, written_at_ms: 0 };
/// let first = store.put("k", &record, Expect::Absent, None).await.unwrap();
/// assert!(matches!(first, PutOutcome::Swapped { .. }));
/// let second = store.put("k", &record, Expect::Absent, None).await.unwrap();
/// assert!(matches!(second, PutOutcome::Conflict { current: Some(_) }));
/// # });
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// The last index handed out; shared by every key.
    last_index: u64,
    /// foldhash with a per-map random seed: fast for short keys, and keys that
    /// come from requests cannot be chosen to collide.
    slots: HashMap<Box<str>, Slot, RandomState>,
}

#[derive(Debug, Default)]
struct Slot {
    entry: Option<(Record, u64)>,
    /// Woken on every write and delete of the key; created by the first waiter.
    notify: Option<Arc<Notify>>,
    /// How many `watch` calls are parked on `notify`; the slot outlives its
    /// entry while this is non-zero.
    waiters: usize,
}

impl Slot {
    fn wake(&self) {
        if let Some(notify) = &self.notify {
            notify.notify_waiters();
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every update is a single insert/remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The number of keys currently held (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.state()
            .slots
            .values()
            .filter(|slot| slot.entry.is_some())
            .count()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn entry_of(slot: Option<&Slot>) -> Option<Entry> {
    let (record, index) = slot?.entry.as_ref()?;
    Some(Entry {
        record: record.clone(),
        index: *index,
        lease: None,
    })
}

#[async_trait]
impl CompareExchange for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.with_watch(true).with_listing(true)
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        Ok(entry_of(self.state().slots.get(key)))
    }

    async fn put(
        &self,
        key: &str,
        record: &Record,
        expect: Expect,
        _lease: Option<LeaseId>,
    ) -> Result<PutOutcome, StoreError> {
        let mut state = self.state();
        let State { last_index, slots } = &mut *state;
        let slot = match slots.get_mut(key) {
            Some(slot) => slot,
            None if expect == Expect::Absent => slots.entry(key.into()).or_default(),
            None => return Ok(PutOutcome::Conflict { current: None }),
        };
        let current = slot.entry.as_ref().map(|(_, index)| *index);
        let allowed = match expect {
            Expect::Absent => current.is_none(),
            Expect::Index(expected) => current == Some(expected),
        };
        if !allowed {
            return Ok(PutOutcome::Conflict {
                current: entry_of(Some(slot)),
            });
        }
        *last_index += 1;
        let index = *last_index;
        slot.entry = Some((record.clone(), index));
        slot.wake();
        Ok(PutOutcome::Swapped { index })
    }

    async fn delete(&self, key: &str, index: u64) -> Result<DeleteOutcome, StoreError> {
        let mut state = self.state();
        let Some(slot) = state.slots.get_mut(key) else {
            return Ok(DeleteOutcome::Conflict { current: None });
        };
        if slot.entry.as_ref().map(|(_, i)| *i) != Some(index) {
            return Ok(DeleteOutcome::Conflict {
                current: entry_of(Some(slot)),
            });
        }
        slot.entry = None;
        slot.wake();
        if slot.waiters == 0 {
            state.slots.remove(key);
        }
        Ok(DeleteOutcome::Deleted)
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<Listed>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let state = self.state();
        let mut found: Vec<(&str, &Slot)> = state
            .slots
            .iter()
            .filter(|(key, slot)| slot.entry.is_some() && key.starts_with(prefix))
            .map(|(key, slot)| (&**key, slot))
            .collect();
        found.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Ok(found
            .into_iter()
            .take(limit)
            .filter_map(|(key, slot)| {
                Some(Listed {
                    key: key.to_owned(),
                    stored: Stored::Lock(entry_of(Some(slot))?),
                })
            })
            .collect())
    }

    async fn watch(&self, key: &str, seen: Option<u64>) -> Result<(), StoreError> {
        let notify = {
            let mut state = self.state();
            if index_of(&state, key) != seen {
                return Ok(());
            }
            let slot = state.slots.entry(key.into()).or_default();
            slot.waiters += 1;
            Arc::clone(slot.notify.get_or_insert_with(Default::default))
        };
        let _waiter = Waiter { store: self, key };
        let notified = notify.notified();
        tokio::pin!(notified);
        // Register before re-checking, so a change between the check above
        // and the await below cannot be missed.
        notified.as_mut().enable();
        if index_of(&self.state(), key) == seen {
            notified.await;
        }
        Ok(())
    }
}

fn index_of(state: &State, key: &str) -> Option<u64> {
    let slot = state.slots.get(key)?;
    slot.entry.as_ref().map(|(_, index)| *index)
}

/// Unregisters a waiter, also when its future is dropped, and removes the
/// slot once it is empty and unwatched.
struct Waiter<'a> {
    store: &'a MemoryStore,
    key: &'a str,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut state = self.store.state();
        if let Some(slot) = state.slots.get_mut(self.key) {
            slot.waiters = slot.waiters.saturating_sub(1);
            if slot.waiters == 0 {
                if slot.entry.is_none() {
                    state.slots.remove(self.key);
                } else {
                    slot.notify = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(nonce: u64) -> Record {
        Record {
            owner: "o".into(),
            nonce,
            ttl_ms: 1000,
            written_at_ms: 0,
        }
    }

    async fn put(store: &MemoryStore, key: &str) -> u64 {
        match store.put(key, &record(1), Expect::Absent, None).await {
            Ok(PutOutcome::Swapped { index }) => index,
            other => panic!("{other:?}"),
        }
    }

    fn keys(listed: &[Listed]) -> Vec<&str> {
        listed.iter().map(|l| l.key.as_str()).collect()
    }

    #[tokio::test]
    async fn lists_held_keys_under_the_prefix_in_key_order_up_to_the_limit() {
        let store = MemoryStore::new();
        for key in ["b/2", "b/10", "b/1", "b", "ba", "a/1"] {
            put(&store, key).await;
        }
        let released = put(&store, "b/3").await;
        assert_eq!(
            store.delete("b/3", released).await.ok(),
            Some(DeleteOutcome::Deleted)
        );
        let listed = store.list("b/", 10).await.unwrap_or_default();
        assert_eq!(keys(&listed), ["b/1", "b/10", "b/2"]);
        for item in &listed {
            let got = store.get(&item.key).await.ok().flatten();
            assert_eq!(Some(&item.stored), got.map(Stored::Lock).as_ref());
        }
        let first = store.list("b/", 2).await.unwrap_or_default();
        assert_eq!(keys(&first), ["b/1", "b/10"]);
        assert!(store.list("b/", 0).await.unwrap_or_default().is_empty());
        let all = store.list("", 100).await.unwrap_or_default();
        assert_eq!(keys(&all), ["a/1", "b", "b/1", "b/10", "b/2", "ba"]);
    }

    #[tokio::test]
    async fn a_watched_key_without_an_entry_is_not_listed() {
        let store = MemoryStore::new();
        let watching = {
            let store = store.clone();
            tokio::spawn(async move { store.watch("w", None).await })
        };
        // A watch of an absent key parks on a slot without an entry.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(store.state().slots.len(), 1, "the watch is not parked");
        assert!(store.list("", 10).await.unwrap_or_default().is_empty());
        watching.abort();
    }
}
