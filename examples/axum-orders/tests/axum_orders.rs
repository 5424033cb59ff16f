//! The order service (`src/lib.rs`) served on a loopback port: concurrent requests
//! for one order run one at a time, requests for different orders run in
//! parallel, and a lock that stays busy answers 409 with a JSON body.

#![allow(clippy::unwrap_used)] // in a test, a failed unwrap is the failure report

use axum_orders as example;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use distlock::LockClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Starts the example on 127.0.0.1 (a free port) with `work` per payment.
async fn start(work: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = example::AppState {
        locks: LockClient::memory(),
        ledger: Arc::default(),
        work,
    };
    tokio::spawn(example::serve(listener, state));
    addr
}

/// One HTTP/1.1 request on its own connection: (status, JSON body).
async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let json = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
    };
    (status, json)
}

async fn pay_concurrently(addr: SocketAddr, orders: &[u64]) -> Vec<(u16, serde_json::Value)> {
    let calls: Vec<_> = orders
        .iter()
        .map(|&id| {
            tokio::spawn(async move { request(addr, "POST", &format!("/orders/{id}/pay")).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_of_one_order_run_one_at_a_time() {
    let work = Duration::from_millis(150);
    let addr = start(work).await;
    let started = Instant::now();
    let answers = pay_concurrently(addr, &[1, 1, 1, 1]).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    assert!(
        started.elapsed() >= work * 4,
        "4 payments of one order overlapped"
    );

    let mut tokens: Vec<u64> = answers
        .iter()
        .map(|(_, body)| body["token"].as_u64().unwrap())
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 4, "each payment had its own fencing token");

    let (status, book) = request(addr, "GET", "/orders/1").await;
    assert_eq!(status, 200);
    assert_eq!(book["payments"], 4);
    assert_eq!(book["max_concurrent"], 1, "{book}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_of_different_orders_run_in_parallel() {
    let work = Duration::from_millis(300);
    let addr = start(work).await;
    let started = Instant::now();
    let answers = pay_concurrently(addr, &[11, 12, 13, 14]).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < work * 2,
        "4 different orders took {elapsed:?}: they did not run in parallel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_order_answers_409_with_json() {
    // A payment that outlasts the 2 s `wait` of the next one.
    let addr = start(Duration::from_millis(2600)).await;
    let first = tokio::spawn(async move { request(addr, "POST", "/orders/9/pay").await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    // `if_locked = "error"`: at once.
    let started = Instant::now();
    let (status, body) = request(addr, "POST", "/orders/9/refund").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "order_busy");
    assert!(
        body["message"].as_str().unwrap().contains("orders/9"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_millis(500));

    // `wait = "2s"`: after waiting 2 s.
    let started = Instant::now();
    let (status, body) = request(addr, "POST", "/orders/9/pay").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "order_busy");
    assert!(
        body["message"].as_str().unwrap().contains("timed out"),
        "{body}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));

    assert_eq!(first.await.unwrap().0, 200);
    // Free again: the refund goes through.
    assert_eq!(request(addr, "POST", "/orders/9/refund").await.0, 204);
}
