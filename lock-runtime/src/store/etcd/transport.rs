//! The etcd transport: one lazily connected gRPC client per endpoint, requests with a
//! timeout and failover (a failure sorted by [`EtcdError::is_transient`]), and the
//! long-lived keep-alive and watch streams.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper, WatchOptions,
};
use tokio::sync::{Mutex as AsyncMutex, OnceCell};

use super::config::Config;
use super::error::{BACKEND, EtcdError, store_error};
use super::watch;
use crate::store::StoreError;
use crate::store::net::cache::BoundedCache;
use crate::store::net::classify::Failure;
use crate::store::net::failover::{Attempt, Failover};

/// The key (under the prefix) that the shared watch stream's heartbeat watches; nothing
/// writes it.
const HEARTBEAT_KEY: &str = ".distlock-heartbeat";
/// Bound on remembered observations (one per recently contended key).
const OBSERVED_MAX: usize = 4096;

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
    /// Which endpoint requests start at (the one that answered last), and the
    /// per-request timeout.
    failover: Failover,
    /// Long-lived keep-alive streams by lease (the lock client holds one lease).
    keepalives: AsyncMutex<HashMap<i64, KeepAlive>>,
    /// Per full key, the index last seen there (`None`: absent) and the store revision
    /// of the answer that showed it, from conflicts and reads: lets a watch skip a read.
    observed: Mutex<BoundedCache<String, (Option<u64>, i64)>>,
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

/// How an attempt that failed with `error` on `endpoint` goes on: retried on the next
/// endpoint when it is transient (`is_write`: the request may have been applied).
fn failure(endpoint: &str, error: EtcdError, is_write: bool) -> Failure {
    Failure::by_transience(store_error(endpoint, error), is_write)
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
        let failover = Failover::new(BACKEND, config.request_timeout);
        EtcdStore {
            inner: Arc::new(Inner {
                config,
                endpoints,
                failover,
                keepalives: AsyncMutex::new(HashMap::new()),
                observed: Mutex::new(BoundedCache::new(OBSERVED_MAX)),
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
        self.inner.failover.current(self.inner.endpoints.len())
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
                    .with_user(creds.user.clone(), creds.password.expose().clone())
                    .with_auto_token_refresh(true);
            }
            if let Some(tls) = &config.tls {
                let mut tls_options = etcd_client::TlsOptions::new();
                if let Some(ca) = &tls.ca_pem {
                    tls_options =
                        tls_options.ca_certificate(etcd_client::Certificate::from_pem(ca));
                }
                if let Some(identity) = &tls.identity {
                    let key = identity.key_pem.expose();
                    let identity = etcd_client::Identity::from_pem(&identity.cert_pem, key);
                    tls_options = tls_options.identity(identity);
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
            Err(failure(&slot.url, error, false))
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
        let failover = &inner.failover;
        let answered = failover
            .run(inner.endpoints.len(), |Attempt { at, .. }| {
                let op = &op;
                async move {
                    let client = self.client_at(at).await?;
                    let url = &inner.endpoints[at].url;
                    match failover.timed(op(client)).await {
                        Ok(Ok(value)) => Ok(value),
                        Ok(Err(error)) => Err(failure(url, error, is_write)),
                        Err(timed_out) => {
                            Err(failure(url, EtcdError::Timeout(timed_out.0), is_write))
                        }
                    }
                }
            })
            .await?;
        Ok((answered.value, answered.maybe_applied, answered.at))
    }

    /// Remembers that `full_key` held `seen` as of store revision `at`.
    pub(super) fn observe(&self, full_key: &str, seen: Option<u64>, at: Option<i64>) {
        let Some(at) = at else { return };
        self.observations().insert(full_key.to_owned(), (seen, at));
    }

    /// The revision at which `full_key` was last seen holding `seen`, if remembered.
    pub(super) fn observed_at(&self, full_key: &str, seen: Option<u64>) -> Option<i64> {
        self.observations()
            .get(full_key)
            .filter(|(index, _)| *index == seen)
            .map(|(_, at)| *at)
    }

    fn observations(&self) -> MutexGuard<'_, BoundedCache<String, (Option<u64>, i64)>> {
        self.inner
            .observed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
            inner.failover.skip(stream.endpoint, n);
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
            let renewed = inner
                .failover
                .timed(async {
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
                    // The stream broke or hangs: reopen it, on the next endpoint (unless
                    // requests have moved off its endpoint already).
                    tracing::debug!(
                        backend = BACKEND,
                        endpoint = %inner.endpoints[open.endpoint].url,
                        "etcd keep-alive stream broken; reopening"
                    );
                    inner.failover.skip(open.endpoint, inner.endpoints.len());
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
