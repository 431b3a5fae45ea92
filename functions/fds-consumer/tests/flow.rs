//! Impossible travel end to end on the real services: events go through the
//! broker, come back as MSK events, FDS decides, the SMS link is used on the
//! `verify` function, and the sweep expires what nobody answered.

mod common;

use std::time::Duration;

use common::{hours, World, BUSAN, PARIS, SEOUL};
use paystream::demo::{ALICE, BUSAN_GRILL, PARIS_CAFE, SEOUL_CAFE};
use paystream::http::{respond, ScheduledJob};
use paystream::msk::BatchOutcome;
use paystream::testing::{apigw_request, body_json, msk_event, read_topic, user, LogCapture};
use paystream::Platform;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

#[tokio::test]
async fn seoul_then_paris_needs_approval_and_approval_moves_the_holder() {
    let logs = LogCapture::global();
    let mut w = World::new().await;
    let t0 = OffsetDateTime::now_utc() - hours(3);
    let seoul = w.payment(SEOUL, SEOUL_CAFE.0, t0);
    let paris = w.payment(PARIS, PARIS_CAFE.0, t0 + hours(1));
    let batch = w.deliver(&[seoul.clone(), paris.clone()]).await;
    assert_eq!(w.run(batch).await, BatchOutcome { applied: 2, duplicates: 0, dead_lettered: 0 });
    assert_eq!(w.status(seoul.payment_id).await, ("COMPLETED".into(), None));
    assert_eq!(w.status(paris.payment_id).await, ("PENDING".into(), Some("IMPOSSIBLE_TRAVEL".into())));

    // The SMS link opens a page with the payment and both buttons; GET changes nothing.
    let token = w.last_token().await;
    let (status, page) = w.verify("GET", &token, None, "text/html").await;
    assert_eq!(status, 200);
    assert!(page.contains("Paris Croissant") && page.contains("10,000 KRW") && page.contains("id=\"approve\"") && page.contains("id=\"deny\""));
    assert_eq!(w.verify("GET", &token, None, "text/html").await.0, 200, "GET is safe to repeat");
    assert_eq!(w.status(paris.payment_id).await.0, "PENDING");

    let (status, body) = w.verify("POST", &token, Some("approve"), "application/json").await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "COMPLETED");
    assert_eq!(w.status(paris.payment_id).await, ("COMPLETED".into(), Some("APPROVED_BY_HOLDER".into())));

    // The holder is now in Paris: another Paris payment is fine.
    let paris_again = w.payment(PARIS, PARIS_CAFE.0, t0 + hours(2));
    let batch = w.deliver(&[paris_again.clone()]).await;
    w.run(batch).await;
    assert_eq!(w.status(paris_again.payment_id).await.0, "COMPLETED");
    assert_eq!(w.sms_bodies().await.len(), 1);

    // Neither the token nor a seeded PAN ever reaches a log line.
    let captured = logs.text();
    assert!(captured.contains("holder decided"), "logs were captured");
    assert!(!captured.contains(&token), "verification token logged");
    for user in paystream::demo::DEMO_USERS {
        for (_, _, pan) in user.cards {
            assert!(!captured.contains(pan), "PAN logged");
        }
    }
}

async fn payment_status(pay: &pay::PayApi, id: &str, bearer: &str) -> Value {
    let headers = [("authorization", bearer)];
    body_json(&respond(pay, apigw_request("GET", &format!("/payments/{id}"), &headers, None)).await)["status"].clone()
}

/// `pay` accepts, FDS decides from the real event, and `GET /payments/{id}`
/// moves from RECEIVED to the ledger's status.
#[tokio::test]
async fn the_payment_status_follows_the_fds_decision() {
    let mut w = World::new().await;
    let pay = pay::PayApi::new(Platform::from_config("pay", w.config.clone()).unwrap());
    let alice = user(&pay.platform, "alice").await;
    let bearer = alice.bearer();
    let headers = [("content-type", "application/json"), ("authorization", bearer.as_str())];
    let body = serde_json::json!({"card_id": alice.cards[0], "merchant_id": SEOUL_CAFE.to_string(), "amount": 4_500, "currency": "KRW"}).to_string();
    let response = respond(&pay, apigw_request("POST", "/payments", &headers, Some(&body))).await;
    assert_eq!(response.status(), 202);
    let id = body_json(&response)["payment_id"].as_str().unwrap().to_owned();
    assert_eq!(payment_status(&pay, &id, &bearer).await, "RECEIVED");

    w.published += 1;
    let records = read_topic(&w.config, &w.config.kafka.payment_topic, 1, Duration::from_millis(200)).await;
    w.run(msk_event(&records)).await;
    assert_eq!(payment_status(&pay, &id, &bearer).await, "COMPLETED");
}

