// Every problem of the attribute is reported at once, and the fn is still
// emitted: `main` calls it without a "cannot find function" error.
use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "orders/<nope>/<>", ttl = "forever", if_locked = "later", colour = "red")]
async fn pay(id: u64) -> Result<(), LockError> {
    Ok(())
}

fn main() {
    let _future = pay(1);
}
