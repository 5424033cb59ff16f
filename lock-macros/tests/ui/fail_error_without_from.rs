use distlock::distributed_lock;

#[derive(Debug)]
enum AppError {
    NotFound,
}

#[distributed_lock(key = "orders/<id>")]
async fn pay(id: u64) -> Result<(), AppError> {
    Err(AppError::NotFound)
}

fn main() {}
