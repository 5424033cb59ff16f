//! The store contract every backend implements, and the backends themselves.
//!
//! The contract is RavenDB's compare-exchange model expressed as data (compare
//! `object_store`'s `PutMode`): a key holds at most one [`Entry`], a lock
//! [`Record`] plus an `index` that the store assigns on every write. Writes are
//! conditional on the index ([`Expect`]); losing a race is an ordinary answer
//! ([`PutOutcome::Conflict`], [`DeleteOutcome::Conflict`]), never an error.
//! Errors ([`StoreError`]) mean the backend itself failed.
//!
//! The index must be monotonic per key *across delete and re-create* (a global
//! counter, an etcd revision, a Raft index): it is the fencing token.
//!
//! Two optional capabilities have polling fallbacks in the lock algorithm:
//! [`CompareExchange::watch`] (wake a waiter when a key changes) and server-side
//! leases ([`CompareExchange::grant_lease`] and friends), with which the server
//! expires a crashed holder's keys and one keep-alive renews every lock of a client.
//!
//! # Writing a backend
//!
//! A backend is a type implementing [`CompareExchange`] (`Send + Sync + Debug +
//! 'static`, with the [`macro@async_trait`] re-exported here), handed to
//! [`crate::LockClient::new`] or [`crate::LockClient::builder`]. The lock
//! algorithm is not the backend's business: it maps these calls onto its wire
//! protocol and nothing else. What each call must guarantee:
//!
//! - **Linearizable.** Every call acts at one instant between its start and
//!   its answer, on data every connection shares: once a write was answered,
//!   every later read on any connection sees it or something newer. (Stale
//!   reads from a follower break exclusion.)
//! - [`CompareExchange::get`]: the key's current [`Entry`], or `None` when it
//!   has none. The [`Record`] comes back exactly as written (store it whole;
//!   it derives serde). A value that is not a record is either
//!   [`StoreError::Foreign`] (etcd: acquiring fails on it) or, where foreign
//!   holders share the keys (RavenDB), an entry with a synthetic record of
//!   nonce 0 (never one of the client's acquisitions) whose ttl is how long
//!   it must stay unchanged before it is taken over; then `put`'s conflicts
//!   and `delete`'s report it the same way.
//! - [`CompareExchange::put`]: one atomic conditional write. With
//!   [`Expect::Absent`] it writes only if the key has no entry, with
//!   [`Expect::Index`] only if its entry has exactly that index. A write
//!   assigns an index larger than any the key ever had, also across delete and
//!   re-create, and answers [`PutOutcome::Swapped`] with it; the index is the
//!   lock's fencing token. Otherwise nothing is written and the answer is
//!   [`PutOutcome::Conflict`], with the current entry when the backend knows it
//!   in the same round trip (`None` is allowed: the algorithm reads it).
//! - [`CompareExchange::delete`]: deletes only if the entry has exactly that
//!   index ([`DeleteOutcome::Deleted`]); otherwise [`DeleteOutcome::Conflict`].
//!   (A replay of a delete that was applied may answer `Deleted` again, as
//!   RavenDB's idempotent requests do.)
//! - **Contention is data, failure is an error.** A lost race is never a
//!   [`StoreError`]. A request whose outcome is unknown (refused, timed out,
//!   no leader) is [`StoreError::Unavailable`], never a guessed conflict or
//!   success: it may have been applied, and the algorithm reads back before
//!   it retries. [`StoreError::Backend`] is an answer that cannot be used,
//!   [`StoreError::Foreign`] a value that is not a lock record. Every call
//!   ends in bounded time (a per-request timeout), and no error shows
//!   credentials (the endpoint without its userinfo).
//! - **Optional capabilities**, declared by [`CompareExchange::capabilities`]
//!   and only then called: [`Capabilities::watch`] (`watch` returns once the
//!   key may no longer hold the index it was given: at once if it already
//!   differs, else after a write or delete; early returns are allowed), and
//!   [`Capabilities::leases`] (`grant_lease`, `keep_alive`, `revoke_lease`; a
//!   key put with a lease reports it in [`Entry::lease`] and vanishes when the
//!   lease expires or is revoked). Without them the algorithm polls and takes
//!   over abandoned locks by observation, which is correct, only slower. A
//!   third, [`Capabilities::listing`] (`list`), serves operator tools only.
//! - **Inspection** (for operators; the lock algorithm never inspects or
//!   lists): [`CompareExchange::inspect`] reads a key like `get` but reports a value
//!   that is not a lock record as [`Stored::Foreign`] with its index, so that it
//!   can be deleted by index; its default is `get`, with such a value an error.
//!   [`CompareExchange::list`] (with [`Capabilities::listing`]) lists the keys
//!   that start with a prefix, in key
//!   order, at most `limit` of them (ask for one more than you show to know
//!   whether there are more), each as a lock entry or a foreign value (one
//!   such value never fails the listing); a released key is not listed.
//!   [`CompareExchange::lease_time_to_live`] tells how long a lease has left
//!   (etcd), without renewing it.
//!
//! Then run the conformance suite against a real server from your crate's
//! tests: `distlock::testing::conformance` (feature `testing`) checks every
//! rule above and the lock's invariants on top of them, and fails with the
//! check, the key and what was wrong. See `distlock::testing` for the
//! dev-dependency and a test to copy; `lock-runtime/tests/external_backend.rs`
//! is a complete small backend (a `Mutex<BTreeMap>`) written that way.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Re-exported so custom backends implement [`CompareExchange`] with the same
/// `async_trait` version as this crate.
pub use async_trait::async_trait;

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod memory;
/// The network layer shared by the backends: URLs, failover, errors, TLS, a bounded cache.
pub(crate) mod net;
/// Strategies shared by the backends' answer-decoder property tests.
#[cfg(all(test, any(feature = "etcd", feature = "ravendb")))]
mod proptest_support;
#[cfg(feature = "ravendb")]
pub mod ravendb;

