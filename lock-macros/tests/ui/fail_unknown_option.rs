use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "orders/<id>", tll = "30s", retries = 3)]
async fn pay(id: u64) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
