use std::fmt::Display;

use distlock::{LockClient, LockError, distributed_lock};

#[distributed_lock(key = "items/<id>", client = client)]
async fn describe<T, I>(client: &LockClient, id: I, item: T) -> Result<String, LockError>
where
    T: Display + Send,
    I: Display,
{
    Ok(format!("{id}: {item}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let client = LockClient::memory();
    assert_eq!(describe(&client, 3, "lamp").await.unwrap(), "3: lamp");
    assert_eq!(describe(&client, "x/y", 2.5).await.unwrap(), "x/y: 2.5");
}
