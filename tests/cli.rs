//! The `distlock run` command-line tool against a real etcd node: separate
//! processes exclude each other, skip and error modes, and the fencing token
//! handed to the command.
//!
//! Run: `cargo test --features cli,etcd --test cli` (needs `scripts/etcd.sh`).
#![cfg(all(feature = "cli", feature = "etcd"))]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::etcd::Cluster as EtcdCluster;

fn distlock(backend: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_distlock"));
    command.arg("run").arg("--backend").arg(backend).args(args);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

fn output(mut command: Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run distlock: {e}"))
}

fn log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn concurrent_processes_run_the_command_one_at_a_time() {
    let etcd = EtcdCluster::single();
    let backend = format!(
        "etcd://{}",
        etcd.client_url(0).trim_start_matches("http://")
    );
    let dir = tempdir();
    let log = dir.join("log");
    let script = format!(
        "echo start >> {0}; sleep 0.3; echo end >> {0}",
        log.display()
    );
    let children: Vec<_> = (0..4)
        .map(|_| {
            distlock(
                &backend,
                &[
                    "--key",
                    "cli/exclusive",
                    "--ttl",
                    "5s",
                    "--",
                    "sh",
                    "-c",
                    &script,
                ],
            )
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}"))
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 8, "{lines:?}");
    for pair in lines.chunks(2) {
        assert_eq!(pair, ["start", "end"], "two commands overlapped: {lines:?}");
    }
}

#[test]
fn skip_and_error_modes_do_not_run_the_command_while_held() {
    let etcd = EtcdCluster::single();
    let backend = format!(
        "etcd://{}",
        etcd.client_url(0).trim_start_matches("http://")
    );
    let dir = tempdir();
    let marker = dir.join("ran");
    let holder = distlock(&backend, &["--key", "cli/held", "--", "sleep", "2"])
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // Wait until the holder has the lock (its command is running).
    let started = Instant::now();
    loop {
        let probe = output(distlock(
            &backend,
            &["--key", "cli/held", "--if-locked", "error", "--", "true"],
        ));
        if probe.status.code() == Some(75) || started.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let touch = format!("touch {}", marker.display());
    let skipped = output(distlock(
        &backend,
        &[
            "--key",
            "cli/held",
            "--if-locked",
            "skip",
            "--",
            "sh",
            "-c",
            &touch,
        ],
    ));
    assert_eq!(
        skipped.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&skipped.stderr)
    );
    assert!(String::from_utf8_lossy(&skipped.stderr).contains("skipped"));
    let busy = output(distlock(
        &backend,
        &[
            "--key",
            "cli/held",
            "--if-locked",
            "error",
            "--",
            "sh",
            "-c",
            &touch,
        ],
    ));
    assert_eq!(busy.status.code(), Some(75));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("cli/held"));
    assert!(
        !marker.exists(),
        "the command must not run while the lock is held"
    );
    let out = holder.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
}

#[test]
fn the_command_gets_key_and_growing_fencing_tokens() {
    let etcd = EtcdCluster::single();
    let backend = format!(
        "etcd://{}",
        etcd.client_url(0).trim_start_matches("http://")
    );
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let out = output(distlock(
            &backend,
            &[
                "--key",
                "cli/token",
                "--",
                "sh",
                "-c",
                "echo $DISTLOCK_KEY $DISTLOCK_TOKEN; exit 7",
            ],
        ));
        assert_eq!(
            out.status.code(),
            Some(7),
            "the command's exit code is passed through"
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let mut words = text.split_whitespace();
        assert_eq!(words.next(), Some("cli/token"));
        let token: u64 = words
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no token in {text:?}"));
        tokens.push(token);
    }
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens must grow: {tokens:?}"
    );
}

#[test]
fn a_paused_holder_loses_the_lock_and_its_command_is_killed() {
    let etcd = EtcdCluster::single();
    let backend = format!(
        "etcd://{}",
        etcd.client_url(0).trim_start_matches("http://")
    );
    let mut holder = distlock(
        &backend,
        &["--key", "cli/paused", "--ttl", "1s", "--", "sleep", "30"],
    )
    .spawn()
    .unwrap_or_else(|e| panic!("{e}"));
    let pid = holder.id().to_string();
    std::thread::sleep(Duration::from_millis(500));
    signal("-STOP", &pid);
    // Paused past its ttl: the server expires its lease and another process
    // gets the lock.
    let started = Instant::now();
    let other = output(distlock(
        &backend,
        &[
            "--key",
            "cli/paused",
            "--ttl",
            "1s",
            "--wait",
            "10s",
            "--",
            "true",
        ],
    ));
    let waited = started.elapsed();
    signal("-CONT", &pid);
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert!(
        waited >= Duration::from_millis(400),
        "the lock was free after {waited:?}, before the ttl ran out"
    );
    // Resumed, the holder finds its lease gone, kills its command and says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = holder.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break status;
        }
        if Instant::now() > deadline {
            let _ = holder.kill();
            panic!("a holder that lost its lock must stop its command");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(70));
    let mut stderr = String::new();
    if let Some(mut pipe) = holder.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(stderr.contains("lost lock `cli/paused`"), "{stderr}");
}

fn signal(which: &str, pid: &str) {
    let status = Command::new("kill")
        .args([which, pid])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(status.success());
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "distlock-cli-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}
