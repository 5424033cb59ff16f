// Every return type with a skipped value, and what a skipped call returns.
use distlock::{LockClient, LockError, distributed_lock};

#[distributed_lock(key = "jobs/a", if_locked = "skip", client = client)]
async fn unit(client: &LockClient) {
    panic!("skipped");
}

#[distributed_lock(key = "jobs/a", if_locked = "skip", client = client)]
async fn option(client: &LockClient) -> Option<u8> {
    Some(1)
}

#[distributed_lock(key = "jobs/a", if_locked = "skip", wait = "20ms", client = client)]
async fn result_unit(client: &LockClient) -> Result<(), LockError> {
    panic!("skipped");
}

#[distributed_lock(key = "jobs/a", if_locked = "skip", hold_at_least = "1s", client = client)]
async fn result_option(client: &LockClient) -> Result<Option<u8>, LockError> {
    Ok(Some(1))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let client = LockClient::memory();
    let held = client.acquire("jobs/a").await.unwrap();
    unit(&client).await;
    assert_eq!(option(&client).await, None);
    assert!(matches!(result_unit(&client).await, Ok(())));
    assert!(matches!(result_option(&client).await, Ok(None)));
    held.release().await.unwrap();
    assert_eq!(option(&client).await, Some(1));
}
