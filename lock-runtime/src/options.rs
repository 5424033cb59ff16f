//! Per-lock options and key validation.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::LockError;

/// The longest accepted lock key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// The shortest accepted ttl. Renewal runs every ttl/3 and must beat the
/// deadline with a real network round trip in between.
pub const MIN_TTL: Duration = Duration::from_millis(30);

/// How long to wait for a lock that someone else holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Wait {
    /// Try once; if held, fail with [`LockError::Busy`] (`"0s"`).
    Never,
    /// Wait up to this long, then fail with [`LockError::Timeout`].
    For(Duration),
    /// Wait until the lock is free (`"forever"`), like [`tokio::sync::Mutex::lock`].
    #[default]
    Forever,
}

impl Wait {
    /// The wait as an optional bound (`None` = forever).
    pub fn limit(self) -> Option<Duration> {
        match self {
            Wait::Never => Some(Duration::ZERO),
            Wait::For(duration) => Some(duration),
            Wait::Forever => None,
        }
    }
}

impl From<Duration> for Wait {
    fn from(duration: Duration) -> Self {
        if duration.is_zero() {
            Wait::Never
        } else {
            Wait::For(duration)
        }
    }
}

/// The error of parsing a [`Wait`] or a duration option.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {reason} (write it like \"500ms\", \"5s\", \"1m 30s\"{extra})"
)]
pub struct ParseDurationError {
    input: String,
    reason: String,
    extra: &'static str,
}

impl FromStr for Wait {
    type Err = ParseDurationError;

    /// Parses `"forever"`, `"never"`, or a duration such as `"0s"` or `"5s"`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "forever" => Ok(Wait::Forever),
            "never" => Ok(Wait::Never),
            other => parse_duration(other).map(Wait::from).map_err(|mut error| {
                error.extra = ", or \"forever\"";
                error
            }),
        }
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::Never => f.write_str("0s"),
            Wait::For(duration) => write!(f, "{}", humantime::format_duration(*duration)),
            Wait::Forever => f.write_str("forever"),
        }
    }
}

/// Parses a human duration (`"30s"`, `"1m"`, `"250ms"`) with [`humantime`].
pub fn parse_duration(s: &str) -> Result<Duration, ParseDurationError> {
    humantime::parse_duration(s.trim()).map_err(|error| ParseDurationError {
        input: s.to_owned(),
        reason: error.to_string(),
        extra: "",
    })
}

/// What [`crate::LockClient::with_lock`] does when the lock is lost while the
/// body runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnLost {
    /// Drop (cancel) the body at its next await point and return [`LockError::Lost`].
    #[default]
    Cancel,
    /// Let the body finish; it can check [`crate::Current::is_lost`] and must fence
    /// its writes with the token.
    Continue,
}

/// Options for one lock acquisition. Defaults come from the client
/// ([`crate::LockClientBuilder`]); the library defaults are
/// `ttl = 30s`, `wait = forever`, `renew = true`, no `hold_at_least`,
/// `on_lost = cancel`.
///
/// ```
/// use std::time::Duration;
/// use distlock::{LockOptions, Wait};
///
/// let options = LockOptions::default()
///     .ttl(Duration::from_secs(10))
///     .wait(Wait::For(Duration::from_secs(2)));
/// assert_eq!(options.ttl, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct LockOptions {
    /// How long the lock survives without renewal (a crashed holder's lock is
    /// free after this). Renewal runs every ttl/3.
    pub ttl: Duration,
    /// How long to wait when the lock is held.
    pub wait: Wait,
    /// Renew the lock in the background while it is held. Without renewal the
    /// lock is reported lost once its ttl runs out.
    pub renew: bool,
    /// Keep the lock at least this long after acquiring it, even if released
    /// sooner (a fast scheduled job on skewed clocks then runs once per tick).
    pub hold_at_least: Option<Duration>,
    /// What `with_lock` does with its body when the lock is lost.
    pub on_lost: OnLost,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            ttl: Duration::from_secs(30),
            wait: Wait::Forever,
            renew: true,
            hold_at_least: None,
            on_lost: OnLost::Cancel,
        }
    }
}

