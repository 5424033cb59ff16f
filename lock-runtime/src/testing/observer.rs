//! [`Observer`]: an independent check of exclusion and fencing, from outside
//! the lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// Watches critical sections from outside the library: counts how many
/// holders are inside at once and whether fencing tokens only grow.
///
/// Call [`Observer::enter`] first thing inside a critical section (with the
/// guard's token) and [`Observer::exit`] last thing before releasing. Share one
/// observer (in an `Arc`) between every contending task.
///
/// ```
/// use distlock::testing::Observer;
///
/// let observer = Observer::default();
/// observer.enter(1);
/// observer.exit();
/// observer.enter(2);
/// observer.enter(3); // a second holder while the first is inside
/// observer.exit();
/// observer.exit();
/// observer.enter(3); // a token that did not grow
/// observer.exit();
/// assert_eq!(observer.entries(), 4);
/// assert_eq!(observer.overlaps(), 1);
/// assert_eq!(observer.most_inside(), 2);
/// assert_eq!(observer.token_regressions(), 1);
/// ```
#[derive(Debug, Default)]
pub struct Observer {
    inside: AtomicU64,
    most_inside: AtomicU64,
    overlaps: AtomicU64,
    last_token: Mutex<u64>,
    token_regressions: AtomicU64,
    entries: AtomicU64,
}

impl Observer {
    /// Records a holder entering its critical section with fencing `token`.
    pub fn enter(&self, token: u64) {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_inside.fetch_max(now, Ordering::SeqCst);
        if now > 1 {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        // Only this function holds the lock, and it cannot panic while it does.
        let mut last = self
            .last_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if token <= *last {
            self.token_regressions.fetch_add(1, Ordering::SeqCst);
        }
        *last = (*last).max(token);
        self.entries.fetch_add(1, Ordering::SeqCst);
    }

    /// Records a holder leaving its critical section.
    pub fn exit(&self) {
        // Saturating: an unmatched exit must not wrap the count around.
        let _ = self
            .inside
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// How many entries found another holder inside (0 when exclusion held).
    pub fn overlaps(&self) -> u64 {
        self.overlaps.load(Ordering::SeqCst)
    }

    /// The most holders inside at once (1 when exclusion held).
    pub fn most_inside(&self) -> u64 {
        self.most_inside.load(Ordering::SeqCst)
    }

    /// How many entries came with a token not larger than an earlier one
    /// (0 when fencing tokens strictly increased).
    pub fn token_regressions(&self) -> u64 {
        self.token_regressions.load(Ordering::SeqCst)
    }

    /// How many critical sections were entered.
    pub fn entries(&self) -> u64 {
        self.entries.load(Ordering::SeqCst)
    }
}
