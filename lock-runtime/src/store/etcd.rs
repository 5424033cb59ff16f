//! The etcd backend: compare-exchange over etcd v3 transactions, through gRPC.
//!
//! The contract maps onto etcd directly:
//! - [`Expect::Absent`] is a txn comparing `create_revision == 0`, [`Expect::Index`]
//!   compares `mod_revision == i`; the failure branch is a range, so a conflict carries
//!   the current entry in the same round trip.
//! - The index is the key's `mod_revision`: etcd's cluster-wide revision, which only
//!   grows, also across delete and re-create. It is the fencing token.
//! - The [`Record`] is stored as compact JSON.
//! - [`CompareExchange::watch`] is an etcd watch of the key starting right after the
//!   latest revision at which the key was seen unchanged (so etcd delivers at once).
//!   Every watch of one store shares one etcd watch stream (each gets its own watch id
//!   on it; a dropped watch future cancels its id): 10,000 held locks are one stream.
//!   When that stream breaks, its watches fail and the next one opens elsewhere.
//! - Server leases: grant, keep-alive over one long-lived stream per lease (the lock
//!   client uses one lease for all its locks, so renewal traffic does not grow with the
//!   number of held locks; a broken stream is reopened on the next call), revoke.
//!
//! Every request has a timeout: a stopped or electing etcd node hangs instead of failing.
//! A request that fails or times out on one endpoint moves on to the next one, within the
//! same call for reads and lease operations; a write that may have been applied there is
//! retried elsewhere too, and a conflict that shows our own record is then read as success
//! (the record's `(owner, nonce)` is unique per acquisition).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use lock_runtime::store::etcd::EtcdStore;
//! use std::time::Duration;
//!
//! let store = EtcdStore::builder()
//!     .endpoints(["http://10.0.0.1:2379", "http://10.0.0.2:2379"])
//!     .prefix("myapp/locks/")
//!     .request_timeout(Duration::from_secs(1))
//!     .build()?;
//! store.ping().await?;
//! // or from a URL:
//! let store = EtcdStore::from_url("etcd://app:secret@10.0.0.1:2379,10.0.0.2:2379/myapp")?;
//! # let _ = store; Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::{Mutex as AsyncMutex, OnceCell};

mod watch;

use super::redact::{check_host_port, redact_url, scheme_of, split_userinfo};
use super::{
    BoxError, Capabilities, CompareExchange, DeleteOutcome, Entry, Expect, LeaseId, PutOutcome,
    Record, StoreError,
};

/// The gRPC client crate this backend is built on, for raw access next to the store
/// (benchmark baselines, debugging, setting up users and roles).
pub use etcd_client;

const BACKEND: &str = "etcd";
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The key (under the prefix) that the shared watch stream's heartbeat watches; nothing
/// writes it.
const HEARTBEAT_KEY: &str = ".distlock-heartbeat";
/// Bound on remembered observations (one per recently contended key).
const OBSERVED_MAX: usize = 4096;

/// A configuration problem found while building an [`EtcdStore`]; nothing was contacted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdConfigError {
    /// The `etcd://` / `etcds://` URL could not be parsed.
    #[error(
        "invalid etcd URL: {reason} (expected etcd://[user:password@]host:port[,host:port...][/prefix], or etcds:// for TLS)"
    )]
    InvalidUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// No endpoint was configured.
    #[error("no etcd endpoint configured: give at least one, such as http://127.0.0.1:2379")]
    NoEndpoints,
    /// One endpoint is not a usable `http://host:port` / `https://host:port` address.
    #[error("invalid etcd endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given, with any `user:password@` replaced by `***@`
        /// (credentials are not accepted there).
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS material could not be read or does not fit the endpoints.
    #[error("etcd TLS configuration: {reason}")]
    Tls {
        /// What is wrong.
        reason: String,
    },
    /// A timeout of zero would fail every request.
    #[error("the etcd {which} timeout must be greater than zero")]
    ZeroTimeout {
        /// `"request"` or `"connect"`.
        which: &'static str,
    },
}

/// A password kept out of `Debug` output and logs.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone, Debug)]
struct Credentials {
    user: String,
    password: Secret,
}

#[derive(Clone, Default)]
struct TlsMaterial {
    ca_pem: Option<Vec<u8>>,
    identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    domain: Option<String>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("custom_ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity_pem.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

/// Builds an [`EtcdStore`]: endpoints, timeouts, key prefix, credentials, TLS.
///
/// ```
/// use lock_runtime::store::etcd::EtcdStore;
/// use std::time::Duration;
///
/// let store = EtcdStore::builder()
///     .endpoint("http://127.0.0.1:2379")
///     .request_timeout(Duration::from_millis(500))
///     .build()
///     .unwrap();
/// assert!(!format!("{store:?}").contains("secret"));
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct EtcdStoreBuilder {
    endpoints: Vec<String>,
    prefix: String,
    request_timeout: Duration,
    connect_timeout: Duration,
    credentials: Option<Credentials>,
    tls: Option<TlsMaterial>,
    deferred: Option<EtcdConfigErrorKind>,
}

/// Errors found while setting builder options, reported by `build`.
#[derive(Clone, Debug)]
enum EtcdConfigErrorKind {
    Tls(String),
}

impl Default for EtcdStoreBuilder {
    fn default() -> Self {
        EtcdStoreBuilder {
            endpoints: Vec::new(),
            prefix: String::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            credentials: None,
            tls: None,
            deferred: None,
        }
    }
}

impl EtcdStoreBuilder {
    /// Adds one endpoint, `http://host:port` (or `https://` with TLS). Requests go to the
    /// first endpoint that answers, in the order given, and move on when one fails.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoints.push(endpoint.into());
        self
    }

    /// Adds several endpoints (see [`EtcdStoreBuilder::endpoint`]).
    pub fn endpoints<I, S>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.endpoints.extend(endpoints.into_iter().map(Into::into));
        self
    }

