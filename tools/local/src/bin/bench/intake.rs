//! Payment intake: `POST /payments` as the pay function handles it, every
//! request with its own `Idempotency-Key`, 1,000 payers with their own
//! cards, spread over 100 merchants (each payer at their usual café), each
//! answer a 202 only after the broker acknowledged the event (and the
//! payment row and the key's answer were written right after). The
//! database already holds 100,000 earlier payments with answered keys.
//! Logging and EMF metrics are initialised as in Lambda and written to
//! /dev/null; each invocation flushes its metrics as the runner does.
//!
//! Three execution models, same requests:
//! - Lambda Managed Instances: one execution environment (one pool, one
//!   producer) with `concurrency` invocations at once (`run_concurrent`);
//! - classic Lambda: `concurrency` environments, each with its own pool and
//!   producer, one invocation at a time each;
//! - classic Lambda through the Runtime API: the release `pay` binary under
//!   the local Lambda host, `environments` processes, each invocation a
//!   Runtime API round trip as on Lambda.
//!
//! Baseline, same run: publishing same-sized events straight to the broker
//! with the same producer settings (acks=all, one request in flight per
//! connection, not idempotent) and concurrency.
//! Cost: CPU µs per payment of this process (the in-process handlers), the
//! function processes (Runtime API variant), PostgreSQL, Redis and the
//! broker; Lambda GB-s per million payments from the mean duration at the
//! template's MemorySize (classic Lambda bills each invocation).
//!
//! The events go to a topic of their own, so no consumer group of the local
//! stack ever sees them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use paystream::apigw::{v2_event, v2_request};
use paystream::kafka::{create_topics, EventProducer, OutgoingRecord};
use paystream::Platform;
use paystream_local::host::{FunctionOutput, FunctionSpec, Host, HostConfig};

use crate::consumers::{create_users, payment_requests};
use crate::stats::{costed, print_costed, QuietStdout};

/// A request: its bearer token and body (one per payer, reused).
type Requests = Arc<Vec<(String, String)>>;

/// One `POST /payments` through `api`, as `paystream::http::run` serves it.
async fn pay_in_process(api: &pay::PayApi, requests: &Requests, i: usize, key: &str) {
    let (auth, body) = &requests[i % requests.len()];
    let headers = [("content-type", "application/json"), ("authorization", auth.as_str()), ("idempotency-key", key)];
    paystream::metrics::invocation_started(key);
    let answer = paystream::http::respond(api, v2_request("POST", "/payments", &headers, Some(body))).await;
    paystream::metrics::flush();
    assert_eq!(answer.status(), 202, "payment accepted");
}

/// Payments accepted before the run, with their keys answered.
const HISTORY_PAYMENTS: i32 = 100_000;

/// What a live system has before this run: [`HISTORY_PAYMENTS`] earlier
/// payments by the same payers, their keys answered. The database is new
/// for every run, and statistics taken on empty tables would plan the
/// run's key lookups as scans of the whole table.
async fn record_history(pg: &paystream::db::PgPool, users: &[crate::consumers::User]) {
    let ids: Vec<uuid::Uuid> = users.iter().map(|u| u.id).collect();
    let cards: Vec<uuid::Uuid> = users.iter().map(|u| u.everyday_card).collect();
    let cafes: Vec<uuid::Uuid> = users.iter().map(|u| u.cafe).collect();
    let db = pg.get().await.expect("database");
    db.execute(
        "WITH payer AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]) WITH ORDINALITY AS p(user_id, card_id, cafe, n)),
              history AS (
                  SELECT gen_random_uuid() AS id, p.user_id, p.card_id, p.cafe, i
                  FROM generate_series(1, $4::int) AS i JOIN payer p ON p.n = 1 + i % cardinality($1::uuid[])),
              paid AS (
                  INSERT INTO payments (id, user_id, card_id, merchant_id, amount, currency, created_at)
                  SELECT id, user_id, card_id, cafe, 10000, 'KRW', now() - interval '1 hour' FROM history)
         INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response_body, created_at)
         SELECT 'pay:' || user_id, 'history-' || i, sha256(id::text::bytea), 202,
                jsonb_build_object('payment_id', id, 'status', 'RECEIVED'), now() - interval '1 hour'
         FROM history",
        &[&ids, &cards, &cafes, &HISTORY_PAYMENTS],
    )
    .await
    .expect("intake history");
}

