use distlock::{LockError, distributed_lock};

struct OrderId(u64);

#[distributed_lock(key = "orders/<id>")]
async fn pay(id: OrderId) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
