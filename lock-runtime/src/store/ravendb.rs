//! The RavenDB backend: the store contract over RavenDB's cluster-wide
//! compare-exchange (`/databases/{db}/cmpxchg`), through HTTP/1.1 with rustls.
//!
//! The mapping:
//! - The index is the compare-exchange item's Raft index: cluster-wide and only
//!   growing, also across delete and re-create. It is the fencing token.
//! - The [`Record`] is stored readably as the item's `Object`
//!   (`{"owner":..,"nonce":..,"ttl_ms":..,"written_at_ms":..}`), with an
//!   `@expires` metadata date far past the ttl: garbage collection for abandoned
//!   items on servers that sweep it (5.0 and later), never lock semantics.
//! - Every write carries a fresh `raft-request-id`, reused when the same call is
//!   retried on another node, so a retry is applied at most once; a conflict that
//!   shows exactly the value we sent is read as our own write having landed.
//! - RavenDB has no change notification for compare-exchange items: no
//!   [`CompareExchange::watch`], the lock client polls. A put-if-absent on a key
//!   last seen held by someone else reads first and writes only when the lock
//!   looks free, so polling waiters cost reads, not Raft log entries.
//!
//! **Releases write a tombstone instead of deleting.** RavenDB 4.1 accepts a put
//! with `index=N` on a *missing* key and creates it. If releases deleted the
//! item, a late renewal from a holder whose lock was taken over and released in
//! the meantime would bring the lock back to life under a holder that lost it
//! (the answer is the same as for a real renewal, so it cannot be detected
//! afterwards). So [`CompareExchange::delete`] replaces the record, under the same
//! index condition, with a small `{"released":true,..}` object: a compare-exchange
//! on a stale index then always meets an item and conflicts. Tombstones read as
//! absent, a put-if-absent takes a tombstone's place (conditioned on its index),
//! and they carry `@expires` like records. For a key this store has never seen,
//! a compare-exchange is preceded by a read so that it cannot create the key.
//! What remains: an item removed outside distlock (by hand, or swept by a 5.x+
//! server a day past its ttl) and then hit by a stale renewal from a store that
//! had seen it would be created again by a 4.1 server.
//!
//! Keys are case-insensitive on the server: `Orders/1` and `orders/1` are the
//! same lock (more exclusion, never less).
//!
//! Failover: several node URLs; each request has a timeout and moves to the next
//! node on a connection failure, a timeout or a 503, starting from the node that
//! answered last. [`RavenDbStore::refresh_topology`] (or
//! [`RavenDbStoreBuilder::discover_topology`]) adds the nodes the cluster names.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use lock_runtime::store::ravendb::RavenDbStore;
//! use std::time::Duration;
//!
//! let store = RavenDbStore::builder()
//!     .urls(["https://a.example:8080", "https://b.example:8080"])
//!     .database("locks")
//!     .client_certificate_pem(std::fs::read("client.pem")?, std::fs::read("client.key")?)
//!     .ca_certificate_pem(std::fs::read("ca.pem")?)
//!     .request_timeout(Duration::from_secs(2))
//!     .build()?;
//! // or from a URL:
//! let store = RavenDbStore::from_url("ravendb+http://127.0.0.1:8080/locks")?;
//! # let _ = store; Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

use super::net::redact::{redact_url, split_userinfo};
use super::net::url::check_host_port;
use super::{
    Capabilities, CompareExchange, DeleteOutcome, Entry, Expect, LeaseId, PutOutcome, Record,
    StoreError,
};

const BACKEND: &str = "ravendb";
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long past a record's ttl `@expires` is set (garbage collection only).
const DEFAULT_EXPIRY_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Answers larger than this are refused (a compare-exchange answer is tiny).
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// How many keys this store remembers as existing (see the module docs).
const MAX_KNOWN_KEYS: usize = 16_384;
/// Put-if-absent retries when the key's tombstone keeps moving.
const MAX_TOMBSTONE_RETRIES: usize = 4;

/// Unreserved characters (RFC 3986) stay as they are in query strings.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

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
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// What was wrong with a RavenDB answer or request: the `source` of the
/// [`StoreError`]s this backend returns (downcast to inspect it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RavenDbError {
    /// The request did not finish within the per-request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made or broke.
    #[error("connection failed: {}", chain(.0))]
    Connect(#[source] reqwest::Error),
    /// The TLS handshake failed (server certificate not trusted, protocol mismatch).
    #[error("TLS handshake failed (is the CA right?): {}", chain(.0))]
    Tls(#[source] reqwest::Error),
    /// The server refused our client certificate, or we sent none (HTTP 401/403).
    #[error(
        "the server refused the client certificate (HTTP {status}): {message}; configure a \
         certificate the server trusts (register it in RavenDB or list its thumbprint)"
    )]
    CertificateRefused {
        /// 401 or 403.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The database does not exist on the server.
    #[error(
        "database {database:?} does not exist on the server; create it, or enable \
         create_database on the builder"
    )]
    DatabaseMissing {
        /// The database name.
        database: String,
    },
    /// The server answered with a RavenDB error.
    #[error("HTTP {status} {error_type}: {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// RavenDB's exception type (`Type`), such as `System.ArgumentException`.
        error_type: String,
        /// RavenDB's message.
        message: String,
    },
    /// The answer could not be used (not JSON, unexpected shape or status, too large).
    #[error("unusable answer (HTTP {status}): {reason}")]
    BadAnswer {
        /// The HTTP status.
        status: u16,
        /// What was wrong, with the start of the body.
        reason: String,
    },
    /// The key cannot be stored.
    #[error("invalid compare-exchange key: {0}")]
    InvalidKey(&'static str),
}

