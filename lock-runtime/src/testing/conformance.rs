//! The conformance suite: the checks every [`CompareExchange`] backend must
//! pass, runnable from any crate's tests.
//!
//! A [`Backend`] describes the backend under test: a name, the capabilities
//! it implements, and a function that opens a new connection to it (one per
//! simulated service instance; connections must see the same data).
//! [`run_all`] runs every check that applies to those capabilities and stops at
//! the first [`Failure`], which names the check, the key and what was wrong.
//! The checks are public too, to run one at a time or with other sizes.
//!
//! Run it on a multi-threaded Tokio runtime with a running clock (not a paused
//! one): the checks measure real ttls, from 300 ms to 20 s. Each check is
//! bounded by [`Backend::time_limit`], so a store that never answers fails
//! instead of hanging. Keys are unique per run ([`unique_key`]), under
//! `conformance/`, so several runs can share one server.
//!
//! ```
//! use distlock::store::Capabilities;
//! use distlock::store::memory::MemoryStore;
//! use distlock::testing::conformance::{self, Backend};
//!
//! # tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(async {
//! // Every "connection" is a clone of one in-memory store, so clients contend.
//! let caps = Capabilities::NONE.with_watch(true).with_listing(true);
//! let backend = Backend::shared("memory", caps, MemoryStore::new());
//! let report = conformance::run_all(&backend).await?;
//! assert!(report.skipped().contains(&"lease_contract"));
//! # Ok::<(), conformance::Failure>(())
//! # }).unwrap();
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};

use super::faults::{Faults, SkewedClock};
use super::observer::Observer;
use crate::store::{
    BoxError, Capabilities, CompareExchange, DeleteOutcome, Entry, Expect, Listed, PutOutcome,
    Record, StoreError, Stored,
};
use crate::{LockClient, LockClientBuilder, LockError, LockOptions, LostReason, MAX_KEY_LEN, Wait};

/// A future that opens a connection to the backend under test.
pub type Connecting =
    Pin<Box<dyn Future<Output = Result<Arc<dyn CompareExchange>, BoxError>> + Send>>;

/// Opens a new connection to the backend under test.
pub type Connect = Arc<dyn Fn() -> Connecting + Send + Sync>;

/// The backend under test: its name, the capabilities it is expected to
/// have, and how to open a connection to it.
///
/// Each connection stands for one service instance: the suite builds one
/// [`LockClient`] per connection and makes them contend, so every connection
/// must reach the same data (the same server, or clones of one in-process
/// store that share their state).
#[derive(Clone)]
pub struct Backend {
    name: String,
    expect: Capabilities,
    connect: Connect,
    clients: usize,
    cycles: usize,
    time_limit: Duration,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("expect", &self.expect)
            .field("clients", &self.clients)
            .field("cycles", &self.cycles)
            .field("time_limit", &self.time_limit)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// A backend reached through `connect`, which opens a new connection
    /// (a new store value) each time it is called. `expect` names the
    /// optional capabilities the store implements (its `watch` and `leases`;
    /// `poll` is not checked): the suite checks that the store reports them
    /// and runs the checks that apply.
    ///
    /// ```
    /// use distlock::store::{Capabilities, StoreError};
    /// use distlock::store::memory::MemoryStore;
    /// use distlock::testing::conformance::Backend;
    ///
    /// let shared = MemoryStore::new();
    /// let caps = Capabilities::NONE.with_watch(true).with_listing(true);
    /// let backend = Backend::new("memory", caps, move || {
    ///     let store = shared.clone(); // a real backend would connect here
    ///     async move { Ok::<_, StoreError>(store) }
    /// });
    /// assert_eq!(backend.name(), "memory");
    /// ```
    pub fn new<F, Fut, S, E>(name: impl Into<String>, expect: Capabilities, connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, E>> + Send + 'static,
        S: CompareExchange,
        E: Into<BoxError>,
    {
        let connect = Arc::new(move || -> Connecting {
            let connecting = connect();
            Box::pin(async move {
                match connecting.await {
                    Ok(store) => Ok(Arc::new(store) as Arc<dyn CompareExchange>),
                    Err(error) => Err(error.into()),
                }
            })
        });
        Backend {
            name: name.into(),
            expect,
            connect,
            clients: 4,
            cycles: 25,
            time_limit: Duration::from_secs(300),
        }
    }

    /// A backend whose connections are clones of `store` (clones must share
    /// their state, as [`crate::store::memory::MemoryStore`]'s do).
    pub fn shared<S>(name: impl Into<String>, expect: Capabilities, store: S) -> Self
    where
        S: CompareExchange + Clone,
    {
        Backend::new(name, expect, move || {
            let store = store.clone();
            async move { Ok::<_, std::convert::Infallible>(store) }
        })
    }

    /// How many clients contend in [`run_all`]'s [`never_two_holders`], and
    /// how many acquire/release cycles each makes (default 4 and 25).
    pub fn contention(mut self, clients: usize, cycles: usize) -> Self {
        self.clients = clients.max(1);
        self.cycles = cycles.max(1);
        self
    }

    /// The longest any one check may take before it fails as hung (default
    /// 5 minutes). Raise it for a long [`never_two_holders`] run on a slow
    /// or busy server: the limit is for hangs, not for speed.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// The name given to [`Backend::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The capabilities the store is expected to have.
    pub fn expected_capabilities(&self) -> Capabilities {
        self.expect
    }

    /// Opens a new connection.
    pub async fn store(&self) -> Result<Arc<dyn CompareExchange>, Failure> {
        (self.connect)().await.map_err(|error| Failure {
            backend: self.name.clone(),
            check: "connect",
            key: None,
            problem: format!("opening a connection failed: {error}"),
        })
    }

    /// A client on a new connection, with `options` as its defaults.
    pub async fn client(&self, options: LockOptions) -> Result<LockClient, Failure> {
        self.client_with(options, |builder| builder).await
    }

    /// A client on a new connection, with `options` as its defaults and the
    /// builder adjusted by `tweak` (for example another wall clock).
    pub async fn client_with(
        &self,
        options: LockOptions,
        tweak: impl FnOnce(LockClientBuilder) -> LockClientBuilder,
    ) -> Result<LockClient, Failure> {
        let store = self.store().await?;
        self.build(tweak(LockClient::builder(store).defaults(options)))
    }

    fn build(&self, builder: LockClientBuilder) -> Result<LockClient, Failure> {
        builder.build().map_err(|error| Failure {
            backend: self.name.clone(),
            check: "connect",
            key: None,
            problem: format!("building a client failed: {error}"),
        })
    }

    /// Two clients with `ttl`: `a` through a [`Faults`] wrapper the check can
    /// cut (returned too), `b` plainly connected.
    async fn faulty_pair(
        &self,
        ttl: Duration,
    ) -> Result<(Faults, LockClient, LockClient), Failure> {
        let link = Faults::from_arc(self.store().await?);
        let a = self
            .build(LockClient::builder(link.clone()).defaults(LockOptions::default().ttl(ttl)))?;
        let b = self.client(LockOptions::default().ttl(ttl)).await?;
        Ok((link, a, b))
    }
}

/// A conformance check that failed: which, on which backend and key, and
/// what was wrong.
///
/// Its message ends with the item to read for the rule that was broken (the
/// check's documentation, which cites the store contract).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    backend: String,
    check: &'static str,
    key: Option<String>,
    problem: String,
}

