use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "orders/<id>", if_locked = "maybe", on_lost = "ignore")]
async fn pay(id: u64) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
