//! etcd's errors, typed: [`EtcdError`], made from etcd-client's errors and etcd's gRPC
//! statuses in one classifier, and sorted into the contract's [`StoreError`]s
//! (transient ones are `Unavailable`, the others `Backend`).

use std::time::Duration;

use tonic::Code;

use crate::store::net::classify::{backend, error_chain, unavailable};
use crate::store::{BoxError, StoreError};

/// The backend's name in errors and logs.
pub(super) const BACKEND: &str = "etcd";

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
    #[error("{}", error_chain(&**.0))]
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
    /// use distlock::store::StoreError;
    /// use distlock::store::etcd::EtcdError;
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

/// `error` from `endpoint` as the contract's error.
pub(super) fn store_error(endpoint: &str, error: EtcdError) -> StoreError {
    if error.is_transient() {
        unavailable(endpoint, error)
    } else {
        backend(endpoint, error)
    }
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
