//! The `distlock` command-line tool driven as an operator drives it (cron, systemd,
//! Kubernetes, a shell), on a real etcd node (issue 10, interface in the CLI spec):
//!
//! - signals to `distlock run`: SIGTERM, SIGINT and SIGHUP while it holds the lock stop
//!   the command's whole process group (SIGTERM, `--grace`, SIGKILL) before the lock is
//!   released; while it waits they stop the wait and the command never runs;
//! - a lost lock (etcd frozen with SIGSTOP past the ttl) stops the whole group, exit 70;
//! - a SIGKILLed `distlock` takes its command's group down with it, and a stopped one's
//!   group is killed (by its watchdog) before another holder gets the lock;
//! - credentials stay out of `--help`, errors and the command's environment; the
//!   `--password-file` and `DISTLOCK_PASSWORD` forms work;
//! - the operator commands `status`, `list`, `release --force` and `hold`, their JSON
//!   output parsed;
//! - the documented exit codes (64 usage, 69 backend not answering, 75 or `-E` busy,
//!   126/127 command not executable/not found, 128+N signals).
//!
//! Every process a test starts is SIGKILLed by PID when the test ends, also when it
//! fails: the `distlock` processes through [`Proc`], the processes their commands start
//! through the PIDs the commands write to a file ([`KillPidOnDrop`]). Waits are bounded;
//! the only assertions on time are lower bounds (something lasted at least so long).
//!
//! Run: `cargo test --features cli,etcd --test cli_operator` (needs `scripts/etcd.sh`).
#![cfg(all(feature = "cli", feature = "etcd"))]
// serde_json: the `cli` feature's own dependency (it writes the --json output).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use testkit::etcd::Cluster as EtcdCluster;
use testkit::process::{KillPidOnDrop, signal};

/// Upper bound on waiting for a `distlock` process to exit once it has every reason to.
const EXIT_WAIT: Duration = Duration::from_secs(30);
/// Upper bound on waiting for a process to start and reach a given point.
const START_WAIT: Duration = Duration::from_secs(20);
/// How often the bounded waits look again.
const POLL: Duration = Duration::from_millis(20);

/// One etcd node for one test, and the backend URL the CLI gets for it.
struct Etcd {
    cluster: EtcdCluster,
    backend: String,
}

fn etcd() -> Etcd {
    let cluster = EtcdCluster::single();
    let backend = format!("etcd://127.0.0.1:{}", cluster.client_port(0));
    Etcd { cluster, backend }
}

impl Etcd {
    fn port(&self) -> u16 {
        self.cluster.client_port(0)
    }
}

/// SIGCONTs etcd when dropped, so that a failing lock-loss test does not leave it
/// stopped (the cluster's own drop SIGKILLs it anyway).
struct ResumeOnDrop<'a>(&'a EtcdCluster);

impl Drop for ResumeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.resume(0);
    }
}

/// A directory of its own for one test's files, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "distlock-cli-operator-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Scratch(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `distlock ARGS` with stdin empty and none of the caller's `DISTLOCK_*` variables.
fn distlock(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_distlock"));
    command
        .args(args)
        .env_remove("DISTLOCK_BACKEND")
        .env_remove("DISTLOCK_PASSWORD")
        .env_remove("DISTLOCK_KEY")
        .env_remove("DISTLOCK_TOKEN")
        .stdin(Stdio::null());
    command
}

/// A `distlock` process started by the test. Its stdout and stderr go to files, not
/// pipes: the command's own children would keep a pipe open after `distlock` exits.
/// SIGKILLed (by its PID) and reaped when dropped.
struct Proc {
    child: Child,
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

fn spawn(mut command: Command, dir: &Scratch, label: &str) -> Proc {
    let stdout = dir.path(&format!("{label}.stdout"));
    let stderr = dir.path(&format!("{label}.stderr"));
    let create = |path: &Path| {
        File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
    };
    let child = command
        .stdout(create(&stdout))
        .stderr(create(&stderr))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start distlock ({label}): {e}"));
    Proc {
        child,
        label: label.to_owned(),
        stdout,
        stderr,
        status: None,
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Its exit status if it has exited.
    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("waiting for distlock ({}): {e}", self.label));
        }
        self.status
    }

    /// Fails the test (with its output) if it has exited already.
    fn assert_running(&mut self) {
        if let Some(status) = self.try_status() {
            panic!(
                "distlock ({}) exited early with {}\n{}",
                self.label,
                describe(status),
                self.output()
            );
        }
    }

    /// Waits, at most `limit`, for it to exit.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "distlock ({}) did not exit within {limit:?}\n{}",
                    self.label,
                    self.output()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Still running (a failed test): its children too (its command, a watchdog), by
        // the PIDs it has now; they would outlive it otherwise.
        let running = self.status.is_none() && matches!(self.child.try_wait(), Ok(None));
        let children = if running {
            children(self.pid())
        } else {
            Vec::new()
        };
        // std's kill is SIGKILL on Unix, sent to this PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop(children.into_iter().map(KillPidOnDrop).collect::<Vec<_>>());
    }
}

/// The PIDs of the live processes whose parent is `parent`.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    // ") STATE PPID ..."
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .filter(|&pid| alive(pid))
        .collect()
}

/// A finished `distlock` run.
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Everything it said, for failure messages and for checking that a secret is absent.
    fn all(&self) -> String {
        format!(
            "{} --- stdout ---\n{}--- stderr ---\n{}",
            describe(self.status),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `command` to its end (at most [`EXIT_WAIT`]).
fn run(command: Command, dir: &Scratch, label: &str) -> Outcome {
    let mut proc = spawn(command, dir, label);
    let status = proc.wait(EXIT_WAIT);
    Outcome {
        status,
        stdout: proc.stdout(),
        stderr: proc.stderr(),
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => format!("{status:?}"),
    }
}

/// Waits, at most `limit`, until `done()`; fails the test naming `what` otherwise.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(POLL);
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The PIDs a command wrote to `path`, one a line (a line still being written is skipped).
fn pids(path: &Path) -> Vec<u32> {
    lines(path)
        .iter()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Whether process `pid` exists and is not a zombie (a zombie runs nothing any more;
/// orphans wait as zombies until whoever inherits them reaps them).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "PID (COMM) STATE ...": COMM may hold spaces and parentheses, STATE follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// Whether process `pid` has an established TCP connection to 127.0.0.1:`port`.
fn connected_to(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let sockets: HashSet<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some(inode.to_owned())
        })
        .collect();
    let remote = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        fields.len() > 9 && fields[2] == remote && fields[3] == "01" && sockets.contains(fields[9])
    })
}

