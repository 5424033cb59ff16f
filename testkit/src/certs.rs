//! Throw-away certificates made with the `openssl` command line tool (Debian package
//! `openssl`): a CA with server and client certificates for etcd ([`make_tls_files`]) and
//! for RavenDB ([`TlsFixture::generate`], with the PKCS#12 bundle .NET reads and a client
//! certificate the server does not trust).
//!
//! Certificates are valid for two or three days and live in directories under the
//! system temporary directory. A failing `openssl` run fails the calling test with its
//! error output.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the openssl CLI (install Debian's `openssl`): {e}"));
    assert!(
        output.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// PEM files of a throw-away CA, a server certificate for 127.0.0.1 and a client
/// certificate, made with the `openssl` command line tool.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA certificate that signed the other two.
    pub ca: PathBuf,
    /// Server certificate (SAN IP:127.0.0.1, DNS:localhost) and key.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// Client certificate (CN=root) and key.
    pub client_cert: PathBuf,
    /// The client's private key.
    pub client_key: PathBuf,
}

/// Signs the request `csr` with the CA in `dir` (`ca.pem`, `ca.key`), with the
/// extensions in `extfile`, valid for `days`, into `pem`.
fn sign(dir: &Path, csr: &str, extfile: &str, days: &str, pem: &str) {
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            days,
            "-extfile",
            extfile,
            "-out",
            pem,
        ],
    );
}

/// Makes a CA, a server and a client certificate in `dir`.
pub fn make_tls_files(dir: &Path) -> TlsFiles {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=distlock test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    for (name, cn, ext) in [
        (
            "server",
            "/CN=127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        ),
        ("client", "/CN=root", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, pem, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&extfile), ext)
            .unwrap_or_else(|e| panic!("writing {extfile}: {e}"));
        let mut req = vec!["req", "-subj", cn];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(dir, &req);
        sign(dir, &csr, &extfile, "2", &pem);
    }
    TlsFiles {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}

/// Certificates for an HTTPS server: a CA, a server certificate for 127.0.0.1, an
/// admin client certificate the server trusts, and one it does not know.
pub struct TlsFixture {
    /// The directory holding every file (removed on drop), including `server.pfx`, the
    /// server certificate, key and CA as the PKCS#12 bundle RavenDB loads.
    pub dir: PathBuf,
    /// The CA (PEM) that signed the server certificate.
    pub ca_pem: Vec<u8>,
    /// The trusted (admin) client certificate, PEM.
    pub client_cert_pem: Vec<u8>,
    /// The trusted client certificate's private key, PEM.
    pub client_key_pem: Vec<u8>,
    /// A client certificate the server was not told about, PEM.
    pub stranger_cert_pem: Vec<u8>,
    /// The stranger certificate's private key, PEM.
    pub stranger_key_pem: Vec<u8>,
    /// The admin certificate's SHA-1 thumbprint (hex, upper case).
    pub client_thumbprint: String,
}

impl TlsFixture {
    /// Generates everything with the `openssl` CLI in a fresh directory.
    pub fn generate() -> TlsFixture {
        let dir = std::env::temp_dir().join(format!(
            "distlock-ravendb-tls-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {dir:?}: {e}"));
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text)
                .unwrap_or_else(|e| panic!("cannot write {name}: {e}"))
        };
        write(
            "server.ext",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        );
        write(
            "client.ext",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=clientAuth\n",
        );
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "3",
                "-subj",
                "/CN=distlock test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        for (name, subject, ext) in [
            ("server", "/CN=127.0.0.1", "server.ext"),
            ("client", "/CN=distlock test admin", "client.ext"),
        ] {
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            openssl(
                &dir,
                &[
                    "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                    subject,
                ],
            );
            sign(&dir, &csr, ext, "3", &pem);
        }
        // A self-signed certificate the server knows nothing about.
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "stranger.key",
                "-out",
                "stranger.pem",
                "-days",
                "3",
                "-subj",
                "/CN=distlock stranger",
            ],
        );
        // OpenSSL 1.1 inside .NET Core 2.1 reads only the legacy PKCS#12 encryption.
        openssl(
            &dir,
            &[
                "pkcs12",
                "-export",
                "-in",
                "server.pem",
                "-inkey",
                "server.key",
                "-certfile",
                "ca.pem",
                "-out",
                "server.pfx",
                "-passout",
                "pass:",
                "-certpbe",
                "PBE-SHA1-3DES",
                "-keypbe",
                "PBE-SHA1-3DES",
                "-macalg",
                "sha1",
            ],
        );
        let output = Command::new("openssl")
            .args([
                "x509",
                "-in",
                "client.pem",
                "-noout",
                "-fingerprint",
                "-sha1",
            ])
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
        let text = String::from_utf8_lossy(&output.stdout);
        let client_thumbprint = text
            .split_once('=')
            .map(|(_, hex)| hex.trim().replace(':', "").to_uppercase())
            .unwrap_or_else(|| panic!("no fingerprint in {text:?}"));
        let read =
            |name: &str| std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        TlsFixture {
            ca_pem: read("ca.pem"),
            client_cert_pem: read("client.pem"),
            client_key_pem: read("client.key"),
            stranger_cert_pem: read("stranger.pem"),
            stranger_key_pem: read("stranger.key"),
            client_thumbprint,
            dir,
        }
    }
}

impl Drop for TlsFixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
