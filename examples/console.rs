//! The original program, ported: press ENTER to lock `sample/resource`, ENTER again
//! to release. Start several instances against the same backend and watch them
//! queue: only one is ever "locked".
//!
//! ```text
//! cargo run --features ravendb --example console -- --backend ravendb+http://127.0.0.1:8080/locks
//! cargo run --features etcd --example console -- --backend etcd://127.0.0.1:2379
//! cargo run --example console                       # memory: one process, so one instance
//! cargo run --example console -- --instances 3      # memory: 3 instances in this process,
//!                                                   # each line of input goes to the next one
//! cargo run --example console -- --ttl 5s --key jobs/nightly   # another ttl (default 30s) or key
//! ```
//!
//! Its output is line by line, for people and for tests (`tests/console_original.rs`
//! drives it against the original's algorithm on a real RavenDB): `...: locked (fencing
//! token N)`, `...: released`, `...: waiting for the lock on KEY...`.
//!
//! Unlike the original (which retried every 20 ms and trusted a stored five-minute
//! expiry against its own clock), a waiting instance backs off adaptively, a crashed
//! holder is taken over only after its ttl has been observed on the local monotonic
//! clock, and a held lock is renewed while you think about pressing ENTER.

use std::process::ExitCode;
use std::time::Duration;

use distlock::store::memory::MemoryStore;
use distlock::{LockClient, LockGuard, LockOptions, Wait};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The key of the original program.
const DEFAULT_KEY: &str = "sample/resource";
const DEFAULT_TTL: Duration = Duration::from_secs(30);

struct Config {
    backend: String,
    instances: usize,
    key: String,
    ttl: Duration,
}

fn parse_args() -> Result<Config, String> {
    let mut config = Config {
        backend: "memory".to_owned(),
        instances: 1,
        key: DEFAULT_KEY.to_owned(),
        ttl: DEFAULT_TTL,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--backend" => config.backend = value("--backend")?,
            "--instances" => {
                let text = value("--instances")?;
                config.instances = text
                    .parse()
                    .ok()
                    .filter(|n| (1..=16).contains(n))
                    .ok_or_else(|| format!("--instances takes 1 to 16, not {text:?}"))?;
            }
            "--key" => {
                let key = value("--key")?;
                distlock::validate_key(&key).map_err(|e| format!("--key {key:?}: {e}"))?;
                config.key = key;
            }
            "--ttl" => {
                let text = value("--ttl")?;
                config.ttl =
                    distlock::parse_duration(&text).map_err(|e| format!("--ttl {text:?}: {e}"))?;
            }
            "-h" | "--help" => {
                return Err(
                    "usage: console [--backend URL] [--instances N (memory only)] [--key KEY] \
                     [--ttl DURATION (default 30s)]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if config.instances > 1 && !matches!(config.backend.as_str(), "memory" | "memory://") {
        return Err(
            "--instances is for the memory backend; for a server, start several processes".into(),
        );
    }
    Ok(config)
}

/// One instance of the original program: idle, waiting, or holding the lock.
struct Instance {
    name: String,
    key: String,
    ttl: Duration,
    client: LockClient,
    held: Option<LockGuard>,
    waiting: Option<tokio::task::JoinHandle<Result<LockGuard, distlock::LockError>>>,
}

impl Instance {
    fn prompt(&self) {
        match (&self.held, &self.waiting) {
            (Some(_), _) => println!("{}: locked; press ENTER to release", self.name),
            (None, None) => println!("{}: press ENTER to lock {}", self.name, self.key),
            (None, Some(_)) => {}
        }
    }

    /// ENTER: lock (waiting as long as it takes) or release.
    async fn enter(&mut self) -> Result<(), distlock::LockError> {
        if let Some(guard) = self.held.take() {
            guard.release().await?;
            println!("{}: released", self.name);
        } else if self.waiting.is_none() {
            println!("{}: waiting for the lock on {}...", self.name, self.key);
            let (client, key) = (self.client.clone(), self.key.clone());
            let options = LockOptions::default().ttl(self.ttl).wait(Wait::Forever);
            self.waiting = Some(tokio::spawn(async move {
                client.acquire_with(&key, &options).await
            }));
        }
        Ok(())
    }

    /// Turns a finished wait into a held lock.
    async fn settle(&mut self) -> Result<(), distlock::LockError> {
        if self.waiting.as_ref().is_some_and(|w| w.is_finished())
            && let Some(waiting) = self.waiting.take()
        {
            let guard = match waiting.await {
                Ok(result) => result?,
                Err(join) => {
                    return Err(distlock::LockError::Config {
                        message: format!("the waiting task failed: {join}"),
                        source: None,
                    });
                }
            };
            println!("{}: locked (fencing token {})", self.name, guard.token());
            self.held = Some(guard);
            self.prompt();
        }
        Ok(())
    }
}

async fn run(config: Config) -> Result<(), String> {
    let memory = matches!(config.backend.as_str(), "memory" | "memory://");
    let shared = MemoryStore::new();
    let mut instances = Vec::new();
    for i in 0..config.instances {
        let client = if memory {
            // Separate clients on one store, as separate instances would be.
            LockClient::new(shared.clone())
        } else {
            LockClient::connect(&config.backend).map_err(|e| e.to_string())?
        };
        let name = if config.instances > 1 {
            format!("instance {}", i + 1)
        } else {
            "console".to_owned()
        };
        instances.push(Instance {
            name,
            key: config.key.clone(),
            ttl: config.ttl,
            client,
            held: None,
            waiting: None,
        });
    }
    println!(
        "distlock console: backend {}, key {}{}",
        distlock::credential_free_url(&config.backend),
        config.key,
        if config.instances > 1 {
            "; each line of input goes to the next instance"
        } else {
            ""
        }
    );
    for instance in &instances {
        instance.prompt();
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut turn = 0;
    loop {
        // Wake up now and then to report a wait that finished.
        let line = tokio::select! {
            line = lines.next_line() => Some(line.map_err(|e| format!("stdin: {e}"))?),
            () = tokio::time::sleep(Duration::from_millis(20)) => None,
        };
        for instance in &mut instances {
            instance.settle().await.map_err(|e| e.to_string())?;
        }
        match line {
            None => {}
            Some(None) => break,
            Some(Some(_)) => {
                let count = instances.len();
                let instance = &mut instances[turn % count];
                turn += 1;
                instance.enter().await.map_err(|e| e.to_string())?;
                instance.prompt();
            }
        }
    }
    // End of input: release what is held, stop waiting.
    for instance in &mut instances {
        if let Some(waiting) = instance.waiting.take() {
            waiting.abort();
        }
        if let Some(guard) = instance.held.take() {
            guard.release().await.map_err(|e| e.to_string())?;
            println!("{}: released", instance.name);
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match parse_args() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("console: {message}");
            ExitCode::FAILURE
        }
    }
}
