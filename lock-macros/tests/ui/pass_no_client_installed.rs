// Without `distlock::install` and without `client = ...`, the call fails at run
// time with a Config error that says what to do.
use distlock::{LockError, distributed_lock};

#[distributed_lock(key = "orders/<id>")]
async fn pay(id: u64) -> Result<(), LockError> {
    panic!("the body must not run without a lock");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    match pay(1).await {
        Err(error @ LockError::Config { .. }) => {
            assert!(error.to_string().contains("distlock::install"), "{error}");
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
}