impl Failure {
    /// The backend's name.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The check that failed (its function's name in this module, or
    /// `"connect"` when the backend could not be reached).
    pub fn check(&self) -> &'static str {
        self.check
    }

    /// The key the check used, if it used one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// What was wrong.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: conformance check `{}` failed",
            self.backend, self.check
        )?;
        if let Some(key) = &self.key {
            write!(f, " on key {key:?}")?;
        }
        write!(f, ": {}", self.problem)?;
        if self.check != "connect" {
            write!(
                f,
                " (the rule: distlock::testing::conformance::{})",
                self.check
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

/// What [`run_all`] ran.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    passed: Vec<&'static str>,
    skipped: Vec<&'static str>,
}

impl Report {
    /// The checks that ran and passed, in order.
    pub fn passed(&self) -> &[&'static str] {
        &self.passed
    }

    /// The checks that did not apply to the backend's capabilities.
    pub fn skipped(&self) -> &[&'static str] {
        &self.skipped
    }
}

/// Every check, in the order [`run_all`] runs them.
pub const CHECKS: [&str; 12] = [
    "capabilities_as_declared",
    "store_contract",
    "watch_contract",
    "lease_contract",
    "listing_contract",
    "bad_input_gets_typed_errors",
    "never_two_holders",
    "stale_holder_cannot_release_or_renew",
    "dropped_future_releases_promptly",
    "abandoned_lock_free_after_ttl_not_before",
    "renewal_keeps_and_loss_cancels",
    "skewed_wall_clocks_change_nothing",
];

/// Runs every check that applies to the backend's expected capabilities, in
/// the order of [`CHECKS`], and returns at the first failure.
///
/// [`never_two_holders`] runs with [`Backend::contention`]'s sizes,
/// [`skewed_wall_clocks_change_nothing`] with 20 cycles per client;
/// [`watch_contract`] runs only for a store with `watch`, [`lease_contract`]
/// only for one with `leases`, [`listing_contract`] only for one with
/// `listing`.
pub async fn run_all(backend: &Backend) -> Result<Report, Failure> {
    let mut report = Report::default();
    let expect = backend.expect;
    capabilities_as_declared(backend).await?;
    report.passed.push("capabilities_as_declared");
    store_contract(backend).await?;
    report.passed.push("store_contract");
    if expect.watch {
        watch_contract(backend).await?;
        report.passed.push("watch_contract");
    } else {
        report.skipped.push("watch_contract");
    }
    if expect.leases {
        lease_contract(backend).await?;
        report.passed.push("lease_contract");
    } else {
        report.skipped.push("lease_contract");
    }
    if expect.listing {
        listing_contract(backend).await?;
        report.passed.push("listing_contract");
    } else {
        report.skipped.push("listing_contract");
    }
    bad_input_gets_typed_errors(backend).await?;
    report.passed.push("bad_input_gets_typed_errors");
    never_two_holders(backend, backend.clients, backend.cycles).await?;
    report.passed.push("never_two_holders");
    stale_holder_cannot_release_or_renew(backend).await?;
    report.passed.push("stale_holder_cannot_release_or_renew");
    dropped_future_releases_promptly(backend).await?;
    report.passed.push("dropped_future_releases_promptly");
    abandoned_lock_free_after_ttl_not_before(backend).await?;
    report
        .passed
        .push("abandoned_lock_free_after_ttl_not_before");
    renewal_keeps_and_loss_cancels(backend).await?;
    report.passed.push("renewal_keeps_and_loss_cancels");
    skewed_wall_clocks_change_nothing(backend, 20).await?;
    report.passed.push("skewed_wall_clocks_change_nothing");
    Ok(report)
}

/// A key unique to this process and call, under `prefix`: several runs (and
/// several tests) can share one server without seeing each other's keys.
///
/// ```
/// let a = distlock::testing::unique_key("jobs");
/// let b = distlock::testing::unique_key("jobs");
/// assert!(a.starts_with("jobs/") && a != b);
/// ```
pub fn unique_key(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}/{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros())
    )
}

