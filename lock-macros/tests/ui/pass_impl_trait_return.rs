use std::fmt::{Debug, Display};

use distlock::{LockClient, LockError, distributed_lock};

#[distributed_lock(key = "reports/<year>", client = client)]
async fn report(client: &LockClient, year: u16) -> Result<impl Display, LockError> {
    Ok(format!("report {year}"))
}

// The return contract is checked on what the body returns.
#[distributed_lock(key = "reports/latest", client = client)]
async fn latest(client: &LockClient) -> impl Debug {
    Ok::<_, LockError>(2026)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let client = LockClient::memory();
    assert_eq!(report(&client, 2026).await.unwrap().to_string(), "report 2026");
    assert_eq!(format!("{:?}", latest(&client).await), "Ok(2026)");
}
