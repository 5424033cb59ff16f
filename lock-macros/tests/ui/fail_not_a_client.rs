use distlock::{LockError, distributed_lock};

struct State {
    locks: String,
}

#[distributed_lock(key = "orders/<id>", client = state.locks)]
async fn pay(state: &State, id: u64) -> Result<(), LockError> {
    Ok(())
}

fn main() {}