#[tokio::test]
async fn seoul_to_busan_an_hour_apart_is_domestic_and_completes() {
    let mut w = World::new().await;
    let t0 = OffsetDateTime::now_utc() - hours(2);
    let seoul = w.payment(SEOUL, SEOUL_CAFE.0, t0);
    let busan = w.payment(BUSAN, BUSAN_GRILL.0, t0 + hours(1));
    let batch = w.deliver(&[seoul.clone(), busan.clone()]).await;
    w.run(batch).await;
    assert_eq!(w.status(seoul.payment_id).await.0, "COMPLETED");
    assert_eq!(w.status(busan.payment_id).await.0, "COMPLETED");
    assert!(w.sms_bodies().await.is_empty());
}

#[tokio::test]
async fn denial_locks_the_holder_and_their_next_payment_is_denied() {
    let mut w = World::new().await;
    let t0 = OffsetDateTime::now_utc() - hours(3);
    let batch = w.deliver(&[w.payment(SEOUL, SEOUL_CAFE.0, t0), w.payment(PARIS, PARIS_CAFE.0, t0 + hours(1))]).await;
    w.run(batch).await;
    let token = w.last_token().await;
    let (status, page) = w.verify("POST", &token, Some("deny"), "text/html").await;
    assert_eq!(status, 200);
    assert!(page.contains("Payment denied"));
    assert_eq!(w.scalar("SELECT count(*) FROM users WHERE status = 'LOCKED'").await, 1);
    assert_eq!(w.scalar("SELECT count(*) FROM transactions WHERE status = 'DENIED' AND reason = 'DENIED_BY_HOLDER'").await, 1);
    assert_eq!(w.scalar("SELECT count(*) FROM notifications WHERE kind = 'VERIFICATION_DENIED'").await, 1);

    let next = w.payment(SEOUL, SEOUL_CAFE.0, t0 + hours(2));
    let batch = w.deliver(&[next.clone()]).await;
    w.run(batch).await;
    assert_eq!(w.status(next.payment_id).await, ("DENIED".into(), Some("HOLDER_LOCKED".into())));
}

#[tokio::test]
async fn a_batch_delivered_twice_records_each_payment_once_and_sends_one_sms() {
    let mut w = World::new().await;
    let t0 = OffsetDateTime::now_utc() - hours(3);
    let seoul = w.payment(SEOUL, SEOUL_CAFE.0, t0);
    let paris = w.payment(PARIS, PARIS_CAFE.0, t0 + hours(1));
    let batch = w.deliver(&[seoul.clone(), paris.clone()]).await;
    let first = w.run(batch.clone()).await;
    let second = w.run(batch).await;
    assert_eq!((first.applied, second.applied, second.duplicates), (2, 0, 2));
    assert_eq!(w.scalar("SELECT count(*) FROM transactions").await, 2);
    assert_eq!(w.scalar("SELECT count(*) FROM verifications").await, 1);
    assert_eq!(w.sms_bodies().await.len(), 1);

    // The same payment twice in one batch (the stream repeated it).
    let busan = w.payment(BUSAN, BUSAN_GRILL.0, t0 + hours(2));
    let batch = w.deliver(&[busan.clone(), busan.clone()]).await;
    let outcome = w.run(batch).await;
    assert_eq!((outcome.applied, outcome.duplicates), (1, 1));
}