/// Waits until `proc` (a `distlock` that should be waiting for a held lock) has
/// connected to etcd and is still running, then a little longer so that it is in its
/// wait (its signal handling set up) rather than starting.
fn wait_until_waiting(proc: &mut Proc, etcd: &Etcd) {
    let pid = proc.pid();
    let port = etcd.port();
    wait_for(
        &format!("distlock ({}) connecting to etcd", proc.label),
        START_WAIT,
        || {
            proc.assert_running();
            connected_to(pid, port)
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    proc.assert_running();
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// `distlock run --backend B --ttl 5s KEY -- sh -c 'echo $$ > PIDFILE; exec sleep 60'`,
/// returned once its command runs (so the lock is held), with a guard on the command's PID.
fn holding_run(etcd: &Etcd, dir: &Scratch, key: &str, label: &str) -> (Proc, KillPidOnDrop) {
    let pid_file = dir.path(&format!("{label}.pid"));
    let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let mut proc = spawn(
        distlock(&[
            "run",
            "--backend",
            &etcd.backend,
            "--ttl",
            "5s",
            key,
            "--",
            "sh",
            "-c",
            &script,
        ]),
        dir,
        label,
    );
    let mut pid = None;
    wait_for(
        &format!("the command of distlock ({label}) starting"),
        START_WAIT,
        || {
            proc.assert_running();
            pid = pids(&pid_file).first().copied();
            pid.is_some()
        },
    );
    let pid = pid.unwrap_or_else(|| unreachable!("waited for it"));
    (proc, KillPidOnDrop(pid))
}

/// `distlock hold --backend B --ttl 5s KEY`, returned once it printed `KEY token N`,
/// with N.
fn hold(etcd: &Etcd, dir: &Scratch, key: &str, label: &str) -> (Proc, u64) {
    let mut proc = spawn(
        distlock(&["hold", "--backend", &etcd.backend, "--ttl", "5s", key]),
        dir,
        label,
    );
    let prefix = format!("{key} token ");
    let mut token = None;
    wait_for(
        &format!("distlock hold ({label}) printing `{prefix}N`"),
        START_WAIT,
        || {
            proc.assert_running();
            token = proc.stdout().lines().find_map(|line| {
                line.strip_prefix(&prefix)
                    .and_then(|n| n.trim().parse::<u64>().ok())
            });
            token.is_some()
        },
    );
    let token = token.unwrap_or_else(|| unreachable!("waited for it"));
    (proc, token)
}

/// `distlock status --backend B KEY --json`, parsed.
fn status_json(etcd: &Etcd, dir: &Scratch, key: &str) -> Value {
    let out = run(
        distlock(&["status", "--backend", &etcd.backend, key, "--json"]),
        dir,
        "status",
    );
    assert_eq!(out.code(), Some(0), "status {key}: {}", out.all());
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("status {key} --json is not JSON ({e}): {}", out.all()))
}

/// Whether `distlock run -n KEY -- true` gets the lock (exit 0) now.
fn is_free(etcd: &Etcd, dir: &Scratch, key: &str) -> bool {
    let out = run(
        distlock(&["run", "--backend", &etcd.backend, "-n", key, "--", "true"]),
        dir,
        "probe",
    );
    match out.code() {
        Some(0) => true,
        Some(75) => false,
        _ => panic!("probing {key} with run -n: {}", out.all()),
    }
}

// ---------------------------------------------------------------------------------
// Signals, grace, lost locks
// ---------------------------------------------------------------------------------

/// A `sh` that ignores SIGTERM, with a child and a grandchild that ignore it too (an
/// ignored signal stays ignored across fork and exec); it writes the four PIDs to
/// `pid_file` and waits.
fn stubborn_group_script(pid_file: &Path) -> String {
    format!(
        "trap '' TERM\n\
         echo $$ >> {p}\n\
         sleep 60 & echo $! >> {p}\n\
         ( sleep 60 & echo $! >> {p}; wait ) & echo $! >> {p}\n\
         wait",
        p = pid_file.display()
    )
}

/// A script for the next holder's command: the moment it holds the lock, it writes
/// `alive PID STATE` to `seen` for each PID in `pid_file` that is still alive (not a
/// zombie), then `ran`.
fn alive_check_script(pid_file: &Path, seen: &Path) -> String {
    format!(
        "for p in $(cat {pids}); do\n\
           s=$(sed -e 's/.*) //' /proc/$p/stat 2>/dev/null | cut -c1)\n\
           case \"$s\" in ''|Z|X) ;; *) echo \"alive $p $s\" >> {seen} ;; esac\n\
         done\n\
         echo ran >> {seen}",
        pids = pid_file.display(),
        seen = seen.display()
    )
}

#[test]
fn sigterm_while_holding_stops_the_whole_group_before_the_next_holder_gets_in() {
    let etcd = etcd();
    let dir = Scratch::new("term");
    let key = "ops/term";
    let pid_file = dir.path("pids");
    let seen = dir.path("seen");
    let mut first = spawn(
        distlock(&[
            "run",
            "--backend",
            &etcd.backend,
            "--ttl",
            "5s",
            "--grace",
            "1s",
            key,
            "--",
            "sh",
            "-c",
            &stubborn_group_script(&pid_file),
        ]),
        &dir,
        "first",
    );
    wait_for(
        "the first command and its children starting",
        START_WAIT,
        || {
            first.assert_running();
            pids(&pid_file).len() == 4
        },
    );
    let group = pids(&pid_file);
    let _guards: Vec<KillPidOnDrop> = group.iter().copied().map(KillPidOnDrop).collect();
    assert!(
        group.iter().all(|&pid| alive(pid)),
        "the first command's processes {group:?} should all run"
    );

    // The second run's command looks, the moment it holds the lock, for any process of
    // the first command still alive (not a zombie), and writes what it finds.
    let check = alive_check_script(&pid_file, &seen);
    let mut second = spawn(
        distlock(&[
            "run",
            "--backend",
            &etcd.backend,
            "--ttl",
            "5s",
            "-w",
            "30s",
            key,
            "--",
            "sh",
            "-c",
            &check,
        ]),
        &dir,
        "second",
    );
    wait_until_waiting(&mut second, &etcd);
    assert!(
        !seen.exists(),
        "the second command ran while the first held the lock"
    );

    first.signal("-TERM");
    let first_status = first.wait(EXIT_WAIT);
    let second_status = second.wait(EXIT_WAIT);
    let still_alive: Vec<u32> = group.iter().copied().filter(|&p| alive(p)).collect();

    assert_eq!(
        lines(&seen),
        ["ran"],
        "when the second run got the lock, processes of the first command's group \
         {group:?} were still alive (first: {}, second: {})\nfirst:\n{}",
        describe(first_status),
        describe(second_status),
        first.output()
    );
    assert!(
        still_alive.is_empty(),
        "processes {still_alive:?} of the first command's group outlived it"
    );
    assert_eq!(
        first_status.code(),
        Some(143),
        "a SIGTERMed distlock run exits 143: {}\n{}",
        describe(first_status),
        first.output()
    );
    assert_eq!(
        second_status.code(),
        Some(0),
        "the second run: {}\n{}",
        describe(second_status),
        second.output()
    );
    // It waited with stderr a file: no spinner.
    let waited = second.stderr();
    assert!(
        !waited.contains('\r') && !waited.contains('\u{1b}'),
        "a spinner was drawn on a stderr that is not a terminal: {waited:?}"
    );
}

#[test]
fn sigint_while_waiting_stops_the_wait_and_the_command_never_runs() {
    let etcd = etcd();
    let dir = Scratch::new("int-wait");
    let key = "ops/int-wait";
    let (mut holder, _holder_command) = holding_run(&etcd, &dir, key, "holder");
    let ran = dir.path("ran");
    let mut waiter = spawn(
        distlock(&[
            "run",
            "--backend",
            &etcd.backend,
            "-w",
            "forever",
            key,
            "--",
            "touch",
            &ran.display().to_string(),
        ]),
        &dir,
        "waiter",
    );
    wait_until_waiting(&mut waiter, &etcd);

    waiter.signal("-INT");
    // Well before the holder's command (sleep 60) ends: the signal must end the wait.
    let status = waiter.wait(Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(130),
        "a waiting distlock run sent SIGINT: {}\n{}",
        describe(status),
        waiter.output()
    );
    assert!(!ran.exists(), "the waiter's command ran");
    holder.assert_running();
    // The holder then lets go: the command of the interrupted waiter still never runs
    // (it left nothing queued behind that could start it).
    holder.signal("-TERM");
    holder.wait(EXIT_WAIT);
    assert!(is_free(&etcd, &dir, key), "the lock should be free now");
    assert!(!ran.exists(), "the interrupted waiter's command ran");
}

#[test]
fn sigint_or_sighup_while_holding_sends_sigterm_to_the_command_group() {
    let etcd = etcd();
    let dir = Scratch::new("int-hold");
    for (sig, expected) in [("-INT", 130), ("-HUP", 129)] {
        let key = format!("ops/hold{sig}");
        let trapped = dir.path(&format!("trapped{sig}"));
        let pid_file = dir.path(&format!("pids{sig}"));
        // The shell says which signal reached it; its child `sleep` keeps the default
        // action for SIGTERM.
        let script = format!(
            "trap 'echo TERM >> {t}; exit 0' TERM\n\
             trap 'echo INT >> {t}; exit 0' INT\n\
             trap 'echo HUP >> {t}; exit 0' HUP\n\
             echo $$ >> {p}\n\
             sleep 60 & echo $! >> {p}\n\
             wait",
            t = trapped.display(),
            p = pid_file.display()
        );
        let mut proc = spawn(
            distlock(&[
                "run",
                "--backend",
                &etcd.backend,
                "--ttl",
                "5s",
                "--grace",
                "5s",
                &key,
                "--",
                "sh",
                "-c",
                &script,
            ]),
            &dir,
            &format!("holder{sig}"),
        );
        wait_for(&format!("the command starting ({sig})"), START_WAIT, || {
            proc.assert_running();
            pids(&pid_file).len() == 2
        });
        let group = pids(&pid_file);
        let _guards: Vec<KillPidOnDrop> = group.iter().copied().map(KillPidOnDrop).collect();

        proc.signal(sig);
        let status = proc.wait(EXIT_WAIT);
        assert_eq!(
            status.code(),
            Some(expected),
            "a holding distlock run sent {sig}: {}\n{}",
            describe(status),
            proc.output()
        );
        assert_eq!(
            lines(&trapped),
            ["TERM"],
            "after {sig} to distlock, its command should get SIGTERM (once)"
        );
        let still_alive: Vec<u32> = group.iter().copied().filter(|&p| alive(p)).collect();
        assert!(
            still_alive.is_empty(),
            "processes {still_alive:?} of the command's group outlived distlock ({sig})"
        );
        assert!(
            is_free(&etcd, &dir, &key),
            "the lock should be released after {sig}"
        );
    }
}

#[test]
fn grace_is_honoured_before_the_group_is_sigkilled() {
    let etcd = etcd();
    let dir = Scratch::new("grace");
    let key = "ops/grace";
    let pid_file = dir.path("pid");
    let beats = dir.path("beats");
    // Ignores SIGTERM; writes the time (unix ns) every 0.1 s until it is killed.
    let script = format!(
        "trap '' TERM\n\
         echo $$ > {p}\n\
         while :; do date +%s%N >> {b}; sleep 0.1; done",
        p = pid_file.display(),
        b = beats.display()
    );
    let grace = Duration::from_secs(4);
    let mut proc = spawn(
        distlock(&[
            "run",
            "--backend",
            &etcd.backend,
            "--ttl",
            "5s",
            "--grace",
            "4s",
            key,
            "--",
            "sh",
            "-c",
            &script,
        ]),
        &dir,
        "holder",
    );
    wait_for("the command beating", START_WAIT, || {
        proc.assert_running();
        !pids(&pid_file).is_empty() && !lines(&beats).is_empty()
    });
    let command = pids(&pid_file)[0];
    let _guard = KillPidOnDrop(command);

    let term_sent = unix_nanos();
    proc.signal("-TERM");
    let status = proc.wait(grace + EXIT_WAIT);
    let last_beat: u128 = lines(&beats)
        .iter()
        .filter_map(|line| line.trim().parse().ok())
        .max()
        .unwrap_or(0);
    assert_eq!(
        status.code(),
        Some(143),
        "{}\n{}",
        describe(status),
        proc.output()
    );
    assert!(
        !alive(command),
        "the command that ignores SIGTERM should be SIGKILLed after the grace"
    );
    // It should have lived on for the 4 s grace; half of it is a safe lower bound
    // (beats come every 0.1 s while it runs).
    let lived = Duration::from_nanos(
        u64::try_from(last_beat.saturating_sub(term_sent)).unwrap_or(u64::MAX),
    );
    assert!(
        lived >= grace / 2,
        "the command was killed {lived:?} after SIGTERM, before --grace {grace:?}"
    );
}

#[test]
fn a_lost_lock_stops_the_command_group_and_exits_70() {
    let etcd = etcd();
    let dir = Scratch::new("lost");
    let key = "ops/lost";
    let pid_file = dir.path("pids");
    // Default SIGTERM handling: the group's SIGTERM ends it.
    let script = format!(
        "echo $$ >> {p}\n\
         sleep 60 & echo $! >> {p}\n\
         ( sleep 60 & echo $! >> {p}; wait ) & echo $! >> {p}\n\
         wait",
        p = pid_file.display()
    );
    let mut proc = spawn(
        distlock(&[
            "run",
            "--backend",
            &etcd.backend,
            "--ttl",
            "2s",
            "--grace",
            "1s",
            key,
            "--",
            "sh",
            "-c",
            &script,
        ]),
        &dir,
        "holder",
    );
    wait_for("the command and its children starting", START_WAIT, || {
        proc.assert_running();
        pids(&pid_file).len() == 4
    });
    let group = pids(&pid_file);
    let _guards: Vec<KillPidOnDrop> = group.iter().copied().map(KillPidOnDrop).collect();

    // Frozen etcd: no renewal succeeds; past the ttl the lock counts as lost.
    etcd.cluster.pause(0);
    let resume = ResumeOnDrop(&etcd.cluster);
    let status = proc.wait(EXIT_WAIT);
    let still_alive: Vec<u32> = group.iter().copied().filter(|&p| alive(p)).collect();
    drop(resume);

    assert_eq!(
        status.code(),
        Some(70),
        "distlock run whose lock is lost: {}\n{}",
        describe(status),
        proc.output()
    );
    assert!(
        still_alive.is_empty(),
        "processes {still_alive:?} of the command's group {group:?} outlived the lost lock"
    );
    assert!(
        proc.stderr().contains(key),
        "the message should name the key: {}",
        proc.output()
    );
}

#[test]
fn a_sigkilled_distlock_takes_its_command_group_down() {
    let etcd = etcd();
    let dir = Scratch::new("kill9");
    let key = "ops/kill9";
    let pid_file = dir.path("pids");
    let script = format!(
        "echo $$ >> {p}\n\
         sleep 60 & echo $! >> {p}\n\
         wait",
        p = pid_file.display()
    );
    let mut proc = spawn(
        distlock(&[
            "run",
            "--backend",
            &etcd.backend,
            "--ttl",
            "5s",
            key,
            "--",
            "sh",
            "-c",
            &script,
        ]),
        &dir,
        "holder",
    );
    wait_for("the command and its child starting", START_WAIT, || {
        proc.assert_running();
        pids(&pid_file).len() == 2
    });
    let group = pids(&pid_file);
    let _guards: Vec<KillPidOnDrop> = group.iter().copied().map(KillPidOnDrop).collect();

    // Its other children (a watchdog) are stopped at the end too.
    let _helpers: Vec<KillPidOnDrop> = children(proc.pid())
        .into_iter()
        .filter(|pid| !group.contains(pid))
        .map(KillPidOnDrop)
        .collect();
    proc.signal("-KILL");
    proc.wait(EXIT_WAIT);
    wait_for(
        &format!("the command's group {group:?} going down with the SIGKILLed distlock"),
        Duration::from_secs(10),
        || group.iter().all(|&p| !alive(p)),
    );
}

#[test]
fn a_stopped_distlock_s_group_is_killed_before_another_holder_gets_in() {
    let etcd = etcd();
    let dir = Scratch::new("stopped");
    let key = "ops/stopped";
    let pid_file = dir.path("pids");
    let seen = dir.path("seen");
    let mut first = spawn(
        distlock(&[
            "run",
            "--backend",
            &etcd.backend,
            "--ttl",
            "2s",
            key,
            "--",
            "sh",
            "-c",
            &stubborn_group_script(&pid_file),
        ]),
        &dir,
        "first",
    );
    wait_for(
        "the first command and its children starting",
        START_WAIT,
        || {
            first.assert_running();
            pids(&pid_file).len() == 4
        },
    );
    let group = pids(&pid_file);
    let _guards: Vec<KillPidOnDrop> = group.iter().copied().map(KillPidOnDrop).collect();
    let _helpers: Vec<KillPidOnDrop> = children(first.pid())
        .into_iter()
        .filter(|pid| !group.contains(pid))
        .map(KillPidOnDrop)
        .collect();

    // Stopped (not killed): nothing renews its lock; when the server lets it go the
    // next holder gets in, and by then the watchdog must have killed the group.
    first.signal("-STOP");
    let check = alive_check_script(&pid_file, &seen);
    let second = run(
        distlock(&[
            "run",
            "--backend",
            &etcd.backend,
            "--ttl",
            "2s",
            "-w",
            "20s",
            key,
            "--",
            "sh",
            "-c",
            &check,
        ]),
        &dir,
        "second",
    );
    first.signal("-CONT");
    assert_eq!(second.code(), Some(0), "the second run: {}", second.all());
    assert_eq!(
        lines(&seen),
        ["ran"],
        "when the second run got the lock, processes of the stopped distlock's group \
         {group:?} were still alive"
    );
    // Resumed, it finds its lock lost.
    let status = first.wait(EXIT_WAIT);
    assert_eq!(
        status.code(),
        Some(70),
        "a resumed distlock whose lock ran out: {}\n{}",
        describe(status),
        first.output()
    );
}

// ---------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------

#[test]
fn the_password_stays_out_of_help_errors_and_the_command_environment() {
    let etcd = etcd();
    let dir = Scratch::new("secrets");
    let password = "Pw-7qX3-s3cret";
    etcd.cluster.enable_auth(password);
    let host = format!("127.0.0.1:{}", etcd.port());
    let with_password = format!("etcd://root:{password}@{host}");
    let user_only = format!("etcd://root@{host}");

    // --help, with the credentials in the environment.
    for sub in [
        &[][..],
        &["run"],
        &["status"],
        &["list"],
        &["release"],
        &["hold"],
    ] {
        let mut args: Vec<&str> = sub.to_vec();
        args.push("--help");
        let mut command = distlock(&args);
        command
            .env("DISTLOCK_BACKEND", &with_password)
            .env("DISTLOCK_PASSWORD", password);
        let out = run(command, &dir, "help");
        assert_eq!(out.code(), Some(0), "distlock {args:?}: {}", out.all());
        assert!(
            !out.all().contains(password),
            "distlock {args:?} shows the password: {}",
            out.all()
        );
    }

    // The password in the URL (discouraged, still works): the command's environment
    // has neither it nor DISTLOCK_PASSWORD; its DISTLOCK_BACKEND has no userinfo.
    let check_env = |env_file: &Path, form: &str| {
        let env = std::fs::read_to_string(env_file).unwrap_or_default();
        assert!(
            !env.is_empty(),
            "{form}: the command wrote no environment (did it run?)"
        );
        assert!(
            !env.contains(password),
            "{form}: the command's environment holds the password:\n{env}"
        );
        let vars: BTreeMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
        assert!(
            !vars.contains_key("DISTLOCK_PASSWORD"),
            "{form}: the command's environment holds DISTLOCK_PASSWORD"
        );
        let backend = vars
            .get("DISTLOCK_BACKEND")
            .unwrap_or_else(|| panic!("{form}: no DISTLOCK_BACKEND for the command:\n{env}"));
        assert!(
            !backend.contains('@') && !backend.contains("root") && backend.contains(&host),
            "{form}: the command's DISTLOCK_BACKEND should be the URL without userinfo: \
             {backend}"
        );
    };
    let env_file = dir.path("env-url");
    let mut command = distlock(&[
        "run",
        "-v",
        "secrets/url",
        "--",
        "sh",
        "-c",
        &format!("env > {}", env_file.display()),
    ]);
    command.env("DISTLOCK_BACKEND", &with_password);
    let out = run(command, &dir, "url");
    assert_eq!(out.code(), Some(0), "password in the URL: {}", out.all());
    assert!(
        !out.all().contains(password),
        "distlock -v shows the password: {}",
        out.all()
    );
    check_env(&env_file, "password in the URL");
    let token = std::fs::read_to_string(&env_file)
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("DISTLOCK_TOKEN=").map(str::to_owned))
        .unwrap_or_else(|| panic!("the command got no DISTLOCK_TOKEN"));
    assert!(
        out.stderr.contains(&token),
        "-v reports the fencing token {token} on stderr: {}",
        out.all()
    );

    // DISTLOCK_PASSWORD with etcd://root@host:port.
    let env_file = dir.path("env-var");
    let mut command = distlock(&[
        "run",
        "--backend",
        &user_only,
        "-v",
        "secrets/var",
        "--",
        "sh",
        "-c",
        &format!("env > {}", env_file.display()),
    ]);
    command.env("DISTLOCK_PASSWORD", password);
    let out = run(command, &dir, "var");
    assert_eq!(out.code(), Some(0), "DISTLOCK_PASSWORD: {}", out.all());
    assert!(!out.all().contains(password), "{}", out.all());
    check_env(&env_file, "DISTLOCK_PASSWORD");

    // --password-file with etcd://root@host:port.
    let password_file = dir.path("password");
    std::fs::write(&password_file, password).unwrap_or_else(|e| panic!("{e}"));
    let env_file = dir.path("env-file");
    let out = run(
        distlock(&[
            "run",
            "--backend",
            &user_only,
            "--password-file",
            &password_file.display().to_string(),
            "secrets/file",
            "--",
            "sh",
            "-c",
            &format!("env > {}", env_file.display()),
        ]),
        &dir,
        "file",
    );
    assert_eq!(out.code(), Some(0), "--password-file: {}", out.all());
    check_env(&env_file, "--password-file");
    // A file written with `echo` (a trailing newline, not part of the password).
    let echoed = dir.path("password-echoed");
    std::fs::write(&echoed, format!("{password}\n")).unwrap_or_else(|e| panic!("{e}"));
    let out = run(
        distlock(&[
            "status",
            "--backend",
            &user_only,
            "--password-file",
            &echoed.display().to_string(),
            "secrets/file",
            "--json",
        ]),
        &dir,
        "file-echoed",
    );
    assert_eq!(
        out.code(),
        Some(0),
        "--password-file ending in a newline: {}",
        out.all()
    );

    // Without the password the server refuses: the forms above did authenticate.
    let ran = dir.path("ran-without");
    let out = run(
        distlock(&[
            "run",
            "--backend",
            &user_only,
            "secrets/none",
            "--",
            "touch",
            &ran.display().to_string(),
        ]),
        &dir,
        "none",
    );
    assert_ne!(out.code(), Some(0), "no password: {}", out.all());
    assert!(!ran.exists(), "the command ran without credentials");

    // Errors do not show a password: a wrong one (URL and environment), and a URL
    // without a scheme.
    let wrong = "Wr0ng-Pw-55d2";
    let mut wrong_in_url = distlock(&["run", "-n", "secrets/wrong", "--", "true"]);
    wrong_in_url.env("DISTLOCK_BACKEND", format!("etcd://root:{wrong}@{host}"));
    let mut wrong_in_env =
        distlock(&["status", "--backend", &user_only, "secrets/wrong", "--json"]);
    wrong_in_env.env("DISTLOCK_PASSWORD", wrong);
    for (form, command) in [("URL", wrong_in_url), ("DISTLOCK_PASSWORD", wrong_in_env)] {
        let out = run(command, &dir, "wrong");
        assert_ne!(
            out.code(),
            Some(0),
            "wrong password ({form}): {}",
            out.all()
        );
        assert!(
            !out.stderr.trim().is_empty(),
            "a wrong password ({form}) should be reported: {}",
            out.all()
        );
        assert!(
            !out.all().contains(wrong),
            "the error for a wrong password ({form}) shows it: {}",
            out.all()
        );
    }
    let no_scheme = format!("root:{password}@{host}");
    let mut from_env = distlock(&["run", "secrets/bad-url", "--", "true"]);
    from_env.env("DISTLOCK_BACKEND", &no_scheme);
    let from_flag = distlock(&[
        "run",
        "--backend",
        &no_scheme,
        "secrets/bad-url",
        "--",
        "true",
    ]);
    for (form, command) in [("DISTLOCK_BACKEND", from_env), ("--backend", from_flag)] {
        let out = run(command, &dir, "bad-url");
        assert_eq!(
            out.code(),
            Some(64),
            "a URL without a scheme ({form}) is a usage error: {}",
            out.all()
        );
        assert!(
            !out.stderr.trim().is_empty(),
            "a bad URL ({form}) should be reported"
        );
        assert!(
            !out.all().contains(password),
            "the error for a bad URL ({form}) shows the password: {}",
            out.all()
        );
    }
}

// ---------------------------------------------------------------------------------
// Operator commands
// ---------------------------------------------------------------------------------

#[test]
fn status_reports_free_and_held_locks_as_json_and_text() {
    let etcd = etcd();
    let dir = Scratch::new("status");
    let key = "ops/status";

    let free = status_json(&etcd, &dir, key);
    assert_eq!(free["key"], key, "{free}");
    assert_eq!(free["state"], "free", "{free}");
    assert!(free["token"].is_null(), "a free lock has no token: {free}");
    let text = run(
        distlock(&["status", "--backend", &etcd.backend, key]),
        &dir,
        "status-text",
    );
    assert_eq!(text.code(), Some(0), "{}", text.all());
    assert!(
        text.stdout.contains(&format!("{key}: free")),
        "{}",
        text.all()
    );

    let (mut holder, token) = hold(&etcd, &dir, key, "holder");
    let held = status_json(&etcd, &dir, key);
    let now_ms = u64::try_from(unix_nanos() / 1_000_000).unwrap_or(u64::MAX);
    assert_eq!(held["key"], key, "{held}");
    assert_eq!(held["state"], "held", "{held}");
    assert_eq!(held["token"].as_u64(), Some(token), "{held}");
    assert!(
        held["owner"].as_str().is_some_and(|o| !o.is_empty()),
        "owner: {held}"
    );
    assert_eq!(held["foreign"], false, "{held}");
    let ttl = held["ttl_ms"].as_u64();
    assert!(
        ttl.is_some_and(|t| t > 0 && t <= 5000),
        "ttl_ms (hold --ttl 5s): {held}"
    );
    let written = held["written_at_ms"].as_u64();
    assert!(
        written.is_some_and(|w| w.abs_diff(now_ms) < 60_000),
        "written_at_ms (unix ms, this machine's clock, now {now_ms}): {held}"
    );
    assert!(held["age_ms"].as_u64().is_some(), "age_ms: {held}");
    assert!(
        held["lease"].as_u64().is_some(),
        "etcd knows the lease: {held}"
    );
    let text = run(
        distlock(&["status", "--backend", &etcd.backend, key]),
        &dir,
        "status-text",
    );
    assert_eq!(text.code(), Some(0), "{}", text.all());
    assert!(
        text.stdout.contains(key) && text.stdout.contains(&token.to_string()),
        "the human status should name the key and the token {token}: {}",
        text.all()
    );

    holder.signal("-TERM");
    let status = holder.wait(EXIT_WAIT);
    assert_eq!(
        status.code(),
        Some(0),
        "distlock hold exits 0 on SIGTERM: {}\n{}",
        describe(status),
        holder.output()
    );
    let after = status_json(&etcd, &dir, key);
    assert_eq!(after["state"], "free", "hold released on SIGTERM: {after}");

    // hold --json: one object {"key", "token"} on stdout.
    let mut holder = spawn(
        distlock(&["hold", "--backend", &etcd.backend, key, "--json"]),
        &dir,
        "hold-json",
    );
    let mut printed: Option<Value> = None;
    wait_for(
        "distlock hold --json printing its token",
        START_WAIT,
        || {
            holder.assert_running();
            printed = holder
                .stdout()
                .lines()
                .next()
                .and_then(|line| serde_json::from_str(line).ok());
            printed.is_some()
        },
    );
    let printed = printed.unwrap_or_else(|| unreachable!("waited for it"));
    assert_eq!(printed["key"], key, "{printed}");
    let held = status_json(&etcd, &dir, key);
    assert!(
        printed["token"].as_u64().is_some_and(|t| t > token) && printed["token"] == held["token"],
        "hold --json: {printed}, status: {held}"
    );
    holder.signal("-INT");
    let status = holder.wait(EXIT_WAIT);
    assert_eq!(
        status.code(),
        Some(0),
        "hold on SIGINT: {}",
        holder.output()
    );
}

#[test]
fn list_shows_exactly_the_held_keys_under_the_prefix() {
    let etcd = etcd();
    let dir = Scratch::new("list");
    let (_a, token_a) = hold(&etcd, &dir, "ops/list/a", "a");
    let (_b, token_b) = hold(&etcd, &dir, "ops/list/b", "b");
    let (_x, _) = hold(&etcd, &dir, "ops/list-x", "x");
    let (_z, _) = hold(&etcd, &dir, "other/z", "z");
    // Held once and released: not listed.
    let out = run(
        distlock(&[
            "run",
            "--backend",
            &etcd.backend,
            "ops/list/c",
            "--",
            "true",
        ]),
        &dir,
        "c",
    );
    assert_eq!(out.code(), Some(0), "{}", out.all());

    let listed = |prefix: Option<&str>| -> BTreeMap<String, Value> {
        let mut args = vec!["list", "--backend", &etcd.backend];
        args.extend(prefix);
        args.push("--json");
        let out = run(distlock(&args), &dir, "list");
        assert_eq!(out.code(), Some(0), "list {prefix:?}: {}", out.all());
        let value: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("list --json is not JSON ({e}): {}", out.all()));
        let items = value
            .as_array()
            .unwrap_or_else(|| panic!("list --json should be an array: {value}"));
        items
            .iter()
            .map(|item| {
                assert_eq!(item["state"], "held", "{item}");
                let key = item["key"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no key: {item}"));
                (key.to_owned(), item.clone())
            })
            .collect()
    };
    let under = listed(Some("ops/list/"));
    assert_eq!(
        under.keys().collect::<Vec<_>>(),
        ["ops/list/a", "ops/list/b"],
        "list ops/list/ --json: {under:?}"
    );
    assert_eq!(under["ops/list/a"]["token"].as_u64(), Some(token_a));
    assert_eq!(under["ops/list/b"]["token"].as_u64(), Some(token_b));
    let all = listed(None);
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        ["ops/list-x", "ops/list/a", "ops/list/b", "other/z"],
        "list --json: {all:?}"
    );
    let text = run(
        distlock(&["list", "--backend", &etcd.backend, "ops/list/"]),
        &dir,
        "list-text",
    );
    assert_eq!(text.code(), Some(0), "{}", text.all());
    assert!(
        text.stdout.contains("ops/list/a")
            && text.stdout.contains("ops/list/b")
            && !text.stdout.contains("ops/list/c")
            && !text.stdout.contains("ops/list-x")
            && !text.stdout.contains("other/z"),
        "list ops/list/: {}",
        text.all()
    );
}

