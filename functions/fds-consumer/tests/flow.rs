//! Impossible travel end to end on the real services: events go through the
//! broker, come back as MSK events, FDS decides, the SMS link is used on the
//! `verify` function, and the sweep expires what nobody answered.

use std::time::Duration;

use fds_consumer::Fds;
use paystream::config::Config;
use paystream::demo::{ALICE, ALICE_EVERYDAY_CARD, BUSAN_GRILL, PARIS_CAFE, SEOUL_CAFE};
use paystream::events::{PaymentEvent, EVENT_VERSION};
use paystream::http::{respond, ScheduledJob};
use paystream::kafka::{EventProducer, OutgoingRecord};
use paystream::msk::{handle_event, BatchOutcome};
use paystream::testing::{apigw_request, create_topics, fresh_config, msk_event, read_topic, seed};
use paystream::Platform;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;
use verify::VerifyApi;

struct World {
    config: Config,
    fds: Fds,
    verify: VerifyApi,
    producer: EventProducer,
    published: usize,
}

/// Coordinates and country of the seeded merchants used here.
const SEOUL: (&str, f64, f64) = ("KR", 37.5665, 126.9780);
const BUSAN: (&str, f64, f64) = ("KR", 35.1796, 129.0756);
const PARIS: (&str, f64, f64) = ("FR", 48.8566, 2.3522);

impl World {
    async fn new() -> Self {
        let config = fresh_config().await;
        let topic = config.kafka.payment_topic.clone();
        create_topics(&config, &[(&topic, 3), (&format!("{topic}.dlq"), 1)]).await;
        let fds = Fds::new(Platform::from_config("fds-consumer", config.clone()).unwrap());
        seed(&fds.platform).await;
        let verify = VerifyApi::new(Platform::from_config("verify", config.clone()).unwrap());
        let producer = EventProducer::new(&config.kafka, "tests").unwrap();
        Self { config, fds, verify, producer, published: 0 }
    }

    fn payment(&self, (country, lat, lon): (&str, f64, f64), merchant: Uuid, at: OffsetDateTime) -> PaymentEvent {
        PaymentEvent {
            v: EVENT_VERSION,
            payment_id: Uuid::new_v4(),
            user_id: ALICE.0,
            card_id: ALICE_EVERYDAY_CARD.0,
            card_product_id: paystream::demo::EVERYDAY.0,
            merchant_id: merchant,
            merchant_category: "cafe".into(),
            amount: 10_000,
            currency: "KRW".into(),
            country: country.into(),
            lat,
            lon,
            occurred_at: at,
        }
    }

    /// Publishes raw values (keyed by alice) and returns the MSK event that
    /// delivers exactly them.
    async fn deliver_raw(&mut self, values: &[Vec<u8>]) -> aws_lambda_events::event::kafka::KafkaEvent {
        for value in values {
            let key = ALICE.to_string();
            self.producer
                .publish(OutgoingRecord { topic: &self.config.kafka.payment_topic, key: key.as_bytes(), payload: value, headers: &[] })
                .await
                .unwrap();
        }
        self.published += values.len();
        let all = read_topic(&self.config, &self.config.kafka.payment_topic, self.published, Duration::from_millis(200)).await;
        let mut fresh: Vec<_> = all.into_iter().filter(|r| values.contains(&r.value)).collect();
        fresh.sort_by_key(|r| (r.partition, r.offset));
        msk_event(&fresh)
    }

    async fn deliver(&mut self, events: &[PaymentEvent]) -> aws_lambda_events::event::kafka::KafkaEvent {
        let values: Vec<Vec<u8>> = events.iter().map(|e| serde_json::to_vec(e).unwrap()).collect();
        self.deliver_raw(&values).await
    }

    async fn run(&self, event: aws_lambda_events::event::kafka::KafkaEvent) -> BatchOutcome {
        handle_event(&self.fds, event, "test-invocation").await.expect("batch handled")
    }

    async fn status(&self, payment: Uuid) -> (String, Option<String>) {
        let db = self.fds.platform.pg.get().await.unwrap();
        let row = db.query_one("SELECT status, reason FROM transactions WHERE payment_id = $1", &[&payment]).await.unwrap();
        (row.get(0), row.get(1))
    }

    async fn scalar(&self, sql: &str) -> i64 {
        self.fds.platform.pg.get().await.unwrap().query_one(sql, &[]).await.unwrap().get(0)
    }

    async fn sms_bodies(&self) -> Vec<String> {
        let db = self.fds.platform.pg.get().await.unwrap();
        db.query("SELECT body FROM sms_outbox WHERE user_id = $1 ORDER BY id", &[&ALICE.0]).await.unwrap().iter().map(|r| r.get(0)).collect()
    }

    /// The token in the newest SMS link.
    async fn last_token(&self) -> String {
        let bodies = self.sms_bodies().await;
        let body = bodies.last().expect("an SMS was sent");
        let link = body.split_whitespace().find(|w| w.contains("/verify/")).expect("the SMS carries the link");
        assert!(link.starts_with(&format!("{}/verify/", self.config.public_base_url)));
        link.rsplit('/').next().unwrap().to_owned()
    }

    async fn verify(&self, method: &str, token: &str, decision: Option<&str>, accept: &str) -> (u16, String) {
        let form = decision.map(|d| format!("decision={d}"));
        let headers = [("content-type", "application/x-www-form-urlencoded"), ("accept", accept)];
        let response = respond(&self.verify, apigw_request(method, &format!("/verify/{token}"), &headers, form.as_deref())).await;
        let body = match response.body() {
            lambda_http::Body::Text(t) => t.clone(),
            _ => String::new(),
        };
        (response.status().as_u16(), body)
    }
}

fn hours(n: i64) -> time::Duration {
    time::Duration::hours(n)
}

#[tokio::test]
async fn seoul_then_paris_needs_approval_and_approval_moves_the_holder() {
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
    assert!(page.contains("Paris Croissant") && page.contains("10000 KRW") && page.contains("id=\"approve\"") && page.contains("id=\"deny\""));
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
