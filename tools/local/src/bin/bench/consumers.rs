//! Consumer batch throughput: each MSK consumer's handler on 1,000-record
//! batches of new events, against the local PostgreSQL and Redis, as its
//! Lambda would run them (one batch at a time). Records/s per consumer.
//!
//! Baseline, same run and same records: decoding the batch
//! (`msk::decode_all`), the floor every consumer pays before any work.
//!
//! Setup (not timed): 1,000 fresh users with two cards each (Everyday and
//! Cafe Lover, so the benefit guide has tips to send), and for the settle
//! consumer one product per batch with stock for half of the orders, so
//! half succeed and half fail.

use std::time::{Duration, Instant};

use paystream::db::PgPool;
use paystream::demo;
use paystream::events::{decode_order, decode_payment, OrderEvent, PaymentEvent};
use paystream::msk::{decode_all, BatchConsumer, InRecord};
use paystream::Platform;
use uuid::Uuid;

/// Records per batch: the template's BatchSize for every consumer.
pub const BATCH_RECORDS: usize = 1_000;
const PARTITIONS: i32 = 3;

pub struct User {
    pub id: Uuid,
    pub everyday_card: Uuid,
}

/// 1,000 users, each with an Everyday and a Cafe Lover card.
pub async fn create_users(pg: &PgPool, suffix: &str) -> Vec<User> {
    let ids = crate::stats::create_buyers(pg, BATCH_RECORDS, suffix).await;
    let db = pg.get().await.expect("database");
    let mut users = Vec::with_capacity(ids.len());
    for product in [demo::EVERYDAY.0, demo::CAFE_LOVER.0] {
        let cards = db
            .query(
                "INSERT INTO cards (id, user_id, card_product_id, last4, fingerprint, expiry_month, expiry_year)
                 SELECT gen_random_uuid(), u, $2::uuid, '4242', sha256(convert_to(u::text || $2::uuid::text, 'UTF8')), 12, 2099
                 FROM unnest($1::uuid[]) AS u RETURNING user_id, id",
                &[&ids, &product],
            )
            .await
            .expect("bench cards");
        if product == demo::EVERYDAY.0 {
            users = cards.iter().map(|r| User { id: r.get(0), everyday_card: r.get(1) }).collect();
        }
    }
    assert_eq!(users.len(), BATCH_RECORDS);
    users
}

/// Per user, the `Authorization` header and body of a `POST /payments` of
/// `amount` KRW with their Everyday card at the demo's Seoul cafe.
pub fn payment_requests(tokens: &paystream::auth::TokenIssuer, users: &[User], amount: i64) -> Vec<(String, String)> {
    users
        .iter()
        .map(|u| {
            let token = tokens.issue(paystream::domain::UserId(u.id), paystream::domain::Role::User).expect("token").access_token;
            let body = serde_json::json!({"card_id": u.everyday_card, "merchant_id": demo::SEOUL_CAFE.0, "amount": amount, "currency": "KRW"});
            (format!("Bearer {token}"), body.to_string())
        })
        .collect()
}

fn record(topic: &str, i: usize, offset: i64, key: Uuid, value: Vec<u8>) -> InRecord {
    InRecord {
        topic: topic.to_owned(),
        partition: i as i32 % PARTITIONS,
        offset,
        timestamp_ms: 0,
        key: Some(key.to_string().into_bytes()),
        value: Ok(value),
        headers: Vec::new(),
    }
}

/// One payment per user at the Seoul café, paid with the Everyday card.
fn payment_batch(users: &[User], batch: usize) -> Vec<InRecord> {
    let now = time::OffsetDateTime::now_utc();
    users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let event = PaymentEvent {
                v: 1,
                payment_id: Uuid::new_v4(),
                user_id: user.id,
                card_id: user.everyday_card,
                card_product_id: demo::EVERYDAY.0,
                merchant_id: demo::SEOUL_CAFE.0,
                merchant_category: "cafe".into(),
                amount: 10_000,
                currency: "KRW".into(),
                country: "KR".into(),
                lat: 37.5665,
                lon: 126.978,
                occurred_at: now,
            };
            record("payment-stream", i, (batch * BATCH_RECORDS + i) as i64, user.id, serde_json::to_vec(&event).expect("event"))
        })
        .collect()
}

/// A product with stock for half the users, one order per user (as the
/// order function would have accepted them), and their order-stream records.
async fn order_batch(pg: &PgPool, users: &[User], batch: usize) -> Vec<InRecord> {
    let db = pg.get().await.expect("database");
    let product = Uuid::new_v4();
    let now = time::OffsetDateTime::now_utc();
    db.execute(
        "INSERT INTO products (id, title, price, currency, stock, start_time, end_time, created_by)
         VALUES ($1, 'bench', 1000, 'KRW', $2, now() - interval '1 hour', now() + interval '1 hour', $3)",
        &[&product, &((BATCH_RECORDS / 2) as i32), &demo::ADMIN_ID.0],
    )
    .await
    .expect("bench product");
    let ids: Vec<Uuid> = users.iter().map(|u| u.id).collect();
    let rows = db
        .query(
            "INSERT INTO orders (id, user_id, product_id, amount, currency)
             SELECT gen_random_uuid(), u, $2, 1000, 'KRW' FROM unnest($1::uuid[]) WITH ORDINALITY AS t(u, n) ORDER BY n
             RETURNING id, user_id",
            &[&ids, &product],
        )
        .await
        .expect("bench orders");
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let event = OrderEvent { v: 1, order_id: row.get(0), user_id: row.get(1), product_id: product, amount: 1000, currency: "KRW".into(), ordered_at: now };
            record("order-stream", i, (batch * BATCH_RECORDS + i) as i64, event.order_id, serde_json::to_vec(&event).expect("event"))
        })
        .collect()
}