// ---- the machinery of one check ---------------------------------------------------

/// One running check: what a failure names.
struct Check<'a> {
    backend: &'a Backend,
    name: &'static str,
    key: Option<String>,
}

impl<'a> Check<'a> {
    fn new(backend: &'a Backend, name: &'static str) -> Self {
        Check {
            backend,
            name,
            key: None,
        }
    }

    /// A fresh unique key for this check (and named in its failures).
    fn key(&mut self) -> String {
        let key = unique_key(&format!("conformance/{}", self.name));
        self.key = Some(key.clone());
        key
    }

    fn fail(&self, problem: impl Into<String>) -> Failure {
        Failure {
            backend: self.backend.name.clone(),
            check: self.name,
            key: self.key.clone(),
            problem: problem.into(),
        }
    }

    fn ensure(&self, holds: bool, problem: impl FnOnce() -> String) -> Result<(), Failure> {
        if holds {
            Ok(())
        } else {
            Err(self.fail(problem()))
        }
    }

    /// A store call that must not fail.
    fn ok<T>(&self, what: &str, result: Result<T, StoreError>) -> Result<T, Failure> {
        result.map_err(|error| self.fail(format!("{what} failed: {error}")))
    }

    /// A lock call that must not fail.
    fn locked<T>(&self, what: &str, result: Result<T, LockError>) -> Result<T, Failure> {
        result.map_err(|error| self.fail(format!("{what} failed: {error}")))
    }

    fn swapped(&self, what: &str, result: Result<PutOutcome, StoreError>) -> Result<u64, Failure> {
        match self.ok(what, result)? {
            PutOutcome::Swapped { index } => Ok(index),
            PutOutcome::Conflict { current } => Err(self.fail(format!(
                "{what}: expected the write to happen, got a conflict with {current:?}"
            ))),
        }
    }

    /// Runs `body` within the backend's time limit.
    async fn limited<T>(
        &self,
        body: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        let limit = self.backend.time_limit;
        match timeout(limit, body).await {
            Ok(result) => result,
            Err(_) => Err(self.fail(format!(
                "did not finish within {limit:?} (a store call that never returns, or a lock \
                 that is never freed)"
            ))),
        }
    }

    /// Waits for `future` at most `limit`; `what` names it in the failure.
    async fn within<T>(
        &self,
        limit: Duration,
        what: &str,
        future: impl Future<Output = T>,
    ) -> Result<T, Failure> {
        timeout(limit, future)
            .await
            .map_err(|_| self.fail(format!("{what}: no answer within {limit:?}")))
    }
}

fn record(owner: &str, nonce: u64) -> Record {
    Record {
        owner: owner.into(),
        nonce,
        ttl_ms: 10_000,
        written_at_ms: 0,
    }
}

fn index_of(entry: &Option<Entry>) -> Option<u64> {
    entry.as_ref().map(|e| e.index)
}

/// Joins every task; the first failure (or panic) aborts the others.
async fn join_all<T: 'static>(
    check: &Check<'_>,
    mut tasks: JoinSet<Result<T, Failure>>,
) -> Result<Vec<T>, Failure> {
    let mut done = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(value)) => done.push(value),
            Ok(Err(failure)) => return Err(failure),
            Err(error) => return Err(check.fail(format!("a contending task failed: {error}"))),
        }
    }
    Ok(done)
}

// ---- the checks ----------------------------------------------------------------

/// The store reports the capabilities it was declared with
/// ([`Backend::new`]'s `expect`): [`Capabilities::watch`] and
/// [`Capabilities::leases`] decide how the engine waits and renews (and
/// [`Capabilities::listing`] what operator tools can do), so a store that
/// reports one it does not implement (or hides one it does) is wrong
/// about itself.
pub async fn capabilities_as_declared(backend: &Backend) -> Result<(), Failure> {
    let check = Check::new(backend, "capabilities_as_declared");
    check
        .limited(async {
            let store = backend.store().await?;
            let has = store.capabilities();
            let expect = backend.expect;
            check.ensure(
                has.watch == expect.watch
                    && has.leases == expect.leases
                    && has.listing == expect.listing,
                || {
                    format!(
                        "the store reports watch: {}, leases: {}, listing: {}, but was declared \
                         with watch: {}, leases: {}, listing: {} (declare what the store \
                         implements)",
                        has.watch,
                        has.leases,
                        has.listing,
                        expect.watch,
                        expect.leases,
                        expect.listing
                    )
                },
            )
        })
        .await
}

