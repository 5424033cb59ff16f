//! [`SimStore`]: a linearizable in-memory model of a compare-exchange server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

pub use super::trace::Writer;
use super::trace::{Event, Trace};
use crate::store::{
    Backoff, Capabilities, CompareExchange, DeleteOutcome, Entry, Expect, LeaseId, PutOutcome,
    Record, StoreError,
};

/// Which kind of server a [`SimStore`] models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreMode {
    /// etcd-like: server leases (granted in whole seconds, rounded up; a lease
    /// expires at the arrival of its last grant or keep-alive plus its ttl and
    /// deletes its keys), [`CompareExchange::watch`], and [`Entry::lease`] on
    /// every key put with a lease.
    EtcdLike,
    /// RavenDB-like: compare-exchange only, no leases, no watch.
    CasOnly {
        /// RavenDB 4.1's quirk: a put with [`Expect::Index`] on a *missing* key
        /// succeeds and creates the key (later versions answer with a conflict).
        ravendb_41_quirk: bool,
    },
}

impl StoreMode {
    /// Whether the mode has server leases (and watch).
    pub fn has_leases(self) -> bool {
        matches!(self, StoreMode::EtcdLike)
    }

    /// A short name for traces and reports: `etcd`, `cas` or `cas-4.1`.
    pub fn name(self) -> &'static str {
        match self {
            StoreMode::EtcdLike => "etcd",
            StoreMode::CasOnly {
                ravendb_41_quirk: false,
            } => "cas",
            StoreMode::CasOnly {
                ravendb_41_quirk: true,
            } => "cas-4.1",
        }
    }
}

/// One write in the store's history, by index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The index the write was given (one global counter).
    pub index: u64,
    /// The key written.
    pub key: Arc<str>,
    /// The record put (`None`: a delete).
    pub record: Option<Record>,
    /// The lease the key was attached to by a put.
    pub lease: Option<LeaseId>,
    /// Who wrote it.
    pub writer: Writer,
    /// Whether this put created a missing key under [`Expect::Index`] (the
    /// RavenDB 4.1 quirk).
    pub quirk: bool,
    /// When it was applied (server time).
    pub at: Instant,
}

#[derive(Debug)]
struct Lease {
    /// Granted ttl in whole seconds.
    secs: u64,
    expires: Instant,
    keys: BTreeSet<Arc<str>>,
}

#[derive(Debug)]
struct State {
    mode: StoreMode,
    poll: Option<Backoff>,
    cheap_polls: bool,
    last_index: u64,
    next_lease: i64,
    keys: BTreeMap<Arc<str>, Entry>,
    leases: BTreeMap<LeaseId, Lease>,
    history: Vec<Write>,
    trace: Trace,
}

