//! The watchdog: a second process (this binary, started with [`ARG`]) that
//! kills the command's process group if `distlock run` cannot.
//!
//! `distlock run` cannot stop the command when it is itself killed with
//! SIGKILL, or when it is stopped (SIGSTOP, a frozen VM or container) while
//! its lock runs out. The watchdog covers both. It runs in a process group of
//! its own (a Ctrl-C at the terminal or a signal to the command's group does
//! not reach it), ignores SIGTERM, SIGINT and SIGHUP, and reads lines on its
//! stdin, a pipe from `distlock run`:
//!
//! - `group PGID`: the command's process group, to kill if need be;
//! - `alive MS`: `distlock` will say something again within MS milliseconds.
//!   While the lock is held, MS is the time to the lock's local deadline (plus
//!   a twentieth of the ttl): a stopped `distlock` has its command killed
//!   before another client can take the lock over;
//! - `gone`: the group is empty, or `distlock` will see to it.
//!
//! On end of input without `gone` (`distlock` died), or when the time given by
//! the last `alive` passes, the watchdog sends SIGKILL to the group and exits.
//!
//! What remains: a process that left the group (`setsid`, `setpgid`) is not
//! killed; nor is anything if both processes are killed together (`kill -9`
//! on both, the machine's power, an OOM kill of the cgroup, which takes the
//! command's processes too). The fencing token in `DISTLOCK_TOKEN` is the
//! protection then: the resource rejects writes with an older token.

use std::io::{BufRead, Write};
use std::process::{ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

/// The hidden first argument that starts the watchdog.
pub const ARG: &str = "__distlock-watchdog";

/// `distlock run`'s end of the pipe to the watchdog.
pub struct Watchdog {
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// Starts the watchdog (this executable again).
    pub fn start() -> std::io::Result<Watchdog> {
        use std::os::unix::process::CommandExt;
        // /proc/self/exe still opens when the binary was replaced on disk
        // (an upgrade while `distlock run` waited); the path then does not.
        let exe = std::path::Path::new("/proc/self/exe");
        let mut child = Command::new(exe)
            .arg(ARG)
            // It needs no environment, and must not hold DISTLOCK_PASSWORD.
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(Watchdog {
            stdin: child.stdin.take(),
        })
    }

    fn say(&mut self, line: &str) {
        if let Some(stdin) = &mut self.stdin
            && writeln!(stdin, "{line}").is_err()
        {
            // The watchdog is gone: nothing more to tell it.
            self.stdin = None;
        }
    }

    /// The process group to kill if `distlock` dies.
    pub fn guard(&mut self, pgid: u32) {
        self.say(&format!("group {pgid}"));
    }

    /// `distlock` will write again within `within`.
    pub fn alive(&mut self, within: Duration) {
        self.say(&format!("alive {}", within.as_millis()));
    }

    /// The group is empty: the watchdog may exit without killing anything.
    pub fn gone(&mut self) {
        self.say("gone");
        self.stdin = None;
    }
}

/// The watchdog process.
pub fn main() -> ExitCode {
    // Signals that would end the watchdog before `distlock` is done. Handlers
    // need a runtime to register; they stay registered while it lives.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let _ignored = runtime.as_ref().ok().map(|runtime| {
        runtime.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            [
                SignalKind::terminate(),
                SignalKind::interrupt(),
                SignalKind::hangup(),
            ]
            .map(|kind| signal(kind).ok())
        })
    });

    let (lines, read) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    let mut group: Option<Pid> = None;
    let mut deadline: Option<Instant> = None;
    loop {
        let received = match deadline {
            Some(at) => read.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => read.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let why = match received {
            Ok(line) => {
                let mut words = line.split_whitespace();
                match (
                    words.next(),
                    words.next().and_then(|n| n.parse::<u64>().ok()),
                ) {
                    (Some("group"), Some(pgid)) => {
                        group = i32::try_from(pgid).ok().and_then(Pid::from_raw);
                    }
                    (Some("alive"), Some(ms)) => {
                        deadline = Instant::now().checked_add(Duration::from_millis(ms));
                    }
                    (Some("gone"), _) => return ExitCode::SUCCESS,
                    _ => {}
                }
                continue;
            }
            Err(RecvTimeoutError::Timeout) => "stopped answering while its lock ran out",
            Err(RecvTimeoutError::Disconnected) => "died",
        };
        if let Some(pgid) = group {
            let _ = kill_process_group(pgid, Signal::KILL);
            errln!(
                "distlock watchdog: distlock {why}: killed the command's process group {}",
                pgid.as_raw_nonzero()
            );
        }
        return ExitCode::SUCCESS;
    }
}
