//! Durable accepted orders: `POST /orders` through the order function's
//! handler, in process, with many buyers at once on one product whose stock
//! covers them all. Each 202 means the Lua gate reserved the unit and
//! PostgreSQL committed the order and its outbox row. The handlers share one
//! environment, as `concurrency` invocations of Lambda Managed Instances
//! do, so each answers after its commit and the environment's publisher
//! sends the events in batches; the run ends only once every order's event
//! is acknowledged and its outbox row deleted, and that time counts.
//!
//! Baselines, same run: a raw single-row INSERT of the same order rows
//! (another product, same table and indexes), committed on its own at the
//! same concurrency through a pool of the same size, the floor of a durable
//! order; and the gate alone (`flash::reserve`) for as many buyers on
//! another product, the ceiling of the order path. Logging and metrics are
//! initialised as in Lambda (written to /dev/null). Cost: CPU µs per order
//! by process, and Lambda GB-s per million orders.

use std::sync::Arc;

use paystream::apigw::v2_request;
use paystream::db::PgPool;
use paystream::domain::{Role, UserId};
use paystream::flash::{self, SaleState};
use paystream::kafka::create_topics;
use paystream::Platform;
use uuid::Uuid;

use crate::stats::{costed, costed_then, print_costed, QuietStdout};

/// A flash-sale product on sale now (for an hour) with `stock` units.
pub(crate) async fn create_product(pg: &PgPool, stock: usize) -> Uuid {
    let id = paystream::domain::new_id();
    let stock = i32::try_from(stock).expect("stock fits the column");
    pg.get()
        .await
        .expect("database")
        .execute(
            "INSERT INTO products (id, title, price, currency, stock, start_time, end_time, created_by)
             VALUES ($1, 'bench', 129000, 'KRW', $2, now() - interval '1 hour', now() + interval '1 hour', $3)",
            &[&id, &stock, &paystream::demo::ADMIN_ID.0],
        )
        .await
        .expect("bench product");
    id
}

pub async fn run(orders: usize, concurrency: usize) {
    assert!(orders > 1 && concurrency > 0, "orders and concurrency must be positive");
    paystream::telemetry::init("info");
    paystream::metrics::install("bench-orders", std::time::Instant::now());
    let template = paystream_local::template::Template::from_env().expect("template.yaml (run from the repository root)");
    let memory_mb = template.functions.iter().find(|f| f.binary == "order").map_or(128, |f| f.memory_mb);
    let (mut config, suffix) = crate::stats::isolated_config().await;
    // One Managed Instances environment running `concurrency` invocations.
    config.invocations_per_environment = u32::try_from(concurrency).expect("concurrency fits u32");
    config.kafka.order_topic = format!("bench-orders-{suffix}");
    create_topics(&config.kafka, &[(config.kafka.order_topic.as_str(), 3)]).await.expect("bench topic");
    let platform = Platform::from_config("order", config.clone()).expect("platform");
    let buyers = crate::stats::create_buyers(&platform.pg, orders, &suffix).await;
    let product = create_product(&platform.pg, orders).await;
    let tokens: Arc<Vec<String>> =
        Arc::new(buyers.iter().map(|b| format!("Bearer {}", platform.tokens.issue(UserId(*b), Role::User).expect("token").access_token)).collect());
    let redis = Arc::new(paystream::cache::Redis::new(&config.redis).expect("redis"));
    let raw_pool = paystream::db::pool(&config.database, "bench-raw").expect("pool");
    let raw_product = create_product(&platform.pg, orders).await;
    crate::stats::vacuum(&platform.pg).await;
    let platform_pg = platform.pg.clone();
    let api = Arc::new(order::OrderApi::new(platform));
    let body = Arc::new(serde_json::json!({ "product_id": product }).to_string());
    let order = move |i: usize| {
        let (api, tokens, body) = (Arc::clone(&api), Arc::clone(&tokens), Arc::clone(&body));
        async move {
            let headers = [("content-type", "application/json"), ("authorization", tokens[i].as_str())];
            paystream::metrics::invocation_started("bench");
            let answer = paystream::http::respond(api.as_ref(), v2_request("POST", "/orders", &headers, Some(&body))).await;
            paystream::metrics::flush();
            assert_eq!(answer.status(), 202, "order accepted");
        }
    };
    println!("durable accepted orders: {} buyers, one order each, stock {orders}, {concurrency} in flight", orders - 1);
    let quiet = QuietStdout::new();
    // The first order loads the gate and opens the pool and the producer.
    order(0).await;
    let pg = platform_pg.clone();
    let published = async move { wait_until_published(&pg, product).await };
    let accepted = costed_then("paystream POST /orders (202 durable, events published)", orders - 1, concurrency, move |i| order(i + 1), published).await;
    drop(quiet);

    let buyers = Arc::new(buyers);
    let (pool, raw_buyers) = (raw_pool.clone(), Arc::clone(&buyers));
    let insert = move |i: usize| {
        let (pool, buyers) = (pool.clone(), Arc::clone(&raw_buyers));
        async move {
            let db = pool.get().await.expect("database");
            let statement = db
                .prepare_cached("INSERT INTO orders (id, user_id, product_id, amount, currency) VALUES ($1, $2, $3, 129000, 'KRW')")
                .await
                .expect("prepare");
            db.execute(&statement, &[&paystream::domain::new_id(), &buyers[i], &raw_product]).await.expect("raw insert");
        }
    };
    let raw = costed("baseline: raw single-row INSERT, committed", orders - 1, concurrency, insert).await;

    let gate_product = paystream::domain::new_id();
    let now = time::OffsetDateTime::now_utc();
    let state = SaleState { start_time: now - time::Duration::hours(1), end_time: now + time::Duration::hours(1), remaining: orders as i64, buyers: Vec::new() };
    flash::load(&redis, gate_product, &state).await.expect("load gate");
    let reserve = move |i: usize| {
        let (redis, buyers) = (Arc::clone(&redis), Arc::clone(&buyers));
        async move {
            let reserved = flash::reserve(&redis, gate_product, buyers[i], time::OffsetDateTime::now_utc()).await.expect("gate");
            assert!(matches!(reserved, flash::Reservation::Reserved(_)), "stock covers every buyer");
        }
    };
    let gate = costed("baseline: the gate alone (Lua reserve)", orders - 1, concurrency, reserve).await;
    print_costed("orders/s", &[&accepted, &raw, &gate], &raw, memory_mb);
}

/// Waits until every order of `product` has its event published (outbox
/// row marked), at most a minute: the benchmark counts that work too.
async fn wait_until_published(pg: &PgPool, product: Uuid) {
    const WAIT_MS_MAX: u64 = 60_000;
    const POLL_MS: u64 = 5;
    let db = pg.get().await.expect("database");
    for _ in 0..WAIT_MS_MAX / POLL_MS {
        let unpublished: i64 = db
            .query_one(
                "SELECT count(*) FROM order_outbox o JOIN orders r ON r.id = o.order_id WHERE r.product_id = $1",
                &[&product],
            )
            .await
            .expect("outbox count")
            .get(0);
        if unpublished == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(POLL_MS)).await;
    }
    panic!("order events still unpublished after {WAIT_MS_MAX} ms");
}
