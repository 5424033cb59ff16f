//! [`LockClient`]: the one implementation of the lock algorithm, generic over
//! the store.
//!
//! - Acquire is `put(Expect::Absent)`. On a conflict the holder's index is
//!   remembered with the local monotonic time it was first seen; only when the
//!   same index has stayed unchanged for the holder's whole ttl is the lock
//!   taken over, by `put(Expect::Index(seen))`. No two machines' clocks are ever
//!   compared. Stores with server leases expire holders themselves, so there
//!   the client never takes over.
//! - Waiting blocks on the store's watch where it has one, else polls with
//!   capped exponential backoff and jitter, always bounded by the deadline.
//! - A write that failed with a transient error may have committed: a record
//!   with our `(owner, nonce)` found at the key afterwards is our acquisition.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::error::{LockError, LostReason};
use crate::guard::LockGuard;
use crate::held::Held;
use crate::options::{LockOptions, Wait, validate_key};
use crate::session::Session;
use crate::store::memory::MemoryStore;
use crate::store::{
    Backoff, Capabilities, CompareExchange, Entry, Expect, PutOutcome, Record, StoreError,
};

/// A source of wall-clock time. Only written into records for operators to
/// read; the algorithm never decides anything by it. Injectable so tests can
/// prove that a skewed clock changes nothing.
pub trait WallClock: Send + Sync + fmt::Debug + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Counters of what a client did, for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Locks acquired.
    pub acquired: u64,
    /// Acquisitions that found the lock held at least once.
    pub contended: u64,
    /// Acquisitions that took over an abandoned lock.
    pub takeovers: u64,
    /// Held locks that were lost.
    pub lost: u64,
    /// Locks released by delete.
    pub released: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub acquired: AtomicU64,
    pub contended: AtomicU64,
    pub takeovers: AtomicU64,
    pub lost: AtomicU64,
    pub released: AtomicU64,
}

/// What this client last saw at a key it could not get.
#[derive(Debug, Clone, Copy)]
struct Observation {
    index: u64,
    since: Instant,
    ttl: Duration,
}

/// The observation cache, shared by all acquisitions of a client so a try-lock
/// can take over too. Bounded: keys not looked at for twice their ttl are
/// pruned once the map grows (forgetting only delays a takeover, never hastens it).
#[derive(Debug)]
struct Observations {
    seen: HashMap<Box<str>, Observation, RandomState>,
    prune_at: usize,
}