pub async fn run(payments: usize, concurrency: usize, environments: usize) {
    assert!(payments > 0 && concurrency > 0, "payments and concurrency must be positive");
    paystream::telemetry::init("info");
    paystream::metrics::install("bench-intake", Instant::now());
    let template = paystream_local::template::Template::from_env().expect("template.yaml (run from the repository root)");
    let memory_mb = template.functions.iter().find(|f| f.binary == "pay").map_or(128, |f| f.memory_mb);
    let (mut config, suffix) = crate::stats::isolated_config().await;
    config.kafka.payment_topic = format!("bench-payments-{suffix}");
    create_topics(&config.kafka, &[(config.kafka.payment_topic.as_str(), 3)]).await.expect("bench topic");
    let setup = Platform::from_config("pay", config.clone()).expect("platform");
    let users = create_users(&setup.pg, &suffix).await;
    let requests: Requests = Arc::new(payment_requests(&setup.tokens, &users, 10_000));
    record_history(&setup.pg, &users).await;
    crate::stats::vacuum(&setup.pg).await;
    println!("payment intake: {payments} payments per model by {} payers, each with its own Idempotency-Key, {concurrency} in flight", users.len());

    // Baseline: the same number of same-sized events, published directly;
    // first, before the pay runs. Run after them, it measured 4,500-6,300/s
    // at p99 27-107 ms against 10,000/s at p99 9 ms first in the same
    // process (probably the classic run's 32 environments still being torn
    // down meanwhile; not shown).
    let producer = Arc::new(EventProducer::new(&config.kafka, "bench").expect("producer"));
    let topic: Arc<str> = config.kafka.payment_topic.clone().into();
    // Warmed up as the pay environments are (one request each before the
    // timing), so a new producer's connection and the topic's metadata are
    // not timed in the baseline alone.
    producer.publish(OutgoingRecord { topic: &topic, key: b"warm", payload: &[b'x'; 420], headers: &[] }).await.expect("warm-up publish");
    let publish = move |i: usize| {
        let (producer, topic) = (Arc::clone(&producer), Arc::clone(&topic));
        async move {
            let key = i.to_string();
            let payload = [b'x'; 420];
            producer.publish(OutgoingRecord { topic: &topic, key: key.as_bytes(), payload: &payload, headers: &[] }).await.expect("publish");
        }
    };
    let publish = costed("baseline: broker publish only", payments, concurrency, publish).await;
    let quiet = QuietStdout::new();
    // Managed Instances: one environment serves every invocation at once.
    let one = Arc::new(pay::PayApi::new(Platform::from_config("pay", config.clone()).expect("platform")));
    let (api, reqs, sfx) = (Arc::clone(&one), Arc::clone(&requests), suffix.clone());
    pay_in_process(&api, &reqs, 0, &format!("{sfx}-m-warm")).await;
    let managed = costed(format!("pay: 1 environment x {concurrency} at once (Managed Instances)"), payments, concurrency, move |i| {
        let (api, reqs, key) = (Arc::clone(&api), Arc::clone(&reqs), format!("{sfx}-m-{i}"));
        async move { pay_in_process(&api, &reqs, i, &key).await }
    })
    .await;

    // Classic: one environment per request in flight, each one at a time
    // (`drive` gives task t the requests t, t + concurrency, ...).
    let mut envs = Vec::with_capacity(concurrency);
    for e in 0..concurrency {
        let api = pay::PayApi::new(Platform::from_config("pay", config.clone()).expect("platform"));
        pay_in_process(&api, &requests, e, &format!("{suffix}-c-warm-{e}")).await;
        envs.push(Arc::new(api));
    }
    let envs = Arc::new(envs);
    let (reqs, sfx) = (Arc::clone(&requests), suffix.clone());
    let classic = costed(format!("pay: {concurrency} environments x 1 (classic Lambda)"), payments, concurrency, move |i| {
        let (envs, reqs, key) = (Arc::clone(&envs), Arc::clone(&reqs), format!("{sfx}-c-{i}"));
        async move { pay_in_process(&envs[i % envs.len()], &reqs, i, &key).await }
    })
    .await;

    // Classic through the Runtime API: the real binary under the local host
    // (skipped with 0 processes).
    let hosted = if environments == 0 { None } else { Some(hosted_run(&config, &requests, &suffix, payments, concurrency, environments).await) };
    drop(quiet);

    let mut runs = vec![&managed, &classic];
    runs.extend(hosted.as_ref());
    runs.push(&publish);
    print_costed("payments/s", &runs, &publish, memory_mb);
}

