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
use paystream::kafka::client_config;
use paystream::msk::{build_event, OutRecordForEvent};
use paystream_local::client::HttpClient;
use paystream_local::template::{MskSource, Schedule, Template};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

/// Retry delays for a failed batch: 100 ms doubling to at most 5 s.
const RETRY_FIRST_MS: u64 = 100;
const RETRY_MAX_MS: u64 = 5_000;
/// The ARN the local "cluster" reports in events.
const LOCAL_CLUSTER_ARN: &str = "arn:aws:kafka:local:000000000000:cluster/paystream-local/00000000-0000-0000-0000-000000000000-1";

#[tokio::main]
async fn main() {
    paystream::telemetry::init(&std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into()));
    let template_path = std::env::var("PAYSTREAM_TEMPLATE").unwrap_or_else(|_| "template.yaml".into());
    let template = Template::load(std::path::Path::new(&template_path)).unwrap_or_else(|e| fail(&e));
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
    tokio::signal::ctrl_c().await.ok();
    tracing::info!("poller stopping: finishing in-flight batches and leaving the groups");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

fn fail(message: &str) -> ! {
    eprintln!("poller: {message}");
    std::process::exit(1)
}

fn consumer_for(config: &Config, source: &MskSource) -> Result<StreamConsumer, String> {
    let reset = if source.starting_position == "LATEST" { "latest" } else { "earliest" };
    let consumer: StreamConsumer = client_config(&config.kafka, &format!("poller-{}", source.function))
        .set("group.id", &source.consumer_group_id)
        // Static membership: a restarted poller takes its partitions back at
        // once instead of waiting for the broker to expire a vanished member.
        .set("group.instance.id", format!("{}-local", source.consumer_group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", reset)
        .set("session.timeout.ms", "10000")
        .create()
        .map_err(|e| format!("consumer for {}: {e}", source.function))?;
    let topics: Vec<&str> = source.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(|e| format!("subscribe {topics:?}: {e}"))?;
    Ok(consumer)
}

async fn poll(consumer: Arc<StreamConsumer>, source: MskSource, endpoint: String, client: HttpClient, mut stop: watch::Receiver<bool>) {
    assert!(source.batch_size > 0, "BatchSize must be positive");
    let window = Duration::from_secs(source.batching_window_s).max(Duration::from_millis(50));
    loop {
        // Collect one batch: up to BatchSize records, or what arrived within
        // the batching window after the first one.
        let mut batch: Vec<OwnedMessage> = Vec::with_capacity(source.batch_size);
        let first = tokio::select! {
            m = consumer.recv() => m,
            _ = stop.changed() => break,
        };
        match first {
            Ok(m) => batch.push(m.detach()),
            Err(e) => {
                tracing::warn!(function = %source.function, error = %e, "consumer error");
                tokio::time::sleep(Duration::from_millis(RETRY_FIRST_MS)).await;
                continue;
            }
        }
        let deadline = tokio::time::Instant::now() + window;
        while batch.len() < source.batch_size {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => tracing::warn!(function = %source.function, error = %e, "consumer error"),
                Err(_) => break,
            }
        }
        let event = msk_event(&batch);
        // The same batch until it succeeds: never skip, never reorder.
        let mut delay_ms = RETRY_FIRST_MS;
        loop {
            match client.invoke(&endpoint, &source.function, &event).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(function = %source.function, records = batch.len(), retry_in_ms = delay_ms, error = %e, "invocation failed; retrying the batch");
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    delay_ms = (delay_ms * 2).min(RETRY_MAX_MS);
                }
            }
        }
        if let Err(e) = consumer.commit(&positions(&batch), CommitMode::Sync) {
            tracing::error!(function = %source.function, error = %e, "commit failed; the batch will be delivered again");
        }
        tracing::info!(function = %source.function, records = batch.len(), "batch delivered");
    }
    consumer.unsubscribe();
    // Dropping the last reference closes the consumer and leaves the group.
}

/// The offsets to commit after a batch: one past the last record of each partition.
fn positions(batch: &[OwnedMessage]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for m in batch {
        let _ = tpl.add_partition_offset(m.topic(), m.partition(), Offset::Offset(m.offset() + 1));
    }
    tpl
}

fn msk_event(batch: &[OwnedMessage]) -> serde_json::Value {
    let headers: Vec<Vec<(&str, &[u8])>> = batch
        .iter()
        .map(|m| m.headers().map(|h| h.iter().map(|h| (h.key, h.value.unwrap_or_default())).collect()).unwrap_or_default())
        .collect();
    let records: Vec<OutRecordForEvent<'_>> = batch
        .iter()
        .zip(&headers)
        .map(|(m, h)| OutRecordForEvent {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
            key: m.key(),
            value: m.payload().unwrap_or_default(),
            headers: h,
        })
        .collect();
    build_event(LOCAL_CLUSTER_ARN, &records)
}

async fn tick(schedule: Schedule, every_s: u64, endpoint: String, client: HttpClient, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(Duration::from_secs(every_s.max(1)));
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        let event = serde_json::json!({
            "version": "0", "id": uuid::Uuid::new_v4(), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "000000000000", "time": paystream::store::rfc3339(time::OffsetDateTime::now_utc()),
            "region": "local", "resources": [format!("arn:aws:events:local:000000000000:rule/{}", schedule.function)], "detail": {}
        });
        match client.invoke(&endpoint, &schedule.function, &event).await {
            Ok(answer) => tracing::info!(function = %schedule.function, %answer, "schedule fired"),
            Err(e) => tracing::warn!(function = %schedule.function, error = %e, "scheduled invocation failed"),
        }
    }
}
