use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "orders/<id>", wait = "5s", wait = "10s")]
async fn pay(id: u64) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
