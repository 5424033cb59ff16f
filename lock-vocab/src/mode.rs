//! How long to wait ([`Wait`]), what a held lock means ([`IfLocked`]), and
//! what a lost lock does to the running body ([`OnLost`]).

use std::error::Error;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::duration::{ParseDurationError, parse_duration};

/// `FromStr` and `Display` of a choice enum with `ALL`, `NAMES` and `name()`:
/// parsing accepts exactly the names, and the error lists them for the option.
macro_rules! choice_text {
    ($choice:ident, $option:literal, $names:literal) => {
        impl FromStr for $choice {
            type Err = ParseChoiceError;

            #[doc = concat!("Parses ", $names, " (exactly; no other spelling).")]
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $choice::ALL
                    .into_iter()
                    .find(|choice| choice.name() == s)
                    .ok_or_else(|| ParseChoiceError::new($option, s, &$choice::NAMES))
            }
        }

        impl fmt::Display for $choice {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

/// How long to wait for a lock that someone else holds.
///
/// Parsed from `"forever"`, `"never"` (the same as `"0s"`), or a duration
/// such as `"5s"` ([`parse_duration`]'s grammar); displayed the same way.
///
/// ```
/// use std::time::Duration;
/// use distlock::Wait;
///
/// assert_eq!("forever".parse::<Wait>()?, Wait::Forever);
/// assert_eq!("0s".parse::<Wait>()?, Wait::Never);
/// assert_eq!(Wait::from(Duration::from_secs(90)).to_string(), "1m 30s");
/// # Ok::<(), distlock::ParseDurationError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Wait {
    /// Try once; if held, fail with `LockError::Busy` (`"0s"`).
    Never,
    /// Wait up to this long, then fail with `LockError::Timeout`.
    For(Duration),
    /// Wait until the lock is free (`"forever"`), like `tokio::sync::Mutex::lock`.
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
    /// A zero duration is [`Wait::Never`].
    fn from(duration: Duration) -> Self {
        if duration.is_zero() {
            Wait::Never
        } else {
            Wait::For(duration)
        }
    }
}

impl FromStr for Wait {
    type Err = ParseDurationError;

    /// Parses `"forever"`, `"never"`, or a duration such as `"0s"` or `"5s"`
    /// (surrounding whitespace is ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "forever" => Ok(Wait::Forever),
            "never" => Ok(Wait::Never),
            other => parse_duration(other).map(Wait::from).map_err(|mut error| {
                // The text as given, not as trimmed.
                s.clone_into(&mut error.input);
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

/// What a lock that another holder keeps means to the caller: the attribute's
/// `if_locked = "..."` and the command-line tool's `--if-locked`.
///
/// [`IfLocked::wait`] turns it into a [`Wait`]; the attribute and the tool
/// both use it, so `"skip"` without a wait tries once in both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IfLocked {
    /// `"wait"`: wait up to the wait, then fail with `LockError::Timeout`.
    #[default]
    Wait,
    /// `"skip"`: if another holder keeps the lock for the whole wait (by
    /// default: it is held right now), do not run the work; skipping is not
    /// an error.
    Skip,
    /// `"error"`: try once; fail with `LockError::Busy` if held.
    Error,
}

impl IfLocked {
    /// Every mode, in the order the docs list them.
    pub const ALL: [IfLocked; 3] = [IfLocked::Wait, IfLocked::Skip, IfLocked::Error];

    const NAMES: [&'static str; 3] = [
        IfLocked::ALL[0].name(),
        IfLocked::ALL[1].name(),
        IfLocked::ALL[2].name(),
    ];

    /// The mode as written in options: `"wait"`, `"skip"` or `"error"`.
    pub const fn name(self) -> &'static str {
        match self {
            IfLocked::Wait => "wait",
            IfLocked::Skip => "skip",
            IfLocked::Error => "error",
        }
    }

    /// The wait this mode implies, given the wait the caller asked for
    /// (`None`: none given) and the default wait (the client's):
    ///
    /// | mode | no wait given | wait given |
    /// |---|---|---|
    /// | `wait` | `default` | the given wait |
    /// | `skip` | [`Wait::Never`] | the given wait |
    /// | `error` | [`Wait::Never`] | [`Wait::Never`] (the attribute rejects the pair at compile time) |
    ///
    /// A scheduled job that finds its lock held has nothing to wait for:
    /// another instance is doing this tick's work, hence `skip`'s default.
    ///
    /// ```
    /// use std::time::Duration;
    /// use distlock::{IfLocked, Wait};
    ///
    /// let five = Wait::For(Duration::from_secs(5));
    /// assert_eq!(IfLocked::Wait.wait(None, Wait::Forever), Wait::Forever);
    /// assert_eq!(IfLocked::Skip.wait(None, Wait::Forever), Wait::Never);
    /// assert_eq!(IfLocked::Skip.wait(Some(five), Wait::Forever), five);
    /// assert_eq!(IfLocked::Error.wait(Some(five), Wait::Forever), Wait::Never);
    /// ```
    pub const fn wait(self, given: Option<Wait>, default: Wait) -> Wait {
        match (self, given) {
            (IfLocked::Error, _) | (IfLocked::Skip, None) => Wait::Never,
            (IfLocked::Wait, None) => default,
            (IfLocked::Wait | IfLocked::Skip, Some(given)) => given,
        }
    }
}

choice_text!(
    IfLocked,
    "if_locked",
    "`\"wait\"`, `\"skip\"` or `\"error\"`"
);

/// What happens to the work running under a lock when the lock is lost
/// (a pause or partition longer than the ttl): the attribute's
/// `on_lost = "..."` and `LockOptions::on_lost`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnLost {
    /// `"cancel"`: drop (cancel) the body at its next await point and return
    /// `LockError::Lost`.
    #[default]
    Cancel,
    /// `"continue"`: let the body finish; it can check `Current::is_lost` and
    /// must fence its writes with the token.
    Continue,
}

impl OnLost {
    /// Every choice, in the order the docs list them.
    pub const ALL: [OnLost; 2] = [OnLost::Cancel, OnLost::Continue];

    const NAMES: [&'static str; 2] = [OnLost::ALL[0].name(), OnLost::ALL[1].name()];

    /// The choice as written in options: `"cancel"` or `"continue"`.
    pub const fn name(self) -> &'static str {
        match self {
            OnLost::Cancel => "cancel",
            OnLost::Continue => "continue",
        }
    }
}

choice_text!(OnLost, "on_lost", "`\"cancel\"` or `\"continue\"`");

/// The error of parsing an [`IfLocked`] or an [`OnLost`]: the option, the
/// text given, and the accepted choices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseChoiceError {
    option: &'static str,
    input: String,
    choices: &'static [&'static str],
}

