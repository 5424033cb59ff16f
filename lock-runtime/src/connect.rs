//! Building a client from a backend URL (for CLIs and configuration files).

use crate::client::LockClient;
use crate::error::LockError;
use crate::store::net::redact::scheme_of;

impl LockClient {
    /// A client for the backend named by `url`, with default options:
    ///
    /// | URL | backend | feature |
    /// |---|---|---|
    /// | `memory` or `memory://` | a new private in-memory store | always |
    /// | `etcd://[user:pass@]host:port[,host:port...][/prefix][?options]`, `etcds://...` (TLS) | etcd | `etcd` |
    /// | `ravendb+http://host[:port][,host[:port]...]/database[?options]`, `ravendb+https://...` (TLS) | RavenDB | `ravendb` |
    ///
    /// etcd options: `ca=/path/ca.pem` (required with `etcds://`),
    /// `cert=/path/client.pem&key=/path/client.key`, `domain=name` (to verify in
    /// the servers' certificates), `timeout=500ms` (per request), `connect_timeout=2s`.
    /// RavenDB options: `ca=/path/ca.pem` (trusted instead of the system's roots)
    /// and `cert=/path/client.pem&key=/path/client.key` (the client certificate
    /// RavenDB authenticates), both with `ravendb+https://` only;
    /// `timeout=5s` (per request), `connect_timeout=2s`, `foreign_ttl=5m` (how
    /// long a value that is not a distlock record must stay unchanged before it
    /// is taken over; see
    /// `RavenDbStoreBuilder::foreign_ttl`). RavenDB URLs take no
    /// `user:password@`. `cert=` and `key=` go together; an unknown option is an
    /// error naming the known ones; a TLS file that cannot be read fails here,
    /// naming the file. What a URL cannot say (a key prefix, PEM bytes) goes on
    /// the store's builder, then [`LockClient::new`]. The facade's crate
    /// documentation has an example of every form.
    ///
    /// The store connects lazily: a server that is down shows up as
    /// [`LockError::Unavailable`] on the first lock, not here. A malformed URL,
    /// or a backend this build was compiled without, is a [`LockError::Config`]
    /// that says what to fix. Credentials in the URL never appear in errors.
    ///
    /// ```
    /// let client = distlock::LockClient::connect("memory://")?;
    /// assert_eq!(client.backend(), "memory");
    /// let error = distlock::LockClient::connect("zookeeper://host").unwrap_err();
    /// assert!(error.to_string().contains("zookeeper"));
    /// # Ok::<(), distlock::LockError>(())
    /// ```
    pub fn connect(url: &str) -> Result<LockClient, LockError> {
        const KNOWN: &str = "use memory://, etcd://, etcds://, ravendb+http:// or ravendb+https://";
        if url == "memory" {
            return Ok(LockClient::memory());
        }
        match scheme_of(url) {
            Some("memory") => Ok(LockClient::memory()),
            Some("etcd" | "etcds") => connect_etcd(url),
            Some("ravendb+http" | "ravendb+https") => connect_ravendb(url),
            Some(other) => Err(LockError::config(format!(
                "unknown backend scheme {other:?}: {KNOWN}"
            ))),
            // What stands before a missing "://" may be a user name or a
            // password: it is not shown.
            None => Err(LockError::config(format!(
                "the backend URL does not start with a scheme and \"://\": {KNOWN}"
            ))),
        }
    }
}

impl LockClient {
    /// Like [`LockClient::connect`], with the password of the user the URL
    /// names given apart from the URL (read from a file or the environment,
    /// where `ps`, shell history and logs do not show it):
    /// `connect_with_password("etcd://app@10.0.0.5:2379", &password)`.
    ///
    /// A [`LockError::Config`] when the backend takes no password (memory,
    /// RavenDB, which authenticates with client certificates), the URL names no
    /// user, or the URL has a password already.
    ///
    /// ```
    /// let error = distlock::LockClient::connect_with_password("memory://", "s3cret").unwrap_err();
    /// assert!(error.to_string().contains("no password"));
    /// assert!(!format!("{error} {error:?}").contains("s3cret"));
    /// ```
    pub fn connect_with_password(url: &str, password: &str) -> Result<LockClient, LockError> {
        if url == "memory" {
            return Err(LockError::config(
                "the memory backend takes no password: remove it",
            ));
        }
        match scheme_of(url) {
            Some("etcd" | "etcds") => connect_etcd_with_password(url, password),
            Some("memory") => Err(LockError::config(
                "the memory backend takes no password: remove it",
            )),
            Some("ravendb+http" | "ravendb+https") => Err(LockError::config(
                "RavenDB takes no password: it authenticates with a client certificate \
                 (ravendb+https://host/db?cert=client.pem&key=client.key)",
            )),
            // Unknown or missing scheme: the same error as without a password.
            _ => LockClient::connect(url),
        }
    }
}

