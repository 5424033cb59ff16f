//! A scheduled job guarded so that it runs once per tick across instances.
//!
//! Three instances of a service (simulated here: three clients on one shared
//! store, with clocks up to 90 ms apart) each run the report job every second.
//! The job is `if_locked = "skip"`: an instance that finds the lock held skips
//! the tick. `hold_at_least = "500ms"` keeps the lock after the fast job
//! finishes, so a late instance (clock skew) does not run the same tick again;
//! it must be longer than the skew and shorter than the period.
//!
//! ```text
//! cargo run --example scheduler          # 20 ticks, prints who ran each one
//! cargo run --example scheduler -- 5     # 5 ticks
//! ```

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use distlock::store::memory::MemoryStore;
use distlock::{LockClient, distributed_lock};
use tokio::time::{Instant, sleep, sleep_until};

/// The job's period.
pub const PERIOD: Duration = Duration::from_secs(1);

/// How far each instance's clock is off (simulated skew).
pub const SKEWS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(40),
    Duration::from_millis(90),
];

/// One run of the job: the tick, the instance that ran it, its fencing token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// The tick it ran for.
    pub tick: u64,
    /// The instance that ran it.
    pub instance: usize,
    /// The lock's fencing token.
    pub token: u64,
}

/// One instance of the service.
pub struct Instance {
    /// Its index (0, 1, 2).
    pub index: usize,
    /// Its own lock client (its own owner identity) on the shared store.
    pub locks: LockClient,
    /// Where the job writes its result (shared: the "database").
    pub runs: Arc<Mutex<Vec<Run>>>,
}

/// The job: `Some(token)` if this instance ran it, `None` if it skipped.
#[distributed_lock(
    key = "jobs/report",
    if_locked = "skip",
    hold_at_least = "500ms",
    client = instance.locks
)]
async fn report(instance: &Instance, tick: u64) -> Option<u64> {
    let token = distlock::current().map_or(0, |lock| lock.token());
    sleep(Duration::from_millis(20)).await; // the work
    let run = Run {
        tick,
        instance: instance.index,
        token,
    };
    instance
        .runs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(run);
    Some(token)
}

/// Runs `ticks` ticks on three instances and returns every run of the job.
pub async fn simulate(ticks: u64, verbose: bool) -> Vec<Run> {
    let store = Arc::new(MemoryStore::new());
    let runs = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now() + Duration::from_millis(100);
    let tasks: Vec<_> = SKEWS
        .iter()
        .enumerate()
        .map(|(index, skew)| {
            let instance = Instance {
                index,
                locks: LockClient::new(Arc::clone(&store)),
                runs: Arc::clone(&runs),
            };
            let skew = *skew;
            tokio::spawn(async move {
                for tick in 0..ticks {
                    let at = start + PERIOD * u32::try_from(tick).unwrap_or(u32::MAX) + skew;
                    sleep_until(at).await;
                    let outcome = report(&instance, tick).await;
                    if verbose {
                        match outcome {
                            Some(token) => println!(
                                "tick {tick:>2}: instance {index} ran the report (token {token})"
                            ),
                            None => println!("tick {tick:>2}: instance {index} skipped"),
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        if let Err(error) = task.await {
            eprintln!("an instance failed: {error}");
        }
    }
    runs.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

#[tokio::main]
async fn main() {
    let ticks = std::env::args()
        .nth(1)
        .and_then(|ticks| ticks.parse().ok())
        .unwrap_or(20);
    let runs = simulate(ticks, true).await;
    println!("{} runs for {ticks} ticks", runs.len());
}
