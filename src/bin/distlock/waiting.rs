//! Acquiring, with a spinner on a terminal: who holds the lock and how long we
//! have waited, on stderr. Nothing is shown when stderr is not a terminal, nor
//! for a wait shorter than [`QUIET`].

use std::io::IsTerminal;
use std::time::Duration;

use distlock::{IfLocked, LockClient, LockError, LockGuard, LockOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::{Instant, sleep};

use crate::WaitArgs;
use crate::exit::{fail, for_error, signalled};
use crate::ops::holder_text;
use crate::signals::{self, Signals};

/// Waits shorter than this show nothing.
const QUIET: Duration = Duration::from_millis(300);
/// How often the holder is read again for the spinner.
const HOLDER_EVERY: Duration = Duration::from_secs(1);

/// The lock options that `--ttl`, `-w`, `-n` and `--if-locked` give, and the
/// mode (`-n` is `--if-locked error`; skip tries once unless given a wait).
pub fn options(wait: &WaitArgs) -> (LockOptions, IfLocked) {
    let if_locked = if wait.no_wait {
        IfLocked::Error
    } else {
        wait.if_locked
    };
    let defaults = LockOptions::default();
    let options = defaults
        .clone()
        .ttl(wait.ttl)
        .wait(if_locked.wait(wait.wait, defaults.wait));
    (options, if_locked)
}

/// Acquires `key` as `run` and `hold` do, or gives the exit code after saying
/// why: a signal while waiting (128+N; the client first cleans up a record
/// the dropped acquisition may have written), skipped (0), held (`-E`), or
/// the error's own code. With `-v`, reports the time waited and the token.
pub async fn acquire_or_exit(
    client: &LockClient,
    key: &str,
    (options, if_locked): (&LockOptions, IfLocked),
    wait: &WaitArgs,
    signals: &mut Signals,
) -> Result<LockGuard, u8> {
    let started = Instant::now();
    let acquired = tokio::select! {
        acquired = acquire(client, key, options) => acquired,
        signal = signals.next() => {
            client.wait_idle(SETTLE).await;
            return Err(fail(
                signalled(signal),
                format!("{} while waiting for lock `{key}`", signals::name(signal)),
            ));
        }
    };
    match acquired {
        Ok(guard) => {
            if wait.verbose {
                errln!(
                    "distlock: acquired `{key}` after {:.3}s, fencing token {}",
                    started.elapsed().as_secs_f64(),
                    guard.token()
                );
            }
            Ok(guard)
        }
        Err(error) if if_locked == IfLocked::Skip && error.is_contention() => {
            errln!("distlock: skipped: {error}");
            Err(0)
        }
        Err(error) => Err(fail(for_error(&error, wait.conflict_exit_code), error)),
    }
}

/// How long to wait for background clean-ups (a cancelled acquisition's
/// record) before exiting.
pub const SETTLE: Duration = Duration::from_secs(5);

/// `client.acquire_with(key, options)`, showing the wait on a terminal.
pub async fn acquire(
    client: &LockClient,
    key: &str,
    options: &LockOptions,
) -> Result<LockGuard, LockError> {
    let acquiring = client.acquire_with(key, options);
    if !std::io::stderr().is_terminal() {
        return acquiring.await;
    }
    let mut acquiring = std::pin::pin!(acquiring);
    tokio::select! {
        acquired = &mut acquiring => return acquired,
        () = sleep(QUIET) => {}
    }
    let started = Instant::now() - QUIET;
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    let mut holder = String::from("someone else");
    let mut next_read = Instant::now();
    let acquired = loop {
        spinner.set_message(format!(
            "waiting for lock `{key}`, held by {holder} ({}s)",
            started.elapsed().as_secs()
        ));
        // Read while the acquisition goes on: both are polled.
        let read = async {
            tokio::time::sleep_until(next_read).await;
            client.status(key).await
        };
        tokio::select! {
            acquired = &mut acquiring => break acquired,
            read = read => {
                if let Ok(Some(info)) = read {
                    holder = holder_text(&info);
                }
                next_read = Instant::now() + HOLDER_EVERY;
            }
        }
    };
    spinner.finish_and_clear();
    acquired
}
