// An application error that converts from LockError; all the options at once.
use distlock::{LockClient, LockError, distributed_lock};

#[derive(Debug)]
enum AppError {
    Locked(LockError),
    Invalid,
}

impl From<LockError> for AppError {
    fn from(error: LockError) -> Self {
        AppError::Locked(error)
    }
}

#[distributed_lock(
    key = "orders/<id>",
    ttl = "10s",
    wait = "50ms",
    if_locked = "wait",
    hold_at_least = "0s",
    on_lost = "continue",
    renew = true,
    client = client,
)]
async fn pay(client: &LockClient, id: u64) -> Result<u64, AppError> {
    if id == 0 {
        return Err(AppError::Invalid);
    }
    let amount = id.checked_mul(2).ok_or(AppError::Invalid)?;
    Ok(amount)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let client = LockClient::memory();
    assert_eq!(pay(&client, 21).await.unwrap(), 42);
    assert!(matches!(pay(&client, 0).await, Err(AppError::Invalid)));
    let held = client.acquire("orders/5").await.unwrap();
    assert!(matches!(pay(&client, 5).await, Err(AppError::Locked(LockError::Timeout { .. }))));
    held.release().await.unwrap();
}
