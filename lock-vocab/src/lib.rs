//! The words [distlock](https://docs.rs/distlock) uses in three places at
//! once: its runtime (`lock-runtime`), its `#[distributed_lock]` attribute
//! (`lock-macros`, which checks options at compile time) and its `distlock`
//! command-line tool. Each rule is defined here once, so the three cannot
//! drift apart.
//!
//! - Keys: [`MAX_KEY_LEN`], and the characters an interpolated key value keeps
//!   as they are ([`is_unreserved`]; every other byte is written `%XX`).
//! - Durations: the one grammar ([`parse_duration`], `"30s"`, `"1m 30s"`) and
//!   the shortest ttl ([`MIN_TTL`]).
//! - Modes: how long to wait ([`Wait`]), what a held lock means
//!   ([`IfLocked`], with [`IfLocked::wait`] mapping it to a wait), and what a
//!   lost lock does to the running body ([`OnLost`]).
//!
//! Depend on `distlock`, which re-exports all of it:
//!
//! ```
//! use std::time::Duration;
//! use distlock::{IfLocked, Wait, parse_duration};
//!
//! let wait: Wait = "5s".parse()?;
//! assert_eq!(wait, Wait::For(Duration::from_secs(5)));
//! assert_eq!(parse_duration("1m 30s")?, Duration::from_secs(90));
//! // `if_locked = "skip"` without a `wait` tries once.
//! assert_eq!(IfLocked::Skip.wait(None, Wait::Forever), Wait::Never);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The crate has no dependency but `humantime` (the duration grammar), so that
//! the proc-macro crate can use it.

mod duration;
mod key;
mod mode;

pub use duration::{MIN_TTL, ParseDurationError, parse_duration};
pub use key::{MAX_KEY_LEN, is_unreserved, is_unreserved_char};
pub use mode::{IfLocked, OnLost, ParseChoiceError, Wait};
