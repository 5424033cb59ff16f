//! A loopback TCP fault proxy owned by one test: it listens on a free 127.0.0.1 port
//! and forwards every connection to one upstream (an etcd or RavenDB server started by
//! the test), with faults switchable at run time:
//!
//! - [`Mode::Pass`]: forward both ways.
//! - [`Mode::BlackHole`]: keep accepting and reading, forward nothing either way
//!   (a partition: existing connections stall, new ones connect and stall).
//! - [`Mode::DropAnswers`]: forward client-to-server bytes, discard server-to-client
//!   bytes (requests are applied, their answers are lost).
//! - [`Mode::Delay`]: forward both ways, each chunk `d` after it was read.
//!
//! A direction of a connection that lost bytes can never be framed again (the gRPC or
//! HTTP stream has a hole), so it forwards nothing more, and the connection is marked
//! poisoned and closed when the mode returns to `Pass` ([`FaultProxy::heal`]); clients
//! then reconnect through the proxy. Under `DropAnswers` requests keep flowing on a
//! poisoned connection (that direction lost nothing). Connections that lost nothing
//! carry on after a heal.
//!
//! Bounded: the accept loop and every connection task stop when the [`FaultProxy`] is
//! dropped (and at the latest with the test's runtime).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How long connecting to the upstream may take before the client's connection is closed.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Chunks queued per direction (back-pressure for `Delay`).
const QUEUE: usize = 256;

/// What the proxy does with the bytes it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Forward nothing either way (read and discard): a partition.
    BlackHole,
    /// Forward requests, discard answers.
    DropAnswers,
    /// Forward both ways, each chunk this long after it was read.
    Delay(Duration),
}

/// Counters since the proxy started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub connections: u64,
    /// Connections open right now.
    pub open: u64,
    /// Poisoned connections closed by `heal` (or by a switch back to `Pass`).
    pub reset: u64,
    /// Client-to-server bytes forwarded.
    pub bytes_up: u64,
    /// Server-to-client bytes forwarded.
    pub bytes_down: u64,
    /// Client-to-server bytes discarded.
    pub dropped_up: u64,
    /// Server-to-client bytes discarded.
    pub dropped_down: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

/// Which directions of one connection lost bytes.
#[derive(Default)]
struct Poison {
    up: AtomicBool,
    down: AtomicBool,
}

impl Poison {
    fn of(&self, direction: Direction) -> &AtomicBool {
        match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }

    fn any(&self) -> bool {
        self.up.load(Ordering::SeqCst) || self.down.load(Ordering::SeqCst)
    }
}

/// One proxied connection, as the registry sees it.
struct Conn {
    poison: Arc<Poison>,
    close: watch::Sender<bool>,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    reset: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    dropped_up: AtomicU64,
    dropped_down: AtomicU64,
}

struct Shared {
    upstream: SocketAddr,
    /// The current mode. Every forward-or-drop decision is taken under this lock, so
    /// a switch to `Pass` sees every connection that lost bytes before it.
    mode: Mutex<Mode>,
    /// Open connections by id; `None` once the proxy is dropped.
    conns: Mutex<Option<HashMap<u64, Conn>>>,
    next_id: AtomicU64,
    counters: Counters,
}

impl Shared {
    fn mode(&self) -> MutexGuard<'_, Mode> {
        self.mode.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn conns(&self) -> MutexGuard<'_, Option<HashMap<u64, Conn>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides what happens to a chunk just read: `Some(due)` to forward it at `due`,
    /// `None` to discard it (counted; that direction of the connection is poisoned).
    fn admit(&self, direction: Direction, poison: &Poison, len: usize) -> Option<Instant> {
        let mode = self.mode();
        let poisoned = poison.of(direction);
        let drop_it = poisoned.load(Ordering::SeqCst)
            || match *mode {
                Mode::Pass | Mode::Delay(_) => false,
                Mode::BlackHole => true,
                Mode::DropAnswers => direction == Direction::Down,
            };
        let len = len as u64;
        if drop_it {
            poisoned.store(true, Ordering::SeqCst);
            let counter = match direction {
                Direction::Up => &self.counters.dropped_up,
                Direction::Down => &self.counters.dropped_down,
            };
            counter.fetch_add(len, Ordering::Relaxed);
            return None;
        }
        let delay = match *mode {
            Mode::Delay(d) => d,
            _ => Duration::ZERO,
        };
        Some(Instant::now() + delay)
    }

