//! `distlock run` against `etcdctl lock` as whole processes, on one local etcd node
//! (started here on free loopback ports): what an operator's cron job or shell script
//! pays per locked command.
//!
//! Each round runs every variant once, rotating which goes first, so noise from other
//! processes on the machine hits them alike; a few warm-up rounds are discarded. Each
//! sample is one process, timed from spawn to exit:
//!
//! - `distlock run --backend etcd://127.0.0.1:PORT K -- true` and
//!   `ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:PORT lock K true`: the comparison
//!   (target: distlock no slower, `etcdctl / distlock >= 1.00x`);
//! - where distlock's time goes: `distlock --version` (process start and argument
//!   parsing alone), `distlock run --backend memory:// K -- true` (also the Tokio
//!   runtime, the lock engine and spawning and reaping the command, no network), and
//!   `true` itself (one fork+exec+wait from here, the floor of any of them);
//! - `etcdctl version`: etcdctl's own process start, for the same split on its side.
//!
//! Run: `cargo bench --features cli,etcd --bench cli` (needs `scripts/etcd.sh`);
//! `... --bench cli -- 100` for 100 measured rounds instead of 30.

use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::etcd::Cluster as EtcdCluster;
use testkit::stats::{ms, percentile};

const WARMUP_ROUNDS: usize = 3;
const DEFAULT_ROUNDS: usize = 30;
const DISTLOCK: &str = env!("CARGO_BIN_EXE_distlock");

/// One thing to run as a process, once per round.
struct Variant {
    name: &'static str,
    program: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
    samples: Vec<Duration>,
}

impl Variant {
    fn new(name: &'static str, program: &'static str, args: &[&str]) -> Variant {
        Variant {
            name,
            program,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: Vec::new(),
            samples: Vec::new(),
        }
    }

    fn env(mut self, name: &'static str, value: &'static str) -> Variant {
        self.env.push((name, value));
        self
    }

    /// Runs it once and returns the time from spawn to exit; panics unless it exits 0.
    fn run_once(&self) -> Duration {
        let mut command = Command::new(self.program);
        command
            .args(self.args.iter().map(OsStr::new))
            .env_remove("DISTLOCK_BACKEND")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let started = Instant::now();
        let output = match command.output() {
            Ok(output) => output,
            Err(e) => panic!("cannot run {} ({}): {e}", self.name, self.program),
        };
        let took = started.elapsed();
        assert!(
            output.status.success(),
            "{} failed ({}): {}",
            self.name,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        took
    }
}

/// The profile the `distlock` binary was built with: the directory cargo put it in
/// (`release` for `cargo bench`), and whether debug assertions are on in this build
/// (the bench and the binary share the profile).
fn build_profile() -> String {
    let dir = std::path::Path::new(DISTLOCK)
        .parent()
        .and_then(|p| p.file_name())
        .map_or_else(|| "?".to_owned(), |d| d.to_string_lossy().into_owned());
    let assertions = if cfg!(debug_assertions) { "on" } else { "off" };
    format!("target/{dir} (debug assertions {assertions})")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_owned())
}

fn main() {
    // `cargo bench` passes `--bench`; a bare number is the count of measured rounds.
    let rounds = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_ROUNDS);

    let etcd = EtcdCluster::single();
    let port = etcd.client_port(0);
    let backend = format!("etcd://127.0.0.1:{port}");
    let endpoints = format!("--endpoints=127.0.0.1:{port}");
    let run = |backend: &str, key: &str| {
        Variant::new(
            "",
            DISTLOCK,
            &["run", "--backend", backend, key, "--", "true"],
        )
    };
    let mut variants = vec![
        Variant {
            name: "distlock run (etcd)",
            ..run(&backend, "bench/cli-distlock")
        },
        Variant::new(
            "etcdctl lock",
            "etcdctl",
            &[&endpoints, "lock", "bench/cli-etcdctl", "true"],
        )
        .env("ETCDCTL_API", "3"),
        Variant::new("distlock --version", DISTLOCK, &["--version"]),
        Variant {
            name: "distlock run (memory://)",
            ..run("memory://", "bench/cli-memory")
        },
        Variant::new("etcdctl version", "etcdctl", &["version"]).env("ETCDCTL_API", "3"),
        Variant::new("true", "true", &[]),
    ];

    let n = variants.len();
    for round in 0..WARMUP_ROUNDS + rounds {
        for turn in 0..n {
            let variant = &mut variants[(round + turn) % n];
            let took = variant.run_once();
            if round >= WARMUP_ROUNDS {
                variant.samples.push(took);
            }
        }
    }
    drop(etcd);

    println!(
        "whole processes, one local etcd node, {rounds} rounds (after {WARMUP_ROUNDS} warm-up), \
         interleaved round by round; distlock built in {}; load average {}",
        build_profile(),
        load_average()
    );
    println!(
        "  {:<26} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "ms per process", "median", "p10", "p90", "min", "max"
    );
    let mut medians = Vec::new();
    for variant in &mut variants {
        let samples = &mut variant.samples;
        let median = percentile(samples, 0.5);
        println!(
            "  {:<26} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            variant.name,
            ms(median),
            ms(percentile(samples, 0.1)),
            ms(percentile(samples, 0.9)),
            ms(percentile(samples, 0.0)),
            ms(percentile(samples, 1.0)),
        );
        medians.push(median.as_secs_f64());
    }
    let [distlock, etcdctl, version, memory, etcdctl_version, floor] = medians[..] else {
        unreachable!("six variants");
    };
    println!(
        "ratio etcdctl lock / distlock run median: {:.2}x (target >= 1.00x: distlock no slower)",
        etcdctl / distlock
    );
    println!(
        "distlock run (etcd), split by medians: process start {:.2} ms (--version), \
         runtime + engine + command {:.2} ms (memory:// minus --version), \
         etcd {:.2} ms (etcd minus memory://); `true` alone {:.2} ms",
        version * 1e3,
        (memory - version) * 1e3,
        (distlock - memory) * 1e3,
        floor * 1e3
    );
    println!(
        "etcdctl lock, split by medians: process start {:.2} ms (etcdctl version), \
         the rest {:.2} ms",
        etcdctl_version * 1e3,
        (etcdctl - etcdctl_version) * 1e3
    );
}
