//! Durable accepted orders: `POST /orders` through the order function's
//! handler, in process, with many buyers at once on one product whose stock
//! covers them all. Each 202 means the Lua gate reserved the unit and
//! PostgreSQL committed the order and its outbox row (the order event then
//! goes to the broker, or to the relay if the broker is slow).
//!
//! Baseline, same run: the gate alone (`flash::reserve`) for as many
//! buyers on another product, the ceiling of the order path.

use std::sync::Arc;

use paystream::apigw::v2_request;
use paystream::db::PgPool;
use paystream::domain::{Role, UserId};
use paystream::flash::{self, SaleState};
use paystream::kafka::create_topics;
use paystream::Platform;
use uuid::Uuid;

use crate::stats::{drive, print, summarise};

async fn create_product(pg: &PgPool, stock: usize) -> Uuid {
    let id = Uuid::new_v4();
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
    let (mut config, suffix) = crate::stats::isolated_config().await;
    config.kafka.order_topic = format!("bench-orders-{suffix}");
    create_topics(&config.kafka, &[(config.kafka.order_topic.as_str(), 3)]).await.expect("bench topic");
    let platform = Platform::from_config("order", config.clone()).expect("platform");
    let buyers = crate::stats::create_buyers(&platform.pg, orders, &suffix).await;
    let product = create_product(&platform.pg, orders).await;
    let tokens: Arc<Vec<String>> =
        Arc::new(buyers.iter().map(|b| format!("Bearer {}", platform.tokens.issue(UserId(*b), Role::User).expect("token").access_token)).collect());
    let redis = Arc::new(paystream::cache::Redis::new(&config.redis).expect("redis"));
    let api = Arc::new(order::OrderApi::new(platform));
    let body = Arc::new(serde_json::json!({ "product_id": product }).to_string());
    let order = move |i: usize| {
        let (api, tokens, body) = (Arc::clone(&api), Arc::clone(&tokens), Arc::clone(&body));
        async move {
            let headers = [("content-type", "application/json"), ("authorization", tokens[i].as_str())];
            let answer = paystream::http::respond(api.as_ref(), v2_request("POST", "/orders", &headers, Some(&body))).await;
            assert_eq!(answer.status(), 202, "order accepted");
        }
    };
    // The first order loads the gate and opens the pool and the producer.
    order(0).await;

    println!("durable accepted orders: {} buyers, one order each, stock {orders}, {concurrency} in flight", orders - 1);
    let accepted = summarise("paystream POST /orders (202, durable)", drive(orders - 1, concurrency, move |i| order(i + 1)).await);

    let gate_product = Uuid::new_v4();
    let now = time::OffsetDateTime::now_utc();
    let state = SaleState { start_time: now - time::Duration::hours(1), end_time: now + time::Duration::hours(1), remaining: orders as i64, buyers: Vec::new() };
    flash::load(&redis, gate_product, &state).await.expect("load gate");
    let buyers = Arc::new(buyers);
    let reserve = move |i: usize| {
        let (redis, buyers) = (Arc::clone(&redis), Arc::clone(&buyers));
        async move {
            let reserved = flash::reserve(&redis, gate_product, buyers[i], time::OffsetDateTime::now_utc()).await.expect("gate");
            assert!(matches!(reserved, flash::Reservation::Reserved(_)), "stock covers every buyer");
        }
    };
    let gate = summarise("baseline: the gate alone (Lua reserve)", drive(orders - 1, concurrency, reserve).await);
    print("orders/s", &[&accepted, &gate], &gate);
}