#[tokio::test]
async fn forged_expired_and_reused_tokens_are_refused() {
    let mut w = World::new().await;
    assert_eq!(w.verify("GET", &"ab".repeat(16), None, "application/json").await.0, 404, "unknown");
    assert_eq!(w.verify("GET", "not-a-token", None, "application/json").await.0, 404, "malformed");
    let (status, page) = w.verify("GET", &"cd".repeat(16), None, "text/html").await;
    assert_eq!(status, 404);
    assert!(page.contains("NOT_FOUND"), "browsers get an HTML error page");

    let t0 = OffsetDateTime::now_utc() - hours(3);
    let batch = w.deliver(&[w.payment(SEOUL, SEOUL_CAFE.0, t0), w.payment(PARIS, PARIS_CAFE.0, t0 + hours(1))]).await;
    w.run(batch).await;
    let token = w.last_token().await;
    assert_eq!(w.verify("POST", &token, Some("maybe"), "application/json").await.0, 400);
    assert_eq!(w.verify("POST", &token, Some("approve"), "application/json").await.0, 200);
    let (status, body) = w.verify("POST", &token, Some("deny"), "application/json").await;
    assert_eq!(status, 409);
    assert!(body.contains("TOKEN_USED"));
    assert_eq!(w.verify("GET", &token, None, "application/json").await.0, 409);

    // A second suspicious payment whose link expires.
    let far = w.payment(PARIS, PARIS_CAFE.0, t0 + hours(1) + time::Duration::minutes(10));
    let tokyo = w.payment(("JP", 35.6762, 139.6503), PARIS_CAFE.0, t0 + hours(2));
    let batch = w.deliver(&[far, tokyo.clone()]).await;
    w.run(batch).await;
    assert_eq!(w.status(tokyo.payment_id).await.0, "PENDING");
    let token = w.last_token().await;
    w.scalar("WITH x AS (UPDATE verifications SET expires_at = now() - interval '1 second' WHERE status = 'PENDING' RETURNING 1) SELECT count(*) FROM x").await;
    let (status, body) = w.verify("POST", &token, Some("approve"), "application/json").await;
    assert_eq!(status, 410);
    assert!(body.contains("TOKEN_EXPIRED"));
    assert_eq!(w.status(tokyo.payment_id).await.0, "PENDING", "an expired link decides nothing");
}

#[tokio::test]
async fn the_sweep_denies_payments_nobody_verified_in_time() {
    let mut w = World::new().await;
    let t0 = OffsetDateTime::now_utc() - hours(3);
    let paris = w.payment(PARIS, PARIS_CAFE.0, t0 + hours(1));
    let batch = w.deliver(&[w.payment(SEOUL, SEOUL_CAFE.0, t0), paris.clone()]).await;
    w.run(batch).await;
    let report = w.verify.run_scheduled().await.unwrap();
    assert_eq!(report["denied"], 0, "not yet due");
    w.scalar("WITH x AS (UPDATE verifications SET expires_at = now() - interval '1 second' RETURNING 1) SELECT count(*) FROM x").await;
    let report = w.verify.run_scheduled().await.unwrap();
    assert_eq!(report["denied"], 1);
    assert_eq!(w.status(paris.payment_id).await, ("DENIED".into(), Some("VERIFICATION_EXPIRED".into())));
    let token = w.last_token().await;
    assert_eq!(w.verify("GET", &token, None, "application/json").await.0, 410);
}

#[tokio::test]
async fn poison_records_go_to_the_dlq_and_the_batch_goes_on() {
    let mut w = World::new().await;
    let good = w.payment(SEOUL, SEOUL_CAFE.0, OffsetDateTime::now_utc());
    let mut wrong_version = serde_json::to_value(w.payment(SEOUL, SEOUL_CAFE.0, OffsetDateTime::now_utc())).unwrap();
    wrong_version["v"] = 9.into();
    let values = vec![b"{not json".to_vec(), serde_json::to_vec(&good).unwrap(), serde_json::to_vec(&wrong_version).unwrap()];
    let batch = w.deliver_raw(&values).await;
    let outcome = w.run(batch).await;
    assert_eq!((outcome.applied, outcome.dead_lettered), (1, 2));
    assert_eq!(w.status(good.payment_id).await.0, "COMPLETED");

    let dlq = read_topic(&w.config, &format!("{}.dlq", w.config.kafka.payment_topic), 2, Duration::from_millis(500)).await;
    assert_eq!(dlq.len(), 2);
    let reasons: Vec<String> = dlq
        .iter()
        .map(|r| String::from_utf8(r.headers.iter().find(|(k, _)| k == "dlq-reason").expect("reason header").1.clone()).unwrap())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("JSON")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("version 9")), "{reasons:?}");
    assert!(dlq.iter().any(|r| r.value == b"{not json"), "the original bytes are kept");
    for r in &dlq {
        assert_eq!(r.key.as_deref(), Some(ALICE.to_string().as_bytes()), "the original key is kept");
        let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["dlq-reason", "dlq-source-topic", "dlq-source-partition", "dlq-source-offset", "dlq-consumer", "event-type"], "the original headers follow the DLQ's");
        assert_eq!(r.headers[5].1, b"payment.received");
    }
}