/// A boxed error from a backend's transport or protocol layer.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The lock record stored at a key: who holds it and for how long.
///
/// Only `owner`, `nonce` and `ttl_ms` matter to the algorithm. The wall-clock
/// fields are informational (for operators reading the store); no decision ever
/// compares them with the local clock.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The holder's client identity: `uuid@host:pid`.
    pub owner: Arc<str>,
    /// Unique per acquisition within one owner; `(owner, nonce)` identifies one
    /// acquisition, which resolves ambiguous writes by reading back. The lock
    /// client's nonces start at 1 and only grow: 0 is never one of its
    /// acquisitions, so a backend that reports a value it cannot read as a
    /// lock of a foreign holder (RavenDB) gives that record nonce 0.
    pub nonce: u64,
    /// How long the holder may go without renewing before others may take over,
    /// in milliseconds.
    pub ttl_ms: u64,
    /// The holder's wall clock when it wrote this record, in Unix milliseconds.
    pub written_at_ms: u64,
}

impl Record {
    /// The time-to-live as a [`Duration`].
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// Whether this record was written for the same acquisition as `other`.
    pub fn same_acquisition(&self, other: &Record) -> bool {
        self.nonce == other.nonce && self.owner == other.owner
    }
}

/// What a key currently holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The stored record.
    pub record: Record,
    /// The index the store assigned to the write that produced this entry.
    pub index: u64,
    /// The server lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// The condition a write is made under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist (RavenDB: index 0; etcd: `create_revision == 0`).
    Absent,
    /// The key must exist with exactly this index.
    Index(u64),
}

/// The answer to a conditional put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The write happened; `index` is the new entry's index.
    Swapped {
        /// Index of the new entry (the fencing token on acquire).
        index: u64,
    },
    /// The condition did not hold; nothing was written.
    Conflict {
        /// What the key holds now, if the backend reported it.
        current: Option<Entry>,
    },
}

