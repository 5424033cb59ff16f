//! Building a client from a backend URL (for CLIs and configuration files).

use crate::client::LockClient;
use crate::error::LockError;

impl LockClient {
    /// A client for the backend named by `url`, with default options:
    ///
    /// | URL | backend | feature |
    /// |---|---|---|
    /// | `memory` or `memory://` | a new private in-memory store | always |
    /// | `etcd://[user:pass@]host:port[,host:port...][/prefix]`, `etcds://...` (TLS) | etcd | `etcd` |
    /// | `ravendb+http://host:port[,host:port...]/database`, `ravendb+https://...` | RavenDB | `ravendb` |
    ///
    /// The store connects lazily: a server that is down shows up as
    /// [`LockError::Unavailable`] on the first lock, not here. A malformed URL,
    /// or a backend this build was compiled without, is a [`LockError::Config`]
    /// that says what to fix. Credentials in the URL never appear in errors.
    ///
    /// ```
    /// let client = lock_runtime::LockClient::connect("memory://")?;
    /// assert_eq!(client.backend(), "memory");
    /// let error = lock_runtime::LockClient::connect("zookeeper://host").unwrap_err();
    /// assert!(error.to_string().contains("zookeeper"));
    /// # Ok::<(), lock_runtime::LockError>(())
    /// ```
    pub fn connect(url: &str) -> Result<LockClient, LockError> {
        let scheme = url.split_once("://").map_or(url, |(scheme, _)| scheme);
        match scheme {
            "memory" => Ok(LockClient::memory()),
            "etcd" | "etcds" => connect_etcd(url),
            "ravendb+http" | "ravendb+https" => connect_ravendb(url),
            other => Err(LockError::config(format!(
                "unknown backend scheme {other:?}: use memory://, etcd://, etcds://, \
                 ravendb+http:// or ravendb+https://"
            ))),
        }
    }
}

#[cfg(feature = "etcd")]
fn connect_etcd(url: &str) -> Result<LockClient, LockError> {
    crate::store::etcd::EtcdStore::from_url(url)
        .map(LockClient::new)
        .map_err(|error| LockError::Config {
            message: format!("cannot use the etcd URL: {error}"),
            source: Some(Box::new(error)),
        })
}

#[cfg(not(feature = "etcd"))]
fn connect_etcd(_url: &str) -> Result<LockClient, LockError> {
    Err(LockError::config(
        "this build has no etcd backend: enable the `etcd` feature of distlock \
         (it needs `protoc` at build time)",
    ))
}

#[cfg(feature = "ravendb")]
fn connect_ravendb(url: &str) -> Result<LockClient, LockError> {
    crate::store::ravendb::RavenDbStore::from_url(url)
        .map(LockClient::new)
        .map_err(|error| LockError::Config {
            message: format!("cannot use the RavenDB URL: {error}"),
            source: Some(Box::new(error)),
        })
}

#[cfg(not(feature = "ravendb"))]
fn connect_ravendb(_url: &str) -> Result<LockClient, LockError> {
    Err(LockError::config(
        "this build has no RavenDB backend: enable the `ravendb` feature of distlock",
    ))
}
