//! The one duration grammar, and the shortest ttl.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// The shortest accepted ttl. Renewal runs every ttl/3 and must beat the
/// deadline with a real network round trip in between.
pub const MIN_TTL: Duration = Duration::from_millis(30);

/// Parses a human duration such as `"30s"`, `"250ms"`, `"1m 30s"` or `"2h"`
/// (humantime's grammar; surrounding whitespace is ignored).
///
/// Every duration distlock reads goes through this function: the attribute's
/// `ttl`, `wait` and `hold_at_least` (at compile time), the command-line
/// tool's `--ttl`, `--wait` and `--hold-at-least`, and [`Wait`](crate::Wait)'s
/// `FromStr`.
///
/// ```
/// use std::time::Duration;
/// use distlock::parse_duration;
///
/// assert_eq!(parse_duration(" 1m 30s ")?, Duration::from_secs(90));
/// assert_eq!(parse_duration("250ms")?, Duration::from_millis(250));
/// let error = parse_duration("soon").unwrap_err();
/// assert_eq!(error.input(), "soon");
/// # Ok::<(), distlock::ParseDurationError>(())
/// ```
///
/// # Errors
///
/// [`ParseDurationError`] when `s` is not a duration (no unit, an unknown
/// unit, stray characters) or does not fit in a [`Duration`].
pub fn parse_duration(s: &str) -> Result<Duration, ParseDurationError> {
    humantime::parse_duration(s.trim()).map_err(|error| ParseDurationError {
        input: s.to_owned(),
        reason: error.to_string(),
        extra: "",
    })
}

/// The error of [`parse_duration`], and of parsing a [`Wait`](crate::Wait):
/// the text given, what is wrong with it, and how to write a duration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseDurationError {
    pub(crate) input: String,
    reason: String,
    /// More accepted words, for the message (`, or "forever"`).
    pub(crate) extra: &'static str,
}

impl ParseDurationError {
    /// The text that is not a duration, as given.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What is wrong with it, such as `expected number at 0` (offsets count
    /// from the first non-blank character).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ParseDurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration {:?}: {} (write it like \"500ms\", \"5s\", \"1m 30s\"{})",
            self.input, self.reason, self.extra
        )
    }
}

impl Error for ParseDurationError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let cases = [
            ("30s", Duration::from_secs(30)),
            ("500ms", Duration::from_millis(500)),
            ("1m 30s", Duration::from_secs(90)),
            ("  2h\t", Duration::from_secs(7200)),
            ("0s", Duration::ZERO),
            ("1us", Duration::from_micros(1)),
            ("18446744073709551615s", Duration::from_secs(u64::MAX)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn errors_name_the_input_and_the_fix() {
        for bad in [
            "",
            " ",
            "soon",
            "5",
            "5 parsecs",
            "-1s",
            "1s5",
            "18446744073709551616s",
        ] {
            let Err(error) = parse_duration(bad) else {
                panic!("{bad:?} parsed");
            };
            assert_eq!(error.input(), bad);
            assert!(!error.reason().is_empty());
            let message = error.to_string();
            assert!(message.contains(&format!("{bad:?}")), "{message}");
            assert!(message.contains("\"500ms\""), "{message}");
            assert!(!message.contains("forever"), "{message}");
        }
    }

    #[test]
    fn min_ttl_is_thirty_milliseconds() {
        assert_eq!(MIN_TTL, Duration::from_millis(30));
        assert_eq!(parse_duration("30ms"), Ok(MIN_TTL));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Garbage never panics; an accepted text formats and parses back to
        /// the same duration.
        #[test]
        fn garbage_never_panics(text in "\\PC{0,40}") {
            if let Ok(duration) = parse_duration(&text) {
                let formatted = humantime::format_duration(duration).to_string();
                prop_assert_eq!(parse_duration(&formatted), Ok(duration));
            }
        }

        /// Duration-like garbage: digits, units and blanks in any order.
        #[test]
        fn duration_like_garbage_never_panics(
            text in "[0-9 ]{0,25}(ns|us|ms|s|m|h|d|w|M|y|min|sec|hours|x)?[0-9 smh]{0,10}"
        ) {
            let _ = parse_duration(&text);
        }

        /// Every duration survives humantime's formatting, whole range.
        #[test]
        fn humantime_formatting_round_trips(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let duration = Duration::new(secs, nanos);
            let formatted = humantime::format_duration(duration).to_string();
            prop_assert_eq!(parse_duration(&formatted), Ok(duration), "{}", formatted);
        }

        /// Small durations too (the range most ttls and waits are in).
        #[test]
        fn small_durations_round_trip(millis in 0u64..10_000_000) {
            let duration = Duration::from_millis(millis);
            let formatted = humantime::format_duration(duration).to_string();
            prop_assert_eq!(parse_duration(&formatted), Ok(duration), "{}", formatted);
        }
    }
}
