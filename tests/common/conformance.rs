//! The conformance suite: DESIGN.md section 6, for any store.
//!
//! Each check takes a [`Backend`], which makes independent store connections
//! to the same backend (one per simulated service instance), and panics with a
//! message naming the broken invariant.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use distlock::store::{CompareExchange, DeleteOutcome, Expect, PutOutcome, Record};
use distlock::{LockClient, LockError, LockOptions, LostReason, Wait, WallClock};
use tokio::time::Instant;

use super::{Observer, Partitionable, unique};

/// Makes a new connection to the backend under test.
pub type Connect =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn CompareExchange>> + Send>> + Send + Sync>;

/// The backend under test.
#[derive(Clone)]
pub struct Backend {
    pub name: &'static str,
    pub connect: Connect,
}

impl Backend {
    pub fn new<F, Fut>(name: &'static str, connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Arc<dyn CompareExchange>> + Send + 'static,
    {
        Backend {
            name,
            connect: Arc::new(move || Box::pin(connect())),
        }
    }

    pub async fn store(&self) -> Arc<dyn CompareExchange> {
        (self.connect)().await
    }

    /// Two clients with `ttl`: `a` through a store the test can cut off
    /// (returned too), `b` plainly connected.
    pub async fn partitionable_pair(
        &self,
        ttl: Duration,
    ) -> (Partitionable, LockClient, LockClient) {
        let a_store = Partitionable::new(self.store().await);
        let a = LockClient::builder(a_store.clone())
            .defaults(LockOptions::default().ttl(ttl))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let b = self.client(LockOptions::default().ttl(ttl)).await;
        (a_store, a, b)
    }

    pub async fn client(&self, options: LockOptions) -> LockClient {
        self.client_with(options, |b| b).await
    }

    pub async fn client_with(
        &self,
        options: LockOptions,
        tweak: impl FnOnce(distlock::LockClientBuilder) -> distlock::LockClientBuilder,
    ) -> LockClient {
        let store = self.store().await;
        let builder = LockClient::builder(store).defaults(options);
        match tweak(builder).build() {
            Ok(client) => client,
            Err(error) => panic!("building a client failed: {error}"),
        }
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

fn swapped(outcome: PutOutcome, what: &str) -> u64 {
    match outcome {
        PutOutcome::Swapped { index } => index,
        PutOutcome::Conflict { current } => {
            panic!("{what}: expected a swap, got a conflict with {current:?}")
        }
    }
}

/// The store contract: conditional writes, conflicts as data with the current
/// entry, and an index that grows across delete and re-create.
pub async fn store_contract(backend: &Backend) {
    let store = backend.store().await;
    let key = unique("conformance/contract");
    let a = record("a", 1);
    let b = record("b", 2);
    assert_eq!(
        store.get(&key).await.ok(),
        Some(None),
        "a fresh key must be absent"
    );

    let first = swapped(
        store
            .put(&key, &a, Expect::Absent, None)
            .await
            .unwrap_or_else(|e| panic!("put: {e}")),
        "put if absent on a free key",
    );
    match store.put(&key, &b, Expect::Absent, None).await {
        Ok(PutOutcome::Conflict {
            current: Some(entry),
        }) => {
            assert_eq!(
                entry.index, first,
                "a conflict must report the current index"
            );
            assert_eq!(entry.record, a, "a conflict must report the current record");
        }
        other => panic!(
            "put if absent on a held key must conflict with the current entry, got {other:?}"
        ),
    }
    match store
        .put(&key, &b, Expect::Index(first + 1_000_000), None)
        .await
    {
        Ok(PutOutcome::Conflict { .. }) => {}
        other => panic!("put with a wrong index must conflict, got {other:?}"),
    }
    let second = swapped(
        store
            .put(&key, &b, Expect::Index(first), None)
            .await
            .unwrap_or_else(|e| panic!("cas: {e}")),
        "compare-exchange on the right index",
    );
    assert!(
        second > first,
        "the index must grow on every write ({first} then {second})"
    );
    let got = store.get(&key).await.unwrap_or_else(|e| panic!("get: {e}"));
    assert_eq!(
        got.as_ref().map(|e| (&e.record, e.index)),
        Some((&b, second))
    );

    match store.delete(&key, first).await {
        Ok(DeleteOutcome::Conflict { .. }) => {}
        other => panic!("a delete with a stale index must conflict, got {other:?}"),
    }
    assert!(
        store
            .get(&key)
            .await
            .unwrap_or_else(|e| panic!("get: {e}"))
            .is_some(),
        "a stale delete must not delete"
    );
    match store.delete(&key, second).await {
        Ok(DeleteOutcome::Deleted) => {}
        other => panic!("a delete with the current index must delete, got {other:?}"),
    }
    assert_eq!(
        store.get(&key).await.ok(),
        Some(None),
        "deleted keys read as absent"
    );
    let third = swapped(
        store
            .put(&key, &a, Expect::Absent, None)
            .await
            .unwrap_or_else(|e| panic!("put: {e}")),
        "re-create",
    );
    assert!(
        third > second,
        "the index must grow across delete and re-create ({second} then {third})"
    );
    let _ = store.delete(&key, third).await;
}

/// Invariants 1 and 2 under contention: `clients` instances x `cycles`
/// acquire/release on one key, checked by an independent observer.
pub async fn never_two_holders(backend: &Backend, clients: usize, cycles: usize) -> Arc<Observer> {
    let key = unique("conformance/contended");
    let observer = Arc::new(Observer::default());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let client = backend
            .client(LockOptions::default().ttl(Duration::from_secs(10)))
            .await;
        let observer = Arc::clone(&observer);
        let key = key.clone();
        tasks.spawn(async move {
            for _ in 0..cycles {
                let guard = match client.acquire(&key).await {
                    Ok(guard) => guard,
                    Err(error) => panic!("acquire failed under contention: {error}"),
                };
                observer.enter(guard.token());
                tokio::task::yield_now().await;
                observer.exit();
                if let Err(error) = guard.release().await {
                    panic!("release failed: {error}");
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(error) = joined {
            std::panic::resume_unwind(error.into_panic());
        }
    }
    assert_eq!(
        observer.entries(),
        (clients * cycles) as u64,
        "every cycle must run"
    );
    assert_eq!(observer.overlaps(), 0, "two holders were inside at once");
    assert_eq!(observer.most_inside(), 1);
    assert_eq!(
        observer.token_regressions(),
        0,
        "fencing tokens must strictly increase"
    );
    observer
}

/// Invariant 3: a holder whose lock was taken over can neither release nor
/// renew it.
pub async fn stale_holder_cannot_release_or_renew(backend: &Backend) {
    let key = unique("conformance/stale");
    let ttl = Duration::from_millis(400);
    let (a_store, a, b) = backend.partitionable_pair(ttl).await;

    let stale = a
        .acquire(&key)
        .await
        .unwrap_or_else(|e| panic!("first acquire: {e}"));
    let stale_token = stale.token();
    a_store.cut();
    let lost = tokio::time::timeout(ttl * 2, stale.lost()).await;
    assert!(
        lost.is_ok(),
        "a holder that cannot renew must be told it lost the lock"
    );
    let fresh = b
        .acquire_with(
            &key,
            &LockOptions::default().ttl(ttl).wait(Wait::For(ttl * 10)),
        )
        .await
        .unwrap_or_else(|e| panic!("takeover: {e}"));
    assert!(
        fresh.token() > stale_token,
        "the new holder's token must be larger"
    );
    a_store.heal();

    match stale.release().await {
        Err(LockError::Lost { token, .. }) => assert_eq!(token, stale_token),
        other => panic!("a stale release must report the lock lost, got {other:?}"),
    }
    let store = backend.store().await;
    let entry = store
        .get(&key)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("a stale release deleted the new holder's lock"));
    assert_eq!(
        entry.record.owner.as_ref(),
        b.owner(),
        "the new holder must still hold the lock"
    );
    // A stale renewal (compare-exchange on the old index) conflicts too.
    let renewal = store
        .put(
            &key,
            &record(a.owner(), 0),
            Expect::Index(stale_token),
            None,
        )
        .await;
    assert!(
        matches!(renewal, Ok(PutOutcome::Conflict { .. })),
        "a stale renewal must conflict, got {renewal:?}"
    );
    fresh.release().await.unwrap_or_else(|e| panic!("{e}"));
}

/// Invariant 4: a dropped (cancelled) locked future releases within about a
/// round trip, not a ttl.
pub async fn dropped_future_releases_promptly(backend: &Backend) {
    let key = unique("conformance/dropped");
    let ttl = Duration::from_secs(20);
    let a = backend.client(LockOptions::default().ttl(ttl)).await;
    let b = backend.client(LockOptions::default().ttl(ttl)).await;
    let body = a.with_lock(&key, a.options(), std::future::pending::<()>());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), body)
            .await
            .is_err(),
        "the body never finishes"
    );
    let started = Instant::now();
    let guard = b
        .acquire_with(
            &key,
            &LockOptions::default().ttl(ttl).wait(Wait::For(ttl / 4)),
        )
        .await
        .unwrap_or_else(|e| panic!("a dropped future's lock must be released promptly: {e}"));
    assert!(started.elapsed() < ttl / 4);
    guard.release().await.unwrap_or_else(|e| panic!("{e}"));
}

/// Invariant 5: a holder that stops renewing (crash, partition) loses the
/// lock, is told so before anyone else can take it, and the lock is free after
/// the ttl and not before. A try-lock takes over too (shared observations).
pub async fn abandoned_lock_free_after_ttl_not_before(backend: &Backend) {
    let key = unique("conformance/abandoned");
    let ttl = Duration::from_millis(600);
    let (a_store, a, b) = backend.partitionable_pair(ttl).await;

    let started = Instant::now();
    let held = a.acquire(&key).await.unwrap_or_else(|e| panic!("{e}"));
    a_store.cut();
    let signal = held.lost_signal();
    let lost_at = tokio::spawn(async move {
        signal.lost().await;
        Instant::now()
    });

    let mut taken_at = None;
    let limit = started + ttl * 10;
    while Instant::now() < limit {
        if let Some(guard) = b
            .try_acquire(&key)
            .await
            .unwrap_or_else(|e| panic!("try_acquire: {e}"))
        {
            taken_at = Some(Instant::now());
            assert!(guard.token() > held.token());
            guard.release().await.unwrap_or_else(|e| panic!("{e}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let taken_at =
        taken_at.unwrap_or_else(|| panic!("an abandoned lock must become free after its ttl"));
    assert!(
        taken_at >= started + ttl,
        "taken over after {:?}, before the ttl of {ttl:?}",
        taken_at - started
    );
    let lost_at = lost_at.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        lost_at < taken_at,
        "the old holder must be told it lost the lock before anyone else gets it"
    );
    assert!(held.is_lost());
    drop(held);
    a_store.heal();
}

/// Invariant 6: bad input gets typed errors before any I/O, and leaks nothing.
pub async fn bad_input_gets_typed_errors(backend: &Backend) {
    let client = backend.client(LockOptions::default()).await;
    let long = "k".repeat(distlock::MAX_KEY_LEN + 1);
    for key in ["", "a\u{0}b", "line\nbreak", long.as_str()] {
        match client.try_acquire(key).await {
            Err(LockError::InvalidKey { reason, .. }) => assert!(!reason.is_empty()),
            other => panic!("key {key:?} must be rejected as invalid, got {other:?}"),
        }
    }
    let tiny = LockOptions::default().ttl(Duration::from_millis(1));
    match client.acquire_with("ok/key", &tiny).await {
        Err(error @ LockError::Config { .. }) => assert!(error.to_string().contains("ttl")),
        other => panic!("a 1 ms ttl must be a configuration error, got {other:?}"),
    }
    let store = backend.store().await;
    assert_eq!(
        store.get("ok/key").await.ok(),
        Some(None),
        "a rejected lock must not be written"
    );
}

/// A wall clock that is off by `offset` (ahead or behind).
#[derive(Debug)]
pub struct SkewedClock {
    pub ahead: bool,
    pub offset: Duration,
}

impl WallClock for SkewedClock {
    fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        if self.ahead {
            now + self.offset
        } else {
            now - self.offset
        }
    }
}

/// Clients whose wall clocks are an hour ahead and behind contend with a
/// correct one: no overlap, no premature takeover.
pub async fn skewed_wall_clocks_change_nothing(backend: &Backend, cycles: usize) {
    let key = unique("conformance/skew");
    let observer = Arc::new(Observer::default());
    let mut tasks = tokio::task::JoinSet::new();
    for (ahead, offset) in [(true, 3600), (false, 3600), (true, 0)] {
        let client = backend
            .client_with(
                LockOptions::default().ttl(Duration::from_millis(500)),
                |b| {
                    b.wall_clock(SkewedClock {
                        ahead,
                        offset: Duration::from_secs(offset),
                    })
                },
            )
            .await;
        let observer = Arc::clone(&observer);
        let key = key.clone();
        tasks.spawn(async move {
            for _ in 0..cycles {
                let guard = client.acquire(&key).await.unwrap_or_else(|e| panic!("{e}"));
                observer.enter(guard.token());
                // Hold across several renewals now and then.
                if guard.token() % 7 == 0 {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                } else {
                    tokio::task::yield_now().await;
                }
                assert!(
                    !guard.is_lost(),
                    "a skewed clock must not cost a healthy holder its lock"
                );
                observer.exit();
                guard.release().await.unwrap_or_else(|e| panic!("{e}"));
            }
            client.stats()
        });
    }
    let mut takeovers = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(stats) => takeovers += stats.takeovers,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    assert_eq!(observer.overlaps(), 0);
    assert_eq!(observer.token_regressions(), 0);
    assert_eq!(takeovers, 0, "healthy holders must never be taken over");
}

/// A lock held past several ttls stays held (renewal works) and `with_lock`
/// cancels its body when the lock is lost.
pub async fn renewal_keeps_and_loss_cancels(backend: &Backend) {
    let key = unique("conformance/renewal");
    let ttl = Duration::from_millis(300);
    let (a_store, a, b) = backend.partitionable_pair(ttl).await;

    let guard = a.acquire(&key).await.unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(ttl * 4).await;
    assert!(
        !guard.is_lost(),
        "a renewed lock must stay held past its ttl"
    );
    assert!(
        b.try_acquire(&key)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none(),
        "others must not get a renewed lock"
    );
    guard.release().await.unwrap_or_else(|e| panic!("{e}"));

    let cutter = a_store.clone();
    let outcome = a
        .with_lock(&key, a.options(), async move {
            cutter.cut();
            tokio::time::sleep(ttl * 20).await;
            "finished"
        })
        .await;
    match outcome {
        Err(LockError::Lost { reason, .. }) => assert!(matches!(
            reason,
            LostReason::RenewalTimedOut | LostReason::TakenOver | LostReason::LeaseExpired
        )),
        other => panic!("a body whose lock is lost must be cancelled with Lost, got {other:?}"),
    }
    a_store.heal();
}

/// Every check of the suite, in order (the contended one with `cycles`).
pub async fn run_all(backend: &Backend, clients: usize, cycles: usize) {
    store_contract(backend).await;
    bad_input_gets_typed_errors(backend).await;
    never_two_holders(backend, clients, cycles).await;
    stale_holder_cannot_release_or_renew(backend).await;
    dropped_future_releases_promptly(backend).await;
    abandoned_lock_free_after_ttl_not_before(backend).await;
    renewal_keeps_and_loss_cancels(backend).await;
    skewed_wall_clocks_change_nothing(backend, 20).await;
}
