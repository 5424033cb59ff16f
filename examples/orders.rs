//! The main job: several service instances process one stream of order events
//! (each order delivered to several instances, as at-least-once queues do),
//! and each payment runs under the lock `orders/<id>`. A fenced "database"
//! checks every write against the lock's fencing token.
//!
//! ```text
//! cargo run --release --example orders
//! cargo run --release --example orders -- --instances 8 --orders 5000
//! cargo run --release --features etcd --example orders -- --backend etcd://127.0.0.1:2379
//! cargo run --release --features ravendb --example orders -- --backend ravendb+http://127.0.0.1:8080/locks
//! ```
//!
//! With `--backend URL` every instance opens its own connection to the
//! server, as separate processes would.
//!
//! Prints a live summary and a final report; exits non-zero if two holders
//! were ever inside one order's lock at once, a fencing token went backwards,
//! or an order was paid other than exactly once.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlock::store::memory::MemoryStore;
use distlock::{LockClient, LockOptions, Wait};

#[derive(Debug)]
struct Config {
    instances: usize,
    orders: u64,
    deliveries: usize,
    backend: String,
}

fn parse_args() -> Result<Config, String> {
    let mut config = Config {
        instances: 4,
        orders: 2_000,
        deliveries: 3,
        backend: "memory".to_owned(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--instances" => config.instances = number(&value("--instances")?)?,
            "--orders" => config.orders = number(&value("--orders")?)?,
            "--deliveries" => config.deliveries = number(&value("--deliveries")?)?,
            "--backend" => config.backend = value("--backend")?,
            "-h" | "--help" => {
                return Err(
                    "usage: orders [--instances N] [--orders N] [--deliveries N] [--backend URL]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if config.instances == 0 || config.orders == 0 || config.deliveries == 0 {
        return Err("--instances, --orders and --deliveries must be at least 1".into());
    }
    Ok(config)
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a valid number"))
}

/// The protected resource: rejects writes whose fencing token is not newer
/// than the last one it accepted for that order.
#[derive(Default)]
struct Database {
    rows: Mutex<HashMap<u64, Row>>,
}

#[derive(Default, Clone, Copy)]
struct Row {
    last_token: u64,
    paid: u32,
}

impl Database {
    fn row(&self, order: u64) -> Row {
        let rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        rows.get(&order).copied().unwrap_or_default()
    }

    /// Records a payment; `Err` if the token is stale (fencing).
    fn pay(&self, order: u64, token: u64) -> Result<(), u64> {
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let row = rows.entry(order).or_default();
        if token <= row.last_token {
            return Err(row.last_token);
        }
        row.last_token = token;
        row.paid += 1;
        Ok(())
    }
}

/// Counts holders inside each order's critical section, from outside the library.
#[derive(Default)]
struct Report {
    inside: Mutex<HashMap<u64, u32>>,
    most_inside: AtomicU64,
    payments: AtomicU64,
    duplicates_skipped: AtomicU64,
    fencing_rejections: AtomicU64,
}

impl Report {
    fn enter(&self, order: u64) {
        let mut inside = self.inside.lock().unwrap_or_else(|p| p.into_inner());
        let count = inside.entry(order).or_default();
        *count += 1;
        self.most_inside
            .fetch_max(u64::from(*count), Ordering::SeqCst);
    }

    fn exit(&self, order: u64) {
        let mut inside = self.inside.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = inside.get_mut(&order) {
            *count -= 1;
        }
    }
}

async fn instance(
    client: LockClient,
    events: Vec<u64>,
    db: Arc<Database>,
    report: Arc<Report>,
) -> Result<(), distlock::LockError> {
    let options = LockOptions::default()
        .ttl(Duration::from_secs(10))
        .wait(Wait::For(Duration::from_secs(30)));
    for order in events {
        let key = format!("orders/{order}");
        let guard = client.acquire_with(&key, &options).await?;
        report.enter(order);
        if db.row(order).paid > 0 {
            report.duplicates_skipped.fetch_add(1, Ordering::Relaxed);
        } else {
            // The payment call: slow enough that duplicates collide.
            tokio::time::sleep(Duration::from_micros(200 + fastrand::u64(0..800))).await;
            match db.pay(order, guard.token()) {
                Ok(()) => report.payments.fetch_add(1, Ordering::Relaxed),
                Err(_) => report.fencing_rejections.fetch_add(1, Ordering::Relaxed),
            };
        }
        report.exit(order);
        guard.release().await?;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let config = match parse_args() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let store = MemoryStore::new();
    let db = Arc::new(Database::default());
    let report = Arc::new(Report::default());

    // Every order is delivered to `deliveries` distinct instances, in a
    // shuffled order per instance, so duplicates contend for the same lock.
    let mut streams: Vec<Vec<u64>> = vec![Vec::new(); config.instances];
    for order in 0..config.orders {
        let mut chosen: Vec<usize> = (0..config.instances).collect();
        fastrand::shuffle(&mut chosen);
        for &i in chosen.iter().take(config.deliveries.min(config.instances)) {
            streams[i].push(order);
        }
    }
    for stream in &mut streams {
        // Local reordering only, so instances mostly work on the same orders.
        for chunk in stream.chunks_mut(8) {
            fastrand::shuffle(chunk);
        }
    }

    println!(
        "distlock orders: {} instances, {} orders, each delivered {} times, backend {}",
        config.instances, config.orders, config.deliveries, config.backend
    );
    let started = Instant::now();
    let mut clients = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for events in streams {
        let client = if matches!(config.backend.as_str(), "memory" | "memory://") {
            LockClient::new(store.clone())
        } else {
            match LockClient::connect(&config.backend) {
                Ok(client) => client,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::from(2);
                }
            }
        };
        clients.push(client.clone());
        tasks.spawn(instance(
            client,
            events,
            Arc::clone(&db),
            Arc::clone(&report),
        ));
    }

    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    ticker.tick().await;
    let mut failures = Vec::new();
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(error))) => failures.push(error.to_string()),
                Some(Err(error)) => failures.push(format!("instance crashed: {error}")),
                None => break,
            },
            _ = ticker.tick() => {
                let taken: u64 = clients.iter().map(|c| c.stats().acquired).sum();
                println!(
                    "  {:>5.1}s  locks taken {taken:>6}  paid {:>6}/{}",
                    started.elapsed().as_secs_f64(),
                    report.payments.load(Ordering::Relaxed),
                    config.orders
                );
            }
        }
    }
    let elapsed = started.elapsed();

    let (mut taken, mut contended, mut takeovers, mut lost) = (0, 0, 0, 0);
    for client in &clients {
        let stats = client.stats();
        taken += stats.acquired;
        contended += stats.contended;
        takeovers += stats.takeovers;
        lost += stats.lost;
    }
    let rows = db.rows.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let paid_once = rows.values().filter(|row| row.paid == 1).count() as u64;
    let paid_twice = rows.values().filter(|row| row.paid > 1).count();
    let most_inside = report.most_inside.load(Ordering::SeqCst);
    let rejections = report.fencing_rejections.load(Ordering::SeqCst);

    println!("report after {:.2}s", elapsed.as_secs_f64());
    println!(
        "  locks taken            {taken} ({:.0}/s)",
        taken as f64 / elapsed.as_secs_f64()
    );
    println!("  waited for a holder    {contended}");
    println!("  takeovers              {takeovers}");
    println!("  locks lost             {lost}");
    println!(
        "  duplicates skipped     {}",
        report.duplicates_skipped.load(Ordering::SeqCst)
    );
    println!("  most holders at once   {most_inside} (per key)");
    println!(
        "  fencing order kept     {}",
        if rejections == 0 { "yes" } else { "NO" }
    );
    println!("  orders paid once       {paid_once}/{}", config.orders);

    let mut violations = failures;
    if most_inside > 1 {
        violations.push(format!("{most_inside} holders were inside one key at once"));
    }
    if rejections > 0 {
        violations.push(format!("{rejections} writes carried a stale fencing token"));
    }
    if paid_twice > 0 || paid_once != config.orders {
        violations.push(format!(
            "{paid_once} of {} orders paid exactly once, {paid_twice} paid twice",
            config.orders
        ));
    }
    if violations.is_empty() {
        println!("OK: no violation");
        ExitCode::SUCCESS
    } else {
        for violation in &violations {
            eprintln!("VIOLATION: {violation}");
        }
        ExitCode::FAILURE
    }
}
