//! distlock on etcd against its floors, in one run against one local etcd node (started
//! here on a free loopback port), interleaved pair by pair so machine noise hits all alike:
//!
//! 1. uncontended acquire+release with distlock vs a raw two-txn pair (put-if-absent with
//!    a lease, delete-if-revision) over the same gRPC client; target <= 1.10x;
//! 2. the same vs `etcd-client`'s own `lock()`/`unlock()` with a lease; target: faster;
//! 3. contended handoff, 8 waiters on one key: from the holder's release call to the next
//!    holder's acquire returning, median vs one raw txn round trip; target <= 2x.
//!
//! Needs etcd (`scripts/etcd.sh`). Run: `cargo bench -p testkit --features etcd --bench etcd`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::stats::{ms, percentile};

use distlock::store::etcd::EtcdStore;
use distlock::store::etcd::etcd_client::{
    Client, Compare, CompareOp, LockOptions as RawLockOptions, PutOptions, Txn, TxnOp,
};
use distlock::store::{CompareExchange, DeleteOutcome, Expect, LeaseId, PutOutcome, Record};
use distlock::{LockClient, LockOptions};
use testkit::etcd::Cluster as EtcdCluster;

const PAIRS_PER_BLOCK: usize = 300;
const BLOCKS: usize = 10;
const HANDOFF_WAITERS: usize = 8;
const HANDOFF_CYCLES_PER_WAITER: usize = 150;

/// CPU time this process has used so far (user + system), from /proc/self/stat, in
/// clock ticks of 10 ms; good enough over a few seconds of work.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the ')'.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// One raw txn pair: the two round trips any compare-exchange lock needs at least.
/// Returns (pair time, acquire-txn time).
async fn raw_pair(raw: &mut Client, key: &str, value: &[u8], lease: i64) -> (Duration, Duration) {
    let started = Instant::now();
    let acquire = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key, None)]);
    let answer = match raw.txn(acquire).await {
        Ok(answer) => answer,
        Err(e) => panic!("raw acquire txn: {e}"),
    };
    let acquired = started.elapsed();
    assert!(answer.succeeded(), "the raw key was not free");
    let revision = answer.header().map_or(0, |h| h.revision());
    let release = Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
        .and_then([TxnOp::delete(key, None)])
        .or_else([TxnOp::get(key, None)]);
    match raw.txn(release).await {
        Ok(answer) => assert!(answer.succeeded(), "the raw release conflicted"),
        Err(e) => panic!("raw release txn: {e}"),
    }
    (started.elapsed(), acquired)
}

async fn distlock_pair(client: &LockClient, key: &str) -> Duration {
    let started = Instant::now();
    let guard = match client.acquire(key).await {
        Ok(guard) => guard,
        Err(e) => panic!("distlock acquire: {e}"),
    };
    if let Err(e) = guard.release().await {
        panic!("distlock release: {e}");
    }
    started.elapsed()
}

/// The adapter alone (no lock algorithm): put-if-absent with the lease, then delete.
async fn adapter_pair(store: &EtcdStore, key: &str, record: &Record, lease: i64) -> Duration {
    let started = Instant::now();
    let index = match store
        .put(key, record, Expect::Absent, Some(LeaseId(lease)))
        .await
    {
        Ok(PutOutcome::Swapped { index }) => index,
        other => panic!("adapter put: {other:?}"),
    };
    match store.delete(key, index).await {
        Ok(DeleteOutcome::Deleted) => {}
        other => panic!("adapter delete: {other:?}"),
    }
    started.elapsed()
}

async fn etcd_lock_pair(raw: &mut Client, name: &str, lease: i64) -> Duration {
    let started = Instant::now();
    let locked = match raw
        .lock(name, Some(RawLockOptions::new().with_lease(lease)))
        .await
    {
        Ok(locked) => locked,
        Err(e) => panic!("etcd-client lock: {e}"),
    };
    if let Err(e) = raw.unlock(locked.key()).await {
        panic!("etcd-client unlock: {e}");
    }
    started.elapsed()
}

