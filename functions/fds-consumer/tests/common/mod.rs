//! The world the FDS tests share: a fresh database and topics, the FDS
//! consumer and the verify function on the same configuration, and helpers
//! to deliver events through the real broker as MSK events.

#![allow(dead_code)] // each test binary uses a different part

use std::time::Duration;

use fds_consumer::Fds;
use paystream::config::Config;
use paystream::demo::{ALICE, ALICE_EVERYDAY_CARD};
use paystream::events::{PaymentEvent, EVENT_VERSION};
use paystream::http::respond;
use paystream::kafka::{EventProducer, OutgoingRecord};
use paystream::msk::{handle_event, BatchOutcome};
use paystream::testing::{apigw_request, create_topics, fresh_config, msk_event, read_topic, seed};
use paystream::Platform;
use time::OffsetDateTime;
use uuid::Uuid;
use verify::VerifyApi;

/// Coordinates and country of the seeded merchants used here.
pub const SEOUL: (&str, f64, f64) = ("KR", 37.5665, 126.9780);
pub const BUSAN: (&str, f64, f64) = ("KR", 35.1796, 129.0756);
pub const PARIS: (&str, f64, f64) = ("FR", 48.8566, 2.3522);

pub fn hours(n: i64) -> time::Duration {
    time::Duration::hours(n)
}

pub struct World {
    pub config: Config,
    pub fds: Fds,
    pub verify: VerifyApi,
    pub producer: EventProducer,
    pub published: usize,
}

impl World {
    pub async fn new() -> Self {
        Self::with_config(fresh_config().await).await
    }

    pub async fn with_config(config: Config) -> Self {
        let topic = config.kafka.payment_topic.clone();
        create_topics(&config, &[(&topic, 3), (&format!("{topic}.dlq"), 1)]).await;
        let fds = Fds::new(Platform::from_config("fds-consumer", config.clone()).unwrap());
        seed(&fds.platform).await;
        let verify = VerifyApi::new(Platform::from_config("verify", config.clone()).unwrap());
        let producer = EventProducer::new(&config.kafka, "tests").unwrap();
        Self { config, fds, verify, producer, published: 0 }
    }

    pub fn payment(&self, (country, lat, lon): (&str, f64, f64), merchant: Uuid, at: OffsetDateTime) -> PaymentEvent {
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

    /// Publishes raw values (keyed by alice, with an `event-type` header as
    /// pay sends) and returns the MSK event that delivers exactly them.
    pub async fn deliver_raw(&mut self, values: &[Vec<u8>]) -> aws_lambda_events::event::kafka::KafkaEvent {
        for value in values {
            let key = ALICE.to_string();
            let headers: &[(&str, &[u8])] = &[(paystream::events::HEADER_EVENT_TYPE, b"payment.received")];
            self.producer
                .publish(OutgoingRecord { topic: &self.config.kafka.payment_topic, key: key.as_bytes(), payload: value, headers })
                .await
                .unwrap();
        }
        self.published += values.len();
        let all = read_topic(&self.config, &self.config.kafka.payment_topic, self.published, Duration::from_millis(200)).await;
        let mut fresh: Vec<_> = all.into_iter().filter(|r| values.contains(&r.value)).collect();
        fresh.sort_by_key(|r| (r.partition, r.offset));
        msk_event(&fresh)
    }

    pub async fn deliver(&mut self, events: &[PaymentEvent]) -> aws_lambda_events::event::kafka::KafkaEvent {
        let values: Vec<Vec<u8>> = events.iter().map(|e| serde_json::to_vec(e).unwrap()).collect();
        self.deliver_raw(&values).await
    }

    pub async fn run(&self, event: aws_lambda_events::event::kafka::KafkaEvent) -> BatchOutcome {
        handle_event(&self.fds, event, "test-invocation").await.expect("batch handled")
    }

    pub async fn status(&self, payment: Uuid) -> (String, Option<String>) {
        let db = self.fds.platform.pg.get().await.unwrap();
        let row = db.query_one("SELECT status, reason FROM transactions WHERE payment_id = $1", &[&payment]).await.unwrap();
        (row.get(0), row.get(1))
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        self.fds.platform.pg.get().await.unwrap().query_one(sql, &[]).await.unwrap().get(0)
    }

    pub async fn sms_bodies(&self) -> Vec<String> {
        let db = self.fds.platform.pg.get().await.unwrap();
        db.query("SELECT body FROM sms_outbox WHERE user_id = $1 ORDER BY id", &[&ALICE.0]).await.unwrap().iter().map(|r| r.get(0)).collect()
    }

    /// The token in the newest SMS link.
    pub async fn last_token(&self) -> String {
        let bodies = self.sms_bodies().await;
        let body = bodies.last().expect("an SMS was sent");
        let link = body.split_whitespace().find(|w| w.contains("/verify/")).expect("the SMS carries the link");
        assert!(link.starts_with(&format!("{}/verify/", self.config.public_base_url)));
        link.rsplit('/').next().unwrap().to_owned()
    }

    pub async fn verify(&self, method: &str, token: &str, decision: Option<&str>, accept: &str) -> (u16, String) {
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