/// The store contract of [`CompareExchange`]: a fresh key is absent;
/// put-if-absent writes once and then conflicts, reporting the current entry;
/// a put or delete on a wrong index conflicts and changes nothing; a write on
/// the right index happens; the index grows on every write, also across
/// delete and re-create (it is the fencing token).
pub async fn store_contract(backend: &Backend) -> Result<(), Failure> {
    let mut check = Check::new(backend, "store_contract");
    let key = check.key();
    check
        .limited(async {
            let store = backend.store().await?;
            let (a, b) = (record("a", 1), record("b", 2));
            let fresh = check.ok("get", store.get(&key).await)?;
            check.ensure(fresh.is_none(), || {
                format!("a fresh key must read as absent, got {fresh:?}")
            })?;

            let first = check.swapped(
                "put if absent on a free key",
                store.put(&key, &a, Expect::Absent, None).await,
            )?;
            match check.ok("put", store.put(&key, &b, Expect::Absent, None).await)? {
                PutOutcome::Conflict {
                    current: Some(entry),
                } => {
                    check.ensure(entry.index == first && entry.record == a, || {
                        format!(
                            "a conflict must report the current entry (index {first}, record \
                             {a:?}), got {entry:?}"
                        )
                    })?;
                }
                other => {
                    return Err(check.fail(format!(
                        "put if absent on a held key must conflict and report the current \
                         entry, got {other:?}"
                    )));
                }
            }
            let wrong = first.saturating_add(1_000_000);
            let outcome = check.ok("put", store.put(&key, &b, Expect::Index(wrong), None).await)?;
            check.ensure(matches!(outcome, PutOutcome::Conflict { .. }), || {
                format!("a put on a wrong index must conflict, got {outcome:?}")
            })?;
            let kept = check.ok("get", store.get(&key).await)?;
            check.ensure(index_of(&kept) == Some(first), || {
                format!("a conflicting put must not write, the key now holds {kept:?}")
            })?;

            let second = check.swapped(
                "a put on the current index",
                store.put(&key, &b, Expect::Index(first), None).await,
            )?;
            check.ensure(second > first, || {
                format!("the index must grow on every write ({first} then {second})")
            })?;
            let got = check.ok("get", store.get(&key).await)?;
            check.ensure(
                got.as_ref().map(|e| (&e.record, e.index)) == Some((&b, second)),
                || format!("a read must return the last write ({b:?} at {second}), got {got:?}"),
            )?;

            let stale = check.ok("delete", store.delete(&key, first).await)?;
            check.ensure(matches!(stale, DeleteOutcome::Conflict { .. }), || {
                format!("a delete on a stale index must conflict, got {stale:?}")
            })?;
            let kept = check.ok("get", store.get(&key).await)?;
            check.ensure(index_of(&kept) == Some(second), || {
                format!("a conflicting delete must not delete, the key now holds {kept:?}")
            })?;
            let deleted = check.ok("delete", store.delete(&key, second).await)?;
            check.ensure(deleted == DeleteOutcome::Deleted, || {
                format!("a delete on the current index must delete, got {deleted:?}")
            })?;
            let gone = check.ok("get", store.get(&key).await)?;
            check.ensure(gone.is_none(), || {
                format!("a deleted key must read as absent, got {gone:?}")
            })?;
            let outcome = check.ok(
                "put",
                store.put(&key, &a, Expect::Index(second), None).await,
            )?;
            check.ensure(matches!(outcome, PutOutcome::Conflict { .. }), || {
                format!("a put on an index of a deleted key must conflict, got {outcome:?}")
            })?;

            let third = check.swapped(
                "put if absent on a deleted key",
                store.put(&key, &a, Expect::Absent, None).await,
            )?;
            check.ensure(third > second, || {
                format!(
                    "the index must grow across delete and re-create ({second} then {third}): \
                     it is the fencing token"
                )
            })?;
            let _ = store.delete(&key, third).await;
            Ok(())
        })
        .await
}

/// [`CompareExchange::watch`], for a store with [`Capabilities::watch`]: a
/// watch returns at once when the key no longer holds the index it was given
/// (or is absent when given one), and returns after a write or a delete of the
/// key, without an error. (It may return early; the engine re-reads.)
pub async fn watch_contract(backend: &Backend) -> Result<(), Failure> {
    let mut check = Check::new(backend, "watch_contract");
    let key = check.key();
    let prompt = Duration::from_secs(5);
    check
        .limited(async {
            let store = backend.store().await?;
            let first = check.swapped(
                "put",
                store.put(&key, &record("a", 1), Expect::Absent, None).await,
            )?;
            let answer = check
                .within(
                    prompt,
                    "a watch expecting the key absent while it exists",
                    store.watch(&key, None),
                )
                .await?;
            check.ok("a watch expecting the key absent while it exists", answer)?;
            let second = check.swapped(
                "put",
                store
                    .put(&key, &record("a", 2), Expect::Index(first), None)
                    .await,
            )?;
            let answer = check
                .within(
                    prompt,
                    "a watch of an index the key no longer holds",
                    store.watch(&key, Some(first)),
                )
                .await?;
            check.ok("a watch of an index the key no longer holds", answer)?;

            // A write wakes a watch of the current index.
            let watcher = backend.store().await?;
            let watching = {
                let key = key.clone();
                tokio::spawn(async move { watcher.watch(&key, Some(second)).await })
            };
            sleep(Duration::from_millis(50)).await;
            let third = check.swapped(
                "put",
                store
                    .put(&key, &record("a", 3), Expect::Index(second), None)
                    .await,
            )?;
            let woke = check
                .within(prompt, "a watch across a write", watching)
                .await?;
            let woke = woke.map_err(|e| check.fail(format!("the watching task failed: {e}")))?;
            check.ok("a watch across a write", woke)?;

            // So does a delete.
            let watcher = backend.store().await?;
            let watching = {
                let key = key.clone();
                tokio::spawn(async move { watcher.watch(&key, Some(third)).await })
            };
            sleep(Duration::from_millis(50)).await;
            let deleted = check.ok("delete", store.delete(&key, third).await)?;
            check.ensure(deleted == DeleteOutcome::Deleted, || {
                format!("a delete on the current index must delete, got {deleted:?}")
            })?;
            let woke = check
                .within(prompt, "a watch across a delete", watching)
                .await?;
            let woke = woke.map_err(|e| check.fail(format!("the watching task failed: {e}")))?;
            check.ok("a watch across a delete", woke)?;

            let answer = check
                .within(
                    prompt,
                    "a watch of an index of a deleted key",
                    store.watch(&key, Some(third)),
                )
                .await?;
            check.ok("a watch of an index of a deleted key", answer)
        })
        .await
}

