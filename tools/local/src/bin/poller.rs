//! The local event-source poller: for every MSK event source of
//! `template.yaml` (function, topics, ConsumerGroupId, BatchSize,
//! MaximumBatchingWindowInSeconds, StartingPosition) it consumes from the
//! broker, builds the MSK event exactly as the event source mapping would
//! (records grouped by topic-partition, base64 key and value, headers,
//! timestamps) and invokes the function through the Lambda Invoke API. It
//! commits offsets only after a successful invocation and retries a failed
//! batch with capped backoff, so records are never skipped or reordered.
//! It also fires the template's `rate(...)` schedules.
//!
//! It joins no consumer group: it assigns itself every partition of a
//! source's topics and commits to the source's `ConsumerGroupId` as a simple
//! consumer, so no group state in the broker can stall it, and a broker
//! restart only costs reconnects (see `paystream_local::poller`). It is
//! therefore meant to be the only consumer of those groups: a second poller
//! would deliver every record again (harmless, the consumers are idempotent).

use std::time::Duration;

use paystream::config::Config;
use paystream_local::client::HttpClient;
use paystream_local::poller::{tick, Poller, PollerSettings};
use paystream_local::template::Template;
use tokio::sync::watch;

fn main() {
    paystream::telemetry::init(&std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into()));
    let settings = PollerSettings::from_env().unwrap_or_else(|e| fail(&e));
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| fail(&format!("runtime: {e}")));
    runtime.block_on(run(settings.clone()));
    // A broker request still running on a blocking thread (a commit or a
    // discovery the poller stopped waiting for) must not hold up the exit.
    runtime.shutdown_timeout(Duration::from_millis(settings.shutdown_commit_ms));
}

async fn run(settings: PollerSettings) {
    let template = Template::from_env().unwrap_or_else(|e| fail(&e));
    let config = Config::from_env().unwrap_or_else(|e| fail(&e.to_string()));
    let endpoint = std::env::var("LAMBDA_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9000".into());
    // Locally, schedules may run faster than on AWS (the demo and e2e tests).
    let schedule_override_s: Option<u64> = std::env::var("PAYSTREAM_SCHEDULE_EVERY_S").ok().and_then(|s| s.parse().ok());
    let client = HttpClient::new(Duration::from_millis(settings.invoke_timeout_ms));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for source in template.msk_sources.clone() {
        let poller = Poller::new(&config, source, settings.clone()).unwrap_or_else(|e| fail(&e));
        tasks.spawn(poller.run(endpoint.clone(), client.clone(), stop_rx.clone()));
    }
    for schedule in template.schedules.clone() {
        let every_s = schedule_override_s.unwrap_or(schedule.every_s);
        tasks.spawn(tick(schedule, every_s, endpoint.clone(), client.clone(), stop_rx.clone()));
    }
    tracing::info!(sources = template.msk_sources.len(), schedules = template.schedules.len(), %endpoint, "poller running");
    paystream_local::shutdown_signal().await;
    tracing::info!("poller stopping: committing what was delivered");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

fn fail(message: &str) -> ! {
    eprintln!("poller: {message}");
    std::process::exit(1)
}

