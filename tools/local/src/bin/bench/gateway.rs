//! The local runtime under load, as a user runs it (`scripts/run.sh`, e.g.
//! `PAYSTREAM_PROFILE=release PAYSTREAM_INSTANCES=4 bash scripts/run.sh`):
//! `concurrency` clients, each sending its next request as soon as the
//! last is answered, for `seconds`, through the gateway on
//! 127.0.0.1:`PAYSTREAM_HTTP_PORT`.
//!
//! 1. `POST /payments`, each with its own Idempotency-Key, by 1,000 payers
//!    with cards at 100 merchants; afterwards every accepted payment must get its fraud
//!    decision (the ledger row), through the broker, the poller and
//!    fds-consumer;
//! 2. flash-sale decisions: `POST /orders` on one hot product (stock 1,000)
//!    by distinct buyers, each answer a 202 (accepted) or a 409 SOLD_OUT.
//!
//! Prints requests/s of accepted answers, p50, p99, the answers by status,
//! and the CPU µs per answer of every process of the runtime (from /proc).
//! Needs the runtime's environment (DATABASE_URL, JWT settings).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use paystream::domain::{Role, UserId};
use paystream::Platform;
use paystream_local::client::HttpClient;
use uuid::Uuid;

use crate::consumers::{create_users, payment_requests};
use crate::cpu;

/// How long every accepted payment's decision may take to appear.
const DECISIONS_WAIT: Duration = Duration::from_secs(120);

/// Every answer of a phase: status (0: no answer) and latency; and the CPU
/// every process of the runtime spent during it.
struct Phase {
    name: String,
    elapsed: Duration,
    answers: Vec<(u16, Duration, Option<Uuid>)>,
    cpu_before: cpu::Sample,
    cpu_after: cpu::Sample,
}

impl Phase {
    fn print(&self, good: &[u16]) {
        let mut ok: Vec<Duration> = self.answers.iter().filter(|a| good.contains(&a.0)).map(|a| a.1).collect();
        ok.sort();
        let pick = |q: f64| ok.get(((ok.len().max(1) - 1) as f64 * q) as usize).map_or(0.0, |d| d.as_secs_f64() * 1e3);
        let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
        for a in &self.answers {
            *by_status.entry(a.0).or_default() += 1;
        }
        let statuses: Vec<String> = by_status.iter().map(|(s, n)| if *s == 0 { format!("no answer: {n}") } else { format!("{s}: {n}") }).collect();
        println!(
            "{:<44} {:>10.0} {:>9.2} {:>9.2}   {}",
            self.name,
            ok.len() as f64 / self.elapsed.as_secs_f64(),
            pick(0.5),
            pick(0.99),
            statuses.join(", ")
        );
        // What one good answer cost each process, while the phase ran
        // (the consumers' work on the phase's events included, as far as
        // it kept up; "this process" is the load generator).
        let costs = cpu::per_op_us(&self.cpu_before, &self.cpu_after, ok.len().max(1));
        let total: f64 = costs.iter().skip(1).map(|(_, us)| us).sum();
        let shown: Vec<String> = costs.iter().filter(|(_, us)| *us >= 1.0).map(|(name, us)| format!("{name} {us:.0}")).collect();
        println!("  CPU µs per answer: {} (runtime total {total:.0})", shown.join(", "));
    }
}