/// Server leases, for a store with [`Capabilities::leases`]: a key put with a
/// lease reports it ([`Entry::lease`]); a keep-alive of a live lease answers
/// its remaining time; revoking the lease deletes its keys and a keep-alive
/// then reports it gone; a lease nobody keeps alive expires with its keys.
pub async fn lease_contract(backend: &Backend) -> Result<(), Failure> {
    let mut check = Check::new(backend, "lease_contract");
    let key = check.key();
    let ttl = Duration::from_secs(2);
    check
        .limited(async {
            let store = backend.store().await?;
            let lease = check.ok("grant_lease", store.grant_lease(ttl).await)?;
            check.swapped(
                "put with a lease",
                store
                    .put(&key, &record("a", 1), Expect::Absent, Some(lease))
                    .await,
            )?;
            let entry = check.ok("get", store.get(&key).await)?;
            check.ensure(entry.as_ref().and_then(|e| e.lease) == Some(lease), || {
                format!("a key put with lease {lease:?} must report it, got {entry:?}")
            })?;
            let left = check.ok("keep_alive", store.keep_alive(lease).await)?;
            check.ensure(left.is_some_and(|left| !left.is_zero()), || {
                format!("a keep-alive of a live lease must answer its time to live, got {left:?}")
            })?;
            check.ok("revoke_lease", store.revoke_lease(lease).await)?;
            let gone = check.ok("get", store.get(&key).await)?;
            check.ensure(gone.is_none(), || {
                format!("revoking a lease must delete its keys, the key holds {gone:?}")
            })?;
            match store.keep_alive(lease).await {
                Ok(None) | Err(StoreError::LeaseGone(_)) => {}
                other => {
                    return Err(check.fail(format!(
                        "a keep-alive of a revoked lease must report it gone (Ok(None) or \
                         LeaseGone), got {other:?}"
                    )));
                }
            }

            // A lease nobody keeps alive expires, and its keys with it.
            let lease = check.ok("grant_lease", store.grant_lease(ttl).await)?;
            let index = check.swapped(
                "put with a lease",
                store
                    .put(&key, &record("a", 2), Expect::Absent, Some(lease))
                    .await,
            )?;
            let started = Instant::now();
            let limit = ttl * 6;
            loop {
                let entry = check.ok("get", store.get(&key).await)?;
                if entry.is_none() {
                    break;
                }
                if started.elapsed() > limit {
                    let _ = store.delete(&key, index).await;
                    return Err(check.fail(format!(
                        "a key on a lease of {ttl:?} that nobody keeps alive still exists after \
                         {limit:?}"
                    )));
                }
                sleep(Duration::from_millis(50)).await;
            }
            Ok(())
        })
        .await
}