    /// A prefix put before every lock key, used verbatim (say `"myapp/locks/"`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one request to one endpoint may take before it counts as failed and the
    /// next endpoint is tried (default 2 s). Stopped or electing nodes hang rather than fail.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long connecting (and authenticating) to one endpoint may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Authenticates as `user` with `password`. The token etcd hands out is refreshed
    /// when the server reports it expired. The password never appears in `Debug` output.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some(Credentials {
            user: user.into(),
            password: Secret(password.into()),
        });
        self
    }

    /// Uses TLS (`https://` endpoints) trusting the CA certificate(s) in `pem`.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.get_or_insert_with(TlsMaterial::default).ca_pem = Some(pem.into());
        self
    }

    /// Reads the CA certificate from a PEM file (see [`EtcdStoreBuilder::ca_certificate_pem`]).
    pub fn ca_certificate_file(self, path: impl AsRef<Path>) -> Self {
        match read_pem(path.as_ref(), "CA certificate") {
            Ok(pem) => self.ca_certificate_pem(pem),
            Err(reason) => self.defer(reason),
        }
    }

    /// Presents a client certificate (PEM certificate chain and PEM private key).
    pub fn client_certificate_pem(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls
            .get_or_insert_with(TlsMaterial::default)
            .identity_pem = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Reads the client certificate and key from PEM files.
    pub fn client_certificate_files(
        self,
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Self {
        let cert = read_pem(cert_path.as_ref(), "client certificate");
        let key = read_pem(key_path.as_ref(), "client key");
        match (cert, key) {
            (Ok(cert), Ok(key)) => self.client_certificate_pem(cert, key),
            (Err(reason), _) | (_, Err(reason)) => self.defer(reason),
        }
    }

    /// The name to verify in the servers' certificates, when it is not the endpoint host.
    pub fn tls_domain(mut self, domain: impl Into<String>) -> Self {
        self.tls.get_or_insert_with(TlsMaterial::default).domain = Some(domain.into());
        self
    }

    /// Turns TLS on without any other option (endpoints given without a scheme become
    /// `https://`). Servers must then present a certificate signed by a CA given with
    /// [`EtcdStoreBuilder::ca_certificate_pem`].
    pub fn tls(mut self) -> Self {
        self.tls.get_or_insert_with(TlsMaterial::default);
        self
    }

    fn defer(mut self, reason: String) -> Self {
        if self.deferred.is_none() {
            self.deferred = Some(EtcdConfigErrorKind::Tls(reason));
        }
        self
    }

    /// Validates the configuration and builds the store. Nothing is contacted yet:
    /// connections open on first use (see [`EtcdStore::ping`] to check them early).
    pub fn build(self) -> Result<EtcdStore, EtcdConfigError> {
        if let Some(EtcdConfigErrorKind::Tls(reason)) = self.deferred {
            return Err(EtcdConfigError::Tls { reason });
        }
        if self.endpoints.is_empty() {
            return Err(EtcdConfigError::NoEndpoints);
        }
        if self.request_timeout.is_zero() {
            return Err(EtcdConfigError::ZeroTimeout { which: "request" });
        }
        if self.connect_timeout.is_zero() {
            return Err(EtcdConfigError::ZeroTimeout { which: "connect" });
        }
        if self.tls.as_ref().is_some_and(|t| t.ca_pem.is_none()) {
            return Err(EtcdConfigError::Tls {
                reason: "TLS needs the CA certificate that signed the etcd servers: \
                         ca_certificate_file(..) on the builder, or ?ca=/path/ca.pem in the URL"
                    .to_owned(),
            });
        }
        let tls = self.tls.is_some();
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for raw in &self.endpoints {
            let url = normalize_endpoint(raw, tls)?;
            endpoints.push(EndpointSlot {
                url,
                client: OnceCell::new(),
            });
        }
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                endpoints,
                current: AtomicUsize::new(0),
                prefix: self.prefix,
                request_timeout: self.request_timeout,
                connect_timeout: self.connect_timeout,
                credentials: self.credentials,
                tls: self.tls,
                keepalives: AsyncMutex::new(HashMap::new()),
                observed: std::sync::Mutex::new(HashMap::new()),
                watches: AsyncMutex::new(None),
            }),
        })
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} at {}: {e}", path.display()))
}

/// Checks one endpoint and gives it a scheme matching the TLS setting.
fn normalize_endpoint(raw: &str, tls: bool) -> Result<String, EtcdConfigError> {
    let invalid = |reason: &str| EtcdConfigError::InvalidEndpoint {
        endpoint: redact_url(raw),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, raw),
    };
    let scheme = match (scheme, tls) {
        (None, false) | (Some("http"), false) => "http",
        (None, true) | (Some("https"), true) => "https",
        (Some("http"), true) => return Err(invalid("TLS is configured: use https://")),
        (Some("https"), false) => {
            return Err(invalid(
                "https:// needs TLS: give a CA certificate (or call .tls())",
            ));
        }
        (Some(_), _) => return Err(invalid("the scheme must be http:// or https://")),
    };
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.contains('@') {
        return Err(invalid(
            "credentials do not belong in an endpoint: use .credentials(user, password)",
        ));
    }
    if hostport.contains('/') || hostport.contains('?') || hostport.contains('#') {
        return Err(invalid("an endpoint is host:port, without a path"));
    }
    check_host_port(hostport, true).map_err(invalid)?;
    Ok(format!("{scheme}://{hostport}"))
}

