//! `distlock`: run a command under a cluster-wide lock, and see and manage the
//! locks in production.
//!
//! ```text
//! export DISTLOCK_BACKEND=etcd://backup@10.0.0.5:2379/locks
//! distlock run --password-file /etc/distlock/password --ttl 30s -w 10m backups/db1 -- ./backup.sh
//! distlock status backups/db1 --json
//! distlock list backups/
//! distlock release --force backups/db1 --token 4711
//! distlock hold maintenance/db1      # holds until Ctrl-C or SIGTERM
//! ```
//!
//! `run` starts the command in a process group of its own and stops the whole
//! group (SIGTERM, `--grace`, SIGKILL) when `distlock` gets SIGTERM, SIGINT or
//! SIGHUP and when the lock is lost; it releases the lock only once no process
//! of the group is left. A watchdog process kills the group should `distlock`
//! itself be killed or stopped (see `supervise.rs` and `watchdog.rs`). The exit
//! codes are in `exit.rs` and in `--help`.

/// `println!` that ignores a closed stdout (a dead pipe) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that ignores a closed stderr instead of panicking.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `eprint!` that ignores a closed stderr instead of panicking.
macro_rules! err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

mod backend;
mod exit;
mod ops;
mod signals;
mod supervise;
mod waiting;
mod watchdog;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use distlock::{IfLocked, Wait, parse_duration};

use exit::{EX_USAGE, EXIT_CODES_HELP};

#[derive(Parser, Debug)]
#[command(
    name = "distlock",
    version,
    about = "Run commands under cluster-wide locks, and see and manage the locks",
    after_help = EXIT_CODES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Run COMMAND while holding the lock KEY; release it once COMMAND and every
    /// process it started have exited.
    #[command(after_help = EXIT_CODES_HELP)]
    Run(RunArgs),
    /// Show whether KEY is free or held, and by whom.
    #[command(after_help = EXIT_CODES_HELP)]
    Status(StatusArgs),
    /// List the held locks whose keys start with PREFIX.
    #[command(after_help = EXIT_CODES_HELP)]
    List(ListArgs),
    /// Free a lock a crashed or stuck holder left: deletes exactly the record
    /// shown, and refuses if it changed.
    #[command(after_help = EXIT_CODES_HELP)]
    Release(ReleaseArgs),
    /// Hold KEY until SIGTERM, SIGINT or SIGHUP (like `etcdctl lock KEY`
    /// without a command), for maintenance by hand.
    #[command(after_help = EXIT_CODES_HELP)]
    Hold(HoldArgs),
}

/// Where the locks are: the backend, and its password kept out of the URL.
#[derive(Args, Debug)]
struct BackendArgs {
    /// Backend URL: etcd://[user@]host:port[,host:port][/prefix], etcds://...
    /// (TLS: ?ca=ca.pem&cert=client.pem&key=client.key), ravendb+http://host:port/database,
    /// ravendb+https://... (same TLS options), or memory:// (this process only: for trying
    /// the CLI out).
    #[arg(short, long, env = "DISTLOCK_BACKEND", hide_env_values = true)]
    backend: String,
    /// A file holding the password of the URL's user (etcd). The environment
    /// variable DISTLOCK_PASSWORD may hold the password itself instead.
    #[arg(long, value_name = "PATH")]
    password_file: Option<PathBuf>,
}

/// How to wait for a held lock.
#[derive(Args, Debug)]
struct WaitArgs {
    /// How long the lock survives if this process dies (renewed every ttl/3).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    ttl: Duration,
    /// How long to wait for a held lock: a duration ("90s", "10m"), seconds
    /// ("5"), or "forever" [default: forever; with --if-locked skip: 0s].
    #[arg(short, long, value_name = "DURATION", value_parser = exit::parse_wait)]
    wait: Option<Wait>,
    /// Do not wait: fail at once if the lock is held (same as --if-locked error).
    #[arg(short = 'n', long, conflicts_with_all = ["wait", "if_locked"])]
    no_wait: bool,
    /// What to do when the lock is held after the wait: wait (then fail),
    /// skip (exit 0 without running), error (try once, fail).
    #[arg(
        long,
        value_name = "MODE",
        default_value = IfLocked::default().name(),
        value_parser = PossibleValuesParser::new(IfLocked::ALL.map(IfLocked::name))
            .try_map(|mode| mode.parse::<IfLocked>()),
    )]
    if_locked: IfLocked,
    /// The exit code when the lock is held (after the wait, if any).
    #[arg(short = 'E', long, value_name = "CODE", default_value_t = exit::EX_TEMPFAIL)]
    conflict_exit_code: u8,
    /// Report the time waited and the fencing token on stderr.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    wait: WaitArgs,
    /// How long the command's processes get to exit after SIGTERM before they
    /// are killed (when distlock is signalled or the lock is lost).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    grace: Duration,
    /// Keep the lock at least this long after acquiring it (scheduled jobs).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    hold_at_least: Option<Duration>,
    /// The lock key, such as "backups/db1".
    #[arg(required_unless_present = "key_option")]
    key: Option<String>,
    /// The lock key (the older spelling of KEY).
    #[arg(
        long = "key",
        id = "key_option",
        value_name = "KEY",
        conflicts_with = "key",
        hide = true
    )]
    key_option: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1.., value_name = "COMMAND")]
    command: Vec<OsString>,
}

#[derive(Args, Debug)]
struct StatusArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// The lock key.
    key: String,
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ListArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// Only keys that start with this [default: every key].
    #[arg(default_value = "")]
    prefix: String,
    /// A JSON array on stdout instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ReleaseArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// Required: releasing a lock one does not hold is forcing it.
    #[arg(long)]
    force: bool,
    /// The lock key.
    key: String,
    /// Release only if the lock's fencing token is still N (from `status`).
    #[arg(long, value_name = "N")]
    token: Option<u64>,
    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(short, long)]
    yes: bool,
    /// The outcome as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct HoldArgs {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    wait: WaitArgs,
    /// The lock key.
    key: String,
    /// Print the key and token as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // The watchdog is this same binary, started by `run` (see watchdog.rs).
    if std::env::args_os().nth(1).as_deref() == Some(watchdog::ARG.as_ref()) {
        return watchdog::main();
    }
    if std::env::args_os().nth(1).as_deref() == Some(supervise::EXEC_ARG.as_ref()) {
        return supervise::exec_main();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return match error.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(EX_USAGE),
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            errln!("distlock: cannot start the async runtime: {error}");
            return ExitCode::from(exit::EX_OSERR);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Action::Run(args) => supervise::run(args).await,
            Action::Status(args) => ops::status(args).await,
            Action::List(args) => ops::list(args).await,
            Action::Release(args) => ops::release(args).await,
            Action::Hold(args) => ops::hold(args).await,
        }
    });
    ExitCode::from(code)
}