/// MSK never sends headers that are not its list of byte arrays, but an
/// event made by hand can: the poison record still reaches the DLQ, its
/// headers as the raw JSON, and the batch goes on (failing would fail the
/// batch on every redelivery).
#[tokio::test]
async fn a_poison_record_with_unreadable_headers_goes_to_the_dlq_with_them_raw() {
    let mut w = World::new().await;
    let good = w.payment(SEOUL, SEOUL_CAFE.0, OffsetDateTime::now_utc());
    let batch = w.deliver_raw(&[b"{not json".to_vec(), serde_json::to_vec(&good).unwrap()]).await;
    // The invocation's body as the runtime receives it, the poison
    // record's headers replaced by something that is JSON but not headers.
    let mut body = serde_json::to_value(&batch).unwrap();
    let unreadable = r#"[{"event-type":[300]}]"#;
    let records = body["records"].as_object_mut().unwrap().values_mut().flat_map(|r| r.as_array_mut().unwrap().iter_mut());
    // Both are alice's, so on one partition: the poison one was published first.
    let poison = records.min_by_key(|r| r["offset"].as_i64().unwrap()).expect("the poison record");
    poison["headers"] = serde_json::from_str(unreadable).unwrap();
    let records = paystream::msk::parse_records(&bytes::Bytes::from(serde_json::to_vec(&body).unwrap())).unwrap();

    let outcome = paystream::msk::handle_records(&w.fds, records, "test-invocation").await.expect("the batch goes on");
    assert_eq!((outcome.applied, outcome.dead_lettered), (1, 1));
    assert_eq!(w.status(good.payment_id).await.0, "COMPLETED");
    let dlq = read_topic(&w.config, &format!("{}.dlq", w.config.kafka.payment_topic), 1, Duration::from_millis(500)).await;
    assert_eq!(dlq.len(), 1);
    let header = |name: &str| dlq[0].headers.iter().find(|(k, _)| k == name).map(|(_, v)| String::from_utf8(v.clone()).unwrap());
    assert_eq!(dlq[0].value, b"{not json", "the original bytes are kept");
    assert_eq!(header(paystream::msk::HEADER_DLQ_ORIGINAL_HEADERS).as_deref(), Some(unreadable), "the headers as MSK's JSON");
    let why = header(paystream::msk::HEADER_DLQ_HEADERS_ERROR).expect("why they were not read");
    assert!(why.contains("[0.event-type[0]]") || why.contains("event-type"), "{why}");
    assert!(header("dlq-reason").unwrap().contains("JSON"));
    assert_eq!(header("event-type"), None, "nothing was read from them");
}

#[tokio::test]
async fn last_locations_come_back_from_postgres_when_redis_lost_them() {
    let mut w = World::new().await;
    let t0 = OffsetDateTime::now_utc() - hours(3);
    let batch = w.deliver(&[w.payment(SEOUL, SEOUL_CAFE.0, t0)]).await;
    w.run(batch).await;

    // Drop this test's keys, as a Redis restart would.
    let mut conn = w.fds.platform.redis.conn().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}*", w.fds.platform.redis.prefix())).query_async(&mut conn).await.unwrap();
    assert!(!keys.is_empty(), "the location was cached");
    let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();

    let paris = w.payment(PARIS, PARIS_CAFE.0, t0 + hours(1));
    let batch = w.deliver(&[paris.clone()]).await;
    w.run(batch).await;
    assert_eq!(w.status(paris.payment_id).await.0, "PENDING", "Seoul was remembered through PostgreSQL");
}

