//! The etcd backend against real etcd processes (started on free loopback ports by
//! `support/etcd.rs`). Needs `etcd` installed: run `scripts/etcd.sh` first; without it
//! these tests fail and say so.
//!
//! Run: `cargo test --features etcd --test etcd`
#![cfg(feature = "etcd")]

mod support {
    pub mod etcd;
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use lock_runtime::store::etcd::{EtcdConfigError, EtcdStore};
use lock_runtime::store::{
    CompareExchange, DeleteOutcome, Expect, LeaseId, PutOutcome, Record, StoreError,
};
use support::etcd::EtcdCluster;

fn record(owner: &str, nonce: u64) -> Record {
    Record {
        owner: Arc::from(owner),
        nonce,
        ttl_ms: 10_000,
        written_at_ms: 0,
    }
}

fn store_for(urls: &[String]) -> EtcdStore {
    EtcdStore::builder()
        .endpoints(urls.iter().cloned())
        .prefix("test/")
        .request_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap_or_else(|e| panic!("building the store: {e}"))
}

fn swapped(outcome: PutOutcome) -> u64 {
    match outcome {
        PutOutcome::Swapped { index } => index,
        other => panic!("expected Swapped, got {other:?}"),
    }
}

/// A loopback port nothing listens on (bound, then released).
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("no local address: {e}"))
        .port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

