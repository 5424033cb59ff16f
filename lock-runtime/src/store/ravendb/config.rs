//! Configuring a [`RavenDbStore`]: the builder, `ravendb+http(s)://` URLs, TLS.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::transport::{BACKEND, Inner, RavenDbStore};
use crate::store::StoreError;
use crate::store::net::cache::BoundedCache;
use crate::store::net::failover::Failover;
use crate::store::net::redact::redact_url;
use crate::store::net::tls::{self, ClientIdentity, PemKind, TlsError};
use crate::store::net::url::{self as net_url, EndpointProblem, UrlProblem};

const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long past a record's ttl `@expires` is set (garbage collection only).
const DEFAULT_EXPIRY_GRACE: Duration = Duration::from_secs(24 * 3600);
/// How long a foreign value must stay unchanged before it is taken over by
/// default: the lease of the original .NET `RavenDbProcessMonitor`.
pub const DEFAULT_FOREIGN_TTL: Duration = Duration::from_secs(5 * 60);
/// How many keys a store remembers as existing (see the module docs).
const MAX_KNOWN_KEYS: usize = 16_384;
/// The schemes of a RavenDB URL.
const SCHEMES: &[&str] = &["ravendb+http", "ravendb+https"];

/// A configuration problem found while building a [`RavenDbStore`]; nothing was contacted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RavenDbConfigError {
    /// The `ravendb+http(s)://` URL could not be parsed.
    #[error(
        "invalid RavenDB URL: {reason} (expected ravendb+http://host:port[,host:port...]/database, \
         or ravendb+https:// for TLS)"
    )]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// No node URL was configured.
    #[error("no RavenDB node URL configured: give at least one, such as http://127.0.0.1:8080")]
    NoNodes,
    /// A node URL is not a usable `http://host:port` / `https://host:port` address.
    #[error("invalid RavenDB node URL {url:?}: {reason}")]
    InvalidNode {
        /// The URL as given, with any `user:password@` replaced by `***@`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No database name was configured.
    #[error("no RavenDB database configured: call .database(\"locks\") or put it in the URL path")]
    NoDatabase,
    /// The database name cannot be used.
    #[error("invalid RavenDB database name {name:?}: {reason}")]
    InvalidDatabase {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// TLS material was configured for plain `http://` nodes.
    #[error(
        "a client certificate or CA was configured but the node URLs are http://; use https:// URLs"
    )]
    TlsWithoutHttps,
    /// The client certificate, its key or the CA certificate could not be used.
    #[error("unusable TLS material ({what}): {reason}")]
    Tls {
        /// Which part: `client certificate`, `client key`, `CA certificate`.
        what: &'static str,
        /// Why (never contains key material).
        reason: String,
    },
    /// A TLS file (CA certificate, client certificate or key) could not be
    /// read; nothing of its content is shown.
    #[error(
        "cannot read the {what} file {}: {source} (check the path given to ca=, cert= or key=, \
         or to the builder)",
        path.display()
    )]
    TlsFile {
        /// Which part: `client certificate`, `client key`, `CA certificate`.
        what: &'static str,
        /// The file, as given.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The foreign ttl ([`RavenDbStoreBuilder::foreign_ttl`], `foreign_ttl=`
    /// in the URL) is below [`MIN_TTL`](crate::MIN_TTL).
    #[error(
        "the foreign ttl {}ms is below the minimum {}ms: give foreign_ttl= in the URL (or \
         RavenDbStoreBuilder::foreign_ttl) at least that, such as 5m (the default)",
        ttl.as_millis(),
        crate::MIN_TTL.as_millis()
    )]
    ForeignTtlTooShort {
        /// The foreign ttl as given.
        ttl: Duration,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl From<TlsError> for RavenDbConfigError {
    fn from(error: TlsError) -> Self {
        match error {
            TlsError::Read { what, path, source } => RavenDbConfigError::TlsFile {
                what: what.as_str(),
                path,
                source,
            },
            error => RavenDbConfigError::Tls {
                what: error.what().as_str(),
                reason: error.to_string(),
            },
        }
    }
}

impl From<UrlProblem> for RavenDbConfigError {
    fn from(problem: UrlProblem) -> Self {
        RavenDbConfigError::InvalidUrl {
            reason: problem.into_reason(),
        }
    }
}

/// Configures a [`RavenDbStore`]; [`RavenDbStoreBuilder::build`] contacts nothing.
#[derive(Debug)]
pub struct RavenDbStoreBuilder {
    pub(super) urls: Vec<String>,
    pub(super) database: Option<String>,
    prefix: String,
    identity: Option<ClientIdentity>,
    ca_pem: Vec<Vec<u8>>,
    request_timeout: Duration,
    connect_timeout: Duration,
    expiry_grace: Option<Duration>,
    foreign_ttl: Duration,
    create_database: bool,
    discover_topology: bool,
    /// A TLS file that could not be read, reported by `build`.
    deferred: Option<TlsError>,
}

impl Default for RavenDbStoreBuilder {
    fn default() -> Self {
        RavenDbStoreBuilder {
            urls: Vec::new(),
            database: None,
            prefix: String::new(),
            identity: None,
            ca_pem: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            expiry_grace: Some(DEFAULT_EXPIRY_GRACE),
            foreign_ttl: DEFAULT_FOREIGN_TTL,
            create_database: false,
            discover_topology: false,
            deferred: None,
        }
    }
}

impl RavenDbStoreBuilder {
    /// Adds one node URL, such as `http://127.0.0.1:8080`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// Adds several node URLs; requests start at the one that answered last and
    /// move to the next on failure.
    pub fn urls<I, S>(self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        urls.into_iter().fold(self, Self::url)
    }

    /// The database holding the compare-exchange items.
    pub fn database(mut self, name: impl Into<String>) -> Self {
        self.database = Some(name.into());
        self
    }

    /// A prefix put before every lock key (for example `myapp/locks/`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The client certificate (PEM, leaf first, chain may follow) and its private
    /// key (PEM: PKCS#8, PKCS#1 or SEC1) for HTTPS with X.509 authentication.
    /// `key_pem` may be the same PEM as `cert_pem` if it holds both.
    pub fn client_certificate_pem(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some(ClientIdentity::new(cert_pem.into(), key_pem.into()));
        self
    }

    /// Reads the client certificate and its key from PEM files (see
    /// [`RavenDbStoreBuilder::client_certificate_pem`]; both paths may name the
    /// same file). A file that cannot be read is reported by
    /// [`RavenDbStoreBuilder::build`] as [`RavenDbConfigError::TlsFile`], naming
    /// the path and never the content.
    pub fn client_certificate_files(
        mut self,
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Self {
        match ClientIdentity::from_files(cert_path.as_ref(), key_path.as_ref()) {
            Ok(identity) => self.identity = Some(identity),
            Err(error) => self.defer(error),
        }
        self
    }

    /// A CA certificate (PEM) to trust for the server's certificate. When at
    /// least one is given, only these are trusted; otherwise the platform's.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem.push(pem.into());
        self
    }

    /// Reads a CA certificate from a PEM file (see
    /// [`RavenDbStoreBuilder::ca_certificate_pem`]). A file that cannot be read
    /// is reported by [`RavenDbStoreBuilder::build`] as
    /// [`RavenDbConfigError::TlsFile`].
    pub fn ca_certificate_file(mut self, path: impl AsRef<Path>) -> Self {
        match tls::read_pem(path.as_ref(), PemKind::CaCertificate) {
            Ok(pem) => self.ca_pem.push(pem),
            Err(error) => self.defer(error),
        }
        self
    }

    /// Keeps the first unreadable TLS file for `build` to report.
    fn defer(&mut self, error: TlsError) {
        self.deferred.get_or_insert(error);
    }

    /// Per-request timeout, including the answer's body (default 5 s). A node
    /// that does not answer in time is skipped for the next one.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Connection timeout (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long after a record's ttl its `@expires` date lies (default 24 h);
    /// `None` writes no `@expires`. Garbage collection only: a server that sweeps
    /// expired items removes abandoned locks that long after their ttl.
    pub fn expiry_grace(mut self, grace: Option<Duration>) -> Self {
        self.expiry_grace = grace;
        self
    }

    /// How long a value at a lock key that is not a distlock record must stay
    /// unchanged (the same index, seen by this client's monotonic clock)
    /// before this store's clients take it over; default
    /// [`DEFAULT_FOREIGN_TTL`], 5 minutes, the lease of the original .NET
    /// `RavenDbProcessMonitor`. At least [`MIN_TTL`](crate::MIN_TTL), else
    /// [`RavenDbStoreBuilder::build`] fails with
    /// [`RavenDbConfigError::ForeignTtlTooShort`]. URL option: `foreign_ttl=5m`.
    ///
    /// Such a value (the original's `{"ExpiresAt": ..}`, or anything another
    /// tool wrote) is a lock held by a foreign holder: acquiring waits on it
    /// like on a distlock holder whose ttl is this one, and takes it over by a
    /// compare-exchange on its index once it stayed unchanged this long (plus
    /// the client's lock delay). Its `ExpiresAt` is never compared with the
    /// local clock. Set it to at least the longest time a foreign holder may
    /// hold a key without rewriting it: the original's lease, or longer.
    ///
    /// ```
    /// use distlock::store::ravendb::{RavenDbConfigError, RavenDbStore};
    /// use std::time::Duration;
    ///
    /// let store = RavenDbStore::builder()
    ///     .url("http://127.0.0.1:8080")
    ///     .database("locks")
    ///     .foreign_ttl(Duration::from_secs(60))
    ///     .build()?;
    /// assert_eq!(store.foreign_ttl(), Duration::from_secs(60));
    /// let short = RavenDbStore::builder()
    ///     .url("http://127.0.0.1:8080")
    ///     .database("locks")
    ///     .foreign_ttl(Duration::from_millis(1))
    ///     .build();
    /// assert!(matches!(short, Err(RavenDbConfigError::ForeignTtlTooShort { .. })));
    /// # Ok::<(), RavenDbConfigError>(())
    /// ```
    pub fn foreign_ttl(mut self, ttl: Duration) -> Self {
        self.foreign_ttl = ttl;
        self
    }

    /// Whether [`RavenDbStoreBuilder::connect`] creates the database when it does
    /// not exist (default: no; needs an admin certificate on secured servers).
    pub fn create_database(mut self, yes: bool) -> Self {
        self.create_database = yes;
        self
    }

    /// Whether [`RavenDbStoreBuilder::connect`] asks the cluster for its topology
    /// and adds the nodes it learns to the configured ones (default: no). See
    /// [`RavenDbStore::refresh_topology`].
    pub fn discover_topology(mut self, yes: bool) -> Self {
        self.discover_topology = yes;
        self
    }

    /// Builds the store without contacting any node.
    pub fn build(self) -> Result<RavenDbStore, RavenDbConfigError> {
        if let Some(error) = self.deferred {
            return Err(error.into());
        }
        if self.urls.is_empty() {
            return Err(RavenDbConfigError::NoNodes);
        }
        let mut nodes = Vec::with_capacity(self.urls.len());
        let mut https = None;
        for url in &self.urls {
            let node = parse_node(url)?;
            let is_https = node.starts_with("https://");
            if *https.get_or_insert(is_https) != is_https {
                return Err(RavenDbConfigError::InvalidNode {
                    url: redact_url(url),
                    reason: "all nodes must use the same scheme".into(),
                });
            }
            nodes.push(node);
        }
        let database = self.database.ok_or(RavenDbConfigError::NoDatabase)?;
        validate_database(&database)?;
        if self.foreign_ttl < crate::MIN_TTL {
            return Err(RavenDbConfigError::ForeignTtlTooShort {
                ttl: self.foreign_ttl,
            });
        }
        let https = https.unwrap_or(false);
        let mut client = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .no_proxy();
        let has_tls_material = self.identity.is_some() || !self.ca_pem.is_empty();
        if has_tls_material && !https {
            return Err(RavenDbConfigError::TlsWithoutHttps);
        }
        // Always a preconfigured rustls (ring) config: reqwest's `rustls-no-provider`
        // build would otherwise need a process-wide default crypto provider, even for
        // plain http:// (where the config is never used).
        let config = if https {
            tls_config(self.identity.as_ref(), &self.ca_pem)?
        } else {
            plain_http_tls_config()?
        };
        client = client.tls_backend_preconfigured(config);
        let client = client.build().map_err(RavenDbConfigError::Client)?;
        Ok(RavenDbStore {
            inner: Arc::new(Inner {
                client,
                nodes: RwLock::new(Arc::new(nodes)),
                https,
                failover: Failover::new(BACKEND, self.request_timeout),
                database,
                prefix: self.prefix,
                expiry_grace: self.expiry_grace,
                foreign_ttl: self.foreign_ttl,
                create_database: self.create_database,
                client_certificate: self.identity.is_some(),
                known: Mutex::new(BoundedCache::new(MAX_KNOWN_KEYS)),
            }),
        })
    }

    /// Builds the store, then, as configured, learns the cluster's nodes
    /// ([`RavenDbStoreBuilder::discover_topology`]) and creates the database when
    /// missing ([`RavenDbStoreBuilder::create_database`]).
    pub async fn connect(self) -> Result<RavenDbStore, ConnectError> {
        let discover = self.discover_topology;
        let store = self.build()?;
        if discover {
            store.refresh_topology().await?;
        }
        if store.inner.create_database {
            store.ensure_database().await?;
        }
        Ok(store)
    }
}

/// Why [`RavenDbStoreBuilder::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] RavenDbConfigError),
    /// The nodes failed to give the topology or to create the database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RavenDbStore {
    /// A builder; at least one URL and a database are required.
    pub fn builder() -> RavenDbStoreBuilder {
        RavenDbStoreBuilder::default()
    }

    /// A builder from a URL:
    /// `ravendb+http://host[:port][,host[:port]...]/database[?options]`, or
    /// `ravendb+https://...` for TLS. Options, joined with `&`, values
    /// percent-encoded where needed:
    ///
    /// - `ca=/path/ca.pem`: trust this CA for the servers' certificates
    ///   instead of the platform's roots (`ravendb+https://` only);
    /// - `cert=/path/client.pem&key=/path/client.key`: the client certificate
    ///   RavenDB authenticates, and its private key; both or neither
    ///   (`ravendb+https://` only; the two may name the same file);
    /// - `timeout=5s` (per request, default 5 s), `connect_timeout=2s`
    ///   (default 2 s), in the crate's duration grammar
    ///   ([`parse_duration`](crate::parse_duration): `250ms`, `2s`, `1m`);
    /// - `foreign_ttl=5m`: how long a value that is not a distlock record
    ///   must stay unchanged before it is taken over (default 5 min; see
    ///   [`RavenDbStoreBuilder::foreign_ttl`]), in the same grammar.
    ///
    /// A file that cannot be read is reported by
    /// [`RavenDbStoreBuilder::build`] ([`RavenDbConfigError::TlsFile`], naming
    /// the path, never the content). A `user:password@` is rejected (RavenDB
    /// authenticates with client certificates), and no error quotes it or a
    /// host.
    ///
    /// ```
    /// use distlock::store::ravendb::{RavenDbConfigError, RavenDbStore};
    ///
    /// let builder = RavenDbStore::builder_from_url(
    ///     "ravendb+https://a.example,b.example/locks?ca=/etc/raven/ca.pem\
    ///      &cert=/etc/raven/client.pem&key=/etc/raven/client.key&timeout=2s",
    /// )?;
    /// // The files are read now; a missing one is reported by `build`:
    /// assert!(matches!(builder.build(), Err(RavenDbConfigError::TlsFile { .. })));
    /// // TLS files need TLS:
    /// let error = RavenDbStore::builder_from_url("ravendb+http://h:8080/locks?ca=ca.pem")
    ///     .unwrap_err();
    /// assert!(error.to_string().contains("ravendb+https://"));
    /// # Ok::<(), RavenDbConfigError>(())
    /// ```
    pub fn builder_from_url(url: &str) -> Result<RavenDbStoreBuilder, RavenDbConfigError> {
        let invalid = |reason: &str| RavenDbConfigError::InvalidUrl {
            reason: reason.to_owned(),
        };
        let parts = net_url::split(url, SCHEMES)?;
        let https = parts.scheme == "ravendb+https";
        if parts.userinfo.is_some() {
            return Err(invalid(
                "credentials in the URL are not used by RavenDB: use a client certificate \
                 (cert=/path/client.pem&key=/path/client.key with ravendb+https://)",
            ));
        }
        // Checked first, and not quoted: with a lost '@', a host may hold a
        // password (and the rest of it may then be in the path or the query).
        let hosts = net_url::hosts(parts.hosts, false)?;
        let database = parts
            .path
            .ok_or_else(|| invalid("no database: add /<database> after the hosts"))?;
        if database.is_empty() || database.contains('/') || parts.fragment.is_some() {
            return Err(invalid("the path must be exactly one database name"));
        }
        // Not quoted: with a lost '@', the path may hold a password.
        if let Err(RavenDbConfigError::InvalidDatabase { reason, .. }) = validate_database(database)
        {
            return Err(RavenDbConfigError::InvalidUrl {
                reason: format!("invalid database name: {reason}"),
            });
        }
        let options = net_url::options(parts.query, &["foreign_ttl"])?;
        if !https && (options.ca.is_some() || options.client_certificate.is_some()) {
            return Err(invalid(
                "ca=, cert= and key= are TLS options: use ravendb+https:// \
                 (ravendb+http:// is plain HTTP)",
            ));
        }
        let mut builder = RavenDbStore::builder().database(database);
        let scheme = if https { "https" } else { "http" };
        for host in hosts {
            builder = builder.url(format!("{scheme}://{host}"));
        }
        if let Some(ca) = &options.ca {
            builder = builder.ca_certificate_file(ca);
        }
        if let Some((cert, key)) = &options.client_certificate {
            builder = builder.client_certificate_files(cert, key);
        }
        if let Some(timeout) = options.timeout {
            builder = builder.request_timeout(timeout);
        }
        if let Some(timeout) = options.connect_timeout {
            builder = builder.connect_timeout(timeout);
        }
        for (name, value) in &options.extra {
            // The last one given counts.
            if *name == "foreign_ttl" {
                builder = builder.foreign_ttl(net_url::positive_duration(name, value)?);
            }
        }
        Ok(builder)
    }

    /// Builds a store from a URL (see [`RavenDbStore::builder_from_url`]).
    pub fn from_url(url: &str) -> Result<RavenDbStore, RavenDbConfigError> {
        Self::builder_from_url(url)?.build()
    }
}

