//! Acquiring, with a spinner on a terminal: who holds the lock and how long we
//! have waited, on stderr. Nothing is shown when stderr is not a terminal, nor
//! for a wait shorter than [`QUIET`].

use std::io::IsTerminal;
use std::time::Duration;

use distlock::{LockClient, LockError, LockGuard, LockOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::{Instant, sleep};

use crate::ops::holder_text;

/// Waits shorter than this show nothing.
const QUIET: Duration = Duration::from_millis(300);
/// How often the holder is read again for the spinner.
const HOLDER_EVERY: Duration = Duration::from_secs(1);

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
