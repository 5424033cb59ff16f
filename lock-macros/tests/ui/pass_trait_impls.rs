// Native `async fn` in traits, and `#[async_trait]` impls (object-safe traits).
use distlock::{LockClient, LockError, distributed_lock};

trait Jobs {
    async fn run(&self, job: &str) -> Result<String, LockError>;
}

#[async_trait::async_trait]
trait DynJobs {
    async fn run(&self, job: &str, (shard, _): (u8, u8)) -> Result<String, LockError>;
}

struct Worker {
    locks: LockClient,
}

impl Jobs for Worker {
    #[distributed_lock(key = "jobs/<job>", client = self.locks)]
    async fn run(&self, job: &str) -> Result<String, LockError> {
        Ok(distlock::current().unwrap().key().to_owned())
    }
}

#[async_trait::async_trait]
impl DynJobs for Worker {
    #[distributed_lock(key = "jobs/<job>/<shard>", client = self.locks, if_locked = "error")]
    async fn run(&self, job: &str, (shard, _): (u8, u8)) -> Result<String, LockError> {
        Ok(distlock::current().unwrap().key().to_owned())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let worker = Worker {
        locks: LockClient::memory(),
    };
    assert_eq!(Jobs::run(&worker, "mail").await.unwrap(), "jobs/mail");
    let boxed: Box<dyn DynJobs + Send + Sync> = Box::new(worker);
    assert_eq!(boxed.run("mail", (3, 0)).await.unwrap(), "jobs/mail/3");
}
