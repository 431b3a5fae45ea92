//! The flash-sale gate recovering from what crashes and Redis leave behind,
//! on the real PostgreSQL, Redis and broker: reservations whose request
//! died before its commit, single keys evicted, and the relay under a
//! stopped or slow broker.

mod common;

use std::time::{Duration, Instant};

use common::{call, Sale};
use paystream::domain::UserId;
use paystream::events::{OrderEvent, EVENT_VERSION};
use paystream::flash::{self, Reservation};
use paystream::store::orders;
use order::OrderApi;
use paystream::config::Config;
use paystream::testing::{bulk_users, fresh_config, PrivateBroker};
use paystream::Platform;
use uuid::Uuid;

const PRICE: i64 = 129_000;
const TTL_MS: u64 = 1_000;

/// A sale whose reservations go stale after [`TTL_MS`].
async fn short_ttl_sale() -> Sale {
    let mut config = fresh_config().await;
    config.flash.reservation_ttl_ms = TTL_MS;
    config.flash.commit_deadline_ms = 200;
    Sale::with_config(config).await
}

/// What a request that died right after the gate leaves: a reservation.
async fn reserve_and_die(sale: &Sale, product: &str, user: UserId) -> flash::Held {
    let product = Uuid::parse_str(product).unwrap();
    match flash::reserve(&sale.order.platform.redis, product, user.0, time::OffsetDateTime::now_utc()).await.unwrap() {
        Reservation::Reserved(held) => held,
        Reservation::NotLoaded => panic!("gate should be loaded"),
    }
}

#[tokio::test]
async fn a_reservation_left_by_a_dead_request_is_returned_and_the_buyer_buys_again() {
    let sale = short_ttl_sale().await;
    let users = bulk_users(&sale.order.platform, 2).await;
    let product = sale.product(2, PRICE, -60, 3_600).await;
    assert_eq!(remaining(&sale, &product).await, 2, "loads the gate");
    reserve_and_die(&sale, &product, users[0].0).await;
    assert_eq!(remaining(&sale, &product).await, 1);

    // Younger than the TTL: the request could still be committing.
    let report = sale.order.relay().await.unwrap();
    assert_eq!((report.reservations_returned, report.reservations_forgotten), (0, 0));
    assert_eq!(remaining(&sale, &product).await, 1);

    tokio::time::sleep(Duration::from_millis(TTL_MS + 100)).await;
    let report = sale.order.relay().await.unwrap();
    assert_eq!((report.reservations_returned, report.reservations_forgotten), (1, 0));
    assert_eq!(remaining(&sale, &product).await, 2, "the unit is back");
    let again = sale.order.relay().await.unwrap();
    assert_eq!(again.reservations_returned, 0, "returned once");

    // The buyer is no longer a buyer: the order goes through.
    let (status, body) = sale.order(&users[0].1, &product, None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(remaining(&sale, &product).await, 1);
    assert_quiet_invariant(&sale, &product, 2).await;
}

#[tokio::test]
async fn a_stale_reservation_with_an_order_is_only_forgotten() {
    let sale = short_ttl_sale().await;
    let users = bulk_users(&sale.order.platform, 2).await;
    let product = sale.product(3, PRICE, -60, 3_600).await;
    remaining(&sale, &product).await;
    // The request committed its order and died before dropping the record.
    let held = reserve_and_die(&sale, &product, users[0].0).await;
    let event = OrderEvent {
        v: EVENT_VERSION,
        order_id: Uuid::new_v4(),
        user_id: held.user,
        product_id: held.product,
        amount: PRICE,
        currency: "KRW".into(),
        ordered_at: time::OffsetDateTime::now_utc(),
    };
    orders::insert_with_outbox(&sale.order.platform.pg.get().await.unwrap(), &[&event]).await.unwrap();

    tokio::time::sleep(Duration::from_millis(TTL_MS + 100)).await;
    let report = sale.order.relay().await.unwrap();
    assert_eq!((report.reservations_returned, report.reservations_forgotten), (0, 1));
    assert_eq!(remaining(&sale, &product).await, 2, "the unit stays sold");
    let (status, body) = sale.order(&users[0].1, &product, None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("ALREADY_PURCHASED")));
    assert_eq!(sale.scalar("SELECT count(*) FROM orders").await, 1);
    assert_quiet_invariant(&sale, &product, 3).await;
}

