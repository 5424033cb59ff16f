use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "orders/<id>", if_locked = "error", wait = "5s")]
async fn pay(id: u64) -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "jobs/report", ttl = "10s", renew = false, hold_at_least = "1m")]
async fn report() -> Result<(), LockError> {
    Ok(())
}

#[distributed_lock(key = "orders/<id>", if_locked = "wait", wait = "0s")]
async fn refund(id: u64) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