/// Parses `etcd://[user[:password]@]host:port[,host:port...][/prefix][?options]`
/// (`etcds://` for TLS; options in [`EtcdStore::builder_from_url`]).
///
/// User and password may be percent-encoded; the password may also hold unencoded `/`, `?`,
/// `#` or `@`: the userinfo ends at the last `@` (so an `@` in the prefix or an option is
/// written `%40`). A non-empty path becomes the key prefix with a trailing `/` (`/myapp` and
/// `/myapp/` both give `myapp/`). No error quotes the userinfo or a host.
fn builder_from_url(url: &str) -> Result<EtcdStoreBuilder, EtcdConfigError> {
    let invalid = |reason: String| EtcdConfigError::InvalidUrl { reason };
    let (tls, rest) = if let Some(rest) = url.strip_prefix("etcd://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("etcds://") {
        (true, rest)
    } else {
        return Err(invalid(match scheme_of(url) {
            Some(scheme) => format!("unknown scheme {scheme:?}"),
            None => "missing scheme".to_owned(),
        }));
    };
    let (userinfo, rest) = split_userinfo(rest);
    if rest.contains('#') {
        return Err(invalid("fragments (#...) are not supported".to_owned()));
    }
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (hosts, path) = match rest.split_once('/') {
        Some((hosts, path)) => (hosts, path),
        None => (rest, ""),
    };
    let mut builder = EtcdStoreBuilder::default();
    if tls {
        builder = builder.tls();
    }
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, p),
            None => (userinfo, ""),
        };
        let user = percent_decode(user).map_err(|r| invalid(format!("user name: {r}")))?;
        // Never echo the password, not even in an error.
        let password =
            percent_decode(password).map_err(|_| invalid("bad %-escape in the password".into()))?;
        if user.is_empty() {
            return Err(invalid("empty user name before '@'".to_owned()));
        }
        builder = builder.credentials(user, password);
    }
    if hosts.is_empty() {
        return Err(invalid("no host:port".to_owned()));
    }
    let count = hosts.split(',').count();
    for (i, hostport) in hosts.split(',').enumerate() {
        check_host_port(hostport, true)
            .map_err(|reason| invalid(format!("host:port {} of {count}: {reason}", i + 1)))?;
        builder = builder.endpoint(hostport);
    }
    let prefix = percent_decode(path).map_err(|r| invalid(format!("prefix: {r}")))?;
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() {
        builder = builder.prefix(format!("{prefix}/"));
    }
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value).map_err(|r| invalid(format!("{name}: {r}")))?;
        builder = match name {
            "ca" => builder.ca_certificate_file(&value),
            "cert" => match query_value(query, "key") {
                Some(key) => builder.client_certificate_files(&value, key?),
                None => {
                    return Err(invalid(
                        "cert= needs key= (the client's private key)".into(),
                    ));
                }
            },
            "key" if query_value(query, "cert").is_some() => builder,
            "key" => return Err(invalid("key= needs cert= (the client certificate)".into())),
            "domain" => builder.tls_domain(value),
            "timeout" => builder.request_timeout(parse_millis(&value).map_err(&invalid)?),
            "connect_timeout" => builder.connect_timeout(parse_millis(&value).map_err(&invalid)?),
            other => {
                return Err(invalid(format!(
                    "unknown option {:?} (known: ca, cert, key, domain, timeout, connect_timeout)",
                    bounded(other)
                )));
            }
        };
    }
    Ok(builder)
}

/// The percent-decoded value of `name` in a query string, if present.
fn query_value(query: Option<&str>, name: &str) -> Option<Result<String, EtcdConfigError>> {
    query?.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (n == name).then(|| {
            percent_decode(v).map_err(|r| EtcdConfigError::InvalidUrl {
                reason: format!("{name}: {r}"),
            })
        })
    })
}

/// `250ms`, `2s` or a bare number of milliseconds.
fn parse_millis(value: &str) -> Result<Duration, String> {
    let (digits, unit) = if let Some(d) = value.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = value.strip_suffix('s') {
        (d, 1000)
    } else {
        (value, 1)
    };
    match digits.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_millis(n.saturating_mul(unit))),
        _ => Err(format!("invalid duration {value:?} (use 500ms or 2s)")),
    }
}

/// An option name is short, but be safe with whatever was passed.
fn bounded(name: &str) -> String {
    name.chars().take(16).collect()
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "a '%' is not followed by two hex digits".to_owned())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 once decoded".to_owned())
}

/// One configured endpoint and its client, connected on first use.
struct EndpointSlot {
    url: String,
    client: OnceCell<Client>,
}

/// A keep-alive stream for one lease, on one endpoint.
struct KeepAlive {
    endpoint: usize,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

struct Inner {
    endpoints: Vec<EndpointSlot>,
    /// The endpoint that answered last: the next request starts there.
    current: AtomicUsize,
    prefix: String,
    request_timeout: Duration,
    connect_timeout: Duration,
    credentials: Option<Credentials>,
    tls: Option<TlsMaterial>,
    /// Long-lived keep-alive streams by lease (the lock client holds one lease).
    keepalives: AsyncMutex<HashMap<i64, KeepAlive>>,
    /// Per full key, the index last seen there (`None`: absent) and the store revision
    /// of the answer that showed it, from conflicts and reads: lets a watch skip a read.
    observed: std::sync::Mutex<HashMap<String, (Option<u64>, i64)>>,
    /// The watch stream every `watch()` call shares (opened on first use, replaced when
    /// it breaks). Locked while one is opened, so that concurrent calls open one.
    watches: AsyncMutex<Option<Arc<watch::SharedStream>>>,
}

/// A [`CompareExchange`] store on an etcd v3 cluster (3.4 or newer), over gRPC.
///
/// Cheap to clone; clones share connections and keep-alive streams. Build it with
/// [`EtcdStore::builder`] or [`EtcdStore::from_url`].
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        let endpoints: Vec<&str> = inner.endpoints.iter().map(|e| e.url.as_str()).collect();
        f.debug_struct("EtcdStore")
            .field("endpoints", &endpoints)
            .field("prefix", &inner.prefix)
            .field("request_timeout", &inner.request_timeout)
            .field("connect_timeout", &inner.connect_timeout)
            .field("credentials", &inner.credentials)
            .field("tls", &inner.tls)
            .finish()
    }
}

