//! One request over a list of endpoints: last-good-first, a timeout per attempt.
//!
//! [`Failover::run`] tries the endpoints in turn, starting at the one that
//! answered last, until one answers or one failure says every other would fail
//! the same way ([`Failure::Fatal`]). After a failure that is worth retrying
//! elsewhere, later calls start at the next endpoint at once (not after the whole
//! call), so concurrent requests stop queueing on a dead node. The request is
//! generic: a closure that makes one attempt on endpoint `at`, so the same loop
//! serves RavenDB's HTTP requests and etcd's gRPC calls. Each attempt bounds the
//! part that talks to the server with [`Failover::timed`] (a connection set up
//! first may have its own timeout).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::classify::{Failure, unavailable};
use crate::store::StoreError;

/// One attempt of a [`Failover::run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// The endpoint to use (an index into the caller's list).
    pub(crate) at: usize,
    /// 0 for the first attempt of the call.
    pub(crate) step: usize,
    /// Whether no endpoint is left after this one (an answer that would make
    /// the next endpoint worth trying can be taken as it is).
    pub(crate) last: bool,
}

#[cfg_attr(not(feature = "etcd"), allow(dead_code))] // only etcd uses it
/// The result of a [`Failover::run`] and how it came about.
#[derive(Debug)]
pub(crate) struct Answered<T> {
    /// What the attempt that succeeded returned.
    pub(crate) value: T,
    /// The endpoint that answered.
    pub(crate) at: usize,
    /// Whether an earlier attempt of this call may have applied a write.
    pub(crate) maybe_applied: bool,
}

/// A request (or a part of one) did not finish within the per-request timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no answer within {0:?}")]
pub(crate) struct TimedOut(pub(crate) Duration);

/// The failover state of one store: which endpoint answered last, and the
/// per-request timeout. The endpoint list itself is the caller's (it may grow,
/// as RavenDB learns nodes from its topology): every call passes its length.
#[derive(Debug)]
pub(crate) struct Failover {
    backend: &'static str,
    current: AtomicUsize,
    request_timeout: Duration,
}

impl Failover {
    /// Failover for `backend` (named in logs) with a per-request timeout.
    pub(crate) fn new(backend: &'static str, request_timeout: Duration) -> Self {
        Failover {
            backend,
            current: AtomicUsize::new(0),
            request_timeout,
        }
    }

    #[cfg_attr(not(feature = "ravendb"), allow(dead_code))] // only RavenDB uses it
    /// The per-request timeout.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The endpoint the next call starts at, of `count` (0 when there are none).
    pub(crate) fn current(&self, count: usize) -> usize {
        self.current
            .load(Ordering::Relaxed)
            .checked_rem(count)
            .unwrap_or(0)
    }

