//! A real RavenDB 4.1 server for integration tests, on free loopback ports, with its
//! own data directory, over HTTP or HTTPS with client certificates.
//!
//! Include it from a root integration test with `mod support { pub mod ravendb; }`.
//! The server comes from `scripts/ravendb.sh install` (in `<repo>/.cache/ravendb`, or
//! `$DISTLOCK_RAVENDB_HOME`); without it the test fails and says to run the script:
//! nothing is skipped silently. Dropping a [`RavenServer`] SIGKILLs its process (by
//! PID) and removes its directory.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use super::ports::free_ports;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to answer `GET /cluster/topology` with 200.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restarted server's database may keep answering start-up errors.
const DB_READY_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// Where `scripts/ravendb.sh install` put the server, or a failed test saying to run it.
pub fn ravendb_home() -> PathBuf {
    let home = std::env::var_os("DISTLOCK_RAVENDB_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/ravendb"));
    let needed = [
        "dotnet/dotnet",
        "server/Raven.Server.dll",
        "openssl/libssl.so.1.1",
    ];
    for part in needed {
        assert!(
            home.join(part).exists(),
            "RavenDB is not installed ({} is missing): run `scripts/ravendb.sh install` \
             (about 1-2 minutes once; cached in .cache/ravendb), then rerun the tests",
            home.join(part).display()
        );
    }
    home
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("cannot run kill {sig} {pid}: {e}"));
    assert!(status.success(), "kill {sig} {pid} failed");
}

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

/// Certificates for an HTTPS server: a CA, a server certificate for 127.0.0.1, an
/// admin client certificate the server trusts, and one it does not know.
pub struct TlsFixture {
    pub dir: PathBuf,
    /// The CA (PEM) that signed the server certificate.
    pub ca_pem: Vec<u8>,
    /// The trusted (admin) client certificate and key, PEM.
    pub client_cert_pem: Vec<u8>,
    pub client_key_pem: Vec<u8>,
    /// A client certificate the server was not told about, PEM.
    pub stranger_cert_pem: Vec<u8>,
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
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "3",
                    "-extfile",
                    ext,
                ],
            );
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

/// One RavenDB server process started by a test; SIGKILLed on drop.
pub struct RavenServer {
    home: PathBuf,
    root: PathBuf,
    port: u16,
    tcp_port: u16,
    tls: Option<(PathBuf, String)>,
    http: reqwest::Client,
    child: Option<Child>,
    /// The database created at start.
    pub database: String,
}

impl RavenServer {
    /// Starts a plain-HTTP server on free loopback ports and creates database `locks`.
    pub async fn start() -> RavenServer {
        Self::start_inner(None).await
    }

    /// Starts an HTTPS server with `fixture`'s server certificate, trusting its admin
    /// client certificate, and creates database `locks`.
    pub async fn start_tls(fixture: &TlsFixture) -> RavenServer {
        Self::start_inner(Some(fixture)).await
    }

