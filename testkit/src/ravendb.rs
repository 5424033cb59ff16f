//! A real RavenDB 4.1 server on free loopback ports, with its own data directory, over
//! HTTP or HTTPS with client certificates.
//!
//! The server comes from `scripts/ravendb.sh install` (in `<repo>/.cache/ravendb`, or
//! `$DISTLOCK_RAVENDB_HOME`); without it the calling test fails and says to run the
//! script: nothing is skipped silently. Dropping a [`Server`] SIGKILLs its process (by
//! PID) and removes its directory. Start it inside a tokio runtime (readiness is polled
//! over HTTP with [`reqwest`], re-exported here for raw requests).
//!
//! ```no_run
//! # async fn run() {
//! let server = testkit::ravendb::Server::start().await;
//! let url = server.store_url(); // ravendb+http://127.0.0.1:PORT/locks
//! # let _ = url;
//! # }
//! ```

pub mod original;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use crate::certs::TlsFixture;
use crate::ports::free_ports;
use crate::process::signal;
pub use reqwest;

/// How long a server may take to answer `GET /cluster/topology` with 200.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restarted server's database may keep answering start-up errors.
const DB_READY_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// Where `scripts/ravendb.sh install` put the server, or a failed test saying to run it.
pub fn ravendb_home() -> PathBuf {
    let home = std::env::var_os("DISTLOCK_RAVENDB_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/ravendb"));
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

/// One RavenDB server process started by a test; SIGKILLed on drop.
pub struct Server {
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

impl Server {
    /// Starts a plain-HTTP server on free loopback ports and creates database `locks`.
    pub async fn start() -> Server {
        Self::start_inner(None).await
    }

    /// Starts an HTTPS server with `fixture`'s server certificate, trusting its admin
    /// client certificate, and creates database `locks`.
    pub async fn start_tls(fixture: &TlsFixture) -> Server {
        Self::start_inner(Some(fixture)).await
    }

    async fn start_inner(fixture: Option<&TlsFixture>) -> Server {
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
        let mut server = Server {
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
    /// [`Server::kill`] or [`Server::terminate`]), and waits until the
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

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
