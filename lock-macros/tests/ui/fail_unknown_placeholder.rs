use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "orders/<order_id>")]
async fn pay(id: u64, amount: u64) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