#[test]
fn forced_release_frees_a_held_lock_and_checks_the_token() {
    let etcd = etcd();
    let dir = Scratch::new("release");
    let key = "ops/release";
    let (mut holder, token) = hold(&etcd, &dir, key, "holder");
    let held_by = |expected: u64| {
        let status = status_json(&etcd, &dir, key);
        assert_eq!(status["state"], "held", "{status}");
        assert_eq!(status["token"].as_u64(), Some(expected), "{status}");
    };

    // Refusals leave the lock alone.
    let without_force = run(
        distlock(&["release", "--backend", &etcd.backend, key, "--yes"]),
        &dir,
        "no-force",
    );
    assert_eq!(
        without_force.code(),
        Some(64),
        "release without --force is a usage error: {}",
        without_force.all()
    );
    held_by(token);
    let without_yes = run(
        distlock(&["release", "--force", "--backend", &etcd.backend, key]),
        &dir,
        "no-yes",
    );
    assert_eq!(
        without_yes.code(),
        Some(64),
        "release --force without --yes, stdin not a terminal, refuses: {}",
        without_yes.all()
    );
    held_by(token);
    let wrong = (token + 1000).to_string();
    let wrong_token = run(
        distlock(&[
            "release",
            "--force",
            "--backend",
            &etcd.backend,
            key,
            "--token",
            &wrong,
            "--yes",
        ]),
        &dir,
        "wrong-token",
    );
    assert!(
        wrong_token.code().is_some_and(|c| c != 0),
        "release --force --token {wrong} (current {token}) should refuse: {}",
        wrong_token.all()
    );
    held_by(token);
    holder.assert_running();

    let released = run(
        distlock(&[
            "release",
            "--force",
            "--backend",
            &etcd.backend,
            key,
            "--yes",
            "--json",
        ]),
        &dir,
        "release",
    );
    assert_eq!(released.code(), Some(0), "{}", released.all());
    let value: Value = serde_json::from_str(&released.stdout)
        .unwrap_or_else(|e| panic!("release --json is not JSON ({e}): {}", released.all()));
    assert!(value.is_object(), "release --json: {value}");
    let after = status_json(&etcd, &dir, key);
    assert_eq!(after["state"], "free", "after release --force: {after}");

    // Already free: a message, exit 0.
    let again = run(
        distlock(&[
            "release",
            "--force",
            "--backend",
            &etcd.backend,
            key,
            "--yes",
        ]),
        &dir,
        "again",
    );
    assert_eq!(again.code(), Some(0), "{}", again.all());

    // The holder's record was deleted behind it: it has lost the lock.
    let status = holder.wait(EXIT_WAIT);
    assert_eq!(
        status.code(),
        Some(70),
        "distlock hold whose lock was released by force: {}\n{}",
        describe(status),
        holder.output()
    );
}

