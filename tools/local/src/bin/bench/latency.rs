//! Payment accepted → fraud decision stored, end to end through the local
//! runtime as `scripts/run.sh` runs it: gateway → pay → broker → poller →
//! fds-consumer (and loyalty-consumer, benefit-consumer beside it).
//!
//! Each payment's latency is the ledger row's `decided_at` (PostgreSQL's
//! clock when the FDS transaction began, so a commit's few milliseconds
//! short of "stored") minus the moment its 202 reached this client (the same
//! machine's clock). The loyalty and benefit consumers report their lag
//! themselves, as on AWS: the `EventLag` EMF metric (event `occurred_at` to
//! their commit) read back from the function log.
//!
//! Two phases: idle (one payment at a time, 100 ms apart) and steady load
//! (`rate` payments/s for `seconds`). Baseline, same run: the broker's own
//! delivery latency, publish → a consumer with the poller's fetch settings
//! receives the record, one record at a time: the floor any event source
//! mapping on this broker starts from.
//!
//! Needs the runtime up (`bash scripts/run.sh`) and the same environment
//! (DATABASE_URL, JWT settings) as it; payments are made by 1,000 users of
//! their own with cards, each at their usual one of 100 Seoul cafés (no impossible travel).

use std::collections::HashMap;
use std::io::{BufRead, Seek};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::Method;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use uuid::Uuid;

use paystream::kafka::{client_config, create_topics, EventProducer, OutgoingRecord};
use paystream::Platform;
use paystream_local::client::HttpClient;
use paystream_local::poller::PollerSettings;

use crate::consumers::{create_users, payment_requests};

/// Payments in flight at most during the load phase (a bound, never
/// reached at the rates this machine sustains; reaching it is reported).
const IN_FLIGHT_MAX: usize = 1_024;
/// How long the decisions may take to appear after the last 202.
const SETTLE_WAIT: Duration = Duration::from_secs(60);

struct Accepted {
    payment_id: Uuid,
    /// Seconds since the Unix epoch when the 202 arrived.
    accepted_s: f64,
}

pub async fn run(idle: usize, rate_per_s: usize, seconds: usize) {
    assert!(idle > 0 && rate_per_s > 0 && seconds > 0, "counts must be positive");
    let config = paystream::config::Config::from_env().expect("configuration (the runtime's environment)");
    let suffix = Uuid::new_v4().simple().to_string()[..12].to_owned();
    let platform = Platform::from_config("bench", config.clone()).expect("platform");
    let users = create_users(&platform.pg, &suffix).await;
    let port = std::env::var("PAYSTREAM_HTTP_PORT").unwrap_or_else(|_| "3000".into());
    let url: Arc<str> = format!("http://127.0.0.1:{port}/payments").into();
    let requests = Arc::new(payment_requests(&platform.tokens, &users, 4_500));
    let client = HttpClient::new(Duration::from_secs(10));
    let settings = PollerSettings::from_env().expect("poller settings");
    let log_path = std::env::var("PAYSTREAM_FUNCTIONS_LOG")
        .unwrap_or_else(|_| format!("{}/.cache/paystream/state/logs/functions.log", std::env::var("HOME").unwrap_or_default()));

    let baseline = broker_delivery(&config, idle, settings.fetch_wait_ms).await;

    println!("decision latency through the local runtime ({url}); poller fetch wait {} ms", settings.fetch_wait_ms);
    let log_start = log_len(&log_path);
    let mut idle_runs = Vec::with_capacity(idle);
    for i in 0..idle {
        idle_runs.push(pay(&client, &url, &requests[i % requests.len()]).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle_fds = decisions(&platform, &idle_runs).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_lags = event_lags(&log_path, log_start);
    println!("{:<58} {:>8} {:>9} {:>9} {:>9}", "path", "n", "p50 ms", "p99 ms", "max ms");
    row("baseline: broker publish -> consumer receives (idle)", &baseline);
    row("idle: 202 -> FDS decision stored", &idle_fds);
    for function in ["loyalty-consumer", "benefit-consumer"] {
        row(&format!("idle: {function} lag (EventLag)"), idle_lags.get(function).map_or(&[][..], Vec::as_slice));
    }

    let log_start = log_len(&log_path);
    let total = rate_per_s * seconds;
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate_per_s as f64));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut saturated = 0usize;
    let mut load_runs = Vec::with_capacity(total);
    for i in 0..total {
        ticks.tick().await;
        // Finished payments leave the set first: only a payment that must
        // wait for one still in flight counts as the rate not sustained.
        while let Some(done) = tasks.try_join_next() {
            load_runs.push(done.expect("payment task"));
        }
        if tasks.len() >= IN_FLIGHT_MAX {
            saturated += 1;
            load_runs.push(tasks.join_next().await.expect("a task").expect("payment task"));
        }
        let (client, url, requests) = (client.clone(), Arc::clone(&url), Arc::clone(&requests));
        tasks.spawn(async move { try_pay(&client, &url, &requests[i % requests.len()]).await });
    }
    while let Some(done) = tasks.join_next().await {
        load_runs.push(done.expect("payment task"));
    }
    let failed = load_runs.iter().filter(|r| r.is_err()).count();
    let load_runs: Vec<Accepted> = load_runs.into_iter().filter_map(Result::ok).collect();
    let offered_s = started.elapsed().as_secs_f64();
    let load_fds = decisions(&platform, &load_runs).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let load_lags = event_lags(&log_path, log_start);

    let rate = total as f64 / offered_s;
    row(&format!("{rate:.0}/s: 202 -> FDS decision stored"), &load_fds);
    for function in ["loyalty-consumer", "benefit-consumer"] {
        row(&format!("{rate:.0}/s: {function} lag (EventLag)"), load_lags.get(function).map_or(&[][..], Vec::as_slice));
    }
    if failed > 0 {
        println!("note: {failed} of {total} payments got no 202 (error or no answer within 10 s): the runtime did not keep up with {rate:.0}/s");
    }
    if saturated > 0 {
        println!("note: {saturated} payments waited for a free slot ({IN_FLIGHT_MAX} in flight): the offered rate was not sustained");
    }
}