impl LockOptions {
    /// Sets [`LockOptions::ttl`].
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets [`LockOptions::wait`] (accepts a [`Wait`] or a [`Duration`]).
    pub fn wait(mut self, wait: impl Into<Wait>) -> Self {
        self.wait = wait.into();
        self
    }

    /// Sets [`LockOptions::renew`].
    pub fn renew(mut self, renew: bool) -> Self {
        self.renew = renew;
        self
    }

    /// Sets [`LockOptions::hold_at_least`].
    pub fn hold_at_least(mut self, hold: Duration) -> Self {
        self.hold_at_least = Some(hold).filter(|hold| !hold.is_zero());
        self
    }

    /// Sets [`LockOptions::on_lost`].
    pub fn on_lost(mut self, on_lost: OnLost) -> Self {
        self.on_lost = on_lost;
        self
    }

    /// Checks the options; the error says which value is wrong.
    pub fn validate(&self) -> Result<(), LockError> {
        if self.ttl < MIN_TTL {
            return Err(LockError::config(format!(
                "ttl {:?} is below the minimum of {:?}: renewal runs every ttl/3 and needs time \
                 for a round trip; use a ttl of at least a few seconds in production",
                self.ttl, MIN_TTL
            )));
        }
        if u64::try_from(self.ttl.as_millis()).is_err() {
            return Err(LockError::config(format!(
                "ttl {:?} is too large",
                self.ttl
            )));
        }
        Ok(())
    }
}

/// Checks that `key` can be used as a lock key: not empty, at most
/// [`MAX_KEY_LEN`] bytes, no control characters.
pub fn validate_key(key: &str) -> Result<(), LockError> {
    let reason = if key.is_empty() {
        "the key is empty; give every lock a name such as \"orders/42\""
    } else if key.len() > MAX_KEY_LEN {
        "the key is longer than 1024 bytes; hash long identifiers into the key"
    } else if has_control(key) {
        "the key contains a control character; escape or drop it"
    } else {
        return Ok(());
    };
    Err(LockError::InvalidKey {
        key: key.chars().take(64).collect(),
        reason,
    })
}

/// Whether `key` contains a C0 or C1 control character or DEL. A byte scan:
/// C0 and DEL are single bytes, C1 is 0xC2 followed by 0x80..=0x9F in UTF-8.
fn has_control(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.iter().enumerate().any(|(i, &b)| {
        b < 0x20
            || b == 0x7f
            || (b == 0xc2 && bytes.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_parses_forever_durations_and_zero() {
        assert_eq!("forever".parse::<Wait>(), Ok(Wait::Forever));
        assert_eq!("0s".parse::<Wait>(), Ok(Wait::Never));
        assert_eq!(
            "1m 30s".parse::<Wait>(),
            Ok(Wait::For(Duration::from_secs(90)))
        );
        let error = "soon".parse::<Wait>().err().map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("\"soon\"") && e.contains("forever")));
    }

    #[test]
    fn bad_keys_are_rejected_with_a_reason() {
        assert!(validate_key("orders/1").is_ok());
        for bad in ["", "a\nb", "\u{7f}x", "c1\u{85}"] {
            assert!(matches!(
                validate_key(bad),
                Err(LockError::InvalidKey { .. })
            ));
        }
        for good in ["orders/é", "ключ", "日本", "\u{a0}nbsp"] {
            assert!(validate_key(good).is_ok(), "{good:?}");
        }
        let long = "k".repeat(MAX_KEY_LEN + 1);
        assert!(matches!(
            validate_key(&long),
            Err(LockError::InvalidKey { .. })
        ));
        assert!(validate_key(&"k".repeat(MAX_KEY_LEN)).is_ok());
    }

    #[test]
    fn tiny_ttl_is_a_config_error() {
        let options = LockOptions::default().ttl(Duration::from_millis(1));
        assert!(matches!(options.validate(), Err(LockError::Config { .. })));
    }
}