impl Default for Observations {
    fn default() -> Self {
        Observations {
            seen: HashMap::default(),
            prune_at: 1024,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub held: HashMap<u64, Arc<Held>, RandomState>,
    pub renewer_running: bool,
    /// When the renewer will next wake up on its own (`None`: idle).
    pub wake_at: Option<Instant>,
}

/// State shared by the client handles, guards and background tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: Arc<dyn CompareExchange>,
    pub backend: &'static str,
    pub caps: Capabilities,
    pub owner: Arc<str>,
    pub defaults: LockOptions,
    /// The wall clock read once at start, with the monotonic time it was read
    /// at: records get `wall_base + (now - mono_base)`, one clock read per
    /// acquisition instead of two (the timestamps are informational only).
    wall_base: SystemTime,
    mono_base: Instant,
    pub backoff: Backoff,
    pub lock_delay: Duration,
    nonce: AtomicU64,
    next_id: AtomicU64,
    observations: Mutex<Observations>,
    pub registry: Mutex<Registry>,
    pub renewer_wake: Notify,
    sessions: tokio::sync::Mutex<HashMap<(Duration, bool), Arc<Session>>>,
    pub stats: Stats,
    closed: AtomicBool,
    closed_notify: Notify,
}

impl Shared {
    /// The store as a trait object. Calling through `&dyn` (not the `Arc`,
    /// which implements the trait too) avoids boxing every call twice.
    pub fn store(&self) -> &dyn CompareExchange {
        &*self.store
    }

    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn observations(&self) -> MutexGuard<'_, Observations> {
        self.observations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Completes once every handle of the client is gone.
    pub async fn closed(&self) {
        loop {
            let notified = self.closed_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.closed_notify.notify_waiters();
        self.renewer_wake.notify_one();
    }

    pub fn store_error(&self, key: &str, error: StoreError) -> LockError {
        LockError::from_store(self.backend, key, error)
    }

    pub fn mark_lost(&self, held: &Held, reason: LostReason) {
        if held.mark_lost(reason) {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether any registered lock is attached to `session`.
    pub fn session_in_use(&self, session: &Arc<Session>) -> bool {
        self.registry()
            .held
            .values()
            .any(|held| held.is_on(session))
    }

    /// A session's lease is gone: every lock attached to it is lost.
    pub fn session_lost(&self, session: &Arc<Session>, reason: LostReason) {
        if !session.set_lost(reason) {
            return;
        }
        tracing::warn!(lease = session.lease.0, %reason, "distlock: lease session lost");
        let affected: Vec<Arc<Held>> = self
            .registry()
            .held
            .values()
            .filter(|held| held.is_on(session))
            .cloned()
            .collect();
        for held in affected {
            self.mark_lost(&held, reason);
        }
    }

    fn record(&self, ttl: Duration, now: Instant) -> Record {
        let wall = self.wall_base + now.saturating_duration_since(self.mono_base);
        let written_at_ms = wall.duration_since(UNIX_EPOCH).map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
        Record {
            owner: Arc::clone(&self.owner),
            nonce: self.nonce.fetch_add(1, Ordering::Relaxed),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            written_at_ms,
        }
    }

    /// Records what we saw at `key` and returns when it may be taken over:
    /// once the same index has been seen unchanged for the holder's ttl.
    fn observe(&self, key: &str, entry: &Entry, now: Instant) -> Instant {
        let mut observations = self.observations();
        let ttl = entry.record.ttl();
        let since = match observations.seen.get_mut(key) {
            Some(seen) if seen.index == entry.index => seen.since,
            Some(seen) => {
                *seen = Observation {
                    index: entry.index,
                    since: now,
                    ttl,
                };
                now
            }
            None => {
                if observations.seen.len() >= observations.prune_at {
                    observations
                        .seen
                        .retain(|_, seen| now.saturating_duration_since(seen.since) < seen.ttl * 2);
                    observations.prune_at = (observations.seen.len() * 2).max(1024);
                }
                observations.seen.insert(
                    key.into(),
                    Observation {
                        index: entry.index,
                        since: now,
                        ttl,
                    },
                );
                now
            }
        };
        since + ttl + self.lock_delay
    }

    fn forget(&self, key: &str) {
        let mut observations = self.observations();
        if !observations.seen.is_empty() {
            observations.seen.remove(key);
        }
    }

    async fn session(
        self: &Arc<Self>,
        key: &str,
        ttl: Duration,
        renew: bool,
    ) -> Result<Arc<Session>, LockError> {
        let mut sessions = self.sessions.lock().await;
        if renew
            && let Some(session) = sessions.get(&(ttl, renew))
            && !session.is_lost()
        {
            return Ok(Arc::clone(session));
        }
        let session = Session::start(self, ttl, renew)
            .await
            .map_err(|error| self.store_error(key, error))?;
        if renew {
            sessions.insert((ttl, renew), Arc::clone(&session));
        }
        Ok(session)
    }

    fn register(self: &Arc<Self>, held: &Arc<Held>) {
        let wake_at = {
            let timing = held.timing();
            timing.deadline.min(timing.next_renew)
        };
        let mut registry = self.registry();
        registry.held.insert(held.id, Arc::clone(held));
        if !registry.renewer_running {
            registry.renewer_running = true;
            registry.wake_at = Some(wake_at);
            drop(registry);
            tokio::spawn(crate::renew::run(Arc::clone(self)));
        } else {
            self.wake_renewer_by(registry, wake_at);
        }
    }

    /// Makes sure the renewer wakes by `at` (otherwise it sleeps until its
    /// own `wake_at`).
    pub fn wake_renewer_by(&self, mut registry: MutexGuard<'_, Registry>, at: Instant) {
        if registry.wake_at.is_none_or(|wake_at| at < wake_at) {
            registry.wake_at = Some(at);
            drop(registry);
            self.renewer_wake.notify_one();
        }
    }
}

/// Closes the shared state when the last handle goes (guards hold a handle).
#[derive(Debug)]
struct Handle(Arc<Shared>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A lock client: owner identity, default options, the store, and the shared
/// renewal machinery. Cheap to clone (clones share everything).
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::{LockClient, LockOptions};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let client = LockClient::memory();
/// let guard = client.acquire("orders/42").await?;
/// println!("fencing token {}", guard.token());
/// guard.release().await?;
///
/// let total = client
///     .with_lock("orders/42", &LockOptions::default().ttl(Duration::from_secs(5)), async { 40 + 2 })
///     .await?;
/// assert_eq!(total, 42);
/// # Ok::<(), lock_runtime::LockError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct LockClient {
    handle: Arc<Handle>,
}

impl fmt::Debug for LockClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockClient")
            .field("backend", &self.shared().backend)
            .field("owner", &self.shared().owner)
            .field("defaults", &self.shared().defaults)
            .finish_non_exhaustive()
    }
}

impl LockClient {
    /// A client on a new private in-memory store (one process; tests, examples,
    /// and services that run one instance).
    pub fn memory() -> LockClient {
        LockClient::new(MemoryStore::new())
    }

