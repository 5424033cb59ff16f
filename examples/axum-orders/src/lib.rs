//! An order service whose handlers run under a cluster-wide lock per order.
//!
//! `POST /orders/{id}/pay` waits up to 2 s for the lock `orders/{id}`;
//! `POST /orders/{id}/refund` does not wait. Either answers `409 Conflict`
//! with a JSON body when the order stays locked. `GET /orders/{id}` shows the
//! order's ledger, including the most payments that ever ran at once (always 1).
//!
//! ```text
//! cargo run -p axum-orders                 # listens on 127.0.0.1:3000 (or $PORT)
//! curl -X POST localhost:3000/orders/7/pay & curl -X POST localhost:3000/orders/7/pay
//! curl localhost:3000/orders/7
//! ```
//!
//! Every instance of the service shares the lock store; here it is the
//! in-memory one (one process). With several instances, build the client on
//! etcd or RavenDB instead: the handlers do not change.
//!
//! The service is this library ([`app`], [`serve`]); `src/main.rs` serves it and
//! `tests/axum_orders.rs` drives it over HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use distlock::{LockClient, LockError, distributed_lock};
use serde::Serialize;
use tokio::net::TcpListener;

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    /// The lock client (shared by every handler; cheap to clone).
    pub locks: LockClient,
    /// The orders' ledger: the resource the lock protects.
    pub ledger: Arc<Ledger>,
    /// How long a payment takes (the work done under the lock).
    pub work: Duration,
}

/// Payments per order, and how many ever ran at once.
#[derive(Default)]
pub struct Ledger {
    orders: Mutex<HashMap<u64, OrderBook>>,
}

/// One order's line in the ledger.
#[derive(Clone, Copy, Default, Serialize)]
pub struct OrderBook {
    /// Payments made.
    pub payments: u32,
    /// Payments in progress now.
    pub in_progress: u32,
    /// The most payments ever in progress at once.
    pub max_concurrent: u32,
    /// The highest fencing token a write came with.
    pub last_token: u64,
}

impl Ledger {
    fn with<T>(&self, id: u64, change: impl FnOnce(&mut OrderBook) -> T) -> T {
        let mut orders = self.orders.lock().unwrap_or_else(PoisonError::into_inner);
        change(orders.entry(id).or_default())
    }
}

/// A payment receipt.
#[derive(Serialize)]
pub struct Receipt {
    order: u64,
    payments: u32,
    token: u64,
}

/// Handler errors, as JSON responses.
#[derive(Debug)]
pub enum ApiError {
    /// The lock could not be taken or was lost.
    Lock(LockError),
    /// A write came with an older fencing token than one already applied.
    StaleToken,
}

impl From<LockError> for ApiError {
    fn from(error: LockError) -> Self {
        ApiError::Lock(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Lock(error) if error.is_contention() => (StatusCode::CONFLICT, "order_busy"),
            ApiError::Lock(LockError::Unavailable { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "lock_backend_unavailable")
            }
            ApiError::Lock(_) => (StatusCode::INTERNAL_SERVER_ERROR, "lock_failed"),
            ApiError::StaleToken => (StatusCode::CONFLICT, "stale_token"),
        };
        let message = match &self {
            ApiError::Lock(error) => error.to_string(),
            ApiError::StaleToken => "a newer holder already wrote this order".to_owned(),
        };
        let body = serde_json::json!({ "error": code, "message": message });
        (status, Json(body)).into_response()
    }
}

/// Pays an order; waits up to 2 s for another payment of the same order.
#[distributed_lock(key = "orders/<id>", wait = "2s", client = state.locks)]
async fn pay(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<Receipt>, ApiError> {
    let token = distlock::current().map_or(0, |lock| lock.token());
    state.ledger.with(id, |book| {
        book.in_progress += 1;
        book.max_concurrent = book.max_concurrent.max(book.in_progress);
    });
    tokio::time::sleep(state.work).await;
    // The fenced write: rejected if a newer holder already wrote.
    let payments = state.ledger.with(id, |book| {
        book.in_progress -= 1;
        if token < book.last_token {
            return Err(ApiError::StaleToken);
        }
        book.last_token = token;
        book.payments += 1;
        Ok(book.payments)
    })?;
    Ok(Json(Receipt {
        order: id,
        payments,
        token,
    }))
}

/// Refunds an order, or answers 409 at once if the order is being worked on.
#[distributed_lock(key = "orders/<id>", if_locked = "error", client = state.locks)]
async fn refund(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    state
        .ledger
        .with(id, |book| book.payments = book.payments.saturating_sub(1));
    Ok(StatusCode::NO_CONTENT)
}

async fn order(State(state): State<AppState>, Path(id): Path<u64>) -> Json<OrderBook> {
    Json(state.ledger.with(id, |book| *book))
}

/// The service's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/orders/{id}", get(order))
        .route("/orders/{id}/pay", post(pay))
        .route("/orders/{id}/refund", post(refund))
        .with_state(state)
}

/// Serves the app on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(listener, app(state)).await
}