#[test]
fn forced_release_refuses_a_changed_index() {
    let etcd = etcd();
    let dir = Scratch::new("changed");
    let key = "ops/changed";
    // The operator looks: held, token T1.
    let (mut first, old) = hold(&etcd, &dir, key, "first");
    let seen = status_json(&etcd, &dir, key);
    assert_eq!(seen["token"].as_u64(), Some(old), "{seen}");
    // Meanwhile its holder lets go and another takes it.
    first.signal("-TERM");
    let status = first.wait(EXIT_WAIT);
    assert_eq!(status.code(), Some(0), "{}", first.output());
    let (mut second, new) = hold(&etcd, &dir, key, "second");
    assert!(new > old, "tokens grow: {old} then {new}");

    let out = run(
        distlock(&[
            "release",
            "--force",
            "--backend",
            &etcd.backend,
            key,
            "--token",
            &old.to_string(),
            "--yes",
            "--json",
        ]),
        &dir,
        "release-old",
    );
    assert!(
        out.code().is_some_and(|c| c != 0),
        "release --force --token {old} must refuse the new holder's record ({new}): {}",
        out.all()
    );
    let now = status_json(&etcd, &dir, key);
    assert_eq!(now["state"], "held", "{now}");
    assert_eq!(now["token"].as_u64(), Some(new), "{now}");
    second.assert_running();
}