#[tokio::test]
async fn a_retry_takes_over_its_own_dead_reservation_at_once() {
    let sale = Sale::new().await;
    let users = bulk_users(&sale.order.platform, 2).await;
    let product = sale.product(1, PRICE, -60, 3_600).await;
    remaining(&sale, &product).await;
    reserve_and_die(&sale, &product, users[0].0).await;
    // The last unit is reserved by the dead request: others are sold out ...
    let (status, body) = sale.order(&users[1].1, &product, None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("SOLD_OUT")));
    // ... and the buyer's retry is not refused as a repeat buyer: it adopts the reservation.
    let (status, body) = sale.order(&users[0].1, &product, Some("retry")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(remaining(&sale, &product).await, 0, "one unit, taken once");
    let (status, body) = sale.order(&users[0].1, &product, None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("ALREADY_PURCHASED")));
    assert_eq!(sale.scalar("SELECT count(*) FROM orders").await, 1);
    let reservations = recorded_reservations(&sale, &product).await;
    assert!(reservations.is_empty(), "the committed order's record is dropped: {reservations:?}");
}

#[tokio::test]
async fn any_single_key_evicted_alone_is_treated_as_not_loaded_and_rebuilt() {
    let sale = Sale::new().await;
    let users = bulk_users(&sale.order.platform, 16).await;
    for (k, name) in ["meta", "remaining", "buyers", "reservations"].iter().enumerate() {
        let product = sale.product(5, PRICE, -60, 3_600).await;
        let buyers = &users[k * 4..k * 4 + 4];
        for (_, token) in &buyers[..3] {
            assert_eq!(sale.order(token, &product, None).await.0, 202);
        }
        let keys = flash::key_names(&sale.order.platform.redis, Uuid::parse_str(&product).unwrap());
        let mut conn = sale.order.platform.redis.conn().await.unwrap();
        let deleted: i64 = redis::cmd("DEL").arg(&keys[k]).query_async(&mut conn).await.unwrap();
        assert_eq!(deleted, 1, "{name} existed (a sentinel keeps the sets alive)");

        // No false SOLD_OUT, no second purchase, stock still right.
        assert_eq!(remaining(&sale, &product).await, 2, "{name}: remaining rebuilt from PostgreSQL");
        let (status, body) = sale.order(&buyers[0].1, &product, None).await;
        assert_eq!((status, body["code"].as_str()), (409, Some("ALREADY_PURCHASED")), "{name}");
        assert_eq!(sale.scalar(&format!("SELECT count(*) FROM orders WHERE product_id = '{product}'")).await, 3, "{name}");
        // Now through the gate itself, not the read path that rebuilt it.
        let _: i64 = redis::cmd("DEL").arg(&keys[k]).query_async(&mut conn).await.unwrap();
        let (status, body) = sale.order(&buyers[1].1, &product, None).await;
        assert_eq!((status, body["code"].as_str()), (409, Some("ALREADY_PURCHASED")), "{name}: buyers rebuilt");
        let _: i64 = redis::cmd("DEL").arg(&keys[k]).query_async(&mut conn).await.unwrap();
        assert_eq!(sale.order(&buyers[3].1, &product, None).await.0, 202, "{name}: stock left, so not sold out");
        let existing: i64 = redis::cmd("EXISTS").arg(&keys).query_async(&mut conn).await.unwrap();
        assert_eq!(existing, 4, "{name}: every key is back");
        assert_eq!(remaining(&sale, &product).await, 1, "{name}");
        assert_quiet_invariant(&sale, &product, 5).await;
    }
}

#[tokio::test]
async fn the_relay_leaves_fresh_rows_to_the_request_and_takes_a_bounded_batch_per_run() {
    let mut config = fresh_config().await;
    config.flash.relay_batch_max = 5;
    config.flash.relay_grace_ms = 3_000;
    let sale = Sale::with_config(config).await;
    let offline = order_api_without_broker(&sale.config);
    let users = bulk_users(&sale.order.platform, 12).await;
    let product = sale.product(20, PRICE, -60, 3_600).await;
    for (_, token) in &users {
        assert_eq!(order_via(&offline, token, &product).await, 202);
    }
    assert_eq!(unpublished(&sale).await, 12);

    assert_eq!(sale.order.relay().await.unwrap().published, 0, "rows within the grace period are the request's");
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let mut runs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while unpublished(&sale).await > 0 {
        assert!(Instant::now() < deadline, "the relay did not drain the outbox: {runs:?}");
        runs.push(sale.order.relay().await.unwrap().published);
    }
    assert!(runs.iter().all(|n| *n <= 5), "at most RELAY_BATCH_MAX per run: {runs:?}");
    assert_eq!(runs.iter().sum::<usize>(), 12, "{runs:?}");
    let events = sale.events(12).await;
    let ids: std::collections::HashSet<_> = events.iter().map(|r| r.key.clone()).collect();
    assert_eq!(ids.len(), 12, "every order's event is on the topic");
}

