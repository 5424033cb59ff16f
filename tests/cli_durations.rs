//! `distlock run` with huge or garbage durations (`--wait`, `--ttl`,
//! `--hold-at-least`) on the memory backend: the tool must never panic (exit
//! code 101); it either runs the command or exits with a message that names
//! the option or says the duration is wrong.
//!
//! Run: `cargo test --features cli --test cli_durations` (no server needed).
#![cfg(feature = "cli")]

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs `distlock run --backend memory:// --key k ARGS -- true`. If it has not
/// exited after `patience`, it gets SIGTERM (by its PID; `true` returns at once,
/// so only a long `--hold-at-least` keeps it), then SIGKILL 10 s later.
/// Returns its output and whether it had to be signalled.
fn distlock_for(args: &[String], patience: Duration) -> (Output, bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_distlock"))
        .args(["run", "--backend", "memory://", "--key", "cli/durations"])
        .args(args)
        .args(["--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run distlock: {e}"));
    let exited = |child: &mut std::process::Child, within: Duration| {
        let polls = within.as_millis() / 10;
        for _ in 0..polls {
            match child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("waiting for distlock: {e}"),
            }
        }
        matches!(child.try_wait(), Ok(Some(_)))
    };
    let mut signalled = false;
    if !exited(&mut child, patience) {
        signalled = true;
        testkit::process::signal(child.id(), "-TERM");
        if !exited(&mut child, Duration::from_secs(10)) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "distlock {args:?} did not exit within 10 s of SIGTERM (pid {})",
                child.id()
            );
        }
    }
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("collecting distlock's output: {e}"));
    (output, signalled)
}

/// [`distlock_for`] with 30 s of patience, for runs that must end by themselves.
fn distlock(args: &[String]) -> Output {
    let (output, signalled) = distlock_for(args, Duration::from_secs(30));
    assert!(!signalled, "distlock {args:?} did not exit within 30 s");
    output
}

/// No panic; success, or a failure whose message is about the duration.
///
/// A `--hold-at-least` long enough to keep the lock after the command gets
/// SIGTERM after 2 s: it must then exit 143 and say that it was holding.
fn check(option: &str, value: &str) -> Result<(), String> {
    let args = [format!("{option}={value}")];
    let holding = option == "--hold-at-least";
    let patience = Duration::from_secs(if holding { 2 } else { 30 });
    let (out, signalled) = distlock_for(&args, patience);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    if signalled {
        let said = stderr.contains("hold-at-least");
        return match (holding, code) {
            (true, Some(143)) if said => Ok(()),
            _ => Err(format!(
                "distlock {args:?} did not exit within {patience:?}; after SIGTERM it exited \
                 {code:?}:\n{stderr}"
            )),
        };
    }
    if code == Some(101) || stderr.contains("panicked") {
        return Err(format!(
            "distlock {args:?} panicked (exit {code:?}):\n{stderr}"
        ));
    }
    let Some(code) = code else {
        return Err(format!(
            "distlock {args:?} was killed by a signal:\n{stderr}"
        ));
    };
    if code != 0 {
        let name = option.trim_start_matches("--");
        let word = name.split('-').next().unwrap_or(name);
        let clear = stderr.contains(name) || stderr.contains(word) || stderr.contains("duration");
        if !clear {
            return Err(format!(
                "distlock {args:?} exited {code} without naming {option} or the duration:\n{stderr}"
            ));
        }
    }
    Ok(())
}

const HUGE: &[&str] = &[
    "18446744073709551615s",
    "18446744073709551616s",
    "99999999999999999999999s",
    "9223372036854775807s",
    "584542046090years 7months 15days 17h 5m 3s 999ms 999us 999ns",
    "5000000000000s",
    "213503982334601d",
    "18446744073709551615ms",
    // Found by an earlier random run (with --hold-at-least): seconds just under i64::MAX.
    "9223372036854773282s",
];

const GARBAGE: &[&str] = &[
    "",
    " ",
    "-1s",
    "soon",
    "1e9s",
    "5",
    "0x10s",
    "forever forever",
    "1.5.5s",
];

#[test]
fn huge_and_garbage_waits_do_not_panic() {
    let failures: Vec<String> = HUGE
        .iter()
        .chain(GARBAGE)
        .filter_map(|value| check("--wait", value).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn huge_and_garbage_ttls_do_not_panic() {
    let failures: Vec<String> = HUGE
        .iter()
        .chain(GARBAGE)
        .chain(&["0s", "1ms", "29ms"])
        .filter_map(|value| check("--ttl", value).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn huge_and_garbage_holds_do_not_panic() {
    let failures: Vec<String> = HUGE
        .iter()
        .chain(GARBAGE)
        .filter_map(|value| check("--hold-at-least", value).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn ordinary_durations_run_the_command() {
    for args in [
        vec!["--wait=5s".to_owned(), "--ttl=2s".to_owned()],
        vec![
            "--wait=forever".to_owned(),
            "--hold-at-least=10ms".to_owned(),
        ],
        vec!["--wait=0s".to_owned()],
    ] {
        let out = distlock(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // And the check can fail: a value clap refuses is a usage error (64), naming the option.
    let out = distlock(&["--wait=soon".to_owned()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--wait"));
}

/// Random duration arguments, drawn like a property test (48 cases: each starts a
/// process). The generator is fastrand, not proptest, so that proptest is not a
/// dev-dependency of this package and not built for its examples; there is no
/// shrinking, so a failure prints the seed and the exact argument. Replay a run with
/// `DISTLOCK_CLI_SEED=N`.
#[test]
fn any_duration_argument_does_not_panic() {
    const UNITS: &[&str] = &["ns", "us", "ms", "s", "m", "h", "d", "w", "y", "years"];
    let seed = std::env::var("DISTLOCK_CLI_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        });
    println!("cli durations: seed {seed} (DISTLOCK_CLI_SEED)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut failures = Vec::new();
    for _ in 0..48 {
        let option = ["--wait", "--ttl", "--hold-at-least"][rng.usize(..3)];
        let value = match rng.u8(..3) {
            // Seconds past `i64::MAX` overflow an `Instant`; humantime takes up to `u64::MAX`.
            0 => {
                let n = if rng.bool() {
                    rng.u64(..)
                } else {
                    rng.u64(i64::MAX as u64..=u64::MAX)
                };
                let unit = ["s", "s", "s", "ms", "ns", "h"][rng.usize(..6)];
                format!("{n}{unit}")
            }
            // 12 to 24 digits and any unit.
            1 => {
                let digits: String = (0..rng.usize(12..=24)).map(|_| rng.digit(10)).collect();
                format!("{digits}{}", UNITS[rng.usize(..UNITS.len())])
            }
            // Up to 12 characters but NUL (which no argument can hold): half of them
            // printable ASCII (digits, units, signs, dots), half from all of Unicode.
            _ => (0..rng.usize(..=12))
                .map(|_| {
                    if rng.bool() {
                        rng.char(' '..='~')
                    } else {
                        rng.char('\u{1}'..=char::MAX)
                    }
                })
                .collect(),
        };
        if let Err(failure) = check(option, &value) {
            failures.push(format!("seed {seed}: {failure}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