// ---------------------------------------------------------------------------------
// Exit codes
// ---------------------------------------------------------------------------------

#[test]
fn usage_errors_exit_64() {
    let etcd = etcd();
    let dir = Scratch::new("usage");
    let ran = dir.path("ran");
    let touch = ran.display().to_string();
    let b = etcd.backend.as_str();
    let cases: &[(&str, &[&str])] = &[
        (
            "missing --backend",
            &["run", "ops/usage", "--", "touch", &touch],
        ),
        (
            "bad --ttl",
            &[
                "run",
                "-b",
                b,
                "--ttl",
                "5parsecs",
                "ops/usage",
                "--",
                "touch",
                &touch,
            ],
        ),
        (
            "bad --wait",
            &[
                "run",
                "-b",
                b,
                "-w",
                "soonish",
                "ops/usage",
                "--",
                "touch",
                &touch,
            ],
        ),
        (
            "unknown flag",
            &[
                "run",
                "-b",
                b,
                "--frobnicate",
                "ops/usage",
                "--",
                "touch",
                &touch,
            ],
        ),
        ("no command", &["run", "-b", b, "ops/usage"]),
        (
            "status: unknown flag",
            &["status", "-b", b, "--frobnicate", "ops/usage"],
        ),
        ("status: missing --backend", &["status", "ops/usage"]),
        (
            "release without --force",
            &["release", "-b", b, "ops/usage", "--yes"],
        ),
        ("unknown subcommand", &["frobnicate", "-b", b]),
    ];
    for (what, args) in cases {
        let out = run(distlock(args), &dir, "usage");
        assert_eq!(
            out.code(),
            Some(64),
            "{what}: distlock {args:?}: {}",
            out.all()
        );
        assert!(
            !out.stderr.trim().is_empty(),
            "{what}: a usage error says what is wrong on stderr"
        );
    }
    assert!(!ran.exists(), "a command ran despite a usage error");

    // The exit codes are listed in `run --help` or in `distlock --help`.
    let run_help = run(distlock(&["run", "--help"]), &dir, "help");
    assert_eq!(run_help.code(), Some(0), "{}", run_help.all());
    let top_help = run(distlock(&["--help"]), &dir, "help");
    assert_eq!(top_help.code(), Some(0), "{}", top_help.all());
    let help = format!("{}{}", run_help.stdout, top_help.stdout);
    for code in ["64", "69", "70", "75", "126", "127"] {
        assert!(
            help.contains(code),
            "--help should list exit code {code}:\n{help}"
        );
    }
}