/// A linearizable in-memory compare-exchange server with the semantics of the
/// [`CompareExchange`] contract, for simulations and backend tests.
///
/// Every operation is applied atomically at the moment it is called, on
/// Tokio's clock (so a test with a paused clock controls lease expiry exactly).
/// Indexes come from one global counter bumped by every write, delete and
/// lease expiry, so they grow across delete and re-create of a key, like an
/// etcd revision or a RavenDB Raft index.
///
/// Cheap to clone (clones share the server). Use it directly as a fault-free
/// store, or hand each client its own faulty connection with
/// [`super::SimNet`]. Operator actions ([`SimStore::force_delete`],
/// [`SimStore::force_overwrite`]) bypass every condition, and the inspection
/// methods read the server's state without going through any network.
///
/// ```
/// use std::time::Duration;
/// use distlock::store::{CompareExchange, Expect, PutOutcome, Record};
/// use distlock::testing::SimStore;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let store = SimStore::etcd_like();
/// let lease = store.grant_lease(Duration::from_millis(300)).await.unwrap();
/// let record = Record { owner: "me".into(), nonce: 1, ttl_ms: 300, written_at_ms: 0 };
/// let put = store.put("k", &record, Expect::Absent, Some(lease)).await.unwrap();
/// assert!(matches!(put, PutOutcome::Swapped { .. }));
/// assert_eq!(store.live_leases(), 1);
/// // etcd counts whole seconds: the 300 ms lease lives 1 s.
/// tokio::time::sleep(Duration::from_millis(999)).await;
/// assert!(store.entry("k").is_some());
/// tokio::time::sleep(Duration::from_millis(1)).await;
/// assert!(store.entry("k").is_none());
/// assert_eq!(store.live_leases(), 0);
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct SimStore {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl SimStore {
    /// A store of the given mode, without a trace.
    pub fn new(mode: StoreMode) -> SimStore {
        SimStore::with_trace(mode, Trace::disabled())
    }

    /// A store of the given mode that records what it applies into `trace`.
    pub fn with_trace(mode: StoreMode, trace: Trace) -> SimStore {
        SimStore {
            state: Arc::new(Mutex::new(State {
                mode,
                poll: None,
                cheap_polls: false,
                last_index: 0,
                next_lease: 1,
                keys: BTreeMap::new(),
                leases: BTreeMap::new(),
                history: Vec::new(),
                trace,
            })),
            changed: Arc::new(Notify::new()),
        }
    }

    /// An etcd-like store ([`StoreMode::EtcdLike`]).
    pub fn etcd_like() -> SimStore {
        SimStore::new(StoreMode::EtcdLike)
    }

    /// A RavenDB-like compare-exchange-only store (no leases, no watch).
    pub fn cas_only() -> SimStore {
        SimStore::new(StoreMode::CasOnly {
            ravendb_41_quirk: false,
        })
    }

    /// A RavenDB 4.1-like store: compare-exchange only, and a put with
    /// [`Expect::Index`] on a missing key creates it.
    pub fn ravendb_41() -> SimStore {
        SimStore::new(StoreMode::CasOnly {
            ravendb_41_quirk: true,
        })
    }

    /// Sets the polling backoff the store suggests to waiters
    /// ([`Capabilities::poll`]); default none (the client's default applies).
    pub fn set_poll(&self, backoff: Option<Backoff>) {
        self.lock().poll = backoff;
    }

    /// Advertises [`Capabilities::cheap_polls`] (waiters poll in proportion to
    /// their wait, as on RavenDB); default off.
    pub fn set_cheap_polls(&self, yes: bool) {
        self.lock().cheap_polls = yes;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update below completes under the lock, so a panic elsewhere
        // cannot leave the state half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks the state after expiring every lease that is due.
    fn now(&self) -> (MutexGuard<'_, State>, Instant) {
        let now = Instant::now();
        let mut state = self.lock();
        if state.expire(now) {
            self.changed.notify_waiters();
        }
        (state, now)
    }

    /// The mode this store models.
    pub fn mode(&self) -> StoreMode {
        self.lock().mode
    }

    /// The capabilities a client of this store sees.
    pub fn caps(&self) -> Capabilities {
        let state = self.lock();
        let caps = Capabilities::NONE
            .with_watch(state.mode.has_leases())
            .with_leases(state.mode.has_leases())
            .with_cheap_polls(state.cheap_polls);
        match state.poll {
            Some(poll) => caps.with_poll(poll),
            None => caps,
        }
    }

    /// The trace this store records into.
    pub fn trace(&self) -> Trace {
        self.lock().trace.clone()
    }

    // ---- inspection -------------------------------------------------------

    /// What `key` holds now (after expiring due leases).
    pub fn entry(&self, key: &str) -> Option<Entry> {
        self.now().0.keys.get(key).cloned()
    }

    /// The keys that exist now, in order.
    pub fn keys(&self) -> Vec<String> {
        self.now().0.keys.keys().map(|k| k.to_string()).collect()
    }

    /// How many leases exist now (granted, not yet expired or revoked).
    pub fn live_leases(&self) -> usize {
        self.now().0.leases.len()
    }

    /// The leases that exist now, with their remaining time to live.
    pub fn leases(&self) -> Vec<(LeaseId, Duration)> {
        let (state, now) = self.now();
        state
            .leases
            .iter()
            .map(|(id, lease)| (*id, lease.expires.saturating_duration_since(now)))
            .collect()
    }

    /// The last index handed out.
    pub fn last_index(&self) -> u64 {
        self.lock().last_index
    }

    /// The write that was given `index`, if any.
    pub fn write_at(&self, index: u64) -> Option<Write> {
        let state = self.lock();
        let at = state
            .history
            .binary_search_by_key(&index, |w| w.index)
            .ok()?;
        state.history.get(at).cloned()
    }

    /// Every write to `key` with an index above `after`, oldest first.
    pub fn writes_since(&self, key: &str, after: u64) -> Vec<Write> {
        let state = self.lock();
        let start = state.history.partition_point(|w| w.index <= after);
        state.history[start..]
            .iter()
            .filter(|w| &*w.key == key)
            .cloned()
            .collect()
    }

    // ---- operator actions -------------------------------------------------

    /// Deletes `key` whatever it holds (an operator's `etcdctl del` or a
    /// RavenDB admin delete). Returns whether the key existed.
    pub fn force_delete(&self, key: &str) -> bool {
        let (mut state, now) = self.now();
        let existed = state.remove(key, Writer::Operator, now).is_some();
        drop(state);
        if existed {
            self.changed.notify_waiters();
        }
        existed
    }

    /// Writes `record` at `key` whatever it holds, attached to `lease` (on a
    /// lease store; the lease must exist, else [`StoreError::LeaseGone`]).
    /// Returns the new index.
    pub fn force_overwrite(
        &self,
        key: &str,
        record: Record,
        lease: Option<LeaseId>,
    ) -> Result<u64, StoreError> {
        let (mut state, now) = self.now();
        state.check_lease(lease)?;
        let index = state.write(key, record, lease, Writer::Operator, false, now);
        drop(state);
        self.changed.notify_waiters();
        Ok(index)
    }

    // ---- the server's operations, applied now -----------------------------

    /// Applies a read now.
    pub fn get_now(&self, key: &str) -> Option<Entry> {
        self.entry(key)
    }

    /// Applies a conditional put now.
    pub fn put_now(
        &self,
        key: &str,
        record: &Record,
        expect: Expect,
        lease: Option<LeaseId>,
    ) -> Result<PutOutcome, StoreError> {
        let (mut state, now) = self.now();
        let current = state.keys.get(key).cloned();
        let quirk = matches!(
            state.mode,
            StoreMode::CasOnly {
                ravendb_41_quirk: true
            }
        );
        let allowed = match (expect, &current) {
            (Expect::Absent, None) => true,
            (Expect::Absent, Some(_)) => false,
            (Expect::Index(i), Some(entry)) => entry.index == i,
            (Expect::Index(_), None) => quirk,
        };
        if !allowed {
            return Ok(PutOutcome::Conflict { current });
        }
        state.check_lease(lease)?;
        let created_by_quirk = current.is_none() && matches!(expect, Expect::Index(_));
        let index = state.write(
            key,
            record.clone(),
            lease,
            Writer::Client,
            created_by_quirk,
            now,
        );
        drop(state);
        self.changed.notify_waiters();
        Ok(PutOutcome::Swapped { index })
    }

    /// Applies a conditional delete now.
    pub fn delete_now(&self, key: &str, index: u64) -> DeleteOutcome {
        let (mut state, now) = self.now();
        match state.keys.get(key) {
            Some(entry) if entry.index == index => {
                state.remove(key, Writer::Client, now);
                drop(state);
                self.changed.notify_waiters();
                DeleteOutcome::Deleted
            }
            current => DeleteOutcome::Conflict {
                current: current.cloned(),
            },
        }
    }

    /// Grants a lease now (whole seconds, rounded up).
    pub fn grant_lease_now(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let (mut state, now) = self.now();
        if !state.mode.has_leases() {
            return Err(StoreError::Unsupported("leases"));
        }
        let secs = lease_secs(ttl);
        let id = LeaseId(state.next_lease);
        state.next_lease += 1;
        state.leases.insert(
            id,
            Lease {
                secs,
                expires: now + Duration::from_secs(secs),
                keys: BTreeSet::new(),
            },
        );
        state.trace.push(Event::LeaseGranted { lease: id, secs });
        Ok(id)
    }

    /// Applies a keep-alive now: `Ok(None)` if the lease is gone, else the
    /// lease's ttl (it now expires that long from now).
    pub fn keep_alive_now(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        let (mut state, now) = self.now();
        if !state.mode.has_leases() {
            return Err(StoreError::Unsupported("leases"));
        }
        Ok(state.leases.get_mut(&lease).map(|l| {
            l.expires = now + Duration::from_secs(l.secs);
            Duration::from_secs(l.secs)
        }))
    }

    /// Revokes a lease now, deleting its keys (a missing lease is no error).
    pub fn revoke_lease_now(&self, lease: LeaseId) -> Result<(), StoreError> {
        let (mut state, now) = self.now();
        if !state.mode.has_leases() {
            return Err(StoreError::Unsupported("leases"));
        }
        if state.drop_lease(lease, now, "revoked") {
            drop(state);
            self.changed.notify_waiters();
        }
        Ok(())
    }

    /// Completes once `key` no longer holds `seen` (`None`: absent), counting
    /// lease expiry; at once if it already differs. The server side of a watch.
    pub async fn changed(&self, key: &str, seen: Option<u64>) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_expiry = {
                let (state, _) = self.now();
                if state.keys.get(key).map(|e| e.index) != seen {
                    return;
                }
                state.leases.values().map(|l| l.expires).min()
            };
            match next_expiry {
                Some(at) => {
                    tokio::select! {
                        biased;
                        () = &mut notified => {}
                        () = sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

/// etcd counts lease ttls in whole seconds; a ttl is rounded up.
pub fn lease_secs(ttl: Duration) -> u64 {
    let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    millis.div_ceil(1000).max(1)
}

impl State {
    fn next_index(&mut self) -> u64 {
        self.last_index += 1;
        self.last_index
    }

    fn check_lease(&self, lease: Option<LeaseId>) -> Result<(), StoreError> {
        match lease {
            None => Ok(()),
            Some(_) if !self.mode.has_leases() => Err(StoreError::Unsupported("leases")),
            Some(id) if self.leases.contains_key(&id) => Ok(()),
            Some(id) => Err(StoreError::LeaseGone(id)),
        }
    }

    fn write(
        &mut self,
        key: &str,
        record: Record,
        lease: Option<LeaseId>,
        writer: Writer,
        quirk: bool,
        now: Instant,
    ) -> u64 {
        let index = self.next_index();
        let key: Arc<str> = match self.keys.get_key_value(key) {
            Some((k, _)) => Arc::clone(k),
            None => key.into(),
        };
        if let Some(old) = self.keys.get(&key).and_then(|e| e.lease)
            && let Some(l) = self.leases.get_mut(&old)
        {
            l.keys.remove(&key);
        }
        if let Some(id) = lease
            && let Some(l) = self.leases.get_mut(&id)
        {
            l.keys.insert(Arc::clone(&key));
        }
        self.trace.push(Event::Stored {
            key: Arc::clone(&key),
            index,
            owner: Arc::clone(&record.owner),
            nonce: record.nonce,
            lease,
            writer,
            quirk,
        });
        self.keys.insert(
            Arc::clone(&key),
            Entry {
                record: record.clone(),
                index,
                lease,
            },
        );
        self.history.push(Write {
            index,
            key,
            record: Some(record),
            lease,
            writer,
            quirk,
            at: now,
        });
        index
    }

    fn remove(&mut self, key: &str, writer: Writer, now: Instant) -> Option<Entry> {
        let (key, entry) = self.keys.remove_entry(key)?;
        if let Some(id) = entry.lease
            && let Some(l) = self.leases.get_mut(&id)
        {
            l.keys.remove(&key);
        }
        let index = self.next_index();
        self.trace.push(Event::Removed {
            key: Arc::clone(&key),
            index,
            was: entry.index,
            writer,
        });
        self.history.push(Write {
            index,
            key,
            record: None,
            lease: None,
            writer,
            quirk: false,
            at: now,
        });
        Some(entry)
    }

    fn drop_lease(&mut self, id: LeaseId, now: Instant, why: &'static str) -> bool {
        let Some(lease) = self.leases.remove(&id) else {
            return false;
        };
        self.trace.push(Event::LeaseEnded {
            lease: id,
            why,
            keys: lease.keys.len(),
        });
        for key in lease.keys {
            self.remove(&key, Writer::Lease, now);
        }
        true
    }

    /// Expires every lease due at `now`; whether anything changed.
    fn expire(&mut self, now: Instant) -> bool {
        let due: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut changed = false;
        for id in due {
            changed |= self.drop_lease(id, now, "expired");
        }
        changed
    }
}

/// The store used directly: every call is applied at once, with no faults.
#[async_trait]
impl CompareExchange for SimStore {
    fn backend(&self) -> &'static str {
        "sim"
    }

    fn capabilities(&self) -> Capabilities {
        self.caps()
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        Ok(self.get_now(key))
    }

    async fn put(
        &self,
        key: &str,
        record: &Record,
        expect: Expect,
        lease: Option<LeaseId>,
    ) -> Result<PutOutcome, StoreError> {
        self.put_now(key, record, expect, lease)
    }

    async fn delete(&self, key: &str, index: u64) -> Result<DeleteOutcome, StoreError> {
        Ok(self.delete_now(key, index))
    }

    async fn watch(&self, key: &str, seen: Option<u64>) -> Result<(), StoreError> {
        if !self.mode().has_leases() {
            return Err(StoreError::Unsupported("watch"));
        }
        self.changed(key, seen).await;
        Ok(())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.grant_lease_now(ttl)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        self.keep_alive_now(lease)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.revoke_lease_now(lease)
    }
}
