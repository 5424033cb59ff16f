use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "orders/<id>", ttl = "10ms", renew = "yes")]
async fn pay(id: u64) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