impl ParseChoiceError {
    fn new(option: &'static str, input: &str, choices: &'static [&'static str]) -> Self {
        ParseChoiceError {
            option,
            input: input.to_owned(),
            choices,
        }
    }

    /// The option, as the attribute names it (`"if_locked"`, `"on_lost"`).
    pub fn option(&self) -> &'static str {
        self.option
    }

    /// The text given.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// The accepted choices, in the order the docs list them.
    pub fn choices(&self) -> &'static [&'static str] {
        self.choices
    }
}

impl fmt::Display for ParseChoiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} {:?}: write one of ", self.option, self.input)?;
        for (i, choice) in self.choices.iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            write!(f, "{separator}{choice:?}")?;
        }
        Ok(())
    }
}

impl Error for ParseChoiceError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_parses_forever_never_and_durations() {
        assert_eq!("forever".parse::<Wait>(), Ok(Wait::Forever));
        assert_eq!(" never ".parse::<Wait>(), Ok(Wait::Never));
        assert_eq!("0s".parse::<Wait>(), Ok(Wait::Never));
        assert_eq!(
            "1m 30s".parse::<Wait>(),
            Ok(Wait::For(Duration::from_secs(90)))
        );
        let error = " soon".parse::<Wait>().err().map(|e| e.to_string());
        assert!(
            error.is_some_and(|e| e.contains("\" soon\"") && e.contains("forever")),
            "the message names the text as given and the word \"forever\""
        );
    }

    #[test]
    fn wait_displays_what_it_parses_from() {
        for wait in [
            Wait::Never,
            Wait::Forever,
            Wait::For(Duration::from_millis(1500)),
            Wait::For(Duration::new(u64::MAX, 999_999_999)),
        ] {
            assert_eq!(wait.to_string().parse::<Wait>(), Ok(wait), "{wait}");
        }
        assert_eq!(Wait::Never.limit(), Some(Duration::ZERO));
        assert_eq!(Wait::Forever.limit(), None);
        assert_eq!(Wait::from(Duration::ZERO), Wait::Never);
    }

    #[test]
    fn if_locked_picks_the_wait() {
        let default = Wait::For(Duration::from_secs(9));
        let five = Wait::For(Duration::from_secs(5));
        let cases = [
            (IfLocked::Wait, None, default),
            (IfLocked::Wait, Some(five), five),
            (IfLocked::Wait, Some(Wait::Forever), Wait::Forever),
            (IfLocked::Skip, None, Wait::Never),
            (IfLocked::Skip, Some(five), five),
            (IfLocked::Skip, Some(Wait::Forever), Wait::Forever),
            (IfLocked::Error, None, Wait::Never),
            (IfLocked::Error, Some(five), Wait::Never),
            (IfLocked::Error, Some(Wait::Forever), Wait::Never),
        ];
        for (mode, given, expected) in cases {
            assert_eq!(mode.wait(given, default), expected, "{mode} {given:?}");
        }
    }

    #[test]
    fn choices_round_trip_through_their_names() {
        for mode in IfLocked::ALL {
            assert_eq!(mode.name().parse::<IfLocked>(), Ok(mode));
            assert_eq!(mode.to_string(), mode.name());
        }
        for choice in OnLost::ALL {
            assert_eq!(choice.name().parse::<OnLost>(), Ok(choice));
            assert_eq!(choice.to_string(), choice.name());
        }
        assert_eq!(IfLocked::default(), IfLocked::Wait);
        assert_eq!(OnLost::default(), OnLost::Cancel);
    }

    #[test]
    fn unknown_choices_list_the_valid_ones() {
        let Err(error) = "maybe".parse::<IfLocked>() else {
            panic!("\"maybe\" parsed");
        };
        assert_eq!(error.option(), "if_locked");
        assert_eq!(error.input(), "maybe");
        assert_eq!(error.choices(), ["wait", "skip", "error"]);
        assert_eq!(
            error.to_string(),
            "invalid if_locked \"maybe\": write one of \"wait\", \"skip\", \"error\""
        );
        let Err(error) = "Cancel".parse::<OnLost>() else {
            panic!("\"Cancel\" parsed");
        };
        assert_eq!(error.choices(), ["cancel", "continue"]);
        assert!(" wait".parse::<IfLocked>().is_err());
    }
}
