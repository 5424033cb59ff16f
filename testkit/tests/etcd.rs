//! The etcd backend against real etcd processes (started on free loopback ports by
//! `testkit::etcd`). Needs `etcd` installed: run `scripts/etcd.sh` first; without it
//! these tests fail and say so.
//!
//! Run: `cargo test -p testkit --features etcd --test etcd`. The killed-holder test,
//! which runs the `distlock` CLI as its holder process, is in the root package's
//! `tests/crashed_holder.rs` (only that package's tests can run its binary).
#![cfg(feature = "etcd")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use distlock::store::Capabilities;
use distlock::testing::conformance::{self, Backend};
use distlock::testing::faults::{Calls, Faults, Op};
use distlock::testing::{Observer, unique_key};
use distlock::{ForceRelease, Holder, LockClient, LockError, LockOptions, Wait};
use lock_runtime::store::etcd::{EtcdConfigError, EtcdError, EtcdStore, etcd_client};
use lock_runtime::store::{
    CompareExchange, DeleteOutcome, Expect, LeaseId, PutOutcome, Record, StoreError, Stored,
};
use testkit::etcd::{Cluster as EtcdCluster, Options as EtcdOptions};

fn record(owner: &str, nonce: u64) -> Record {
    Record {
        owner: Arc::from(owner),
        nonce,
        ttl_ms: 10_000,
        written_at_ms: 0,
    }
}

/// A store under the `test/` prefix with 1 s request and connect timeouts (generous:
/// these tests run in parallel on two shared cores).
fn store_for(urls: &[String]) -> EtcdStore {
    store_with_timeout(urls, Duration::from_secs(1))
}

