//! Crash points of the payment path, for real: the real `pay`,
//! `fds-consumer`, `loyalty-consumer` and `benefit-consumer` binaries run
//! under the local Lambda host with `FAILPOINTS=<step>=return`, so the
//! process aborts at that step (as SIGKILL would leave it). Then the
//! platform recovers the way it does in production — the client retries
//! with the same Idempotency-Key, the event source redelivers the batch to
//! a fresh process — and the invariants are checked from the data.
//!
//! The binaries must be built with the `failpoints` feature, which
//! `cargo test --workspace` does (the functions' dev-dependencies enable
//! it); a binary without it never crashes and these tests fail.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use paystream::config::Config;
use paystream::demo::{ALICE_EVERYDAY_CARD, SEOUL_CAFE};
use paystream::testing::{create_topics, fresh_config, msk_event, read_topic, seed, user, TestUser};
use paystream::Platform;
use paystream_local::host::{Host, InvokeError};
use serde_json::{json, Value};

mod common;

const TIMEOUT_MS: u64 = 15_000;

/// The lease of an unanswered Idempotency-Key claim in these tests (the
/// default is longer than pay's timeout); a retry waits up to
/// `IDEMPOTENCY_WAIT_MS` (2 s) for it to run out.
const LEASE_MS: &str = "500";

async fn host(config: &Config, function: &str, failpoint: Option<&str>) -> Arc<Host> {
    let env = common::function_env(config, &[("IDEMPOTENCY_LEASE_MS", LEASE_MS.to_owned())], failpoint);
    common::host(function, common::binary_with_failpoints(function), env, TIMEOUT_MS).await
}

struct World {
    platform: Platform,
    alice: TestUser,
}

async fn world() -> World {
    let config = fresh_config().await;
    create_topics(&config, &[(&config.kafka.payment_topic, 1)]).await;
    let platform = Platform::from_config("tests", config).unwrap();
    seed(&platform).await;
    let alice = user(&platform, "alice").await;
    World { platform, alice }
}

impl World {
    fn config(&self) -> &Config {
        &self.platform.config
    }

    async fn count(&self, sql: &str) -> i64 {
        self.platform.pg.get().await.unwrap().query_one(sql, &[]).await.unwrap().get(0)
    }

    /// `POST /payments` as API Gateway delivers it.
    fn payment_request(&self, key: &str) -> Bytes {
        let headers = json!({"content-type": "application/json", "authorization": self.alice.bearer(), "idempotency-key": key});
        common::http_event("POST", "/payments", headers, &json!({"card_id": ALICE_EVERYDAY_CARD.0, "merchant_id": SEOUL_CAFE.0, "amount": 4_500, "currency": "KRW"}))
    }

    /// Every record of the payment topic, as one MSK batch.
    async fn payment_batch(&self, expected: usize) -> (Vec<String>, Bytes) {
        let records = read_topic(self.config(), &self.config().kafka.payment_topic, expected, Duration::from_millis(800)).await;
        assert_eq!(records.len(), expected, "events on the topic");
        let ids = records.iter().map(|r| serde_json::from_slice::<Value>(&r.value).unwrap()["payment_id"].as_str().unwrap().to_owned()).collect();
        (ids, Bytes::from(serde_json::to_vec(&msk_event(&records)).unwrap()))
    }
}

fn answer(raw: &Bytes) -> (u16, Value) {
    let response: Value = serde_json::from_slice(raw).expect("API Gateway response");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    (response["statusCode"].as_u64().unwrap() as u16, body)
}

async fn crashes(host: &Host, function: &str, payload: Bytes) {
    match host.invoke(function, payload).await {
        Err(InvokeError::Crashed(_)) => {}
        other => panic!("{function} should have crashed at its crash point, got {other:?}"),
    }
}

#[tokio::test]
async fn pay_killed_between_publish_and_commit_then_retried_is_one_payment() {
    let w = world().await;
    let crashing = host(w.config(), "pay", Some("pay.after_publish")).await;
    crashes(&crashing, "pay", w.payment_request("retry-me")).await;
    crashing.shutdown().await;
    // The event was acknowledged, the record never written: the key's claim
    // is left unanswered.
    assert_eq!(w.count("SELECT count(*) FROM payments").await, 0);
    assert_eq!(w.count("SELECT count(*) FROM idempotency_keys WHERE status_code IS NULL").await, 1);

    // The client retries with the same key and body: once the dead claim's
    // lease has run out, the retry takes it over.
    let healthy = host(w.config(), "pay", None).await;
    let (status, body) = answer(&healthy.invoke("pay", w.payment_request("retry-me")).await.unwrap());
    assert_eq!(status, 202, "{body}");
    let (ids, batch) = w.payment_batch(2).await;
    assert_eq!(ids, vec![body["payment_id"].as_str().unwrap(); 2], "the retry published the same payment id");
    healthy.shutdown().await;
    assert_eq!(w.count("SELECT count(*) FROM idempotency_keys WHERE status_code = 202").await, 1, "the retry's answer is stored");

    // FDS sees the payment twice and decides it once.
    let fds = host(w.config(), "fds-consumer", None).await;
    fds.invoke("fds-consumer", batch).await.unwrap();
    fds.shutdown().await;
    assert_eq!(w.count("SELECT count(*) FROM payments").await, 1);
    assert_eq!(w.count("SELECT count(*) FROM transactions").await, 1);
}

