//! The three rules every transition of the engine goes through. Each lives
//! here once:
//!
//! - **Deadline rule** ([`deadline`]): a held lock's local deadline is the
//!   *earliest* send time of any write that may have produced the record it
//!   holds, plus the ttl, minus a safety margin. On lease stores the session's
//!   deadline (counted from the grant's or keep-alive's send) bounds it too
//!   (see `session.rs`).
//! - **Takeover rule** ([`Observations::takeover_at`]): a record may be taken
//!   over only after this client saw the *same index* unchanged for the
//!   holder's whole ttl (plus the configured lock delay) on its own monotonic
//!   clock. No two machines' clocks are ever compared. Records attached to a
//!   server lease are never taken over: the server expires them.
//! - **Ambiguity rule** ([`classify`]): what a key holds, as the engine needs
//!   to know it after a conflict or a read-back: our record (same owner and
//!   nonce: a write of ours whose answer was lost did commit), someone
//!   else's, or nothing.

use std::time::Duration;

use tokio::time::Instant;

use super::clock::later;
use crate::store::net::cache::BoundedCache;
use crate::store::{Entry, Record};

/// How many keys' observations a client remembers (the crate's one bounded
/// cache and its policy: a key waited on keeps its observation; one left alone
/// for this many other contended keys is forgotten).
const MAX_OBSERVED_KEYS: usize = 16_384;

/// How long before the ttl runs out a holder gives up: a tenth of the ttl,
/// at least 5 ms. It absorbs clock-rate differences between machines (a
/// holder's clock may run up to about 5% slower than an observer's).
pub(crate) fn margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(5))
}

/// The deadline rule: the last instant a holder may consider itself holding a
/// record produced by a write sent at `earliest_send` (the earliest send of
/// every write that may have produced it).
pub(crate) fn deadline(earliest_send: Instant, ttl: Duration) -> Instant {
    later(earliest_send, ttl.saturating_sub(margin(ttl)))
}

/// What a key holds, seen through one acquisition's eyes.
#[derive(Debug)]
pub(crate) enum Seen {
    /// Nothing: the key is free.
    Absent,
    /// Our record, at this index: a write of ours produced it.
    Ours(u64),
    /// Another holder's record.
    Other(Entry),
}

/// The ambiguity rule: the one place a read-back or a conflict is matched
/// against our `(owner, nonce)`.
pub(crate) fn classify(current: Option<Entry>, ours: &Record) -> Seen {
    match current {
        None => Seen::Absent,
        Some(entry) if entry.record.same_acquisition(ours) => Seen::Ours(entry.index),
        Some(entry) => Seen::Other(entry),
    }
}

/// What this client last saw at a key it could not get.
#[derive(Debug, Clone, Copy)]
struct Observation {
    index: u64,
    since: Instant,
}

/// The observation cache behind the takeover rule, shared by every
/// acquisition of a client (so a try-lock can take over too). Bounded by
/// [`BoundedCache`] (forgetting only delays a takeover, never hastens it).
#[derive(Debug)]
pub(crate) struct Observations {
    seen: BoundedCache<Box<str>, Observation>,
    lock_delay: Duration,
}

impl Observations {
    pub fn new(lock_delay: Duration) -> Self {
        Observations {
            seen: BoundedCache::new(MAX_OBSERVED_KEYS),
            lock_delay,
        }
    }

    /// The takeover rule. Records that `entry` was seen at `key` at `now` and
    /// returns when it may be taken over (`None`: never, the server expires
    /// it): once the same index has been seen unchanged for the holder's ttl
    /// plus the lock delay.
    pub fn takeover_at(&mut self, key: &str, entry: &Entry, now: Instant) -> Option<Instant> {
        if entry.lease.is_some() {
            return None;
        }
        let ttl = entry.record.ttl();
        let fresh = Observation {
            index: entry.index,
            since: now,
        };
        let since = match self.seen.get_mut(key) {
            Some(seen) if seen.index == entry.index => seen.since,
            Some(seen) => {
                *seen = fresh;
                now
            }
            None => {
                self.seen.insert(key.into(), fresh);
                now
            }
        };
        Some(later(later(since, ttl), self.lock_delay))
    }

    /// Forgets `key` (we got it).
    pub fn forget(&mut self, key: &str) {
        self.seen.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn entry(index: u64, ttl_ms: u64) -> Entry {
        Entry {
            record: Record {
                owner: Arc::from("other"),
                nonce: 1,
                ttl_ms,
                written_at_ms: 0,
            },
            index,
            lease: None,
        }
    }

    #[test]
    fn takeover_needs_the_same_index_for_a_whole_ttl() {
        let mut seen = Observations::new(Duration::ZERO);
        let t0 = Instant::now();
        let first = seen.takeover_at("k", &entry(5, 1000), t0);
        assert_eq!(first, Some(t0 + Duration::from_secs(1)));
        // Seen again later: still counted from the first sight.
        let again = seen.takeover_at("k", &entry(5, 1000), t0 + Duration::from_millis(900));
        assert_eq!(again, first);
        // A new index restarts the count.
        let t1 = t0 + Duration::from_millis(950);
        assert_eq!(
            seen.takeover_at("k", &entry(6, 1000), t1),
            Some(t1 + Duration::from_secs(1))
        );
    }

    #[test]
    fn observations_are_bounded_and_a_waited_key_keeps_its_count() {
        let mut seen = Observations::new(Duration::ZERO);
        let t0 = Instant::now();
        let first = seen.takeover_at("waited", &entry(5, 1000), t0);
        for i in 0..MAX_OBSERVED_KEYS * 2 {
            seen.takeover_at(&format!("k{i}"), &entry(1, 1000), t0);
            assert!(seen.seen.len() <= MAX_OBSERVED_KEYS);
            if i % 1000 == 0 {
                // A waiter polling the key: its count still runs from t0.
                assert_eq!(seen.takeover_at("waited", &entry(5, 1000), t0), first);
            }
        }
        seen.forget("waited");
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(
            seen.takeover_at("waited", &entry(5, 1000), t1),
            Some(t1 + Duration::from_secs(1))
        );
    }

    #[test]
    fn leased_records_are_never_taken_over() {
        let mut seen = Observations::new(Duration::ZERO);
        let mut leased = entry(5, 1000);
        leased.lease = Some(crate::store::LeaseId(7));
        assert_eq!(seen.takeover_at("k", &leased, Instant::now()), None);
    }

    #[test]
    fn huge_durations_saturate() {
        let mut seen = Observations::new(Duration::MAX);
        let now = Instant::now();
        assert!(seen.takeover_at("k", &entry(1, u64::MAX), now).is_some());
        assert!(deadline(now, Duration::MAX) > now);
    }

    #[test]
    fn deadline_is_ttl_minus_margin_from_the_earliest_send() {
        let t0 = Instant::now();
        assert_eq!(
            deadline(t0, Duration::from_secs(10)),
            t0 + Duration::from_secs(9)
        );
        assert_eq!(
            deadline(t0, Duration::from_millis(30)),
            t0 + Duration::from_millis(25)
        );
    }
}
