//! `distlock run`: hold the lock while a command runs, and stop the command's
//! whole process group before the lock is given up.
//!
//! The rules, in order:
//! 1. The command starts only once the lock is held, in a new process group,
//!    with `distlock` as the child subreaper (orphaned processes of the group
//!    are re-parented to it, so it can tell when the group is empty).
//! 2. SIGTERM, SIGINT or SIGHUP to `distlock`, or the lock lost: SIGTERM (and
//!    SIGCONT, for stopped processes) to the whole group, `--grace` for it to
//!    exit, then SIGKILL. A second signal cuts the grace short. Once the lock
//!    is lost (before or during the grace), the grace is cut to a twentieth of
//!    the ttl: the loss is reported a tenth of the ttl before anyone else can
//!    take the lock, and the group must be dead by then.
//! 3. The lock is released only once no process of the group is left; if the
//!    group outlives SIGKILL for [`KILL_WAIT`], the lock is not released (it
//!    runs out after its ttl) and `distlock` says so.
//! 4. A watchdog process (watchdog.rs) kills the group if `distlock` is itself
//!    killed, or stopped past the lock's deadline.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use distlock::{LockError, LockGuard};
use rustix::io::Errno;
use rustix::process::{
    Pid, Signal, WaitId, WaitIdOptions, WaitOptions, getpid, getppid, kill_process,
    kill_process_group, set_child_subreaper, set_parent_process_death_signal,
    test_kill_process_group, waitid, waitpgid,
};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};

use crate::exit::{EX_NOEXEC, EX_NOTFOUND, EX_OSERR, EX_SOFTWARE, EX_USAGE, fail, signalled};
use crate::signals::{self, Signals};
use crate::watchdog::Watchdog;
use crate::{RunArgs, backend, waiting};

/// How long a group may outlive SIGKILL before `distlock` gives up on it
/// (processes in uninterruptible sleep, on a hung NFS mount, say).
const KILL_WAIT: Duration = Duration::from_secs(60);
/// How soon the reaper looks again for exited processes after reaping one
/// (the pause doubles while there is nothing to reap).
const REAP_POLL_MIN: Duration = Duration::from_millis(1);
/// The longest pause between the reaper's looks.
const REAP_POLL_MAX: Duration = Duration::from_millis(50);

/// `distlock run`: the exit code.
pub async fn run(args: RunArgs) -> u8 {
    let key = match (args.key, args.key_option) {
        (Some(key), None) | (None, Some(key)) => key,
        _ => return fail(EX_USAGE, "give the lock key once: KEY or --key KEY"),
    };
    let mut signals = match Signals::catch() {
        Ok(signals) => signals,
        Err(error) => return fail(EX_OSERR, format!("cannot catch signals: {error}")),
    };
    let client = match backend::connect(&args.backend) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let wait = &args.wait;
    let (mut options, if_locked) = waiting::options(wait);
    if let Some(hold) = args.hold_at_least {
        options = options.hold_at_least(hold);
    }
    let guard =
        match waiting::acquire_or_exit(&client, &key, (&options, if_locked), wait, &mut signals)
            .await
        {
            Ok(guard) => guard,
            Err(code) => return code,
        };

    let code = supervise(
        &args.command,
        &key,
        &args.backend.backend,
        (wait.ttl, args.grace),
        &guard,
        &mut signals,
    )
    .await;
    match code {
        Ended::Exited(code) => match guard.release().await {
            Ok(()) if args.hold_at_least.is_some() => {
                // The release is scheduled for the end of --hold-at-least: the
                // client's background task does it, in this process.
                tokio::select! {
                    _ = client.wait_idle(Duration::MAX) => code,
                    signal = signals.next() => fail(
                        signalled(signal),
                        format!(
                            "{} during --hold-at-least: the lock runs out after its ttl",
                            signals::name(signal)
                        ),
                    ),
                }
            }
            Ok(()) => code,
            // Lost while the command ran (distlock was stopped, say): its work
            // may have overlapped another holder's.
            Err(error @ LockError::Lost { .. }) => fail(
                EX_SOFTWARE,
                format!("{error}; the command had ended (exit code {code})"),
            ),
            Err(error) => {
                errln!("distlock: the command finished but the release failed: {error}");
                code
            }
        },
        Ended::Signalled(signal) => {
            let released = guard.release().await;
            let outcome = match released {
                Ok(()) => "lock released".to_owned(),
                Err(error) => format!("the release failed: {error}"),
            };
            fail(
                signalled(signal),
                format!("{}: stopped the command; {outcome}", signals::name(signal)),
            )
        }
        Ended::Lost(error) => {
            drop(guard);
            client.wait_idle(waiting::SETTLE).await;
            fail(EX_SOFTWARE, format!("{error}; the command was stopped"))
        }
        Ended::Unkillable(why) => {
            // Not released: the lock runs out after its ttl, after the group has had longer.
            std::mem::forget(guard);
            fail(EX_SOFTWARE, why)
        }
        Ended::NotStarted(code, why) => {
            let _ = guard.release().await;
            fail(code, why)
        }
    }
}

