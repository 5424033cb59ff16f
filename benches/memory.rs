//! Uncontended acquire+release on the in-memory backend against a keyed
//! `HashMap<String, Arc<tokio::sync::Mutex<()>>>` baseline, in one process,
//! alternating blocks so machine noise hits both alike.
//!
//! Run: `cargo bench --bench memory`

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlock::store::memory::MemoryStore;
use distlock::store::{CompareExchange, DeleteOutcome, Expect, PutOutcome, Record};
use distlock::{LockClient, LockOptions};

const KEYS: usize = 64;
const OPS_PER_BLOCK: usize = 20_000;
const BLOCKS: usize = 15;

type Baseline = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

async fn baseline_block(map: &Baseline, keys: &[String]) -> Duration {
    let started = Instant::now();
    for i in 0..OPS_PER_BLOCK {
        let key = &keys[i % KEYS];
        let lock = {
            let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(key) {
                Some(lock) => Arc::clone(lock),
                None => Arc::clone(map.entry(key.clone()).or_default()),
            }
        };
        let guard = lock.lock_owned().await;
        black_box(&guard);
        drop(guard);
    }
    started.elapsed()
}

async fn distlock_block(client: &LockClient, keys: &[String], options: &LockOptions) -> Duration {
    let started = Instant::now();
    for i in 0..OPS_PER_BLOCK {
        let guard = match client.acquire_with(&keys[i % KEYS], options).await {
            Ok(guard) => guard,
            Err(error) => panic!("uncontended acquire failed: {error}"),
        };
        black_box(guard.token());
        if let Err(error) = guard.release().await {
            panic!("release failed: {error}");
        }
    }
    started.elapsed()
}

async fn raw_store_block(store: &MemoryStore, keys: &[String]) -> Duration {
    let record = Record {
        owner: "bench".into(),
        nonce: 1,
        ttl_ms: 30_000,
        written_at_ms: 0,
    };
    let started = Instant::now();
    for i in 0..OPS_PER_BLOCK {
        let key = &keys[i % KEYS];
        let index = match store.put(key, &record, Expect::Absent, None).await {
            Ok(PutOutcome::Swapped { index }) => index,
            other => panic!("raw put failed: {other:?}"),
        };
        if !matches!(store.delete(key, index).await, Ok(DeleteOutcome::Deleted)) {
            panic!("raw delete failed");
        }
    }
    started.elapsed()
}

const WAITERS: usize = 8;
const CONTENDED_OPS: usize = 2_000;

/// `WAITERS` tasks take turns on one key, yielding while they hold it.
async fn contended_baseline(map: &Arc<Baseline>) -> Duration {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WAITERS {
        let map = Arc::clone(map);
        tasks.spawn(async move {
            for _ in 0..CONTENDED_OPS {
                let lock = {
                    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
                    Arc::clone(map.entry("hot".to_owned()).or_default())
                };
                let guard = lock.lock_owned().await;
                tokio::task::yield_now().await;
                drop(guard);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    started.elapsed()
}

async fn contended_distlock(store: &MemoryStore) -> Duration {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WAITERS {
        let client = LockClient::new(store.clone());
        tasks.spawn(async move {
            for _ in 0..CONTENDED_OPS {
                let guard = match client.acquire("hot").await {
                    Ok(guard) => guard,
                    Err(error) => panic!("contended acquire failed: {error}"),
                };
                tokio::task::yield_now().await;
                if let Err(error) = guard.release().await {
                    panic!("release failed: {error}");
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    started.elapsed()
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    runtime.block_on(async {
        let keys: Vec<String> = (0..KEYS).map(|i| format!("orders/{i}")).collect();
        let client = LockClient::memory();
        let options = client.options().clone();
        let map = Baseline::default();
        // Warm up both.
        baseline_block(&map, &keys).await;
        distlock_block(&client, &keys, &options).await;
        let raw = MemoryStore::new();
        let (mut base, mut ours, mut floor) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..BLOCKS {
            floor.push(raw_store_block(&raw, &keys).await.as_nanos() as f64 / OPS_PER_BLOCK as f64);
            base.push(baseline_block(&map, &keys).await.as_nanos() as f64 / OPS_PER_BLOCK as f64);
            ours.push(distlock_block(&client, &keys, &options).await.as_nanos() as f64 / OPS_PER_BLOCK as f64);
        }
        let (base, ours, floor) = (median(base), median(ours), median(floor));
        println!("memory backend, uncontended acquire+release, median of {BLOCKS} blocks x {OPS_PER_BLOCK} ops");
        println!("  baseline HashMap<String, Arc<tokio::sync::Mutex<()>>>: {base:8.0} ns/op");
        println!("  raw MemoryStore put-if-absent + delete-if-index:       {floor:8.0} ns/op");
        println!("  distlock (LockClient on MemoryStore):                  {ours:8.0} ns/op");
        println!("  ratio distlock / baseline: {:.2}x (target <= 2.0)", ours / base);
        println!("  ratio raw store / baseline: {:.2}x", floor / base);

        let map = Arc::new(Baseline::default());
        let store = MemoryStore::new();
        let (mut base, mut ours) = (Vec::new(), Vec::new());
        let ops = (WAITERS * CONTENDED_OPS) as f64;
        for _ in 0..5 {
            base.push(contended_baseline(&map).await.as_nanos() as f64 / ops);
            ours.push(contended_distlock(&store).await.as_nanos() as f64 / ops);
        }
        let (base, ours) = (median(base), median(ours));
        println!("contended: {WAITERS} tasks on one key, {CONTENDED_OPS} turns each, median of 5 runs");
        println!("  baseline tokio::sync::Mutex handoff: {base:8.0} ns/turn");
        println!("  distlock handoff (watch wake-up):    {ours:8.0} ns/turn");
        println!("  ratio distlock / baseline: {:.2}x", ours / base);
    });
}
