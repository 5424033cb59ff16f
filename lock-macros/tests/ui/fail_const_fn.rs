use distlock::distributed_lock;

#[distributed_lock(key = "config")]
const fn limit() -> Option<u32> {
    Some(3)
}

fn main() {}
