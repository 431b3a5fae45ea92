//! Crash points of the flash-sale path, for real: the real `order` and
//! `settle` binaries run under the local Lambda host with
//! `FAILPOINTS=<step>=return`, so the process aborts at that step (as
//! SIGKILL would leave it: an open transaction dropped by PostgreSQL, a
//! Redis reservation without an order, an event not yet published). Then
//! the platform recovers as it does in production — the client retries
//! with the same Idempotency-Key, the relay schedule runs, the event source
//! redelivers the batch to a fresh process — and the invariants are checked
//! from the data:
//!
//! - successes <= stock;
//! - every accepted (202) order ends SUCCESS with exactly one settlement, or FAILED;
//! - once quiet, remaining + SUCCESS + PENDING = stock;
//! - nobody is refused as a repeat buyer (ALREADY_PURCHASED) without an order.
//!
//! The binaries must be built with the `failpoints` feature, which
//! `cargo test --workspace` does (the functions' dev-dependencies enable
//! it); a binary without it never crashes and these tests fail.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use paystream::config::Config;
use paystream::domain::UserId;
use paystream::flash;
use paystream::store::products::{self, Product};
use paystream::testing::{bulk_users, create_topics, fresh_config, msk_event, read_topic, seed, user};
use paystream::Platform;
use paystream_local::host::{Host, InvokeError};
use serde_json::{json, Value};
use uuid::Uuid;

mod common;

const TIMEOUT_MS: u64 = 10_000;
const PRICE: i64 = 129_000;
/// Short enough to wait for in a test; the configuration check keeps it
/// above ORDER_COMMIT_DEADLINE_MS + PG_STATEMENT_TIMEOUT_MS below.
const RESERVATION_TTL_MS: u64 = 3_000;
const RELAY_GRACE_MS: u64 = 500;

/// The function's environment: the test's database, Redis prefix, topics
/// and short flash-sale bounds.
fn env(config: &Config, failpoint: Option<&str>) -> Vec<(String, String)> {
    let bounds = [
        ("RESERVATION_TTL_MS", RESERVATION_TTL_MS.to_string()),
        ("ORDER_COMMIT_DEADLINE_MS", "1000".to_owned()),
        ("PG_STATEMENT_TIMEOUT_MS", "1500".to_owned()),
        ("IDEMPOTENCY_WAIT_MS", "1000".to_owned()),
        ("RELAY_GRACE_MS", RELAY_GRACE_MS.to_string()),
    ];
    common::function_env(config, &bounds, failpoint)
}

async fn host(config: &Config, function: &str, failpoint: Option<&str>) -> Arc<Host> {
    common::host(function, common::binary_with_failpoints(function), env(config, failpoint), TIMEOUT_MS).await
}

struct Sale {
    platform: Platform,
    product: Uuid,
    stock: i64,
    users: Vec<(UserId, String)>,
    /// Every order id answered 202.
    accepted: HashSet<Uuid>,
}

async fn sale(stock: i32, buyers: usize) -> Sale {
    let config = fresh_config().await;
    let topic = config.kafka.order_topic.clone();
    create_topics(&config, &[(&topic, 3), (&format!("{topic}.dlq"), 1)]).await;
    let platform = Platform::from_config("tests", config).unwrap();
    seed(&platform).await;
    let admin = user(&platform, "admin").await;
    let users = bulk_users(&platform, buyers).await;
    let now = time::OffsetDateTime::now_utc();
    let product = Product {
        id: Uuid::new_v4(),
        title: "Limited sneakers".into(),
        price: PRICE,
        currency: "KRW".into(),
        stock,
        start_time: now - time::Duration::minutes(1),
        end_time: now + time::Duration::hours(1),
    };
    products::insert(&**platform.pg.get().await.unwrap(), &product, admin.id.0).await.unwrap();
    Sale { platform, product: product.id, stock: i64::from(stock), users, accepted: HashSet::new() }
}

impl Sale {
    fn config(&self) -> &Config {
        &self.platform.config
    }