    #[cfg_attr(not(feature = "etcd"), allow(dead_code))] // only etcd uses it
    /// Moves later calls past endpoint `failed` (when it is still the current
    /// one: a failure noticed outside [`Failover::run`], such as a broken stream).
    pub(crate) fn skip(&self, failed: usize, count: usize) {
        if count > 0 {
            let _ = self.current.compare_exchange(
                failed,
                (failed + 1) % count,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Runs `future` within the per-request timeout.
    pub(crate) async fn timed<F: Future>(&self, future: F) -> Result<F::Output, TimedOut> {
        tokio::time::timeout(self.request_timeout, future)
            .await
            .map_err(|_| TimedOut(self.request_timeout))
    }

    /// Tries `attempt` on each of `count` endpoints once, starting at the
    /// current one, until one succeeds or fails with [`Failure::Fatal`]. When
    /// all fail, the last failure's error is returned.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        count: usize,
        mut attempt: F,
    ) -> Result<Answered<T>, StoreError>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let start = self.current(count);
        let mut maybe_applied = false;
        let mut last = None;
        for step in 0..count {
            let at = (start + step) % count;
            let this = Attempt {
                at,
                step,
                last: step + 1 == count,
            };
            match attempt(this).await {
                Ok(value) => {
                    if step > 0 {
                        self.current.store(at, Ordering::Relaxed);
                    }
                    return Ok(Answered {
                        value,
                        at,
                        maybe_applied,
                    });
                }
                Err(Failure::Fatal(error)) => return Err(error),
                Err(Failure::Retry {
                    error,
                    maybe_applied: applied,
                }) => {
                    tracing::debug!(
                        backend = self.backend,
                        %error,
                        "distlock: request failed; trying the next endpoint"
                    );
                    maybe_applied |= applied;
                    self.current.store((at + 1) % count, Ordering::Relaxed);
                    last = Some(error);
                }
            }
        }
        Err(last
            .unwrap_or_else(|| unavailable("", format!("no {} endpoint configured", self.backend))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::net::classify::backend;
    use std::sync::Mutex;

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
            .block_on(future)
    }

    /// Runs one call where the endpoints in `down` fail (retryably), and
    /// returns the endpoints tried and the outcome.
    fn call(
        failover: &Failover,
        count: usize,
        down: &[usize],
    ) -> (Vec<usize>, Result<usize, String>) {
        let tried = Mutex::new(Vec::new());
        let result = block_on(failover.run(count, |attempt| {
            tried
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(attempt.at);
            let fails = down.contains(&attempt.at);
            async move {
                if fails {
                    Err(Failure::retry(unavailable("e", "down"), true))
                } else {
                    Ok(attempt.at)
                }
            }
        }));
        let tried = tried.into_inner().unwrap_or_else(|p| p.into_inner());
        (tried, result.map(|a| a.value).map_err(|e| e.to_string()))
    }

    #[test]
    fn last_good_first() {
        let failover = Failover::new("test", Duration::from_secs(1));
        assert_eq!(call(&failover, 3, &[]), (vec![0], Ok(0)));
        assert_eq!(call(&failover, 3, &[0]), (vec![0, 1], Ok(1)));
        // The next call starts where the last one was answered.
        assert_eq!(call(&failover, 3, &[0]), (vec![1], Ok(1)));
        assert_eq!(call(&failover, 3, &[1, 2]), (vec![1, 2, 0], Ok(0)));
        // All down: each tried once, the last error returned, the start unchanged.
        let (tried, result) = call(&failover, 3, &[0, 1, 2]);
        assert_eq!(tried, vec![0, 1, 2]);
        assert_eq!(result, Err("cannot reach e: down".into()));
        assert_eq!(failover.current(3), 0);
        // The list may have grown or shrunk since.
        assert_eq!(failover.current(2), 0);
        assert_eq!(
            call(&failover, 0, &[]).1,
            Err("cannot reach : no test endpoint configured".into())
        );
    }

    #[test]
    fn fatal_stops_and_ambiguity_is_reported() {
        let failover = Failover::new("test", Duration::from_secs(1));
        let fatal = block_on(failover.run(3, |attempt| async move {
            match attempt.step {
                0 => Err(Failure::retry(unavailable("a", "down"), false)),
                _ => Err::<(), _>(Failure::Fatal(backend("b", "refused"))),
            }
        }));
        assert_eq!(
            fatal.map_err(|e| e.to_string()).err().as_deref(),
            Some("b answered with an error: refused")
        );
        let answered = block_on(failover.run(3, |attempt| async move {
            if attempt.step == 0 {
                Err(Failure::retry(unavailable("a", "timeout"), true))
            } else {
                Ok(attempt.last)
            }
        }));
        match answered {
            Ok(Answered {
                value,
                at,
                maybe_applied,
            }) => {
                assert_eq!((value, maybe_applied), (false, true));
                assert_eq!(failover.current(3), at);
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn skip_moves_on_only_from_the_failed_endpoint() {
        let failover = Failover::new("test", Duration::from_secs(1));
        failover.skip(0, 3);
        assert_eq!(failover.current(3), 1);
        failover.skip(0, 3); // already moved by someone else
        assert_eq!(failover.current(3), 1);
        failover.skip(1, 0);
        assert_eq!(failover.current(3), 1);
    }

    #[test]
    fn attempts_are_timed() {
        let failover = Failover::new("test", Duration::from_millis(20));
        let result = block_on(async {
            failover
                .timed(tokio::time::sleep(Duration::from_secs(5)))
                .await
        });
        assert_eq!(result, Err(TimedOut(Duration::from_millis(20))));
        assert_eq!(
            TimedOut(Duration::from_millis(20)).to_string(),
            "no answer within 20ms"
        );
        assert_eq!(block_on(failover.timed(async { 7 })), Ok(7));
        assert_eq!(failover.request_timeout(), Duration::from_millis(20));
    }
}