/// Bytes that must never be printed (private key material).
struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Configures a [`RavenDbStore`]; [`RavenDbStoreBuilder::build`] contacts nothing.
#[derive(Debug)]
pub struct RavenDbStoreBuilder {
    urls: Vec<String>,
    database: Option<String>,
    prefix: String,
    client_cert_pem: Option<Vec<u8>>,
    client_key_pem: Option<Secret>,
    ca_pem: Vec<Vec<u8>>,
    request_timeout: Duration,
    connect_timeout: Duration,
    expiry_grace: Option<Duration>,
    create_database: bool,
    discover_topology: bool,
}

impl Default for RavenDbStoreBuilder {
    fn default() -> Self {
        RavenDbStoreBuilder {
            urls: Vec::new(),
            database: None,
            prefix: String::new(),
            client_cert_pem: None,
            client_key_pem: None,
            ca_pem: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            expiry_grace: Some(DEFAULT_EXPIRY_GRACE),
            create_database: false,
            discover_topology: false,
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
    pub fn urls<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.urls.extend(urls.into_iter().map(Into::into));
        self
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
        self.client_cert_pem = Some(cert_pem.into());
        self.client_key_pem = Some(Secret(key_pem.into()));
        self
    }

    /// A CA certificate (PEM) to trust for the server's certificate. When at
    /// least one is given, only these are trusted; otherwise the platform's.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem.push(pem.into());
        self
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
        let https = https.unwrap_or(false);
        let mut client = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .no_proxy();
        let has_tls_material = self.client_cert_pem.is_some() || !self.ca_pem.is_empty();
        if has_tls_material && !https {
            return Err(RavenDbConfigError::TlsWithoutHttps);
        }
        // Always a preconfigured rustls (ring) config: reqwest's `rustls-no-provider`
        // build would otherwise need a process-wide default crypto provider, even for
        // plain http:// (where the config is never used).
        let config = if https {
            tls_config(
                self.client_cert_pem.as_deref(),
                self.client_key_pem.as_ref().map(|k| k.0.as_slice()),
                &self.ca_pem,
            )?
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
                preferred: AtomicUsize::new(0),
                database,
                prefix: self.prefix,
                request_timeout: self.request_timeout,
                expiry_grace: self.expiry_grace,
                create_database: self.create_database,
                client_certificate: self.client_cert_pem.is_some(),
                known: Mutex::new(HashMap::new()),
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

fn parse_node(url: &str) -> Result<String, RavenDbConfigError> {
    let invalid = |reason: &str| RavenDbConfigError::InvalidNode {
        url: redact_url(url),
        reason: reason.to_owned(),
    };
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| invalid("must start with http:// or https://"))?;
    if rest.is_empty() {
        return Err(invalid("no host"));
    }
    if rest.contains('@') {
        return Err(invalid(
            "credentials in the URL are not used by RavenDB: use a client certificate",
        ));
    }
    if rest.contains(['/', '?', '#', ' ']) {
        return Err(invalid(
            "give only scheme://host:port, the database separately",
        ));
    }
    let parsed: reqwest::Url = trimmed.parse().map_err(|_| invalid("not a URL"))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
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

/// A config that trusts nothing, for clients that only speak http://.
fn plain_http_tls_config() -> Result<rustls::ClientConfig, RavenDbConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RavenDbConfigError::Tls {
            what: "protocol versions",
            reason: e.to_string(),
        })?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

fn tls_config(
    cert_pem: Option<&[u8]>,
    key_pem: Option<&[u8]>,
    ca_pem: &[Vec<u8>],
) -> Result<rustls::ClientConfig, RavenDbConfigError> {
    let tls_error = |what, reason: String| RavenDbConfigError::Tls { what, reason };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("protocol versions", e.to_string()))?;
    let builder = if ca_pem.is_empty() {
        use rustls_platform_verifier::BuilderVerifierExt;
        builder
            .with_platform_verifier()
            .map_err(|e| tls_error("platform verifier", e.to_string()))?
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for pem in ca_pem {
            let mut found = false;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| tls_error("CA certificate", e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| tls_error("CA certificate", e.to_string()))?;
                found = true;
            }
            if !found {
                return Err(tls_error(
                    "CA certificate",
                    "no PEM certificate found".into(),
                ));
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (cert_pem, key_pem) {
        (Some(cert_pem), Some(key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_error("client certificate", e.to_string()))?;
            if chain.is_empty() {
                return Err(tls_error(
                    "client certificate",
                    "no PEM certificate found".into(),
                ));
            }
            // The key's parse error is described without echoing any of its bytes.
            let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
                tls_error(
                    "client key",
                    "no PEM private key (PKCS#8, PKCS#1 or SEC1) found".into(),
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error("client certificate", e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The RavenDB compare-exchange store. Cheap to clone (shares one connection pool).
#[derive(Clone)]
pub struct RavenDbStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    /// Configured nodes first, then any learned from the cluster topology.
    nodes: RwLock<Arc<Vec<String>>>,
    https: bool,
    preferred: AtomicUsize,
    database: String,
    prefix: String,
    request_timeout: Duration,
    expiry_grace: Option<Duration>,
    create_database: bool,
    client_certificate: bool,
    /// Keys seen to exist on the server, with the index of their tombstone when
    /// the last thing seen there was one.
    known: Mutex<HashMap<String, Option<u64>>>,
}

impl fmt::Debug for RavenDbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RavenDbStore")
            .field("nodes", &self.inner.nodes())
            .field("database", &self.inner.database)
            .field("prefix", &self.inner.prefix)
            .field("request_timeout", &self.inner.request_timeout)
            .field("client_certificate", &self.inner.client_certificate)
            .finish_non_exhaustive()
    }
}

/// One HTTP answer: which node gave it, the status, the body.
struct Answer {
    node: String,
    status: StatusCode,
    body: Vec<u8>,
}

/// What a compare-exchange item holds.
enum Item {
    Lock(Entry),
    Tombstone { index: u64 },
}

impl RavenDbStore {
    /// A builder; at least one URL and a database are required.
    pub fn builder() -> RavenDbStoreBuilder {
        RavenDbStoreBuilder::default()
    }

    /// A builder from a URL: `ravendb+http://host:port[,host:port...]/database`
    /// or `ravendb+https://...` (add TLS material on the builder). A
    /// `user:password@` is rejected (RavenDB authenticates with client
    /// certificates), and no error quotes it or a host.
    pub fn builder_from_url(url: &str) -> Result<RavenDbStoreBuilder, RavenDbConfigError> {
        let invalid = |reason: &str| RavenDbConfigError::InvalidUrl {
            reason: reason.to_owned(),
        };
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("ravendb+http://") {
            ("http", rest)
        } else if let Some(rest) = url.strip_prefix("ravendb+https://") {
            ("https", rest)
        } else {
            return Err(invalid(
                "it must start with ravendb+http:// or ravendb+https://",
            ));
        };
        if let (Some(_), _) = split_userinfo(rest) {
            return Err(invalid(
                "credentials in the URL are not used by RavenDB: use a client certificate",
            ));
        }
        let (hosts, database) = rest
            .split_once('/')
            .ok_or_else(|| invalid("no database: add /<database> after the hosts"))?;
        if database.is_empty() || database.contains(['/', '?', '#']) {
            return Err(invalid("the path must be exactly one database name"));
        }
        // Not quoted: with a lost '@', the path may hold a password.
        if let Err(RavenDbConfigError::InvalidDatabase { reason, .. }) = validate_database(database)
        {
            return Err(RavenDbConfigError::InvalidUrl {
                reason: format!("invalid database name: {reason}"),
            });
        }
        if hosts.is_empty() {
            return Err(invalid("no host"));
        }
        let mut builder = RavenDbStore::builder().database(database);
        let count = hosts.split(',').count();
        for (i, host) in hosts.split(',').enumerate() {
            if host.is_empty() {
                return Err(invalid("an empty host in the list"));
            }
            // Not quoted: with a lost '@', a host may hold a password.
            let in_url = |reason: &str| RavenDbConfigError::InvalidUrl {
                reason: format!("host {} of {count}: {reason}", i + 1),
            };
            check_host_port(host, false).map_err(in_url)?;
            let node = format!("{scheme}://{host}");
            if let Err(RavenDbConfigError::InvalidNode { reason, .. }) = parse_node(&node) {
                return Err(in_url(&reason));
            }
            builder = builder.url(node);
        }
        Ok(builder)
    }

    /// Builds a store from a URL (see [`RavenDbStore::builder_from_url`]).
    pub fn from_url(url: &str) -> Result<RavenDbStore, RavenDbConfigError> {
        Self::builder_from_url(url)?.build()
    }

    /// The database name.
    pub fn database(&self) -> &str {
        &self.inner.database
    }

    /// The node URLs: the configured ones in order, then any learned from the
    /// cluster topology.
    pub fn nodes(&self) -> Vec<String> {
        self.inner.nodes().to_vec()
    }

    /// Asks the cluster (any reachable node) for its topology and adds the nodes
    /// it names (members, promotables, watchers) that are not configured yet, so
    /// requests can fail over to them. Returns the node list afterwards. Nodes with
    /// another scheme than the configured ones are ignored.
    pub async fn refresh_topology(&self) -> Result<Vec<String>, StoreError> {
        let answer = self
            .inner
            .send(Method::GET, "/cluster/topology", None)
            .await?;
        if answer.status != StatusCode::OK {
            return Err(self.inner.error_answer(&answer));
        }
        let parsed: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| self.inner.bad_answer(&answer, format!("not JSON ({e})")))?;
        let topology = parsed
            .get("Topology")
            .ok_or_else(|| self.inner.bad_answer(&answer, "no Topology"))?;
        let mut learned = Vec::new();
        for group in ["Members", "Promotables", "Watchers", "AllNodes"] {
            if let Some(map) = topology.get(group).and_then(Value::as_object) {
                for url in map.values().filter_map(Value::as_str) {
                    if let Ok(node) = parse_node(url)
                        && node.starts_with("https://") == self.inner.https
                        && !learned.contains(&node)
                    {
                        learned.push(node);
                    }
                }
            }
        }
        let mut nodes = self.inner.nodes.write().unwrap_or_else(|p| p.into_inner());
        let mut merged: Vec<String> = nodes.as_ref().clone();
        for node in learned {
            if !merged.iter().any(|known| known.eq_ignore_ascii_case(&node)) {
                tracing::debug!(node, "distlock: learned a RavenDB node from the topology");
                merged.push(node);
            }
        }
        *nodes = Arc::new(merged.clone());
        Ok(merged)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Creates the database (replication factor 1) unless it exists. Needs
    /// operator rights on a secured server.
    pub async fn ensure_database(&self) -> Result<(), StoreError> {
        let db = &self.inner.database;
        let path = format!(
            "/admin/databases?name={}&replicationFactor=1",
            utf8_percent_encode(db, QUERY)
        );
        let body = json!({ "DatabaseName": db }).to_string().into_bytes();
        let answer = self.inner.send(Method::PUT, &path, Some(body)).await?;
        match answer.status {
            StatusCode::CREATED | StatusCode::OK | StatusCode::CONFLICT => Ok(()),
            _ => Err(self.inner.error_answer(&answer)),
        }
    }

    /// Deletes the tombstones (released locks, see the module docs) under this
    /// store's key prefix that were written more than `older_than` ago by the
    /// local wall clock, and returns how many went. RavenDB 4.1 never sweeps
    /// `@expires`, so a service locking many distinct keys (`orders/<id>`) keeps
    /// one small item per key until this runs; newer servers sweep them anyway.
    ///
    /// Each deletion is conditioned on the tombstone's index, so a lock taken in
    /// the meantime is never touched. Keep `older_than` far above any request
    /// timeout (an hour or more): a renewal delayed past it could otherwise meet a
    /// missing key, which 4.1 would create.
    pub async fn prune_tombstones(&self, older_than: Duration) -> Result<u64, StoreError> {
        const PAGE: usize = 256;
        const MAX_PAGES: usize = 4096;
        let inner = &self.inner;
        let cutoff =
            now_ms().saturating_sub(u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX));
        let mut start = 0usize;
        let mut pruned = 0;
        for _ in 0..MAX_PAGES {
            let path = format!(
                "/databases/{}/cmpxchg?startsWith={}&start={start}&pageSize={PAGE}",
                utf8_percent_encode(&inner.database, QUERY),
                utf8_percent_encode(&inner.prefix, QUERY)
            );
            let answer = inner.send(Method::GET, &path, None).await?;
            if answer.status == StatusCode::NOT_FOUND && answer.body.is_empty() {
                break;
            }
            if answer.status != StatusCode::OK {
                return Err(inner.error_answer(&answer));
            }
            let parsed: Value = serde_json::from_slice(&answer.body)
                .map_err(|e| inner.bad_answer(&answer, format!("not JSON ({e})")))?;
            let results = parsed
                .get("Results")
                .and_then(Value::as_array)
                .ok_or_else(|| inner.bad_answer(&answer, "no Results array"))?;
            let mut kept = 0;
            for item in results {
                let object = item.get("Value").and_then(|v| v.get("Object"));
                let old_tombstone = object
                    .filter(|o| o.get("released").and_then(Value::as_bool) == Some(true))
                    .and_then(|o| o.get("released_at_ms"))
                    .and_then(Value::as_u64)
                    .is_some_and(|at| at < cutoff);
                let (Some(key), Some(index)) = (
                    item.get("Key").and_then(Value::as_str),
                    item.get("Index").and_then(Value::as_u64),
                ) else {
                    kept += 1;
                    continue;
                };
                if !old_tombstone {
                    kept += 1;
                    continue;
                }
                let request_id = uuid::Uuid::new_v4().to_string();
                let path = inner.cmpxchg_path(key, Some(index), Some(&request_id));
                let answer = inner.send(Method::DELETE, &path, None).await?;
                let (ok, _, value) = inner.write_answer(&answer)?;
                if ok && !value.is_null() {
                    pruned += 1;
                    let mut known = inner.known.lock().unwrap_or_else(|p| p.into_inner());
                    known.remove(&key.to_lowercase());
                } else {
                    kept += 1;
                }
            }
            if results.len() < PAGE {
                break;
            }
            // Deleted items leave the listing; the kept ones are skipped next time.
            start += kept;
        }
        Ok(pruned)
    }

    /// Checks that a node answers and the database exists.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.get("distlock/ping").await.map(|_| ())
    }
}

impl Inner {
    fn nodes(&self) -> Arc<Vec<String>> {
        Arc::clone(&self.nodes.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn full_key(&self, key: &str) -> Result<String, StoreError> {
        let full = format!("{}{}", self.prefix, key);
        if full.is_empty() {
            return Err(self.invalid_key("empty"));
        }
        if full.chars().any(char::is_control) {
            return Err(self.invalid_key("contains control characters"));
        }
        Ok(full)
    }

    fn invalid_key(&self, reason: &'static str) -> StoreError {
        StoreError::Backend {
            endpoint: self.nodes().first().cloned().unwrap_or_default(),
            source: Box::new(RavenDbError::InvalidKey(reason)),
        }
    }

    fn cmpxchg_path(&self, key: &str, index: Option<u64>, request_id: Option<&str>) -> String {
        let mut path = format!(
            "/databases/{}/cmpxchg?key={}",
            utf8_percent_encode(&self.database, QUERY),
            utf8_percent_encode(key, QUERY)
        );
        if let Some(index) = index {
            path.push_str(&format!("&index={index}"));
        }
        if let Some(id) = request_id {
            path.push_str(&format!("&raft-request-id={id}"));
        }
        path
    }

    /// Sends one request, trying each node once from the preferred one.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, StoreError> {
        let nodes = self.nodes();
        let count = nodes.len();
        if count == 0 {
            return Err(StoreError::Unavailable {
                endpoint: String::new(),
                source: "no RavenDB node configured".into(),
            });
        }
        let start = self.preferred.load(Ordering::Relaxed) % count;
        let mut last_error = None;
        for step in 0..count {
            let at = (start + step) % count;
            let node = &nodes[at];
            let mut request = self.client.request(method.clone(), format!("{node}{path}"));
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let attempt = async {
                let mut response = request.send().await?;
                let status = response.status();
                let mut bytes = Vec::new();
                while let Some(chunk) = response.chunk().await? {
                    if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                        return Ok(Err(status));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok::<_, reqwest::Error>(Ok((status, bytes)))
            };
            let error = match tokio::time::timeout(self.request_timeout, attempt).await {
                Ok(Ok(Ok((status, body)))) => {
                    if status == StatusCode::SERVICE_UNAVAILABLE && step + 1 < count {
                        tracing::debug!(node, "distlock: RavenDB node answered 503; next node");
                        last_error = Some(StoreError::Backend {
                            endpoint: node.clone(),
                            source: Box::new(RavenDbError::BadAnswer {
                                status: status.as_u16(),
                                reason: "service unavailable".into(),
                            }),
                        });
                        continue;
                    }
                    self.preferred.store(at, Ordering::Relaxed);
                    return Ok(Answer {
                        node: node.clone(),
                        status,
                        body,
                    });
                }
                Ok(Ok(Err(status))) => {
                    return Err(StoreError::Backend {
                        endpoint: node.clone(),
                        source: Box::new(RavenDbError::BadAnswer {
                            status: status.as_u16(),
                            reason: format!("answer larger than {MAX_ANSWER_BYTES} bytes"),
                        }),
                    });
                }
                Ok(Err(error)) => classify_transport(node, error, self.request_timeout),
                Err(_) => StoreError::Unavailable {
                    endpoint: node.clone(),
                    source: Box::new(RavenDbError::Timeout(self.request_timeout)),
                },
            };
            tracing::debug!(node, %error, "distlock: RavenDB request failed; trying the next node");
            last_error = Some(error);
        }
        Err(last_error.unwrap_or_else(|| StoreError::Unavailable {
            endpoint: String::new(),
            source: "no RavenDB node configured".into(),
        }))
    }

    /// The error for an answer that is not the success we expected.
    fn error_answer(&self, answer: &Answer) -> StoreError {
        let status = answer.status.as_u16();
        let parsed: Option<Value> = serde_json::from_slice(&answer.body).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let error_type = field("Type");
        let message = field("Message");
        let backend = |source: RavenDbError| StoreError::Backend {
            endpoint: answer.node.clone(),
            source: Box::new(source),
        };
        if matches!(status, 401 | 403) {
            let message = message.unwrap_or_else(|| snippet(&answer.body));
            let message = if self.client_certificate {
                message
            } else {
                format!("{message} (no client certificate was configured)")
            };
            return backend(RavenDbError::CertificateRefused { status, message });
        }
        match (error_type, message) {
            (Some(error_type), _) if error_type.ends_with("DatabaseDoesNotExistException") => {
                backend(RavenDbError::DatabaseMissing {
                    database: self.database.clone(),
                })
            }
            (Some(error_type), message) => {
                let message = message.unwrap_or_default();
                let source = RavenDbError::Server {
                    status,
                    error_type: error_type.clone(),
                    message,
                };
                // A node that is starting or loading the database answers errors
                // that go away by themselves: treat them as unreachable (retryable).
                let starting = error_type.ends_with("NullReferenceException")
                    || error_type.ends_with("DatabaseLoadTimeoutException")
                    || error_type.ends_with("DatabaseLoadFailureException")
                    || error_type.ends_with("DatabaseDisabledException")
                    || error_type.ends_with("DatabaseNotRelevantException")
                    || error_type.ends_with("NodeIsPassiveException")
                    || error_type.ends_with("ServerLoadFailureException")
                    || status == 503;
                if starting {
                    StoreError::Unavailable {
                        endpoint: answer.node.clone(),
                        source: Box::new(source),
                    }
                } else {
                    backend(source)
                }
            }
            (None, _) => {
                let source = RavenDbError::BadAnswer {
                    status,
                    reason: if parsed.is_some() {
                        format!("unexpected answer: {}", snippet(&answer.body))
                    } else {
                        format!("not JSON: {}", snippet(&answer.body))
                    },
                };
                // A starting server answers 500 with an empty body for a moment, and
                // gateways answer 502-504: retryable, unlike a wrong answer.
                let passing = matches!(status, 502..=504)
                    || (status == 500 && answer.body.iter().all(u8::is_ascii_whitespace));
                if passing {
                    StoreError::Unavailable {
                        endpoint: answer.node.clone(),
                        source: Box::new(source),
                    }
                } else {
                    backend(source)
                }
            }
        }
    }

    fn bad_answer(&self, answer: &Answer, reason: impl fmt::Display) -> StoreError {
        StoreError::Backend {
            endpoint: answer.node.clone(),
            source: Box::new(RavenDbError::BadAnswer {
                status: answer.status.as_u16(),
                reason: format!("{reason}: {}", snippet(&answer.body)),
            }),
        }
    }

    fn remember(&self, key: &str, tombstone: Option<u64>) {
        // Keys are case-insensitive on the server: so is this cache.
        let key = key.to_lowercase();
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= MAX_KNOWN_KEYS && !known.contains_key(&key) {
            known.clear();
        }
        known.insert(key, tombstone);
    }

    fn known(&self, key: &str) -> Option<Option<u64>> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.get(&key.to_lowercase()).copied()
    }

    async fn read(&self, key: &str) -> Result<Option<Item>, StoreError> {
        let answer = self
            .send(Method::GET, &self.cmpxchg_path(key, None, None), None)
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND if answer.body.is_empty() => return Ok(None),
            StatusCode::OK => {}
            _ => return Err(self.error_answer(&answer)),
        }
        let parsed: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| self.bad_answer(&answer, format!("not JSON ({e})")))?;
        let results = parsed
            .get("Results")
            .and_then(Value::as_array)
            .ok_or_else(|| self.bad_answer(&answer, "no Results array"))?;
        let Some(result) = results.first() else {
            return Ok(None);
        };
        let index = result
            .get("Index")
            .and_then(Value::as_u64)
            .ok_or_else(|| self.bad_answer(&answer, "no Index"))?;
        let item = match result.get("Value") {
            None | Some(Value::Null) => return Ok(None),
            Some(value) => decode_item(value, index)?,
        };
        self.remember(
            key,
            match &item {
                Item::Tombstone { index } => Some(*index),
                Item::Lock(_) => None,
            },
        );
        Ok(Some(item))
    }

    /// One compare-exchange PUT; returns `(successful, index, current value)`.
    async fn cmpxchg_put(
        &self,
        key: &str,
        index: u64,
        object: Value,
        expires: Option<u64>,
    ) -> Result<(bool, u64, Value, Answer), StoreError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut body = json!({ "Object": object });
        if let (Some(grace), Some(base)) = (self.expiry_grace, expires) {
            let at = base.saturating_add(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
            body["@metadata"] = json!({ "@expires": iso8601(at) });
        }
        let path = self.cmpxchg_path(key, Some(index), Some(&request_id));
        let answer = self
            .send(Method::PUT, &path, Some(body.to_string().into_bytes()))
            .await?;
        let (ok, index, value) = self.write_answer(&answer)?;
        Ok((ok, index, value, answer))
    }

    /// Parses `{"Index","Value","Successful"}`.
    fn write_answer(&self, answer: &Answer) -> Result<(bool, u64, Value), StoreError> {
        if answer.status != StatusCode::OK {
            return Err(self.error_answer(answer));
        }
        let parsed: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| self.bad_answer(answer, format!("not JSON ({e})")))?;
        let ok = parsed
            .get("Successful")
            .and_then(Value::as_bool)
            .ok_or_else(|| self.bad_answer(answer, "no Successful flag"))?;
        let index = parsed
            .get("Index")
            .and_then(Value::as_u64)
            .ok_or_else(|| self.bad_answer(answer, "no Index"))?;
        let value = parsed.get("Value").cloned().unwrap_or(Value::Null);
        Ok((ok, index, value))
    }
}

fn classify_transport(node: &str, error: reqwest::Error, timeout: Duration) -> StoreError {
    let endpoint = node.to_owned();
    if chain_has_tls_error(&error) {
        // A certificate problem does not go away by retrying: not transient.
        StoreError::Backend {
            endpoint,
            source: Box::new(RavenDbError::Tls(error)),
        }
    } else if error.is_timeout() {
        StoreError::Unavailable {
            endpoint,
            source: Box::new(RavenDbError::Timeout(timeout)),
        }
    } else {
        StoreError::Unavailable {
            endpoint,
            source: Box::new(RavenDbError::Connect(error)),
        }
    }
}

/// Whether a rustls error is somewhere in the cause chain. `io::Error` hides its
/// payload from `source()` (it returns the payload's source), so look inside it too.
fn chain_has_tls_error(error: &(dyn std::error::Error + 'static)) -> bool {
    fn visit(error: &(dyn std::error::Error + 'static), depth: usize) -> bool {
        if depth > 16 {
            return false;
        }
        if error.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            return visit(inner, depth + 1);
        }
        error.source().is_some_and(|next| visit(next, depth + 1))
    }
    visit(error, 0)
}

/// An error and its causes, `: `-separated (reqwest's own message is often just
/// "error sending request").
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    for _ in 0..8 {
        let Some(e) = cause else { break };
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = e.source();
    }
    out
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Decodes an item's `Value` (`{"Object": ..}`) into a lock entry or a tombstone.
fn decode_item(value: &Value, index: u64) -> Result<Item, StoreError> {
    let object = value.get("Object").ok_or_else(|| StoreError::Foreign {
        reason: "the compare-exchange value has no Object".into(),
    })?;
    if object.get("released").and_then(Value::as_bool) == Some(true) {
        return Ok(Item::Tombstone { index });
    }
    let record = decode_record(object)?;
    Ok(Item::Lock(Entry {
        record,
        index,
        lease: None,
    }))
}

fn decode_record(object: &Value) -> Result<Record, StoreError> {
    let foreign = |reason: String| StoreError::Foreign { reason };
    let owner = object
        .get("owner")
        .and_then(Value::as_str)
        .ok_or_else(|| foreign("no string `owner`".into()))?;
    // The nonce is written as a string (JSON numbers past 2^53 are not safe in
    // every reader); a number is accepted too.
    let nonce = match object.get("nonce") {
        Some(Value::String(s)) => s
            .parse::<u64>()
            .map_err(|_| foreign("`nonce` is not an unsigned integer".into()))?,
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| foreign("`nonce` is not an unsigned integer".into()))?,
        _ => return Err(foreign("no `nonce`".into())),
    };
    let number = |name: &str| {
        object
            .get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| foreign(format!("no unsigned integer `{name}`")))
    };
    Ok(Record {
        owner: owner.into(),
        nonce,
        ttl_ms: number("ttl_ms")?,
        written_at_ms: number("written_at_ms")?,
    })
}

