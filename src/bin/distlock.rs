//! `distlock run`: runs a shell command while holding a cluster-wide lock.
//!
//! ```text
//! distlock run --backend etcd://127.0.0.1:2379 --key backups/db1 --ttl 30s --wait 10m -- ./backup.sh
//! distlock run --backend ravendb+http://10.0.0.5:8080/locks --key cron/report --if-locked skip -- make report
//! ```
//!
//! The command gets `DISTLOCK_KEY` and `DISTLOCK_TOKEN` (the fencing token) in
//! its environment. If the lock is lost while it runs, the command is killed
//! (SIGKILL) and `distlock` exits with 70. Exit codes: the command's own code
//! (128 + signal if it was killed by one); 0 when skipped (`--if-locked skip`);
//! 75 when the lock was busy or the wait ran out; 69 when the backend is
//! unreachable or failed; 70 when the lock was lost; 64 for bad usage or
//! configuration; 130 on Ctrl-C.

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use distlock::{IfLocked, LockClient, LockError, LockOptions, Wait, parse_duration};
use tokio::process::Command;

#[derive(Parser, Debug)]
#[command(
    name = "distlock",
    version,
    about = "Run commands under cluster-wide locks"
)]
struct Cli {
    #[command(subcommand)]
    command: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Run COMMAND while holding the lock KEY; release it when COMMAND exits.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Backend URL: etcd://host:port[,host:port][/prefix], etcds://...,
    /// ravendb+http://host:port/database, ravendb+https://..., or memory://
    /// (this process only: useful for trying the CLI out).
    #[arg(long, env = "DISTLOCK_BACKEND")]
    backend: String,
    /// The lock key, such as "backups/db1".
    #[arg(long)]
    key: String,
    /// How long the lock survives if this process dies (renewed every ttl/3).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    ttl: Duration,
    /// How long to wait for the lock: "forever", a duration, or "0s" to try
    /// once [default: forever; with --if-locked skip: 0s; --if-locked error
    /// always tries once].
    #[arg(long)]
    wait: Option<Wait>,
    /// What to do when the lock is held after the wait: wait (then fail),
    /// skip (exit 0 without running), error (try once, fail).
    #[arg(
        long,
        default_value = IfLocked::default().name(),
        value_parser = PossibleValuesParser::new(IfLocked::ALL.map(IfLocked::name))
            .try_map(|mode| mode.parse::<IfLocked>()),
    )]
    if_locked: IfLocked,
    /// Keep the lock at least this long after acquiring it (scheduled jobs).
    #[arg(long, value_parser = parse_duration)]
    hold_at_least: Option<Duration>,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<OsString>,
}

const EX_USAGE: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;
const EX_SOFTWARE: u8 = 70;
const EX_TEMPFAIL: u8 = 75;

fn exit_code(error: &LockError) -> u8 {
    match error {
        LockError::Busy { .. } | LockError::Timeout { .. } => EX_TEMPFAIL,
        LockError::Lost { .. } => EX_SOFTWARE,
        LockError::InvalidKey { .. } | LockError::Config { .. } => EX_USAGE,
        _ => EX_UNAVAILABLE,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Action::Run(args) = Cli::parse().command;
    match run(args).await {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("distlock: {error}");
            ExitCode::from(exit_code(&error))
        }
    }
}

async fn run(args: RunArgs) -> Result<u8, LockError> {
    let client = LockClient::connect(&args.backend)?;
    let defaults = LockOptions::default();
    // The attribute's mapping: skip tries once unless given a wait, error always does.
    let wait = args.if_locked.wait(args.wait, defaults.wait);
    let mut options = defaults.ttl(args.ttl).wait(wait);
    if let Some(hold) = args.hold_at_least {
        options = options.hold_at_least(hold);
    }
    let guard = match client.acquire_with(&args.key, &options).await {
        Ok(guard) => guard,
        Err(error) if args.if_locked == IfLocked::Skip && error.is_contention() => {
            eprintln!("distlock: skipped: {error}");
            return Ok(0);
        }
        Err(error) => return Err(error),
    };

    let (program, rest) = match args.command.split_first() {
        Some(split) => split,
        None => {
            return Err(LockError::Config {
                message: "no command given".into(),
                source: None,
            });
        }
    };
    let mut child = match Command::new(program)
        .args(rest)
        .env("DISTLOCK_KEY", &args.key)
        .env("DISTLOCK_TOKEN", guard.token().to_string())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            let _ = guard.release().await;
            return Err(LockError::Config {
                message: format!("cannot start {program:?}: {error}"),
                source: Some(Box::new(error)),
            });
        }
    };

    tokio::select! {
        status = child.wait() => {
            let released = guard.release().await;
            let status = status.map_err(|error| LockError::Config {
                message: format!("lost track of {program:?}: {error}"),
                source: Some(Box::new(error)),
            })?;
            if let Err(error) = released {
                eprintln!("distlock: the command finished but the release failed: {error}");
            }
            Ok(status_code(status))
        }
        reason = guard.lost() => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(LockError::Lost { key: args.key.clone(), token: guard.token(), reason })
        }
        _ = tokio::signal::ctrl_c() => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let _ = guard.release().await;
            Ok(130)
        }
    }
}

fn status_code(status: std::process::ExitStatus) -> u8 {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from(128 + signal).unwrap_or(u8::MAX);
        }
    }
    status
        .code()
        .and_then(|code| u8::try_from(code).ok())
        .unwrap_or(1)
}
