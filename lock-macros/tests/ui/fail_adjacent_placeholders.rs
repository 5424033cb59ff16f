use distlock::{LockError, distributed_lock};

// `<a>-<b>` with a = "1-2", b = "3" and a = "1", b = "2-3" would give one key.
#[distributed_lock(key = "pairs/<a>-<b>")]
async fn pair(a: &str, b: &str) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