/// Checks one node URL (`http://host[:port]` or `https://...`, a trailing `/`
/// allowed) and returns it without the trailing `/`.
pub(super) fn parse_node(url: &str) -> Result<String, RavenDbConfigError> {
    let invalid = |reason: &str| RavenDbConfigError::InvalidNode {
        url: redact_url(url),
        reason: reason.to_owned(),
    };
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| invalid("must start with http:// or https://"))?;
    net_url::split_endpoint(rest, false).map_err(|problem| match problem {
        EndpointProblem::Credentials => {
            invalid("credentials in the URL are not used by RavenDB: use a client certificate")
        }
        EndpointProblem::Path => invalid("give only scheme://host:port, the database separately"),
        EndpointProblem::Host(reason) => invalid(reason),
    })?;
    Ok(trimmed.to_owned())
}

fn validate_database(name: &str) -> Result<(), RavenDbConfigError> {
    let invalid = |reason| RavenDbConfigError::InvalidDatabase {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > 128 {
        return Err(invalid("longer than 128 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(invalid("use only letters, digits, '_', '-' and '.'"));
    }
    Ok(())
}

/// The rustls (ring) config builder every client starts from.
fn rustls_builder()
-> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, RavenDbConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RavenDbConfigError::Tls {
            what: "protocol versions",
            reason: e.to_string(),
        })
}

/// A config that trusts nothing, for clients that only speak http://.
fn plain_http_tls_config() -> Result<rustls::ClientConfig, RavenDbConfigError> {
    Ok(rustls_builder()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

fn tls_config(
    identity: Option<&ClientIdentity>,
    ca_pem: &[Vec<u8>],
) -> Result<rustls::ClientConfig, RavenDbConfigError> {
    let tls_error = |what, reason: String| RavenDbConfigError::Tls { what, reason };
    let builder = rustls_builder()?;
    let builder = if ca_pem.is_empty() {
        use rustls_platform_verifier::BuilderVerifierExt;
        builder
            .with_platform_verifier()
            .map_err(|e| tls_error("platform verifier", e.to_string()))?
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for pem in ca_pem {
            for cert in tls::certificates(pem, PemKind::CaCertificate)? {
                roots
                    .add(cert)
                    .map_err(|e| tls_error("CA certificate", e.to_string()))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match identity {
        Some(identity) => {
            let (chain, key) = identity.parse()?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error("client certificate", e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_nodes_and_database() {
        let b = RavenDbStore::builder_from_url("ravendb+https://h1:8080,h2:8081/locks");
        let b = b.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.urls, ["https://h1:8080", "https://h2:8081"]);
        assert_eq!(b.database.as_deref(), Some("locks"));
        for bad in [
            "http://h:1/db",
            "ravendb+http://h:1",
            "ravendb+http://h:1/",
            "ravendb+http:///db",
            "ravendb+http://h:1,,h:2/db",
            "ravendb+http://h:1/a/b",
            "ravendb+http://h:1/db?x=1",
            "ravendb+http://h:1/db?ca=/ca.pem",
            "ravendb+http://h:1/db#x",
            "ravendb+http://h:0/db",
        ] {
            assert!(
                RavenDbStore::from_url(bad).is_err(),
                "{bad} must be rejected"
            );
        }
        assert!(matches!(
            RavenDbStore::from_url("ravendb+http://u:p@h:1/db"),
            Err(RavenDbConfigError::InvalidUrl { .. })
        ));
    }

    /// Regression: the node URL in `InvalidNode` repeated `user:password@`, and
    /// a password with a '/' was cut into a host and a database.
    #[test]
    fn url_errors_never_show_the_password() {
        for url in [
            "ravendb+http://a:AAAAAA00@h:1/A",
            "ravendb+https://a:AAAAAA00@[::1]:8080/db",
            "ravendb+http://a:AAAA/AA00@h:1/db",
            "ravendb+http://a:AAAA?AA00@h:1/db",
            "ravendb+http://a:AAAA@AA00@h:1/db",
            // The '@' lost (deleted, or typed as ',' or '/'): no userinfo is
            // recognised, and the hosts are rejected without being quoted.
            "ravendb+http://a:AAAAAA00h:1/db",
            "ravendb+http://a:AAAAAA00,h:1/db",
            "ravendb+http://a:AAAAAA00raven.local/db",
            "ravendb+http://a:AAAAAA00/h:1/db",
            // A '/' typed into the user name and the '@' lost: the database
            // name holds the password.
            "ravendb+http://a/aa:AAAAAA00h:1",
            // Both ':' and '@' lost: a host that the URL parser rejects.
            "ravendb+http://aAAAAAA00127.0.0.1:8080/db",
        ] {
            match RavenDbStore::from_url(url) {
                Err(error) => {
                    let shown = format!("{error} {error:?}");
                    assert!(!shown.contains("AAAA"), "{url}: {shown}");
                }
                Ok(store) => panic!("{url}: accepted as {store:?}"),
            }
        }
        // A node URL given on the builder is shown with its userinfo redacted.
        match RavenDbStore::builder()
            .url("http://u:SECRET@h:1")
            .database("d")
            .build()
        {
            Err(RavenDbConfigError::InvalidNode { url, .. }) => assert_eq!(url, "http://***@h:1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn node_urls() {
        for (given, node) in [
            ("http://h:1", "http://h:1"),
            (" https://raven.local/ ", "https://raven.local"),
            ("http://[::1]:8080//", "http://[::1]:8080"),
        ] {
            assert_eq!(parse_node(given).ok().as_deref(), Some(node), "{given}");
        }
        for bad in [
            "h:1",
            "ftp://h:1",
            "http://",
            "http://h:1/db",
            "http://h 1:1",
            "http://h:x",
        ] {
            assert!(
                matches!(parse_node(bad), Err(RavenDbConfigError::InvalidNode { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_never_shows_key_material() {
        let builder = RavenDbStore::builder()
            .url("https://h:1")
            .database("d")
            .client_certificate_pem("CERT", "-----BEGIN PRIVATE KEY-----SECRET");
        let shown = format!("{builder:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("<redacted>"));
        // ... nor does the error about it.
        match builder.build() {
            Err(e @ RavenDbConfigError::Tls { .. }) => {
                let shown = format!("{e} {e:?}");
                assert!(!shown.contains("SECRET"), "{shown}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tls_material_needs_https() {
        let result = RavenDbStore::builder()
            .url("http://h:1")
            .database("d")
            .ca_certificate_pem("x")
            .build();
        assert!(matches!(result, Err(RavenDbConfigError::TlsWithoutHttps)));
        let result = RavenDbStore::builder()
            .url("https://h:1")
            .database("d")
            .ca_certificate_pem("x")
            .build();
        match result {
            Err(RavenDbConfigError::Tls { what, reason }) => {
                assert_eq!(
                    (what, reason.as_str()),
                    ("CA certificate", "no PEM certificate found")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// A file under the temporary directory holding `text` (removed on drop).
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "distlock-ravendb-config-{}-{name}",
                std::process::id()
            ));
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            TempFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap_or_else(|| panic!("{:?}", self.0))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    // The PEM layer checks framing and base64 only: any DER-shaped bytes do.
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n";

    fn builder(url: &str) -> RavenDbStoreBuilder {
        RavenDbStore::builder_from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn url_options_are_read() {
        let ca = TempFile::new("options-ca.pem", CERT);
        let cert = TempFile::new("options-client.pem", CERT);
        let key = TempFile::new("options-client.key", KEY);
        let url = format!(
            "ravendb+https://h:1,h:2/locks?ca={}&cert={}&key={}&timeout=250ms&connect_timeout=1m",
            ca.path(),
            cert.path(),
            key.path()
        );
        let b = builder(&url);
        assert_eq!(b.urls, ["https://h:1", "https://h:2"]);
        assert_eq!(b.database.as_deref(), Some("locks"));
        assert_eq!(b.ca_pem, [CERT.as_bytes()]);
        let identity = b.identity.as_ref().map(|i| i.cert_pem.as_slice());
        assert_eq!(identity, Some(CERT.as_bytes()));
        assert_eq!(b.request_timeout, Duration::from_millis(250));
        assert_eq!(b.connect_timeout, Duration::from_secs(60));
        assert!(b.deferred.is_none(), "{:?}", b.deferred);
        // Percent-encoded paths; timeouts alone over plain HTTP.
        let encoded = ca.path().replace('/', "%2F");
        assert_eq!(
            builder(&format!("ravendb+https://h/db?ca={encoded}")).ca_pem,
            [CERT.as_bytes()]
        );
        let b = builder("ravendb+http://h:1/db?timeout=2s&connect_timeout=500ms");
        assert_eq!(
            (b.request_timeout, b.connect_timeout),
            (Duration::from_secs(2), Duration::from_millis(500))
        );
        assert!(b.build().is_ok());
        // No options: the defaults.
        let b = builder("ravendb+https://h/db");
        assert_eq!(b.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(b.foreign_ttl, DEFAULT_FOREIGN_TTL);
        assert!(b.identity.is_none() && b.ca_pem.is_empty());
    }

    #[test]
    fn the_foreign_ttl_is_read_from_the_url_and_checked_by_build() {
        let b = builder("ravendb+http://h:1/db?foreign_ttl=2s");
        assert_eq!(b.foreign_ttl, Duration::from_secs(2));
        let store = b.build().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.foreign_ttl(), Duration::from_secs(2));
        // The last one given counts.
        let b = builder("ravendb+http://h:1/db?foreign_ttl=1m&foreign_ttl=90s");
        assert_eq!(b.foreign_ttl, Duration::from_secs(90));
        assert_eq!(
            RavenDbStore::from_url("ravendb+http://h:1/db")
                .map(|s| s.foreign_ttl())
                .ok(),
            Some(Duration::from_secs(300))
        );
        // Below MIN_TTL: refused by build, naming the option.
        for url in [
            "ravendb+http://h:1/db?foreign_ttl=29ms",
            "ravendb+http://h:1/db?foreign_ttl=1ms",
        ] {
            match RavenDbStore::from_url(url) {
                Err(e @ RavenDbConfigError::ForeignTtlTooShort { .. }) => {
                    assert!(e.to_string().contains("foreign_ttl="), "{e}");
                    assert!(e.to_string().contains("minimum 30ms"), "{e}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        let at_min = RavenDbStore::builder()
            .url("http://h:1")
            .database("db")
            .foreign_ttl(crate::MIN_TTL)
            .build();
        assert!(at_min.is_ok(), "{at_min:?}");
    }

    #[test]
    fn url_options_are_rejected_where_they_make_no_sense() {
        for (url, reason) in [
            ("ravendb+http://h:1/db?ca=/ca.pem", "use ravendb+https://"),
            (
                "ravendb+http://h:1/db?cert=/c.pem&key=/k.pem",
                "use ravendb+https://",
            ),
            ("ravendb+https://h:1/db?cert=/c.pem", "cert= needs key="),
            ("ravendb+https://h:1/db?key=/k.pem", "key= needs cert="),
            ("ravendb+http://h:1/db?key=/k.pem", "key= needs cert="),
            ("ravendb+http://h:1/db?timeout=0s", "greater than zero"),
            (
                "ravendb+http://h:1/db?connect_timeout=5",
                "invalid duration",
            ),
            ("ravendb+http://h:1/db?timeout=", "invalid duration"),
            (
                "ravendb+https://h:1/db?domain=x",
                "unknown option \"domain\" (known: ca, cert, key, timeout, connect_timeout, \
                 foreign_ttl)",
            ),
            ("ravendb+https://h:1/db?ca=%zz", "two hex digits"),
            ("ravendb+http://h:1/db?foreign_ttl=0s", "greater than zero"),
            ("ravendb+http://h:1/db?foreign_ttl=5", "invalid duration"),
            ("ravendb+https://h:1/db?x", "unknown option \"x\""),
        ] {
            match RavenDbStore::builder_from_url(url) {
                Err(e @ RavenDbConfigError::InvalidUrl { .. }) => {
                    assert!(e.to_string().contains(reason), "{url}: {e}")
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn unreadable_tls_files_are_reported_by_build_with_their_path() {
        let key = TempFile::new("unreadable-client.key", KEY);
        for (url, what, path) in [
            (
                "ravendb+https://h/db?ca=/nonexistent/ca.pem".to_owned(),
                "CA certificate",
                "/nonexistent/ca.pem",
            ),
            (
                format!(
                    "ravendb+https://h/db?cert=/nonexistent/c.pem&key={}",
                    key.path()
                ),
                "client certificate",
                "/nonexistent/c.pem",
            ),
            (
                "ravendb+https://h/db?key=/nonexistent/k.pem&cert=/nonexistent/k.pem".to_owned(),
                "client certificate",
                "/nonexistent/k.pem",
            ),
        ] {
            // The URL itself is fine: the file is reported when building.
            match builder(&url).build() {
                Err(e @ RavenDbConfigError::TlsFile { .. }) => {
                    let shown = e.to_string();
                    assert!(
                        shown.starts_with(&format!("cannot read the {what} file {path}: ")),
                        "{shown}"
                    );
                    assert!(std::error::Error::source(&e).is_some());
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        // The same on the builder.
        let result = RavenDbStore::builder()
            .url("https://h:1")
            .database("d")
            .client_certificate_files(key.path(), "/nonexistent/key.pem")
            .build();
        assert!(
            matches!(&result, Err(RavenDbConfigError::TlsFile { what: "client key", path, .. })
                if path == Path::new("/nonexistent/key.pem")),
            "{result:?}"
        );
    }

    #[test]
    fn tls_file_contents_are_never_shown() {
        let key = TempFile::new(
            "secret.key",
            "-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n-----END PRIVATE KEY-----\n",
        );
        let cert = TempFile::new("secret-client.pem", CERT);
        let url = format!(
            "ravendb+https://h/db?cert={}&key={}",
            cert.path(),
            key.path()
        );
        let b = builder(&url);
        let shown = format!("{b:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        match b.build() {
            Err(e @ RavenDbConfigError::Tls { .. }) => {
                let shown = format!("{e} {e:?}");
                assert!(!shown.contains("SECRET"), "{shown}");
            }
            other => panic!("{other:?}"),
        }
        // A key file given as the CA: the CA error does not quote the key either.
        match builder(&format!("ravendb+https://h/db?ca={}", key.path())).build() {
            Err(e @ RavenDbConfigError::Tls { .. }) => {
                let shown = format!("{e} {e:?}");
                assert!(!shown.contains("SECRET"), "{shown}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn url_option_errors_never_show_the_password_or_a_host() {
        for url in [
            "ravendb+https://a:AAAAAA00@h:1/db?ca=/ca.pem",
            "ravendb+http://a:AAAAAA00@h:1/db?ca=/ca.pem",
            "ravendb+http://a:AAAA?AA00@h:1/db?timeout=1s",
            "ravendb+http://a:AAAAAA00h:1/db?timeout=1s",
            "ravendb+http://a:AAAAAA00/h:1/db?timeout=1s",
            "ravendb+https://secret-host.AAAA:1/db?cert=/c.pem",
            "ravendb+https://secret-host.AAAA:1/db?AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=1",
            "ravendb+http://secret-host.AAAA:1/db?ca=/ca.pem",
            "ravendb+http://secret-host.AAAA:1/db?timeout=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            // The '@' lost, the password cut by its '/' and '?': the hosts are
            // rejected before the rest is read as a database and options.
            "ravendb+http://a:AAAA/AA?AAAAAA00h:1/db",
            "ravendb+http://a:AAAAAA00/db?AAAAAA00h:1=1",
        ] {
            match RavenDbStore::from_url(url) {
                Err(error) => {
                    let shown = format!("{error} {error:?}");
                    assert!(
                        !shown.contains("AAAAAA00") && !shown.contains("secret-host"),
                        "{url}: {shown}"
                    );
                }
                Ok(store) => panic!("{url}: accepted as {store:?}"),
            }
        }
    }
}
