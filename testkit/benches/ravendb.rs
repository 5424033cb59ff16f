//! distlock on RavenDB against its floors, in one run against one local RavenDB 4.1
//! server (started here on a free loopback port):
//!
//! 1. uncontended acquire+release with distlock vs a raw compare-exchange pair (PUT
//!    `index=0`, DELETE `index=i`) over an equally configured HTTP client, interleaved
//!    pair by pair; target <= 1.10x;
//! 2. handoff, from the holder starting its release to the next holder's acquire
//!    returning, distlock (the store's suggested polling) vs the original .NET lock
//!    (`testkit::ravendb::original`: put-if-absent every 20 ms): one waiter behind a
//!    holder that keeps the key 5-45 ms (target: distlock at least 3x faster), and 8
//!    waiters cycling on one key (target: no slower);
//! 3. what waiting costs the server: its CPU time per second while 1 and 8 waiters wait
//!    on a held key, distlock vs the original (a poll of distlock is a read, the
//!    original's a Raft write).
//!
//! `DISTLOCK_BENCH_POLL=MIN_MS,MAX_MS` replaces the suggested polling backoff (to
//! compare settings). Needs RavenDB (`scripts/ravendb.sh install`). Run:
//! `cargo bench -p testkit --features ravendb --bench ravendb`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::stats::{ms, percentile};

use distlock::store::CompareExchange;
use distlock::store::ravendb::RavenDbStore;
use distlock::{Backoff, LockClient, LockOptions};
use testkit::ravendb::original::Original;
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
    let started = Instant::now();
    let (put_time, index) = raw_put(http, base, key).await;
    raw_delete(http, base, key, index).await;
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

/// Shared bookkeeping: who last started releasing and when, and the handoff times
/// (each with whether the next holder was another waiter).
#[derive(Clone, Default)]
struct Handoffs {
    released: Arc<Mutex<Option<(usize, Instant)>>>,
    samples: Arc<Mutex<Vec<(Duration, bool)>>>,
}

impl Handoffs {
    fn acquired(&self, me: usize) {
        let now = Instant::now();
        let previous = self
            .released
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some((by, at)) = previous {
            self.samples
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((now.duration_since(at), by != me));
        }
    }

    fn releasing(&self, me: usize) {
        *self
            .released
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((me, Instant::now()));
    }