/// How one attempt on one endpoint failed.
enum Failure {
    /// Try the next endpoint. `maybe_applied`: a write may have reached the server.
    Retry {
        error: StoreError,
        maybe_applied: bool,
    },
    /// Stop: the answer would be the same everywhere (auth, bad request, lease gone).
    Fatal(StoreError),
}

impl EtcdStore {
    /// A builder with no endpoint, no prefix, 2 s timeouts, no credentials, no TLS.
    pub fn builder() -> EtcdStoreBuilder {
        EtcdStoreBuilder::default()
    }

    /// A builder from `etcd://[user:password@]host:port[,host:port...][/prefix][?options]`,
    /// or `etcds://...` for TLS. User and password may be percent-encoded; the userinfo
    /// ends at the last `@`, so a password may also hold an unencoded `/`, `?`, `#` or `@`,
    /// and an `@` in the prefix or an option value is written `%40`. Options:
    /// `ca=/path/ca.pem` (required with `etcds://`, or add it on the builder),
    /// `cert=/path/client.pem&key=/path/client.key`, `domain=name`,
    /// `timeout=500ms` (per request), `connect_timeout=2s`.
    ///
    /// ```
    /// use lock_runtime::store::etcd::EtcdStore;
    /// let builder = EtcdStore::builder_from_url("etcd://app:s%40cret@127.0.0.1:2379,127.0.0.1:22379/jobs")
    ///     .unwrap();
    /// let store = builder.build().unwrap();
    /// assert!(!format!("{store:?}").contains("cret"));
    /// assert!(EtcdStore::builder_from_url("etcd://127.0.0.1").is_err()); // no port
    /// ```
    pub fn builder_from_url(url: &str) -> Result<EtcdStoreBuilder, EtcdConfigError> {
        builder_from_url(url)
    }

    /// Builds a store from a URL with the default timeouts (see
    /// [`EtcdStore::builder_from_url`]).
    pub fn from_url(url: &str) -> Result<EtcdStore, EtcdConfigError> {
        builder_from_url(url)?.build()
    }

