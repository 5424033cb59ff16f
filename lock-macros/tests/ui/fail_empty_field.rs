use distlock::{LockError, distributed_lock};

struct Order {
    id: u64,
}

#[distributed_lock(key = "orders/<order.>")]
async fn pay(order: &Order) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