/// [`CompareExchange::list`] and [`CompareExchange::inspect`], for a store
/// with [`Capabilities::listing`]: under a unique prefix `P/`, keys held,
/// rewritten and released, next to sibling keys that start with `P` but not
/// with `P/`. Listing `P/` gives exactly the held keys (a released key is
/// not listed), in key order, each with the entry a read gives (record and
/// index); `limit` cuts the listing to its first keys (none for 0); listing
/// `P` gives the siblings too, in key order; a prefix with no key under it
/// lists nothing. `inspect` agrees with `get` (a released key is `None`).
pub async fn listing_contract(backend: &Backend) -> Result<(), Failure> {
    let mut check = Check::new(backend, "listing_contract");
    let base = check.key();
    check
        .limited(async {
            let store = backend.store().await?;
            let prefix = format!("{base}/");
            let under = |name: &str| format!("{prefix}{name}");
            // Siblings: `-` sorts before `/`, `0` after it.
            let siblings = [format!("{base}-sibling"), format!("{base}0/x")];
            let mut written = Vec::new();
            for (nonce, key) in (1..).zip(
                ["d", "a", "b", "c", "e"]
                    .into_iter()
                    .map(under)
                    .chain(siblings.iter().cloned()),
            ) {
                let index = check.swapped(
                    &format!("put if absent on {key}"),
                    store.put(&key, &record("a", nonce), Expect::Absent, None).await,
                )?;
                written.push((key, index));
            }
            // `b` is released, `d` rewritten (a renewal: a new index).
            let index_of_key = |name: &str| {
                written
                    .iter()
                    .find(|(key, _)| *key == under(name))
                    .map_or(0, |(_, index)| *index)
            };
            let deleted = check.ok("delete", store.delete(&under("b"), index_of_key("b")).await)?;
            check.ensure(deleted == DeleteOutcome::Deleted, || {
                format!("a delete on the current index must delete, got {deleted:?}")
            })?;
            check.swapped(
                "a put on the current index",
                store
                    .put(
                        &under("d"),
                        &record("a", 99),
                        Expect::Index(index_of_key("d")),
                        None,
                    )
                    .await,
            )?;

            let held: Vec<String> = ["a", "c", "d", "e"].into_iter().map(under).collect();
            let mut expected = Vec::new();
            for key in &held {
                let entry = check.ok("get", store.get(key).await)?;
                let Some(entry) = entry else {
                    return Err(check.fail(format!("{key} was written and reads as absent")));
                };
                expected.push(Listed {
                    key: key.clone(),
                    stored: Stored::Lock(entry),
                });
            }
            let listed = check.ok("list", store.list(&prefix, 100).await)?;
            check.ensure(listed == expected, || {
                format!(
                    "listing {prefix:?} must give exactly the held keys under it, in key order, \
                     each with the entry a read gives (a released key and the siblings {siblings:?} \
                     not at all): expected {expected:?}, got {listed:?}"
                )
            })?;
            let first = check.ok("list", store.list(&prefix, 2).await)?;
            check.ensure(first[..] == expected[..2], || {
                format!(
                    "listing with limit 2 must give the first two keys, {:?}, got {first:?}",
                    &expected[..2]
                )
            })?;
            let none = check.ok("list", store.list(&prefix, 0).await)?;
            check.ensure(none.is_empty(), || {
                format!("listing with limit 0 must give nothing, got {none:?}")
            })?;
            let empty = check.ok("list", store.list(&format!("{prefix}none/"), 10).await)?;
            check.ensure(empty.is_empty(), || {
                format!("a prefix with no key under it must list nothing, got {empty:?}")
            })?;
            let wide = check.ok("list", store.list(&base, 100).await)?;
            let keys: Vec<&str> = wide.iter().map(|l| l.key.as_str()).collect();
            let mut want: Vec<&str> = held.iter().map(String::as_str).collect();
            want.insert(0, &siblings[0]);
            want.push(&siblings[1]);
            check.ensure(keys == want, || {
                format!("listing {base:?} must give {want:?} in key order, got {keys:?}")
            })?;

            let inspected = check.ok("inspect", store.inspect(&held[0]).await)?;
            check.ensure(inspected.as_ref() == Some(&expected[0].stored), || {
                format!(
                    "inspect must give what get gives ({:?}), got {inspected:?}",
                    expected[0].stored
                )
            })?;
            let released = check.ok("inspect", store.inspect(&under("b")).await)?;
            check.ensure(released.is_none(), || {
                format!("a released key must inspect as None, got {released:?}")
            })?;

            for listed in wide {
                let _ = store.delete(&listed.key, listed.stored.index()).await;
            }
            Ok(())
        })
        .await
}

/// Invariant 6: bad input gets typed errors before any I/O, and no lock is
/// written for it: invalid keys are [`LockError::InvalidKey`], a ttl below
/// the minimum is [`LockError::Config`] naming the ttl.
pub async fn bad_input_gets_typed_errors(backend: &Backend) -> Result<(), Failure> {
    let mut check = Check::new(backend, "bad_input_gets_typed_errors");
    let key = check.key();
    check
        .limited(async {
            let client = backend.client(LockOptions::default()).await?;
            let long = "k".repeat(MAX_KEY_LEN + 1);
            for bad in ["", "a\u{0}b", "line\nbreak", long.as_str()] {
                match client.try_acquire(bad).await {
                    Err(LockError::InvalidKey { reason, .. }) if !reason.is_empty() => {}
                    other => {
                        let shown: String = bad.chars().take(40).collect();
                        return Err(check.fail(format!(
                            "key {shown:?} must be rejected as invalid, with a reason, got \
                             {other:?}"
                        )));
                    }
                }
            }
            let tiny = LockOptions::default().ttl(Duration::from_millis(1));
            match client.acquire_with(&key, &tiny).await {
                Err(error @ LockError::Config { .. }) if error.to_string().contains("ttl") => {}
                other => {
                    return Err(check.fail(format!(
                        "a 1 ms ttl must be a configuration error naming the ttl, got {other:?}"
                    )));
                }
            }
            let store = backend.store().await?;
            let written = check.ok("get", store.get(&key).await)?;
            check.ensure(written.is_none(), || {
                format!("a rejected lock must not be written, the key holds {written:?}")
            })
        })
        .await
}

/// Invariants 1 and 2 under contention: `clients` clients (each on its own
/// connection) make `cycles` acquire/release cycles each on one key, checked
/// by an independent [`Observer`]: never two holders inside at once, fencing
/// tokens strictly increasing, no holder told it lost its lock, every cycle
/// run. Returns the observer (for figures).
pub async fn never_two_holders(
    backend: &Backend,
    clients: usize,
    cycles: usize,
) -> Result<Arc<Observer>, Failure> {
    let mut check = Check::new(backend, "never_two_holders");
    let key = check.key();
    let check = &check;
    check
        .limited(async {
            let mut contenders = Vec::with_capacity(clients);
            for _ in 0..clients {
                let options = LockOptions::default().ttl(Duration::from_secs(10));
                contenders.push(backend.client(options).await?);
            }
            let (observer, _) =
                contend(check, &key, contenders, cycles, |_| Duration::ZERO).await?;
            let expected = (clients * cycles) as u64;
            check.ensure(observer.entries() == expected, || {
                format!("{} of {expected} cycles ran", observer.entries())
            })?;
            Ok(observer)
        })
        .await
}

