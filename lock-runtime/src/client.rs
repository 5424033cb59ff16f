//! [`LockClient`]: the public handle on a client's lock engine
//! ([`crate::lock`]), and its builder.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::LockError;
use crate::guard::LockGuard;
use crate::lock::{ClientHandle, Config, Engine, SystemClock, WallClock};
use crate::options::{LockOptions, Wait};
use crate::store::memory::MemoryStore;
use crate::store::{Backoff, CompareExchange};

/// The longest accepted [`LockClientBuilder::lock_delay`].
const MAX_LOCK_DELAY: Duration = Duration::from_secs(86_400);
/// The longest accepted [`Backoff::max`].
const MAX_BACKOFF: Duration = Duration::from_secs(3_600);

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

/// A lock client: owner identity, default options, the store, and the shared
/// renewal machinery. Cheap to clone (clones share everything).
///
/// ```
/// use std::time::Duration;
/// use distlock::{LockClient, LockOptions};
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
/// # Ok::<(), distlock::LockError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct LockClient {
    handle: Arc<ClientHandle>,
}

impl fmt::Debug for LockClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockClient")
            .field("backend", &self.engine().backend)
            .field("owner", &self.engine().owner)
            .field("defaults", &self.engine().defaults)
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
        let engine = Engine::new(
            store,
            Config {
                owner: builder.owner.unwrap_or_else(default_owner),
                defaults: builder.defaults,
                wall: builder.wall.unwrap_or_else(|| Arc::new(SystemClock)),
                backoff: builder.backoff,
                lock_delay: builder.lock_delay,
                clock_rate: builder.clock_rate,
            },
        );
        LockClient {
            handle: Arc::new(ClientHandle(Arc::new(engine))),
        }
    }

    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.handle.0
    }

    /// The store this client works on.
    pub(crate) fn store(&self) -> &dyn CompareExchange {
        self.engine().store()
    }

    /// This client's identity as written into lock records: `uuid@host:pid`
    /// unless set with [`LockClientBuilder::owner`].
    pub fn owner(&self) -> &str {
        &self.engine().owner
    }

    /// The backend's name (`memory`, `etcd`, `ravendb`).
    pub fn backend(&self) -> &'static str {
        self.engine().backend
    }

    /// The default options of this client.
    pub fn options(&self) -> &LockOptions {
        &self.engine().defaults
    }

    /// Waits until the background work of this client is done, at most
    /// `limit`: releases of dropped guards, cleanups after cancelled
    /// acquisitions, scheduled (`hold_at_least`) releases. Returns whether it
    /// finished. Call it before a short-lived program exits (the background
    /// task dies with the runtime), after dropping every guard.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let client = distlock::LockClient::memory();
    /// drop(client.acquire("jobs/nightly").await?); // released in the background
    /// assert!(client.wait_idle(std::time::Duration::from_secs(5)).await);
    /// assert!(client.try_acquire("jobs/nightly").await?.is_some());
    /// # Ok::<(), distlock::LockError>(())
    /// # }).unwrap();
    /// ```
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        const POLL: Duration = Duration::from_millis(5);
        let start = tokio::time::Instant::now();
        loop {
            if self.engine().is_idle() {
                return true;
            }
            let waited = start.elapsed();
            if waited >= limit {
                return false;
            }
            tokio::time::sleep(POLL.min(limit - waited)).await;
        }
    }

    /// What this client has done so far.
    pub fn stats(&self) -> ClientStats {
        let events = &self.engine().events;
        ClientStats {
            acquired: events.acquired.load(Ordering::Relaxed),
            contended: events.contended.load(Ordering::Relaxed),
            takeovers: events.takeovers.load(Ordering::Relaxed),
            lost: events.lost.load(Ordering::Relaxed),
            released: events.released.load(Ordering::Relaxed),
        }
    }

    /// Acquires `key` with the client's default options (by default waiting
    /// forever, like [`tokio::sync::Mutex::lock`]).
    pub async fn acquire(&self, key: &str) -> Result<LockGuard, LockError> {
        self.acquire_with(key, &self.engine().defaults).await
    }

    /// Tries once: `Ok(None)` if someone else holds `key`.
    pub async fn try_acquire(&self, key: &str) -> Result<Option<LockGuard>, LockError> {
        let options = self.engine().defaults.clone().wait(Wait::Never);
        match self.acquire_with(key, &options).await {
            Ok(guard) => Ok(Some(guard)),
            Err(LockError::Busy { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Acquires `key` with `options`.
    ///
    /// Cancel-safe: if this future is dropped (or fails) after a write that
    /// may have committed, the client's background task deletes the record if
    /// it is ours.
    ///
    /// Errors: [`LockError::Busy`] (held, `Wait::Never`), [`LockError::Timeout`]
    /// (held for the whole wait), [`LockError::InvalidKey`] and
    /// [`LockError::Config`] before any I/O, and backend errors.
    pub async fn acquire_with(
        &self,
        key: &str,
        options: &LockOptions,
    ) -> Result<LockGuard, LockError> {
        let lock = self.engine().acquire(key, options).await?;
        Ok(LockGuard::new(Arc::clone(&self.handle), lock))
    }

    /// Runs `body` while holding `key`, then releases it.
    ///
    /// Inside `body`, [`crate::current`] gives the key and fencing token. If the
    /// lock is lost while `body` runs, `body` is dropped at its next await point
    /// and [`LockError::Lost`] is returned (unless `options.on_lost` is
    /// [`crate::OnLost::Continue`]). A panic in `body` releases the lock too,
    /// and so does dropping this future at any point.
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
/// use distlock::{LockClient, LockOptions, Wait, store::memory::MemoryStore};
///
/// let client = LockClient::builder(MemoryStore::new())
///     .defaults(LockOptions::default().ttl(Duration::from_secs(10)).wait(Wait::For(Duration::from_secs(1))))
///     .build()
///     .unwrap();
/// assert_eq!(client.options().ttl, Duration::from_secs(10));
/// ```
pub struct LockClientBuilder {
    store: Option<Arc<dyn CompareExchange>>,
    defaults: LockOptions,
    owner: Option<String>,
    wall: Option<Arc<dyn WallClock>>,
    backoff: Option<Backoff>,
    lock_delay: Duration,
    clock_rate: f64,
}

impl Default for LockClientBuilder {
    fn default() -> Self {
        LockClientBuilder {
            store: None,
            defaults: LockOptions::default(),
            owner: None,
            wall: None,
            backoff: None,
            lock_delay: Duration::ZERO,
            clock_rate: 1.0,
        }
    }
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
    /// [`Backoff::default`]). `max` may be at most an hour.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// Extra time, beyond the holder's ttl, to observe an unchanged lock before
    /// taking it over (guards against clock-rate drift; default 0, at most a day).
    pub fn lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = delay;
        self
    }

    /// Makes this client's monotonic clock run at `rate` times real time, as a
    /// drifting machine clock would (simulation only).
    #[cfg(feature = "testing")]
    #[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
    pub fn clock_rate(mut self, rate: f64) -> Self {
        self.clock_rate = rate;
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
            && (backoff.min.is_zero() || backoff.max < backoff.min || backoff.max > MAX_BACKOFF)
        {
            return Err(LockError::config(
                "backoff needs 0 < min <= max <= 1h (for example 2ms and 64ms)",
            ));
        }
        if self.lock_delay > MAX_LOCK_DELAY {
            return Err(LockError::config(format!(
                "lock_delay {:?} is longer than a day; it is the extra time to observe an \
                 abandoned lock before taking it over (a few seconds at most is typical)",
                self.lock_delay
            )));
        }
        if !(self.clock_rate.is_finite() && (0.5..=2.0).contains(&self.clock_rate)) {
            return Err(LockError::config("clock_rate must be between 0.5 and 2.0"));
        }
        let store = self
            .store
            .clone()
            .unwrap_or_else(|| Arc::new(MemoryStore::new()));
        Ok(LockClient::from_parts(store, self))
    }
}
