use distlock::{LockClient, LockError, distributed_lock};

struct Path<T>(T);

struct Order {
    shop: u32,
    id: u64,
}

#[distributed_lock(key = "shops/<shop>/orders/<id>/<line>", client = client)]
async fn ship(
    client: &LockClient,
    Order { shop, id }: Order,
    Path(line): Path<u16>,
) -> Result<String, LockError> {
    Ok(distlock::current().unwrap().key().to_owned())
}

#[distributed_lock(key = "grid/<x>:<y>", client = client)]
async fn cell(client: &LockClient, (x, y): (i32, i32)) -> Option<String> {
    distlock::current().map(|lock| lock.key().to_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let client = LockClient::memory();
    let key = ship(&client, Order { shop: 4, id: 9 }, Path(2)).await.unwrap();
    assert_eq!(key, "shops/4/orders/9/2");
    assert_eq!(cell(&client, (-1, 2)).await.as_deref(), Some("grid/-1:2"));
}