/// `url` without its userinfo (`etcd://app:s3cret@h:2379/p` gives
/// `etcd://h:2379/p`): what may be shown or handed to a child process. Without a
/// `scheme://` start, everything up to the last `@` is dropped.
///
/// ```
/// assert_eq!(distlock::credential_free_url("etcd://app:s3cret@10.0.0.5:2379/jobs"), "etcd://10.0.0.5:2379/jobs");
/// assert_eq!(distlock::credential_free_url("memory://"), "memory://");
/// ```
pub fn credential_free_url(url: &str) -> String {
    let start = scheme_of(url).map_or(0, |scheme| scheme.len() + 3);
    match url[start..].rsplit_once('@') {
        Some((_, rest)) => format!("{}{rest}", &url[..start]),
        None => url.to_owned(),
    }
}

/// A client on the store a backend built from its URL, or the backend's
/// configuration error as [`LockError::Config`] (its message names the backend).
#[cfg(any(feature = "etcd", feature = "ravendb"))]
fn client<S, E>(backend: &str, built: Result<S, E>) -> Result<LockClient, LockError>
where
    S: crate::store::CompareExchange,
    E: std::error::Error + Send + Sync + 'static,
{
    built
        .map(LockClient::new)
        .map_err(|error| LockError::Config {
            message: format!("cannot use the {backend} URL: {error}"),
            source: Some(Box::new(error)),
        })
}

#[cfg(feature = "etcd")]
fn connect_etcd(url: &str) -> Result<LockClient, LockError> {
    client("etcd", crate::store::etcd::EtcdStore::from_url(url))
}

#[cfg(feature = "etcd")]
fn connect_etcd_with_password(url: &str, password: &str) -> Result<LockClient, LockError> {
    let builder = crate::store::etcd::EtcdStore::builder_from_url(url)
        .map_err(|error| LockError::Config {
            message: format!("cannot use the etcd URL: {error}"),
            source: Some(Box::new(error)),
        })?
        .with_password(password.to_owned())
        .map_err(LockError::config)?;
    client("etcd", builder.build())
}

#[cfg(not(feature = "etcd"))]
fn connect_etcd_with_password(url: &str, _password: &str) -> Result<LockClient, LockError> {
    connect_etcd(url)
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
    client(
        "RavenDB",
        crate::store::ravendb::RavenDbStore::from_url(url),
    )
}

#[cfg(not(feature = "ravendb"))]
fn connect_ravendb(_url: &str) -> Result<LockClient, LockError> {
    Err(LockError::config(
        "this build has no RavenDB backend: enable the `ravendb` feature of distlock",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(url: &str) -> String {
        match LockClient::connect(url) {
            Err(error @ LockError::Config { .. }) => format!("{error} {error:?}"),
            other => panic!("{url}: expected a Config error, got {other:?}"),
        }
    }

    #[test]
    fn schemes() {
        for memory in ["memory", "memory://", "memory://x"] {
            assert!(LockClient::connect(memory).is_ok(), "{memory}");
        }
        assert!(config_error("zookeeper://h:1").contains("\"zookeeper\""));
        assert!(config_error("").contains("memory://"));
    }

    #[test]
    fn a_url_without_separator_is_not_shown() {
        // Regression: the whole URL, password included, was the "unknown scheme".
        for url in [
            "etcdA//aaa:A0A00AAA@localhost:22379",
            "cd//aaaa:A0A00AAA@h:1",
            "etcd:aaaa:A0A00AAA@h:1",
            "aaaa:A0A00AAA@h://x",
            "etcd//aaaa:A0A00AAAh:1",
        ] {
            let shown = config_error(url);
            assert!(!shown.contains("A0A00A"), "{url}: {shown}");
            assert!(shown.contains("://"), "{url}: {shown}");
        }
    }
}
