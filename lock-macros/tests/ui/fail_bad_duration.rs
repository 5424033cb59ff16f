use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "orders/<id>", ttl = "30 seconds please", wait = "soon", hold_at_least = 5)]
async fn pay(id: u64) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