    async fn start_inner(fixture: Option<&TlsFixture>) -> RavenServer {
        let home = ravendb_home();
        let http = match fixture {
            None => plain_client(),
            Some(fixture) => tls_client(fixture),
        };
        let root = std::env::temp_dir().join(format!(
            "distlock-ravendb-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("cannot create {root:?}: {e}"));
        let ports = free_ports(2);
        let mut server = RavenServer {
            home,
            root,
            port: ports[0],
            tcp_port: ports[1],
            tls: fixture.map(|f| (f.dir.join("server.pfx"), f.client_thumbprint.clone())),
            http,
            child: None,
            database: "locks".into(),
        };
        server.spawn();
        server.wait_ready().await;
        server.create_database("locks").await;
        server
    }

    fn spawn(&mut self) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let log_path = self.root.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("cannot open {log_path:?}: {e}"));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone a file handle: {e}"));
        let mut command = Command::new(self.home.join("dotnet/dotnet"));
        command
            .arg(self.home.join("server/Raven.Server.dll"))
            .arg("--non-interactive")
            .arg(format!("--ServerUrl={scheme}://127.0.0.1:{}", self.port))
            .arg(format!("--ServerUrl.Tcp=tcp://127.0.0.1:{}", self.tcp_port))
            .arg("--Setup.Mode=None")
            .arg("--License.Eula.Accepted=true")
            .arg(format!("--DataDir={}", self.root.join("data").display()))
            .arg(format!("--Logs.Path={}", self.root.join("Logs").display()))
            .env("DOTNET_SYSTEM_GLOBALIZATION_INVARIANT", "1")
            .env("LD_LIBRARY_PATH", self.home.join("openssl"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        if let Some((pfx, thumbprint)) = &self.tls {
            // The server calls itself over HTTPS (cluster endpoints) and validates its
            // own certificate with OpenSSL's default store: point that at our CA.
            if let Some(dir) = pfx.parent() {
                command.env("SSL_CERT_FILE", dir.join("ca.pem"));
            }
            command
                .arg(format!("--Security.Certificate.Path={}", pfx.display()))
                .arg(format!(
                    "--Security.WellKnownCertificates.Admin={thumbprint}"
                ));
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start RavenDB: {e}"));
        self.child = Some(child);
    }

    async fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "RavenDB exited during start-up ({status}); log:\n{}",
                    self.log_tail(40)
                );
            }
            let answer = self
                .http
                .get(format!("{}/cluster/topology", self.url()))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|a| a.status() == 200) {
                return;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "RavenDB did not answer /cluster/topology with 200 within {START_TIMEOUT:?}; \
                 log:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a database (replication factor 1); an existing one is fine.
    pub async fn create_database(&self, name: &str) {
        // Creation can take several seconds on a busy machine; retry transport errors.
        let started = Instant::now();
        let answer = loop {
            let sent = self
                .http
                .put(format!(
                    "{}/admin/databases?name={name}&replicationFactor=1",
                    self.url()
                ))
                .body(format!("{{\"DatabaseName\":\"{name}\"}}"))
                .timeout(Duration::from_secs(30))
                .send()
                .await;
            match sent {
                Ok(answer) => break answer,
                Err(e) if started.elapsed() < DB_READY_TIMEOUT => {
                    eprintln!("creating database {name}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!(
                    "creating database {name}: {e:?}\nlog:\n{}",
                    self.log_tail(40)
                ),
            }
        };
        let status = answer.status().as_u16();
        assert!(
            status == 201 || status == 409,
            "creating database {name} answered {status}: {}",
            answer.text().await.unwrap_or_default()
        );
        self.wait_database(name).await;
    }

    /// Waits until `name` answers compare-exchange reads (not a start-up 500).
    pub async fn wait_database(&self, name: &str) {
        let started = Instant::now();
        loop {
            let answer = self
                .http
                .get(format!(
                    "{}/databases/{name}/cmpxchg?key=distlock-harness-probe",
                    self.url()
                ))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|a| a.status() == 404 || a.status() == 200) {
                return;
            }
            assert!(
                started.elapsed() < DB_READY_TIMEOUT,
                "database {name} did not become ready within {DB_READY_TIMEOUT:?}; log:\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:PORT` (or `https://`).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `ravendb+http://127.0.0.1:PORT/locks` (or `ravendb+https://`).
    pub fn store_url(&self) -> String {
        format!("ravendb+{}/{}", self.url(), self.database)
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the server (by PID) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERMs the server and waits (bounded) for it to exit; SIGKILL after 15 s.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "-TERM");
            let until = Instant::now() + Duration::from_secs(15);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data directory (after
    /// [`RavenServer::kill`] or [`RavenServer::terminate`]), and waits until the
    /// database answers again: right after a restart 4.1 answers 500
    /// `NullReferenceException` for about two seconds.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
        self.wait_database(&self.database.clone()).await;
    }

    /// Starts the process again without waiting for anything.
    pub fn respawn(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The last `lines` lines of the server's output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The resident memory of the server process in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }
}

/// A plain-HTTP reqwest client. reqwest is built without a default crypto provider
/// (ring is preconfigured instead), so even http-only clients get a rustls config.
pub fn plain_client() -> reqwest::Client {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("tls: {e}"))
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .tls_backend_preconfigured(config)
        .build()
        .unwrap_or_else(|e| panic!("http client: {e}"))
}

fn tls_client(fixture: &TlsFixture) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&fixture.ca_pem) {
        let cert = cert.unwrap_or_else(|e| panic!("CA: {e}"));
        roots.add(cert).unwrap_or_else(|e| panic!("CA: {e}"));
    }
    let chain = CertificateDer::pem_slice_iter(&fixture.client_cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("client cert: {e}"));
    let key = PrivateKeyDer::from_pem_slice(&fixture.client_key_pem)
        .unwrap_or_else(|e| panic!("client key: {e}"));
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("tls: {e}"))
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap_or_else(|e| panic!("tls: {e}"));
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .tls_backend_preconfigured(config)
        .build()
        .unwrap_or_else(|e| panic!("https client: {e}"))
}

impl Drop for RavenServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