#[tokio::test]
async fn pay_killed_between_publish_and_commit_without_retry_is_recorded_from_its_event() {
    let w = world().await;
    let crashing = host(w.config(), "pay", Some("pay.after_publish")).await;
    crashes(&crashing, "pay", w.payment_request("never-retried")).await;
    crashing.shutdown().await;
    let (ids, batch) = w.payment_batch(1).await;

    let fds = host(w.config(), "fds-consumer", None).await;
    fds.invoke("fds-consumer", batch).await.unwrap();
    fds.shutdown().await;
    let db = w.platform.pg.get().await.unwrap();
    let id = uuid::Uuid::parse_str(&ids[0]).unwrap();
    let recorded: i64 = db.query_one("SELECT count(*) FROM payments WHERE id = $1", &[&id]).await.unwrap().get(0);
    let decided: i64 = db.query_one("SELECT count(*) FROM transactions WHERE payment_id = $1", &[&id]).await.unwrap().get(0);
    assert_eq!((recorded, decided), (1, 1), "the acknowledged event became the record");
}

#[tokio::test]
async fn pay_killed_after_claiming_the_key_publishes_nothing_and_the_retry_pays_once() {
    let w = world().await;
    let crashing = host(w.config(), "pay", Some("pay.after_claim")).await;
    crashes(&crashing, "pay", w.payment_request("claimed")).await;
    crashing.shutdown().await;
    assert_eq!(w.count("SELECT count(*) FROM idempotency_keys WHERE status_code IS NULL").await, 1, "an unanswered claim");
    assert_eq!(w.count("SELECT count(*) FROM payments").await, 0);

    let healthy = host(w.config(), "pay", None).await;
    let (status, _) = answer(&healthy.invoke("pay", w.payment_request("claimed")).await.unwrap());
    assert_eq!(status, 202);
    healthy.shutdown().await;
    let (_, _) = w.payment_batch(1).await;
    assert_eq!(w.count("SELECT count(*) FROM payments").await, 1);
    assert_eq!(w.count("SELECT count(*) FROM idempotency_keys WHERE status_code = 202").await, 1);
}

#[tokio::test]
async fn pay_killed_after_commit_replays_the_first_answer() {
    let w = world().await;
    let crashing = host(w.config(), "pay", Some("pay.after_commit")).await;
    crashes(&crashing, "pay", w.payment_request("committed")).await;
    crashing.shutdown().await;
    assert_eq!(w.count("SELECT count(*) FROM payments").await, 1);

    let healthy = host(w.config(), "pay", None).await;
    let (status, body) = answer(&healthy.invoke("pay", w.payment_request("committed")).await.unwrap());
    healthy.shutdown().await;
    assert_eq!(status, 202);
    let (ids, _) = w.payment_batch(1).await;
    assert_eq!(ids[0], body["payment_id"].as_str().unwrap(), "a replay, not a second event");
    assert_eq!(w.count("SELECT count(*) FROM payments").await, 1);
}

/// A consumer killed after its commit, before the batch returns: the event
/// source redelivers the whole batch to a fresh process, which changes nothing.
async fn consumer_redelivered_after_a_crash(function: &str, step: &str, check: &[(&str, i64)]) {
    let w = world().await;
    let pay = host(w.config(), "pay", None).await;
    for key in ["visit-1", "visit-2", "visit-3"] {
        let (status, _) = answer(&pay.invoke("pay", w.payment_request(key)).await.unwrap());
        assert_eq!(status, 202);
    }
    pay.shutdown().await;
    let (_, batch) = w.payment_batch(3).await;

    let crashing = host(w.config(), function, Some(step)).await;
    crashes(&crashing, function, batch.clone()).await;
    crashing.shutdown().await;
    let after_crash: Vec<i64> = futures_counts(&w, check).await;

    let healthy = host(w.config(), function, None).await;
    healthy.invoke(function, batch.clone()).await.expect("redelivered batch succeeds");
    healthy.invoke(function, batch).await.expect("and again");
    healthy.shutdown().await;
    for ((sql, expected), before) in check.iter().zip(after_crash) {
        assert_eq!(w.count(sql).await, *expected, "{function}: {sql}");
        assert_eq!(before, *expected, "{function}: the crashed run had committed: {sql}");
    }
}