    /// A client on `store` with the default options.
    pub fn new(store: impl CompareExchange) -> LockClient {
        LockClient::from_parts(Arc::new(store), LockClientBuilder::default())
    }

    /// A builder for a client on `store`.
    pub fn builder(store: impl CompareExchange) -> LockClientBuilder {
        LockClientBuilder {
            store: Some(Arc::new(store)),
            ..LockClientBuilder::default()
        }
    }

    fn from_parts(store: Arc<dyn CompareExchange>, builder: LockClientBuilder) -> LockClient {
        let owner = builder.owner.unwrap_or_else(default_owner);
        let caps = store.capabilities();
        let shared = Arc::new(Shared {
            backend: store.backend(),
            caps,
            store,
            owner: owner.into(),
            defaults: builder.defaults,
            wall_base: builder.wall.unwrap_or_else(|| Arc::new(SystemClock)).now(),
            mono_base: Instant::now(),
            backoff: builder.backoff.or(caps.poll).unwrap_or_default(),
            lock_delay: builder.lock_delay,
            nonce: AtomicU64::new(1),
            next_id: AtomicU64::new(1),
            observations: Mutex::default(),
            registry: Mutex::default(),
            renewer_wake: Notify::new(),
            sessions: tokio::sync::Mutex::default(),
            stats: Stats::default(),
            closed: AtomicBool::new(false),
            closed_notify: Notify::new(),
        });
        LockClient {
            handle: Arc::new(Handle(shared)),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.0
    }

    /// This client's identity as written into lock records: `uuid@host:pid`
    /// unless set with [`LockClientBuilder::owner`].
    pub fn owner(&self) -> &str {
        &self.shared().owner
    }

    /// The backend's name (`memory`, `etcd`, `ravendb`).
    pub fn backend(&self) -> &'static str {
        self.shared().backend
    }

    /// The default options of this client.
    pub fn options(&self) -> &LockOptions {
        &self.shared().defaults
    }

    /// What this client has done so far.
    pub fn stats(&self) -> ClientStats {
        let stats = &self.shared().stats;
        ClientStats {
            acquired: stats.acquired.load(Ordering::Relaxed),
            contended: stats.contended.load(Ordering::Relaxed),
            takeovers: stats.takeovers.load(Ordering::Relaxed),
            lost: stats.lost.load(Ordering::Relaxed),
            released: stats.released.load(Ordering::Relaxed),
        }
    }

    /// Acquires `key` with the client's default options (by default waiting
    /// forever, like [`tokio::sync::Mutex::lock`]).
    pub async fn acquire(&self, key: &str) -> Result<LockGuard, LockError> {
        self.acquire_with(key, &self.shared().defaults).await
    }

