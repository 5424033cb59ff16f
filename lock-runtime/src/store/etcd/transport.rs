//! The etcd transport: one lazily connected gRPC client per endpoint, requests with a
//! timeout and failover, the long-lived keep-alive and watch streams, and etcd's errors
//! typed ([`EtcdError`]) and sorted into the contract's [`StoreError`]s.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper, WatchOptions,
};
use tokio::sync::{Mutex as AsyncMutex, OnceCell};
use tonic::Code;

use super::config::Config;
use super::watch;
use crate::store::{BoxError, StoreError};

/// The backend's name in errors and logs.
pub(super) const BACKEND: &str = "etcd";
/// The key (under the prefix) that the shared watch stream's heartbeat watches; nothing
/// writes it.
const HEARTBEAT_KEY: &str = ".distlock-heartbeat";
/// Bound on remembered observations (one per recently contended key).
const OBSERVED_MAX: usize = 4096;

/// What went wrong between this backend and etcd: the `source` of the [`StoreError`]s
/// it returns (downcast it, or use [`EtcdError::of`], to inspect it).
///
/// [`EtcdError::is_transient`] says which of them become [`StoreError::Unavailable`]
/// (another endpoint, or a later attempt, may succeed); the others become
/// [`StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// The request got no answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting (and authenticating) took longer than the connect timeout.
    #[error("connecting took longer than {0:?}")]
    ConnectTimeout(Duration),
    /// The connection could not be made or broke (a transport or I/O error).
    #[error("{}", chain(&**.0))]
    Connection(#[source] BoxError),
    /// The member cannot serve the request now (no leader, stopping, overloaded,
    /// the request was cancelled or timed out inside etcd); another member may.
    #[error("{code:?}: {message}")]
    NotServing {
        /// The gRPC status code.
        code: Code,
        /// etcd's message.
        message: String,
    },
    /// A watch or lease keep-alive stream broke or ended.
    #[error("{0}")]
    Stream(String),
    /// etcd refused the user name or password.
    #[error("authentication failed ({message}): check the etcd user and password")]
    AuthFailed {
        /// etcd's message.
        message: String,
    },
    /// etcd has authentication enabled, and no credentials were configured.
    #[error("etcd has authentication enabled: configure a user and password")]
    AuthRequired,
    /// The token was refused, or the user's roles do not allow the request.
    #[error(
        "authentication or permission refused ({message}): check the etcd user, password and role"
    )]
    PermissionDenied {
        /// etcd's message.
        message: String,
    },
    /// The lease the request names does not exist (any more): it expired or was revoked.
    #[error("lease not found ({message})")]
    LeaseNotFound {
        /// etcd's message.
        message: String,
    },
    /// etcd refused or cancelled a watch.
    #[error("{0}")]
    WatchRefused(String),
    /// etcd refused the request with another gRPC status.
    #[error("{code:?}: {message}")]
    Refused {
        /// The gRPC status code.
        code: Code,
        /// etcd's message.
        message: String,
    },
    /// etcd answered with something this backend cannot use.
    #[error("{0}")]
    BadAnswer(String),
    /// Another failure of the gRPC client library.
    #[error(transparent)]
    Client(etcd_client::Error),
}

/// etcd's messages for the errors told apart here, from its `rpctypes` package. A gRPC
/// status carries only a code and a message, and one code covers several errors
/// (`NotFound` is also "member not found", `InvalidArgument` a dozen errors), so etcd's
/// own Go client recognises its errors by exact message too. Only
/// [`EtcdError::from_status`] compares them, and only with equality.
mod etcd_messages {
    pub(super) const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
    pub(super) const AUTH_FAILED: &str =
        "etcdserver: authentication failed, invalid user ID or password";
    pub(super) const USER_EMPTY: &str = "etcdserver: user name is empty";
    /// Every error etcd itself sends starts so; tonic reports a broken connection as
    /// `Unknown` with the transport's message, which does not.
    pub(super) const SERVER_PREFIX: &str = "etcdserver: ";
}

