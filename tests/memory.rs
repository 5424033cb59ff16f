//! The conformance suite and memory-specific checks on the in-memory store.

use std::time::Duration;

use distlock::store::Capabilities;
use distlock::store::memory::MemoryStore;
use distlock::testing::conformance::{self, Backend, Failure};
use distlock::{LockClient, LockOptions, Wait};

/// Every "connection" is a clone of one shared store, so clients contend.
fn memory() -> Backend {
    Backend::shared(
        "memory",
        Capabilities::NONE.with_watch(true).with_listing(true),
        MemoryStore::new(),
    )
}

fn pass<T>(result: Result<T, Failure>) -> T {
    result.unwrap_or_else(|failure| panic!("{failure}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_suite_passes() {
    let report = pass(conformance::run_all(&memory()).await);
    assert_eq!(report.skipped(), ["lease_contract"]);
}

#[tokio::test]
async fn store_contract_holds_and_index_grows_across_recreate() {
    pass(conformance::store_contract(&memory()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_ten_thousand_cycles_never_two_holders() {
    // The time limit is for hangs only: 80,000 cycles on two busy cores take a while.
    let backend = memory().time_limit(Duration::from_secs(900));
    let observer = pass(conformance::never_two_holders(&backend, 8, 10_000).await);
    println!(
        "memory: {} cycles, most holders at once {}, overlaps {}, token regressions {}",
        observer.entries(),
        observer.most_inside(),
        observer.overlaps(),
        observer.token_regressions()
    );
}

#[tokio::test]
async fn stale_holder_cannot_release_or_renew() {
    pass(conformance::stale_holder_cannot_release_or_renew(&memory()).await);
}

#[tokio::test]
async fn dropped_future_releases_promptly() {
    pass(conformance::dropped_future_releases_promptly(&memory()).await);
}

#[tokio::test]
async fn abandoned_lock_free_after_ttl_not_before() {
    pass(conformance::abandoned_lock_free_after_ttl_not_before(&memory()).await);
}

#[tokio::test]
async fn renewal_keeps_the_lock_and_loss_cancels_the_body() {
    pass(conformance::renewal_keeps_and_loss_cancels(&memory()).await);
}

#[tokio::test]
async fn bad_input_gets_typed_errors() {
    pass(conformance::bad_input_gets_typed_errors(&memory()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_an_hour_off_never_overlaps() {
    pass(conformance::skewed_wall_clocks_change_nothing(&memory(), 30).await);
}

#[tokio::test]
async fn wait_ends_in_timeout_and_try_once_in_busy() {
    let client = LockClient::memory();
    let held = client
        .acquire("jobs/nightly")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let wait = LockOptions::default().wait(Wait::For(Duration::from_millis(50)));
    match client.acquire_with("jobs/nightly", &wait).await {
        Err(error @ distlock::LockError::Timeout { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("jobs/nightly") && message.contains(client.owner()),
                "{message}"
            );
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    let once = LockOptions::default().wait(Wait::Never);
    assert!(matches!(
        client.acquire_with("jobs/nightly", &once).await,
        Err(distlock::LockError::Busy { .. })
    ));
    held.release().await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn hold_at_least_keeps_the_lock_after_release() {
    let client = LockClient::memory();
    let options = LockOptions::default().hold_at_least(Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    let guard = client
        .acquire_with("jobs/tick", &options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    guard.release().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        client
            .try_acquire("jobs/tick")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );
    let next = client
        .acquire_with(
            "jobs/tick",
            &LockOptions::default().wait(Wait::For(Duration::from_secs(5))),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(started.elapsed() >= Duration::from_millis(300));
    next.release().await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn without_renewal_the_lock_is_lost_when_the_ttl_runs_out() {
    let client = LockClient::memory();
    let options = LockOptions::default()
        .ttl(Duration::from_millis(200))
        .renew(false);
    let guard = client
        .acquire_with("jobs/short", &options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let reason = tokio::time::timeout(Duration::from_secs(2), guard.lost()).await;
    assert_eq!(reason.ok(), Some(distlock::LostReason::TtlElapsed));
}

#[test]
fn guard_dropped_outside_a_runtime_does_not_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let client = LockClient::memory();
    let guard = runtime
        .block_on(client.acquire("outside"))
        .unwrap_or_else(|e| panic!("{e}"));
    drop(runtime);
    drop(guard);
}

#[tokio::test]
async fn current_gives_key_and_token_inside_with_lock_only() {
    let client = LockClient::memory();
    let seen = client
        .with_lock("orders/9", client.options(), async {
            distlock::current().map(|lock| (lock.key().to_owned(), lock.token()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (key, token) = seen.unwrap_or_else(|| panic!("current() must be set inside with_lock"));
    assert_eq!(key, "orders/9");
    assert!(token > 0);
    assert!(distlock::current().is_none());
}

#[tokio::test]
async fn panic_in_the_body_releases_the_lock() {
    let client = LockClient::memory();
    let inner = client.clone();
    let task = tokio::spawn(async move {
        inner
            .with_lock("orders/panic", inner.options(), async { panic!("boom") })
            .await
    });
    assert!(task.await.is_err());
    let guard = client
        .acquire_with(
            "orders/panic",
            &LockOptions::default().wait(Wait::For(Duration::from_secs(2))),
        )
        .await
        .unwrap_or_else(|e| panic!("a panicking body must release its lock: {e}"));
    guard.release().await.unwrap_or_else(|e| panic!("{e}"));
}