/// The answer to a conditional delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The entry with the expected index was deleted.
    Deleted,
    /// The key did not hold the expected index; nothing was deleted.
    Conflict {
        /// What the key holds now (`None`: absent or not reported).
        current: Option<Entry>,
    },
}

/// What a key holds, as an operator sees it ([`CompareExchange::inspect`],
/// [`CompareExchange::list`]): a lock entry, or a value that is not a
/// distlock record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stored {
    /// A distlock lock record.
    Lock(Entry),
    /// A value that is not a distlock lock record (written by someone else, or
    /// damaged). A conditional delete at `index` removes it.
    Foreign {
        /// The index the store assigned to the write of that value.
        index: u64,
        /// Why it could not be read as a lock record.
        reason: String,
    },
}

impl Stored {
    /// The index of the value (for a lock record, its fencing token).
    pub fn index(&self) -> u64 {
        match self {
            Stored::Lock(entry) => entry.index,
            Stored::Foreign { index, .. } => *index,
        }
    }

    /// The lock entry, unless the value is foreign.
    pub fn entry(&self) -> Option<&Entry> {
        match self {
            Stored::Lock(entry) => Some(entry),
            Stored::Foreign { .. } => None,
        }
    }
}

/// One key found by [`CompareExchange::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The key as the lock API names it: without the store's own key prefix
    /// (an etcd or RavenDB prefix). RavenDB lists keys lower-cased (its keys
    /// are case-insensitive).
    pub key: String,
    /// What the key holds.
    pub stored: Stored,
}

/// A server-side lease identifier (etcd lease ID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

/// Polling backoff for stores without watch (and when a watch fails).
///
/// ```
/// use std::time::Duration;
/// let backoff = lock_runtime::Backoff { min: Duration::from_millis(1), max: Duration::from_millis(8) };
/// assert!(backoff.delay(10) <= Duration::from_millis(8));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub min: Duration,
    /// The cap the doubling stops at.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(2),
            max: Duration::from_millis(64),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based): doubling from `min`,
    /// capped at `max`, with the upper half jittered so waiters spread out.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max)
            .max(MIN_PAUSE);
        jitter(base)
    }

    /// The pause before the next poll of a waiter that has waited `waited`,
    /// polling in proportion ([`Capabilities::cheap_polls`]): `waited / 32`,
    /// within `min` and `max`, with the upper half jittered. Over a wait of
    /// length `T` that is about `32 ln(T / (32 min))` polls once `T` is past
    /// `32 min`, and at most one per `max / 2` once `T` is past `32 max`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let backoff = lock_runtime::Backoff { min: Duration::from_millis(1), max: Duration::from_millis(8) };
    /// assert!(backoff.delay_after(Duration::from_millis(10)) <= Duration::from_millis(1));
    /// assert!(backoff.delay_after(Duration::from_millis(128)) >= Duration::from_millis(2));
    /// assert!(backoff.delay_after(Duration::from_secs(60)) <= Duration::from_millis(8));
    /// ```
    pub fn delay_after(&self, waited: Duration) -> Duration {
        let base = (waited / POLL_FRACTION)
            .min(self.max)
            .max(self.min)
            .max(MIN_PAUSE);
        jitter(base)
    }
}

/// The shortest pause either schedule gives before jitter (a zero backoff
/// must not make a waiter spin).
const MIN_PAUSE: Duration = Duration::from_micros(100);

/// A proportional poller pauses this fraction of the time it has waited.
const POLL_FRACTION: u32 = 32;