/// `concurrency` closed-loop clients for `seconds`; request `i` is `make(i)`.
async fn closed_loop<F>(name: String, seconds: u64, concurrency: usize, client: HttpClient, url: Arc<str>, make: F) -> Phase
where
    F: Fn(usize) -> (Vec<(&'static str, String)>, String) + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu::sample_of(&cpu::RUNTIME);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (make, next, client, url) = (Arc::clone(&make), Arc::clone(&next), client.clone(), Arc::clone(&url));
        tasks.spawn(async move {
            let mut answers = Vec::new();
            while Instant::now() < deadline {
                let (headers, body) = make(next.fetch_add(1, Ordering::Relaxed));
                let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let sent = Instant::now();
                let answer = client.send(Method::POST, &url, &headers, Some(body.into_bytes())).await;
                let latency = sent.elapsed();
                answers.push(match answer {
                    Ok(a) => {
                        let id = ["payment_id", "order_id"].iter().find_map(|f| a.json()[*f].as_str().and_then(|s| Uuid::parse_str(s).ok()));
                        (a.status, latency, id)
                    }
                    Err(_) => (0, latency, None),
                });
            }
            answers
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = tasks.join_next().await {
        answers.extend(done.expect("client task"));
    }
    Phase { name, elapsed: started.elapsed(), answers, cpu_before, cpu_after: cpu::sample_of(&cpu::RUNTIME) }
}

pub async fn run(seconds: u64, concurrency: usize) {
    assert!(seconds > 0 && concurrency > 0, "seconds and concurrency must be positive");
    let config = paystream::config::Config::from_env().expect("configuration (the runtime's environment)");
    let suffix = Uuid::new_v4().simple().to_string()[..12].to_owned();
    let platform = Platform::from_config("bench", config).expect("platform");
    let port = std::env::var("PAYSTREAM_HTTP_PORT").unwrap_or_else(|_| "3000".into());
    let client = HttpClient::new(Duration::from_secs(10));
    println!("the local runtime under load: 127.0.0.1:{port}, {concurrency} clients, {seconds} s per phase");
    println!("{:<44} {:>10} {:>9} {:>9}   answers by status", "phase", "ok/s", "p50 ms", "p99 ms");

    let users = create_users(&platform.pg, &suffix).await;
    let requests = Arc::new(payment_requests(&platform.tokens, &users, 4_500));
    let key_prefix = suffix.clone();
    let payments = closed_loop("POST /payments (202)".to_owned(), seconds, concurrency, client.clone(), format!("http://127.0.0.1:{port}/payments").into(), move |i| {
        let (auth, body) = &requests[i % requests.len()];
        (vec![("content-type", "application/json".to_owned()), ("authorization", auth.clone()), ("idempotency-key", format!("{key_prefix}-{i}"))], body.clone())
    })
    .await;
    payments.print(&[202]);

    // One buyer per order: more than this machine can answer in the time.
    let buyers = crate::stats::create_buyers(&platform.pg, (seconds as usize * 10_000).max(20_000), &format!("{suffix}g")).await;
    let product = crate::orders::create_product(&platform.pg, 1_000).await;
    let tokens: Vec<String> = buyers.iter().map(|b| format!("Bearer {}", platform.tokens.issue(UserId(*b), Role::User).expect("token").access_token)).collect();
    let body = serde_json::json!({ "product_id": product }).to_string();
    let orders = closed_loop("POST /orders, hot product (202 or 409)".to_owned(), seconds, concurrency, client.clone(), format!("http://127.0.0.1:{port}/orders").into(), move |i| {
        assert!(i < tokens.len(), "more orders than buyers: raise the buyer count");
        (vec![("content-type", "application/json".to_owned()), ("authorization", tokens[i].clone())], body.clone())
    })
    .await;
    orders.print(&[202, 409]);

    // Every accepted payment is decided (the ledger row exists).
    let accepted: Vec<Uuid> = payments.answers.iter().filter(|a| a.0 == 202).filter_map(|a| a.2).collect();
    let db = platform.pg.get().await.expect("database");
    let waited = Instant::now();
    loop {
        let decided: i64 =
            db.query_one("SELECT count(*) FROM transactions WHERE payment_id = ANY($1)", &[&accepted]).await.expect("ledger").get(0);
        if decided as usize == accepted.len() {
            println!("every accepted payment decided: {decided} of {} ({:.1} s after the load)", accepted.len(), waited.elapsed().as_secs_f64());
            break;
        }
        assert!(waited.elapsed() < DECISIONS_WAIT, "only {decided} of {} accepted payments decided within {DECISIONS_WAIT:?}", accepted.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sold: i64 = db
        .query_one("SELECT count(*) FROM orders WHERE product_id = $1", &[&product])
        .await
        .expect("orders")
        .get(0);
    let accepted_orders = orders.answers.iter().filter(|a| a.0 == 202).count();
    assert_eq!(sold as usize, accepted_orders, "every accepted order is recorded, nothing else");
    assert!(sold <= 1_000, "never more than the stock");
    println!("flash sale: {accepted_orders} orders accepted of stock 1000, each recorded");
}