    fn samples(&self) -> Vec<(Duration, bool)> {
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Every handoff time; the share that went to another waiter and their median.
fn split(samples: &[(Duration, bool)]) -> (Vec<Duration>, f64, Duration) {
    let all: Vec<Duration> = samples.iter().map(|(d, _)| *d).collect();
    let mut others: Vec<Duration> = samples
        .iter()
        .filter(|(_, o)| *o)
        .map(|(d, _)| *d)
        .collect();
    let share = others.len() as f64 / samples.len().max(1) as f64;
    (all, share, percentile(&mut others, 0.5))
}

async fn distlock_handoff(url: &str, backoff: Backoff) -> Vec<(Duration, bool)> {
    let handoffs = Handoffs::default();
    let mut tasks = tokio::task::JoinSet::new();
    for me in 0..WAITERS {
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
                handoffs.acquired(me);
                handoffs.releasing(me);
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

/// `Original`s on the bench server, each with its own HTTP client (separate
/// programs would not share connections).
fn original(server: &RavenServer) -> Original {
    Original::with_client(plain_client(), &server.url(), &server.database)
}

async fn original_handoff(server: &RavenServer) -> Vec<(Duration, bool)> {
    let handoffs = Handoffs::default();
    let mut tasks = tokio::task::JoinSet::new();
    for me in 0..WAITERS {
        let original = original(server);
        let handoffs = handoffs.clone();
        tasks.spawn(async move {
            for _ in 0..ORIGINAL_CYCLES_PER_WAITER {
                let index = original.enter("bench/original").await;
                handoffs.acquired(me);
                handoffs.releasing(me);
                original.exit("bench/original", index).await;
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

async fn single_waiter_original(server: &RavenServer) -> Vec<Duration> {
    let (holder, waiter) = (original(server), original(server));
    let mut samples = Vec::new();
    for round in 0..SINGLE_ROUNDS {
        let index = holder.enter("bench/single-original").await;
        let waiter = waiter.clone();
        let waiting = tokio::spawn(async move {
            let index = waiter.enter("bench/single-original").await;
            let at = Instant::now();
            waiter.exit("bench/single-original", index).await;
            at
        });
        tokio::time::sleep(Duration::from_millis(5 + (round as u64 * 7) % 41)).await;
        let released = Instant::now();
        holder.exit("bench/single-original", index).await;
        let acquired = waiting.await.unwrap_or_else(|e| panic!("{e}"));
        samples.push(acquired.saturating_duration_since(released));
    }
    samples
}

/// The server's CPU time so far (user + system, from `/proc/PID/stat`, in the
/// kernel's fixed 100 Hz `USER_HZ` ticks).
fn server_cpu(server: &RavenServer) -> Duration {
    let stat = server
        .pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Duration::from_millis((tick(11) + tick(12)) * 10)
}

/// How long the cost measurement lets the waiters wait.
const COST_WINDOW: Duration = Duration::from_secs(4);

/// The server's CPU time per second while `waiters` distlock clients wait on a key a
/// raw request holds.
async fn waiting_cost_distlock(
    server: &RavenServer,
    url: &str,
    backoff: Backoff,
    waiters: usize,
) -> f64 {
    let key = format!("bench/cost-distlock-{waiters}");
    let http = plain_client();
    let base = format!("{}/databases/{}", server.url(), server.database);
    let (_, index) = raw_put(&http, &base, &key).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..waiters {
        let store = RavenDbStore::from_url(url).unwrap_or_else(|e| panic!("{e}"));
        let client = LockClient::builder(store)
            .defaults(
                LockOptions::default()
                    .ttl(Duration::from_secs(3600))
                    .wait(distlock::Wait::Forever),
            )
            .backoff(backoff)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let key = key.clone();
        tasks.spawn(async move {
            let guard = client
                .acquire(&key)
                .await
                .unwrap_or_else(|e| panic!("cost acquire: {e}"));
            guard
                .release()
                .await
                .unwrap_or_else(|e| panic!("cost release: {e}"));
        });
    }
    let cost = measure_cpu(server).await;
    raw_delete(&http, &base, &key, index).await;
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    cost
}

/// The same for `waiters` originals (their own value, so they never take it over).
async fn waiting_cost_original(server: &RavenServer, waiters: usize) -> f64 {
    let key = format!("bench/cost-original-{waiters}");
    let holder = original(server);
    let index = holder.enter(&key).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..waiters {
        let original = original(server);
        let key = key.clone();
        tasks.spawn(async move {
            let index = original.enter(&key).await;
            original.exit(&key, index).await;
        });
    }
    let cost = measure_cpu(server).await;
    holder.exit(&key, index).await;
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    cost
}

/// Server CPU milliseconds per second over [`COST_WINDOW`] (after a settling second).
async fn measure_cpu(server: &RavenServer) -> f64 {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu0, t0) = (server_cpu(server), Instant::now());
    tokio::time::sleep(COST_WINDOW).await;
    let (cpu1, t1) = (server_cpu(server), Instant::now());
    ms(cpu1.saturating_sub(cpu0)) / t1.duration_since(t0).as_secs_f64()
}

/// The server's CPU per second with nobody waiting (its own background work).
async fn idle_cost(server: &RavenServer) -> f64 {
    measure_cpu(server).await
}

/// A raw PUT `index=0` of a placeholder value: `(took, index)`.
async fn raw_put(http: &reqwest::Client, base: &str, key: &str) -> (Duration, u64) {
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
    assert_eq!(
        answer["Successful"], true,
        "the raw key was not free: {answer}"
    );
    (started.elapsed(), answer["Index"].as_u64().unwrap_or(0))
}

/// A raw DELETE at `index`.
async fn raw_delete(http: &reqwest::Client, base: &str, key: &str, index: u64) {
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
}

/// The polling backoff to measure: `DISTLOCK_BENCH_POLL=MIN_MS,MAX_MS`, or the store's.
fn polling(url: &str) -> Backoff {
    if let Ok(text) = std::env::var("DISTLOCK_BENCH_POLL") {
        let parts: Vec<f64> = text
            .split(',')
            .map(|p| {
                p.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("DISTLOCK_BENCH_POLL: {e}"))
            })
            .collect();
        assert_eq!(parts.len(), 2, "DISTLOCK_BENCH_POLL=MIN_MS,MAX_MS");
        return Backoff {
            min: Duration::from_secs_f64(parts[0] / 1000.0),
            max: Duration::from_secs_f64(parts[1] / 1000.0),
        };
    }
    RavenDbStore::from_url(url)
        .unwrap_or_else(|e| panic!("{e}"))
        .capabilities()
        .poll
        .unwrap_or_default()
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
    let poll = polling(&url);
    let (mut original, original_moved, original_moved_p50) =
        split(&original_handoff(&server).await);
    let (mut handoffs, moved, moved_p50) = split(&distlock_handoff(&url, poll).await);
    let cpu = server_cpu(&server);
    let mut single_original = single_waiter_original(&server).await;
    let cpu_single_original = server_cpu(&server).saturating_sub(cpu);
    let cpu = server_cpu(&server);
    let mut single = single_waiter_distlock(&url, poll).await;
    let cpu_single = server_cpu(&server).saturating_sub(cpu);
    let idle = idle_cost(&server).await;
    let cost_original_1 = waiting_cost_original(&server, 1).await;
    let cost_distlock_1 = waiting_cost_distlock(&server, &url, poll, 1).await;
    let cost_original_8 = waiting_cost_original(&server, WAITERS).await;
    let cost_distlock_8 = waiting_cost_distlock(&server, &url, poll, WAITERS).await;

    let raw_p50 = percentile(&mut raw, 0.5);
    let ours_p50 = percentile(&mut ours, 0.5);
    let handoff_p50 = percentile(&mut handoffs, 0.5);
    let original_p50 = percentile(&mut original, 0.5);
    let single_p50 = percentile(&mut single, 0.5);
    let single_original_p50 = percentile(&mut single_original, 0.5);
    let proportional = RavenDbStore::from_url(&url)
        .unwrap_or_else(|e| panic!("{e}"))
        .capabilities()
        .cheap_polls;
    println!(
        "RavenDB 4.1, one local node; distlock polls every {:?}..{:?}, {} (jittered)",
        poll.min,
        poll.max,
        if proportional {
            "1/32 of the time waited"
        } else {
            "doubling"
        }
    );
    println!(
        "  raw cmpxchg PUT+DELETE pair ({PAIRS})      p50 {:.3} ms  p99 {:.3} ms  (one PUT p50 {:.3} ms)",
        ms(raw_p50),
        ms(percentile(&mut raw, 0.99)),
        ms(percentile(&mut raw_puts, 0.5))
    );
    println!(
        "  distlock acquire+release ({PAIRS})         p50 {:.3} ms  p99 {:.3} ms",
        ms(ours_p50),
        ms(percentile(&mut ours, 0.99))
    );
    println!(
        "  handoff, 1 waiter, distlock ({} rounds)   p50 {:.3} ms  p99 {:.3} ms",
        single.len(),
        ms(single_p50),
        ms(percentile(&mut single, 0.99))
    );
    println!(
        "  handoff, 1 waiter, original ({} rounds)   p50 {:.3} ms  p99 {:.3} ms",
        single_original.len(),
        ms(single_original_p50),
        ms(percentile(&mut single_original, 0.99))
    );
    println!(
        "  server CPU per 1-waiter round (hold 5-45 ms, wait, handoff, release): distlock {:.2} ms, original {:.2} ms",
        ms(cpu_single) / SINGLE_ROUNDS as f64,
        ms(cpu_single_original) / SINGLE_ROUNDS as f64
    );
    println!(
        "  handoff, {WAITERS} waiters, distlock ({} handoffs) p50 {:.3} ms  p99 {:.3} ms; {:.0}% to another waiter, p50 {:.3} ms",
        handoffs.len(),
        ms(handoff_p50),
        ms(percentile(&mut handoffs, 0.99)),
        moved * 100.0,
        ms(moved_p50)
    );
    println!(
        "  handoff, {WAITERS} waiters, original ({} handoffs) p50 {:.3} ms  p99 {:.3} ms; {:.0}% to another waiter, p50 {:.3} ms",
        original.len(),
        ms(original_p50),
        ms(percentile(&mut original, 0.99)),
        original_moved * 100.0,
        ms(original_moved_p50)
    );
    println!(
        "  server CPU while waiting (ms per s; idle {idle:.1}): 1 waiter distlock {cost_distlock_1:.1}, original {cost_original_1:.1}; {WAITERS} waiters distlock {cost_distlock_8:.1}, original {cost_original_8:.1}"
    );
    println!(
        "ratio distlock / raw PUT+DELETE:          {:.2}x (target <= 1.10x)",
        ours_p50.as_secs_f64() / raw_p50.as_secs_f64()
    );
    println!(
        "ratio original / distlock, 1 waiter:      {:.2}x (target >= 3x)",
        single_original_p50.as_secs_f64() / single_p50.as_secs_f64()
    );
    println!(
        "ratio original / distlock, {WAITERS} waiters:     {:.2}x (target >= 1x)",
        original_p50.as_secs_f64() / handoff_p50.as_secs_f64()
    );
    println!(
        "8-waiter handoff median - one raw PUT:   {:.3} ms (target <= 5 ms)",
        ms(handoff_p50.saturating_sub(percentile(&mut raw_puts, 0.5)))
    );
    if let Some(rss) = server.rss_kib() {
        println!("server RSS after the run: {} MiB", rss / 1024);
    }
}
