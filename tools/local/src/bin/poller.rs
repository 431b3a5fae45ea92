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
//! Consumers use static membership (`group.instance.id`) and leave cleanly on
//! Ctrl-C: the local broker stalls the partitions of a member that vanishes.

use std::sync::Arc;
use std::time::Duration;

use paystream::config::Config;
use paystream_local::client::HttpClient;
use paystream_local::poller::{consumer_for, poll, tick};
use paystream_local::template::Template;
use tokio::sync::watch;

#[tokio::main]
async fn main() {
    paystream::telemetry::init(&std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into()));
    let template = Template::from_env().unwrap_or_else(|e| fail(&e));
    let config = Config::from_env().unwrap_or_else(|e| fail(&e.to_string()));
    let endpoint = std::env::var("LAMBDA_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9000".into());
    // Locally, schedules may run faster than on AWS (the demo and e2e tests).
    let schedule_override_s: Option<u64> = std::env::var("PAYSTREAM_SCHEDULE_EVERY_S").ok().and_then(|s| s.parse().ok());
    let client = HttpClient::new(Duration::from_secs(120));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for source in template.msk_sources.clone() {
        let consumer = consumer_for(&config, &source).unwrap_or_else(|e| fail(&e));
        tasks.spawn(poll(Arc::new(consumer), source, endpoint.clone(), client.clone(), stop_rx.clone()));
    }
    for schedule in template.schedules.clone() {
        let every_s = schedule_override_s.unwrap_or(schedule.every_s);
        tasks.spawn(tick(schedule, every_s, endpoint.clone(), client.clone(), stop_rx.clone()));
    }
    tracing::info!(sources = template.msk_sources.len(), schedules = template.schedules.len(), %endpoint, "poller running");
    paystream_local::shutdown_signal().await;
    tracing::info!("poller stopping: finishing in-flight batches and leaving the groups");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

fn fail(message: &str) -> ! {
    eprintln!("poller: {message}");
    std::process::exit(1)
}

