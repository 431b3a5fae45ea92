//! Flash sales on the real PostgreSQL, Redis and broker: bursts never
//! oversell, never sell twice to one buyer, and every accepted order ends
//! SUCCESS with one settlement or FAILED — through Redis losing its keys, the
//! broker going away, and redelivered batches.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{call, Sale};
use paystream::testing::{bulk_users, fresh_config, PrivateBroker};
use serde_json::json;

const PRICE: i64 = 129_000;

/// Runs `attempts_per_user` concurrent orders for every user; returns the
/// accepted order ids and the answers' status codes. `on_accept` sees the
/// running count of accepted orders.
async fn burst(sale: &Sale, users: &[(paystream::domain::UserId, String)], product: &str, attempts_per_user: usize, on_accept: impl Fn(usize) + Send + Sync + 'static) -> (Vec<String>, Vec<u16>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let on_accept = Arc::new(on_accept);
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..attempts_per_user {
        for (_, token) in users {
            let (api, token, product) = (Arc::clone(&sale.order), token.clone(), product.to_owned());
            let (accepted, on_accept) = (Arc::clone(&accepted), Arc::clone(&on_accept));
            tasks.spawn(async move {
                let _ = round;
                let answer = call(api.as_ref(), "POST", "/orders", &token, None, Some(json!({"product_id": product}))).await;
                if answer.0 == 202 {
                    on_accept(accepted.fetch_add(1, Ordering::SeqCst) + 1);
                }
                answer
            });
        }
    }
    let mut ids = Vec::new();
    let mut codes = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        let (status, body) = answer.unwrap();
        codes.push(status);
        if status == 202 {
            ids.push(body["order_id"].as_str().unwrap().to_owned());
        } else {
            assert!(matches!(body["code"].as_str(), Some("SOLD_OUT" | "ALREADY_PURCHASED")), "{status} {body}");
        }
    }
    (ids, codes)
}