#[test]
fn a_held_lock_exits_75_or_the_conflict_code() {
    let etcd = etcd();
    let dir = Scratch::new("busy");
    let key = "ops/busy";
    let (_holder, _command) = holding_run(&etcd, &dir, key, "holder");
    let ran = dir.path("ran");
    let touch = ran.display().to_string();
    let b = etcd.backend.as_str();

    let no_wait = run(
        distlock(&["run", "-b", b, "-n", key, "--", "touch", &touch]),
        &dir,
        "n",
    );
    assert_eq!(no_wait.code(), Some(75), "-n: {}", no_wait.all());
    assert!(
        no_wait.stderr.contains(key),
        "the message names the key: {}",
        no_wait.all()
    );
    let old_form = run(
        distlock(&["run", "-b", b, "--key", key, "-n", "--", "touch", &touch]),
        &dir,
        "key-flag",
    );
    assert_eq!(
        old_form.code(),
        Some(75),
        "--key KEY -n: {}",
        old_form.all()
    );
    let custom = run(
        distlock(&["run", "-b", b, "-E", "9", "-n", key, "--", "touch", &touch]),
        &dir,
        "e9",
    );
    assert_eq!(custom.code(), Some(9), "-E 9 -n: {}", custom.all());
    let started = Instant::now();
    let waited = run(
        distlock(&["run", "-b", b, "-w", "1", key, "--", "touch", &touch]),
        &dir,
        "w1",
    );
    let took = started.elapsed();
    assert_eq!(waited.code(), Some(75), "-w 1: {}", waited.all());
    assert!(
        took >= Duration::from_millis(900),
        "-w 1 should wait about a second before giving up, gave up after {took:?}"
    );
    assert!(!ran.exists(), "a command ran while the lock was held");
    let hold_busy = run(distlock(&["hold", "-b", b, "-n", key]), &dir, "hold-n");
    assert_eq!(hold_busy.code(), Some(75), "hold -n: {}", hold_busy.all());
    let hold_custom = run(
        distlock(&["hold", "-b", b, "-n", "-E", "9", key]),
        &dir,
        "hold-e9",
    );
    assert_eq!(
        hold_custom.code(),
        Some(9),
        "hold -n -E 9: {}",
        hold_custom.all()
    );
}