/// `payments` through the release `pay` binary under the local host,
/// `environments` processes, `concurrency` in flight.
async fn hosted_run(config: &paystream::config::Config, requests: &Requests, suffix: &str, payments: usize, concurrency: usize, environments: usize) -> crate::stats::Costed {
    let host = pay_host(config, environments).await;
    let (h, reqs, sfx) = (Arc::clone(&host), Arc::clone(requests), suffix.to_owned());
    let via_host = move |i: usize| {
        let (h, reqs, key) = (Arc::clone(&h), Arc::clone(&reqs), format!("{sfx}-h-{i}"));
        async move {
            let (auth, body) = &reqs[i % reqs.len()];
            let headers = [("content-type", "application/json"), ("authorization", auth.as_str()), ("idempotency-key", key.as_str())];
            let event = v2_event("POST", "/payments", Some("POST /payments"), &headers, Some(body));
            let answer = h.invoke("pay", Bytes::from(event.to_string())).await.expect("pay answers");
            let answer: serde_json::Value = serde_json::from_slice(&answer).expect("API Gateway response");
            assert_eq!(answer["statusCode"], 202, "payment accepted: {answer}");
        }
    };
    for e in 0..environments {
        via_host(payments + e).await; // every process opens its pool and producer
    }
    let hosted = costed(
        format!("pay binary: {environments} processes x 1, Runtime API (classic)"),
        payments,
        concurrency,
        via_host,
    )
    .await;
    host.shutdown().await;
    hosted
}

/// The release `pay` binary under the local Lambda host, `environments`
/// processes, configured like the in-process platform (bench database, key
/// prefix, topic), logging as on Lambda (its output discarded).
async fn pay_host(config: &paystream::config::Config, environments: usize) -> Arc<Host> {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let binary = PathBuf::from(target).join("release").join("pay");
    assert!(binary.exists(), "{} missing: cargo build --release -p pay first", binary.display());
    let env = vec![
        ("DATABASE_URL".to_owned(), config.database.url.expose().to_owned()),
        ("REDIS_KEY_PREFIX".to_owned(), config.redis.key_prefix.clone()),
        ("PAYMENT_TOPIC".to_owned(), config.kafka.payment_topic.clone()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".to_owned(), "256".to_owned()),
        ("LOG_LEVEL".to_owned(), "info".to_owned()),
    ];
    let spec = FunctionSpec { name: "pay".to_owned(), binary, env, instances: environments, concurrency: 1, timeout_ms: 10_000 };
    let host_config = HostConfig { function_output: FunctionOutput::Null, ..HostConfig::default() };
    Host::start_with(vec![spec], host_config).await.expect("pay starts under the host")
}
