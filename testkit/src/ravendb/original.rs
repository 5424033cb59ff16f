//! A port of the original .NET `RavenDbProcessMonitor` lock (see `DESIGN.md`,
//! section 7, and issue 11), written for the tests from its description, to check
//! that distlock and the original can share compare-exchange keys.
//!
//! The original algorithm, exactly:
//! - `Enter(key)`: loop { `now` = `UtcNow`; put `{ "ExpiresAt": now + lease }` (a .NET
//!   `DateTime`, written as ISO 8601 with seven fraction digits and `Z`, e.g.
//!   `2026-12-01T20:16:48.3170000Z`; the lease is 5 minutes) with index 0; if it
//!   succeeded, return its index; else if the returned value's `ExpiresAt` is before
//!   `now`, put the same object with the returned index and return its index on
//!   success (a value without `ExpiresAt` is never "before now": C# compares null as
//!   false); sleep 20 ms }.
//! - `Exit(key, index)`: delete with that index.
//!
//! Here: [`Original::attempt`] is one pass of the loop's body (without the sleep),
//! [`Original::try_enter_for`] the loop bounded by a wait, [`Original::enter`] the loop
//! (bounded by [`ENTER_LIMIT`] so that a test cannot hang), [`Original::exit`] the
//! release. The lease is configurable ([`Original::lease`], default
//! [`DEFAULT_LEASE`]). The requests are the .NET client's: `PUT
//! /databases/{db}/cmpxchg?key=K&index=I` with the body `{"Object": {...}}`, and
//! `DELETE /databases/{db}/cmpxchg?key=K&index=I`.
//!
//! Where the .NET program would throw (an HTTP failure, an answer that is not the
//! compare-exchange JSON, an `ExpiresAt` that is not a date), this port panics with a
//! message saying what it met, which fails the calling test.
//!
//! ```no_run
//! # async fn run() {
//! use testkit::ravendb::{Server, original::Original};
//! let server = Server::start().await;
//! let original = Original::new(&server);
//! let index = original.enter("sample/resource").await;
//! assert!(original.exit("sample/resource", index).await);
//! # }
//! ```

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{Server, reqwest};

/// The original's lease: the `ExpiresAt` it writes is its clock plus this.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5 * 60);
/// The original's pause between two passes of its loop.
pub const POLL: Duration = Duration::from_millis(20);
/// How long [`Original::enter`] loops before it panics (the original would go on).
pub const ENTER_LIMIT: Duration = Duration::from_secs(10 * 60);

/// 100 ns ticks per second.
const TICKS_PER_SECOND: u64 = 10_000_000;
/// Days from 0001-01-01 to 1970-01-01.
const DAYS_TO_UNIX_EPOCH: u64 = 719_162;
/// Seconds per day.
const DAY_SECONDS: u64 = 86_400;
/// The ticks of the Unix epoch.
const UNIX_EPOCH_TICKS: u64 = DAYS_TO_UNIX_EPOCH * DAY_SECONDS * TICKS_PER_SECOND;
/// Days from 0001-01-01 to 10000-01-01.
const DAYS_TO_YEAR_10000: u64 = 3_652_059;
/// .NET's `DateTime.MaxValue` (9999-12-31T23:59:59.9999999) in ticks.
const MAX_TICKS: u64 = DAYS_TO_YEAR_10000 * DAY_SECONDS * TICKS_PER_SECOND - 1;

/// A UTC date as .NET's `DateTime` holds it: 100 ns ticks since
/// 0001-01-01T00:00:00, up to 9999-12-31T23:59:59.9999999.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DotnetUtc {
    ticks: u64,
}

impl DotnetUtc {
    /// `DateTime.UtcNow`.
    pub fn now() -> DotnetUtc {
        DotnetUtc::from_system(SystemTime::now())
    }

