//! The backend a command names, and keeping its credentials out of sight: the
//! password comes from a file or `DISTLOCK_PASSWORD` rather than the URL, no
//! message shows the URL's userinfo, and a child process gets the URL without
//! it (and no `DISTLOCK_PASSWORD`).

use std::process::Command;

use distlock::{LockClient, credential_free_url};

use crate::BackendArgs;
use crate::exit::{EX_USAGE, fail};

/// The environment variable that may hold the password.
pub const PASSWORD_ENV: &str = "DISTLOCK_PASSWORD";
/// The environment variable that may hold the backend URL.
pub const BACKEND_ENV: &str = "DISTLOCK_BACKEND";

/// A client for the backend, or the exit code after saying what is wrong.
pub fn connect(args: &BackendArgs) -> Result<LockClient, u8> {
    let password = match &args.password_file {
        Some(path) => match std::fs::read_to_string(path) {
            // One trailing newline is the file's, not the password's.
            Ok(text) => Some(
                text.strip_suffix('\n')
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .unwrap_or(&text)
                    .to_owned(),
            ),
            Err(error) => {
                return Err(fail(
                    EX_USAGE,
                    format!("cannot read the password file {}: {error}", path.display()),
                ));
            }
        },
        None => std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()),
    };
    let connected = match &password {
        Some(password) => LockClient::connect_with_password(&args.backend, password),
        None => LockClient::connect(&args.backend),
    };
    connected.map_err(|error| fail(EX_USAGE, error))
}

/// Sets up `command`'s environment: the backend URL without credentials, no
/// password.
pub fn scrub_environment(command: &mut Command, backend_url: &str) {
    command
        .env(BACKEND_ENV, credential_free_url(backend_url))
        .env_remove(PASSWORD_ENV);
}
