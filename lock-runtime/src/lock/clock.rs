//! Time as the engine sees it: one monotonic clock per client (Tokio's, so tests
//! can pause and drive it) and an informational wall clock.
//!
//! Every instant the engine computes goes through [`Clock`] and saturates: no
//! duration a user passes (`Duration::MAX` included) can overflow an `Instant`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// A source of wall-clock time. Only written into records for operators to
/// read; the algorithm never decides anything by it. Injectable so tests can
/// prove that a skewed clock changes nothing.
pub trait WallClock: Send + Sync + fmt::Debug + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// About thirty years: what "never" means for an instant (Tokio's own far future).
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `at + by`, or a far-future instant when that does not fit.
pub(crate) fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by)
        .or_else(|| at.checked_add(FAR))
        .unwrap_or(at)
}

/// The client's monotonic clock. Normally Tokio's `Instant::now()`; a
/// simulation can make it run slower or faster than real time (`rate`), as a
/// real machine's clock may, to check that the safety margin absorbs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// Local seconds per real second (1.0 = exact).
    rate: f64,
    /// The real instant at which local and real time agreed.
    base: Instant,
}

impl Clock {
    pub fn new(rate: f64) -> Self {
        Clock {
            rate,
            base: Instant::now(),
        }
    }

    /// Local now.
    pub fn now(&self) -> Instant {
        let real = Instant::now();
        if self.rate == 1.0 {
            return real;
        }
        later(
            self.base,
            real.saturating_duration_since(self.base).mul_f64(self.rate),
        )
    }

    /// The real (Tokio) instant at which local time reaches `local`.
    pub(crate) fn real(&self, local: Instant) -> Instant {
        if self.rate == 1.0 {
            return local;
        }
        let since = local.saturating_duration_since(self.base).as_secs_f64() / self.rate;
        later(self.base, Duration::try_from_secs_f64(since).unwrap_or(FAR))
    }

    /// Sleeps until local time `local`.
    pub async fn sleep_until(&self, local: Instant) {
        tokio::time::sleep_until(self.real(local)).await;
    }

    /// Runs `future` until local time `local`; `None` if it did not finish.
    pub async fn timeout_at<F: Future>(&self, local: Instant, future: F) -> Option<F::Output> {
        tokio::time::timeout_at(self.real(local), future).await.ok()
    }
}

/// Informational timestamps for records: the wall clock read once, advanced
/// by the monotonic clock (one clock read per acquisition instead of two).
#[derive(Debug)]
pub(crate) struct WallStamp {
    wall_base: SystemTime,
    mono_base: Instant,
}

impl WallStamp {
    pub fn new(wall: &dyn WallClock) -> Self {
        WallStamp {
            wall_base: wall.now(),
            mono_base: Instant::now(),
        }
    }

    /// Unix milliseconds at monotonic instant `now`.
    pub fn millis(&self, now: Instant) -> u64 {
        let wall = self
            .wall_base
            .checked_add(now.saturating_duration_since(self.mono_base))
            .unwrap_or(self.wall_base);
        wall.duration_since(UNIX_EPOCH).map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
    }
}
