// Borrowed returns, `mut` arguments, and arguments whose names the expansion
// might have used itself (`key`, `client`, `options`): the expansion's own
// variables are invisible to the body and cannot be shadowed by it.
use distlock::{LockClient, LockError, distributed_lock};

#[distributed_lock(key = "docs/<key>", client = client)]
async fn first_word<'a>(
    client: &LockClient,
    key: &'a str,
    mut options: Vec<&'a str>,
) -> Result<&'a str, LockError> {
    options.push(key);
    let __distlock_key = "the user's own variable";
    assert_eq!(__distlock_key.len(), 23);
    Ok(key.split('-').next().unwrap_or(key))
}

trait Store {
    // A default method body in a trait.
    #[distributed_lock(key = "stores/<name>", client = self.client())]
    async fn touch(&self, name: &str) -> Option<String> {
        distlock::current().map(|lock| lock.key().to_owned())
    }

    fn client(&self) -> &LockClient;
}

struct Memory(LockClient);

impl Store for Memory {
    fn client(&self) -> &LockClient {
        &self.0
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let client = LockClient::memory();
    assert_eq!(first_word(&client, "hello-world", Vec::new()).await.unwrap(), "hello");
    let store = Memory(client);
    assert_eq!(store.touch("a b").await.as_deref(), Some("stores/a%20b"));
}
