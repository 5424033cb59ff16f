//! Process control for tests that start real processes: signals by PID, and guards that
//! kill a process when the test ends, however it ends.
//!
//! Everything here acts on one PID the test knows (a child it spawned, or a PID a child
//! reported), never on processes found by name.

use std::process::{Child, Command, Stdio};

/// Sends `sig` (a `kill` flag such as `-STOP`, `-CONT`, `-TERM`) to process `pid` with
/// the `kill` command; fails the calling test if that does not succeed.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("cannot run kill {sig} {pid}: {e}"));
    assert!(status.success(), "kill {sig} {pid} failed");
}

/// SIGKILLs and reaps a child process on drop.
///
/// ```no_run
/// let child = std::process::Command::new("sleep").arg("60").spawn().unwrap();
/// let child = testkit::process::KillOnDrop(child);
/// // ... the test; the child is killed when `child` goes out of scope.
/// # drop(child);
/// ```
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // std's kill is SIGKILL on Unix, sent to this PID only.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGKILLs a process the test did not spawn itself (such as a command started by a
/// child, which outlives a killed parent) by PID on drop. Errors are ignored: the
/// process may have exited already.
#[derive(Debug)]
pub struct KillPidOnDrop(pub u32);

impl Drop for KillPidOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}
