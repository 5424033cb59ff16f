use distlock::distributed_lock;

#[distributed_lock(key = "counters/<name>")]
async fn next(name: &str) -> u64 {
    1
}

fn main() {}
