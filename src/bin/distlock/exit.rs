//! Exit codes (sysexits.h where one fits, the shell's 126/127 and 128+N
//! otherwise), the one place they are defined and documented.

use std::time::Duration;

use distlock::{LockError, Wait};

/// Bad usage or configuration: an unknown flag, a bad duration or URL.
pub const EX_USAGE: u8 = 64;
/// The backend is unreachable or failed.
pub const EX_UNAVAILABLE: u8 = 69;
/// The lock was lost while the command ran (the command was stopped).
pub const EX_SOFTWARE: u8 = 70;
/// The operating system refused something distlock needs (a thread, a pipe).
pub const EX_OSERR: u8 = 71;
/// The lock is held by someone else (after the wait), or it changed under a
/// forced release: try again later.
pub const EX_TEMPFAIL: u8 = 75;
/// The command exists but cannot be executed.
pub const EX_NOEXEC: u8 = 126;
/// The command was not found.
pub const EX_NOTFOUND: u8 = 127;

/// The exit-code table at the end of every `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0        success; with --if-locked skip, also when the lock was held (command not run)
  N        run: the command's own exit code; 128+N if a signal N killed it
  64       bad usage or configuration (unknown option, bad duration, bad URL)
  69       the backend is unreachable or failed
  70       the lock was lost while held (run: the command was stopped first)
  71       the operating system refused a resource (thread, pipe, process)
  75       the lock is held by someone else (after the wait; see -E), or a forced
           release found the lock changed
  126/127  run: the command cannot be executed / was not found
  128+N    distlock got signal N (SIGTERM 143, SIGINT 130, SIGHUP 129): the
           command's processes were stopped and the lock released

Environment: DISTLOCK_BACKEND (the URL), DISTLOCK_PASSWORD (the password, instead
of the URL or --password-file). The command gets DISTLOCK_KEY, DISTLOCK_TOKEN (the
fencing token) and DISTLOCK_BACKEND without credentials; DISTLOCK_PASSWORD is
removed from its environment.";

/// `--wait`: a duration, `forever`, or a bare number of seconds (flock's `-w 5`).
pub fn parse_wait(text: &str) -> Result<Wait, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return text
            .parse::<f64>()
            .ok()
            .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
            .map(Wait::from)
            .ok_or_else(|| format!("{text:?} is not a number of seconds"));
    }
    text.parse::<Wait>()
        .map_err(|error| format!("{error} (or a number of seconds, such as \"5\")"))
}

/// The exit code for a library error (a conflict uses `conflict`, from `-E`).
pub fn for_error(error: &LockError, conflict: u8) -> u8 {
    match error {
        _ if error.is_contention() => conflict,
        LockError::Lost { .. } => EX_SOFTWARE,
        LockError::InvalidKey { .. } | LockError::Config { .. } => EX_USAGE,
        _ => EX_UNAVAILABLE,
    }
}

/// Prints `distlock: MESSAGE` on stderr and gives `code` back. Control
/// characters are escaped: messages quote keys and holders read from the
/// store, which may hold terminal escapes.
pub fn fail(code: u8, message: impl std::fmt::Display) -> u8 {
    errln!("distlock: {}", shown(&message.to_string()));
    code
}

/// `text` with its control characters escaped (`\u{1b}`), safe to print on a
/// terminal.
pub fn shown(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// 128 + `signal`, as a shell reports a process killed by that signal.
pub fn signalled(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_in_seconds_durations_or_forever() {
        assert_eq!(parse_wait("5"), Ok(Wait::For(Duration::from_secs(5))));
        assert_eq!(parse_wait("0.5"), Ok(Wait::For(Duration::from_millis(500))));
        assert_eq!(parse_wait("2m"), Ok(Wait::For(Duration::from_secs(120))));
        assert_eq!(parse_wait("forever"), Ok(Wait::Forever));
        assert_eq!(parse_wait("0"), Ok(Wait::Never));
        assert_eq!(shown("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\n");
        for bad in ["-1", "1e400", "NaN", "soon", "", "1.2.3"] {
            assert!(parse_wait(bad).is_err(), "{bad}");
        }
    }
}