/// 8 clients (own connections) contend for one key; each handoff is timed from the
/// holder starting its release to the next holder's acquire returning.
async fn handoff(url: &str) -> Vec<Duration> {
    let released_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let samples: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..HANDOFF_WAITERS {
        let store = match EtcdStore::builder().endpoint(url).build() {
            Ok(store) => store,
            Err(e) => panic!("{e}"),
        };
        let client = match LockClient::builder(store)
            .defaults(LockOptions::default().ttl(Duration::from_secs(10)))
            .build()
        {
            Ok(client) => client,
            Err(e) => panic!("{e}"),
        };
        // Warm the connection and the lease session outside the measurement.
        distlock_pair(&client, "bench/handoff-warmup").await;
        let (released_at, samples) = (Arc::clone(&released_at), Arc::clone(&samples));
        tasks.spawn(async move {
            for _ in 0..HANDOFF_CYCLES_PER_WAITER {
                let guard = match client.acquire("bench/handoff").await {
                    Ok(guard) => guard,
                    Err(e) => panic!("handoff acquire: {e}"),
                };
                let now = Instant::now();
                let previous = released_at
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(released) = previous {
                    samples
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(now.duration_since(released));
                }
                *released_at
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
                if let Err(e) = guard.release().await {
                    panic!("handoff release: {e}");
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    samples
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    let etcd = EtcdCluster::single();
    let url = etcd.client_url(0);
    runtime.block_on(run(&url));
    drop(etcd);
}

async fn run(url: &str) {
    let store = match EtcdStore::builder().endpoint(url).build() {
        Ok(store) => store,
        Err(e) => panic!("{e}"),
    };
    // The raw baseline runs on the store's own gRPC channel.
    let mut raw = match store.raw_client().await {
        Ok(raw) => raw,
        Err(e) => panic!("{e}"),
    };
    let client = match LockClient::builder(store.clone())
        .defaults(LockOptions::default().ttl(Duration::from_secs(10)))
        .build()
    {
        Ok(client) => client,
        Err(e) => panic!("{e}"),
    };
    let lease = match store.grant_lease(Duration::from_secs(60)).await {
        Ok(LeaseId(id)) => id,
        Err(e) => panic!("{e}"),
    };
    let value = br#"{"owner":"bench@host:1","nonce":1,"ttl_ms":10000,"written_at_ms":0}"#;

    // Warm up every path (connections, lease session, watch-free fast path).
    for _ in 0..50 {
        raw_pair(&mut raw, "bench/raw", value, lease).await;
        distlock_pair(&client, "bench/distlock").await;
        etcd_lock_pair(&mut raw, "bench/etcdlock", lease).await;
    }

    let record = Record {
        owner: "bench@host:1".into(),
        nonce: 1,
        ttl_ms: 10_000,
        written_at_ms: 0,
    };
    let (mut raw_pairs, mut raw_txns, mut ours, mut theirs, mut adapter) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Interleave pair by pair, rotating which goes first, so noise from other processes
    // on the machine hits all three alike.
    for i in 0..BLOCKS * PAIRS_PER_BLOCK {
        for turn in 0..4 {
            match (i + turn) % 4 {
                0 => {
                    let (pair, txn) = raw_pair(&mut raw, "bench/raw", value, lease).await;
                    raw_pairs.push(pair);
                    raw_txns.push(txn);
                }
                1 => ours.push(distlock_pair(&client, "bench/distlock").await),
                2 => adapter.push(adapter_pair(&store, "bench/adapter", &record, lease).await),
                _ => theirs.push(etcd_lock_pair(&mut raw, "bench/etcdlock", lease).await),
            }
        }
    }
    // Client CPU per pair (this process only; etcd's own work is not counted), in blocks.
    const CPU_PAIRS: usize = 1_500;
    let mut cpu = [0u64; 4];
    for (which, slot) in cpu.iter_mut().enumerate() {
        let before = cpu_ticks();
        for _ in 0..CPU_PAIRS {
            match which {
                0 => {
                    raw_pair(&mut raw, "bench/raw", value, lease).await;
                }
                1 => {
                    distlock_pair(&client, "bench/distlock").await;
                }
                2 => {
                    adapter_pair(&store, "bench/adapter", &record, lease).await;
                }
                _ => {
                    etcd_lock_pair(&mut raw, "bench/etcdlock", lease).await;
                }
            }
        }
        *slot = cpu_ticks() - before;
    }
    let per_pair_us = |ticks: u64| ticks as f64 * 10_000.0 / CPU_PAIRS as f64;

    let mut handoffs = handoff(url).await;

    let raw_p50 = percentile(&mut raw_pairs, 0.5);
    let raw_p99 = percentile(&mut raw_pairs, 0.99);
    let txn_p50 = percentile(&mut raw_txns, 0.5);
    let ours_p50 = percentile(&mut ours, 0.5);
    let ours_p99 = percentile(&mut ours, 0.99);
    let adapter_p50 = percentile(&mut adapter, 0.5);
    let adapter_p99 = percentile(&mut adapter, 0.99);
    let theirs_p50 = percentile(&mut theirs, 0.5);
    let theirs_p99 = percentile(&mut theirs, 0.99);
    let handoff_p50 = percentile(&mut handoffs, 0.5);
    let handoff_p99 = percentile(&mut handoffs, 0.99);
    let n = BLOCKS * PAIRS_PER_BLOCK;
    println!("etcd 3.4, one local node, {n} pairs each, interleaved pair by pair:");
    println!(
        "  raw two-txn pair (same gRPC client) p50 {:.3} ms  p99 {:.3} ms  (one txn p50 {:.3} ms)",
        ms(raw_p50),
        ms(raw_p99),
        ms(txn_p50)
    );
    println!(
        "  distlock acquire+release          p50 {:.3} ms  p99 {:.3} ms",
        ms(ours_p50),
        ms(ours_p99)
    );
    println!(
        "  store adapter put+delete alone    p50 {:.3} ms  p99 {:.3} ms",
        ms(adapter_p50),
        ms(adapter_p99)
    );
    println!(
        "  etcd-client lock()+unlock()       p50 {:.3} ms  p99 {:.3} ms",
        ms(theirs_p50),
        ms(theirs_p99)
    );
    println!(
        "  contended handoff, {HANDOFF_WAITERS} waiters ({} handoffs) p50 {:.3} ms  p99 {:.3} ms",
        handoffs.len(),
        ms(handoff_p50),
        ms(handoff_p99)
    );
    println!(
        "  client CPU per pair: raw {:.0} us, distlock {:.0} us, adapter {:.0} us, etcd-client lock {:.0} us",
        per_pair_us(cpu[0]),
        per_pair_us(cpu[1]),
        per_pair_us(cpu[2]),
        per_pair_us(cpu[3])
    );
    println!(
        "ratio distlock / raw two-txn floor:       {:.2}x (target <= 1.10x)",
        ours_p50.as_secs_f64() / raw_p50.as_secs_f64()
    );
    println!(
        "ratio distlock / etcd-client lock+unlock: {:.2}x (target < 1.00x)",
        ours_p50.as_secs_f64() / theirs_p50.as_secs_f64()
    );
    println!(
        "ratio handoff p50 / one raw txn p50:      {:.2}x (target <= 2x)",
        handoff_p50.as_secs_f64() / txn_p50.as_secs_f64()
    );
}