#[tokio::test]
async fn verification_sms_are_rate_limited_per_user() {
    let mut w = World::new().await;
    let limit = w.config.sms.rate_limit_per_window as i64;
    let t0 = OffsetDateTime::now_utc() - hours(10);
    let mut events = vec![w.payment(SEOUL, SEOUL_CAFE.0, t0)];
    // Alternate far-away countries within minutes: every one after the first is suspicious.
    for i in 0..(limit + 2) {
        events.push(w.payment(PARIS, PARIS_CAFE.0, t0 + time::Duration::minutes(i + 1)));
    }
    let batch = w.deliver(&events).await;
    w.run(batch).await;
    assert_eq!(w.scalar("SELECT count(*) FROM transactions WHERE status = 'PENDING'").await, limit + 2);
    assert_eq!(w.sms_bodies().await.len() as i64, limit);
}

#[tokio::test]
async fn an_older_payment_never_moves_the_holder_back_in_time() {
    let mut w = World::new().await;
    let t0 = OffsetDateTime::now_utc() - hours(5);
    // Seoul at t0, Paris at t0+1h (held), then Seoul again at t0+3h.
    let seoul = w.payment(SEOUL, SEOUL_CAFE.0, t0);
    let paris = w.payment(PARIS, PARIS_CAFE.0, t0 + hours(1));
    let batch = w.deliver(&[seoul, paris.clone()]).await;
    w.run(batch).await;
    assert_eq!(w.status(paris.payment_id).await.0, "PENDING");
    let token = w.last_token().await;
    let seoul_later = w.payment(SEOUL, SEOUL_CAFE.0, t0 + hours(3));
    let batch = w.deliver(&[seoul_later.clone()]).await;
    w.run(batch).await;
    assert_eq!(w.status(seoul_later.payment_id).await.0, "COMPLETED");

    // Approving the older Paris payment must not move the holder back to
    // Paris: not in PostgreSQL, and not in the cache.
    assert_eq!(w.verify("POST", &token, Some("approve"), "application/json").await.0, 200);
    let db = w.fds.platform.pg.get().await.unwrap();
    let stored: Uuid = db.query_one("SELECT payment_id FROM holder_locations WHERE user_id = $1", &[&ALICE.0]).await.unwrap().get(0);
    assert_eq!(stored, seoul_later.payment_id);
    let located = paystream::store::holders::last_locations(&w.fds.platform.redis, &**db, &[ALICE.0]).await.unwrap();
    assert_eq!(located[&ALICE.0].payment_id, seoul_later.payment_id, "the cache is never older than the store");

    // A late-arriving older payment in one batch does not move it back either.
    let busan_early = w.payment(BUSAN, SEOUL_CAFE.0, t0 + hours(2));
    let batch = w.deliver(&[busan_early]).await;
    w.run(batch).await;
    let stored: Uuid = db.query_one("SELECT payment_id FROM holder_locations WHERE user_id = $1", &[&ALICE.0]).await.unwrap().get(0);
    assert_eq!(stored, seoul_later.payment_id);
    let located = paystream::store::holders::last_locations(&w.fds.platform.redis, &**db, &[ALICE.0]).await.unwrap();
    assert_eq!(located[&ALICE.0].payment_id, seoul_later.payment_id);
}

#[tokio::test]
async fn an_event_whose_intake_never_committed_becomes_the_payment_record() {
    let mut w = World::new().await;
    let orphan = w.payment(SEOUL, SEOUL_CAFE.0, OffsetDateTime::now_utc());
    let batch = w.deliver(&[orphan.clone()]).await;
    w.run(batch.clone()).await;
    w.run(batch).await;
    let db = w.fds.platform.pg.get().await.unwrap();
    let row = db.query_one("SELECT count(*), min(amount) FROM payments WHERE id = $1", &[&orphan.payment_id]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, Option<i64>>(1)), (1, Some(orphan.amount)));
    assert_eq!(w.status(orphan.payment_id).await.0, "COMPLETED");
}
