use distlock::{LockError, distributed_lock};

#[distributed_lock(ttl = "30s", wait = "5s")]
async fn pay(id: u64) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
