//! TLS material as PEM: reading the files and checking what they hold.
//!
//! Both backends take PEM (a CA certificate, a client certificate chain and its
//! key) from bytes or from files. Reading and validating lives here; what each
//! backend builds from it stays with it (RavenDB a rustls `ClientConfig`, etcd
//! the PEM bytes etcd-client wants). No error quotes the content of a file,
//! nor any byte of a key.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::secret::Secret;

/// Which piece of TLS material a PEM is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PemKind {
    /// A CA certificate to trust for the servers' certificates.
    CaCertificate,
    /// The client's certificate (leaf first, its chain may follow).
    ClientCertificate,
    /// The client certificate's private key.
    ClientKey,
}

impl PemKind {
    /// `"CA certificate"`, `"client certificate"` or `"client key"`.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            PemKind::CaCertificate => "CA certificate",
            PemKind::ClientCertificate => "client certificate",
            PemKind::ClientKey => "client key",
        }
    }
}

impl fmt::Display for PemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg_attr(not(all(feature = "etcd", feature = "ravendb")), allow(dead_code))] // each backend builds some variants
/// Why TLS material cannot be used. The `Display` is the reason alone; the
/// backends put it in their own configuration error with [`TlsError::what`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// A PEM file could not be read (the path is shown, nothing of the content).
    #[error("cannot read the {what} at {}: {source}", path.display())]
    Read {
        /// What the file should hold.
        what: PemKind,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The PEM holds no certificate.
    #[error("no PEM certificate found")]
    NoCertificate {
        /// Which certificate.
        what: PemKind,
    },
    /// A certificate section of the PEM is malformed.
    #[error("{reason}")]
    BadCertificate {
        /// Which certificate.
        what: PemKind,
        /// The PEM parser's reason (certificates are public: it may quote a line).
        reason: String,
    },
    /// The PEM holds no usable private key (its bytes are never quoted).
    #[error("no PEM private key (PKCS#8, PKCS#1 or SEC1) found")]
    NoPrivateKey,
}

impl TlsError {
    #[cfg_attr(not(feature = "ravendb"), allow(dead_code))] // only RavenDB uses it
    /// Which piece of material was wrong.
    pub(crate) fn what(&self) -> PemKind {
        match self {
            TlsError::Read { what, .. }
            | TlsError::NoCertificate { what }
            | TlsError::BadCertificate { what, .. } => *what,
            TlsError::NoPrivateKey => PemKind::ClientKey,
        }
    }
}

/// A client certificate chain and its private key, as PEM. `Debug` shows neither.
#[derive(Clone)]
pub(crate) struct ClientIdentity {
    /// The certificate chain, leaf first.
    pub(crate) cert_pem: Vec<u8>,
    /// The private key (may be the same PEM as the chain if it holds both).
    pub(crate) key_pem: Secret<Vec<u8>>,
}

impl ClientIdentity {
    /// Pairs a certificate chain with its key.
    pub(crate) fn new(cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        ClientIdentity {
            cert_pem,
            key_pem: Secret::new(key_pem),
        }
    }

    /// Reads both from PEM files.
    pub(crate) fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(ClientIdentity::new(
            read_pem(cert, PemKind::ClientCertificate)?,
            read_pem(key, PemKind::ClientKey)?,
        ))
    }

    #[cfg_attr(not(feature = "ravendb"), allow(dead_code))] // only RavenDB uses it
    /// The parsed chain and key (see [`certificates`] and [`private_key`]).
    pub(crate) fn parse(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        Ok((
            certificates(&self.cert_pem, PemKind::ClientCertificate)?,
            private_key(self.key_pem.expose())?,
        ))
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_pem_bytes", &self.cert_pem.len())
            .field("key_pem", &self.key_pem)
            .finish()
    }
}

/// Reads the PEM file at `path`, which should hold `what`.
pub(crate) fn read_pem(path: &Path, what: PemKind) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

#[cfg_attr(not(feature = "ravendb"), allow(dead_code))] // only RavenDB uses it
/// The certificates in `pem` (at least one), in order.
pub(crate) fn certificates(
    pem: &[u8],
    what: PemKind,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            what,
            reason: e.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(certificates)
}

#[cfg_attr(not(feature = "ravendb"), allow(dead_code))] // only RavenDB uses it
/// The first private key in `pem` (PKCS#8, PKCS#1 or SEC1). The error says
/// nothing of the bytes.
pub(crate) fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| TlsError::NoPrivateKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A self-signed certificate is not needed: the PEM layer only checks the
    // framing and base64, so any DER-shaped bytes do.
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n";

    #[test]
    fn certificates_and_keys_are_found() {
        let chain = format!("{CERT}{CERT}");
        let found = certificates(chain.as_bytes(), PemKind::ClientCertificate);
        assert_eq!(found.map(|c| c.len()).ok(), Some(2));
        assert!(private_key(KEY.as_bytes()).is_ok());
        // One PEM holding both.
        let both = format!("{CERT}{KEY}");
        assert!(private_key(both.as_bytes()).is_ok());
        assert!(certificates(both.as_bytes(), PemKind::CaCertificate).is_ok());
    }

    #[test]
    fn missing_material_is_typed() {
        match certificates(b"hello", PemKind::CaCertificate) {
            Err(e @ TlsError::NoCertificate { .. }) => {
                assert_eq!(e.what(), PemKind::CaCertificate);
                assert_eq!(e.to_string(), "no PEM certificate found");
            }
            other => panic!("{other:?}"),
        }
        let broken = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n";
        assert!(matches!(
            certificates(broken.as_bytes(), PemKind::ClientCertificate),
            Err(TlsError::BadCertificate { .. })
        ));
    }

    #[test]
    fn key_errors_never_quote_the_key() {
        let secret = "-----BEGIN PRIVATE KEY-----\nSECRET!!\n-----END PRIVATE KEY-----\n";
        match private_key(secret.as_bytes()) {
            Err(e) => {
                let shown = format!("{e} {e:?}");
                assert!(!shown.contains("SECRET"), "{shown}");
                assert_eq!(e.what(), PemKind::ClientKey);
            }
            Ok(_) => panic!("accepted"),
        }
        let identity = ClientIdentity::new(CERT.into(), secret.into());
        let shown = format!("{identity:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(identity.parse().is_err());
    }

    #[test]
    fn unreadable_files_are_named() {
        let path = Path::new("/nonexistent/ca.pem");
        match read_pem(path, PemKind::CaCertificate) {
            Err(e) => {
                let shown = e.to_string();
                assert!(
                    shown.starts_with("cannot read the CA certificate at /nonexistent/ca.pem: "),
                    "{shown}"
                );
            }
            Ok(_) => panic!("read a file that does not exist"),
        }
        assert!(ClientIdentity::from_files(path, path).is_err());
    }
}
