//! RavenDB's HTTP API as this backend uses it: requests with failover and a
//! timeout per node, the compare-exchange endpoints and their answers, typed
//! errors ([`RavenDbError`]) and their classification into [`StoreError`]s.

use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::store::StoreError;
use crate::store::net::cache::BoundedCache;
use crate::store::net::classify::{Failure, backend, chain_has, error_chain, unavailable};
use crate::store::net::failover::{Failover, TimedOut};

pub(super) const BACKEND: &str = "ravendb";
/// Answers larger than this are refused (a compare-exchange answer is tiny).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Unreserved characters (RFC 3986) stay as they are in query strings.
pub(super) const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What was wrong with a RavenDB answer or request: the `source` of the
/// [`StoreError`]s this backend returns (downcast to inspect it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RavenDbError {
    /// The request did not finish within the per-request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made or broke.
    #[error("connection failed: {}", error_chain(.0))]
    Connect(#[source] reqwest::Error),
    /// The TLS handshake failed (server certificate not trusted, protocol mismatch).
    #[error("TLS handshake failed (is the CA right?): {}", error_chain(.0))]
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

/// The RavenDB compare-exchange store. Cheap to clone (shares one connection pool).
#[derive(Clone)]
pub struct RavenDbStore {
    pub(super) inner: Arc<Inner>,
}

/// What every clone of a store shares.
pub(super) struct Inner {
    pub(super) client: reqwest::Client,
    /// Configured nodes first, then any learned from the cluster topology.
    pub(super) nodes: RwLock<Arc<Vec<String>>>,
    pub(super) https: bool,
    /// Which node answered last, and the per-request timeout.
    pub(super) failover: Failover,
    pub(super) database: String,
    pub(super) prefix: String,
    pub(super) expiry_grace: Option<Duration>,
    /// How long a value that is not a distlock record must stay unchanged
    /// before this store's clients take it over (see the module docs).
    pub(super) foreign_ttl: Duration,
    pub(super) create_database: bool,
    pub(super) client_certificate: bool,
    /// Keys seen to exist on the server (lower-cased: keys are case-insensitive
    /// there), with the index of their tombstone when the last thing seen there
    /// was one.
    pub(super) known: Mutex<BoundedCache<String, Option<u64>>>,
}

impl fmt::Debug for RavenDbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RavenDbStore")
            .field("nodes", &self.inner.nodes())
            .field("database", &self.inner.database)
            .field("prefix", &self.inner.prefix)
            .field("request_timeout", &self.inner.failover.request_timeout())
            .field("foreign_ttl", &self.inner.foreign_ttl)
            .field("client_certificate", &self.inner.client_certificate)
            .finish_non_exhaustive()
    }
}

impl RavenDbStore {
    /// The database name.
    pub fn database(&self) -> &str {
        &self.inner.database
    }

    /// The node URLs: the configured ones in order, then any learned from the
    /// cluster topology.
    pub fn nodes(&self) -> Vec<String> {
        self.inner.nodes().to_vec()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// How long a value that is not a distlock record must stay unchanged
    /// before this store's clients take it over
    /// ([`RavenDbStoreBuilder::foreign_ttl`](super::RavenDbStoreBuilder::foreign_ttl)).
    pub fn foreign_ttl(&self) -> Duration {
        self.inner.foreign_ttl
    }
}

/// One HTTP answer: which node gave it, the status, the body.
pub(super) struct Answer {
    pub(super) node: String,
    pub(super) status: StatusCode,
    pub(super) body: Vec<u8>,
}

/// The answer to a compare-exchange PUT or DELETE.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WriteAnswer {
    successful: bool,
    index: u64,
    #[serde(default)]
    value: Value,
}

/// One item of a compare-exchange listing (`GET /cmpxchg?startsWith=..`): its
/// key (lower-cased by the server), index and value.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListedItem {
    pub(super) key: String,
    pub(super) index: u64,
    #[serde(default)]
    pub(super) value: Value,
}

/// The answer to a compare-exchange GET or listing: its `Results`, each read on
/// its own (see [`ReadResult`]).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReadAnswer {
    results: Vec<Value>,
}

/// One item of a [`ReadAnswer`].
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReadResult {
    index: u64,
    #[serde(default)]
    value: Value,
}

