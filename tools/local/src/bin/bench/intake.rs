//! Payment intake: `POST /payments` through the pay function's handler, in
//! process (the same code Lambda runs, minus the Runtime API hop), with many
//! requests in flight as many concurrent Lambda environments would send.
//! Each answer is a 202 only after PostgreSQL committed the payment and
//! idempotency key and the broker acknowledged the event.
//!
//! Baseline, same run: publishing the same events straight to the broker
//! with the same producer settings (acks=all, idempotent) and concurrency,
//! the floor of a broker-acknowledged intake.
//!
//! The events go to a topic of their own, so no consumer group of the local
//! stack ever sees them.

use std::sync::Arc;

use paystream::apigw::v2_request;
use paystream::kafka::{create_topics, EventProducer, OutgoingRecord};
use paystream::Platform;

use crate::consumers::{create_users, payment_requests};
use crate::stats::{drive, print, summarise};

pub async fn run(payments: usize, concurrency: usize) {
    assert!(payments > 0 && concurrency > 0, "payments and concurrency must be positive");
    let (mut config, suffix) = crate::stats::isolated_config().await;
    config.kafka.payment_topic = format!("bench-payments-{suffix}");
    create_topics(&config.kafka, &[(config.kafka.payment_topic.as_str(), 3)]).await.expect("bench topic");
    let platform = Platform::from_config("pay", config.clone()).expect("platform");
    let users = create_users(&platform.pg, &suffix).await;
    let requests = Arc::new(payment_requests(&platform.tokens, &users, 10_000));
    let api = Arc::new(pay::PayApi::new(platform));
    let pay = move |i: usize| {
        let (api, requests) = (Arc::clone(&api), Arc::clone(&requests));
        async move {
            let (auth, body) = &requests[i % requests.len()];
            let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
            let answer = paystream::http::respond(api.as_ref(), v2_request("POST", "/payments", &headers, Some(body))).await;
            assert_eq!(answer.status(), 202, "payment accepted");
        }
    };
    // Opens the pool and the producer before the clock starts.
    pay(0).await;

    println!("payment intake: {payments} payments by {} users, {concurrency} in flight", users.len());
    let intake = summarise("paystream POST /payments (202)", drive(payments, concurrency, pay).await);

    // Baseline: the same number of same-sized events, published directly.
    let producer = Arc::new(EventProducer::new(&config.kafka, "bench").expect("producer"));
    let topic: Arc<str> = config.kafka.payment_topic.clone().into();
    let publish = move |i: usize| {
        let (producer, topic) = (Arc::clone(&producer), Arc::clone(&topic));
        async move {
            let key = i.to_string();
            let payload = [b'x'; 420];
            producer.publish(OutgoingRecord { topic: &topic, key: key.as_bytes(), payload: &payload, headers: &[] }).await.expect("publish");
        }
    };
    let publish = summarise("baseline: broker publish only", drive(payments, concurrency, publish).await);
    print("payments/s", &[&intake, &publish], &publish);
}
