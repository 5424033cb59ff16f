//! Configuration of an [`EtcdStore`]: the builder, its validation, and `etcd://` URLs.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use super::EtcdStore;
use crate::store::net::redact::redact_url;
use crate::store::net::secret::Secret;
use crate::store::net::tls::{ClientIdentity, PemKind, read_pem};
use crate::store::net::url::{self, Credentials, EndpointProblem, UrlProblem};

const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

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

#[derive(Clone, Default)]
pub(super) struct TlsMaterial {
    pub(super) ca_pem: Option<Vec<u8>>,
    pub(super) identity: Option<ClientIdentity>,
    pub(super) domain: Option<String>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("custom_ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

/// A validated configuration: what [`EtcdStoreBuilder::build`] hands the transport.
#[derive(Debug)]
pub(super) struct Config {
    /// Normalized endpoints (`http://host:port` or `https://host:port`), in failover order.
    pub(super) endpoints: Vec<String>,
    pub(super) prefix: String,
    pub(super) request_timeout: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) credentials: Option<Credentials>,
    pub(super) tls: Option<TlsMaterial>,
}

/// Builds an [`EtcdStore`]: endpoints, timeouts, key prefix, credentials, TLS.
///
/// ```
/// use distlock::store::etcd::EtcdStore;
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
    /// A TLS file that could not be read, reported by `build`.
    deferred_tls_error: Option<String>,
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
            deferred_tls_error: None,
        }
    }
}