impl Inner {
    pub(super) fn nodes(&self) -> Arc<Vec<String>> {
        Arc::clone(&self.nodes.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The key as stored: the prefix, then `key`.
    pub(super) fn full_key(&self, key: &str) -> Result<String, StoreError> {
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
        let endpoint = self.nodes().first().cloned().unwrap_or_default();
        backend(&endpoint, RavenDbError::InvalidKey(reason))
    }

    /// `/databases/{db}/cmpxchg?key=..[&index=..][&raft-request-id=..]`.
    pub(super) fn cmpxchg_path(
        &self,
        key: &str,
        index: Option<u64>,
        request_id: Option<&str>,
    ) -> String {
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

    /// Sends one request, trying each node once from the one that answered
    /// last (a connection failure, a timeout or a 503 moves on to the next).
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, StoreError> {
        let nodes = self.nodes();
        let (nodes, method, body) = (&nodes, &method, &body);
        let answered = self
            .failover
            .run(nodes.len(), |attempt| async move {
                let node = &nodes[attempt.at];
                let mut request = self.client.request(method.clone(), format!("{node}{path}"));
                if let Some(body) = body {
                    request = request
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone());
                }
                let exchange = async {
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
                match self.failover.timed(exchange).await {
                    Ok(Ok(Ok((status, _))))
                        if status == StatusCode::SERVICE_UNAVAILABLE && !attempt.last =>
                    {
                        let source = RavenDbError::BadAnswer {
                            status: status.as_u16(),
                            reason: "service unavailable".into(),
                        };
                        Err(Failure::retry(backend(node, source), false))
                    }
                    Ok(Ok(Ok((status, body)))) => Ok(Answer {
                        node: node.clone(),
                        status,
                        body,
                    }),
                    Ok(Ok(Err(status))) => Err(Failure::Fatal(backend(
                        node,
                        RavenDbError::BadAnswer {
                            status: status.as_u16(),
                            reason: format!("answer larger than {MAX_ANSWER_BYTES} bytes"),
                        },
                    ))),
                    // Every transport failure moves on, a TLS one too (reported as
                    // permanent if no node answers: retrying does not fix a certificate).
                    Ok(Err(error)) => Err(Failure::retry(
                        classify_transport(node, error, self.failover.request_timeout()),
                        true,
                    )),
                    Err(TimedOut(after)) => Err(Failure::retry(
                        unavailable(node, RavenDbError::Timeout(after)),
                        true,
                    )),
                }
            })
            .await?;
        Ok(answered.value)
    }

    /// Reads `key`'s item: its index and value (`None`: no item).
    pub(super) async fn get_item(&self, key: &str) -> Result<Option<(u64, Value)>, StoreError> {
        let answer = self
            .send(Method::GET, &self.cmpxchg_path(key, None, None), None)
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND if answer.body.is_empty() => return Ok(None),
            StatusCode::OK => {}
            _ => return Err(self.error_answer(&answer)),
        }
        let results = self.results(&answer)?;
        let Some(result) = results.into_iter().next() else {
            return Ok(None);
        };
        if !result.is_object() {
            return Err(self.bad_answer(&answer, "a result that is not an object"));
        }
        let result = ReadResult::deserialize(&result)
            .map_err(|e| self.bad_answer(&answer, format!("unusable result ({e})")))?;
        Ok((!result.value.is_null()).then_some((result.index, result.value)))
    }

    /// One page of the compare-exchange items whose key starts with `prefix` (the
    /// full key prefix, case-insensitive on the server), from position `start` in
    /// the server's key order (lower-cased keys), at most `page` of them.
    pub(super) async fn list_page(
        &self,
        prefix: &str,
        start: usize,
        page: usize,
    ) -> Result<Vec<ListedItem>, StoreError> {
        if prefix.chars().any(char::is_control) {
            return Err(self.invalid_key("contains control characters"));
        }
        let path = format!(
            "/databases/{}/cmpxchg?startsWith={}&start={start}&pageSize={page}",
            utf8_percent_encode(&self.database, QUERY),
            utf8_percent_encode(prefix, QUERY)
        );
        let answer = self.send(Method::GET, &path, None).await?;
        match answer.status {
            StatusCode::NOT_FOUND if answer.body.is_empty() => return Ok(Vec::new()),
            StatusCode::OK => {}
            _ => return Err(self.error_answer(&answer)),
        }
        self.results(&answer)?
            .into_iter()
            .map(|result| {
                ListedItem::deserialize(&result)
                    .map_err(|e| self.bad_answer(&answer, format!("unusable listing item ({e})")))
            })
            .collect()
    }

    /// The `Results` of a GET or listing answer (each still to be read).
    pub(super) fn results(&self, answer: &Answer) -> Result<Vec<Value>, StoreError> {
        let parsed = self.json_object(answer)?;
        ReadAnswer::deserialize(&parsed)
            .map(|read| read.results)
            .map_err(|e| self.bad_answer(answer, format!("no Results array ({e})")))
    }

    /// One compare-exchange PUT of `body` at `index` with a fresh
    /// `raft-request-id`; returns `(successful, index, current value)`.
    pub(super) async fn put_item(
        &self,
        key: &str,
        index: u64,
        body: Vec<u8>,
    ) -> Result<(bool, u64, Value), StoreError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let path = self.cmpxchg_path(key, Some(index), Some(&request_id));
        let answer = self.send(Method::PUT, &path, Some(body)).await?;
        self.write_answer(&answer)
    }

    /// One compare-exchange DELETE of `key` at `index`; returns
    /// `(successful, index, deleted or current value)`.
    pub(super) async fn delete_item(
        &self,
        key: &str,
        index: u64,
    ) -> Result<(bool, u64, Value), StoreError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let path = self.cmpxchg_path(key, Some(index), Some(&request_id));
        let answer = self.send(Method::DELETE, &path, None).await?;
        self.write_answer(&answer)
    }

