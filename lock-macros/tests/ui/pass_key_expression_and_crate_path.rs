// `key = <expression>` is used as it is; `crate = "..."` names distlock
// through another path (a re-export).
mod reexport {
    pub use distlock as locks;
}

use distlock::{LockClient, LockError, distributed_lock};

#[distributed_lock(key = format!("batch-{}", ids.len()), client = client, crate = "crate::reexport::locks")]
async fn batch(client: &LockClient, ids: Vec<u64>) -> Result<String, LockError> {
    Ok(distlock::current().unwrap().key().to_owned())
}

#[distributed_lock(key = name, client = client)]
async fn named(client: &LockClient, name: &str) -> Result<String, LockError> {
    Ok(distlock::current().unwrap().key().to_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let client = LockClient::memory();
    assert_eq!(batch(&client, vec![1, 2, 3]).await.unwrap(), "batch-3");
    assert_eq!(named(&client, "raw/key").await.unwrap(), "raw/key");
}