#[test]
fn a_hung_backend_exits_69_and_the_command_does_not_run() {
    let etcd = etcd();
    let dir = Scratch::new("hung");
    let ran = dir.path("ran");
    let touch = ran.display().to_string();
    let b = etcd.backend.as_str();
    etcd.cluster.pause(0);
    let resume = ResumeOnDrop(&etcd.cluster);
    let cases: &[(&str, &[&str])] = &[
        (
            "run -n",
            &["run", "-b", b, "-n", "ops/hung", "--", "touch", &touch],
        ),
        ("status", &["status", "-b", b, "ops/hung", "--json"]),
        ("list", &["list", "-b", b, "ops/", "--json"]),
    ];
    for (what, args) in cases {
        let out = run(distlock(args), &dir, "hung");
        assert_eq!(
            out.code(),
            Some(69),
            "{what} on a frozen etcd: {}",
            out.all()
        );
    }
    drop(resume);
    assert!(!ran.exists(), "the command ran without the lock");
}

#[test]
fn a_command_that_cannot_be_started_exits_127_or_126_and_frees_the_lock() {
    let etcd = etcd();
    let dir = Scratch::new("exec");
    let b = etcd.backend.as_str();
    let missing = dir.path("no-such-command");
    let missing = missing.display().to_string();
    let out = run(
        distlock(&["run", "-b", b, "ops/exec", "--", &missing]),
        &dir,
        "missing",
    );
    assert_eq!(out.code(), Some(127), "command not found: {}", out.all());
    assert!(
        out.stderr.contains("no-such-command")
            && !out.stderr.contains("invalid lock configuration"),
        "the message should name the command and not blame the lock configuration: {}",
        out.all()
    );
    assert!(
        is_free(&etcd, &dir, "ops/exec"),
        "the lock should be released"
    );

    let script = dir.path("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\ntrue\n").unwrap_or_else(|e| panic!("{e}"));
    let script = script.display().to_string();
    let out = run(
        distlock(&["run", "-b", b, "ops/exec", "--", &script]),
        &dir,
        "not-executable",
    );
    assert_eq!(
        out.code(),
        Some(126),
        "command not executable: {}",
        out.all()
    );
    assert!(
        is_free(&etcd, &dir, "ops/exec"),
        "the lock should be released"
    );
}