/// `base`, jittered over its upper half so that waiters spread out.
fn jitter(base: Duration) -> Duration {
    base.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// Optional capabilities of a store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`CompareExchange::watch`] is implemented: waiters block on it instead of polling.
    pub watch: bool,
    /// Server-side leases are implemented: keys put with a lease vanish when it
    /// expires, renewal is one keep-alive per lease, and no takeover is needed.
    pub leases: bool,
    /// The polling backoff this store suggests for waiters (used unless the
    /// client sets its own): a store where a poll is a cheap read can afford
    /// faster polling than the default.
    pub poll: Option<Backoff>,
    /// [`CompareExchange::list`] is implemented (operator tools list the locks
    /// under a prefix; the lock algorithm never lists).
    pub listing: bool,
    /// A waiter's poll is a read, not a write: `put(Expect::Absent)` on a key
    /// this store last saw held reads first and writes only when the key looks
    /// free. Waiters then poll in proportion to how long they have waited
    /// (every 1/32 of it, within the poll backoff's `min` and `max`) instead of
    /// doubling the pause after each poll: a key held a few milliseconds is
    /// handed over within about one `min` of its release, and a long wait
    /// polls no more often than `max` allows. Without it, each poll may be a
    /// write, and the pause doubles.
    pub cheap_polls: bool,
}

impl Capabilities {
    /// No optional capability (pure compare-exchange; the algorithm polls and
    /// takes over by observation).
    pub const NONE: Capabilities = Capabilities {
        watch: false,
        leases: false,
        poll: None,
        listing: false,
        cheap_polls: false,
    };

    /// Builder-style setter for [`Capabilities::watch`].
    pub const fn with_watch(mut self, yes: bool) -> Self {
        self.watch = yes;
        self
    }

    /// Builder-style setter for [`Capabilities::poll`].
    pub const fn with_poll(mut self, backoff: Backoff) -> Self {
        self.poll = Some(backoff);
        self
    }

    /// Builder-style setter for [`Capabilities::leases`].
    pub const fn with_leases(mut self, yes: bool) -> Self {
        self.leases = yes;
        self
    }

    /// Builder-style setter for [`Capabilities::listing`].
    pub const fn with_listing(mut self, yes: bool) -> Self {
        self.listing = yes;
        self
    }

    /// Builder-style setter for [`Capabilities::cheap_polls`].
    pub const fn with_cheap_polls(mut self, yes: bool) -> Self {
        self.cheap_polls = yes;
        self
    }
}