/// The hidden first argument that starts the command through this binary.
pub const EXEC_ARG: &str = "__distlock-exec";

/// `distlock __distlock-exec PARENT PROGRAM ARGS...`, started by `run` (pid
/// PARENT) in the command's new process group: stops itself (`run` continues
/// it once the watchdog knows the group), then becomes PROGRAM. Should `run`
/// die before, this process gets SIGKILL (its parent-death signal until the
/// exec), or finds its parent gone and exits.
pub fn exec_main() -> std::process::ExitCode {
    let mut args = std::env::args_os().skip(2);
    let parent = args
        .next()
        .and_then(|parent| parent.to_str()?.parse::<i32>().ok())
        .and_then(Pid::from_raw);
    let (Some(parent), Some(program)) = (parent, args.next()) else {
        return std::process::ExitCode::from(EX_USAGE);
    };
    if set_parent_process_death_signal(Some(Signal::KILL)).is_err() || getppid() != Some(parent) {
        return std::process::ExitCode::from(EX_OSERR);
    }
    let stopped =
        kill_process(getpid(), Signal::STOP).and_then(|()| set_parent_process_death_signal(None));
    if let Err(error) = stopped {
        errln!("distlock: cannot start {program:?}: {error}");
        return std::process::ExitCode::from(EX_OSERR);
    }
    let error = Command::new(&program).args(args).exec();
    let code = match error.kind() {
        ErrorKind::NotFound => EX_NOTFOUND,
        ErrorKind::PermissionDenied => EX_NOEXEC,
        _ => EX_OSERR,
    };
    // The one place the command itself is started, so the one place its
    // start-up error becomes 127/126.
    errln!("distlock: cannot start {program:?}: {error}");
    std::process::ExitCode::from(code)
}

/// How the supervised command ended.
enum Ended {
    /// It exited (and every process of its group) with this shell-style code.
    Exited(u8),
    /// `distlock` got this signal; the group has been stopped.
    Signalled(i32),
    /// The lock was lost; the group has been stopped.
    Lost(LockError),
    /// The group did not die after SIGKILL.
    Unkillable(String),
    /// The command could not be started.
    NotStarted(u8, String),
}