async fn futures_counts(w: &World, check: &[(&str, i64)]) -> Vec<i64> {
    let mut out = Vec::with_capacity(check.len());
    for (sql, _) in check {
        out.push(w.count(sql).await);
    }
    out
}

#[tokio::test]
async fn fds_killed_after_commit_then_redelivered_decides_each_payment_once() {
    consumer_redelivered_after_a_crash("fds-consumer", "fds.after_commit", &[("SELECT count(*) FROM transactions", 3)]).await;
}

#[tokio::test]
async fn loyalty_killed_after_commit_then_redelivered_counts_each_visit_once() {
    consumer_redelivered_after_a_crash(
        "loyalty-consumer",
        "loyalty.after_commit",
        &[("SELECT count(*) FROM loyalty_visits", 3), ("SELECT COALESCE(sum(visits), 0)::bigint FROM loyalty_counts", 3)],
    )
    .await;
}

#[tokio::test]
async fn benefit_killed_after_commit_then_redelivered_tips_each_payment_once() {
    // Alice pays with her everyday card at a café; her café card earns more.
    consumer_redelivered_after_a_crash("benefit-consumer", "benefit.after_commit", &[("SELECT count(*) FROM benefit_tips", 3)]).await;
}

/// A batch of 40 payers is decided in shards, each its own transaction
/// (`CONSUMER_BATCH_SHARDS`, 2). The process dies right after the first
/// shard commits, whatever the other shard had done by then; the
/// redelivered batch completes what is missing and repeats nothing.
async fn sharded_batch_redelivered_after_a_crash(function: &str, step: &str, check: &[&str]) {
    const PAYERS: usize = 40;
    let w = world().await;
    let payers = paystream::testing::bulk_users(&w.platform, PAYERS).await;
    let producer = paystream::kafka::EventProducer::new(&w.config().kafka, "tests").unwrap();
    for (user, _) in &payers {
        let event = paystream::events::PaymentEvent {
            v: paystream::events::EVENT_VERSION,
            payment_id: paystream::domain::new_id(),
            user_id: user.0,
            card_id: uuid::Uuid::new_v4(),
            card_product_id: paystream::demo::EVERYDAY.0,
            merchant_id: SEOUL_CAFE.0,
            merchant_category: "cafe".into(),
            amount: 4_500,
            currency: "KRW".into(),
            country: "KR".into(),
            lat: 37.5665,
            lon: 126.978,
            occurred_at: time::OffsetDateTime::now_utc(),
        };
        let (key, payload) = (user.0.to_string(), serde_json::to_vec(&event).unwrap());
        let record = paystream::kafka::OutgoingRecord { topic: &w.config().kafka.payment_topic, key: key.as_bytes(), payload: &payload, headers: &[] };
        producer.publish(record).await.unwrap();
    }
    let (_, batch) = w.payment_batch(PAYERS).await;

    let crashing = host(w.config(), function, Some(step)).await;
    crashes(&crashing, function, batch.clone()).await;
    crashing.shutdown().await;
    for sql in check {
        let committed = w.count(sql).await;
        assert!(committed > 0, "{function}: a shard had committed before the crash: {sql}");
        eprintln!("{function}: {committed} of {PAYERS} committed when the process died: {sql}");
    }

    let healthy = host(w.config(), function, None).await;
    healthy.invoke(function, batch.clone()).await.expect("redelivered batch succeeds");
    healthy.invoke(function, batch).await.expect("and again");
    healthy.shutdown().await;
    for sql in check {
        assert_eq!(w.count(sql).await, PAYERS as i64, "{function}: {sql}");
    }
}

#[tokio::test]
async fn fds_killed_after_one_shard_committed_then_redelivered_decides_each_payment_once() {
    sharded_batch_redelivered_after_a_crash(
        "fds-consumer",
        "fds.after_commit",
        &["SELECT count(*) FROM transactions", "SELECT count(DISTINCT payment_id) FROM transactions"],
    )
    .await;
}

#[tokio::test]
async fn loyalty_killed_after_one_shard_committed_then_redelivered_counts_each_visit_once() {
    sharded_batch_redelivered_after_a_crash(
        "loyalty-consumer",
        "loyalty.after_commit",
        &["SELECT count(*) FROM loyalty_visits", "SELECT COALESCE(sum(visits), 0)::bigint FROM loyalty_counts"],
    )
    .await;
}