fn encode_record(record: &Record) -> Value {
    json!({
        "owner": &*record.owner,
        "nonce": record.nonce.to_string(),
        "ttl_ms": record.ttl_ms,
        "written_at_ms": record.written_at_ms,
        "written_at": iso8601(record.written_at_ms),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Unix milliseconds as RavenDB's UTC date format, `2026-11-26T12:00:00.0000000Z`.
fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}0000Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

#[async_trait]
impl CompareExchange for RavenDbStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        // Waiters poll with reads (no Raft write) while the lock is held, so
        // they can afford to poll fast: 1 ms doubling to 8 ms.
        Capabilities::NONE.with_poll(crate::store::Backoff {
            min: Duration::from_millis(1),
            max: Duration::from_millis(8),
        })
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let key = self.inner.full_key(key)?;
        match self.inner.read(&key).await? {
            Some(Item::Lock(entry)) => Ok(Some(entry)),
            Some(Item::Tombstone { .. }) | None => Ok(None),
        }
    }

    async fn put(
        &self,
        key: &str,
        record: &Record,
        expect: Expect,
        lease: Option<LeaseId>,
    ) -> Result<PutOutcome, StoreError> {
        let inner = &self.inner;
        if lease.is_some() {
            return Err(StoreError::Unsupported("leases"));
        }
        let key = inner.full_key(key)?;
        let object = encode_record(record);
        let expires = Some(now_ms().saturating_add(record.ttl_ms));
        let mut index = match expect {
            Expect::Absent => match inner.known(&key) {
                // Take a tombstone's place if we know of one.
                Some(Some(tombstone)) => tombstone,
                // Last seen held: a waiter polling. Read first (a read is no Raft
                // write, so polling waiters do not load the cluster log) and write
                // only when the lock looks free. A stale read only delays a waiter;
                // the write decides.
                Some(None) => match inner.read(&key).await? {
                    Some(Item::Lock(entry)) => {
                        // Our own record here (an earlier write whose answer
                        // was lost) is reported as it is: the lock engine
                        // decides what it means (its ambiguity rule).
                        return Ok(PutOutcome::Conflict {
                            current: Some(entry),
                        });
                    }
                    Some(Item::Tombstone { index }) => index,
                    None => 0,
                },
                // Never seen: create.
                None => 0,
            },
            Expect::Index(i) => {
                if inner.known(&key).is_none() {
                    // Never seen here: make sure the item exists at `i`, since 4.1
                    // would create a missing key (see the module docs).
                    match inner.read(&key).await? {
                        Some(Item::Lock(entry)) if entry.index == i => {}
                        Some(Item::Lock(entry)) => {
                            return Ok(PutOutcome::Conflict {
                                current: Some(entry),
                            });
                        }
                        Some(Item::Tombstone { .. }) | None => {
                            return Ok(PutOutcome::Conflict { current: None });
                        }
                    }
                }
                i
            }
        };
        for _ in 0..MAX_TOMBSTONE_RETRIES {
            let (ok, new_index, value, _answer) = inner
                .cmpxchg_put(&key, index, object.clone(), expires)
                .await?;
            if ok {
                inner.remember(&key, None);
                return Ok(PutOutcome::Swapped { index: new_index });
            }
            match decode_item_or_none(&value, new_index)? {
                // Also our own record (a replay of this write on another node,
                // or an earlier write whose answer was lost): a conflict that
                // shows it; the engine resolves it.
                Some(Item::Lock(entry)) => {
                    inner.remember(&key, None);
                    return Ok(PutOutcome::Conflict {
                        current: Some(entry),
                    });
                }
                Some(Item::Tombstone { index: tombstone }) => {
                    inner.remember(&key, Some(tombstone));
                    if expect == Expect::Absent && tombstone != index {
                        index = tombstone;
                        continue;
                    }
                    return Ok(PutOutcome::Conflict { current: None });
                }
                None => {
                    if expect == Expect::Absent && index != 0 {
                        // Our tombstone knowledge was stale and the key is gone.
                        index = 0;
                        continue;
                    }
                    return Ok(PutOutcome::Conflict { current: None });
                }
            }
        }
        Ok(PutOutcome::Conflict { current: None })
    }

    async fn delete(&self, key: &str, index: u64) -> Result<DeleteOutcome, StoreError> {
        let inner = &self.inner;
        let key = inner.full_key(key)?;
        if inner.known(&key).is_none() {
            match inner.read(&key).await? {
                Some(Item::Lock(entry)) if entry.index == index => {}
                Some(Item::Lock(entry)) => {
                    return Ok(DeleteOutcome::Conflict {
                        current: Some(entry),
                    });
                }
                Some(Item::Tombstone { .. }) | None => {
                    return Ok(DeleteOutcome::Conflict { current: None });
                }
            }
        }
        let released_at = now_ms();
        let tombstone = json!({
            "released": true,
            "previous_index": index,
            "released_at": iso8601(released_at),
            "released_at_ms": released_at,
        });
        let (ok, new_index, value, _answer) = inner
            .cmpxchg_put(&key, index, tombstone, Some(now_ms()))
            .await?;
        if ok {
            inner.remember(&key, Some(new_index));
            return Ok(DeleteOutcome::Deleted);
        }
        match decode_item_or_none(&value, new_index)? {
            Some(Item::Tombstone { index: at }) => {
                inner.remember(&key, Some(at));
                // A replay of this very release answers with the tombstone it wrote.
                let ours = value
                    .get("Object")
                    .and_then(|o| o.get("previous_index"))
                    .and_then(Value::as_u64)
                    == Some(index);
                if ours {
                    Ok(DeleteOutcome::Deleted)
                } else {
                    Ok(DeleteOutcome::Conflict { current: None })
                }
            }
            Some(Item::Lock(entry)) => {
                inner.remember(&key, None);
                Ok(DeleteOutcome::Conflict {
                    current: Some(entry),
                })
            }
            None => Ok(DeleteOutcome::Conflict { current: None }),
        }
    }
}