/// A backend failure (not contention, which is data).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or did not answer in time (connection
    /// refused, timeout, node electing). A write that failed this way may still
    /// have been applied: the algorithm reads back before retrying.
    #[error("cannot reach {endpoint}: {source}")]
    Unavailable {
        /// The endpoint (URL or address) that failed, never with credentials.
        endpoint: String,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
    /// The backend answered, but with an error or an answer we cannot use.
    #[error("{endpoint} answered with an error: {source}")]
    Backend {
        /// The endpoint that answered, never with credentials.
        endpoint: String,
        /// What was wrong with the answer.
        #[source]
        source: BoxError,
    },
    /// The key holds a value that is not a distlock record (written by someone else).
    #[error("the value stored there is not a distlock lock record: {reason}")]
    Foreign {
        /// Why the value could not be decoded.
        reason: String,
    },
    /// A lease operation named a lease the server no longer has.
    #[error("lease {0:?} no longer exists on the server")]
    LeaseGone(LeaseId),
    /// The store does not implement an optional capability.
    #[error("this store does not support {0}")]
    Unsupported(&'static str),
}

impl StoreError {
    /// Whether retrying (after reading back) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// The compare-exchange store contract.
///
/// Implementations are thin adapters: the lock algorithm lives once, in
/// [`crate::LockClient`]. Every method must finish in bounded time (apply a
/// per-request timeout and report [`StoreError::Unavailable`]).
#[async_trait]
pub trait CompareExchange: Send + Sync + fmt::Debug + 'static {
    /// Short backend name for errors and logs: `"memory"`, `"etcd"`, `"ravendb"`.
    fn backend(&self) -> &'static str;

    /// Which optional capabilities this store has.
    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    /// Reads the entry at `key`.
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError>;

    /// Writes `record` at `key` if `expect` holds, attached to `lease` if given
    /// (only passed when [`Capabilities::leases`] is set).
    async fn put(
        &self,
        key: &str,
        record: &Record,
        expect: Expect,
        lease: Option<LeaseId>,
    ) -> Result<PutOutcome, StoreError>;

    /// Deletes `key` if it holds exactly `index`.
    async fn delete(&self, key: &str, index: u64) -> Result<DeleteOutcome, StoreError>;

    /// Returns once `key` may no longer hold `seen` (`None`: absent): after a
    /// write or delete of the key, or at once if it already differs. May return
    /// early (spuriously); the caller re-reads. Callers bound it with a timeout.
    async fn watch(&self, key: &str, seen: Option<u64>) -> Result<(), StoreError> {
        let _ = (key, seen);
        Err(StoreError::Unsupported("watch"))
    }

    /// Grants a server lease of `ttl`.
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let _ = ttl;
        Err(StoreError::Unsupported("leases"))
    }

    /// Renews `lease` once; `Ok(None)` (or [`StoreError::LeaseGone`]) means the
    /// lease no longer exists, `Ok(Some(ttl))` is the remaining time to live.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        let _ = lease;
        Err(StoreError::Unsupported("leases"))
    }

    /// Revokes `lease`, deleting every key attached to it.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let _ = lease;
        Err(StoreError::Unsupported("leases"))
    }

    /// Reads `key` for an operator: like [`CompareExchange::get`], but a value
    /// that is not a lock record is [`Stored::Foreign`] with its index instead
    /// of an error. The default is `get` (a foreign value then stays
    /// [`StoreError::Foreign`], since `get` gives no index).
    async fn inspect(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        Ok(self.get(key).await?.map(Stored::Lock))
    }

    /// Lists the keys that start with `prefix` (every key for `""`), for a
    /// store with [`Capabilities::listing`]: in key order (byte order of the
    /// key; RavenDB: of the lower-cased key), at most `limit` of them (none for
    /// 0). A result of `limit` items may have been cut short: ask for one
    /// more than you need to know. Each item is a lock entry or
    /// [`Stored::Foreign`] (one such value does not fail the listing); a
    /// released key is not listed. Each item was current at some instant of
    /// the call; the listing is a snapshot only where the backend reads it in
    /// one request (memory, etcd).
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<Listed>, StoreError> {
        let _ = (prefix, limit);
        Err(StoreError::Unsupported("listing"))
    }

    /// How long `lease` has left, without renewing it (`Ok(None)`: the lease
    /// no longer exists). Optional even with [`Capabilities::leases`]: the
    /// default answers [`StoreError::Unsupported`].
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        let _ = lease;
        Err(StoreError::Unsupported("lease time to live"))
    }
}

#[async_trait]
impl<S: CompareExchange + ?Sized> CompareExchange for Arc<S> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        (**self).get(key).await
    }
    async fn put(
        &self,
        key: &str,
        record: &Record,
        expect: Expect,
        lease: Option<LeaseId>,
    ) -> Result<PutOutcome, StoreError> {
        (**self).put(key, record, expect, lease).await
    }
    async fn delete(&self, key: &str, index: u64) -> Result<DeleteOutcome, StoreError> {
        (**self).delete(key, index).await
    }
    async fn watch(&self, key: &str, seen: Option<u64>) -> Result<(), StoreError> {
        (**self).watch(key, seen).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        (**self).grant_lease(ttl).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        (**self).keep_alive(lease).await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        (**self).revoke_lease(lease).await
    }
    async fn inspect(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        (**self).inspect(key).await
    }
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<Listed>, StoreError> {
        (**self).list(prefix, limit).await
    }
    async fn lease_time_to_live(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        (**self).lease_time_to_live(lease).await
    }
}
