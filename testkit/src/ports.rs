//! Free loopback ports for servers a test starts itself.

use std::net::TcpListener;

/// `count` distinct free loopback ports. The listeners are held until all are
/// chosen, so one call never returns the same port twice. Another process may take a
/// port between this call and the server's bind; the harnesses then fail to start and
/// say so.
///
/// ```
/// let ports = testkit::ports::free_ports(2);
/// assert_ne!(ports[0], ports[1]);
/// ```
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