fn store_with_timeout(urls: &[String], timeout: Duration) -> EtcdStore {
    EtcdStore::builder()
        .endpoints(urls.iter().cloned())
        .prefix("test/")
        .request_timeout(timeout)
        .connect_timeout(timeout)
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
    // Without a prefix too.
    let unprefixed = EtcdStore::builder()
        .endpoints(urls.iter().cloned())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    must("ping without a prefix", unprefixed.ping().await).await;
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
    let store = store_with_timeout(&etcd.client_urls(), Duration::from_millis(500));
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
        took >= Duration::from_millis(450) && took < Duration::from_millis(2500),
        "took {took:?} with a 500 ms request timeout"
    );
    // Resumed: works again (the write above may or may not have been applied).
    must("get after resume", store.get("s").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_node_that_stops_fails_instead_of_hanging() {
    let etcd = EtcdCluster::single();
    let store = store_with_timeout(&etcd.client_urls(), Duration::from_millis(500));
    let index = swapped(
        must(
            "put",
            store.put("w", &record("a", 1), Expect::Absent, None).await,
        )
        .await,
    );
    let watcher = {
        let store = store.clone();
        tokio::spawn(async move { store.watch("w", Some(index)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!watcher.is_finished(), "the watch returned early");
    let stopped_at = Instant::now();
    etcd.pause(0);
    // HTTP/2 pings (every max(timeout, 1 s), answer due within the timeout) notice it.
    let outcome = tokio::time::timeout(Duration::from_secs(5), watcher).await;
    let took = stopped_at.elapsed();
    etcd.resume(0);
    match outcome {
        Ok(Ok(Err(StoreError::Unavailable { .. }))) => {}
        Ok(Ok(other)) => panic!("expected Unavailable from the watch, got {other:?}"),
        Ok(Err(e)) => panic!("watch task: {e}"),
        Err(_) => panic!("the watch still hung 5 s after its node stopped"),
    }
    println!("etcd: a watch on a stopped node failed after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keep_alive_stream_moves_to_another_member_when_its_member_stops() {
    let etcd = EtcdCluster::members(3);
    let store = store_for(&etcd.client_urls());
    let lease = must("grant", store.grant_lease(Duration::from_secs(10)).await).await;
    // Opens the long-lived stream on member 0 (the first endpoint).
    must("keep_alive", store.keep_alive(lease).await).await;
    etcd.pause(0);
    let started = Instant::now();
    let renewed = store.keep_alive(lease).await;
    let took = started.elapsed();
    etcd.resume(0);
    let ttl = renewed.unwrap_or_else(|e| panic!("keep-alive with a stopped member: {e}"));
    assert!(ttl.is_some_and(|t| t > Duration::from_secs(5)), "{ttl:?}");
    // One request timeout on the stuck stream, then a new stream elsewhere.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    // And it keeps working on the new stream.
    let ttl = must("keep_alive again", store.keep_alive(lease).await).await;
    assert!(ttl.is_some(), "{ttl:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_member_is_skipped_within_one_call() {
    let etcd = EtcdCluster::members(3);
    let store = store_for(&etcd.client_urls());
    must("ping", store.ping().await).await;
    // Freeze the endpoint requests go to first (member 0, maybe a follower).
    etcd.pause(0);
    let started = Instant::now();
    let result = store.put("m", &record("a", 1), Expect::Absent, None).await;
    let took = started.elapsed();
    etcd.resume(0);
    let index = swapped(result.unwrap_or_else(|e| panic!("put with a stopped member: {e}")));
    // One request timeout on the stopped member, then an answer from another one
    // (after an election if the stopped one led).
    assert!(took < Duration::from_secs(3), "took {took:?}");
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
            assert!(
                matches!(EtcdError::of(&error), Some(EtcdError::AuthFailed { .. })),
                "{error:?}"
            );
        }
        other => panic!("expected a Backend auth error, got {other:?}"),
    }
    assert!(!format!("{wrong:?}").contains("not-the-password"));

    let anonymous = base.clone().build().unwrap_or_else(|e| panic!("{e}"));
    match anonymous.ping().await {
        Err(error @ StoreError::Backend { .. }) => assert!(
            matches!(EtcdError::of(&error), Some(EtcdError::AuthRequired)),
            "{error:?}"
        ),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_auth_token_is_refreshed() {
    let etcd = EtcdCluster::start(
        1,
        EtcdOptions {
            extra_args: vec!["--auth-token-ttl".into(), "1".into()],
            ..EtcdOptions::default()
        },
    );
    etcd.enable_auth("pw");
    let store = EtcdStore::builder()
        .endpoints(etcd.client_urls())
        .credentials("root", "pw")
        .request_timeout(Duration::from_secs(1))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let index = swapped(
        must(
            "put",
            store.put("t", &record("a", 1), Expect::Absent, None).await,
        )
        .await,
    );
    // A raw client that does not refresh shows the token really expires.
    let options = etcd_client::ConnectOptions::new().with_user("root", "pw");
    let mut raw = etcd_client::Client::connect(etcd.client_urls(), Some(options))
        .await
        .unwrap_or_else(|e| panic!("raw connect: {e}"));
    // The simple token lives 1 s without use; the next call must re-authenticate.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    match raw.get("t", None).await {
        Err(e) => assert!(e.to_string().contains("auth token"), "{e}"),
        Ok(_) => panic!("the token did not expire: this test proves nothing"),
    }
    assert_eq!(
        must("get with an expired token", store.get("t").await)
            .await
            .map(|e| e.index),
        Some(index)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_custom_ca_and_a_client_certificate() {
    let etcd = EtcdCluster::start(
        1,
        EtcdOptions {
            tls: true,
            ..EtcdOptions::default()
        },
    );
    let files = etcd
        .tls()
        .unwrap_or_else(|| panic!("started without TLS files"))
        .clone();
    let url = format!("etcds://127.0.0.1:{}/secure", etcd.client_port(0));
    let store = EtcdStore::builder_from_url(&url)
        .unwrap_or_else(|e| panic!("{e}"))
        .ca_certificate_file(&files.ca)
        .client_certificate_files(&files.client_cert, &files.client_key)
        .request_timeout(Duration::from_secs(1))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.endpoints(), [etcd.client_url(0)]);
    let index = swapped(
        must(
            "put over TLS",
            store.put("k", &record("a", 1), Expect::Absent, None).await,
        )
        .await,
    );
    assert_eq!(
        must("get over TLS", store.get("k").await)
            .await
            .map(|e| e.index),
        Some(index)
    );
    let debug = format!("{store:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    // The same from a URL alone (as `LockClient::connect` and the CLI take it).
    let url = format!(
        "etcds://127.0.0.1:{}/secure?ca={}&cert={}&key={}&timeout=1s",
        etcd.client_port(0),
        files.ca.display(),
        files.client_cert.display(),
        files.client_key.display()
    );
    let from_url = EtcdStore::from_url(&url).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        must("get over TLS, configured by URL", from_url.get("k").await)
            .await
            .map(|e| e.index),
        Some(index)
    );

    // No client certificate, or a CA that did not sign the server: an error, in bounded time.
    let ca = std::fs::read(&files.ca).unwrap_or_else(|e| panic!("{e}"));
    let client_pem = std::fs::read(&files.client_cert).unwrap_or_else(|e| panic!("{e}"));
    for (what, builder) in [
        (
            "no client certificate",
            EtcdStore::builder().tls().ca_certificate_pem(ca),
        ),
        (
            "a CA that did not sign the server",
            EtcdStore::builder().ca_certificate_pem(client_pem),
        ),
    ] {
        let bad = builder
            .endpoint(etcd.client_url(0))
            .request_timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(500))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        match bad.get("k").await {
            Err(
                StoreError::Unavailable { endpoint, .. } | StoreError::Backend { endpoint, .. },
            ) => {
                assert_eq!(endpoint, etcd.client_url(0), "{what}")
            }
            other => panic!("{what}: expected an error, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(3), "{what}");
    }
    // TLS options with a plain http:// endpoint are a configuration error.
    assert!(matches!(
        EtcdStore::builder()
            .ca_certificate_file(&files.ca)
            .endpoint("http://127.0.0.1:2379")
            .build(),
        Err(EtcdConfigError::InvalidEndpoint { .. })
    ));
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

// ---------------------------------------------------------------------------------------
// Lock-level tests: the shared conformance suite and the issue's etcd scenarios.

/// Every "connection" is a new `EtcdStore` (its own gRPC channels) on the same endpoints,
/// as separate service instances would have.
fn etcd_backend(urls: Vec<String>, request_timeout: Duration) -> Backend {
    let capabilities = Capabilities::NONE
        .with_watch(true)
        .with_leases(true)
        .with_listing(true);
    Backend::new("etcd", capabilities, move || {
        let store = EtcdStore::builder()
            .endpoints(urls.iter().cloned())
            .prefix("conformance/")
            .request_timeout(request_timeout)
            .connect_timeout(request_timeout)
            .build();
        async move { store }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_on_a_single_node() {
    let etcd = EtcdCluster::single();
    let backend = etcd_backend(etcd.client_urls(), Duration::from_millis(500));
    conformance::run_all(&backend.contention(4, 100))
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_a_thousand_contended_cycles_never_two_holders() {
    let etcd = EtcdCluster::single();
    // The limit is for hangs only: 8,000 contended cycles on two busy cores take a while.
    let backend = etcd_backend(etcd.client_urls(), Duration::from_secs(1))
        .time_limit(Duration::from_secs(900));
    let started = Instant::now();
    let observer = conformance::never_two_holders(&backend, 8, 1_000)
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    println!(
        "etcd: {} contended cycles by 8 clients in {:?}, most holders at once {}, \
         overlaps {}, token regressions {}",
        observer.entries(),
        started.elapsed(),
        observer.most_inside(),
        observer.overlaps(),
        observer.token_regressions()
    );
}

/// Progress of a contended run: when each critical section was entered.
#[derive(Default)]
struct Progress {
    entries: std::sync::Mutex<Vec<Instant>>,
    errors: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn entered(&self) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Instant::now());
    }

    fn count(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// The longest time without any critical section entered, within `[from, to]`.
    fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut inside: Vec<Instant> = entries
            .iter()
            .copied()
            .filter(|at| *at >= from && *at <= to)
            .collect();
        inside.sort_unstable();
        let mut last = from;
        let mut longest = Duration::ZERO;
        for at in inside.into_iter().chain(std::iter::once(to)) {
            longest = longest.max(at.duration_since(last));
            last = at;
        }
        longest
    }

    /// How long after `fault` the first critical section was entered.
    fn resumed_after(&self, fault: Instant) -> Option<Duration> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|at| **at > fault)
            .min()
            .map(|at| at.duration_since(fault))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_leader_killed_and_member_stopped_mid_run_never_two_holders() {
    let mut etcd = EtcdCluster::members(3);
    let backend = etcd_backend(etcd.client_urls(), Duration::from_millis(500));
    let key = unique_key("cluster/contended");
    let observer = Arc::new(Observer::default());
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let options = LockOptions::default()
        .ttl(Duration::from_secs(5))
        .wait(Wait::For(Duration::from_secs(10)));

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let client = backend
            .client(options.clone())
            .await
            .unwrap_or_else(|failure| panic!("{failure}"));
        let (observer, progress, stop, key) = (
            Arc::clone(&observer),
            Arc::clone(&progress),
            Arc::clone(&stop),
            key.clone(),
        );
        tasks.spawn(async move {
            // Bounded: the test sets `stop` after about 12 s.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let guard = match client.acquire(&key).await {
                    Ok(guard) => guard,
                    Err(_) => {
                        // Unavailable while the cluster elects: try again shortly.
                        progress
                            .errors
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                observer.enter(guard.token());
                progress.entered();
                tokio::task::yield_now().await;
                observer.exit();
                if guard.release().await.is_err() {
                    progress
                        .errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill = progress.count();
    let leader = etcd.wait_leader(Duration::from_secs(5));
    let killed_at = Instant::now();
    etcd.kill(leader);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_kill = progress.count();
    let resumed_after_kill = progress.resumed_after(killed_at);
    let stall_after_kill = progress.longest_gap(killed_at, Instant::now());
    etcd.restart(leader);
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let stopped = etcd.wait_leader(Duration::from_secs(5));
    let stopped_at = Instant::now();
    etcd.pause(stopped);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_stop = progress.count();
    let resumed_after_stop = progress.resumed_after(stopped_at);
    let stall_after_stop = progress.longest_gap(stopped_at, Instant::now());
    etcd.resume(stopped);
    tokio::time::sleep(Duration::from_millis(1000)).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined {
                std::panic::resume_unwind(error.into_panic());
            }
        }
    })
    .await;
    println!(
        "etcd 3 nodes: {} cycles ({before_kill} before the kill, {after_kill} 3 s after, \
         {after_stop} 3 s after the stop), errors retried {}, leader n{} kill -9: first entry \
         after {resumed_after_kill:?}, longest stall in the 3 s after {stall_after_kill:?}; \
         SIGSTOP of leader n{}: first entry after {resumed_after_stop:?}, longest stall \
         {stall_after_stop:?}; overlaps {}, token regressions {}",
        observer.entries(),
        progress.errors.load(std::sync::atomic::Ordering::Relaxed),
        leader + 1,
        stopped + 1,
        observer.overlaps(),
        observer.token_regressions()
    );
    assert!(drained.is_ok(), "the clients did not stop within 20 s");
    assert_eq!(observer.overlaps(), 0, "two holders were inside at once");
    assert_eq!(observer.most_inside(), 1);
    assert_eq!(
        observer.token_regressions(),
        0,
        "tokens must strictly increase"
    );
    for (what, stall) in [
        ("leader kill -9", stall_after_kill),
        ("member SIGSTOP", stall_after_stop),
    ] {
        assert!(
            stall < Duration::from_secs(5),
            "no lock handed over for {stall:?} after the {what}"
        );
    }
    for (what, resumed) in [
        ("leader kill -9", resumed_after_kill),
        ("member SIGSTOP", resumed_after_stop),
    ] {
        let resumed = resumed.unwrap_or_else(|| panic!("no progress at all after the {what}"));
        assert!(
            resumed < Duration::from_secs(5),
            "progress resumed only {resumed:?} after the {what}"
        );
    }
}

/// The watches, lease grants and revocations among `calls`.
fn others(calls: Calls) -> u64 {
    calls.of(Op::Watch) + calls.of(Op::GrantLease) + calls.of(Op::RevokeLease)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_locks_held_thirty_seconds_cost_at_most_one_renewal_per_second() {
    const LOCKS: usize = 10_000;
    const HOLD: Duration = Duration::from_secs(30);
    let etcd = EtcdCluster::single();
    // Counts the requests the lock client sends, by kind. Not a timeout test: 10,000
    // acquires in batches may queue on two busy cores.
    let store = Faults::new(store_with_timeout(
        &etcd.client_urls(),
        Duration::from_secs(5),
    ));
    let counts = store.clone();
    let client = LockClient::builder(store)
        .defaults(
            LockOptions::default()
                .ttl(Duration::from_secs(10))
                .wait(Wait::Never),
        )
        .build()
        .unwrap_or_else(|e| panic!("{e}"));

    let started = Instant::now();
    let mut guards = Vec::with_capacity(LOCKS);
    for batch in (0..LOCKS).collect::<Vec<_>>().chunks(100) {
        let mut tasks = tokio::task::JoinSet::new();
        for &i in batch {
            let client = client.clone();
            tasks.spawn(async move { client.acquire(&format!("many/{i}")).await });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(guard)) => guards.push(guard),
                Ok(Err(e)) => panic!("acquire: {e}"),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
    }
    let acquired_in = started.elapsed();
    // Every held key is watched (the key rule), all on one watch stream.
    let watched_in = wait_metric(&etcd, 0, WATCHERS, Duration::from_secs(30), |v| {
        v == LOCKS as f64
    })
    .await;
    let streams = metric_now(&etcd, 0, WATCH_STREAMS);
    assert_eq!(
        streams, 1.0,
        "{LOCKS} held-key watches on {streams} streams"
    );

    let before = counts.calls().total();
    let keep_alives_before = counts.calls().of(Op::KeepAlive);
    tokio::time::sleep(HOLD).await;
    let during = counts.calls().total() - before;
    let keep_alives = counts.calls().of(Op::KeepAlive) - keep_alives_before;
    assert!(guards.iter().all(|g| !g.is_lost()), "a held lock was lost");

    let release_started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut guards = guards.into_iter();
    loop {
        let batch: Vec<_> = guards.by_ref().take(100).collect();
        if batch.is_empty() {
            break;
        }
        for guard in batch {
            tasks.spawn(guard.release());
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("release: {e}"),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
    }
    println!(
        "etcd: {LOCKS} locks acquired in {acquired_in:?} (all {LOCKS} held keys watched on 1 \
         stream {watched_in:?} later), held {HOLD:?} with {during} requests ({keep_alives} \
         keep-alives), released in {:?}",
        release_started.elapsed()
    );
    assert!(
        during <= HOLD.as_secs(),
        "{during} requests in {HOLD:?} while holding {LOCKS} locks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_errors_name_the_backend_when_etcd_is_unreachable() {
    let store = store_for(&[dead_endpoint()]);
    let client = LockClient::builder(store)
        .defaults(LockOptions::default().wait(Wait::For(Duration::from_secs(2))))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    match client.acquire("unreachable").await {
        Err(error @ LockError::Unavailable { .. }) => {
            let message = error.to_string();
            assert!(message.contains("etcd"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// etcd serves a watch that starts at a past revision from its "unsynced" group, caught
/// up every 100 ms; a waiter whose watch started at `seen + 1` after other keys were
/// written would wake up to 100 ms late. The adapter starts it after the revision of the
/// waiter's own conflicting write instead, as the lock algorithm makes one just before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_wakes_within_milliseconds_even_after_writes_to_other_keys() {
    let etcd = EtcdCluster::single();
    let store = store_for(&etcd.client_urls());
    let mut wakes = Vec::new();
    for round in 0..9 {
        let key = format!("prompt{round}");
        let index = swapped(
            must(
                "put",
                store.put(&key, &record("a", 1), Expect::Absent, None).await,
            )
            .await,
        );
        // Another key written after the holder's write, as in any busy store.
        swapped(
            must(
                "put",
                store
                    .put(
                        &format!("other{round}"),
                        &record("b", 1),
                        Expect::Absent,
                        None,
                    )
                    .await,
            )
            .await,
        );
        // The waiter's put-if-absent conflicts, then it watches.
        let waiter = store_for(&etcd.client_urls());
        match must(
            "put",
            waiter
                .put(&key, &record("w", 1), Expect::Absent, None)
                .await,
        )
        .await
        {
            PutOutcome::Conflict { current: Some(e) } => assert_eq!(e.index, index),
            other => panic!("expected a conflict, got {other:?}"),
        }
        let watcher = tokio::spawn(async move { waiter.watch(&key, Some(index)).await });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let deleted_at = Instant::now();
        must(
            "delete",
            store.delete(&format!("prompt{round}"), index).await,
        )
        .await;
        tokio::time::timeout(Duration::from_secs(2), watcher)
            .await
            .unwrap_or_else(|_| panic!("the watch did not wake"))
            .unwrap_or_else(|e| panic!("watch task: {e}"))
            .unwrap_or_else(|e| panic!("watch: {e}"));
        wakes.push(deleted_at.elapsed());
    }
    wakes.sort_unstable();
    let median = wakes[wakes.len() / 2];
    println!("etcd: watch wake-ups after a delete (sorted): {wakes:?}");
    assert!(
        median < Duration::from_millis(20),
        "median wake-up {median:?} after the delete: {wakes:?}"
    );
}

// ---------------------------------------------------------------------------------------
// One shared watch stream per store: every `watch()` is a watch id on it, counted by
// etcd itself (`etcd_debugging_mvcc_watch_stream_total`: streams open on a member,
// `etcd_debugging_mvcc_watcher_total`: watch ids open on a member).

const WATCH_STREAMS: &str = "etcd_debugging_mvcc_watch_stream_total";
const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";

/// Waits (bounded by `timeout`) until metric `name` of member `i` satisfies `ok`, and
/// returns how long that took; fails the test with the last value otherwise.
async fn wait_metric(
    etcd: &EtcdCluster,
    i: usize,
    name: &str,
    timeout: Duration,
    ok: impl Fn(f64) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let value = etcd.metric(i, name);
        if value.is_some_and(&ok) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "{name} of member {i} is {value:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric_now(etcd: &EtcdCluster, i: usize, name: &str) -> f64 {
    etcd.metric(i, name)
        .unwrap_or_else(|| panic!("member {i} does not report {name}"))
}

/// Puts `count` keys `{prefix}/{i}` (in batches, concurrently) and returns their indexes.
async fn put_keys(store: &EtcdStore, prefix: &str, count: usize) -> Vec<u64> {
    let mut indexes = vec![0; count];
    for batch in (0..count).collect::<Vec<_>>().chunks(100) {
        let mut tasks = tokio::task::JoinSet::new();
        for &i in batch {
            let store = store.clone();
            let key = format!("{prefix}/{i}");
            tasks.spawn(async move {
                let outcome = store.put(&key, &record("a", 1), Expect::Absent, None).await;
                (i, swapped(must("put", outcome).await))
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (i, index) = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            indexes[i] = index;
        }
    }
    indexes
}

/// Starts one watch task per key `{prefix}/{i}`, each waiting for its key to leave
/// `indexes[i]`; the task returns its number and the watch's result.
fn spawn_watches(
    store: &EtcdStore,
    prefix: &str,
    indexes: &[u64],
) -> tokio::task::JoinSet<(usize, Result<(), StoreError>)> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, &index) in indexes.iter().enumerate() {
        let store = store.clone();
        let key = format!("{prefix}/{i}");
        tasks.spawn(async move { (i, store.watch(&key, Some(index)).await) });
    }
    tasks
}

/// Collects `count` finished watch tasks within `timeout` (fails the test otherwise).
async fn join_watches(
    tasks: &mut tokio::task::JoinSet<(usize, Result<(), StoreError>)>,
    count: usize,
    timeout: Duration,
) -> Vec<(usize, Result<(), StoreError>)> {
    let mut done = Vec::with_capacity(count);
    let collected = tokio::time::timeout(timeout, async {
        while done.len() < count {
            match tasks.join_next().await {
                Some(Ok(result)) => done.push(result),
                Some(Err(e)) => std::panic::resume_unwind(e.into_panic()),
                None => break,
            }
        }
    })
    .await;
    assert!(
        collected.is_ok() && done.len() == count,
        "only {} of {count} watches ended within {timeout:?}",
        done.len()
    );
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_watches_share_one_stream_and_each_wakes_on_its_own_key() {
    const N: usize = 1000;
    let etcd = EtcdCluster::single();
    let store = store_with_timeout(&etcd.client_urls(), Duration::from_secs(5));
    let indexes = put_keys(&store, "shared", N).await;
    assert_eq!(metric_now(&etcd, 0, WATCH_STREAMS), 0.0);

    let mut tasks = spawn_watches(&store, "shared", &indexes);
    let registered = wait_metric(&etcd, 0, WATCHERS, Duration::from_secs(30), |v| {
        v == N as f64
    })
    .await;
    let streams = metric_now(&etcd, 0, WATCH_STREAMS);
    assert_eq!(
        streams, 1.0,
        "{N} watches of one store on {streams} streams"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(tasks.len(), N, "a watch returned while nothing changed");
    assert!(tasks.try_join_next().is_none(), "a watch returned early");

    // Delete the even keys only: exactly their watches wake, the odd ones stay.
    let deleted_at = Instant::now();
    let mut deletes = tokio::task::JoinSet::new();
    for i in (0..N).step_by(2) {
        let store = store.clone();
        let index = indexes[i];
        deletes.spawn(async move { store.delete(&format!("shared/{i}"), index).await });
    }
    while let Some(joined) = deletes.join_next().await {
        let outcome = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        assert_eq!(must("delete", outcome).await, DeleteOutcome::Deleted);
    }
    let woken = join_watches(&mut tasks, N / 2, Duration::from_secs(10)).await;
    let half_woke_in = deleted_at.elapsed();
    for (i, result) in &woken {
        assert!(
            i % 2 == 0,
            "the watch of shared/{i} woke, but only even keys changed"
        );
        assert!(result.is_ok(), "watch of shared/{i}: {result:?}");
    }
    // Each woken watch's id is cancelled on the server; the odd ones stay.
    wait_metric(&etcd, 0, WATCHERS, Duration::from_secs(10), |v| {
        v == (N / 2) as f64
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(tasks.len(), N / 2, "an unchanged key's watch returned");

    // Then the rest: every watch wakes, no watch id is left, still one stream.
    for i in (1..N).step_by(2) {
        must(
            "delete",
            store.delete(&format!("shared/{i}"), indexes[i]).await,
        )
        .await;
    }
    let woken = join_watches(&mut tasks, N / 2, Duration::from_secs(10)).await;
    assert!(
        woken.iter().all(|(i, r)| i % 2 == 1 && r.is_ok()),
        "{woken:?}"
    );
    let drained = wait_metric(&etcd, 0, WATCHERS, Duration::from_secs(10), |v| v == 0.0).await;
    assert_eq!(metric_now(&etcd, 0, WATCH_STREAMS), 1.0);
    println!(
        "etcd shared watch stream: {N} concurrent watches registered on the server {registered:?} \
         after they were started, on 1 stream; {} woke within {half_woke_in:?} of the first of \
         their keys' deletes (the other {} untouched); every id cancelled on the server \
         {drained:?} after the last wake",
        N / 2,
        N / 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watch_futures_cancel_their_watch_ids() {
    const N: usize = 1000;
    let etcd = EtcdCluster::single();
    let store = store_with_timeout(&etcd.client_urls(), Duration::from_secs(5));
    let indexes = put_keys(&store, "dropped", N).await;

    // Dropped after etcd created their watches: aborting the tasks drops the futures.
    let tasks = spawn_watches(&store, "dropped", &indexes);
    wait_metric(&etcd, 0, WATCHERS, Duration::from_secs(30), |v| {
        v == N as f64
    })
    .await;
    assert_eq!(metric_now(&etcd, 0, WATCH_STREAMS), 1.0);
    let dropped_at = Instant::now();
    drop(tasks); // aborts every task
    let cancelled = wait_metric(&etcd, 0, WATCHERS, Duration::from_secs(10), |v| v == 0.0).await;

    // Dropped at once, before any "created" answer can have come (a zero timeout polls
    // the watch once: it registers and sends its create request, then is dropped), and
    // dropped a few milliseconds in, around the answers.
    for round in 0..4u64 {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, &index) in indexes.iter().enumerate() {
            let store = store.clone();
            let key = format!("dropped/{i}");
            let after = Duration::from_millis(round * (i as u64 % 4));
            tasks.spawn(async move {
                tokio::time::timeout(after, store.watch(&key, Some(index))).await
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())) {
                Err(_elapsed) => {}
                Ok(result) => panic!("a watch of an unchanged key ended: {result:?}"),
            }
        }
    }
    let early = wait_metric(&etcd, 0, WATCHERS, Duration::from_secs(10), |v| v == 0.0).await;
    // The stream is the same one, and still works.
    assert_eq!(metric_now(&etcd, 0, WATCH_STREAMS), 1.0);
    let watcher = {
        let store = store.clone();
        let index = indexes[7];
        tokio::spawn(async move { store.watch("dropped/7", Some(index)).await })
    };
    wait_metric(&etcd, 0, WATCHERS, Duration::from_secs(5), |v| v == 1.0).await;
    must("delete", store.delete("dropped/7", indexes[7]).await).await;
    let woke = tokio::time::timeout(Duration::from_secs(2), watcher)
        .await
        .unwrap_or_else(|_| panic!("a watch after the drops did not wake"))
        .unwrap_or_else(|e| panic!("watch task: {e}"));
    must("watch", woke).await;
    wait_metric(&etcd, 0, WATCHERS, Duration::from_secs(5), |v| v == 0.0).await;
    // A dropped store closes its stream (its tasks do not outlive it).
    drop(store);
    let closed = wait_metric(&etcd, 0, WATCH_STREAMS, Duration::from_secs(5), |v| {
        v == 0.0
    })
    .await;
    println!(
        "etcd shared watch stream: {N} dropped watch futures cancelled on the server within \
         {cancelled:?} (dropped {:?} ago); {} more dropped before or around their answers \
         left no watch id ({early:?} to drain); the dropped store's stream closed in \
         {closed:?}",
        dropped_at.elapsed(),
        4 * N
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_key_deleted_or_overwritten_behind_its_holder_is_lost_within_milliseconds() {
    const LOCKS: usize = 40;
    let etcd = EtcdCluster::single();
    let store = store_for(&etcd.client_urls());
    let client = LockClient::builder(store.clone())
        .defaults(LockOptions::default().ttl(Duration::from_secs(10)))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut guards = Vec::new();
    for i in 0..LOCKS {
        let guard = client
            .acquire(&format!("behind/{i}"))
            .await
            .unwrap_or_else(|e| panic!("acquire: {e}"));
        guards.push(guard);
    }
    // Every held key is watched, on one stream.
    wait_metric(&etcd, 0, WATCHERS, Duration::from_secs(10), |v| {
        v == LOCKS as f64
    })
    .await;
    assert_eq!(metric_now(&etcd, 0, WATCH_STREAMS), 1.0);

    let mut raw = must("raw client", store.raw_client().await).await;
    let intruder =
        serde_json::to_vec(&record("intruder@elsewhere:1", 99)).unwrap_or_else(|e| panic!("{e}"));
    let mut latencies = Vec::new();
    for (i, guard) in guards.iter().enumerate() {
        assert!(!guard.is_lost(), "behind/{i} lost before anything happened");
        let key = store.full_key(&format!("behind/{i}"));
        let changed_at = Instant::now();
        if i % 3 == 0 {
            // An operator deletes the key ...
            let deleted = raw
                .delete(key.as_str(), None)
                .await
                .unwrap_or_else(|e| panic!("raw delete: {e}"));
            assert_eq!(deleted.deleted(), 1, "{key} was not there");
        } else if i % 3 == 1 {
            // ... or another process writes its own record over it ...
            raw.put(key.as_str(), intruder.clone(), None)
                .await
                .unwrap_or_else(|e| panic!("raw put: {e}"));
        } else {
            // ... or a tool writes a value that is no lock record at all.
            raw.put(key.as_str(), "not a lock record", None)
                .await
                .unwrap_or_else(|e| panic!("raw put: {e}"));
        }
        let reason = tokio::time::timeout(Duration::from_secs(2), guard.lost())
            .await
            .unwrap_or_else(|_| panic!("behind/{i} not lost 2 s after its key changed"));
        latencies.push(changed_at.elapsed());
        assert!(guard.is_lost(), "{reason:?}");
    }
    // Untouched locks are still held.
    let held = client
        .acquire("behind/untouched")
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    assert!(!held.is_lost());
    latencies.sort_unstable();
    let median = latencies[latencies.len() / 2];
    let worst = latencies[latencies.len() - 1];
    println!(
        "etcd: a held key deleted or overwritten behind its holder: lost after median \
         {median:?}, worst {worst:?} ({LOCKS} locks, sorted: {latencies:?})"
    );
    assert!(
        median < Duration::from_millis(25),
        "median {median:?}: {latencies:?}"
    );
    assert!(worst < Duration::from_millis(500), "{latencies:?}");
    held.release().await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_watch_stream_reopens_on_another_member_after_its_member_is_killed() {
    const N: usize = 100;
    let mut etcd = EtcdCluster::members(3);
    let store = store_for(&etcd.client_urls());
    let indexes = put_keys(&store, "moved", N).await;
    // A lock whose held-key watch is on the same kind of stream, in another client.
    let holder_store = store_for(&etcd.client_urls());
    let holder = LockClient::builder(holder_store.clone())
        .defaults(LockOptions::default().ttl(Duration::from_secs(10)))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let guard = holder
        .acquire("moved/held")
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));

    // Both stores' streams open on the first endpoint, member 0.
    let mut tasks = spawn_watches(&store, "moved", &indexes);
    wait_metric(&etcd, 0, WATCHERS, Duration::from_secs(20), |v| {
        v == (N + 1) as f64
    })
    .await;
    // The two gauges are not updated together: read the streams one until it
    // settles (it once read 1 right after the watchers read N + 1), failing if
    // it is not exactly 2 within the bound.
    wait_metric(&etcd, 0, WATCH_STREAMS, Duration::from_secs(5), |v| {
        v == 2.0
    })
    .await;

    let killed_at = Instant::now();
    etcd.kill(0);
    // Every watch on the killed member's stream fails (so that its caller re-arms).
    let failed = join_watches(&mut tasks, N, Duration::from_secs(5)).await;
    let failed_in = killed_at.elapsed();
    for (i, result) in &failed {
        match result {
            Err(StoreError::Unavailable { endpoint, .. }) => {
                assert_eq!(*endpoint, etcd.client_url(0), "watch {i}")
            }
            other => panic!("watch {i} on a killed member: expected Unavailable, got {other:?}"),
        }
    }

    // Re-armed, they share one new stream on another member (retrying while the two
    // left elect a leader, if member 0 led).
    etcd.wait_leader(Duration::from_secs(5));
    let rearmed_at = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, &index) in indexes.iter().enumerate() {
        let store = store.clone();
        let key = format!("moved/{i}");
        tasks.spawn(async move {
            let mut result = store.watch(&key, Some(index)).await;
            for _ in 0..20 {
                if !matches!(result, Err(StoreError::Unavailable { .. })) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                result = store.watch(&key, Some(index)).await;
            }
            (i, result)
        });
    }
    let on_others = |etcd: &EtcdCluster, name: &str| {
        (1..3)
            .map(|i| etcd.metric(i, name).unwrap_or(0.0))
            .sum::<f64>()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while on_others(&etcd, WATCHERS) < (N + 1) as f64 {
        assert!(
            Instant::now() < deadline,
            "re-armed watches on the other members: {}",
            on_others(&etcd, WATCHERS)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rearmed_in = rearmed_at.elapsed();
    assert_eq!(
        on_others(&etcd, WATCH_STREAMS),
        2.0,
        "one new stream per store on the members left"
    );
    assert!(
        !guard.is_lost(),
        "the held lock was lost by the member's kill"
    );

    // They work: each wakes on its key's delete, and the held key's watch still
    // catches a delete behind its holder.
    let mut raw = must("raw client", store.raw_client().await).await;
    for (i, &index) in indexes.iter().enumerate() {
        must("delete", store.delete(&format!("moved/{i}"), index).await).await;
    }
    let woken = join_watches(&mut tasks, N, Duration::from_secs(10)).await;
    for (i, result) in &woken {
        assert!(result.is_ok(), "re-armed watch {i}: {result:?}");
    }
    let deleted_at = Instant::now();
    raw.delete(holder_store.full_key("moved/held"), None)
        .await
        .unwrap_or_else(|e| panic!("raw delete: {e}"));
    tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .unwrap_or_else(|_| panic!("the held lock was not lost after its key was deleted"));
    let lost_in = deleted_at.elapsed();
    println!(
        "etcd shared watch stream, member killed: {N} watches failed {failed_in:?} after the \
         kill, re-armed on one stream of another member in {rearmed_in:?}; a held key \
         deleted afterwards was lost in {lost_in:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_returns_at_once_and_leaves_no_watch_id() {
    let etcd = EtcdCluster::single();
    let store = store_for(&etcd.client_urls());
    let first = swapped(
        must(
            "put",
            store.put("c", &record("a", 1), Expect::Absent, None).await,
        )
        .await,
    );
    let mut index = first;
    for nonce in 2..5 {
        index = swapped(
            must(
                "put",
                store
                    .put("c", &record("a", nonce), Expect::Index(index), None)
                    .await,
            )
            .await,
        );
    }
    let mut raw = must("raw client", store.raw_client().await).await;
    raw.compact(index_as_revision(index), None)
        .await
        .unwrap_or_else(|e| panic!("compact: {e}"));
    // Watching from right after `first`, long compacted: etcd answers "compacted", which
    // means changed.
    tokio::time::timeout(Duration::from_secs(2), store.watch("c", Some(first)))
        .await
        .unwrap_or_else(|_| panic!("a watch from a compacted revision blocked"))
        .unwrap_or_else(|e| panic!("watch: {e}"));
    // etcd keeps a compacted watcher until it is cancelled: the adapter cancels it.
    wait_metric(&etcd, 0, WATCHERS, Duration::from_secs(5), |v| v == 0.0).await;
    assert_eq!(metric_now(&etcd, 0, WATCH_STREAMS), 1.0);
}

fn index_as_revision(index: u64) -> i64 {
    i64::try_from(index).unwrap_or_else(|e| panic!("index {index}: {e}"))
}

/// etcd (grpc-go's default server ping policy) closes a connection whose client pings
/// more often than every 5 s while the server sends nothing: with 1 s HTTP/2 pings, an
/// idle watch broke after 4 s, and with it every held-key watch on that connection
/// (10,000 re-arms at once on a busy client). The shared stream's heartbeat keeps it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_shared_watch_stream_stays_up_and_held_keys_stay_watched() {
    const IDLE: Duration = Duration::from_secs(9);
    let etcd = EtcdCluster::single();
    let store = store_for(&etcd.client_urls());
    let counts = Faults::new(store.clone());
    // The default ttl (30 s): one keep-alive every 10 s, so nothing else keeps the
    // connection busy during the idle time.
    let client = LockClient::builder(counts.clone())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let guard = client
        .acquire("idle/held")
        .await
        .unwrap_or_else(|e| panic!("acquire: {e}"));
    let index = swapped(
        must(
            "put",
            store
                .put("idle/plain", &record("a", 1), Expect::Absent, None)
                .await,
        )
        .await,
    );
    let watcher = {
        let store = store.clone();
        tokio::spawn(async move { store.watch("idle/plain", Some(index)).await })
    };
    wait_metric(&etcd, 0, WATCHERS, Duration::from_secs(5), |v| v >= 2.0).await;
    let before = (counts.calls().of(Op::Get), others(counts.calls()));
    tokio::time::sleep(IDLE).await;
    let after = (counts.calls().of(Op::Get), others(counts.calls()));
    assert!(
        !watcher.is_finished(),
        "an idle watch ended: {:?}",
        watcher.await
    );
    assert_eq!(
        before, after,
        "(gets, watches) of the lock client while idle: the held-key watch was re-armed"
    );
    assert_eq!(
        metric_now(&etcd, 0, WATCH_STREAMS),
        1.0,
        "the stream was reopened"
    );
    assert!(!guard.is_lost());
    // Both watches still work.
    must("delete", store.delete("idle/plain", index).await).await;
    let woke = tokio::time::timeout(Duration::from_secs(2), watcher)
        .await
        .unwrap_or_else(|_| panic!("the idle watch did not wake"))
        .unwrap_or_else(|e| panic!("watch task: {e}"));
    must("watch", woke).await;
    let mut raw = must("raw client", store.raw_client().await).await;
    let deleted_at = Instant::now();
    raw.delete(store.full_key("idle/held"), None)
        .await
        .unwrap_or_else(|e| panic!("raw delete: {e}"));
    tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .unwrap_or_else(|_| panic!("the held lock was not lost after its key was deleted"));
    println!(
        "etcd: shared watch stream idle {IDLE:?}: no re-arm, same stream; a held key deleted \
         afterwards was lost in {:?}",
        deleted_at.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Operator reads: listing, inspection, lease time to live, forced release.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_maps_keys_out_of_the_store_prefix_and_reports_foreign_values() {
    let etcd = EtcdCluster::single();
    let store = store_for(&etcd.client_urls());
    let base = unique_key("list");
    let key = |name: &str| format!("{base}/{name}");
    let mut raw = must("raw client", store.raw_client().await).await;
    let a = swapped(
        must(
            "put",
            store
                .put(&key("a"), &record("a", 1), Expect::Absent, None)
                .await,
        )
        .await,
    );
    let b = swapped(
        must(
            "put",
            store
                .put(&key("b"), &record("a", 2), Expect::Absent, None)
                .await,
        )
        .await,
    );
    let c = swapped(
        must(
            "put",
            store
                .put(&key("c"), &record("a", 3), Expect::Absent, None)
                .await,
        )
        .await,
    );
    assert_eq!(
        must("delete", store.delete(&key("b"), b).await).await,
        DeleteOutcome::Deleted
    );
    // Written by someone else: a value that is not a record, a key that is not UTF-8,
    // and keys beside the store's prefix (`test/`) that must not show.
    let foreign = raw
        .put(format!("test/{base}/foreign"), "not json", None)
        .await
        .unwrap_or_else(|e| panic!("raw put: {e}"));
    let foreign_index = foreign.header().map_or(0, |h| h.revision());
    let mut bad_key = format!("test/{base}/").into_bytes();
    bad_key.push(0xff);
    raw.put(bad_key, "x", None)
        .await
        .unwrap_or_else(|e| panic!("raw put: {e}"));
    for outside in [format!("testing/{base}/a"), format!("{base}/a")] {
        raw.put(outside, "x", None)
            .await
            .unwrap_or_else(|e| panic!("raw put: {e}"));
    }

    let listed = must("list", store.list("", 100).await).await;
    let keys: Vec<&str> = listed.iter().map(|l| l.key.as_str()).collect();
    let lossy = format!("{base}/\u{fffd}");
    assert_eq!(
        keys,
        [key("a"), key("c"), key("foreign"), lossy.clone()],
        "{listed:?}"
    );
    assert_eq!(listed[0].stored.index(), a);
    assert_eq!(
        listed[0].stored.entry().map(|e| e.record.nonce),
        Some(1),
        "{listed:?}"
    );
    assert_eq!(listed[1].stored.index(), c);
    match &listed[2].stored {
        Stored::Foreign { index, .. } => {
            assert_eq!(Some(*index), u64::try_from(foreign_index).ok())
        }
        other => panic!("expected a foreign value, got {other:?}"),
    }
    assert!(
        matches!(listed[3].stored, Stored::Foreign { .. }),
        "{listed:?}"
    );
    // The limit, and a prefix within ours.
    let first = must("list", store.list(&format!("{base}/"), 2).await).await;
    assert_eq!(first[..], listed[..2]);
    assert!(
        must("list", store.list(&key("z"), 10).await)
            .await
            .is_empty()
    );
    // Inspection gives the foreign value's index where `get` fails.
    assert!(matches!(
        store.get(&key("foreign")).await,
        Err(StoreError::Foreign { .. })
    ));
    assert_eq!(
        must("inspect", store.inspect(&key("foreign")).await)
            .await
            .map(|s| s.index()),
        u64::try_from(foreign_index).ok()
    );
    assert_eq!(must("inspect", store.inspect(&key("b")).await).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_locks_show_their_lease_and_its_time_to_live() {
    let etcd = EtcdCluster::single();
    let store = store_for(&etcd.client_urls());
    let holder = LockClient::new(store_for(&etcd.client_urls()));
    let operator = LockClient::new(store.clone());
    let base = unique_key("list-lease");
    let ttl = Duration::from_secs(20);
    let options = LockOptions::default().ttl(ttl);
    let one = holder
        .acquire_with(&format!("{base}/1"), &options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let two = holder
        .acquire_with(&format!("{base}/2"), &options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let locks = operator
        .list(&format!("{base}/"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(locks.len(), 2, "{locks:?}");
    for (info, guard) in locks.iter().zip([&one, &two]) {
        assert_eq!(info.token, guard.token());
        let lease = info.lease.unwrap_or_else(|| panic!("no lease: {info:?}"));
        let left = info
            .lease_remaining
            .unwrap_or_else(|| panic!("no time to live: {info:?}"));
        assert!(left <= ttl, "{left:?}");
        assert!(matches!(&info.holder, Holder::Distlock { owner, .. } if owner == holder.owner()));
        assert_eq!(
            locks[0].lease,
            Some(lease),
            "one lease for the client's locks"
        );
    }
    // The store call on its own: a lease's time to live, then gone once revoked.
    let lease = must("grant", store.grant_lease(Duration::from_secs(30)).await).await;
    let left = must("ttl", store.lease_time_to_live(lease).await).await;
    assert!(
        left.is_some_and(|l| l <= Duration::from_secs(30) && !l.is_zero()),
        "{left:?}"
    );
    must("revoke", store.revoke_lease(lease).await).await;
    assert_eq!(
        must("ttl", store.lease_time_to_live(lease).await).await,
        None
    );
    one.release().await.unwrap_or_else(|e| panic!("{e}"));
    two.release().await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_release_refuses_a_changed_index_and_frees_the_one_shown() {
    let etcd = EtcdCluster::single();
    let holder = LockClient::new(store_for(&etcd.client_urls()));
    let operator = LockClient::new(store_for(&etcd.client_urls()));
    let key = unique_key("list-force");
    let first = holder.acquire(&key).await.unwrap_or_else(|e| panic!("{e}"));
    let shown = operator
        .status(&key)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("{key} shows free"));
    assert_eq!(shown.token, first.token());
    // The record changes before the operator confirms: released and taken again.
    first.release().await.unwrap_or_else(|e| panic!("{e}"));
    let second = holder.acquire(&key).await.unwrap_or_else(|e| panic!("{e}"));
    match operator.force_release(&key, shown.token).await {
        Ok(ForceRelease::Changed { current: Some(now) }) => assert_eq!(now.token, second.token()),
        other => panic!("a changed index must be refused, got {other:?}"),
    }
    assert!(
        holder.status(&key).await.ok().flatten().is_some(),
        "deleted anyway"
    );
    assert_eq!(
        operator.force_release(&key, second.token()).await.ok(),
        Some(ForceRelease::Released)
    );
    assert_eq!(operator.status(&key).await.ok(), Some(None));
    // The holder is told at the latest when it releases.
    assert!(matches!(
        second.release().await,
        Err(LockError::Lost { .. })
    ));

    // A foreign value is shown with its index and freed by it.
    let store = store_for(&etcd.client_urls());
    let mut raw = must("raw client", store.raw_client().await).await;
    raw.put(format!("test/{key}"), "{\"someone\":\"else\"}", None)
        .await
        .unwrap_or_else(|e| panic!("raw put: {e}"));
    let info = operator
        .status(&key)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("{key} shows free"));
    assert!(matches!(info.holder, Holder::Foreign { .. }), "{info:?}");
    assert_eq!(
        operator.force_release(&key, info.token).await.ok(),
        Some(ForceRelease::Released)
    );
    assert_eq!(operator.status(&key).await.ok(), Some(None));
}