async fn assert_settled_exactly(sale: &Sale, product: &str, stock: i64) {
    let successes = sale.scalar(&format!("SELECT count(*) FROM orders WHERE product_id = '{product}' AND status = 'SUCCESS'")).await;
    let pending = sale.scalar(&format!("SELECT count(*) FROM orders WHERE product_id = '{product}' AND status = 'PENDING'")).await;
    let settlements = sale.scalar(&format!("SELECT count(*) FROM settlements WHERE product_id = '{product}'")).await;
    let total = sale.scalar(&format!("SELECT coalesce(sum(amount), 0)::bigint FROM settlements WHERE product_id = '{product}'")).await;
    let buyers = sale.scalar(&format!("SELECT count(DISTINCT user_id) FROM settlements WHERE product_id = '{product}'")).await;
    assert_eq!(pending, 0, "every accepted order ended");
    assert_eq!(successes, stock, "exactly the stock was sold");
    assert_eq!((settlements, buyers), (stock, stock), "one settlement per success, nobody twice");
    assert_eq!(total, stock * PRICE);
    let sold = sale.scalar(&format!("SELECT sold::bigint FROM products WHERE id = '{product}'")).await;
    assert_eq!(sold, successes, "the product's sold counter is its SUCCESS orders");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_attempts_from_a_thousand_users_sell_exactly_the_stock() {
    let sale = Sale::new().await;
    let users = bulk_users(&sale.order.platform, 1_000).await;
    let product = sale.product(100, PRICE, -60, 3_600).await;
    let (accepted, codes) = burst(&sale, &users, &product, 2, |_| {}).await;
    assert_eq!(codes.len(), 2_000);
    assert_eq!(accepted.len(), 100, "the gate accepts exactly the stock");
    let events = sale.events(100).await;
    assert_eq!(events.len(), 100);
    sale.settle(&events).await;
    assert_settled_exactly(&sale, &product, 100).await;

    // Live stock is zero, and further orders are sold out.
    let (status, body) = call(sale.order.as_ref(), "GET", &format!("/products/{product}"), &users[0].1, None, None).await;
    assert_eq!((status, body["remaining"].as_i64()), (200, Some(0)));
    let late = bulk_users(&sale.order.platform, 1).await;
    let (status, body) = sale.order(&late[0].1, &product, None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("SOLD_OUT")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_keys_mid_burst_neither_oversells_nor_loses_an_order() {
    let sale = Arc::new(Sale::new().await);
    let users = bulk_users(&sale.order.platform, 1_000).await;
    let product = sale.product(100, PRICE, -60, 3_600).await;
    // Prime the gate, then wipe it when 40 orders are in.
    let flusher = Arc::clone(&sale);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let flush = tokio::spawn(async move {
        rx.recv().await;
        flusher.flush_redis().await;
    });
    let (accepted, _) = burst(&sale, &users, &product, 2, move |n| {
        if n == 40 {
            let _ = tx.send(());
        }
    })
    .await;
    flush.await.unwrap();
    assert!(accepted.len() >= 100, "stock was sold after the rebuild too: {}", accepted.len());
    assert_eq!(accepted.iter().collect::<HashSet<_>>().len(), accepted.len());
    let orders = sale.scalar(&format!("SELECT count(*) FROM orders WHERE product_id = '{product}'")).await;
    assert_eq!(orders as usize, accepted.len(), "every 202 is a durable order");
    let events = sale.events(accepted.len()).await;
    sale.settle(&events).await;
    assert_settled_exactly(&sale, &product, 100).await;
    let failed = sale.scalar(&format!("SELECT count(*) FROM orders WHERE product_id = '{product}' AND status = 'FAILED'")).await;
    assert_eq!(failed as usize, accepted.len() - 100, "any order accepted beyond stock ended FAILED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_broker_stopped_mid_burst_no_accepted_order_is_lost() {
    let mut broker = PrivateBroker::start();
    let mut config = fresh_config().await;
    config.kafka.bootstrap_servers = broker.bootstrap();
    config.kafka.publish_timeout_ms = 3_000;
    let sale = Sale::with_config(config).await;
    let users = bulk_users(&sale.order.platform, 300).await;
    let product = sale.product(200, PRICE, -60, 3_600).await;

    let (first, _) = burst(&sale, &users[..100], &product, 1, |_| {}).await;
    broker.stop();
    let (second, _) = burst(&sale, &users[100..], &product, 1, |_| {}).await;
    assert_eq!(first.len() + second.len(), 200, "sales went on without the broker");
    let unpublished = sale.scalar("SELECT count(*) FROM order_outbox").await;
    assert!(unpublished >= 1, "orders taken while the broker was down wait in the outbox");

    broker.restart();
    // The schedule would call the relay every minute; here, until the outbox is empty.
    let mut relayed = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    // tansu 0.6 has come back from a kill unable to take produce requests
    // (one answered UNKNOWN_SERVER_ERROR, every later one timed out, for a
    // minute: seen once in CI). That is the broker's fault, not the relay's,
    // which kept every event and retried within its bounds; the broker is
    // then restarted once more, as an operator would.
    let mut stuck_since = std::time::Instant::now();
    let mut second_restart = false;
    while sale.scalar("SELECT count(*) FROM order_outbox").await > 0 {
        assert!(std::time::Instant::now() < deadline, "the relay did not empty the outbox");
        let published = sale.order.relay().await.unwrap().published;
        relayed += published;
        if published > 0 {
            stuck_since = std::time::Instant::now();
        } else if !second_restart && stuck_since.elapsed() > std::time::Duration::from_secs(20) {
            eprintln!("the restarted broker takes no records for 20 s; restarting it once more");
            broker.restart();
            second_restart = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The environment's publisher may have sent some of them itself once the
    // broker was back (its publishes wait up to KAFKA_PUBLISH_TIMEOUT_MS);
    // the relay sent the rest.
    eprintln!("relayed {relayed} of {unpublished} left during the outage");
    assert_eq!(sale.scalar("SELECT count(*) FROM order_outbox").await, 0);
    // An event may have gone out twice (publisher and relay): settlement dedupes.
    let events = sale.events(200).await;
    sale.settle(&events).await;
    assert_settled_exactly(&sale, &product, 200).await;
}

/// An environment running one invocation at a time answers once its event
/// is published; one running several (Managed Instances) answers after the
/// commit and publishes the events of its invocations together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_events_are_published_beside_the_answers_and_none_is_left_behind() {
    // Classic: after each 202 the event is acknowledged and its row deleted
    // (the wait is raised: the first publish also connects the producer).
    let mut config = fresh_config().await;
    config.flash.inline_publish_ms = 4_000;
    let classic = Sale::with_config(config).await;
    let users = bulk_users(&classic.order.platform, 3).await;
    let product = classic.product(3, PRICE, -60, 3_600).await;
    for (_, token) in &users {
        assert_eq!(classic.order(token, &product, None).await.0, 202);
        assert_eq!(classic.scalar("SELECT count(*) FROM order_outbox").await, 0, "published before the answer");
    }

    // Managed Instances: 300 buyers at once, all published and cleared soon
    // after their answers, each event once, and all of them settle.
    let mut config = fresh_config().await;
    config.invocations_per_environment = 64;
    let sale = Sale::with_config(config).await;
    let users = bulk_users(&sale.order.platform, 300).await;
    let product = sale.product(300, PRICE, -60, 3_600).await;
    let (accepted, _) = burst(&sale, &users, &product, 1, |_| {}).await;
    assert_eq!(accepted.len(), 300);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while sale.scalar("SELECT count(*) FROM order_outbox").await > 0 {
        assert!(std::time::Instant::now() < deadline, "the environment's publisher left events behind");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let events = sale.events(300).await;
    let keys: HashSet<_> = events.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys.len(), 300, "each order's event once");
    sale.settle(&events).await;
    assert_settled_exactly(&sale, &product, 300).await;

    // Without a broker: the Managed Instances environment answers at once,
    // the classic one only when its wait (ORDER_INLINE_PUBLISH_MS) is over;
    // both orders stay in the outbox for the relay.
    let mut config = sale.config.clone();
    config.kafka.bootstrap_servers = "127.0.0.1:9".into();
    config.kafka.publish_timeout_ms = 4_000;
    config.flash.inline_publish_ms = 1_500;
    let unreachable = |per_environment: u32| {
        let config = paystream::config::Config { invocations_per_environment: per_environment, ..config.clone() };
        order::OrderApi::new(paystream::Platform::from_config("order", config).unwrap())
    };
    let product = sale.product(2, PRICE, -60, 3_600).await;
    let buyers = bulk_users(&sale.order.platform, 2).await;
    // Kept to the end: a producer with undelivered records is not dropped mid-test.
    let mut apis = Vec::new();
    for (per_environment, (_, token)) in [64, 1].into_iter().zip(&buyers) {
        apis.push(unreachable(per_environment));
        let api = apis.last().unwrap();
        let started = std::time::Instant::now();
        let (status, _) = call(api, "POST", "/orders", token, None, Some(json!({"product_id": product}))).await;
        let took = started.elapsed();
        assert_eq!(status, 202);
        if per_environment > 1 {
            assert!(took < std::time::Duration::from_millis(1_000), "answered after the commit, not the broker: {took:?}");
        } else {
            assert!(took >= std::time::Duration::from_millis(1_500), "waited for its event: {took:?}");
        }
    }
    let left = sale.scalar(&format!("SELECT count(*) FROM order_outbox o JOIN orders r ON r.id = o.order_id WHERE r.product_id = '{product}'")).await;
    assert_eq!(left, 2, "both events wait in the outbox for the relay");
}

/// One statement records a batch of orders; a buyer's second order in it
/// (or later) is skipped without failing the others.
#[tokio::test]
async fn a_batch_records_every_new_buyer_and_skips_a_repeat_without_failing_the_rest() {
    use paystream::events::{OrderEvent, EVENT_VERSION};
    use paystream::store::orders;
    let sale = Sale::new().await;
    let users = bulk_users(&sale.order.platform, 2).await;
    let product = uuid::Uuid::parse_str(&sale.product(10, PRICE, -60, 3_600).await).unwrap();
    let event = |user: &paystream::domain::UserId| OrderEvent {
        v: EVENT_VERSION,
        order_id: uuid::Uuid::new_v4(),
        user_id: user.0,
        product_id: product,
        amount: PRICE,
        currency: "KRW".into(),
        ordered_at: time::OffsetDateTime::now_utc(),
    };
    let (first, repeat, other) = (event(&users[0].0), event(&users[0].0), event(&users[1].0));
    let db = sale.order.platform.pg.get().await.unwrap();
    let recorded = orders::insert_with_outbox(&db, &[&first, &repeat, &other]).await.unwrap();
    assert_eq!(recorded, HashSet::from([first.order_id, other.order_id]));
    assert_eq!(sale.scalar("SELECT count(*) FROM orders").await, 2);
    assert_eq!(sale.scalar("SELECT count(*) FROM order_outbox").await, 2, "an outbox row for each recorded order only");
    assert!(orders::insert_with_outbox(&db, &[&event(&users[0].0)]).await.unwrap().is_empty(), "a later repeat is skipped too");
}

#[tokio::test]
async fn a_settle_batch_delivered_twice_settles_once() {
    let sale = Sale::new().await;
    let users = bulk_users(&sale.order.platform, 5).await;
    let product = sale.product(10, PRICE, -60, 3_600).await;
    for (_, token) in &users {
        assert_eq!(sale.order(token, &product, None).await.0, 202);
    }
    let events = sale.events(5).await;
    let first = sale.settle(&events).await;
    let second = sale.settle(&events).await;
    assert_eq!((first.applied, second.applied, second.duplicates), (5, 0, 5));
    assert_eq!(sale.scalar("SELECT count(*) FROM settlements").await, 5);
    // Duplicates inside one batch, too.
    let doubled: Vec<_> = events.iter().chain(events.iter()).cloned().collect();
    assert_eq!(sale.settle(&doubled).await.applied, 0);
    assert_eq!(sale.scalar("SELECT count(*) FROM settlements").await, 5);
    assert_eq!(sale.scalar(&format!("SELECT sold::bigint FROM products WHERE id = '{product}'")).await, 5, "counted once");
}

/// Settle grants from the product's `sold` counter, not by counting its
/// orders: on a sale with history, orders accepted beyond the stock (the
/// gate was rebuilt too generously) end FAILED, the counter never passes
/// the stock, and it equals the SUCCESS orders afterwards.
#[tokio::test]
async fn settle_grants_up_to_the_stock_on_a_sale_with_history() {
    let sale = Sale::new().await;
    let users = bulk_users(&sale.order.platform, 8).await;
    let product = sale.product(6, PRICE, -60, 3_600).await;
    for (_, token) in &users[..4] {
        assert_eq!(sale.order(token, &product, None).await.0, 202);
    }
    sale.settle(&sale.events(4).await).await;
    // Four more orders get in although only two units are left, as when the
    // gate's keys were rebuilt before settle caught up.
    let client = sale.order.platform.pg.get().await.expect("database");
    let product_id: uuid::Uuid = product.parse().unwrap();
    let mut records = Vec::new();
    for (i, (user_id, _)) in users[4..].iter().enumerate() {
        let order_id = uuid::Uuid::new_v4();
        client
            .execute(
                "INSERT INTO orders (id, user_id, product_id, amount, currency) VALUES ($1, $2, $3, $4, 'KRW')",
                &[&order_id, &user_id.0, &product_id, &PRICE],
            )
            .await
            .expect("order beyond the stock");
        let event = paystream::events::OrderEvent {
            v: 1,
            order_id,
            user_id: user_id.0,
            product_id,
            amount: PRICE,
            currency: "KRW".into(),
            ordered_at: time::OffsetDateTime::now_utc(),
        };
        records.push(paystream::testing::ReadRecord {
            topic: sale.config.kafka.order_topic.clone(),
            partition: 0,
            offset: 100 + i as i64,
            timestamp_ms: 0,
            key: Some(order_id.to_string().into_bytes()),
            value: serde_json::to_vec(&event).unwrap(),
            headers: Vec::new(),
        });
    }
    assert_eq!(sale.settle(&records).await.applied, 4);
    let count = |status: &str| format!("SELECT count(*) FROM orders WHERE product_id = '{product}' AND status = '{status}'");
    assert_eq!((sale.scalar(&count("SUCCESS")).await, sale.scalar(&count("FAILED")).await), (6, 2), "exactly the stock sold");
    assert_eq!(sale.scalar(&format!("SELECT sold::bigint FROM products WHERE id = '{product}'")).await, 6);
    // The database refuses a counter past the stock, whatever the code does.
    let refused = client.execute(&format!("UPDATE products SET sold = sold + 1 WHERE id = '{product}'"), &[]).await;
    assert!(refused.is_err(), "sold beyond stock violates products_sold_within_stock");
}

#[tokio::test]
async fn the_sale_window_stock_and_roles_give_the_right_codes() {
    let sale = Sale::new().await;
    let users = bulk_users(&sale.order.platform, 3).await;
    let soon = sale.product(5, PRICE, 3_600, 7_200).await;
    let over = sale.product(5, PRICE, -7_200, -3_600).await;
    let tiny = sale.product(1, PRICE, -60, 3_600).await;
    let (status, body) = sale.order(&users[0].1, &soon, None).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("SALE_NOT_STARTED")));
    let (status, body) = sale.order(&users[0].1, &over, None).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("SALE_ENDED")));
    assert_eq!(sale.order(&users[0].1, &tiny, None).await.0, 202);
    let (status, body) = sale.order(&users[0].1, &tiny, None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("ALREADY_PURCHASED")));
    let (status, body) = sale.order(&users[1].1, &tiny, None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("SOLD_OUT")));
    let (status, _) = sale.order(&users[1].1, &uuid::Uuid::new_v4().to_string(), None).await;
    assert_eq!(status, 404);

    // Only admins create products, and products are validated.
    let body = json!({"title": "x", "price": 1, "currency": "KRW", "stock": 1, "start_time": "2026-01-01T00:00:00Z", "end_time": "2027-01-01T00:00:00Z"});
    let (status, problem) = call(sale.order.as_ref(), "POST", "/products", &users[0].1, None, Some(body.clone())).await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("FORBIDDEN")));
    for (field, value) in [("price", json!(0)), ("stock", json!(0)), ("end_time", json!("2025-01-01T00:00:00Z")), ("currency", json!("ABC"))] {
        let mut bad = body.clone();
        bad[field] = value;
        let (status, problem) = call(sale.order.as_ref(), "POST", "/products", &sale.admin, None, Some(bad)).await;
        assert_eq!((status, problem["code"].as_str()), (400, Some("VALIDATION")), "{field}");
    }
    let (status, list) = call(sale.order.as_ref(), "GET", "/products", &users[2].1, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 3);
    let tiny_view = list.as_array().unwrap().iter().find(|p| p["product_id"] == tiny.as_str()).unwrap();
    assert_eq!(tiny_view["remaining"], 0);
}