impl EtcdError {
    /// Whether another endpoint, or a later attempt, may succeed: the request may not
    /// have reached etcd, or the member could not serve it.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            EtcdError::Timeout(_)
                | EtcdError::ConnectTimeout(_)
                | EtcdError::Connection(_)
                | EtcdError::NotServing { .. }
                | EtcdError::Stream(_)
        )
    }

    /// The etcd error behind a [`StoreError`] of this backend, if any.
    ///
    /// ```
    /// use lock_runtime::store::StoreError;
    /// use lock_runtime::store::etcd::EtcdError;
    ///
    /// let error = StoreError::Backend {
    ///     endpoint: "http://127.0.0.1:2379".into(),
    ///     source: Box::new(EtcdError::AuthRequired),
    /// };
    /// assert!(matches!(EtcdError::of(&error), Some(EtcdError::AuthRequired)));
    /// ```
    pub fn of(error: &StoreError) -> Option<&EtcdError> {
        match error {
            StoreError::Unavailable { source, .. } | StoreError::Backend { source, .. } => {
                source.downcast_ref()
            }
            _ => None,
        }
    }

    /// Types a gRPC status that etcd (or the transport under the client) returned.
    fn from_status(status: &tonic::Status) -> EtcdError {
        use etcd_messages::{AUTH_FAILED, LEASE_NOT_FOUND, SERVER_PREFIX, USER_EMPTY};
        let code = status.code();
        let message = status.message().to_owned();
        match (code, message.as_str()) {
            (Code::NotFound, LEASE_NOT_FOUND) => EtcdError::LeaseNotFound { message },
            (_, AUTH_FAILED) => EtcdError::AuthFailed { message },
            (_, USER_EMPTY) => EtcdError::AuthRequired,
            (Code::Unauthenticated | Code::PermissionDenied, _) => {
                EtcdError::PermissionDenied { message }
            }
            (
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted
                | Code::ResourceExhausted,
                _,
            ) => EtcdError::NotServing { code, message },
            (Code::Unknown, text) if !text.starts_with(SERVER_PREFIX) => {
                EtcdError::Connection(message.into())
            }
            _ => EtcdError::Refused { code, message },
        }
    }

    /// Types the error of opening a keep-alive stream (`Client::lease_keep_alive`).
    /// There etcd-client returns `LeaseKeepAliveError` only when etcd's first answer has
    /// no TTL, which is how etcd says the lease does not exist (its other use, a send
    /// into a channel whose receiver the call itself holds, cannot fail).
    pub(super) fn opening_keep_alive(error: etcd_client::Error) -> EtcdError {
        match error {
            etcd_client::Error::LeaseKeepAliveError(message) => {
                EtcdError::LeaseNotFound { message }
            }
            other => other.into(),
        }
    }
}

impl From<etcd_client::Error> for EtcdError {
    fn from(error: etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        match error {
            E::GRpcStatus(status) => EtcdError::from_status(&status),
            E::TransportError(e) => EtcdError::Connection(Box::new(e)),
            E::IoError(e) => EtcdError::Connection(Box::new(e)),
            E::LeaseKeepAliveError(m) | E::WatchError(m) => EtcdError::Stream(m),
            other => EtcdError::Client(other),
        }
    }
}

/// An error and its sources, joined with `": "` (a source already quoted by the
/// message before it is left out).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let more = next.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = next.source();
    }
    text
}

/// `error` from `endpoint` as the contract's error.
pub(super) fn store_error(endpoint: &str, error: EtcdError) -> StoreError {
    let endpoint = endpoint.to_owned();
    let source = Box::new(error);
    if source.is_transient() {
        StoreError::Unavailable { endpoint, source }
    } else {
        StoreError::Backend { endpoint, source }
    }
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
    config: Config,
    endpoints: Vec<EndpointSlot>,
    /// The endpoint that answered last: the next request starts there.
    current: AtomicUsize,
    /// Long-lived keep-alive streams by lease (the lock client holds one lease).
    keepalives: AsyncMutex<HashMap<i64, KeepAlive>>,
    /// Per full key, the index last seen there (`None`: absent) and the store revision
    /// of the answer that showed it, from conflicts and reads: lets a watch skip a read.
    observed: std::sync::Mutex<HashMap<String, (Option<u64>, i64)>>,
    /// The watch stream every `watch()` call shares (opened on first use, replaced when
    /// it breaks). Locked while one is opened, so that concurrent calls open one.
    watches: AsyncMutex<Option<Arc<watch::SharedStream>>>,
}

/// A [`CompareExchange`](crate::store::CompareExchange) store on an etcd v3 cluster
/// (3.4 or newer), over gRPC.
///
/// Cheap to clone; clones share connections and keep-alive streams. Build it with
/// [`EtcdStore::builder`] or [`EtcdStore::from_url`].
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.inner.config;
        f.debug_struct("EtcdStore")
            .field("endpoints", &config.endpoints)
            .field("prefix", &config.prefix)
            .field("request_timeout", &config.request_timeout)
            .field("connect_timeout", &config.connect_timeout)
            .field("credentials", &config.credentials)
            .field("tls", &config.tls)
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