    /// The key prefix in use.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The endpoints, normalized (`http://host:port`), in failover order.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    /// Checks that some endpoint answers (and accepts the credentials) within the
    /// timeouts, with one linearizable read (a count of one key under the prefix).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let key = self.full_key(".distlock-ping");
        self.with_failover(false, |mut client| {
            let key = key.clone();
            async move {
                client
                    .get(key, Some(GetOptions::new().with_count_only()))
                    .await
            }
        })
        .await
        .map(|_| ())
    }

    /// The gRPC client of the endpoint requests currently go to, connecting it if needed:
    /// the same connection the store uses, for raw requests next to it.
    pub async fn raw_client(&self) -> Result<Client, StoreError> {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.endpoints.len();
        self.client_at(i).await.map_err(|f| match f {
            Failure::Retry { error, .. } | Failure::Fatal(error) => error,
        })
    }

    /// The full etcd key under which `key` is stored (the prefix followed by `key`).
    pub fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.inner.prefix, key)
    }

    /// Connects (once) to endpoint `i`, within the connect timeout.
    async fn client_at(&self, i: usize) -> Result<Client, Failure> {
        let inner = &self.inner;
        let slot = &inner.endpoints[i];
        let connect = || async {
            let mut options = ConnectOptions::new()
                .with_connect_timeout(inner.connect_timeout)
                // A member cut off from the leader refuses requests and ends watches at
                // once instead of serving stale data or waiting: we move on.
                .with_require_leader(true)
                // A request that hangs on a dead TCP peer is caught by our own timeout;
                // HTTP/2 pings make the connection notice it and reconnect afterwards.
                .with_keep_alive(ping_interval(inner.request_timeout), inner.request_timeout);
            if let Some(creds) = &inner.credentials {
                options = options
                    .with_user(creds.user.clone(), creds.password.0.clone())
                    .with_auto_token_refresh(true);
            }
            if let Some(tls) = &inner.tls {
                let mut config = etcd_client::TlsOptions::new();
                if let Some(ca) = &tls.ca_pem {
                    config = config.ca_certificate(etcd_client::Certificate::from_pem(ca));
                }
                if let Some((cert, key)) = &tls.identity_pem {
                    config = config.identity(etcd_client::Identity::from_pem(cert, key));
                }
                if let Some(domain) = &tls.domain {
                    config = config.domain_name(domain.clone());
                }
                options = options.with_tls(config);
            }
            match tokio::time::timeout(
                inner.connect_timeout,
                Client::connect([slot.url.as_str()], Some(options)),
            )
            .await
            {
                Ok(Ok(client)) => Ok(client),
                Ok(Err(e)) => Err(self.classify(i, e, false)),
                Err(_) => Err(Failure::Retry {
                    error: self.unavailable(
                        i,
                        format!("connecting took longer than {:?}", inner.connect_timeout),
                    ),
                    maybe_applied: false,
                }),
            }
        };
        slot.client.get_or_try_init(connect).await.cloned()
    }

    fn unavailable(&self, i: usize, source: impl Into<BoxError>) -> StoreError {
        unavailable_at(&self.inner.endpoints[i].url, source)
    }

    /// Remembers that `full_key` held `seen` as of store revision `at`.
    fn observe(&self, full_key: &str, seen: Option<u64>, at: Option<i64>) {
        let Some(at) = at else { return };
        let mut observed = self
            .inner
            .observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if observed.len() >= OBSERVED_MAX && !observed.contains_key(full_key) {
            observed.clear();
        }
        observed.insert(full_key.to_owned(), (seen, at));
    }

    /// The revision at which `full_key` was last seen holding `seen`, if remembered.
    fn observed_at(&self, full_key: &str, seen: Option<u64>) -> Option<i64> {
        let observed = self
            .inner
            .observed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        observed
            .get(full_key)
            .filter(|(index, _)| *index == seen)
            .map(|(_, at)| *at)
    }

    /// Registers a watch of `full_key` from `start_revision` on the store's shared watch
    /// stream, opening one (with failover) when there is none or it broke.
    async fn register_watch(
        &self,
        full_key: &str,
        start_revision: i64,
    ) -> Result<watch::Registration, StoreError> {
        let inner = &self.inner;
        let n = inner.endpoints.len();
        let mut slot = inner.watches.lock().await;
        if let Some(stream) = slot.as_ref() {
            if let Some(registration) = stream.register(full_key, start_revision) {
                return Ok(registration);
            }
            // It broke: the next stream starts at the next endpoint (moved once per
            // broken stream, not once per watch that was on it).
            let _ = inner.current.compare_exchange(
                stream.endpoint,
                (stream.endpoint + 1) % n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            *slot = None;
        }
        let ((stream, first), _, i) = self
            .with_failover_at(false, |mut client| {
                let key = full_key.to_owned();
                async move {
                    let options = WatchOptions::new().with_start_revision(start_revision);
                    let mut stream = client.watch(key, Some(options)).await?;
                    // Wait for the "created" answer so that a dead node is caught here.
                    let first = stream.message().await?;
                    Ok((stream, first))
                }
            })
            .await?;
        let Some(first) = first else {
            return Err(self.unavailable(i, "the watch stream closed right after opening"));
        };
        let heartbeat = watch::Heartbeat {
            key: self.full_key(HEARTBEAT_KEY),
            quiet: ping_interval(inner.request_timeout).mul_f64(0.75),
            answer_within: inner.request_timeout,
        };
        let (stream, registration) = watch::SharedStream::start(
            i,
            inner.endpoints[i].url.clone(),
            stream,
            &first,
            heartbeat,
        );
        *slot = Some(stream);
        Ok(registration)
    }

    /// A linearizable read of `full_key`: its index (`None`: absent) and the revision
    /// of the answer.
    async fn read_index(&self, full_key: &str) -> Result<(Option<u64>, i64), StoreError> {
        let (response, _) = self
            .with_failover(false, |mut client| {
                let key = full_key.to_owned();
                async move {
                    client
                        .get(key, Some(GetOptions::new().with_keys_only()))
                        .await
                }
            })
            .await?;
        let index = response
            .kvs()
            .first()
            .map(|kv| u64::try_from(kv.mod_revision()).unwrap_or(0));
        let at = response
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| self.bad_answer("a range answer without a header"))?;
        Ok((index, at))
    }

    /// An answer we cannot use, from the endpoint that answered last.
    fn bad_answer(&self, what: impl Into<String>) -> StoreError {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.endpoints.len();
        self.backend_error(i, what.into())
    }

    fn backend_error(&self, i: usize, source: impl Into<BoxError>) -> StoreError {
        backend_at(&self.inner.endpoints[i].url, source)
    }

    /// Sorts an etcd-client error into retry-elsewhere or fatal.
    fn classify(&self, i: usize, error: etcd_client::Error, is_write: bool) -> Failure {
        classify_at(&self.inner.endpoints[i].url, error, is_write)
    }

    /// Runs `op` on the current endpoint, moving on to the next one on failure, each
    /// attempt bounded by the request timeout. Returns the result and whether an earlier
    /// attempt may have applied a write.
    async fn with_failover<T, F, Fut>(&self, is_write: bool, op: F) -> Result<(T, bool), StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.with_failover_at(is_write, op)
            .await
            .map(|(value, ambiguous, _)| (value, ambiguous))
    }

    /// [`Self::with_failover`], also telling which endpoint answered.
    async fn with_failover_at<T, F, Fut>(
        &self,
        is_write: bool,
        op: F,
    ) -> Result<(T, bool, usize), StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let inner = &self.inner;
        let n = inner.endpoints.len();
        let start = inner.current.load(Ordering::Relaxed) % n;
        let mut ambiguous = false;
        let mut last = None;
        for step in 0..n {
            let i = (start + step) % n;
            let failure = match self.client_at(i).await {
                Err(f) => f,
                Ok(client) => match tokio::time::timeout(inner.request_timeout, op(client)).await {
                    Ok(Ok(value)) => {
                        if step > 0 {
                            inner.current.store(i, Ordering::Relaxed);
                        }
                        return Ok((value, ambiguous, i));
                    }
                    Ok(Err(e)) => self.classify(i, e, is_write),
                    Err(_) => Failure::Retry {
                        error: self.unavailable(
                            i,
                            format!("no answer within {:?}", inner.request_timeout),
                        ),
                        maybe_applied: is_write,
                    },
                },
            };
            match failure {
                Failure::Fatal(error) => return Err(error),
                Failure::Retry {
                    error,
                    maybe_applied,
                } => {
                    tracing::debug!(backend = BACKEND, %error, "etcd request failed; trying the next endpoint");
                    ambiguous |= maybe_applied;
                    // Later calls start at the next endpoint, not at the one that failed.
                    inner.current.store((i + 1) % n, Ordering::Relaxed);
                    last = Some(error);
                }
            }
        }
        Err(last.unwrap_or(StoreError::Unsupported("an etcd store without endpoints")))
    }

    fn decode(&self, kv: &KeyValue) -> Result<Entry, StoreError> {
        let record: Record =
            serde_json::from_slice(kv.value()).map_err(|e| StoreError::Foreign {
                reason: format!("{e}"),
            })?;
        let index = u64::try_from(kv.mod_revision())
            .map_err(|_| self.bad_answer(format!("negative mod_revision {}", kv.mod_revision())))?;
        Ok(Entry {
            record,
            index,
            lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
        })
    }

    /// The entry in the failure branch of a txn (a range of the key).
    fn current_from(&self, responses: Vec<TxnOpResponse>) -> Result<Option<Entry>, StoreError> {
        for response in responses {
            if let TxnOpResponse::Get(get) = response {
                return get.kvs().first().map(|kv| self.decode(kv)).transpose();
            }
        }
        Ok(None)
    }

    fn lease_secs(ttl: Duration) -> i64 {
        // etcd leases count whole seconds; round up so a lease never ends early.
        let millis = ttl.as_millis().max(1);
        i64::try_from(millis.div_ceil(1000)).unwrap_or(i64::MAX)
    }
}

