use std::sync::Arc;

use distlock::{LockClient, LockError, distributed_lock};

struct Account {
    tenant: String,
    id: (u32, u32),
    locks: Arc<LockClient>,
}

impl Account {
    #[distributed_lock(key = "tenants/<self.tenant>/accounts/<self.id.1>", client = self.locks)]
    async fn close(&self) -> Result<String, LockError> {
        Ok(distlock::current().unwrap().key().to_owned())
    }

    #[distributed_lock(key = "tenants/<self.tenant>/moves", client = self.locks.clone())]
    async fn rename(self: Arc<Self>, name: String) -> Result<String, LockError> {
        Ok(format!("{} -> {name}", self.tenant))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let account = Arc::new(Account {
        tenant: "acme".into(),
        id: (1, 42),
        locks: Arc::new(LockClient::memory()),
    });
    assert_eq!(account.close().await.unwrap(), "tenants/acme/accounts/42");
    assert_eq!(account.rename("globex".into()).await.unwrap(), "acme -> globex");
}