impl Failure {
    fn new(endpoint: &str, error: EtcdError, is_write: bool) -> Failure {
        if error.is_transient() {
            Failure::Retry {
                error: store_error(endpoint, error),
                maybe_applied: is_write,
            }
        } else {
            Failure::Fatal(store_error(endpoint, error))
        }
    }

    fn into_error(self) -> StoreError {
        match self {
            Failure::Retry { error, .. } | Failure::Fatal(error) => error,
        }
    }
}

impl EtcdStore {
    pub(super) fn new(config: Config) -> EtcdStore {
        let endpoints = config
            .endpoints
            .iter()
            .map(|url| EndpointSlot {
                url: url.clone(),
                client: OnceCell::new(),
            })
            .collect();
        EtcdStore {
            inner: Arc::new(Inner {
                config,
                endpoints,
                current: AtomicUsize::new(0),
                keepalives: AsyncMutex::new(HashMap::new()),
                observed: std::sync::Mutex::new(HashMap::new()),
                watches: AsyncMutex::new(None),
            }),
        }
    }

    /// The validated configuration.
    pub(super) fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The key prefix in use.
    pub fn prefix(&self) -> &str {
        &self.inner.config.prefix
    }

    /// The endpoints, normalized (`http://host:port`), in failover order.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.config.endpoints.clone()
    }

    /// The full etcd key under which `key` is stored (the prefix followed by `key`).
    pub fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.inner.config.prefix, key)
    }

    /// Checks that some endpoint answers (and accepts the credentials) within the
    /// timeouts, with one linearizable read (a count of one key under the prefix).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let key = self.full_key(".distlock-ping");
        self.with_failover(false, |mut client| {
            let key = key.clone();
            async move {
                let count_only = GetOptions::new().with_count_only();
                Ok(client.get(key, Some(count_only)).await?)
            }
        })
        .await
        .map(|_| ())
    }

    /// The gRPC client of the endpoint requests currently go to, connecting it if needed:
    /// the same connection the store uses, for raw requests next to it.
    pub async fn raw_client(&self) -> Result<Client, StoreError> {
        self.client_at(self.current())
            .await
            .map_err(Failure::into_error)
    }

    /// The endpoint requests currently start at.
    fn current(&self) -> usize {
        self.inner.current.load(Ordering::Relaxed) % self.inner.endpoints.len()
    }

    /// Connects (once) to endpoint `i`, within the connect timeout.
    async fn client_at(&self, i: usize) -> Result<Client, Failure> {
        let config = self.config();
        let slot = &self.inner.endpoints[i];
        let connect = || async {
            let mut options = ConnectOptions::new()
                .with_connect_timeout(config.connect_timeout)
                // A member cut off from the leader refuses requests and ends watches at
                // once instead of serving stale data or waiting: we move on.
                .with_require_leader(true)
                // A request that hangs on a dead TCP peer is caught by our own timeout;
                // HTTP/2 pings make the connection notice it and reconnect afterwards.
                .with_keep_alive(
                    ping_interval(config.request_timeout),
                    config.request_timeout,
                );
            if let Some(creds) = &config.credentials {
                options = options
                    .with_user(creds.user.clone(), creds.password.0.clone())
                    .with_auto_token_refresh(true);
            }
            if let Some(tls) = &config.tls {
                let mut tls_options = etcd_client::TlsOptions::new();
                if let Some(ca) = &tls.ca_pem {
                    tls_options =
                        tls_options.ca_certificate(etcd_client::Certificate::from_pem(ca));
                }
                if let Some((cert, key)) = &tls.identity_pem {
                    tls_options = tls_options.identity(etcd_client::Identity::from_pem(cert, key));
                }
                if let Some(domain) = &tls.domain {
                    tls_options = tls_options.domain_name(domain.clone());
                }
                options = options.with_tls(tls_options);
            }
            let connecting = Client::connect([slot.url.as_str()], Some(options));
            let error = match tokio::time::timeout(config.connect_timeout, connecting).await {
                Ok(Ok(client)) => return Ok(client),
                Ok(Err(error)) => error.into(),
                Err(_) => EtcdError::ConnectTimeout(config.connect_timeout),
            };
            Err(Failure::new(&slot.url, error, false))
        };
        slot.client.get_or_try_init(connect).await.cloned()
    }

    /// An error of endpoint `i` as the contract's error.
    pub(super) fn error_at(&self, i: usize, error: EtcdError) -> StoreError {
        store_error(&self.inner.endpoints[i].url, error)
    }

    /// An answer we cannot use, from the endpoint that answered last.
    pub(super) fn bad_answer(&self, what: impl Into<String>) -> StoreError {
        self.error_at(self.current(), EtcdError::BadAnswer(what.into()))
    }

    /// Runs `op` on the current endpoint, moving on to the next one on failure, each
    /// attempt bounded by the request timeout. Returns the result and whether an earlier
    /// attempt may have applied a write.
    pub(super) async fn with_failover<T, F, Fut>(
        &self,
        is_write: bool,
        op: F,
    ) -> Result<(T, bool), StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, EtcdError>>,
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
        Fut: Future<Output = Result<T, EtcdError>>,
    {
        let inner = &self.inner;
        let timeout = inner.config.request_timeout;
        let n = inner.endpoints.len();
        let start = self.current();
        let mut ambiguous = false;
        let mut last = None;
        for step in 0..n {
            let i = (start + step) % n;
            let url = &inner.endpoints[i].url;
            let failure = match self.client_at(i).await {
                Err(f) => f,
                Ok(client) => match tokio::time::timeout(timeout, op(client)).await {
                    Ok(Ok(value)) => {
                        if step > 0 {
                            inner.current.store(i, Ordering::Relaxed);
                        }
                        return Ok((value, ambiguous, i));
                    }
                    Ok(Err(error)) => Failure::new(url, error, is_write),
                    Err(_) => Failure::new(url, EtcdError::Timeout(timeout), is_write),
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

    /// Remembers that `full_key` held `seen` as of store revision `at`.
    pub(super) fn observe(&self, full_key: &str, seen: Option<u64>, at: Option<i64>) {
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
    pub(super) fn observed_at(&self, full_key: &str, seen: Option<u64>) -> Option<i64> {
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

    /// A linearizable read of `full_key`: its index (`None`: absent) and the revision
    /// of the answer.
    pub(super) async fn read_index(
        &self,
        full_key: &str,
    ) -> Result<(Option<u64>, i64), StoreError> {
        let (response, _) = self
            .with_failover(false, |mut client| {
                let key = full_key.to_owned();
                async move {
                    let keys_only = GetOptions::new().with_keys_only();
                    Ok(client.get(key, Some(keys_only)).await?)
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

    /// Waits until `full_key` changes after `start_revision - 1`: a watch from
    /// `start_revision` registered on the store's shared watch stream, opening one (with
    /// failover) when there is none or it broke. Waiting for etcd's answer to the create
    /// request is bounded by the request timeout; waiting for a change by the caller.
    pub(super) async fn watch_from(
        &self,
        full_key: &str,
        start_revision: i64,
    ) -> Result<(), StoreError> {
        self.register_watch(full_key, start_revision)
            .await?
            .wait(self.inner.config.request_timeout)
            .await
    }

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
            let closed = "the watch stream closed right after opening";
            return Err(self.error_at(i, EtcdError::Stream(closed.into())));
        };
        let request_timeout = inner.config.request_timeout;
        let heartbeat = watch::Heartbeat {
            key: self.full_key(HEARTBEAT_KEY),
            quiet: ping_interval(request_timeout).mul_f64(0.75),
            answer_within: request_timeout,
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

    /// Renews `lease` once on its long-lived keep-alive stream (opened, with failover,
    /// when there is none or it broke) and returns the TTL etcd answered, in seconds
    /// (0 or less: the lease is gone). A lease etcd does not know fails with
    /// [`EtcdError::LeaseNotFound`].
    pub(super) async fn renew(&self, lease: i64) -> Result<i64, StoreError> {
        let inner = &self.inner;
        // Take the stream out while it is in use: if this call is cancelled between a
        // request and its answer, the stream is dropped rather than left one answer
        // behind (a stale answer would make a renewal look newer than it is).
        let open = inner.keepalives.lock().await.remove(&lease);
        if let Some(mut open) = open {
            let renewed = tokio::time::timeout(inner.config.request_timeout, async {
                open.keeper.keep_alive().await?;
                open.stream.message().await
            })
            .await;
            match renewed {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => {
                    inner.keepalives.lock().await.insert(lease, open);
                    return Ok(answer.ttl());
                }
                Ok(Ok(Some(answer))) => return Ok(answer.ttl()),
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
        let ((keeper, stream, answer), _, endpoint) = self
            .with_failover_at(false, |mut client| async move {
                let (mut keeper, mut stream) = client
                    .lease_keep_alive(lease)
                    .await
                    .map_err(EtcdError::opening_keep_alive)?;
                keeper.keep_alive().await?;
                let answer = stream.message().await?;
                Ok((keeper, stream, answer))
            })
            .await?;
        let Some(answer) = answer else {
            let closed = "the lease keep-alive stream closed right after opening";
            return Err(self.error_at(endpoint, EtcdError::Stream(closed.into())));
        };
        if answer.ttl() > 0 {
            let open = KeepAlive {
                endpoint,
                keeper,
                stream,
            };
            inner.keepalives.lock().await.insert(lease, open);
        }
        Ok(answer.ttl())
    }

    /// Forgets the keep-alive stream of `lease` (before revoking it).
    pub(super) async fn forget_keep_alive(&self, lease: i64) {
        self.inner.keepalives.lock().await.remove(&lease);
    }
}

/// How often an idle connection sends an HTTP/2 ping (its answer is due within the
/// request timeout).
fn ping_interval(request_timeout: Duration) -> Duration {
    request_timeout.max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, message: &str) -> EtcdError {
        EtcdError::from(etcd_client::Error::GRpcStatus(tonic::Status::new(
            code, message,
        )))
    }

    #[test]
    fn etcd_statuses_are_typed() {
        use etcd_messages::{AUTH_FAILED, LEASE_NOT_FOUND, USER_EMPTY};
        assert!(matches!(
            status(Code::NotFound, LEASE_NOT_FOUND),
            EtcdError::LeaseNotFound { .. }
        ));
        // The other NotFound of etcd is not a lease.
        assert!(matches!(
            status(Code::NotFound, "etcdserver: member not found"),
            EtcdError::Refused {
                code: Code::NotFound,
                ..
            }
        ));
        assert!(matches!(
            status(Code::InvalidArgument, AUTH_FAILED),
            EtcdError::AuthFailed { .. }
        ));
        assert!(matches!(
            status(Code::InvalidArgument, USER_EMPTY),
            EtcdError::AuthRequired
        ));
        assert!(matches!(
            status(Code::Unauthenticated, "etcdserver: invalid auth token"),
            EtcdError::PermissionDenied { .. }
        ));
        for code in [Code::Unavailable, Code::DeadlineExceeded, Code::Aborted] {
            let error = status(code, "etcdserver: no leader");
            assert!(error.is_transient(), "{error:?}");
            assert_eq!(
                error.to_string(),
                format!("{code:?}: etcdserver: no leader")
            );
        }
        // A broken connection, as tonic reports it, versus an error etcd sent.
        assert!(matches!(
            status(Code::Unknown, "h2 protocol error: error reading a body"),
            EtcdError::Connection(_)
        ));
        assert!(matches!(
            status(Code::Unknown, "etcdserver: something new"),
            EtcdError::Refused { .. }
        ));
    }

    #[test]
    fn only_transient_errors_are_unavailable() {
        let endpoint = "http://h:1";
        let gone = store_error(
            endpoint,
            EtcdError::LeaseNotFound {
                message: etcd_messages::LEASE_NOT_FOUND.into(),
            },
        );
        assert!(matches!(gone, StoreError::Backend { .. }), "{gone:?}");
        assert!(matches!(
            EtcdError::of(&gone),
            Some(EtcdError::LeaseNotFound { .. })
        ));
        let late = store_error(endpoint, EtcdError::Timeout(Duration::from_secs(1)));
        assert!(late.is_transient(), "{late:?}");
        assert_eq!(
            late.to_string(),
            "cannot reach http://h:1: no answer within 1s"
        );
        assert!(EtcdError::of(&StoreError::Unsupported("watch")).is_none());
    }

    #[test]
    fn opening_a_keep_alive_for_an_unknown_lease_is_lease_not_found() {
        let refused = etcd_client::Error::LeaseKeepAliveError("lease not found".into());
        assert!(matches!(
            EtcdError::opening_keep_alive(refused),
            EtcdError::LeaseNotFound { .. }
        ));
        let broken = etcd_client::Error::WatchError("failed to create lease keeper".into());
        assert!(EtcdError::opening_keep_alive(broken).is_transient());
    }

    #[test]
    fn connection_errors_show_their_causes_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = EtcdError::from(etcd_client::Error::IoError(io));
        assert_eq!(error.to_string(), "refused");
        assert!(error.is_transient());
    }
}