fn decode_item_or_none(value: &Value, index: u64) -> Result<Option<Item>, StoreError> {
    if value.is_null() {
        Ok(None)
    } else {
        decode_item(value, index).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_ravendb_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.0000000Z");
        assert_eq!(iso8601(1_795_701_600_123), "2026-11-26T14:00:00.1230000Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.0000000Z");
    }

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
    fn records_round_trip_readably() {
        let record = Record {
            owner: "u@h:1".into(),
            nonce: u64::MAX,
            ttl_ms: 30_000,
            written_at_ms: 1_795_701_600_000,
        };
        let object = encode_record(&record);
        assert_eq!(object["nonce"], "18446744073709551615");
        assert_eq!(object["written_at"], "2026-11-26T14:00:00.0000000Z");
        let decoded = decode_record(&object).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded, record);
        assert!(matches!(
            decode_record(&json!({"hello": 1})),
            Err(StoreError::Foreign { .. })
        ));
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
    }

    #[test]
    fn tls_material_needs_https() {
        let result = RavenDbStore::builder()
            .url("http://h:1")
            .database("d")
            .ca_certificate_pem("x")
            .build();
        assert!(matches!(result, Err(RavenDbConfigError::TlsWithoutHttps)));
    }
}

#[cfg(test)]
#[path = "ravendb_proptest.rs"]
mod proptests;