    async fn count(&self, sql: &str) -> i64 {
        self.platform.pg.get().await.unwrap().query_one(sql, &[]).await.unwrap().get(0)
    }

    /// `POST /orders` as API Gateway delivers it.
    fn order_request(&self, buyer: usize, key: Option<&str>) -> Bytes {
        let mut headers = json!({"content-type": "application/json", "authorization": format!("Bearer {}", self.users[buyer].1)});
        if let Some(key) = key {
            headers["idempotency-key"] = json!(key);
        }
        common::http_event("POST", "/orders", headers, &json!({"product_id": self.product}))
    }

    /// Orders through `host`; records a 202 and checks that a refusal as a
    /// repeat buyer is true.
    async fn order(&mut self, host: &Host, buyer: usize, key: Option<&str>) -> (u16, Value) {
        let raw = host.invoke("order", self.order_request(buyer, key)).await.expect("order answers");
        let response: Value = serde_json::from_slice(&raw).expect("API Gateway response");
        let body: Value = serde_json::from_str(response["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
        let status = response["statusCode"].as_u64().unwrap() as u16;
        if status == 202 {
            self.accepted.insert(Uuid::parse_str(body["order_id"].as_str().unwrap()).unwrap());
        }
        if body["code"] == "ALREADY_PURCHASED" {
            let user = self.users[buyer].0 .0;
            let orders = self.count(&format!("SELECT count(*) FROM orders WHERE user_id = '{user}' AND product_id = '{}'", self.product)).await;
            assert_eq!(orders, 1, "refused as a repeat buyer without an order");
        }
        (status, body)
    }

    /// One run of the order function's schedule (reconciliation and relay).
    async fn relay(&self, host: &Host) -> Value {
        let event = json!({"version": "0", "id": Uuid::new_v4(), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": "2026-11-30T12:00:00Z", "region": "us-east-1", "resources": [], "detail": {}});
        let raw = host.invoke("order", Bytes::from(event.to_string())).await.expect("relay run");
        serde_json::from_slice(&raw).unwrap()
    }

    async fn remaining(&self) -> i64 {
        flash::remaining(&self.platform.redis, &[self.product]).await.unwrap()[0].expect("gate loaded")
    }

    /// Every distinct order event on the topic (exactly `expected`), as one MSK batch.
    async fn order_batch(&self, expected: usize) -> Bytes {
        let records = read_topic(self.config(), &self.config().kafka.order_topic, expected, Duration::from_millis(800)).await;
        let ids: HashSet<_> = records.iter().map(|r| r.key.clone()).collect();
        assert_eq!(ids.len(), expected, "distinct order events on the topic");
        Bytes::from(serde_json::to_vec(&msk_event(&records)).unwrap())
    }

    /// Publishes what the outbox holds (after the grace period) and settles
    /// every order event, as the schedule and the event source would.
    async fn settle_all(&self, order: &Host) {
        tokio::time::sleep(Duration::from_millis(RELAY_GRACE_MS + 100)).await;
        self.relay(order).await;
        let orders = self.count(&format!("SELECT count(*) FROM orders WHERE product_id = '{}'", self.product)).await as usize;
        let batch = self.order_batch(orders).await;
        let settle = host(self.config(), "settle", None).await;
        settle.invoke("settle", batch).await.expect("settle batch");
        settle.shutdown().await;
    }

    /// The invariants, from the data, once quiet.
    async fn assert_invariants(&self) {
        let p = self.product;
        let successes = self.count(&format!("SELECT count(*) FROM orders WHERE product_id = '{p}' AND status = 'SUCCESS'")).await;
        let pending = self.count(&format!("SELECT count(*) FROM orders WHERE product_id = '{p}' AND status = 'PENDING'")).await;
        assert!(successes <= self.stock, "successes {successes} > stock {}", self.stock);
        let db = self.platform.pg.get().await.unwrap();
        for id in &self.accepted {
            let row = db.query_one("SELECT status, (SELECT count(*) FROM settlements s WHERE s.order_id = o.id) FROM orders o WHERE id = $1", &[id]).await.unwrap();
            let (status, settlements): (String, i64) = (row.get(0), row.get(1));
            assert!(matches!((status.as_str(), settlements), ("SUCCESS", 1) | ("FAILED", 0)), "accepted order {id}: {status} with {settlements} settlements");
        }
        let settled_total = self.count(&format!("SELECT coalesce(sum(amount), 0)::bigint FROM settlements WHERE product_id = '{p}'")).await;
        assert_eq!(settled_total, successes * PRICE, "one settlement per success");
        assert_eq!(self.remaining().await + successes + pending, self.stock, "remaining + SUCCESS + PENDING = stock");
    }
}

async fn crashes(host: &Host, function: &str, payload: Bytes) {
    match host.invoke(function, payload).await {
        Err(InvokeError::Crashed(_)) => {}
        other => panic!(
            "{function} should have crashed at its crash point, got {other:?} (a binary built without failpoints never \
             crashes: `cargo test --workspace`, or `cargo build -p order -p settle --features paystream-shared/failpoints`)"
        ),
    }
}

/// The order function dies at `step` before its commit; the buyer retries
/// with the same key: one order, nothing lost, nobody refused.
async fn killed_before_commit_then_retried(step: &str) {
    let mut s = sale(2, 3).await;
    let crashing = host(s.config(), "order", Some(step)).await;
    crashes(&crashing, "order", s.order_request(0, Some("buy-once"))).await;
    crashing.shutdown().await;
    assert_eq!(s.count("SELECT count(*) FROM orders").await, 0, "{step}: nothing committed");
    assert_eq!(s.count("SELECT count(*) FROM idempotency_keys").await, 0, "{step}: the claim died with its transaction");
    assert_eq!(s.remaining().await, 1, "{step}: the dead request's reservation holds a unit");

    let order = host(s.config(), "order", None).await;
    let (status, body) = s.order(&order, 0, Some("buy-once")).await;
    assert_eq!(status, 202, "{step}: the retry is not refused: {body}");
    assert_eq!(s.remaining().await, 1, "{step}: the retry took the same unit over");
    let (status, _) = s.order(&order, 1, None).await;
    assert_eq!(status, 202);
    let (status, body) = s.order(&order, 2, None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("SOLD_OUT")));
    s.settle_all(&order).await;
    order.shutdown().await;
    assert_eq!(s.count("SELECT count(*) FROM orders WHERE status = 'SUCCESS'").await, 2);
    s.assert_invariants().await;
}

/// The order function dies at `step` before its commit and the buyer never
/// comes back: the relay schedule returns the unit after the TTL, and it sells.
async fn killed_before_commit_never_retried(step: &str) {
    let mut s = sale(1, 2).await;
    let crashing = host(s.config(), "order", Some(step)).await;
    crashes(&crashing, "order", s.order_request(0, None)).await;
    crashing.shutdown().await;

    let order = host(s.config(), "order", None).await;
    let (status, body) = s.order(&order, 1, None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("SOLD_OUT")), "{step}: the unit is reserved until reconciled");
    let early = s.relay(&order).await;
    assert_eq!(early["reservations_returned"], 0, "{step}: not before the TTL");
    tokio::time::sleep(Duration::from_millis(RESERVATION_TTL_MS + 200)).await;
    let report = s.relay(&order).await;
    assert_eq!(report["reservations_returned"], 1, "{step}: {report}");
    assert_eq!(s.remaining().await, 1, "{step}: the unit is back");
    let (status, body) = s.order(&order, 1, None).await;
    assert_eq!(status, 202, "{step}: {body}");
    s.settle_all(&order).await;
    order.shutdown().await;
    s.assert_invariants().await;
}

#[tokio::test]
async fn order_killed_after_reserving_then_retried_orders_once() {
    killed_before_commit_then_retried("order.after_reserve").await;
}

#[tokio::test]
async fn order_killed_after_reserving_is_reconciled_and_the_unit_sells() {
    killed_before_commit_never_retried("order.after_reserve").await;
}

#[tokio::test]
async fn order_killed_before_commit_then_retried_orders_once() {
    killed_before_commit_then_retried("order.before_commit").await;
}

#[tokio::test]
async fn order_killed_before_commit_is_reconciled_and_the_unit_sells() {
    killed_before_commit_never_retried("order.before_commit").await;
}

#[tokio::test]
async fn order_killed_after_commit_before_publishing_replays_and_the_relay_sends_the_event() {
    let mut s = sale(2, 2).await;
    let crashing = host(s.config(), "order", Some("order.before_publish")).await;
    crashes(&crashing, "order", s.order_request(0, Some("committed"))).await;
    crashing.shutdown().await;
    assert_eq!(s.count("SELECT count(*) FROM orders").await, 1, "committed before the crash");
    assert_eq!(s.count("SELECT count(*) FROM order_outbox").await, 1);

    let order = host(s.config(), "order", None).await;
    let (status, body) = s.order(&order, 0, Some("committed")).await;
    assert_eq!(status, 202, "the retry replays the first answer: {body}");
    let (status, body) = s.order(&order, 0, None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("ALREADY_PURCHASED")), "a new attempt is a repeat");
    assert_eq!(s.count("SELECT count(*) FROM orders").await, 1);
    // The record the dead request left is dropped (it has an order), the unit stays sold.
    tokio::time::sleep(Duration::from_millis(RESERVATION_TTL_MS + 200)).await;
    let report = s.relay(&order).await;
    assert_eq!((report["reservations_returned"].as_u64(), report["published"].as_u64()), (Some(0), Some(1)), "{report}");
    assert_eq!(s.remaining().await, 1);
    s.settle_all(&order).await;
    order.shutdown().await;
    s.assert_invariants().await;
}

#[tokio::test]
async fn settle_killed_after_commit_then_redelivered_settles_once_and_corrects_the_gate() {
    let mut s = sale(2, 3).await;
    let order = host(s.config(), "order", None).await;
    for buyer in 0..2 {
        assert_eq!(s.order(&order, buyer, None).await.0, 202);
    }
    // The gate was too generous once (an order accepted during a rebuild):
    // a third order for two units, which settlement must fail.
    let keys = flash::key_names(&s.platform.redis, s.product);
    let mut conn = s.platform.redis.conn().await.unwrap();
    let _: () = redis::cmd("SET").arg(&keys[1]).arg(2).query_async(&mut conn).await.unwrap();
    let (status, body) = s.order(&order, 2, None).await;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_millis(RELAY_GRACE_MS + 100)).await;
    s.relay(&order).await;
    order.shutdown().await;
    let batch = s.order_batch(3).await;

    let crashing = host(s.config(), "settle", Some("settle.after_commit")).await;
    crashes(&crashing, "settle", batch.clone()).await;
    crashing.shutdown().await;
    assert_eq!(s.count("SELECT count(*) FROM settlements").await, 2, "committed before the crash");
    assert_eq!(s.count("SELECT count(*) FROM orders WHERE status = 'FAILED'").await, 1);

    // The event source delivers the same batch again, to a fresh process.
    let settle = host(s.config(), "settle", None).await;
    settle.invoke("settle", batch.clone()).await.expect("redelivered batch");
    settle.invoke("settle", batch).await.expect("and again");
    settle.shutdown().await;
    assert_eq!(s.count("SELECT count(*) FROM settlements").await, 2, "exactly once");
    assert_eq!(s.remaining().await, 0, "the redelivery corrected the gate the crash left too high");
    s.assert_invariants().await;
}

#[test]
fn every_order_and_settle_crash_point_is_exercised() {
    let source = include_str!("crash_order.rs");
    for name in paystream::failpoint::ALL.iter().filter(|n| n.starts_with("order.") || n.starts_with("settle.")) {
        assert!(source.contains(&format!("\"{name}\"")), "crash point {name} has no test");
    }
}
