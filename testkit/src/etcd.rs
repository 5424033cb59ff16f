//! Real etcd processes: a single node or a cluster of members on free loopback ports,
//! each with its own data directory, and the faults tests need (kill -9,
//! SIGSTOP/SIGCONT, restart into the existing cluster).
//!
//! Start members with [`Cluster::single`], [`Cluster::members`] or [`Cluster::start`].
//! If `etcd` is not installed the calling test fails and says to run `scripts/etcd.sh`;
//! nothing is skipped silently. Dropping the [`Cluster`] SIGKILLs every process it
//! started (by PID) and removes the data directories.
//!
//! ```no_run
//! let etcd = testkit::etcd::Cluster::single();
//! let url = format!("etcd://127.0.0.1:{}/locks", etcd.client_port(0));
//! # let _ = url;
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use crate::certs::{TlsFiles, make_tls_files};
use crate::ports::free_ports;
use crate::process::signal;

/// How long a fresh node or cluster may take to report healthy.
const START_TIMEOUT: Duration = Duration::from_secs(20);

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// One etcd member started by the harness.
struct Node {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// `http` or `https` for the client URL.
    scheme: &'static str,
    /// Plain-HTTP `/health` (and metrics), also when clients must use TLS.
    metrics_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A set of etcd members started by this test, torn down (SIGKILL) on drop.
pub struct Cluster {
    root: PathBuf,
    token: String,
    initial_cluster: String,
    nodes: Vec<Node>,
    tls: Option<TlsFiles>,
    extra_args: Vec<String>,
}

/// How to start the members (see [`Cluster::start`]).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Serve clients over TLS, requiring a client certificate signed by the test CA.
    pub tls: bool,
    /// More `etcd` flags, such as `--auth-token-ttl 1`.
    pub extra_args: Vec<String>,
}

/// Fails the test with the install hint when `etcd` is missing.
fn require_etcd() {
    let found = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "etcd is not installed (or not on PATH): run `scripts/etcd.sh` (installs Debian's \
         etcd-server, etcd-client and protobuf-compiler), then rerun the tests"
    );
}

/// A minimal HTTP/1.1 request to 127.0.0.1:`port` (etcd's client port also serves the
/// JSON gateway). Returns the status code and body, or `None` on any failure.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

impl Node {
    fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

impl Cluster {
    /// Starts one etcd node and waits until it is healthy.
    pub fn single() -> Cluster {
        Self::members(1)
    }

    /// Starts `size` members of one cluster (fast Raft settings: heartbeat 10 ms,
    /// election timeout 100 ms) and waits until each reports healthy.
    pub fn members(size: usize) -> Cluster {
        Self::start(size, Options::default())
    }

