//! The process-wide default client used by `#[distributed_lock]` when no
//! `client = ...` is given.

use std::sync::OnceLock;

use crate::client::LockClient;
use crate::error::LockError;

static INSTALLED: OnceLock<LockClient> = OnceLock::new();

/// Installs `client` as the process-wide default. Call it once at start-up.
///
/// Fails with [`LockError::Config`] if a client was already installed.
///
/// ```
/// let client = distlock::LockClient::memory();
/// distlock::install(client).unwrap();
/// assert!(distlock::installed().is_ok());
/// assert!(distlock::install(distlock::LockClient::memory()).is_err());
/// ```
pub fn install(client: LockClient) -> Result<(), LockError> {
    INSTALLED.set(client).map_err(|_| {
        LockError::config("a default lock client is already installed; call install() once")
    })
}

/// The installed default client, or a [`LockError::Config`] that says how to
/// install one.
pub fn installed() -> Result<&'static LockClient, LockError> {
    INSTALLED.get().ok_or_else(|| {
        LockError::config(
            "no default lock client is installed: call distlock::install(LockClient::...) at \
             start-up, or pass `client = ...` to #[distributed_lock]",
        )
    })
}
