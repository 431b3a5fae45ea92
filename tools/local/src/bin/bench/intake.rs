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
use std::time::{Duration, Instant};

use paystream::apigw::v2_request;
use paystream::config::Config;
use paystream::domain::{Role, UserId};
use paystream::kafka::{create_topics, EventProducer, OutgoingRecord};
use paystream::Platform;
use uuid::Uuid;

use crate::consumers::create_users;

struct Run {
    name: &'static str,
    per_s: f64,
    p50: Duration,
    p99: Duration,
}

fn summarise(name: &'static str, mut latencies: Vec<Duration>, elapsed: Duration) -> Run {
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    Run { name, per_s: latencies.len() as f64 / elapsed.as_secs_f64(), p50: pick(0.50), p99: pick(0.99) }
}

pub async fn run(payments: usize, concurrency: usize) {
    assert!(payments > 0 && concurrency > 0, "payments and concurrency must be positive");
    let mut config = Config::from_env().expect("configuration");
    let suffix = Uuid::new_v4().simple().to_string()[..12].to_owned();
    config.redis.key_prefix = format!("bench:{suffix}:");
    config.kafka.payment_topic = format!("bench-payments-{suffix}");
    create_topics(&config.kafka, &[(config.kafka.payment_topic.as_str(), 3)]).await.expect("bench topic");
    let platform = Platform::from_config("pay", config.clone()).expect("platform");
    let users = create_users(&platform.pg, &suffix).await;
    let requests: Arc<Vec<(String, String)>> = Arc::new(
        users
            .iter()
            .map(|u| {
                let token = platform.tokens.issue(UserId(u.id), Role::User).expect("token").access_token;
                let body = serde_json::json!({"card_id": u.everyday_card, "merchant_id": paystream::demo::SEOUL_CAFE.0, "amount": 10_000, "currency": "KRW"});
                (format!("Bearer {token}"), body.to_string())
            })
            .collect(),
    );
    let api = Arc::new(pay::PayApi::new(platform));
    // Opens the pool and the producer before the clock starts.
    let (auth, body) = &requests[0];
    let warm = paystream::http::respond(api.as_ref(), v2_request("POST", "/payments", &[("content-type", "application/json"), ("authorization", auth)], Some(body))).await;
    assert_eq!(warm.status(), 202, "warm-up payment accepted");

    println!("payment intake: {payments} payments by {} users, {concurrency} in flight", users.len());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let (api, requests) = (Arc::clone(&api), Arc::clone(&requests));
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for i in (t..payments).step_by(concurrency) {
                let (auth, body) = &requests[i % requests.len()];
                let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
                let begun = Instant::now();
                let answer = paystream::http::respond(api.as_ref(), v2_request("POST", "/payments", &headers, Some(body))).await;
                assert_eq!(answer.status(), 202, "payment accepted");
                latencies.push(begun.elapsed());
            }
            latencies
        });
    }
    let mut latencies = Vec::with_capacity(payments);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.expect("intake task"));
    }
    let intake = summarise("paystream POST /payments (202)", latencies, started.elapsed());

    // Baseline: the same number of same-sized events, published directly.
    let producer = Arc::new(EventProducer::new(&config.kafka, "bench").expect("producer"));
    let topic: Arc<str> = config.kafka.payment_topic.clone().into();
    let sample = Arc::new(vec![b'x'; 420]);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let (producer, topic, sample) = (Arc::clone(&producer), Arc::clone(&topic), Arc::clone(&sample));
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for i in (t..payments).step_by(concurrency) {
                let key = i.to_string();
                let begun = Instant::now();
                producer.publish(OutgoingRecord { topic: &topic, key: key.as_bytes(), payload: &sample, headers: &[] }).await.expect("publish");
                latencies.push(begun.elapsed());
            }
            latencies
        });
    }
    let mut latencies = Vec::with_capacity(payments);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.expect("publish task"));
    }
    let publish = summarise("baseline: broker publish only", latencies, started.elapsed());

    println!("{:<34} {:>12} {:>9} {:>9} {:>12}", "path", "payments/s", "p50 ms", "p99 ms", "vs publish");
    for run in [&intake, &publish] {
        println!(
            "{:<34} {:>12.0} {:>9.2} {:>9.2} {:>11.3}x",
            run.name,
            run.per_s,
            run.p50.as_secs_f64() * 1e3,
            run.p99.as_secs_f64() * 1e3,
            run.per_s / publish.per_s
        );
    }
}