    /// Starts `size` members with `options` (TLS, extra flags) and waits until each
    /// reports healthy.
    pub fn start(size: usize, options: Options) -> Cluster {
        require_etcd();
        assert!(size >= 1, "a cluster needs at least one member");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let unique = format!(
            "{}-{}-{nanos}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        );
        let root = std::env::temp_dir().join(format!("distlock-etcd-{unique}"));
        std::fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
        let ports = free_ports(size * 3);
        let nodes: Vec<Node> = (0..size)
            .map(|i| {
                let name = format!("n{}", i + 1);
                Node {
                    data_dir: root.join(&name),
                    log: root.join(format!("{name}.log")),
                    name,
                    client_port: ports[3 * i],
                    peer_port: ports[3 * i + 1],
                    metrics_port: ports[3 * i + 2],
                    scheme: if options.tls { "https" } else { "http" },
                    child: None,
                }
            })
            .collect();
        let initial_cluster = nodes
            .iter()
            .map(|n| format!("{}={}", n.name, n.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let tls = options.tls.then(|| make_tls_files(&root.join("tls")));
        let mut cluster = Cluster {
            token: format!("distlock-test-{unique}"),
            root,
            initial_cluster,
            nodes,
            tls,
            extra_args: options.extra_args,
        };
        for i in 0..size {
            cluster.spawn(i, "new");
        }
        for i in 0..size {
            cluster.wait_healthy(i, START_TIMEOUT);
        }
        cluster
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", node.log.display()));
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let metrics = format!("http://127.0.0.1:{}", node.metrics_port);
        let child = command
            .args(["--name", &node.name])
            .args(["--listen-metrics-urls", &metrics])
            .args(&self.extra_args)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .args(["--listen-client-urls", &node.client_url()])
            .args(["--advertise-client-urls", &node.client_url()])
            .args(["--listen-peer-urls", &node.peer_url()])
            .args(["--initial-advertise-peer-urls", &node.peer_url()])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", state])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd {}: {e}", node.name));
        self.nodes[i].child = Some(child);
    }

    /// Enables authentication with a `root` user whose password is `password`, via
    /// `etcdctl` against member 0.
    pub fn enable_auth(&self, password: &str) {
        let endpoint = self.client_url(0);
        let run = |args: &[&str]| {
            let out = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &endpoint])
                .args(args)
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run etcdctl (run scripts/etcd.sh to install it): {e}")
                });
            assert!(
                out.status.success(),
                "etcdctl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "user",
            "add",
            "root",
            "--interactive=false",
            &format!("--new-user-password={password}"),
        ]);
        run(&["auth", "enable"]);
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no members (never: [`Cluster::start`] starts at least one).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `http://127.0.0.1:PORT` of member `i`.
    pub fn client_url(&self, i: usize) -> String {
        self.nodes[i].client_url()
    }

    /// Every member's client URL, in member order.
    pub fn client_urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::client_url).collect()
    }

    /// The client port of member `i`.
    pub fn client_port(&self, i: usize) -> u16 {
        self.nodes[i].client_port
    }

    /// The PID of member `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// The TLS files, when started with [`Options::tls`].
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Whether member `i` answers `/health` with `{"health":"true"}` right now (asked
    /// on its plain-HTTP metrics port, so this works with TLS too).
    pub fn is_healthy(&self, i: usize) -> bool {
        matches!(
            http(self.nodes[i].metrics_port, "GET", "/health", ""),
            Some((200, body)) if body.contains("\"health\":\"true\"")
        )
    }

    /// Waits (bounded) until member `i` is healthy; fails the test with its log otherwise.
    pub fn wait_healthy(&self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.is_healthy(i) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "etcd {} not healthy within {timeout:?}; log tail:\n{}",
            self.nodes[i].name,
            self.log_tail(i, 20)
        );
    }

    /// The value of one unlabelled Prometheus metric of member `i` right now (from its
    /// plain-HTTP metrics port), such as `etcd_debugging_mvcc_watch_stream_total` (watch
    /// streams open on that member) or `etcd_debugging_mvcc_watcher_total` (watch ids).
    /// `None` if the member does not answer or does not report it.
    pub fn metric(&self, i: usize, name: &str) -> Option<f64> {
        // HTTP/1.0: the body is sent whole, never chunked.
        let addr = SocketAddr::from(([127, 0, 0, 1], self.nodes[i].metrics_port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).ok()?;
        let answer = String::from_utf8_lossy(&answer);
        answer.lines().find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name).then(|| value.trim().parse().ok())?
        })
    }

    /// The member that is Raft leader, by asking each running member for its status.
    /// `None` if no running member names a leader that answers.
    pub fn leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leader_id = None;
        for node in &self.nodes {
            let status = http(node.client_port, "POST", "/v3/maintenance/status", "{}")
                .filter(|(code, _)| *code == 200)
                .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok());
            let member = status
                .as_ref()
                .and_then(|s| s["header"]["member_id"].as_str().map(str::to_owned));
            if leader_id.is_none() {
                leader_id = status
                    .as_ref()
                    .and_then(|s| s["leader"].as_str().map(str::to_owned));
            }
            ids.push(member);
        }
        let leader_id = leader_id?;
        ids.iter().position(|id| id.as_deref() == Some(&leader_id))
    }

    /// Waits (bounded) until some member is leader and returns it.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(i) = self.leader() {
                return i;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no etcd leader within {timeout:?}");
    }

    /// SIGKILLs member `i` and reaps it. Its data directory stays for [`Self::restart`].
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            // std's kill is SIGKILL on Unix, sent to this PID only.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOPs member `i`: it keeps its sockets but answers nothing (the hang case).
    pub fn pause(&self, i: usize) {
        if let Some(pid) = self.pid(i) {
            signal(pid, "-STOP");
        }
    }

    /// SIGCONTs a paused member `i`.
    pub fn resume(&self, i: usize) {
        if let Some(pid) = self.pid(i) {
            signal(pid, "-CONT");
        }
    }

    /// Starts a killed member `i` again on its data directory
    /// (`--initial-cluster-state existing`) and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, "existing");
        self.wait_healthy(i, START_TIMEOUT);
    }

    /// The last `lines` lines of member `i`'s log, for failure messages.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The directory holding the members' data and logs.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // SIGKILL works on a SIGSTOPped process too; then reap it.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