    fn forwarded(&self, direction: Direction, len: usize) {
        let counter = match direction {
            Direction::Up => &self.counters.bytes_up,
            Direction::Down => &self.counters.bytes_down,
        };
        counter.fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// A fault proxy in front of one upstream; see the module docs. Stops on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`, in [`Mode::Pass`].
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap_or_else(|e| panic!("the fault proxy cannot bind a loopback port: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the fault proxy has no local address: {e}"));
        let shared = Arc::new(Shared {
            upstream,
            mode: Mutex::new(Mode::Pass),
            conns: Mutex::new(Some(HashMap::new())),
            next_id: AtomicU64::new(0),
            counters: Counters::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        FaultProxy {
            addr,
            shared,
            accept,
        }
    }

    /// A proxy in front of `127.0.0.1:port`.
    pub async fn to_port(port: u16) -> FaultProxy {
        FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the endpoint to give a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.shared.mode()
    }

    /// Switches the mode. Switching to [`Mode::Pass`] also closes every poisoned
    /// connection (see [`FaultProxy::heal`]); returns how many were closed.
    pub fn set_mode(&self, mode: Mode) -> usize {
        *self.shared.mode() = mode;
        if mode == Mode::Pass {
            self.close_poisoned()
        } else {
            0
        }
    }

    /// [`Mode::BlackHole`]: a partition.
    pub fn black_hole(&self) {
        self.set_mode(Mode::BlackHole);
    }

    /// [`Mode::DropAnswers`]: requests reach the server, answers are lost.
    pub fn drop_answers(&self) {
        self.set_mode(Mode::DropAnswers);
    }

    /// [`Mode::Delay`]: every chunk `d` late, both ways.
    pub fn delay(&self, d: Duration) {
        self.set_mode(Mode::Delay(d));
    }

    /// Back to [`Mode::Pass`], closing the connections that lost bytes (their clients
    /// reconnect). Returns how many were closed.
    pub fn heal(&self) -> usize {
        self.set_mode(Mode::Pass)
    }

    fn close_poisoned(&self) -> usize {
        let conns = self.shared.conns();
        let mut closed = 0;
        for conn in conns.iter().flat_map(HashMap::values) {
            if conn.poison.any() {
                // The connection task ends (dropping both sockets) on this signal.
                let _ = conn.close.send(true);
                closed += 1;
            }
        }
        self.shared
            .counters
            .reset
            .fetch_add(closed as u64, Ordering::Relaxed);
        closed
    }

    /// The counters so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        let open = self.shared.conns().as_ref().map_or(0, HashMap::len) as u64;
        ProxyStats {
            connections: c.connections.load(Ordering::Relaxed),
            open,
            reset: c.reset.load(Ordering::Relaxed),
            bytes_up: c.bytes_up.load(Ordering::Relaxed),
            bytes_down: c.bytes_down.load(Ordering::Relaxed),
            dropped_up: c.dropped_up.load(Ordering::Relaxed),
            dropped_down: c.dropped_down.load(Ordering::Relaxed),
        }
    }

    /// Waits (at most `limit`) until the client sends something new, so a fault can
    /// start right after a client message (say a lease keep-alive). Returns whether
    /// bytes arrived in time.
    pub async fn wait_for_request(&self, limit: Duration) -> bool {
        let stats = self.stats();
        let before = stats.bytes_up + stats.dropped_up;
        let until = Instant::now() + limit;
        while Instant::now() < until {
            let stats = self.stats();
            if stats.bytes_up + stats.dropped_up > before {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        false
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Taking the map under its lock means no connection can register afterwards.
        let conns = self.shared.conns().take();
        for conn in conns.into_iter().flat_map(HashMap::into_values) {
            let _ = conn.close.send(true);
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Bounded by the proxy's lifetime: `Drop` aborts this task.
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let _ = client.set_nodelay(true);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let poison = Arc::new(Poison::default());
        let (close, closed) = watch::channel(false);
        {
            let mut conns = shared.conns();
            let Some(map) = conns.as_mut() else {
                return; // The proxy was dropped.
            };
            map.insert(
                id,
                Conn {
                    poison: Arc::clone(&poison),
                    close,
                },
            );
        }
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            connection(&shared, client, &poison, closed).await;
            if let Some(map) = shared.conns().as_mut() {
                map.remove(&id);
            }
        });
    }
}

async fn connection(
    shared: &Arc<Shared>,
    client: TcpStream,
    poison: &Arc<Poison>,
    mut closed: watch::Receiver<bool>,
) {
    let connect = tokio::time::timeout(
        UPSTREAM_CONNECT_TIMEOUT,
        TcpStream::connect(shared.upstream),
    );
    let server = tokio::select! {
        connected = connect => match connected {
            Ok(Ok(server)) => server,
            _ => return, // Upstream down: the client sees its connection closed.
        },
        _ = closed.wait_for(|close| *close) => return,
    };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(shared, Direction::Up, poison, client_read, server_write);
    let down = pump(shared, Direction::Down, poison, server_read, client_write);
    tokio::select! {
        _ = async { tokio::try_join!(up, down) } => {}
        _ = closed.wait_for(|close| *close) => {}
    }
    // Both sockets are dropped here: the client sees the connection close.
}

/// Copies one direction: a reader that decides per chunk (forward at a due time, or
/// discard), and a writer that forwards in order at the due times. Ends at EOF (after
/// half-closing the other side) or on the first I/O error.
async fn pump(
    shared: &Arc<Shared>,
    direction: Direction,
    poison: &Arc<Poison>,
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
) -> std::io::Result<()> {
    let (queue, mut queued) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(()); // EOF: dropping `queue` ends the writer.
            }
            if let Some(due) = shared.admit(direction, poison, n)
                && queue.send((due, buf[..n].to_vec())).await.is_err()
            {
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = queued.recv().await {
            tokio::time::sleep_until(due).await;
            to.write_all(&chunk).await?;
            shared.forwarded(direction, chunk.len());
        }
        to.shutdown().await
    };
    tokio::try_join!(read, write).map(|_| ())
}
