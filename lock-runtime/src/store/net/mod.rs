//! The network layer the backends share, so that each backend is a thin mapping
//! of the store contract onto its wire protocol.
//!
//! - [`url`]: backend URLs (`scheme://[user:password@]host:port[,host:port...]/path?options`)
//!   cut into parts, hosts checked with the `url` crate, `percent-encoding`
//!   decoding, durations in the crate's one grammar; [`redact`]: what an error
//!   may show of a URL.
//! - [`failover`]: one request over an endpoint list, last-good-first, a timeout per
//!   attempt; [`classify`]: retry-elsewhere or stop, and the contract errors.
//! - [`secret`]: a value never printed; [`tls`]: PEM files and their contents.
//! - [`cache`]: the one bounded cache (also used by the lock client).
//!
//! It sits under the contract: it uses [`crate::store`]'s types and the crate's
//! duration grammar, never the lock engine or the client.

pub(crate) mod cache;
#[cfg(any(feature = "etcd", feature = "ravendb"))]
pub(crate) mod classify;
#[cfg(any(feature = "etcd", feature = "ravendb"))]
pub(crate) mod failover;
pub(crate) mod redact;
#[cfg(any(feature = "etcd", feature = "ravendb"))]
pub(crate) mod secret;
#[cfg(any(feature = "etcd", feature = "ravendb"))]
pub(crate) mod tls;
#[cfg(any(feature = "etcd", feature = "ravendb"))]
pub(crate) mod url;