    /// `time` (clamped to .NET's range, to 100 ns).
    pub fn from_system(time: SystemTime) -> DotnetUtc {
        let ticks = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => UNIX_EPOCH_TICKS.saturating_add(duration_ticks(after)),
            Err(before) => UNIX_EPOCH_TICKS.saturating_sub(duration_ticks(before.duration())),
        };
        DotnetUtc {
            ticks: ticks.min(MAX_TICKS),
        }
    }

    /// Unix milliseconds (clamped to .NET's range).
    pub fn from_unix_ms(ms: u64) -> DotnetUtc {
        DotnetUtc {
            ticks: UNIX_EPOCH_TICKS
                .saturating_add(ms.saturating_mul(10_000))
                .min(MAX_TICKS),
        }
    }

    /// Ticks since 0001-01-01T00:00:00.
    pub fn ticks(self) -> u64 {
        self.ticks
    }

    /// Unix milliseconds, rounded down (0 before 1970).
    pub fn unix_ms(self) -> u64 {
        self.ticks.saturating_sub(UNIX_EPOCH_TICKS) / 10_000
    }

    /// `self + by`, saturating at .NET's last date (where .NET would throw).
    pub fn saturating_add(self, by: Duration) -> DotnetUtc {
        DotnetUtc {
            ticks: self.ticks.saturating_add(duration_ticks(by)).min(MAX_TICKS),
        }
    }

    /// Reads a UTC date as .NET's round-trip format writes it:
    /// `yyyy-MM-ddTHH:mm:ss[.f{1,7}]Z` (year 0001-9999, a real calendar date).
    /// `None` for anything else (where the original's JSON reader would throw or
    /// read a date of another kind).
    pub fn parse(text: &str) -> Option<DotnetUtc> {
        let bytes = text.as_bytes();
        let number = |range: std::ops::Range<usize>| -> Option<u64> {
            let part = bytes.get(range)?;
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(part.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
        };
        let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
        if separators.iter().any(|&(at, c)| bytes.get(at) != Some(&c)) {
            return None;
        }
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
        if !(1..=9999).contains(&year)
            || !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let rest = &bytes[19..];
        let fraction_ticks = match rest {
            [b'Z'] => 0,
            [b'.', digits @ .., b'Z'] if (1..=7).contains(&digits.len()) => {
                let value = number(20..20 + digits.len())?;
                value * 10u64.pow(7 - u32::try_from(digits.len()).ok()?)
            }
            _ => return None,
        };
        let days = days_before_year(year) + days_before_month(year, month) + day - 1;
        let seconds = days * DAY_SECONDS + hour * 3600 + minute * 60 + second;
        Some(DotnetUtc {
            ticks: seconds * TICKS_PER_SECOND + fraction_ticks,
        })
    }
}

/// .NET's round-trip format of a UTC `DateTime`: `2026-12-01T20:16:48.3170000Z`.
impl fmt::Display for DotnetUtc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fraction = self.ticks % TICKS_PER_SECOND;
        let seconds = self.ticks / TICKS_PER_SECOND;
        let (days, in_day) = (seconds / DAY_SECONDS, seconds % DAY_SECONDS);
        let (year, month, day) = civil(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:07}Z",
            in_day / 3600,
            in_day / 60 % 60,
            in_day % 60
        )
    }
}

fn duration_ticks(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos() / 100).unwrap_or(u64::MAX)
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 0001-01-01 to January 1 of `year` (proleptic Gregorian).
fn days_before_year(year: u64) -> u64 {
    let y = year - 1;
    y * 365 + y / 4 - y / 100 + y / 400
}

/// Days from January 1 to the first of `month` in `year`.
fn days_before_month(year: u64, month: u64) -> u64 {
    (1..month).map(|m| days_in_month(year, m)).sum()
}

/// The date (year, month, day) `days` days after 0001-01-01.
fn civil(days: u64) -> (u64, u64, u64) {
    // Whole 400-, 100-, 4- and 1-year periods; the last 100- and 1-year period of
    // their cycles is one day longer, hence the caps at 3.
    let (cycles400, rest) = (days / 146_097, days % 146_097);
    let cycles100 = (rest / 36_524).min(3);
    let rest = rest - cycles100 * 36_524;
    let (cycles4, rest) = (rest / 1_461, rest % 1_461);
    let years = (rest / 365).min(3);
    let mut day_of_year = rest - years * 365;
    let year = cycles400 * 400 + cycles100 * 100 + cycles4 * 4 + years + 1;
    let mut month = 1;
    while month < 12 && day_of_year >= days_in_month(year, month) {
        day_of_year -= days_in_month(year, month);
        month += 1;
    }
    (year, month, day_of_year + 1)
}

/// One pass of the original's loop, as [`Original::attempt`] saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The put with index 0 succeeded: the key was free.
    Entered {
        /// The index the lock got.
        index: u64,
        /// The original's clock at the start of the pass.
        now: DotnetUtc,
    },
    /// The value's `ExpiresAt` was before `now` and the put at its index succeeded.
    TookOver {
        /// The index the lock got.
        index: u64,
        /// The original's clock at the start of the pass.
        now: DotnetUtc,
        /// The index of the value taken over.
        previous: u64,
        /// That value's `ExpiresAt`.
        expired: DotnetUtc,
    },
    /// Not this time: the value's `ExpiresAt` is not before `now` (or it has none), or
    /// the takeover put lost a race.
    Refused {
        /// The original's clock at the start of the pass.
        now: DotnetUtc,
        /// The index of the value that kept the key.
        index: u64,
        /// That value's `ExpiresAt` (`None`: it has none).
        expires_at: Option<DotnetUtc>,
    },
}