/// `clients` contend for `key`, `cycles` acquire/release cycles each, watched
/// by one observer; a holder stays inside for `hold(token)` (zero: a yield).
/// Fails on an overlap, a token regression, or a holder whose lock was lost;
/// returns the observer and the takeovers the clients counted.
async fn contend(
    check: &Check<'_>,
    key: &str,
    clients: Vec<LockClient>,
    cycles: usize,
    hold: fn(u64) -> Duration,
) -> Result<(Arc<Observer>, u64), Failure> {
    let observer = Arc::new(Observer::default());
    let mut tasks = JoinSet::new();
    for client in clients {
        let (observer, key) = (Arc::clone(&observer), key.to_owned());
        let template = check.fail(String::new());
        tasks.spawn(async move {
            let fail = |problem: String| Failure {
                problem,
                ..template.clone()
            };
            for _ in 0..cycles {
                let guard = client
                    .acquire(&key)
                    .await
                    .map_err(|e| fail(format!("acquire failed under contention: {e}")))?;
                observer.enter(guard.token());
                match hold(guard.token()) {
                    Duration::ZERO => tokio::task::yield_now().await,
                    time => sleep(time).await,
                }
                let lost = guard.lost_signal().reason();
                observer.exit();
                if let Some(reason) = lost {
                    return Err(fail(format!(
                        "{} lost a healthy lock (token {}): {reason}",
                        client.owner(),
                        guard.token()
                    )));
                }
                guard
                    .release()
                    .await
                    .map_err(|e| fail(format!("release failed under contention: {e}")))?;
            }
            Ok(client.stats().takeovers)
        });
    }
    let takeovers = join_all(check, tasks).await?.into_iter().sum();
    check.ensure(observer.overlaps() == 0, || {
        format!(
            "two holders were inside at once {} times (at most {} at once)",
            observer.overlaps(),
            observer.most_inside()
        )
    })?;
    check.ensure(observer.token_regressions() == 0, || {
        format!(
            "fencing tokens must strictly increase: {} did not",
            observer.token_regressions()
        )
    })?;
    Ok((observer, takeovers))
}

/// Invariant 3: a holder whose lock was taken over (it could not renew, and
/// was told so) can neither release nor renew it: its release reports
/// [`LockError::Lost`] and leaves the new holder's lock, a compare-exchange
/// on its old index conflicts, and the new holder's token is larger.
pub async fn stale_holder_cannot_release_or_renew(backend: &Backend) -> Result<(), Failure> {
    let mut check = Check::new(backend, "stale_holder_cannot_release_or_renew");
    let key = check.key();
    let ttl = Duration::from_millis(400);
    check
        .limited(async {
            let (link, a, b) = backend.faulty_pair(ttl).await?;
            let stale = check.locked("the first acquire", a.acquire(&key).await)?;
            let stale_token = stale.token();
            link.cut();
            check
                .within(
                    ttl * 2,
                    "the lost signal of a holder that cannot renew",
                    stale.lost(),
                )
                .await?;
            let options = LockOptions::default().ttl(ttl).wait(Wait::For(ttl * 10));
            let fresh = check.locked("the takeover", b.acquire_with(&key, &options).await)?;
            check.ensure(fresh.token() > stale_token, || {
                format!(
                    "the new holder's token ({}) must be larger than the old one's ({stale_token})",
                    fresh.token()
                )
            })?;
            link.heal();

            match stale.release().await {
                Err(LockError::Lost { token, .. }) if token == stale_token => {}
                other => {
                    return Err(check.fail(format!(
                        "a stale holder's release must report its lock (token {stale_token}) \
                         lost, got {other:?}"
                    )));
                }
            }
            let store = backend.store().await?;
            let entry = check.ok("get", store.get(&key).await)?;
            let still = entry
                .as_ref()
                .is_some_and(|e| e.record.owner.as_ref() == b.owner());
            check.ensure(still, || {
                format!("the new holder must still hold the lock after a stale release: {entry:?}")
            })?;
            let renewal = store
                .put(
                    &key,
                    &record(a.owner(), 0),
                    Expect::Index(stale_token),
                    None,
                )
                .await;
            check.ensure(matches!(renewal, Ok(PutOutcome::Conflict { .. })), || {
                format!("a stale renewal (a put on the old index) must conflict, got {renewal:?}")
            })?;
            check.locked("the new holder's release", fresh.release().await)
        })
        .await
}

/// Invariant 4: a dropped (cancelled) locked future releases its lock within
/// about a round trip, not a ttl (20 s here: another client must get it
/// within 5 s).
pub async fn dropped_future_releases_promptly(backend: &Backend) -> Result<(), Failure> {
    let mut check = Check::new(backend, "dropped_future_releases_promptly");
    let key = check.key();
    let ttl = Duration::from_secs(20);
    check
        .limited(async {
            let a = backend.client(LockOptions::default().ttl(ttl)).await?;
            let b = backend.client(LockOptions::default().ttl(ttl)).await?;
            let body = a.with_lock(&key, a.options(), std::future::pending::<()>());
            let dropped = timeout(Duration::from_millis(300), body).await;
            check.ensure(dropped.is_err(), || {
                format!("a body that never finishes finished: {dropped:?}")
            })?;
            let started = Instant::now();
            let options = LockOptions::default().ttl(ttl).wait(Wait::For(ttl / 4));
            let guard = check.locked(
                "acquiring the lock of a dropped future",
                b.acquire_with(&key, &options).await,
            )?;
            let took = started.elapsed();
            check.ensure(took < ttl / 4, || {
                format!("a dropped future's lock was free only after {took:?} (ttl {ttl:?})")
            })?;
            check.locked("release", guard.release().await)
        })
        .await
}