/// One `POST /payments`; panics unless it is a 202.
async fn pay(client: &HttpClient, url: &str, request: &(String, String)) -> Accepted {
    try_pay(client, url, request).await.unwrap_or_else(|e| panic!("{e}"))
}

/// One `POST /payments`: its 202, or why there was none.
async fn try_pay(client: &HttpClient, url: &str, (auth, body): &(String, String)) -> Result<Accepted, String> {
    let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
    let answer = client.send(Method::POST, url, &headers, Some(body.clone().into_bytes())).await?;
    let accepted_s = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64();
    if answer.status != 202 {
        return Err(format!("{}: {}", answer.status, String::from_utf8_lossy(&answer.body)));
    }
    let payment_id = answer.json()["payment_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).ok_or("no payment_id")?;
    Ok(Accepted { payment_id, accepted_s })
}

/// Milliseconds from each 202 to its ledger row, once every row is there.
async fn decisions(platform: &Platform, accepted: &[Accepted]) -> Vec<f64> {
    let ids: Vec<Uuid> = accepted.iter().map(|a| a.payment_id).collect();
    let db = platform.pg.get().await.expect("database");
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        let rows = db
            .query("SELECT payment_id, extract(epoch FROM decided_at)::float8 FROM transactions WHERE payment_id = ANY($1)", &[&ids])
            .await
            .expect("ledger");
        if rows.len() == ids.len() {
            let decided: HashMap<Uuid, f64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            return accepted.iter().map(|a| ((decided[&a.payment_id] - a.accepted_s) * 1e3).max(0.0)).collect();
        }
        assert!(Instant::now() < deadline, "only {} of {} decisions stored within {SETTLE_WAIT:?}", rows.len(), ids.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Baseline: publish one record, wait until a consumer fetching as the
/// poller does receives it; `n` times.
async fn broker_delivery(config: &paystream::config::Config, n: usize, fetch_wait_ms: u64) -> Vec<f64> {
    let topic = format!("bench-latency-{}", &Uuid::new_v4().simple().to_string()[..12]);
    create_topics(&config.kafka, &[(topic.as_str(), 1)]).await.expect("bench topic");
    let producer = EventProducer::new(&config.kafka, "bench-latency").expect("producer");
    let consumer: StreamConsumer = client_config(&config.kafka, "bench-latency")
        .set("group.id", "bench-latency")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&topic, 0, Offset::Beginning).expect("assignment");
    consumer.assign(&assignment).expect("assign");
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let key = i.to_string();
        let sent = Instant::now();
        producer.publish(OutgoingRecord { topic: &topic, key: key.as_bytes(), payload: &[b'x'; 420], headers: &[] }).await.expect("publish");
        let m = tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await.expect("delivered within 10 s").expect("record");
        assert_eq!(m.key(), Some(key.as_bytes()));
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies
}

fn log_len(path: &str) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// `EventLag` values per function in the EMF lines written after `from`.
fn event_lags(path: &str, from: u64) -> HashMap<String, Vec<f64>> {
    let mut lags: HashMap<String, Vec<f64>> = HashMap::new();
    let Ok(mut file) = std::fs::File::open(path) else {
        eprintln!("note: no function log at {path} (set PAYSTREAM_FUNCTIONS_LOG): consumer lags not read");
        return lags;
    };
    file.seek(std::io::SeekFrom::Start(from)).expect("seek");
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        if !line.contains("\"EventLag\"") {
            continue;
        }
        let Ok(emf) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        let (Some(function), Some(values)) = (emf["function"].as_str(), emf["EventLag"].as_array()) else { continue };
        lags.entry(function.to_owned()).or_default().extend(values.iter().filter_map(serde_json::Value::as_f64));
    }
    lags
}

fn row(name: &str, values_ms: &[f64]) {
    if values_ms.is_empty() {
        println!("{name:<58} {:>8}", 0);
        return;
    }
    let mut sorted = values_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pick = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q) as usize];
    println!("{name:<58} {:>8} {:>9.1} {:>9.1} {:>9.1}", sorted.len(), pick(0.5), pick(0.99), sorted[sorted.len() - 1]);
}
