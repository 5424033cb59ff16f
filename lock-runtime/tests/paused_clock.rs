//! The monotonic clock is Tokio's, so tests can drive it: with time paused,
//! the takeover rule is checked to the millisecond. (Kept in this crate so the
//! `test-util` feature does not slow the facade's benchmarks.)

use std::time::Duration;

use lock_runtime::store::memory::MemoryStore;
use lock_runtime::testing::faults::Faults;
use lock_runtime::{LockClient, LockOptions};

#[tokio::test(start_paused = true)]
async fn takeover_happens_exactly_one_ttl_after_the_index_was_first_seen() {
    let store = MemoryStore::new();
    let ttl = Duration::from_secs(30);
    // The crashed holder's view of the store: every call fails once crashed.
    let crashed = Faults::new(store.clone());
    let a = LockClient::builder(crashed.clone())
        .defaults(LockOptions::default().ttl(ttl))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let b = LockClient::builder(store)
        .defaults(LockOptions::default().ttl(ttl))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let held = a.acquire("jobs/x").await.unwrap_or_else(|e| panic!("{e}"));
    crashed.crash();
    // B sees the record now: its takeover clock starts here.
    assert!(
        b.try_acquire("jobs/x")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );
    tokio::time::advance(ttl - Duration::from_millis(1)).await;
    assert!(held.is_lost(), "the holder is told before the ttl runs out");
    assert!(
        b.try_acquire("jobs/x")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none(),
        "no takeover before a full ttl"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let taken = b
        .try_acquire("jobs/x")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("takeover once the same index was seen for a full ttl"));
    assert!(taken.token() > held.token());
    assert_eq!(b.stats().takeovers, 1);
}

#[tokio::test(start_paused = true)]
async fn a_renewing_holder_keeps_its_lock_for_many_ttls() {
    let store = MemoryStore::new();
    let ttl = Duration::from_secs(3);
    let a = LockClient::builder(store.clone())
        .defaults(LockOptions::default().ttl(ttl))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let b = LockClient::new(store);
    let held = a
        .acquire("jobs/long")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..100 {
        // `sleep` (not `advance`) lets the renewer's timers fire in order, as
        // they would on a runtime that is not starved.
        tokio::time::sleep(ttl / 2).await;
        assert!(
            b.try_acquire("jobs/long")
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );
    }
    assert!(!held.is_lost());
    assert_eq!(b.stats().takeovers, 0);
    held.release().await.unwrap_or_else(|e| panic!("{e}"));
}

/// `valid_for` is the time to the deadline rule's instant (ttl minus a tenth
/// from the acquiring write's send), shrinks with time, grows back at each
/// renewal, and is `None` once the lock is lost: what `distlock run` hands
/// its watchdog.
#[tokio::test(start_paused = true)]
async fn valid_for_counts_down_to_the_deadline_and_stops_at_loss() {
    let store = Faults::new(MemoryStore::new());
    let ttl = Duration::from_secs(30);
    let client = LockClient::builder(store.clone())
        .defaults(LockOptions::default().ttl(ttl))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let guard = client
        .acquire("jobs/v")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(guard.valid_for(), Some(Duration::from_secs(27)));
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(guard.valid_for(), Some(Duration::from_secs(22)));
    // The renewal at ttl/3 moves the deadline on.
    tokio::time::advance(Duration::from_secs(6)).await;
    // Let the renewal task run (a paused clock runs tasks only when idle).
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let renewed = guard.valid_for().unwrap_or_else(|| panic!("held"));
    assert!(renewed > Duration::from_secs(22), "{renewed:?}");
    // No renewal gets through: at the deadline the lock is lost, not before.
    store.cut();
    tokio::time::advance(renewed - Duration::from_millis(1)).await;
    assert!(
        guard
            .valid_for()
            .is_some_and(|left| left <= Duration::from_millis(1))
    );
    tokio::time::advance(Duration::from_millis(2)).await;
    assert_eq!(guard.valid_for(), None);
    assert!(guard.is_lost());
}

/// `wait_idle` returns once a dropped guard's background release is done
/// (the key is free then), and reports `false` while a release cannot get
/// through.
#[tokio::test(start_paused = true)]
async fn wait_idle_waits_for_background_releases() {
    let store = Faults::new(MemoryStore::new());
    let client = LockClient::new(store.clone());
    let other = LockClient::new(store.inner().as_ref().clone());
    drop(
        client
            .acquire("jobs/w")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert!(client.wait_idle(Duration::from_secs(5)).await);
    assert!(
        other
            .try_acquire("jobs/w")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_some()
    );

    let guard = client
        .acquire("jobs/w2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store.cut();
    drop(guard);
    assert!(
        !client.wait_idle(Duration::from_secs(2)).await,
        "the release cannot get through"
    );
    store.heal();
    assert!(client.wait_idle(Duration::from_secs(60)).await);
    assert!(
        other
            .try_acquire("jobs/w2")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_some()
    );
}

/// A release never sends its delete while a renewal is in flight: on a store
/// with RavenDB 4.1's quirk (a put at an index re-creates a missing key), a
/// renewal applied after the delete would leave the released lock's record
/// behind. The release waits for the renewal's answer and deletes at the index
/// it left: afterwards the key is free, also once every late request landed.
#[tokio::test(start_paused = true)]
async fn a_release_waits_for_an_in_flight_renewal_on_a_store_that_recreates_keys() {
    use lock_runtime::store::CompareExchange;
    use lock_runtime::testing::SimStore;
    use lock_runtime::testing::faults::Op;
    let server = SimStore::ravendb_41();
    let store = Faults::new(server.clone());
    let ttl = Duration::from_millis(900);
    let client = LockClient::builder(store.clone())
        .defaults(LockOptions::default().ttl(ttl))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let guard = client
        .acquire("jobs/r")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let acquired = guard.token();
    // The renewal at ttl/3 (300 ms) is applied 200 ms after it is sent.
    store.delay(Op::Put, Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(store.calls().of(Op::Put), 2, "the renewal is in flight");
    assert_eq!(
        server.get("jobs/r").await.ok().flatten().map(|e| e.index),
        Some(acquired),
        "the renewal has not landed yet"
    );
    guard.release().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(server.get("jobs/r").await.ok(), Some(None));
    // Long after every request landed, the key is still free.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        server.get("jobs/r").await.ok(),
        Some(None),
        "a renewal applied after the release re-created the released lock"
    );
}
