use distlock::{LockError, distributed_lock};

struct Shop;

impl Shop {
    #[distributed_lock(key = "shops/<self.name>")]
    async fn open(name: &str) -> Result<(), LockError> {
        Ok(())
    }
}

fn main() {}
