//! distlock on RavenDB against its floors, in one run against one local RavenDB 4.1
//! server (started here on a free loopback port):
//!
//! 1. uncontended acquire+release with distlock vs a raw compare-exchange pair (PUT
//!    `index=0`, DELETE `index=i`) over an equally configured HTTP client, interleaved
//!    pair by pair; target <= 1.10x;
//! 2. contended handoff, 8 waiters on one key, from the holder starting its release to
//!    the next holder's acquire returning: distlock vs a port of the original lock (retry
//!    put-if-absent every 20 ms, take over a value whose stored expiry passed, release by
//!    a delete on the index); target: distlock's median at least 5x smaller.
//!
//! Needs RavenDB (`scripts/ravendb.sh install`). Run:
//! `cargo bench -p testkit --features ravendb --bench ravendb`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use testkit::stats::{ms, percentile};

use distlock::store::CompareExchange;
use distlock::store::ravendb::RavenDbStore;
use distlock::{Backoff, LockClient, LockOptions};
use testkit::ravendb::reqwest;
use testkit::ravendb::{Server as RavenServer, plain_client};

const PAIRS: usize = 1500;
const WAITERS: usize = 8;
const DISTLOCK_CYCLES_PER_WAITER: usize = 60;
const ORIGINAL_CYCLES_PER_WAITER: usize = 30;
const SINGLE_ROUNDS: usize = 60;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The raw floor: PUT index=0, then DELETE on the index it got. Returns (pair, put).
async fn raw_pair(http: &reqwest::Client, base: &str, key: &str) -> (Duration, Duration) {
    let value =
        r#"{"Object":{"owner":"bench@host:1","nonce":"1","ttl_ms":10000,"written_at_ms":0}}"#;
    let started = Instant::now();
    let put = http
        .put(format!("{base}/cmpxchg?key={key}&index=0"))
        .body(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("raw put: {e}"));
    let answer = json(&put.text().await.unwrap_or_default());
    let put_time = started.elapsed();
    assert_eq!(
        answer["Successful"], true,
        "the raw key was not free: {answer}"
    );
    let index = answer["Index"].as_u64().unwrap_or(0);
    let delete = http
        .delete(format!("{base}/cmpxchg?key={key}&index={index}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("raw delete: {e}"));
    let answer = json(&delete.text().await.unwrap_or_default());
    assert_eq!(
        answer["Successful"], true,
        "the raw release failed: {answer}"
    );
    (started.elapsed(), put_time)
}

async fn distlock_pair(client: &LockClient, key: &str) -> Duration {
    let started = Instant::now();
    let guard = client
        .acquire(key)
        .await
        .unwrap_or_else(|e| panic!("distlock acquire: {e}"));
    guard
        .release()
        .await
        .unwrap_or_else(|e| panic!("distlock release: {e}"));
    started.elapsed()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The original lock, ported: put-if-absent every 20 ms; take over a value whose stored
/// five-minute expiry has passed by the local clock; returns the index it got.
async fn original_acquire(http: &reqwest::Client, base: &str, key: &str, me: &str) -> u64 {
    let limit = Instant::now() + Duration::from_secs(120);
    let mut index = 0;
    while Instant::now() < limit {
        let expires = now_ms() + 5 * 60 * 1000;
        let body = format!(r#"{{"Object":{{"owner":"{me}","expires_ms":{expires}}}}}"#);
        let answer = http
            .put(format!("{base}/cmpxchg?key={key}&index={index}"))
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("original put: {e}"));
        let answer = json(&answer.text().await.unwrap_or_default());
        if answer["Successful"] == true {
            return answer["Index"].as_u64().unwrap_or(0);
        }
        let stored_expiry = answer["Value"]["Object"]["expires_ms"]
            .as_u64()
            .unwrap_or(0);
        if stored_expiry < now_ms() {
            index = answer["Index"].as_u64().unwrap_or(0);
            continue;
        }
        index = 0;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the original loop never got the lock");
}

async fn original_release(http: &reqwest::Client, base: &str, key: &str, index: u64) {
    let answer = http
        .delete(format!("{base}/cmpxchg?key={key}&index={index}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("original delete: {e}"));
    let _ = answer.text().await;
}

/// Shared bookkeeping: when the last holder started releasing, and the handoff times.
#[derive(Clone, Default)]
struct Handoffs {
    released_at: Arc<Mutex<Option<Instant>>>,
    samples: Arc<Mutex<Vec<Duration>>>,
}

impl Handoffs {
    fn acquired(&self) {
        let now = Instant::now();
        let previous = self
            .released_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(released) = previous {
            self.samples
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(now.duration_since(released));
        }
    }

    fn releasing(&self) {
        *self
            .released_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    fn samples(&self) -> Vec<Duration> {
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

async fn distlock_handoff(url: &str, backoff: Backoff) -> Vec<Duration> {
    let handoffs = Handoffs::default();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WAITERS {
        let store = RavenDbStore::from_url(url).unwrap_or_else(|e| panic!("{e}"));
        let client = LockClient::builder(store)
            .defaults(LockOptions::default().ttl(Duration::from_secs(30)))
            .backoff(backoff)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        distlock_pair(&client, "bench/handoff-warmup").await;
        let handoffs = handoffs.clone();
        tasks.spawn(async move {
            for _ in 0..DISTLOCK_CYCLES_PER_WAITER {
                let guard = client
                    .acquire("bench/handoff")
                    .await
                    .unwrap_or_else(|e| panic!("handoff acquire: {e}"));
                handoffs.acquired();
                handoffs.releasing();
                guard
                    .release()
                    .await
                    .unwrap_or_else(|e| panic!("handoff release: {e}"));
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    handoffs.samples()
}

async fn original_handoff(base: &str) -> Vec<Duration> {
    let handoffs = Handoffs::default();
    let mut tasks = tokio::task::JoinSet::new();
    for waiter in 0..WAITERS {
        let http = plain_client();
        let base = base.to_owned();
        let handoffs = handoffs.clone();
        tasks.spawn(async move {
            let me = format!("original-{waiter}");
            for _ in 0..ORIGINAL_CYCLES_PER_WAITER {
                let index = original_acquire(&http, &base, "bench/original", &me).await;
                handoffs.acquired();
                handoffs.releasing();
                original_release(&http, &base, "bench/original", index).await;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    handoffs.samples()
}

/// One waiter behind one holder that keeps the lock 5-45 ms: from the holder starting
/// its release to the waiter's acquire returning (the backoff's cost shows here).
async fn single_waiter_distlock(url: &str, backoff: Backoff) -> Vec<Duration> {
    let make = || {
        let store = RavenDbStore::from_url(url).unwrap_or_else(|e| panic!("{e}"));
        LockClient::builder(store)
            .defaults(LockOptions::default().ttl(Duration::from_secs(30)))
            .backoff(backoff)
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let (holder, waiter) = (make(), make());
    distlock_pair(&holder, "bench/single-warmup").await;
    distlock_pair(&waiter, "bench/single-warmup").await;
    let mut samples = Vec::new();
    for round in 0..SINGLE_ROUNDS {
        let guard = holder
            .acquire("bench/single")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let waiter = waiter.clone();
        let waiting = tokio::spawn(async move {
            let guard = waiter
                .acquire("bench/single")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let at = Instant::now();
            guard.release().await.unwrap_or_else(|e| panic!("{e}"));
            at
        });
        tokio::time::sleep(Duration::from_millis(5 + (round as u64 * 7) % 41)).await;
        let released = Instant::now();
        guard.release().await.unwrap_or_else(|e| panic!("{e}"));
        let acquired = waiting.await.unwrap_or_else(|e| panic!("{e}"));
        samples.push(acquired.saturating_duration_since(released));
    }
    samples
}

async fn single_waiter_original(base: &str) -> Vec<Duration> {
    let (holder, waiter) = (plain_client(), plain_client());
    let mut samples = Vec::new();
    for round in 0..SINGLE_ROUNDS {
        let index = original_acquire(&holder, base, "bench/single-original", "holder").await;
        let (waiter, base2) = (waiter.clone(), base.to_owned());
        let waiting = tokio::spawn(async move {
            let index = original_acquire(&waiter, &base2, "bench/single-original", "waiter").await;
            let at = Instant::now();
            original_release(&waiter, &base2, "bench/single-original", index).await;
            at
        });
        tokio::time::sleep(Duration::from_millis(5 + (round as u64 * 7) % 41)).await;
        let released = Instant::now();
        original_release(&holder, base, "bench/single-original", index).await;
        let acquired = waiting.await.unwrap_or_else(|e| panic!("{e}"));
        samples.push(acquired.saturating_duration_since(released));
    }
    samples
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    runtime.block_on(run());
}

async fn run() {
    let server = RavenServer::start().await;
    let url = server.store_url();
    let base = format!("{}/databases/{}", server.url(), server.database);
    let http = plain_client();
    let store = RavenDbStore::from_url(&url).unwrap_or_else(|e| panic!("{e}"));
    let client = LockClient::builder(store)
        .defaults(LockOptions::default().ttl(Duration::from_secs(30)))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));

    for _ in 0..100 {
        raw_pair(&http, &base, "bench/raw").await;
        distlock_pair(&client, "bench/distlock").await;
    }
    let (mut raw, mut raw_puts, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..PAIRS {
        for turn in 0..2 {
            if (i + turn) % 2 == 0 {
                let (pair, put) = raw_pair(&http, &base, "bench/raw").await;
                raw.push(pair);
                raw_puts.push(put);
            } else {
                ours.push(distlock_pair(&client, "bench/distlock").await);
            }
        }
    }
    let mut original = original_handoff(&base).await;
    // distlock as configured by default on RavenDB: the store suggests a
    // 1-8 ms polling backoff (its polls are reads, so they are cheap).
    let suggested = RavenDbStore::from_url(&url)
        .unwrap_or_else(|e| panic!("{e}"))
        .capabilities()
        .poll
        .unwrap_or_default();
    let mut handoffs = distlock_handoff(&url, suggested).await;
    let mut single_original = single_waiter_original(&base).await;
    let mut single = single_waiter_distlock(&url, suggested).await;
    // The same with the runtime's generic default (2 ms doubling to 64 ms).
    let generic = Backoff::default();
    let mut handoffs_fast = distlock_handoff(&url, generic).await;
    let mut single_fast = single_waiter_distlock(&url, generic).await;

    let raw_p50 = percentile(&mut raw, 0.5);
    let raw_p99 = percentile(&mut raw, 0.99);
    let put_p50 = percentile(&mut raw_puts, 0.5);
    let ours_p50 = percentile(&mut ours, 0.5);
    let ours_p99 = percentile(&mut ours, 0.99);
    let handoff_p50 = percentile(&mut handoffs, 0.5);
    let handoff_p99 = percentile(&mut handoffs, 0.99);
    let original_p50 = percentile(&mut original, 0.5);
    let original_p99 = percentile(&mut original, 0.99);
    println!("RavenDB 4.1, one local node, {PAIRS} pairs each, interleaved pair by pair:");
    println!(
        "  raw cmpxchg PUT+DELETE pair        p50 {:.3} ms  p99 {:.3} ms  (one PUT p50 {:.3} ms)",
        ms(raw_p50),
        ms(raw_p99),
        ms(put_p50)
    );
    println!(
        "  distlock acquire+release           p50 {:.3} ms  p99 {:.3} ms",
        ms(ours_p50),
        ms(ours_p99)
    );
    println!(
        "  handoff, {WAITERS} waiters, distlock ({} handoffs)        p50 {:.3} ms  p99 {:.3} ms",
        handoffs.len(),
        ms(handoff_p50),
        ms(handoff_p99)
    );
    println!(
        "  handoff, {WAITERS} waiters, original 20 ms loop ({} handoffs) p50 {:.3} ms  p99 {:.3} ms",
        original.len(),
        ms(original_p50),
        ms(original_p99)
    );
    println!(
        "  handoff, 1 waiter, distlock ({} rounds)                 p50 {:.3} ms  p99 {:.3} ms",
        single.len(),
        ms(percentile(&mut single, 0.5)),
        ms(percentile(&mut single, 0.99))
    );
    println!(
        "  handoff, 1 waiter, original 20 ms loop ({} rounds)      p50 {:.3} ms  p99 {:.3} ms",
        single_original.len(),
        ms(percentile(&mut single_original, 0.5)),
        ms(percentile(&mut single_original, 0.99))
    );
    println!(
        "  with the generic Backoff::default() (2-64 ms): 8 waiters p50 {:.3} ms p99 {:.3} ms; 1 waiter p50 {:.3} ms p99 {:.3} ms",
        ms(percentile(&mut handoffs_fast, 0.5)),
        ms(percentile(&mut handoffs_fast, 0.99)),
        ms(percentile(&mut single_fast, 0.5)),
        ms(percentile(&mut single_fast, 0.99))
    );
    println!(
        "ratio distlock / raw PUT+DELETE:            {:.2}x (target <= 1.10x)",
        ours_p50.as_secs_f64() / raw_p50.as_secs_f64()
    );
    println!(
        "ratio original / distlock handoff median:   {:.2}x (target >= 5x)",
        original_p50.as_secs_f64() / handoff_p50.as_secs_f64()
    );
    println!(
        "ratio original / distlock, 1 waiter:        {:.2}x",
        percentile(&mut single_original, 0.5).as_secs_f64()
            / percentile(&mut single, 0.5).as_secs_f64()
    );
    println!(
        "ratio original / distlock with the generic backoff: 8 waiters {:.2}x, 1 waiter {:.2}x",
        original_p50.as_secs_f64() / percentile(&mut handoffs_fast, 0.5).as_secs_f64(),
        percentile(&mut single_original, 0.5).as_secs_f64()
            / percentile(&mut single_fast, 0.5).as_secs_f64()
    );
    println!(
        "handoff median - one raw PUT:               {:.3} ms (target <= 5 ms)",
        ms(handoff_p50.saturating_sub(put_p50))
    );
    if let Some(rss) = server.rss_kib() {
        println!("server RSS after the run: {} MiB", rss / 1024);
    }
}