    /// Parses `{"Successful","Index","Value"}`.
    pub(super) fn write_answer(&self, answer: &Answer) -> Result<(bool, u64, Value), StoreError> {
        if answer.status != StatusCode::OK {
            return Err(self.error_answer(answer));
        }
        let parsed = self.json_object(answer)?;
        let write = WriteAnswer::deserialize(&parsed)
            .map_err(|e| self.bad_answer(answer, format!("not a compare-exchange answer ({e})")))?;
        Ok((write.successful, write.index, write.value))
    }

    /// The body as a JSON object.
    pub(super) fn json_object(&self, answer: &Answer) -> Result<Value, StoreError> {
        let parsed: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| self.bad_answer(answer, format!("not JSON ({e})")))?;
        if !parsed.is_object() {
            return Err(self.bad_answer(answer, "not a JSON object"));
        }
        Ok(parsed)
    }

    /// The error for an answer that is not the success we expected. RavenDB's
    /// error bodies are read field by field (`Type`, `Message`): any of them may
    /// be missing, and proxies answer with other bodies.
    pub(super) fn error_answer(&self, answer: &Answer) -> StoreError {
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
        let node = answer.node.as_str();
        if matches!(status, 401 | 403) {
            let message = message.unwrap_or_else(|| snippet(&answer.body));
            let message = if self.client_certificate {
                message
            } else {
                format!("{message} (no client certificate was configured)")
            };
            return backend(node, RavenDbError::CertificateRefused { status, message });
        }
        match (error_type, message) {
            (Some(error_type), _) if error_type.ends_with("DatabaseDoesNotExistException") => {
                backend(
                    node,
                    RavenDbError::DatabaseMissing {
                        database: self.database.clone(),
                    },
                )
            }
            (Some(error_type), message) => {
                // A node that is starting or loading the database answers errors
                // that go away by themselves: treat them as unreachable (retryable).
                let starting = status == 503
                    || [
                        "NullReferenceException",
                        "DatabaseLoadTimeoutException",
                        "DatabaseLoadFailureException",
                        "DatabaseDisabledException",
                        "DatabaseNotRelevantException",
                        "NodeIsPassiveException",
                        "ServerLoadFailureException",
                    ]
                    .iter()
                    .any(|passing| error_type.ends_with(passing));
                let source = RavenDbError::Server {
                    status,
                    error_type,
                    message: message.unwrap_or_default(),
                };
                if starting {
                    unavailable(node, source)
                } else {
                    backend(node, source)
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
                    unavailable(node, source)
                } else {
                    backend(node, source)
                }
            }
        }
    }

    /// An answer of the right status that cannot be used.
    pub(super) fn bad_answer(&self, answer: &Answer, reason: impl fmt::Display) -> StoreError {
        backend(
            &answer.node,
            RavenDbError::BadAnswer {
                status: answer.status.as_u16(),
                reason: format!("{reason}: {}", snippet(&answer.body)),
            },
        )
    }
}

/// A failed HTTP exchange as a contract error: a TLS failure is permanent (a
/// certificate problem does not go away by retrying), the rest transient.
fn classify_transport(node: &str, error: reqwest::Error, timeout: Duration) -> StoreError {
    if chain_has::<rustls::Error>(&error) {
        backend(node, RavenDbError::Tls(error))
    } else if error.is_timeout() {
        unavailable(node, RavenDbError::Timeout(timeout))
    } else {
        unavailable(node, RavenDbError::Connect(error))
    }
}

/// The start of a body, for error messages.
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
