use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "jobs/count", if_locked = "skip")]
async fn count() -> Result<u32, LockError> {
    Ok(3)
}

fn main() {}