/// How often an idle connection sends an HTTP/2 ping (its answer is due within the
/// request timeout).
fn ping_interval(request_timeout: Duration) -> Duration {
    request_timeout.max(Duration::from_secs(1))
}

fn index_to_revision(index: u64) -> i64 {
    // An index above i64::MAX cannot exist in etcd, so the compare simply fails.
    i64::try_from(index).unwrap_or(i64::MAX)
}

/// Sorts an etcd-client error from `endpoint` into retry-elsewhere or fatal.
fn classify_at(endpoint: &str, error: etcd_client::Error, is_write: bool) -> Failure {
    use etcd_client::Error as E;
    use tonic::Code;
    match error {
        E::GRpcStatus(status) => {
            let message = status.message().to_owned();
            match status.code() {
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted
                | Code::ResourceExhausted => Failure::Retry {
                    error: unavailable_at(endpoint, format!("{:?}: {message}", status.code())),
                    maybe_applied: is_write,
                },
                // Transport failures surface as Unknown with a transport message.
                Code::Unknown if !message.starts_with("etcdserver:") => Failure::Retry {
                    error: unavailable_at(endpoint, message),
                    maybe_applied: is_write,
                },
                Code::Unauthenticated | Code::PermissionDenied => Failure::Fatal(backend_at(
                    endpoint,
                    format!(
                        "authentication or permission refused ({message}): check the etcd \
                             user, password and role"
                    ),
                )),
                Code::InvalidArgument if message.contains("authentication failed") => {
                    Failure::Fatal(backend_at(
                        endpoint,
                        format!(
                            "authentication failed ({message}): check the etcd user and password"
                        ),
                    ))
                }
                Code::FailedPrecondition if message.contains("user name is empty") => {
                    Failure::Fatal(backend_at(
                        endpoint,
                        "etcd has authentication enabled: configure a user and password",
                    ))
                }
                code => Failure::Fatal(backend_at(endpoint, format!("{code:?}: {message}"))),
            }
        }
        E::TransportError(e) => Failure::Retry {
            error: unavailable_at(endpoint, e),
            maybe_applied: is_write,
        },
        E::IoError(e) => Failure::Retry {
            error: unavailable_at(endpoint, e),
            maybe_applied: is_write,
        },
        E::LeaseKeepAliveError(m) if m.contains("not found") => {
            Failure::Fatal(backend_at(endpoint, format!("lease not found ({m})")))
        }
        E::LeaseKeepAliveError(m) | E::WatchError(m) => Failure::Retry {
            error: unavailable_at(endpoint, m),
            maybe_applied: is_write,
        },
        other => Failure::Fatal(backend_at(endpoint, other.to_string())),
    }
}

fn unavailable_at(endpoint: &str, source: impl Into<BoxError>) -> StoreError {
    StoreError::Unavailable {
        endpoint: endpoint.to_owned(),
        source: source.into(),
    }
}

fn backend_at(endpoint: &str, source: impl Into<BoxError>) -> StoreError {
    StoreError::Backend {
        endpoint: endpoint.to_owned(),
        source: source.into(),
    }
}