impl Attempt {
    /// The index the lock got, if it got it.
    pub fn index(&self) -> Option<u64> {
        match self {
            Attempt::Entered { index, .. } | Attempt::TookOver { index, .. } => Some(*index),
            Attempt::Refused { .. } => None,
        }
    }
}

/// The original lock on one database of a RavenDB server.
#[derive(Clone, Debug)]
pub struct Original {
    http: reqwest::Client,
    cmpxchg: String,
    lease: Duration,
}

impl Original {
    /// The original on `server`'s database, over the server's own HTTP(S) client.
    pub fn new(server: &Server) -> Original {
        Original::with_client(server.http.clone(), &server.url(), &server.database)
    }

    /// The original on database `database` of the server at `url`
    /// (`http://127.0.0.1:PORT`), over `http`.
    pub fn with_client(http: reqwest::Client, url: &str, database: &str) -> Original {
        Original {
            http,
            cmpxchg: format!("{}/databases/{database}/cmpxchg", url.trim_end_matches('/')),
            lease: DEFAULT_LEASE,
        }
    }

    /// The lease (default [`DEFAULT_LEASE`]): each `ExpiresAt` written is the clock
    /// plus this.
    pub fn lease(mut self, lease: Duration) -> Original {
        self.lease = lease;
        self
    }

    /// `Enter(key)`: loops until it gets the key; returns the index. Panics after
    /// [`ENTER_LIMIT`] (where the original would go on) so that a test cannot hang.
    pub async fn enter(&self, key: &str) -> u64 {
        match self.try_enter_for(key, ENTER_LIMIT).await {
            Some(index) => index,
            None => panic!("the original's Enter({key}) did not get the key in {ENTER_LIMIT:?}"),
        }
    }