async fn must<T>(what: &str, result: Result<T, StoreError>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_absent_then_index_swaps_and_conflicts_carry_the_current_entry() {
    let etcd = EtcdCluster::single();
    let store = store_for(&etcd.client_urls());
    let a = record("a", 1);
    let b = record("b", 2);

    let first = swapped(must("put", store.put("k", &a, Expect::Absent, None).await).await);
    // A second put-if-absent conflicts and shows the holder, in the same round trip.
    match must("put", store.put("k", &b, Expect::Absent, None).await).await {
        PutOutcome::Conflict {
            current: Some(entry),
        } => {
            assert_eq!(entry.index, first);
            assert_eq!(entry.record, a);
            assert_eq!(entry.lease, None);
        }
        other => panic!("expected a conflict with the current entry, got {other:?}"),
    }
    // A put on the right index swaps and the index grows.
    let second = swapped(must("put", store.put("k", &a, Expect::Index(first), None).await).await);
    assert!(second > first);
    // A stale index conflicts, for put and for delete, and shows the current entry.
    match must("put", store.put("k", &b, Expect::Index(first), None).await).await {
        PutOutcome::Conflict { current: Some(e) } => assert_eq!(e.index, second),
        other => panic!("stale put: {other:?}"),
    }
    match must("delete", store.delete("k", first).await).await {
        DeleteOutcome::Conflict { current: Some(e) } => assert_eq!(e.index, second),
        other => panic!("stale delete: {other:?}"),
    }
    assert_eq!(
        must("get", store.get("k").await).await.map(|e| e.index),
        Some(second)
    );
    assert_eq!(
        must("delete", store.delete("k", second).await).await,
        DeleteOutcome::Deleted
    );
    assert_eq!(must("get", store.get("k").await).await, None);
    assert_eq!(
        must("delete", store.delete("k", second).await).await,
        DeleteOutcome::Conflict { current: None }
    );
    match must("put", store.put("k", &b, Expect::Index(second), None).await).await {
        PutOutcome::Conflict { current: None } => {}
        other => panic!("put on a deleted key: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_grows_across_delete_and_recreate_and_the_prefix_is_applied() {
    let etcd = EtcdCluster::single();
    let store = store_for(&etcd.client_urls());
    let mut last = 0;
    for nonce in 0..5 {
        let index = swapped(
            must(
                "put",
                store
                    .put("again", &record("a", nonce), Expect::Absent, None)
                    .await,
            )
            .await,
        );
        assert!(index > last, "index {index} after {last}");
        last = index;
        assert_eq!(
            must("delete", store.delete("again", index).await).await,
            DeleteOutcome::Deleted
        );
    }
    // The key lives under the prefix: raw etcd sees `test/again`, another prefix does not.
    let raw = must("raw client", store.raw_client().await).await;
    let mut raw = raw;
    swapped(
        must(
            "put",
            store.put("p", &record("a", 9), Expect::Absent, None).await,
        )
        .await,
    );
    let seen = raw
        .get("test/p", None)
        .await
        .unwrap_or_else(|e| panic!("raw get: {e}"));
    assert_eq!(seen.kvs().len(), 1);
    let other = EtcdStore::builder()
        .endpoints(etcd.client_urls())
        .prefix("other/")
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(must("get", other.get("p").await).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_is_not_a_record_is_reported_as_foreign() {
    let etcd = EtcdCluster::single();
    let store = store_for(&etcd.client_urls());
    let mut raw = must("raw client", store.raw_client().await).await;
    raw.put("test/foreign", "not json", None)
        .await
        .unwrap_or_else(|e| panic!("raw put: {e}"));
    match store.get("foreign").await {
        Err(StoreError::Foreign { .. }) => {}
        other => panic!("expected Foreign, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_wakes_on_delete_and_on_create_and_returns_at_once_when_stale() {
    let etcd = EtcdCluster::single();
    let store = store_for(&etcd.client_urls());
    let index = swapped(
        must(
            "put",
            store.put("w", &record("a", 1), Expect::Absent, None).await,
        )
        .await,
    );

    // Held: the watch blocks until the key is deleted.
    let watcher = {
        let store = store.clone();
        tokio::spawn(async move { store.watch("w", Some(index)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !watcher.is_finished(),
        "watch returned while nothing changed"
    );
    let deleted_at = Instant::now();
    assert_eq!(
        must("delete", store.delete("w", index).await).await,
        DeleteOutcome::Deleted
    );
    let woke = tokio::time::timeout(Duration::from_secs(2), watcher)
        .await
        .unwrap_or_else(|_| panic!("watch did not wake on delete"));
    must("watch", woke.unwrap_or_else(|e| panic!("watch task: {e}"))).await;
    let wake_latency = deleted_at.elapsed();
    assert!(wake_latency < Duration::from_secs(1), "{wake_latency:?}");

    // Absent: the watch blocks until the key is created.
    let watcher = {
        let store = store.clone();
        tokio::spawn(async move { store.watch("w", None).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!watcher.is_finished(), "watch of an absent key returned");
    let created = swapped(
        must(
            "put",
            store.put("w", &record("b", 2), Expect::Absent, None).await,
        )
        .await,
    );
    let woke = tokio::time::timeout(Duration::from_secs(2), watcher)
        .await
        .unwrap_or_else(|_| panic!("watch did not wake on create"));
    must("watch", woke.unwrap_or_else(|e| panic!("watch task: {e}"))).await;

    // A stale view returns at once: changed since `index`, or present while we saw absent.
    tokio::time::timeout(Duration::from_secs(1), store.watch("w", Some(index)))
        .await
        .unwrap_or_else(|_| panic!("stale watch blocked"))
        .unwrap_or_else(|e| panic!("stale watch: {e}"));
    tokio::time::timeout(Duration::from_secs(1), store.watch("w", None))
        .await
        .unwrap_or_else(|_| panic!("watch of a present key blocked"))
        .unwrap_or_else(|e| panic!("watch: {e}"));
    assert!(created > index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_expires_deletes_its_key_and_keep_alive_holds_it() {
    let etcd = EtcdCluster::single();
    let store = store_for(&etcd.client_urls());

    let kept = must("grant", store.grant_lease(Duration::from_secs(1)).await).await;
    let expiring = must("grant", store.grant_lease(Duration::from_secs(1)).await).await;
    let index = swapped(
        must(
            "put",
            store
                .put("kept", &record("a", 1), Expect::Absent, Some(kept))
                .await,
        )
        .await,
    );
    swapped(
        must(
            "put",
            store
                .put("expiring", &record("a", 2), Expect::Absent, Some(expiring))
                .await,
        )
        .await,
    );
    let entry = must("get", store.get("kept").await).await;
    assert_eq!(entry.map(|e| (e.index, e.lease)), Some((index, Some(kept))));

    // Renew one lease every 300 ms for 3 s; leave the other alone.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let ttl = must("keep_alive", store.keep_alive(kept).await).await;
        assert!(ttl.is_some_and(|t| t >= Duration::from_secs(1)), "{ttl:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(must("get", store.get("kept").await).await.is_some());
    assert_eq!(must("get", store.get("expiring").await).await, None);
    // A put with the expired lease reports it gone.
    match store
        .put("late", &record("a", 3), Expect::Absent, Some(expiring))
        .await
    {
        Err(StoreError::LeaseGone(id)) => assert_eq!(id, expiring),
        other => panic!("expected LeaseGone, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_of_a_revoked_lease_reports_it_gone_and_revoke_deletes_its_keys() {
    let etcd = EtcdCluster::single();
    let store = store_for(&etcd.client_urls());
    let lease = must("grant", store.grant_lease(Duration::from_secs(30)).await).await;
    swapped(
        must(
            "put",
            store
                .put("r", &record("a", 1), Expect::Absent, Some(lease))
                .await,
        )
        .await,
    );
    // The first keep-alive opens the stream, the second reuses it.
    for _ in 0..2 {
        let ttl = must("keep_alive", store.keep_alive(lease).await).await;
        assert!(ttl.is_some_and(|t| t > Duration::from_secs(20)), "{ttl:?}");
    }
    must("revoke", store.revoke_lease(lease).await).await;
    assert_eq!(must("get", store.get("r").await).await, None);
    match store.keep_alive(lease).await {
        Ok(None) | Err(StoreError::LeaseGone(_)) => {}
        other => panic!("keep-alive of a revoked lease: {other:?}"),
    }
    // Revoking again is not an error; an unknown lease is gone too.
    must("revoke again", store.revoke_lease(lease).await).await;
    match store.keep_alive(LeaseId(0x7eed)).await {
        Ok(None) | Err(StoreError::LeaseGone(_)) => {}
        other => panic!("keep-alive of an unknown lease: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_endpoint_fails_over_to_the_next() {
    let etcd = EtcdCluster::single();
    let urls = vec![dead_endpoint(), etcd.client_url(0)];
    let store = store_for(&urls);
    let started = Instant::now();
    let index = swapped(
        must(
            "put",
            store.put("f", &record("a", 1), Expect::Absent, None).await,
        )
        .await,
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        must("get", store.get("f").await).await.map(|e| e.index),
        Some(index)
    );
    // Only dead endpoints: a typed Unavailable naming one of them, in bounded time.
    let dead = store_for(&[dead_endpoint(), dead_endpoint()]);
    let started = Instant::now();
    match dead.get("f").await {
        Err(StoreError::Unavailable { endpoint, .. }) => {
            assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_does_not_hang_a_call_past_the_timeout() {
    let etcd = EtcdCluster::single();
    let store = store_for(&etcd.client_urls());
    // Connect first, so the request reaches a node that accepted us and then froze.
    must("ping", store.ping().await).await;
    etcd.pause(0);
    let started = Instant::now();
    let result = store.put("s", &record("a", 1), Expect::Absent, None).await;
    let took = started.elapsed();
    etcd.resume(0);
    match result {
        Err(StoreError::Unavailable { endpoint, .. }) => {
            assert_eq!(endpoint, etcd.client_url(0))
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "took {took:?} with a 500 ms request timeout"
    );
    // Resumed: works again (the write above may or may not have been applied).
    must("get after resume", store.get("s").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_member_is_skipped_within_one_call() {
    let etcd = EtcdCluster::cluster(3);
    let store = store_for(&etcd.client_urls());
    must("ping", store.ping().await).await;
    // Freeze the endpoint requests go to first (member 0, maybe a follower).
    etcd.pause(0);
    let started = Instant::now();
    let result = store.put("m", &record("a", 1), Expect::Absent, None).await;
    let took = started.elapsed();
    etcd.resume(0);
    let index = swapped(result.unwrap_or_else(|e| panic!("put with a stopped member: {e}")));
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(
        must("get", store.get("m").await).await.map(|e| e.index),
        Some(index)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_typed_error_and_the_right_one_works() {
    let etcd = EtcdCluster::single();
    etcd.enable_auth("s3cret-pw");
    let base = EtcdStore::builder()
        .endpoints(etcd.client_urls())
        .request_timeout(Duration::from_secs(1));

    let wrong = base
        .clone()
        .credentials("root", "not-the-password")
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    match wrong.ping().await {
        Err(error @ StoreError::Backend { .. }) => {
            let message = error.to_string();
            assert!(message.contains("authentication"), "{message}");
            assert!(message.contains(&etcd.client_url(0)), "{message}");
            assert!(!message.contains("not-the-password"), "{message}");
        }
        other => panic!("expected a Backend auth error, got {other:?}"),
    }
    assert!(!format!("{wrong:?}").contains("not-the-password"));

    let anonymous = base.clone().build().unwrap_or_else(|e| panic!("{e}"));
    match anonymous.ping().await {
        Err(StoreError::Backend { .. }) => {}
        other => panic!("expected a Backend error without credentials, got {other:?}"),
    }

    let url = format!(
        "etcd://root:s3cret-pw@127.0.0.1:{}/app",
        etcd.client_port(0)
    );
    let right = EtcdStore::from_url(&url).unwrap_or_else(|e| panic!("{e}"));
    assert!(!format!("{right:?}").contains("s3cret-pw"));
    swapped(
        must(
            "put with auth",
            right.put("a", &record("a", 1), Expect::Absent, None).await,
        )
        .await,
    );
}

#[test]
fn malformed_urls_are_typed_errors() {
    for bad in [
        "",
        "etcd:/127.0.0.1:2379",
        "redis://127.0.0.1:2379",
        "etcd://127.0.0.1",
        "etcd://user:pw@",
        "etcd://127.0.0.1:2379,,127.0.0.1:2380",
        "etcd://[::1:2379",
    ] {
        match EtcdStore::from_url(bad) {
            Err(EtcdConfigError::InvalidUrl { .. }) => {}
            other => panic!("{bad:?}: expected InvalidUrl, got {other:?}"),
        }
    }
}