impl EtcdStoreBuilder {
    /// Gives the user named in the URL (`etcd://user@host:port`) its password,
    /// read from somewhere safer than the URL (a file, the environment).
    /// Refuses, with what to write instead, when the URL named no user or
    /// already had a password.
    pub(crate) fn with_password(mut self, password: String) -> Result<Self, &'static str> {
        match &mut self.credentials {
            None => {
                Err("a password was given but the URL names no user: write etcd://USER@host:port")
            }
            Some(credentials) if !credentials.password.expose().is_empty() => Err(
                "the URL already has a password: give it in one place only (preferably not the URL)",
            ),
            Some(credentials) => {
                credentials.password = Secret::new(password);
                Ok(self)
            }
        }
    }

    /// Adds one endpoint, `http://host:port` (or `https://` with TLS). Requests go to the
    /// first endpoint that answers, in the order given, and move on when one fails.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoints.push(endpoint.into());
        self
    }

    /// Adds several endpoints (see [`EtcdStoreBuilder::endpoint`]).
    pub fn endpoints<I, S>(self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        endpoints.into_iter().fold(self, Self::endpoint)
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
            password: Secret::new(password.into()),
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
        match read_pem(path.as_ref(), PemKind::CaCertificate) {
            Ok(pem) => self.ca_certificate_pem(pem),
            Err(error) => self.defer(error.to_string()),
        }
    }

    /// Presents a client certificate (PEM certificate chain and PEM private key).
    pub fn client_certificate_pem(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        let identity = ClientIdentity::new(cert_pem.into(), key_pem.into());
        self.tls.get_or_insert_with(TlsMaterial::default).identity = Some(identity);
        self
    }

    /// Reads the client certificate and key from PEM files.
    pub fn client_certificate_files(
        mut self,
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Self {
        match ClientIdentity::from_files(cert_path.as_ref(), key_path.as_ref()) {
            Ok(identity) => {
                self.tls.get_or_insert_with(TlsMaterial::default).identity = Some(identity);
                self
            }
            Err(error) => self.defer(error.to_string()),
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
        self.deferred_tls_error.get_or_insert(reason);
        self
    }

    /// Validates the configuration and builds the store. Nothing is contacted yet:
    /// connections open on first use (see [`EtcdStore::ping`] to check them early).
    pub fn build(self) -> Result<EtcdStore, EtcdConfigError> {
        if let Some(reason) = self.deferred_tls_error {
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
        let endpoints = self
            .endpoints
            .iter()
            .map(|raw| normalize_endpoint(raw, tls))
            .collect::<Result<_, _>>()?;
        Ok(EtcdStore::new(Config {
            endpoints,
            prefix: self.prefix,
            request_timeout: self.request_timeout,
            connect_timeout: self.connect_timeout,
            credentials: self.credentials,
            tls: self.tls,
        }))
    }
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
    /// `timeout=500ms` (per request), `connect_timeout=2s`. Durations are written as
    /// everywhere else in this crate ([`parse_duration`](crate::parse_duration): `250ms`,
    /// `2s`, `1m`, `1m%2030s`; a unit is required).
    ///
    /// ```
    /// use distlock::store::etcd::EtcdStore;
    /// let builder = EtcdStore::builder_from_url("etcd://app:s%40cret@127.0.0.1:2379,127.0.0.1:22379/jobs")
    ///     .unwrap();
    /// let store = builder.build().unwrap();
    /// assert!(!format!("{store:?}").contains("cret"));
    /// assert!(EtcdStore::builder_from_url("etcd://127.0.0.1").is_err()); // no port
    /// assert!(EtcdStore::builder_from_url("etcd://127.0.0.1:2379?timeout=1m").is_ok());
    /// ```
    pub fn builder_from_url(url: &str) -> Result<EtcdStoreBuilder, EtcdConfigError> {
        builder_from_url(url)
    }

    /// Builds a store from a URL with the default timeouts (see
    /// [`EtcdStore::builder_from_url`]).
    pub fn from_url(url: &str) -> Result<EtcdStore, EtcdConfigError> {
        builder_from_url(url)?.build()
    }
}

/// Checks one endpoint and gives it a scheme matching the TLS setting.
fn normalize_endpoint(raw: &str, tls: bool) -> Result<String, EtcdConfigError> {
    let invalid = |reason: &str| EtcdConfigError::InvalidEndpoint {
        endpoint: redact_url(raw),
        reason: reason.to_owned(),
    };
    let (scheme, hostport) = url::split_endpoint(raw, true).map_err(|problem| match problem {
        EndpointProblem::Credentials => {
            invalid("credentials do not belong in an endpoint: use .credentials(user, password)")
        }
        EndpointProblem::Path => invalid("an endpoint is host:port, without a path"),
        EndpointProblem::Host(reason) => invalid(reason),
    })?;
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
    Ok(format!("{scheme}://{hostport}"))
}

/// Parses `etcd://[user[:password]@]host:port[,host:port...][/prefix][?options]`
/// (`etcds://` for TLS; options in [`EtcdStore::builder_from_url`]).
///
/// User and password may be percent-encoded; the password may also hold unencoded `/`, `?`,
/// `#` or `@`: the userinfo ends at the last `@` (so an `@` in the prefix or an option is
/// written `%40`). A non-empty path becomes the key prefix with a trailing `/` (`/myapp` and
/// `/myapp/` both give `myapp/`). No error quotes the userinfo or a host.
fn builder_from_url(raw: &str) -> Result<EtcdStoreBuilder, EtcdConfigError> {
    let invalid = |problem: UrlProblem| EtcdConfigError::InvalidUrl {
        reason: problem.into_reason(),
    };
    let problem = |reason: &str| EtcdConfigError::InvalidUrl {
        reason: reason.to_owned(),
    };
    let parts = url::split(raw, &["etcd", "etcds"]).map_err(invalid)?;
    if parts.fragment.is_some() {
        return Err(problem("fragments (#...) are not supported"));
    }
    let mut builder = EtcdStoreBuilder::default();
    if parts.scheme == "etcds" {
        builder = builder.tls();
    }
    if let Some(userinfo) = parts.userinfo {
        builder.credentials = Some(url::credentials(userinfo).map_err(invalid)?);
    }
    builder = builder.endpoints(url::hosts(parts.hosts, true).map_err(invalid)?);
    let prefix =
        url::decode(parts.path.unwrap_or("")).map_err(|r| problem(&format!("prefix: {r}")))?;
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() {
        builder = builder.prefix(format!("{prefix}/"));
    }
    let options = url::options(parts.query, &["domain"]).map_err(invalid)?;
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
    for (_domain, value) in options.extra {
        builder = builder.tls_domain(value);
    }
    Ok(builder)
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
        assert_eq!(store.config().request_timeout, Duration::from_millis(250));
        assert_eq!(store.config().connect_timeout, Duration::from_secs(3));
        // The crate's one duration grammar: minutes and compound durations too.
        let store = EtcdStore::from_url("etcd://h:1?timeout=1m&connect_timeout=1m%2030s")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.config().request_timeout, Duration::from_secs(60));
        assert_eq!(store.config().connect_timeout, Duration::from_secs(90));
        for bad in [
            "etcd://h:1?timeout=soon",
            "etcd://h:1?timeout=0s",
            "etcd://h:1?connect_timeout=0ms",
            // A bare number has no unit (it is not taken for milliseconds).
            "etcd://h:1?timeout=750",
            "etcd://h:1?timeout=",
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
            "etcd://u:hunter2%4@127.0.0.1:2379",
            "etcd://u:hunter2%ff@127.0.0.1:2379",
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
            assert_eq!(store.config().request_timeout, Duration::from_millis(250));
            let password = store
                .config()
                .credentials
                .as_ref()
                .map(|c| c.password.expose().as_str());
            assert_eq!(password, Some(format!("pa{special}ss").as_str()), "{url}");
        }
    }

    #[test]
    fn percent_escapes_decode_in_every_component() {
        let store =
            EtcdStore::builder_from_url("etcd://%61pp:p%25ss%2F@h:1/my%20app?domain=e%74cd")
                .and_then(|builder| builder.ca_certificate_pem("").build())
                .unwrap_or_else(|e| panic!("{e}"));
        let config = store.config();
        let credentials = config
            .credentials
            .as_ref()
            .map(|c| (&*c.user, c.password.expose().as_str()));
        assert_eq!(credentials, Some(("app", "p%ss/")));
        assert_eq!(store.prefix(), "my app/");
        let domain = config.tls.as_ref().and_then(|t| t.domain.as_deref());
        assert_eq!(domain, Some("etcd"));
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
}