/// Runs `command` in its own group while `guard` holds; see the module docs.
async fn supervise(
    command: &[OsString],
    key: &str,
    backend_url: &str,
    (ttl, grace): (Duration, Duration),
    guard: &LockGuard,
    signals: &mut Signals,
) -> Ended {
    let Some((program, rest)) = command.split_first() else {
        return Ended::NotStarted(EX_USAGE, "no command given".into());
    };
    // Orphans of the group come to us, so we can tell when it is empty.
    if let Err(error) = set_child_subreaper(Some(rustix::process::getpid())) {
        return Ended::NotStarted(EX_OSERR, format!("cannot become a subreaper: {error}"));
    }
    let mut watchdog = match Watchdog::start() {
        Ok(watchdog) => Some(watchdog),
        Err(error) => {
            errln!(
                "distlock: cannot start the watchdog ({error}): if distlock is killed, \
                 the command keeps running"
            );
            None
        }
    };
    // Started through this binary (see `exec_main`), which stops itself until
    // the watchdog knows the group: a `distlock` killed in between leaves no
    // command running unguarded.
    let mut child = Command::new("/proc/self/exe");
    child
        .arg(EXEC_ARG)
        .arg(getpid().as_raw_nonzero().to_string())
        .arg(program)
        .args(rest)
        .env("DISTLOCK_KEY", key)
        .env("DISTLOCK_TOKEN", guard.token().to_string())
        .process_group(0);
    backend::scrub_environment(&mut child, backend_url);
    let group = match Group::spawn(&mut child) {
        Ok(group) => group,
        // What failed is this binary's launcher (/proc/self/exe), not the
        // command: a missing or unexecutable command is reported by the
        // launcher's exec (127/126, `exec_main`).
        Err(error) => {
            return Ended::NotStarted(
                EX_OSERR,
                format!("cannot start {program:?}: starting distlock's launcher failed: {error}"),
            );
        }
    };
    if let Some(watchdog) = &mut watchdog {
        watchdog.guard(group.pgid_raw());
    }
    group.signal(Signal::CONT);
    let beat = (ttl / 6).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let slack = ttl / 20;
    let liveness = beat * 4 + Duration::from_secs(1);
    let pace = (slack, beat);
    let mut tell = |watchdog: &mut Option<Watchdog>, running: bool| {
        if let Some(watchdog) = watchdog {
            match guard.valid_for() {
                Some(left) if running => watchdog.alive(left + slack),
                // Stopping the group: the lock may still be held (a signal to
                // distlock), so its deadline bounds the liveness bound too.
                Some(left) => watchdog.alive((left + slack).min(liveness)),
                // Lost, stopping the group: it must be gone within the
                // shortened grace; a distlock stopped now is not waited for.
                None => watchdog.alive(slack + beat),
            }
        }
    };
    tell(&mut watchdog, true);

    let mut states = group.states();
    let mut leader_code = None;
    let ended = loop {
        tokio::select! {
            state = wait_for(&mut states, |s| s.empty || (leader_code.is_none() && s.leader.is_some())) => {
                if state.empty {
                    break Ended::Exited(leader_code.or(state.leader).unwrap_or(1));
                }
                // The command exited; processes it started still run: keep the lock for them.
                leader_code = state.leader;
            }
            signal = signals.next() => {
                tell(&mut watchdog, false);
                break match stop(&group, grace, pace, guard, signals, &mut watchdog, &mut tell).await {
                    Ok(()) => Ended::Signalled(signal),
                    Err(why) => Ended::Unkillable(why),
                };
            }
            reason = guard.lost() => {
                tell(&mut watchdog, false);
                let error = LockError::Lost { key: key.to_owned(), token: guard.token(), reason };
                errln!("distlock: {error}; stopping the command: SIGTERM, SIGKILL after {} (the time left before another holder can get in)", humantime::format_duration(grace.min(slack)));
                break match stop(&group, grace, pace, guard, signals, &mut watchdog, &mut tell).await {
                    Ok(()) => Ended::Lost(error),
                    Err(why) => Ended::Unkillable(why),
                };
            }
            () = sleep(beat) => tell(&mut watchdog, true),
        }
    };
    if let Some(watchdog) = &mut watchdog
        && !matches!(ended, Ended::Unkillable(_))
    {
        watchdog.gone();
    }
    ended
}

/// SIGTERM (and SIGCONT) to the group, `grace`, then SIGKILL; waits until the
/// group is empty. A second signal cuts the grace short, and so does the loss
/// of the lock (also when it is lost already): once it is lost, another holder
/// may get in after the rest of the ttl, so the grace is cut to `loss_grace`
/// (a twentieth of the ttl, within the deadline rule's margin of a tenth).
/// `beat` is how often the watchdog hears from us meanwhile.
async fn stop(
    group: &Group,
    grace: Duration,
    (loss_grace, beat): (Duration, Duration),
    guard: &LockGuard,
    signals: &mut Signals,
    watchdog: &mut Option<Watchdog>,
    tell: &mut impl FnMut(&mut Option<Watchdog>, bool),
) -> Result<(), String> {
    let mut states = group.states();
    group.signal(Signal::TERM);
    group.signal(Signal::CONT);
    let mut grace_ends = Instant::now() + grace;
    let mut lost = false;
    loop {
        tokio::select! {
            _ = wait_for(&mut states, |s| s.empty) => return Ok(()),
            () = tokio::time::sleep_until(grace_ends) => break,
            signal = signals.next() => {
                errln!("distlock: {} during the grace period: killing the command now", signals::name(signal));
                break;
            }
            _ = guard.lost(), if !lost => {
                lost = true;
                grace_ends = grace_ends.min(Instant::now() + loss_grace);
                tell(watchdog, false);
            }
            () = sleep(beat) => tell(watchdog, false),
        }
    }
    group.signal(Signal::KILL);
    let kill_ends = Instant::now() + KILL_WAIT;
    loop {
        tokio::select! {
            _ = wait_for(&mut states, |s| s.empty) => return Ok(()),
            () = tokio::time::sleep_until(kill_ends) => {
                return Err(format!(
                    "processes of the command's group {} survived SIGKILL for {}s: the lock is \
                     not released (it runs out after its ttl)",
                    group.pgid_raw(),
                    KILL_WAIT.as_secs()
                ));
            }
            () = sleep(beat) => tell(watchdog, false),
        }
    }
}