struct Row {
    name: &'static str,
    records: usize,
    elapsed: Duration,
    target_per_s: f64,
}

async fn time_consumer<C: BatchConsumer>(consumer: &C, batches: Vec<Vec<InRecord>>) -> (usize, Duration) {
    let mut records = 0;
    let mut elapsed = Duration::ZERO;
    for batch in batches {
        records += batch.len();
        let started = Instant::now();
        let outcome = consumer.handle(batch).await.expect("batch handled");
        elapsed += started.elapsed();
        assert_eq!(outcome.dead_lettered, 0, "bench records are well formed");
    }
    (records, elapsed)
}

fn time_decode(batches: &[Vec<InRecord>], payments: bool) -> (usize, Duration) {
    let mut records = 0;
    let started = Instant::now();
    for batch in batches {
        records += if payments { decode_all(batch, decode_payment).0.len() } else { decode_all(batch, decode_order).0.len() };
    }
    (records, started.elapsed())
}

pub async fn run(batches: usize) {
    assert!(batches > 0, "batches must be positive");
    let (config, suffix) = crate::stats::isolated_config().await;
    let setup = Platform::from_config("bench", config.clone()).expect("platform");
    let users = create_users(&setup.pg, &suffix).await;
    let platform = |name: &'static str| Platform::from_config(name, config.clone()).expect("platform");

    // One untimed warm-up batch per consumer opens its connections.
    let payments: Vec<Vec<InRecord>> = (0..=batches).map(|b| payment_batch(&users, b)).collect();
    let mut orders = Vec::with_capacity(batches + 1);
    for b in 0..=batches {
        orders.push(order_batch(&setup.pg, &users, b).await);
    }
    let (decoded_payments, decode_payments_time) = time_decode(&payments[1..], true);
    let (decoded_orders, decode_orders_time) = time_decode(&orders[1..], false);

    println!("consumer batch throughput: {batches} batches of {BATCH_RECORDS} new records each (after one warm-up batch), one batch at a time");
    let mut rows = Vec::new();
    macro_rules! measure {
        ($name:literal, $consumer:expr, $batches:expr, $target:expr) => {{
            let consumer = $consumer;
            let mut all = $batches.clone().into_iter();
            time_consumer(&consumer, vec![all.next().expect("warm-up batch")]).await;
            let (records, elapsed) = time_consumer(&consumer, all.collect()).await;
            rows.push(Row { name: $name, records, elapsed, target_per_s: $target });
        }};
    }
    measure!("fds-consumer", fds_consumer::Fds::new(platform("fds-consumer")), payments, 50_000.0);
    measure!("loyalty-consumer", loyalty_consumer::Loyalty::new(platform("loyalty-consumer")), payments, 100_000.0);
    measure!("benefit-consumer", benefit_consumer::BenefitGuide::new(platform("benefit-consumer")), payments, 50_000.0);
    measure!("settle", settle::Settle::new(platform("settle")), orders, 20_000.0);

    let decode_per_s = |records: usize, elapsed: Duration| records as f64 / elapsed.as_secs_f64();
    let payment_floor = decode_per_s(decoded_payments, decode_payments_time);
    let order_floor = decode_per_s(decoded_orders, decode_orders_time);
    println!("{:<34} {:>12} {:>13} {:>12} {:>12}", "path", "records/s", "ms per batch", "target/s", "vs decode");
    println!("{:<34} {:>12.0} {:>13.2} {:>12} {:>11.3}x", "baseline: decode payment records", payment_floor, 1e3 * BATCH_RECORDS as f64 / payment_floor, "-", 1.0);
    println!("{:<34} {:>12.0} {:>13.2} {:>12} {:>11.3}x", "baseline: decode order records", order_floor, 1e3 * BATCH_RECORDS as f64 / order_floor, "-", 1.0);
    for row in &rows {
        let per_s = row.records as f64 / row.elapsed.as_secs_f64();
        let floor = if row.name == "settle" { order_floor } else { payment_floor };
        println!(
            "{:<34} {:>12.0} {:>13.2} {:>12.0} {:>11.3}x",
            row.name,
            per_s,
            1e3 * row.elapsed.as_secs_f64() / (row.records / BATCH_RECORDS) as f64,
            row.target_per_s,
            per_s / floor
        );
    }
}