#[async_trait]
impl CompareExchange for EtcdStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE.with_watch(true).with_leases(true)
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let key = self.full_key(key);
        let (response, _) = self
            .with_failover(false, |mut client| {
                let key = key.clone();
                async move { client.get(key, None).await }
            })
            .await?;
        let entry = response
            .kvs()
            .first()
            .map(|kv| self.decode(kv))
            .transpose()?;
        self.observe(
            &key,
            entry.as_ref().map(|e| e.index),
            response.header().map(|h| h.revision()),
        );
        Ok(entry)
    }

    async fn put(
        &self,
        key: &str,
        record: &Record,
        expect: Expect,
        lease: Option<LeaseId>,
    ) -> Result<PutOutcome, StoreError> {
        let key = self.full_key(key);
        let value = serde_json::to_vec(record).map_err(|e| StoreError::Foreign {
            reason: format!("cannot encode the record: {e}"),
        })?;
        let compare = match expect {
            Expect::Absent => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            Expect::Index(i) => {
                Compare::mod_revision(key.clone(), CompareOp::Equal, index_to_revision(i))
            }
        };
        let options = lease.map(|l| PutOptions::new().with_lease(l.0));
        let txn = etcd_client::Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key.clone(), value, options)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let result = self
            .with_failover(true, |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await;
        let (response, ambiguous) = match result {
            Err(StoreError::Backend { endpoint, source })
                if lease.is_some() && source.to_string().contains("lease not found") =>
            {
                let _ = endpoint;
                return Err(StoreError::LeaseGone(lease.unwrap_or(LeaseId(0))));
            }
            other => other?,
        };
        if response.succeeded() {
            let revision = response
                .header()
                .map(|h| h.revision())
                .ok_or_else(|| self.bad_answer("a txn answer without a header"))?;
            let index = u64::try_from(revision)
                .map_err(|_| self.bad_answer(format!("negative revision {revision}")))?;
            return Ok(PutOutcome::Swapped { index });
        }
        let current = self.current_from(response.op_responses())?;
        self.observe(
            &key,
            current.as_ref().map(|e| e.index),
            response.header().map(|h| h.revision()),
        );
        // An attempt that timed out elsewhere may have written our record: if the key
        // holds this very acquisition, that write is ours.
        if ambiguous
            && let Some(entry) = &current
            && entry.record.same_acquisition(record)
        {
            return Ok(PutOutcome::Swapped { index: entry.index });
        }
        Ok(PutOutcome::Conflict { current })
    }

    async fn delete(&self, key: &str, index: u64) -> Result<DeleteOutcome, StoreError> {
        let key = self.full_key(key);
        let txn = etcd_client::Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                index_to_revision(index),
            )])
            .and_then([TxnOp::delete(key.clone(), None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let (response, ambiguous) = self
            .with_failover(true, |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await?;
        if response.succeeded() {
            return Ok(DeleteOutcome::Deleted);
        }
        let current = self.current_from(response.op_responses())?;
        self.observe(
            &key,
            current.as_ref().map(|e| e.index),
            response.header().map(|h| h.revision()),
        );
        if ambiguous && current.is_none() {
            // Our delete may have been applied by the attempt that timed out.
            return Ok(DeleteOutcome::Deleted);
        }
        Ok(DeleteOutcome::Conflict { current })
    }

    async fn watch(&self, key: &str, seen: Option<u64>) -> Result<(), StoreError> {
        let full = self.full_key(key);
        // etcd serves a watch that starts at or before its current revision from an
        // "unsynced" group that it catches up only every 100 ms: a wake-up could come up
        // to that late. So start right after the latest revision at which we know the
        // key held `seen` (the conflict or read the caller just made), which is usually
        // still the current revision, rather than right after `seen` itself, which is
        // behind as soon as any other key was written since.
        let start_revision = match seen {
            Some(index) => {
                let seen_at = index_to_revision(index);
                self.observed_at(&full, seen)
                    .map_or(seen_at, |at| at.max(seen_at))
                    .saturating_add(1)
            }
            None => match self.observed_at(&full, None) {
                Some(at) => at.saturating_add(1),
                None => {
                    // Absent: watch from the revision at which we see it absent.
                    let (index, at) = self.read_index(&full).await?;
                    if index.is_some() {
                        return Ok(());
                    }
                    at.saturating_add(1)
                }
            },
        };
        // Opening the shared stream (when there is none) is bounded by the request
        // timeout on each endpoint and fails over; etcd's answer to this watch's create
        // request is awaited for one request timeout; waiting for an event is bounded by
        // the caller.
        self.register_watch(&full, start_revision)
            .await?
            .wait(self.inner.request_timeout)
            .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = Self::lease_secs(ttl);
        let (response, _) = self
            .with_failover(false, |mut client| async move {
                client.lease_grant(secs, None).await
            })
            .await?;
        if !response.error().is_empty() {
            return Err(StoreError::Backend {
                endpoint: self.endpoints().join(","),
                source: format!("lease grant refused: {}", response.error()).into(),
            });
        }
        Ok(LeaseId(response.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>, StoreError> {
        let inner = &self.inner;
        // Take the stream out while it is in use: if this call is cancelled between a
        // request and its answer, the stream is dropped rather than left one answer
        // behind (a stale answer would make a renewal look newer than it is).
        let open = inner.keepalives.lock().await.remove(&lease.0);
        if let Some(mut open) = open {
            let renewed = tokio::time::timeout(inner.request_timeout, async {
                open.keeper.keep_alive().await?;
                open.stream.message().await
            })
            .await;
            match renewed {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => {
                    let ttl = Duration::from_secs(answer.ttl().unsigned_abs());
                    inner.keepalives.lock().await.insert(lease.0, open);
                    return Ok(Some(ttl));
                }
                Ok(Ok(Some(_))) => return Ok(None),
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    // The stream broke or hangs: reopen it, on the next endpoint.
                    tracing::debug!(
                        backend = BACKEND,
                        endpoint = %inner.endpoints[open.endpoint].url,
                        "etcd keep-alive stream broken; reopening"
                    );
                    let n = inner.endpoints.len();
                    inner
                        .current
                        .store((open.endpoint + 1) % n, Ordering::Relaxed);
                }
            }
        }
        // Open a stream. Opening sends one keep-alive and checks the lease still exists;
        // the TTL of that answer is not exposed, so renew once more on the new stream.
        let opened = self
            .with_failover(false, |mut client| async move {
                let (mut keeper, mut stream) = client.lease_keep_alive(lease.0).await?;
                keeper.keep_alive().await?;
                let answer = stream.message().await?;
                Ok((keeper, stream, answer))
            })
            .await;
        let endpoint = inner.current.load(Ordering::Relaxed) % inner.endpoints.len();
        match opened {
            Ok(((keeper, stream, Some(answer)), _)) if answer.ttl() > 0 => {
                inner.keepalives.lock().await.insert(
                    lease.0,
                    KeepAlive {
                        endpoint,
                        keeper,
                        stream,
                    },
                );
                Ok(Some(Duration::from_secs(answer.ttl().unsigned_abs())))
            }
            Ok(((_, _, Some(_)), _)) => Ok(None),
            Ok(((_, _, None), _)) => Err(self.unavailable(
                endpoint,
                "the lease keep-alive stream closed right after opening",
            )),
            Err(StoreError::Backend { source, .. })
                if source.to_string().contains("lease not found") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.keepalives.lock().await.remove(&lease.0);
        let result = self
            .with_failover(false, |mut client| async move {
                client.lease_revoke(lease.0).await
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            // Already gone: the keys are deleted either way.
            Err(StoreError::Backend { source, .. })
                if source.to_string().contains("lease not found") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_with_credentials_hosts_and_prefix() {
        let b = builder_from_url("etcd://app:p%40ss@127.0.0.1:2379,localhost:22379/my/app/")
            .unwrap_or_else(|e| panic!("{e}"));
        let store = b.build().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            store.endpoints(),
            ["http://127.0.0.1:2379", "http://localhost:22379"]
        );
        assert_eq!(store.prefix(), "my/app/");
        let debug = format!("{store:?}");
        assert!(
            !debug.contains("p@ss") && !debug.contains("p%40ss"),
            "{debug}"
        );
        assert!(debug.contains("app"), "{debug}");
    }

    #[test]
    fn etcds_url_uses_https_and_needs_a_ca() {
        assert!(matches!(
            EtcdStore::from_url("etcds://127.0.0.1:2379"),
            Err(EtcdConfigError::Tls { .. })
        ));
        let store = EtcdStore::builder_from_url("etcds://127.0.0.1:2379")
            .unwrap_or_else(|e| panic!("{e}"))
            .ca_certificate_pem("-----BEGIN CERTIFICATE-----")
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.endpoints(), ["https://127.0.0.1:2379"]);
        assert_eq!(store.prefix(), "");
        // A CA file that cannot be read is reported by name.
        match EtcdStore::from_url("etcds://127.0.0.1:2379?ca=/nonexistent/ca.pem") {
            Err(e @ EtcdConfigError::Tls { .. }) => {
                assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn url_options() {
        let store = EtcdStore::from_url("etcd://h:1/p?timeout=250ms&connect_timeout=3s")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.inner.request_timeout, Duration::from_millis(250));
        assert_eq!(store.inner.connect_timeout, Duration::from_secs(3));
        for bad in [
            "etcd://h:1?timeout=soon",
            "etcd://h:1?timeout=0s",
            "etcd://h:1?cert=/c.pem",
            "etcd://h:1?key=/k.pem",
            "etcd://h:1?password=x",
        ] {
            assert!(
                matches!(
                    builder_from_url(bad),
                    Err(EtcdConfigError::InvalidUrl { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_urls_are_typed_errors_without_the_password() {
        for bad in [
            "http://127.0.0.1:2379",
            "127.0.0.1:2379",
            "etcd://",
            "etcd://127.0.0.1",
            "etcd://127.0.0.1:0",
            "etcd://127.0.0.1:99999",
            "etcd://u:hunter2@",
            "etcd://u:hunter2@127.0.0.1:2379,",
            "etcd://:hunter2@127.0.0.1:2379",
            "etcd://u:hunter2%zz@127.0.0.1:2379",
            "etcd://127.0.0.1:2379?x=1",
            // Regression: a '/' or '?' in the password cut it before the '@', and
            // the port error repeated it.
            "etcd://a:hunter2/AA0A0AA0@h:1,h:2,h",
            "etcd://a:hunter2?AA0A0AA0@h:1,h",
            // Regression: with the '@' deleted, `u:hunter2h:1` was a host.
            "etcd://u:hunter2h:1",
            "etcd://u:hunter2h:1,h:2/p",
            // The '@' typed as ',', '/' or '?': the password is a port.
            "etcd://u:hunter2,h:1",
            "etcd://u:hunter2/h:1",
            "etcd://u:hunter2?h:1",
            "etcd:/u:hunter2@h://",
        ] {
            match builder_from_url(bad) {
                Err(e @ EtcdConfigError::InvalidUrl { .. }) => {
                    let shown = format!("{e} {e:?}");
                    assert!(!shown.contains("hunter"), "{bad}: {shown}");
                }
                other => panic!("{bad}: expected InvalidUrl, got {other:?}"),
            }
        }
    }

    #[test]
    fn unencoded_specials_in_the_password_end_at_the_last_at() {
        for special in ["/", "?", "#", "@", ":", "/?#@"] {
            let url = format!("etcd://app:pa{special}ss@h:1,[::1]:2/my/app?timeout=250ms");
            let store = EtcdStore::from_url(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(store.endpoints(), ["http://h:1", "http://[::1]:2"], "{url}");
            assert_eq!(store.prefix(), "my/app/", "{url}");
            assert_eq!(store.inner.request_timeout, Duration::from_millis(250));
            let password = store
                .inner
                .credentials
                .as_ref()
                .map(|c| c.password.0.as_str());
            assert_eq!(password, Some(format!("pa{special}ss").as_str()), "{url}");
        }
    }

    #[test]
    fn endpoint_validation() {
        assert!(matches!(
            EtcdStore::builder().build(),
            Err(EtcdConfigError::NoEndpoints)
        ));
        for bad in [
            "ftp://h:1",
            "http://h",
            "http://u:p@h:1",
            "http://h:1/x",
            "https://h:1",
            "http://u:ph:1",
        ] {
            assert!(
                matches!(
                    EtcdStore::builder().endpoint(bad).build(),
                    Err(EtcdConfigError::InvalidEndpoint { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            EtcdStore::builder()
                .endpoint("h:1")
                .request_timeout(Duration::ZERO)
                .build(),
            Err(EtcdConfigError::ZeroTimeout { .. })
        ));
        assert!(matches!(
            EtcdStore::builder()
                .endpoint("h:1")
                .ca_certificate_file("/nonexistent/ca.pem")
                .build(),
            Err(EtcdConfigError::Tls { .. })
        ));
    }

    #[test]
    fn endpoint_errors_redact_credentials() {
        match EtcdStore::builder().endpoint("http://u:SECRET@h:1").build() {
            Err(EtcdConfigError::InvalidEndpoint { endpoint, .. }) => {
                assert_eq!(endpoint, "http://***@h:1")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lease_seconds_round_up() {
        assert_eq!(EtcdStore::lease_secs(Duration::from_millis(1)), 1);
        assert_eq!(EtcdStore::lease_secs(Duration::from_millis(1000)), 1);
        assert_eq!(EtcdStore::lease_secs(Duration::from_millis(1001)), 2);
    }
}

#[cfg(test)]
#[path = "etcd_proptest.rs"]
mod proptests;