/// Waits until the group's state satisfies `done`; returns that state.
async fn wait_for(
    states: &mut watch::Receiver<GroupState>,
    done: impl FnMut(&GroupState) -> bool,
) -> GroupState {
    let waited = states.wait_for(done).await.map(|state| *state);
    // The reaper is gone (it never ends without marking the group empty):
    // treat the group as empty.
    waited.unwrap_or_else(|_| GroupState {
        leader: states.borrow().leader,
        empty: true,
    })
}

/// What the reaper knows of the group.
#[derive(Clone, Copy, Debug, Default)]
struct GroupState {
    /// The command's own exit code (shell style), once it exited.
    leader: Option<u8>,
    /// No process of the group is left.
    empty: bool,
}

/// The command's process group, reaped by a thread of its own.
struct Group {
    pgid: Pid,
    /// Set, under this lock, the moment the last process is reaped: signals
    /// are sent under it too, so none goes to a process group id reused later.
    empty: Arc<Mutex<bool>>,
    states: watch::Receiver<GroupState>,
}

impl Group {
    /// Spawns `command` (already set to start a new group) and its reaper.
    fn spawn(command: &mut Command) -> std::io::Result<Group> {
        let child = command.spawn()?;
        let pid = i32::try_from(child.id())
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| std::io::Error::other("the child has no valid process id"))?;
        // Reaped below by waitpgid, not by `Child::wait`.
        drop(child);
        // Until it has stopped itself (or died): not consumed (NOWAIT), the
        // reaper reaps it.
        let stopped = WaitIdOptions::STOPPED | WaitIdOptions::EXITED | WaitIdOptions::NOWAIT;
        while let Err(Errno::INTR) = waitid(WaitId::Pid(pid), stopped) {}
        let empty = Arc::new(Mutex::new(false));
        let (report, states) = watch::channel(GroupState::default());
        let reaper_empty = Arc::clone(&empty);
        std::thread::Builder::new()
            .name("distlock-reaper".into())
            .spawn(move || reap(pid, &reaper_empty, &report))?;
        Ok(Group {
            pgid: pid,
            empty,
            states,
        })
    }

    fn pgid_raw(&self) -> u32 {
        self.pgid.as_raw_nonzero().get().unsigned_abs()
    }

    fn states(&self) -> watch::Receiver<GroupState> {
        self.states.clone()
    }

    /// Sends `signal` to every process of the group, unless it is empty.
    fn signal(&self, signal: Signal) {
        let empty = self.empty.lock().unwrap_or_else(PoisonError::into_inner);
        if !*empty {
            let _ = kill_process_group(self.pgid, signal);
        }
    }
}

/// The reaper: reaps every process of group `pgid` that is our child (the
/// command, and its orphans, re-parented to us as the subreaper), and reports
/// the group empty once no process at all is left in it (`kill(-pgid, 0)`
/// finds none). It polls rather than blocking in `waitid(P_PGID)`: a process
/// that leaves the group (`setsid`, `setpgid`, a job-control shell) wakes no
/// waiter, so a blocked reaper would never learn that the group emptied.
fn reap(pgid: Pid, empty: &Mutex<bool>, report: &watch::Sender<GroupState>) {
    let mut pause = REAP_POLL_MIN;
    loop {
        let mut is_empty = empty.lock().unwrap_or_else(PoisonError::into_inner);
        match waitpgid(pgid, WaitOptions::NOHANG) {
            Ok(Some((pid, status))) => {
                if pid == pgid {
                    let code = match status.terminating_signal() {
                        Some(signal) => signalled(signal),
                        None => status
                            .exit_status()
                            .and_then(|code| u8::try_from(code).ok())
                            .unwrap_or(1),
                    };
                    report.send_modify(|state| state.leader = Some(code));
                }
                pause = REAP_POLL_MIN;
                continue;
            }
            Err(Errno::INTR) => continue,
            // No child of ours in the group has exited (or none is left):
            // processes that are not our children may still be in it.
            Ok(None) | Err(_) => {}
        }
        // Checked under `empty`: once no process has this group id, it may be
        // reused, and `Group::signal` must not reach the new group.
        if let Err(Errno::SRCH) = test_kill_process_group(pgid) {
            *is_empty = true;
            drop(is_empty);
            report.send_modify(|state| state.empty = true);
            return;
        }
        drop(is_empty);
        std::thread::sleep(pause);
        pause = (pause * 2).min(REAP_POLL_MAX);
    }
}
