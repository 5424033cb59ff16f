//! Serves the order service of this package's library on 127.0.0.1:3000 (or `$PORT`),
//! with the in-memory lock store. See the library's docs for the routes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_orders::{AppState, serve};
use distlock::LockClient;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(3000);
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("orders service on http://{}", listener.local_addr()?);
    let state = AppState {
        locks: LockClient::memory(),
        ledger: Arc::default(),
        work: Duration::from_millis(500),
    };
    serve(listener, state).await?;
    Ok(())
}