    /// Tries once: `Ok(None)` if someone else holds `key`.
    pub async fn try_acquire(&self, key: &str) -> Result<Option<LockGuard>, LockError> {
        let options = self.shared().defaults.clone().wait(Wait::Never);
        match self.acquire_with(key, &options).await {
            Ok(guard) => Ok(Some(guard)),
            Err(LockError::Busy { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Acquires `key` with `options`.
    ///
    /// Errors: [`LockError::Busy`] (held, `Wait::Never`), [`LockError::Timeout`]
    /// (held for the whole wait), [`LockError::InvalidKey`] and
    /// [`LockError::Config`] before any I/O, and backend errors.
    pub async fn acquire_with(
        &self,
        key: &str,
        options: &LockOptions,
    ) -> Result<LockGuard, LockError> {
        validate_key(key)?;
        options.validate()?;
        let shared = self.shared();
        let started = Instant::now();
        let deadline = options.wait.limit().map(|limit| started + limit);
        let mut session = if shared.caps.leases {
            Some(shared.session(key, options.ttl, options.renew).await?)
        } else {
            None
        };
        let record = shared.record(options.ttl, started);
        let mut expect = Expect::Absent;
        let mut attempt: u32 = 0;
        let mut contended = false;
        let mut sent = started;
        let (index, takeover) = loop {
            if attempt > 0 || contended {
                // Deadlines are computed from the send time: read it afresh
                // for every retry (the first attempt reuses `started`).
                sent = Instant::now();
            }
            let lease = session.as_ref().map(|s| s.lease);
            let outcome = shared.store().put(key, &record, expect, lease).await;
            let current = match outcome {
                Ok(PutOutcome::Swapped { index }) => break (index, expect != Expect::Absent),
                Ok(PutOutcome::Conflict { current }) => current,
                Err(StoreError::LeaseGone(_)) if session.is_some() => {
                    // The session died under us: start a new one and retry now.
                    if let Some(dead) = &session {
                        shared.session_lost(dead, LostReason::LeaseExpired);
                    }
                    session = Some(shared.session(key, options.ttl, options.renew).await?);
                    attempt += 1;
                    if attempt > 3 {
                        return Err(LockError::config(format!(
                            "the {} backend keeps rejecting fresh leases for lock `{key}`",
                            shared.backend
                        )));
                    }
                    continue;
                }
                Err(error) if error.is_transient() => {
                    // Ambiguous: the write may have committed. Read back; a
                    // record of ours found there is handled below.
                    tracing::debug!(key, %error, "distlock: write failed; reading back");
                    match shared.store().get(key).await {
                        Ok(current) => current,
                        Err(_) => {
                            if deadline.is_some_and(|d| Instant::now() >= d) {
                                return Err(shared.store_error(key, error));
                            }
                            sleep_bounded(shared.backoff.delay(attempt), deadline).await;
                            attempt = attempt.saturating_add(1);
                            expect = Expect::Absent;
                            continue;
                        }
                    }
                }
                Err(error) => return Err(shared.store_error(key, error)),
            };
            let Some(entry) = current else {
                // Freed between our write and the read: try again at once.
                expect = Expect::Absent;
                attempt = attempt.saturating_add(1);
                if attempt > 64 {
                    tokio::task::yield_now().await;
                }
                continue;
            };
            if entry.record.same_acquisition(&record) {
                // A write of ours whose answer was lost did commit.
                break (entry.index, expect != Expect::Absent);
            }
            if !contended {
                contended = true;
                shared.stats.contended.fetch_add(1, Ordering::Relaxed);
            }
            let now = Instant::now();
            let takeover_at = if shared.caps.leases {
                None
            } else {
                Some(shared.observe(key, &entry, now))
            };
            if let Some(at) = takeover_at
                && at <= now
            {
                expect = Expect::Index(entry.index);
                continue;
            }
            expect = Expect::Absent;
            match deadline {
                Some(d) if now >= d => {
                    let holder = entry.record.owner.to_string();
                    return Err(if options.wait == Wait::Never {
                        LockError::Busy {
                            key: key.to_owned(),
                            holder,
                        }
                    } else {
                        LockError::Timeout {
                            key: key.to_owned(),
                            waited: now - started,
                            holder,
                        }
                    });
                }
                _ => {}
            }
            let wake = match (deadline, takeover_at) {
                (Some(d), Some(t)) => Some(d.min(t)),
                (d, t) => d.or(t),
            };
            if shared.caps.watch {
                let watched = match wake {
                    Some(wake) => timeout_at(wake, shared.store().watch(key, Some(entry.index)))
                        .await
                        .unwrap_or(Ok(())),
                    None => shared.store().watch(key, Some(entry.index)).await,
                };
                if let Err(error) = watched {
                    tracing::debug!(key, %error, "distlock: watch failed; polling instead");
                    sleep_bounded(shared.backoff.delay(attempt), wake).await;
                }
            } else {
                sleep_bounded(shared.backoff.delay(attempt), wake).await;
            }
            attempt = attempt.saturating_add(1);
        };
        Ok(self.held(
            key, record, index, sent, options, session, takeover, contended,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn held(
        &self,
        key: &str,
        record: Record,
        index: u64,
        sent: Instant,
        options: &LockOptions,
        session: Option<Arc<Session>>,
        takeover: bool,
        contended: bool,
    ) -> LockGuard {
        let shared = self.shared();
        if contended {
            shared.forget(key);
        }
        shared.stats.acquired.fetch_add(1, Ordering::Relaxed);
        if takeover {
            shared.stats.takeovers.fetch_add(1, Ordering::Relaxed);
            tracing::info!(key, token = index, "distlock: took over an abandoned lock");
        }
        let held = Arc::new(Held::new(
            shared.next_id.fetch_add(1, Ordering::Relaxed),
            key.into(),
            record,
            index,
            sent,
            options.renew,
            options.hold_at_least,
            session,
        ));
        shared.register(&held);
        LockGuard::new(self.clone(), held)
    }

    /// Runs `body` while holding `key`, then releases it.
    ///
    /// Inside `body`, [`crate::current`] gives the key and fencing token. If the
    /// lock is lost while `body` runs, `body` is dropped at its next await point
    /// and [`LockError::Lost`] is returned (unless `options.on_lost` is
    /// [`crate::OnLost::Continue`]). A panic in `body` releases the lock too.
    pub async fn with_lock<F>(
        &self,
        key: &str,
        options: &LockOptions,
        body: F,
    ) -> Result<F::Output, LockError>
    where
        F: Future,
    {
        let guard = self.acquire_with(key, options).await?;
        crate::guard::run_locked(guard, options.on_lost, body).await
    }
}

async fn sleep_bounded(delay: Duration, bound: Option<Instant>) {
    let until = Instant::now() + delay;
    sleep_until(bound.map_or(until, |bound| bound.min(until))).await;
}

fn default_owner() -> String {
    let host = gethostname::gethostname();
    format!(
        "{}@{}:{}",
        uuid::Uuid::new_v4(),
        host.to_string_lossy(),
        std::process::id()
    )
}

/// Configures a [`LockClient`].
///
/// ```
/// use std::time::Duration;
/// use lock_runtime::{LockClient, LockOptions, Wait, store::memory::MemoryStore};
///
/// let client = LockClient::builder(MemoryStore::new())
///     .defaults(LockOptions::default().ttl(Duration::from_secs(10)).wait(Wait::For(Duration::from_secs(1))))
///     .build()
///     .unwrap();
/// assert_eq!(client.options().ttl, Duration::from_secs(10));
/// ```
#[derive(Default)]
pub struct LockClientBuilder {
    store: Option<Arc<dyn CompareExchange>>,
    defaults: LockOptions,
    owner: Option<String>,
    wall: Option<Arc<dyn WallClock>>,
    backoff: Option<Backoff>,
    lock_delay: Duration,
}

impl fmt::Debug for LockClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockClientBuilder")
            .field("defaults", &self.defaults)
            .field("owner", &self.owner)
            .field("backoff", &self.backoff)
            .field("lock_delay", &self.lock_delay)
            .finish_non_exhaustive()
    }
}

impl LockClientBuilder {
    /// The default options for every lock of this client.
    pub fn defaults(mut self, defaults: LockOptions) -> Self {
        self.defaults = defaults;
        self
    }

    /// The owner identity written into records (default `uuid@host:pid`). Must
    /// be unique per client across the cluster.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// The wall clock used for the informational timestamps in records.
    pub fn wall_clock(mut self, clock: impl WallClock) -> Self {
        self.wall = Some(Arc::new(clock));
        self
    }

    /// The polling backoff used when the store has no watch (default: the
    /// store's suggestion, [`crate::store::Capabilities::poll`], else
    /// [`Backoff::default`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Extra time, beyond the holder's ttl, to observe an unchanged lock before
    /// taking it over (guards against clock-rate drift; default 0).
    pub fn lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = delay;
        self
    }

    /// The rate at which this client's local monotonic clock runs, as a
    /// multiple of real time (simulations use 0.96..=1.04 to model clock
    /// drift). Placeholder on this branch: accepted and ignored; the engine
    /// rewrite implements it.
    #[cfg(feature = "testing")]
    #[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
    pub fn clock_rate(self, rate: f64) -> Self {
        let _ = rate;
        self
    }

    /// Builds the client, checking the configuration.
    pub fn build(self) -> Result<LockClient, LockError> {
        self.defaults.validate()?;
        if let Some(owner) = &self.owner
            && (owner.is_empty() || owner.chars().any(char::is_control))
        {
            return Err(LockError::config(
                "the owner identity must be non-empty printable text, unique per client",
            ));
        }
        if let Some(backoff) = self.backoff
            && (backoff.min.is_zero() || backoff.max < backoff.min)
        {
            return Err(LockError::config(
                "backoff needs 0 < min <= max (for example 2ms and 64ms)",
            ));
        }
        let store = self
            .store
            .clone()
            .unwrap_or_else(|| Arc::new(MemoryStore::new()));
        Ok(LockClient::from_parts(store, self))
    }
}
