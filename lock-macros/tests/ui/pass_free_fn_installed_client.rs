// The default client: the one installed with `distlock::install`.
use distlock::{LockClient, LockError, distributed_lock};

/// Docs and attributes of the fn stay as written.
#[distributed_lock(key = "orders/<id>", ttl = "30s", wait = "5s")]
#[must_use = "the receipt says whether it was paid"]
pub async fn pay(id: u64, amount: u64) -> Result<String, LockError> {
    let token = distlock::current().map(|lock| lock.token());
    Ok(format!("paid {amount} for order {id} with token {token:?}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    distlock::install(LockClient::memory()).unwrap();
    let receipt = pay(7, 100).await.unwrap();
    assert!(receipt.starts_with("paid 100 for order 7 with token Some("), "{receipt}");
}
