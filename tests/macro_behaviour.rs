//! `#[distributed_lock]` on the memory backend: what an annotated fn does
//! when run concurrently, when the lock is held, lost, or the call is
//! cancelled, and how interpolated key values are escaped.

#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use distlock::{LockClient, LockError, distributed_lock};
use tokio::sync::Barrier;
use tokio::time::{Instant, sleep, timeout};

/// Counts bodies running at once; remembers the highest count.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
    runs: AtomicUsize,
}

impl Gauge {
    async fn occupy(&self, for_: Duration) {
        let inside = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(inside, Ordering::SeqCst);
        sleep(for_).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.runs.fetch_add(1, Ordering::SeqCst);
    }
}

#[distributed_lock(key = "orders/<id>", client = client)]
async fn occupy(client: &LockClient, id: u64, gauge: &Gauge) -> Result<(), LockError> {
    gauge.occupy(Duration::from_millis(40)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_excludes_and_different_keys_run_in_parallel() {
    let client = LockClient::memory();
    let same = Arc::new(Gauge::default());
    let started = Instant::now();
    let calls = (0..5).map(|_| {
        let (client, gauge) = (client.clone(), Arc::clone(&same));
        tokio::spawn(async move { occupy(&client, 7, &gauge).await })
    });
    for call in calls.collect::<Vec<_>>() {
        assert!(matches!(call.await, Ok(Ok(()))));
    }
    assert_eq!(
        same.max.load(Ordering::SeqCst),
        1,
        "two bodies ran at once on one key"
    );
    assert_eq!(same.runs.load(Ordering::SeqCst), 5);
    assert!(started.elapsed() >= Duration::from_millis(200));

    // Five different keys: all five bodies are inside at once (a barrier of
    // five would never open if the lock serialized them).
    let barrier = Arc::new(Barrier::new(5));
    let calls: Vec<_> = (0..5)
        .map(|id| {
            let (client, barrier) = (client.clone(), Arc::clone(&barrier));
            tokio::spawn(async move { meet(&client, id, &barrier).await })
        })
        .collect();
    for call in calls {
        assert!(
            matches!(call.await, Ok(Ok(true))),
            "different keys did not run in parallel"
        );
    }
}

#[distributed_lock(key = "orders/<id>", client = client)]
async fn meet(client: &LockClient, id: u64, barrier: &Barrier) -> Result<bool, LockError> {
    Ok(timeout(Duration::from_secs(10), barrier.wait())
        .await
        .is_ok())
}

#[distributed_lock(key = "jobs/report", if_locked = "skip", client = client)]
async fn report(client: &LockClient, ran: &AtomicBool) -> Option<u32> {
    ran.store(true, Ordering::SeqCst);
    Some(42)
}

#[distributed_lock(key = "jobs/report", if_locked = "skip", client = client)]
async fn report_result(client: &LockClient, ran: &AtomicBool) -> Result<(), LockError> {
    ran.store(true, Ordering::SeqCst);
    Ok(())
}

#[tokio::test]
async fn skip_returns_the_skipped_value_without_running_the_body() {
    let client = LockClient::memory();
    let ran = AtomicBool::new(false);
    assert_eq!(
        report(&client, &ran).await,
        Some(42),
        "free lock: the body runs"
    );
    assert!(ran.swap(false, Ordering::SeqCst));

    let held = client.acquire("jobs/report").await.unwrap();
    assert_eq!(report(&client, &ran).await, None);
    assert!(matches!(report_result(&client, &ran).await, Ok(())));
    assert!(!ran.load(Ordering::SeqCst), "a skipped body ran");
    held.release().await.unwrap();
}

#[distributed_lock(key = "accounts/<account>", if_locked = "error", client = client)]
async fn transfer(client: &LockClient, account: &str) -> Result<u64, LockError> {
    Ok(distlock::current()
        .map(|lock| lock.token())
        .unwrap_or_default())
}

#[tokio::test]
async fn error_mode_returns_busy_at_once() {
    let client = LockClient::memory();
    assert!(transfer(&client, "a").await.unwrap() > 0);
    let held = client.acquire("accounts/a").await.unwrap();
    let started = Instant::now();
    assert!(
        matches!(transfer(&client, "a").await, Err(LockError::Busy { key, .. }) if key == "accounts/a")
    );
    // No waiting (a loaded test machine still answers well within this).
    assert!(started.elapsed() < Duration::from_millis(500));
    held.release().await.unwrap();
}

#[distributed_lock(key = "carts/<id>", wait = "100ms", client = client)]
async fn checkout(client: &LockClient, id: u32) -> Result<(), LockError> {
    Ok(())
}

#[tokio::test]
async fn wait_mode_ends_in_timeout() {
    let client = LockClient::memory();
    let held = client.acquire("carts/1").await.unwrap();
    let started = Instant::now();
    let result = checkout(&client, 1).await;
    assert!(
        matches!(result, Err(LockError::Timeout { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    held.release().await.unwrap();
    checkout(&client, 1).await.unwrap();
}

#[distributed_lock(key = "jobs/tick", if_locked = "skip", hold_at_least = "1s", client = client)]
async fn tick(client: &LockClient) {}

#[tokio::test]
async fn hold_at_least_keeps_the_lock_after_the_body() {
    let client = LockClient::memory();
    let started = Instant::now();
    tick(&client).await;
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "the caller waited for the hold"
    );
    assert!(
        client.try_acquire("jobs/tick").await.unwrap().is_none(),
        "released before hold_at_least"
    );
    sleep(Duration::from_millis(1200)).await;
    let guard = client.try_acquire("jobs/tick").await.unwrap();
    assert!(guard.is_some(), "still held after hold_at_least");
}

#[distributed_lock(key = "slow", ttl = "90ms", renew = false, client = client)]
async fn outlives_its_lock(client: &LockClient, finished: &AtomicBool) -> Result<(), LockError> {
    sleep(Duration::from_secs(2)).await;
    finished.store(true, Ordering::SeqCst);
    Ok(())
}

#[distributed_lock(key = "slow-continue", ttl = "90ms", renew = false, on_lost = "continue", client = client)]
async fn continues_when_lost(client: &LockClient) -> Result<bool, LockError> {
    sleep(Duration::from_millis(200)).await;
    Ok(distlock::current().is_some_and(|lock| lock.is_lost()))
}

#[tokio::test]
async fn on_lost_cancel_stops_the_body_and_continue_lets_it_finish() {
    let client = LockClient::memory();
    let finished = AtomicBool::new(false);
    let started = Instant::now();
    let result = outlives_its_lock(&client, &finished).await;
    assert!(matches!(result, Err(LockError::Lost { .. })), "{result:?}");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(
        !finished.load(Ordering::SeqCst),
        "the body went on after the lock was lost"
    );

    assert!(
        continues_when_lost(&client).await.unwrap(),
        "the body saw no lost lock"
    );
}

#[distributed_lock(key = "panics/<n>", client = client)]
async fn panics(client: &LockClient, n: u8) -> Result<(), LockError> {
    panic!("body {n} fails");
}

#[tokio::test]
async fn a_panic_in_the_body_releases_the_lock() {
    let client = LockClient::memory();
    let task = tokio::spawn({
        let client = client.clone();
        async move { panics(&client, 1).await }
    });
    assert!(task.await.is_err_and(|error| error.is_panic()));
    let guard = client
        .acquire_with(
            "panics/1",
            &client.options().clone().wait(Duration::from_millis(100)),
        )
        .await;
    assert!(
        guard.is_ok(),
        "the lock stayed held after a panic: {guard:?}"
    );
}

#[distributed_lock(key = "long/<n>", client = client)]
async fn long(client: &LockClient, n: u8) -> Result<(), LockError> {
    sleep(Duration::from_secs(30)).await;
    Ok(())
}

#[tokio::test]
async fn dropping_the_future_releases_within_a_round_trip() {
    let client = LockClient::memory();
    assert!(
        timeout(Duration::from_millis(50), long(&client, 1))
            .await
            .is_err()
    );
    let started = Instant::now();
    let guard = client
        .acquire_with(
            "long/1",
            &client.options().clone().wait(Duration::from_secs(5)),
        )
        .await;
    assert!(guard.is_ok(), "{guard:?}");
    // Released in the background right away, not after the 30 s ttl (the
    // bound leaves room for a loaded test machine).
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "released only after {:?}",
        started.elapsed()
    );
}

#[distributed_lock(key = "orders/<id>/items", client = client)]
async fn key_of(client: &LockClient, id: &str) -> Result<String, LockError> {
    Ok(distlock::current()
        .map(|lock| lock.key().to_owned())
        .unwrap_or_default())
}

#[tokio::test]
async fn interpolated_values_cannot_reach_another_key() {
    let client = LockClient::memory();
    assert_eq!(
        key_of(&client, "1/items").await.unwrap(),
        "orders/1%2Fitems/items"
    );
    assert_eq!(key_of(&client, "50%").await.unwrap(), "orders/50%25/items");
    assert_eq!(
        key_of(&client, "a b<c>").await.unwrap(),
        "orders/a%20b%3Cc%3E/items"
    );

    // Holding `orders/1/items` does not block a value that contains a `/`.
    let other = client.acquire("orders/1/items/items").await.unwrap();
    let escaped = timeout(Duration::from_secs(1), key_of(&client, "1/items")).await;
    assert!(matches!(escaped, Ok(Ok(_))));
    other.release().await.unwrap();
}

struct Tenant {
    name: String,
    locks: Arc<LockClient>,
}

impl Tenant {
    #[distributed_lock(key = "tenants/<self.name>/sync", client = self.locks, if_locked = "error")]
    async fn sync(&self) -> Result<String, LockError> {
        Ok(distlock::current()
            .map(|lock| lock.key().to_owned())
            .unwrap_or_default())
    }
}

#[tokio::test]
async fn methods_lock_on_their_own_fields() {
    let tenant = Tenant {
        name: "acme".into(),
        locks: Arc::new(LockClient::memory()),
    };
    assert_eq!(tenant.sync().await.unwrap(), "tenants/acme/sync");
    let held = tenant.locks.acquire("tenants/acme/sync").await.unwrap();
    assert!(matches!(tenant.sync().await, Err(LockError::Busy { .. })));
    held.release().await.unwrap();
}

#[distributed_lock(key = "tokens", client = client)]
async fn token(client: &LockClient) -> Result<u64, LockError> {
    Ok(distlock::current()
        .map(|lock| lock.token())
        .unwrap_or_default())
}

#[tokio::test]
async fn the_body_sees_increasing_fencing_tokens() {
    let client = LockClient::memory();
    let first = token(&client).await.unwrap();
    let second = token(&client).await.unwrap();
    assert!(first > 0 && second > first, "{first} then {second}");
}

mod logging {
    //! A minimal subscriber that counts error-level events.
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    pub static ERRORS: AtomicUsize = AtomicUsize::new(0);

    pub struct CountErrors;

    impl Subscriber for CountErrors {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            if *event.metadata().level() == Level::ERROR {
                ERRORS.fetch_add(1, Ordering::SeqCst);
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

#[distributed_lock(key = "audit", if_locked = "error", client = client)]
async fn audit(client: &LockClient, ran: &AtomicBool) {
    ran.store(true, Ordering::SeqCst);
}

#[test]
fn a_unit_fn_logs_its_lock_error_at_error_level() {
    let _subscriber = tracing::subscriber::set_default(logging::CountErrors);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = LockClient::memory();
        let ran = AtomicBool::new(false);
        let held = client.acquire("audit").await.unwrap();
        let before = logging::ERRORS.load(Ordering::SeqCst);
        audit(&client, &ran).await;
        assert!(!ran.load(Ordering::SeqCst));
        assert_eq!(
            logging::ERRORS.load(Ordering::SeqCst),
            before + 1,
            "no error-level log"
        );
        held.release().await.unwrap();
    });
}

#[distributed_lock(key = "reports/<n>", ttl = "300ms", client = client)]
async fn long_report(client: &LockClient, n: u8, finished: &AtomicBool) -> Result<(), LockError> {
    sleep(Duration::from_secs(3)).await;
    finished.store(true, Ordering::SeqCst);
    Ok(())
}

#[tokio::test]
async fn a_lock_taken_over_while_the_body_runs_cancels_the_body() {
    use distlock::store::CompareExchange;
    use distlock::store::memory::MemoryStore;

    let store = Arc::new(MemoryStore::new());
    let client = LockClient::new(Arc::clone(&store));
    let finished = AtomicBool::new(false);
    let call = long_report(&client, 1, &finished);
    let meddle = async {
        // Another party deletes the record under the holder (as if it had
        // taken the lock over): the next renewal (every ttl/3) conflicts.
        sleep(Duration::from_millis(50)).await;
        let entry = store.get("reports/1").await.unwrap().unwrap();
        store.delete("reports/1", entry.index).await.unwrap();
    };
    let started = Instant::now();
    let (result, ()) = tokio::join!(call, meddle);
    assert!(
        matches!(
            result,
            Err(LockError::Lost {
                reason: distlock::LostReason::TakenOver,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!finished.load(Ordering::SeqCst));
}

#[distributed_lock(key = "jobs/once", if_locked = "skip", client = client)]
async fn once(client: &LockClient, runs: &AtomicUsize) -> Option<()> {
    runs.fetch_add(1, Ordering::SeqCst);
    sleep(Duration::from_millis(200)).await;
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_concurrent_skip_callers_exactly_one_runs() {
    let client = LockClient::memory();
    let runs = Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let (client, runs) = (client.clone(), Arc::clone(&runs));
            tokio::spawn(async move { once(&client, &runs).await })
        })
        .collect();
    let mut ran = 0;
    for call in calls {
        ran += usize::from(call.await.unwrap().is_some());
    }
    assert_eq!((ran, runs.load(Ordering::SeqCst)), (1, 1));
}

#[tokio::test]
async fn a_caller_that_gives_up_waiting_leaves_nothing_behind() {
    let client = LockClient::memory();
    let held = client.acquire("carts/7").await.unwrap();
    // `checkout` waits up to 100 ms; give up after 30 ms.
    assert!(
        timeout(Duration::from_millis(30), checkout(&client, 7))
            .await
            .is_err()
    );
    held.release().await.unwrap();
    // Free at once: a leftover waiter or record would make this time out.
    checkout(&client, 7).await.unwrap();
}
