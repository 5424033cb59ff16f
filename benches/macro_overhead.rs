//! What `#[distributed_lock]` costs over writing the same lock by hand.
//!
//! ```text
//! cargo bench --bench macro_overhead                  # 15 rounds of 20 000 calls per variant
//! cargo bench --bench macro_overhead -- 30 50000      # rounds, calls per round
//! cargo bench --bench macro_overhead -- 1 8000 guard  # one variant only
//! ```
//!
//! Wall-clock figures swing with other load on the machine. Instruction
//! counts do not: run one variant at two sizes under callgrind and divide the
//! difference by the difference in calls (each run also makes `calls / 4 + 1`
//! warm-up calls, so 8 000 and 16 000 differ by 10 000 calls):
//!
//! ```text
//! B=$(cargo bench --bench macro_overhead --no-run 2>&1 | grep -o 'target/release/deps/macro_overhead-[0-9a-f]*')
//! for n in 8000 16000; do valgrind --tool=callgrind --callgrind-out-file=/dev/null $B 1 $n annotated 2>&1 | grep Collected; done
//! ```
//!
//! Three variants run the same body (return the argument) on the memory
//! backend, uncontended, with a key built from the argument:
//!
//! - `annotated`: `#[distributed_lock(key = "bench/<id>", client = client)]`;
//! - `guard`: `format!` the key, `acquire_with`, body, `release().await`;
//! - `with_lock`: `format!` the key, `client.with_lock(..)` (what the attribute
//!   does, written by hand: it also gives the body `current()` and races it
//!   against the lost signal, which the bare guard does not).
//!
//! The variants are interleaved round by round so that load from other
//! processes hits them alike; the figure per variant is the median of its
//! rounds' ns/call. The target is `annotated / guard <= 1.02`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use distlock::{LockClient, LockError, LockOptions, distributed_lock};

#[distributed_lock(key = "bench/<id>", client = client)]
async fn annotated(client: &LockClient, id: u64) -> Result<u64, LockError> {
    Ok(black_box(id))
}

async fn guard(client: &LockClient, options: &LockOptions, id: u64) -> Result<u64, LockError> {
    let key = format!("bench/{id}");
    let guard = client.acquire_with(&key, options).await?;
    let output = black_box(id);
    guard.release().await?;
    Ok(output)
}

async fn with_lock(client: &LockClient, options: &LockOptions, id: u64) -> Result<u64, LockError> {
    let key = format!("bench/{id}");
    client
        .with_lock(&key, options, async { black_box(id) })
        .await
}

#[derive(Clone, Copy)]
enum Variant {
    Annotated,
    Guard,
    WithLock,
}

async fn round(client: &LockClient, variant: Variant, calls: u64) -> Result<Duration, LockError> {
    let options = client.options().clone();
    let started = Instant::now();
    for i in 0..calls {
        let id = i % 64;
        let output = match variant {
            Variant::Annotated => annotated(client, id).await?,
            Variant::Guard => guard(client, &options, id).await?,
            Variant::WithLock => with_lock(client, &options, id).await?,
        };
        assert_eq!(output, id);
    }
    Ok(started.elapsed())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; the numbers are ours.
    let numbers: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.parse().ok())
        .collect();
    let rounds = numbers.first().copied().unwrap_or(15).max(1);
    let calls = numbers.get(1).copied().unwrap_or(20_000).max(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let variants = [
        ("annotated", Variant::Annotated),
        ("guard", Variant::Guard),
        ("with_lock", Variant::WithLock),
    ];
    let only = std::env::args()
        .skip(1)
        .find(|arg| variants.iter().any(|(name, _)| name == arg));
    let variants: Vec<_> = variants
        .iter()
        .copied()
        .filter(|(name, _)| only.as_deref().is_none_or(|only| only == *name))
        .collect();
    let ns = runtime.block_on(async {
        let client = LockClient::memory();
        // Warm up: allocator, renewer task, hash map capacity.
        for &(_, variant) in &variants {
            round(&client, variant, calls / 4 + 1).await?;
        }
        let mut ns = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (slot, (_, variant)) in variants.iter().enumerate() {
                let elapsed = round(&client, *variant, calls).await?;
                ns[slot].push(elapsed.as_nanos() as f64 / calls as f64);
            }
        }
        Ok::<_, LockError>(ns)
    })?;
    let mut medians = [0.0; 3];
    for (slot, (name, _)) in variants.iter().enumerate() {
        if ns[slot].is_empty() {
            continue;
        }
        let mut values = ns[slot].clone();
        medians[slot] = median(&mut values);
        let best = values.first().copied().unwrap_or_default();
        println!(
            "{name:>10}: median {:>8.1} ns/call (best {best:.1}) over {rounds} rounds of {calls}",
            medians[slot]
        );
    }
    if variants.len() == 3 {
        println!(
            "annotated / guard     = {:.3}x (target <= 1.02x)",
            medians[0] / medians[1]
        );
        println!("annotated / with_lock = {:.3}x", medians[0] / medians[2]);
    }
    Ok(())
}
