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
