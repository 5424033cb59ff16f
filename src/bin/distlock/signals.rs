//! The signals that stop `distlock` (SIGTERM, SIGINT, SIGHUP), caught from the
//! start so none of them kills it with the command still running.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Listens for SIGTERM, SIGINT and SIGHUP.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Starts listening (from now on these signals no longer kill the process).
    pub fn catch() -> io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next of these signals to arrive: its number.
    pub async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => libc_signal::TERM,
            _ = self.int.recv() => libc_signal::INT,
            _ = self.hup.recv() => libc_signal::HUP,
        }
    }
}

/// Signal numbers (the same on every Linux architecture).
pub mod libc_signal {
    /// SIGHUP.
    pub const HUP: i32 = 1;
    /// SIGINT.
    pub const INT: i32 = 2;
    /// SIGTERM.
    pub const TERM: i32 = 15;
}

/// The name of a signal this module catches.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc_signal::HUP => "SIGHUP",
        libc_signal::INT => "SIGINT",
        libc_signal::TERM => "SIGTERM",
        _ => "a signal",
    }
}