/// `--hold-at-least` keeps the lock after the command ended, in the `distlock`
/// process (the release is scheduled, not done by a background task that dies
/// with it): others are refused until then, the lock is free after it, and a
/// SIGTERM meanwhile exits 143 naming the option.
#[test]
fn hold_at_least_keeps_the_lock_after_the_command_until_its_time() {
    let etcd = etcd();
    let dir = Scratch::new("hold-at-least");
    let key = "ops/hold-at-least";
    let b = etcd.backend.as_str();
    let started = Instant::now();
    let mut holder = spawn(
        distlock(&["run", "-b", b, "--hold-at-least", "3s", key, "--", "true"]),
        &dir,
        "holder",
    );
    wait_for("the holder holds", Duration::from_secs(10), || {
        !is_free(&etcd, &dir, key) || holder.try_status().is_some()
    });
    assert!(
        holder.try_status().is_none(),
        "exited before its time: {}",
        holder.stderr()
    );
    assert!(!is_free(&etcd, &dir, key), "held after the command ended");
    let status = holder.wait(EXIT_WAIT);
    assert_eq!(status.code(), Some(0), "{}", holder.stderr());
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "held {:?}",
        started.elapsed()
    );
    assert!(
        is_free(&etcd, &dir, key),
        "free once --hold-at-least is over"
    );

    let mut held = spawn(
        distlock(&["run", "-b", b, "--hold-at-least", "1h", key, "--", "true"]),
        &dir,
        "long",
    );
    wait_for("the second holder holds", Duration::from_secs(10), || {
        !is_free(&etcd, &dir, key)
    });
    held.signal("-TERM");
    let status = held.wait(EXIT_WAIT);
    assert_eq!(status.code(), Some(143), "{}", held.stderr());
    assert!(held.stderr().contains("hold-at-least"), "{}", held.stderr());
}

/// A lost lock cuts `--grace`: a command that ignores SIGTERM, under a 30 s
/// grace, is dead before a waiting rival gets the lock once etcd runs again.
#[test]
fn a_lost_lock_cuts_the_grace_so_no_process_outlives_it() {
    let etcd = etcd();
    let dir = Scratch::new("lost-grace");
    let key = "ops/lost-grace";
    let pid_file = dir.path("pids");
    let seen = dir.path("seen");
    let b = etcd.backend.as_str();
    let holder_script = stubborn_group_script(&pid_file);
    let mut holder = spawn(
        distlock(&[
            "run",
            "-b",
            b,
            "--ttl",
            "2s",
            "--grace",
            "30s",
            key,
            "--",
            "sh",
            "-c",
            &holder_script,
        ]),
        &dir,
        "holder",
    );
    wait_for("the command and its children starting", START_WAIT, || {
        holder.assert_running();
        pids(&pid_file).len() == 4
    });
    let group = pids(&pid_file);
    let _guards: Vec<KillPidOnDrop> = group.iter().copied().map(KillPidOnDrop).collect();
    let rival_script = alive_check_script(&pid_file, &seen);
    let mut rival = spawn(
        distlock(&[
            "run",
            "-b",
            b,
            "--ttl",
            "2s",
            key,
            "--",
            "sh",
            "-c",
            &rival_script,
        ]),
        &dir,
        "rival",
    );
    wait_until_waiting(&mut rival, &etcd);

    etcd.cluster.pause(0);
    let resume = ResumeOnDrop(&etcd.cluster);
    std::thread::sleep(Duration::from_millis(2500));
    drop(resume);
    wait_for("the rival's command", EXIT_WAIT, || {
        lines(&seen).contains(&"ran".to_owned())
    });
    let alive_then: Vec<String> = lines(&seen)
        .into_iter()
        .filter(|l| l.starts_with("alive"))
        .collect();
    assert!(
        alive_then.is_empty(),
        "processes of the lost holder's group ran beside the next holder: {alive_then:?}\n{}",
        holder.output()
    );
    let status = holder.wait(EXIT_WAIT);
    assert_eq!(status.code(), Some(70), "{}", holder.output());
    assert_eq!(rival.wait(EXIT_WAIT).code(), Some(0), "{}", rival.output());
}

/// A group whose last process leaves it (`setsid`) is empty: `distlock run`
/// releases and exits instead of holding the lock for a group it cannot see
/// end (its reaper once blocked forever in `waitid(P_PGID)`).
#[test]
fn a_group_whose_last_process_leaves_it_counts_as_empty() {
    let etcd = etcd();
    let dir = Scratch::new("setsid");
    let key = "ops/setsid";
    let b = etcd.backend.as_str();
    let out = run(
        distlock(&[
            "run",
            "-b",
            b,
            key,
            "--",
            "sh",
            "-c",
            "( sleep 0.3; exec setsid sleep 1 ) & exit 0",
        ]),
        &dir,
        "setsid",
    );
    assert_eq!(out.code(), Some(0), "{}", out.all());
    assert!(
        is_free(&etcd, &dir, key),
        "released once the group was empty"
    );
}
