//! Free loopback ports for the real-server harnesses (`etcd.rs`, `ravendb.rs`).
//! Included next to them: `mod support { pub mod etcd; pub mod ports; }`, or at
//! a bench's root with `#[path]`.

use std::net::TcpListener;

/// `count` distinct free loopback ports. The listeners are held until all are
/// chosen, so one call never returns the same port twice.
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"))
        })
        .collect();
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .unwrap_or_else(|e| panic!("no local address: {e}"))
                .port()
        })
        .collect()
}
