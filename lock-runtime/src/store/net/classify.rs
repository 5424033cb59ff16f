//! How one failed attempt on one endpoint is sorted, and the contract errors it
//! becomes.
//!
//! A backend's transport sorts every failure into a [`Failure`]: try the next
//! endpoint ([`Failure::Retry`]: the node is down, electing, timing out, or
//! answered in a way another node may not) or stop ([`Failure::Fatal`]: every
//! node would answer the same, such as refused credentials or a bad request).
//! The error inside is already the contract's: [`StoreError::Unavailable`]
//! (transient: the lock engine retries after reading back) or
//! [`StoreError::Backend`] (permanent), built with [`unavailable`] and
//! [`backend`].

use std::error::Error;

use crate::store::{BoxError, StoreError};

/// How one attempt on one endpoint failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Try the next endpoint; `error` is reported if none answers.
    Retry {
        /// The contract error for this attempt.
        error: StoreError,
        /// Whether a write may have reached the server before it failed (the
        /// caller then treats a later conflict that shows its own record as its
        /// own write).
        maybe_applied: bool,
    },
    /// Stop: the answer would be the same on every endpoint.
    Fatal(StoreError),
}

impl Failure {
    /// A failure worth trying elsewhere.
    pub(crate) fn retry(error: StoreError, maybe_applied: bool) -> Self {
        Failure::Retry {
            error,
            maybe_applied,
        }
    }

    /// Retry for a transient error ([`StoreError::is_transient`]), stop for any other.
    pub(crate) fn by_transience(error: StoreError, maybe_applied: bool) -> Self {
        if error.is_transient() {
            Failure::retry(error, maybe_applied)
        } else {
            Failure::Fatal(error)
        }
    }

    #[cfg_attr(not(feature = "etcd"), allow(dead_code))] // only etcd uses it
    /// The contract error inside.
    pub(crate) fn into_error(self) -> StoreError {
        match self {
            Failure::Retry { error, .. } | Failure::Fatal(error) => error,
        }
    }
}

impl From<StoreError> for Failure {
    /// A contract error sorted by [`Failure::by_transience`], as not applied.
    fn from(error: StoreError) -> Self {
        Failure::by_transience(error, false)
    }
}

/// A transient failure of `endpoint` (unreachable, timed out, not ready).
pub(crate) fn unavailable(endpoint: &str, source: impl Into<BoxError>) -> StoreError {
    StoreError::Unavailable {
        endpoint: endpoint.to_owned(),
        source: source.into(),
    }
}

/// A permanent failure: `endpoint` answered with an error or an unusable answer.
pub(crate) fn backend(endpoint: &str, source: impl Into<BoxError>) -> StoreError {
    StoreError::Backend {
        endpoint: endpoint.to_owned(),
        source: source.into(),
    }
}

/// How deep the cause chains below are followed.
const MAX_DEPTH: usize = 16;

/// `error` and its causes, `: `-separated, each cause left out when the text
/// so far already holds it (HTTP and gRPC clients' own messages are often just
/// "error sending request", the useful part is a few causes down).
pub(crate) fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    for _ in 0..MAX_DEPTH {
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

#[cfg_attr(not(feature = "ravendb"), allow(dead_code))] // only RavenDB uses it
/// Whether an error of type `E` is somewhere in the cause chain of `error`.
/// `io::Error` hides its payload from `source()` (it returns the payload's
/// source), so the payload of every `io::Error` is looked at too.
pub(crate) fn chain_has<E: Error + 'static>(error: &(dyn Error + 'static)) -> bool {
    fn visit<E: Error + 'static>(error: &(dyn Error + 'static), depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        if error.is::<E>() {
            return true;
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            return visit::<E>(inner, depth + 1);
        }
        error
            .source()
            .is_some_and(|next| visit::<E>(next, depth + 1))
    }
    visit::<E>(error, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("certificate expired")]
    struct Cert;

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn failures_keep_their_error_and_sort_by_transience() {
        let down = unavailable("http://h:1", "refused");
        assert!(matches!(
            Failure::from(down),
            Failure::Retry {
                maybe_applied: false,
                ..
            }
        ));
        let refused = backend("http://h:1", "HTTP 403");
        assert!(matches!(Failure::from(refused), Failure::Fatal(_)));
        let error = Failure::retry(unavailable("e", "x"), true).into_error();
        assert_eq!(error.to_string(), "cannot reach e: x");
        let error = Failure::Fatal(backend("e", "y")).into_error();
        assert_eq!(error.to_string(), "e answered with an error: y");
    }

    #[test]
    fn chains_look_inside_io_errors() {
        let error = Outer(std::io::Error::other(Cert));
        assert!(chain_has::<Cert>(&error));
        assert!(!chain_has::<std::fmt::Error>(&error));
        assert_eq!(
            error_chain(&error),
            "error sending request: certificate expired"
        );
    }
}