#[tokio::test]
async fn with_the_broker_stopped_a_relay_run_ends_by_its_deadline_and_never_blocks_the_request_path() {
    let mut broker = PrivateBroker::start();
    let mut config = fresh_config().await;
    config.kafka.bootstrap_servers = broker.bootstrap();
    config.kafka.publish_timeout_ms = 4_000;
    config.flash.relay_grace_ms = 300;
    config.flash.relay_deadline_ms = 1_500;
    let sale = std::sync::Arc::new(Sale::with_config(config).await);
    let users = bulk_users(&sale.order.platform, 11).await;
    let product = sale.product(20, PRICE, -60, 3_600).await;
    broker.stop();
    let mut accepted = Vec::new();
    for (_, token) in &users[..10] {
        let (status, body) = sale.order(token, &product, None).await;
        assert_eq!(status, 202);
        accepted.push(Uuid::parse_str(body["order_id"].as_str().unwrap()).unwrap());
    }
    tokio::time::sleep(Duration::from_millis(400)).await;

    // A relay run holds the old rows while it waits for the broker ...
    let relay = {
        let sale = std::sync::Arc::clone(&sale);
        tokio::spawn(async move {
            let started = Instant::now();
            (sale.order.relay().await, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... and the request path's delete skips them instead of waiting.
    let started = Instant::now();
    let deleted = orders::delete_published_now(&sale.order.platform.pg.get().await.unwrap(), &accepted).await.unwrap();
    assert_eq!(deleted, 0, "rows the relay holds are skipped");
    assert!(started.elapsed() < Duration::from_millis(500), "the delete waited {:?}", started.elapsed());
    // A whole order meanwhile answers within its own bounds.
    let started = Instant::now();
    assert_eq!(sale.order(&users[10].1, &product, None).await.0, 202);
    assert!(started.elapsed() < Duration::from_millis(1_000), "an order took {:?} during a relay run", started.elapsed());

    let (report, took) = relay.await.unwrap();
    assert_eq!(report.unwrap().published, 0);
    assert!(took < Duration::from_millis(1_500 + 1_000), "the run outlived its deadline: {took:?}");
    assert_eq!(unpublished(&sale).await, 11, "nothing cleared without an acknowledgement");

    // Broker back: the next runs make progress.
    broker.restart();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while unpublished(&sale).await > 0 {
        assert!(Instant::now() < deadline, "the relay made no progress after the broker came back");
        sale.order.relay().await.unwrap();
    }
}

#[tokio::test]
async fn with_a_slow_broker_concurrent_publishes_finish_within_the_deadline() {
    // Every answer of the broker is held back by 200 ms (a proxy it
    // advertises as its address): one-by-one publishing of 40 events would
    // need more than 8 s; the run has 3 s.
    let slow = SlowBroker::start(Duration::from_millis(200));
    let mut config = fresh_config().await;
    config.kafka.bootstrap_servers = slow.bootstrap();
    config.kafka.publish_timeout_ms = 5_000;
    config.flash.relay_grace_ms = 300;
    config.flash.relay_deadline_ms = 3_000;
    config.flash.relay_concurrency = 16;
    let sale = Sale::with_config(config).await;
    let offline = order_api_without_broker(&sale.config);
    let users = bulk_users(&sale.order.platform, 40).await;
    let product = sale.product(50, PRICE, -60, 3_600).await;
    for (_, token) in &users {
        assert_eq!(order_via(&offline, token, &product).await, 202);
    }
    let left = unpublished(&sale).await;
    assert_eq!(left, 40, "every event was left to the relay");
    // The relay's environment has published before, so its producer is
    // connected: through the 200 ms proxy, connecting (versions, metadata,
    // a producer id) would take much of the run's 3 s by itself.
    let producer = sale.order.platform.producer().await.unwrap();
    let warm_up = paystream::kafka::OutgoingRecord { topic: &sale.config.kafka.order_topic, key: b"warm-up", payload: b"{}", headers: &[] };
    producer.publish(warm_up).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    let report = sale.order.relay().await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(3_000 + 1_000), "run took {took:?}");
    assert_eq!(report.published as i64, left, "all of them in one run, in {took:?}");
    assert_eq!(unpublished(&sale).await, 0);
}

// ---- helpers ----

/// The order function of an environment whose broker never answers (nothing
/// listens at its address): its orders commit and answer at once (it runs
/// several invocations at once, so it does not wait for its publisher),
/// and their events fail after a second and stay in the outbox for the relay.
fn order_api_without_broker(config: &Config) -> OrderApi {
    let mut config = config.clone();
    config.kafka.bootstrap_servers = "127.0.0.1:9".into();
    config.kafka.publish_timeout_ms = 1_000;
    config.invocations_per_environment = 8;
    OrderApi::new(Platform::from_config("order", config).unwrap())
}

async fn order_via(api: &OrderApi, token: &str, product: &str) -> u16 {
    call(api, "POST", "/orders", token, None, Some(serde_json::json!({ "product_id": product }))).await.0
}

async fn remaining(sale: &Sale, product: &str) -> i64 {
    let (status, body) = call(sale.order.as_ref(), "GET", &format!("/products/{product}"), &sale.admin, None, None).await;
    assert_eq!(status, 200, "{body}");
    body["remaining"].as_i64().unwrap()
}

async fn unpublished(sale: &Sale) -> i64 {
    sale.scalar("SELECT count(*) FROM order_outbox").await
}

async fn recorded_reservations(sale: &Sale, product: &str) -> Vec<(String, String)> {
    let keys = flash::key_names(&sale.order.platform.redis, Uuid::parse_str(product).unwrap());
    let mut conn = sale.order.platform.redis.conn().await.unwrap();
    let all: Vec<(String, String)> = redis::cmd("ZRANGE").arg(&keys[3]).arg(0).arg(-1).arg("WITHSCORES").query_async(&mut conn).await.unwrap();
    all.into_iter().filter(|(member, _)| member != "-").collect()
}

/// Once quiet (no request in flight, nothing left to reconcile): the gate's
/// remaining plus the orders not FAILED is the stock, and its buyers are
/// exactly the users with an order.
async fn assert_quiet_invariant(sale: &Sale, product: &str, stock: i64) {
    let taken = sale.scalar(&format!("SELECT count(*) FROM orders WHERE product_id = '{product}' AND status <> 'FAILED'")).await;
    assert_eq!(remaining(sale, product).await + taken, stock, "remaining + orders = stock");
    let keys = flash::key_names(&sale.order.platform.redis, Uuid::parse_str(product).unwrap());
    let mut conn = sale.order.platform.redis.conn().await.unwrap();
    let members: Vec<String> = redis::cmd("SMEMBERS").arg(&keys[2]).query_async(&mut conn).await.unwrap();
    let mut gate: Vec<String> = members.into_iter().filter(|m| m != "-").collect();
    gate.sort();
    let rows = sale.order.platform.pg.get().await.unwrap().query(&format!("SELECT user_id::text FROM orders WHERE product_id = '{product}' ORDER BY 1"), &[]).await.unwrap();
    let ordered: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(gate, ordered, "the gate's buyers are the users with an order");
    assert!(recorded_reservations(sale, product).await.is_empty(), "no reservation left recorded");
}

/// A private broker behind a proxy that delays every answer.
struct SlowBroker {
    child: std::process::Child,
    dir: std::path::PathBuf,
    proxy_port: u16,
}

impl SlowBroker {
    fn start(delay: Duration) -> Self {
        let free_port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (broker_port, proxy_port) = (free_port(), free_port());
        let bin = std::env::var("PAYSTREAM_BROKER_BIN").unwrap_or_else(|_| "nisshi".into());
        let dir = std::env::temp_dir().join(format!("paystream-slow-broker-{}", paystream::testing::unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let listen = format!("tcp://127.0.0.1:{broker_port}");
        let advertised = format!("tcp://127.0.0.1:{proxy_port}");
        let child = std::process::Command::new(&bin)
            .args(["broker", "--listener-url", &listen, "--advertised-listener-url", &advertised, "--storage-engine", "sqlite://broker.db"])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start the broker ({bin}; set PAYSTREAM_BROKER_BIN): {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", broker_port)).is_err() {
            assert!(Instant::now() < deadline, "slow broker did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        let listener = std::net::TcpListener::bind(("127.0.0.1", proxy_port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        tokio::spawn(proxy(tokio::net::TcpListener::from_std(listener).unwrap(), broker_port, delay));
        Self { child, dir, proxy_port }
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.proxy_port)
    }
}

impl Drop for SlowBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Forwards connections to the broker; what the broker sends back is held
/// `delay` before it is passed on (in order).
async fn proxy(listener: tokio::net::TcpListener, broker_port: u16, delay: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((client, _)) = listener.accept().await else { return };
        tokio::spawn(async move {
            let Ok(broker) = tokio::net::TcpStream::connect(("127.0.0.1", broker_port)).await else { return };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut broker_read, mut broker_write) = broker.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_read, &mut broker_write).await;
            });
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match broker_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                tokio::time::sleep(delay).await;
                if client_write.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}