#[tokio::test]
async fn orders_are_idempotent_and_private() {
    let sale = Sale::new().await;
    let users = bulk_users(&sale.order.platform, 2).await;
    let product = sale.product(10, PRICE, -60, 3_600).await;
    let first = sale.order(&users[0].1, &product, Some("buy-1")).await;
    let again = sale.order(&users[0].1, &product, Some("buy-1")).await;
    assert_eq!((first.0, again.0), (202, 202));
    assert_eq!(first.1, again.1, "the first answer again, no second order");
    let other = sale.order(&users[0].1, &uuid::Uuid::new_v4().to_string(), Some("buy-1")).await;
    assert_eq!(other.1["code"], "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(sale.scalar("SELECT count(*) FROM orders").await, 1);

    let id = first.1["order_id"].as_str().unwrap();
    let (status, view) = call(sale.order.as_ref(), "GET", &format!("/orders/{id}"), &users[0].1, None, None).await;
    assert_eq!((status, view["status"].as_str(), view["amount"].as_i64()), (200, Some("PENDING"), Some(PRICE)));
    assert_eq!(call(sale.order.as_ref(), "GET", &format!("/orders/{id}"), &users[1].1, None, None).await.0, 404);
    let events = sale.events(1).await;
    sale.settle(&events).await;
    let (_, view) = call(sale.order.as_ref(), "GET", &format!("/orders/{id}"), &users[0].1, None, None).await;
    assert_eq!(view["status"], "SUCCESS");
}

#[tokio::test]
async fn settlement_reports_show_admins_everything_and_users_their_own() {
    let sale = Sale::new().await;
    let users = bulk_users(&sale.order.platform, 3).await;
    let product = sale.product(10, PRICE, -60, 3_600).await;
    for (_, token) in &users {
        assert_eq!(sale.order(token, &product, None).await.0, 202);
    }
    sale.settle(&sale.events(3).await).await;

    let (status, page) = call(&sale.report, "GET", &format!("/settlements?product_id={product}&limit=2"), &sale.admin, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().expect("more pages").to_owned();
    let (_, rest) = call(&sale.report, "GET", &format!("/settlements?product_id={product}&limit=2&cursor={cursor}"), &sale.admin, None, None).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest.get("next_cursor").is_none());
    let first_page: HashSet<_> = page["items"].as_array().unwrap().iter().map(|s| s["settlement_id"].clone()).collect();
    assert!(!first_page.contains(&rest["items"][0]["settlement_id"]), "pages do not overlap");

    let (status, summary) = call(&sale.report, "GET", &format!("/settlements/summary?product_id={product}"), &sale.admin, None, None).await;
    assert_eq!(status, 200);
    assert_eq!((summary["count"].as_i64(), summary["total_amount"].as_i64(), summary["currency"].as_str()), (Some(3), Some(3 * PRICE), Some("KRW")));
    assert!(summary["latest"]["settlement_id"].is_string());

    let (me, token) = &users[0];
    let (status, mine) = call(&sale.report, "GET", "/settlements", token, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    assert_eq!(mine["items"][0]["user_id"], me.to_string());
    let (status, _) = call(&sale.report, "GET", &format!("/settlements?user_id={}", users[1].0), token, None, None).await;
    assert_eq!(status, 403);
    let (_, summary) = call(&sale.report, "GET", "/settlements/summary", token, None, None).await;
    assert_eq!(summary["count"], 1);
}
