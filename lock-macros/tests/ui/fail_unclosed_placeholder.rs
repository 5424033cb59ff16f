use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "orders/<id")]
async fn pay(id: u64) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