    /// `Enter(key)` giving up after `max_wait`: passes of the loop 20 ms apart until one
    /// gets the key (its index) or `max_wait` has passed since the start (`None`). At
    /// least one pass.
    pub async fn try_enter_for(&self, key: &str, max_wait: Duration) -> Option<u64> {
        let started = Instant::now();
        loop {
            if let Some(index) = self.attempt(key).await.index() {
                return Some(index);
            }
            if started.elapsed() >= max_wait {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// One pass of `Enter`'s loop, without the sleep: put-if-absent, else take over a
    /// value whose `ExpiresAt` is before the clock.
    pub async fn attempt(&self, key: &str) -> Attempt {
        let now = DotnetUtc::now();
        let object = json!({ "ExpiresAt": now.saturating_add(self.lease).to_string() });
        let (successful, index, value) = self.put(key, 0, &object).await;
        if successful {
            return Attempt::Entered { index, now };
        }
        let expires_at = expires_at(key, &value);
        match expires_at {
            Some(expired) if expired < now => {
                let (successful, taken, _) = self.put(key, index, &object).await;
                if successful {
                    Attempt::TookOver {
                        index: taken,
                        now,
                        previous: index,
                        expired,
                    }
                } else {
                    Attempt::Refused {
                        now,
                        index,
                        expires_at,
                    }
                }
            }
            _ => Attempt::Refused {
                now,
                index,
                expires_at,
            },
        }
    }

    /// `Exit(key, index)`: a delete conditioned on `index`; whether the server
    /// answered `Successful` (4.1 also does for a missing key).
    pub async fn exit(&self, key: &str, index: u64) -> bool {
        let url = self.url(key, index);
        let answer = self.http.delete(url).send().await;
        let (successful, _, _) = self.answer(key, "DELETE", answer).await;
        successful
    }

    fn url(&self, key: &str, index: u64) -> reqwest::Url {
        let index = index.to_string();
        reqwest::Url::parse_with_params(&self.cmpxchg, [("key", key), ("index", &index)])
            .unwrap_or_else(|e| panic!("the original: no URL for key {key:?}: {e}"))
    }

    async fn put(&self, key: &str, index: u64, object: &Value) -> (bool, u64, Value) {
        let body = json!({ "Object": object }).to_string();
        let answer = self.http.put(self.url(key, index)).body(body).send().await;
        self.answer(key, "PUT", answer).await
    }

    /// `(Successful, Index, Value)` of a compare-exchange answer.
    async fn answer(
        &self,
        key: &str,
        method: &str,
        answer: Result<reqwest::Response, reqwest::Error>,
    ) -> (bool, u64, Value) {
        let answer =
            answer.unwrap_or_else(|e| panic!("the original: {method} cmpxchg {key:?}: {e}"));
        let status = answer.status();
        let text = answer
            .text()
            .await
            .unwrap_or_else(|e| panic!("the original: {method} cmpxchg {key:?}: {e}"));
        assert!(
            status == reqwest::StatusCode::OK,
            "the original: {method} cmpxchg {key:?} answered {status}: {text}"
        );
        let parsed: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("the original: {method} cmpxchg {key:?} answered no JSON ({e}): {text}")
        });
        let (Some(successful), Some(index)) =
            (parsed["Successful"].as_bool(), parsed["Index"].as_u64())
        else {
            panic!("the original: {method} cmpxchg {key:?}: not a compare-exchange answer: {text}");
        };
        (successful, index, parsed["Value"].clone())
    }
}

/// The `ExpiresAt` of a compare-exchange value (`{"Object": {..}}`) as the original
/// reads it: `None` when absent or null; a panic where its JSON reader would throw.
fn expires_at(key: &str, value: &Value) -> Option<DotnetUtc> {
    let object = &value["Object"];
    assert!(
        object.is_object() || object.is_null(),
        "the original: the value at {key:?} is not an object (the .NET reader would throw): \
         {value}"
    );
    match &object["ExpiresAt"] {
        Value::Null => None,
        Value::String(text) => Some(DotnetUtc::parse(text).unwrap_or_else(|| {
            panic!("the original: ExpiresAt {text:?} at {key:?} is not a .NET UTC date")
        })),
        other => panic!("the original: ExpiresAt at {key:?} is not a date: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_and_parse_as_dotnet_does() {
        let cases = [
            (0, "0001-01-01T00:00:00.0000000Z"),
            (UNIX_EPOCH_TICKS, "1970-01-01T00:00:00.0000000Z"),
            (MAX_TICKS, "9999-12-31T23:59:59.9999999Z"),
        ];
        for (ticks, text) in cases {
            assert_eq!(DotnetUtc { ticks }.to_string(), text);
            assert_eq!(DotnetUtc::parse(text), Some(DotnetUtc { ticks }));
        }
        let sample = DotnetUtc::from_unix_ms(1_796_156_208_317);
        assert_eq!(sample.to_string(), "2026-12-01T20:16:48.3170000Z");
        assert_eq!(sample.unix_ms(), 1_796_156_208_317);
        assert_eq!(
            DotnetUtc::parse("2000-02-29T12:00:00.5Z").map(DotnetUtc::unix_ms),
            Some(951_825_600_500)
        );
        assert_eq!(
            DotnetUtc::parse("2026-12-01T20:16:48Z"),
            DotnetUtc::parse("2026-12-01T20:16:48.0000000Z")
        );
        for bad in [
            "",
            "2026-12-01",
            "2026-12-01T20:16:48.3170000",
            "2026-12-01T20:16:48.31700000Z",
            "2026-12-01T20:16:48.Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T20:16:48+01:00",
            "+2026-12-01T20:16:48Z",
        ] {
            assert_eq!(DotnetUtc::parse(bad), None, "{bad}");
        }
        assert_eq!(
            DotnetUtc::from_unix_ms(u64::MAX),
            DotnetUtc { ticks: MAX_TICKS }
        );
        assert_eq!(
            DotnetUtc::from_unix_ms(0).saturating_add(Duration::MAX),
            DotnetUtc { ticks: MAX_TICKS }
        );
    }

    /// Every day of a whole 400-year cycle of the Gregorian calendar (which
    /// repeats after it), and the last ones .NET holds, format to dates in order
    /// that parse back to them.
    #[test]
    fn every_day_round_trips() {
        let mut previous = (0, 0, 0);
        let cycle = 0..146_097 + 1;
        let last = DAYS_TO_YEAR_10000 - 1_000..DAYS_TO_YEAR_10000;
        for day in cycle.chain(last) {
            let at = DotnetUtc {
                ticks: day * DAY_SECONDS * TICKS_PER_SECOND + 123,
            };
            let text = at.to_string();
            assert_eq!(DotnetUtc::parse(&text), Some(at), "{text}");
            let date = civil(day);
            assert!(date > previous, "{text}");
            previous = date;
            if day == 146_097 {
                assert_eq!(date, (401, 1, 1));
            }
        }
        assert_eq!(previous, (9999, 12, 31));
    }

    #[test]
    fn missing_or_null_expiry_is_never_before_now() {
        assert_eq!(expires_at("k", &json!({"Object": {"owner": "x"}})), None);
        assert_eq!(
            expires_at("k", &json!({"Object": {"ExpiresAt": null}})),
            None
        );
        assert_eq!(
            expires_at(
                "k",
                &json!({"Object": {"ExpiresAt": "1970-01-01T00:00:00.0010000Z"}})
            ),
            Some(DotnetUtc::from_unix_ms(1))
        );
    }
}