/// Invariant 5: a holder that stops renewing (crash, partition) loses the
/// lock, is told so before anyone else can take it, and the lock is free after
/// the ttl and not before (a try-lock polling every 10 ms takes it over).
pub async fn abandoned_lock_free_after_ttl_not_before(backend: &Backend) -> Result<(), Failure> {
    let mut check = Check::new(backend, "abandoned_lock_free_after_ttl_not_before");
    let key = check.key();
    let ttl = Duration::from_millis(600);
    check
        .limited(async {
            let (link, a, b) = backend.faulty_pair(ttl).await?;
            let started = Instant::now();
            let held = check.locked("acquire", a.acquire(&key).await)?;
            link.cut();
            let signal = held.lost_signal();
            let lost_at = tokio::spawn(async move {
                signal.lost().await;
                Instant::now()
            });

            let mut taken_at = None;
            let limit = started + ttl * 10;
            while Instant::now() < limit {
                if let Some(guard) = check.locked("try_acquire", b.try_acquire(&key).await)? {
                    taken_at = Some(Instant::now());
                    check.ensure(guard.token() > held.token(), || {
                        format!(
                            "the new holder's token ({}) must be larger than the old one's ({})",
                            guard.token(),
                            held.token()
                        )
                    })?;
                    check.locked("release", guard.release().await)?;
                    break;
                }
                sleep(Duration::from_millis(10)).await;
            }
            let Some(taken_at) = taken_at else {
                return Err(check.fail(format!(
                    "an abandoned lock (ttl {ttl:?}) was not free after {:?}",
                    ttl * 10
                )));
            };
            check.ensure(taken_at >= started + ttl, || {
                format!(
                    "taken over {:?} after it was acquired, before its ttl of {ttl:?}",
                    taken_at - started
                )
            })?;
            let lost_at = check
                .within(ttl, "the old holder's lost signal", lost_at)
                .await?
                .map_err(|e| {
                    check.fail(format!("the task waiting for the lost signal failed: {e}"))
                })?;
            check.ensure(lost_at < taken_at, || {
                "the old holder must be told it lost the lock before anyone else gets it".to_owned()
            })?;
            check.ensure(held.is_lost(), || {
                "the old holder's guard must say lost".to_owned()
            })?;
            drop(held);
            link.heal();
            Ok(())
        })
        .await
}

/// A lock held past several ttls stays held (renewal works, others cannot
/// get it), and [`LockClient::with_lock`] cancels its body with
/// [`LockError::Lost`] when the lock is lost.
pub async fn renewal_keeps_and_loss_cancels(backend: &Backend) -> Result<(), Failure> {
    let mut check = Check::new(backend, "renewal_keeps_and_loss_cancels");
    let key = check.key();
    let ttl = Duration::from_millis(300);
    check
        .limited(async {
            let (link, a, b) = backend.faulty_pair(ttl).await?;
            let guard = check.locked("acquire", a.acquire(&key).await)?;
            sleep(ttl * 4).await;
            let lost = guard.lost_signal().reason();
            check.ensure(lost.is_none(), || {
                format!("a renewed lock must stay held past its ttl, lost: {lost:?}")
            })?;
            let other = check.locked("try_acquire", b.try_acquire(&key).await)?;
            check.ensure(other.is_none(), || {
                "others must not get a renewed lock".to_owned()
            })?;
            check.locked("release", guard.release().await)?;

            let cutter = link.clone();
            let outcome = a
                .with_lock(&key, a.options(), async move {
                    cutter.cut();
                    sleep(ttl * 20).await;
                    "finished"
                })
                .await;
            link.heal();
            match outcome {
                Err(LockError::Lost {
                    reason: LostReason::RenewalTimedOut,
                    ..
                })
                | Err(LockError::Lost {
                    reason: LostReason::TakenOver | LostReason::LeaseExpired,
                    ..
                }) => Ok(()),
                other => Err(check.fail(format!(
                    "a body whose lock is lost (renewals cut) must be cancelled with Lost, got \
                     {other:?}"
                ))),
            }
        })
        .await
}

/// Clients whose wall clocks are an hour ahead and an hour behind contend
/// with a correct one, `cycles` times each, sometimes holding across
/// renewals: no overlap, no token regression, no lost lock, no takeover of a
/// healthy holder (no decision compares wall clocks).
pub async fn skewed_wall_clocks_change_nothing(
    backend: &Backend,
    cycles: usize,
) -> Result<(), Failure> {
    let mut check = Check::new(backend, "skewed_wall_clocks_change_nothing");
    let key = check.key();
    let check = &check;
    check
        .limited(async {
            let mut contenders = Vec::with_capacity(3);
            for (ahead, offset) in [(true, 3600), (false, 3600), (true, 0)] {
                let clock = SkewedClock {
                    ahead,
                    offset: Duration::from_secs(offset),
                };
                let options = LockOptions::default().ttl(Duration::from_millis(500));
                let client = backend
                    .client_with(options, |b| b.wall_clock(clock))
                    .await?;
                contenders.push(client);
            }
            // Hold across several renewals now and then.
            let hold = |token| {
                if token % 7 == 0 {
                    Duration::from_millis(400)
                } else {
                    Duration::ZERO
                }
            };
            let (_, takeovers) = contend(check, &key, contenders, cycles, hold).await?;
            check.ensure(takeovers == 0, || {
                format!("healthy holders must never be taken over, {takeovers} were")
            })
        })
        .await
}
