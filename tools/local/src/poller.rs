//! The event-source poller's work (see the `poller` binary): one task per
//! MSK event source and per schedule.

use std::sync::Arc;
use std::time::Duration;

use paystream::config::Config;
use paystream::kafka::client_config;
use paystream::msk::{build_event, OutRecordForEvent};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::client::HttpClient;
use crate::template::{MskSource, Schedule};

/// Retry delays for a failed batch: 100 ms doubling to at most 5 s.
pub const RETRY_FIRST_MS: u64 = 100;
pub const RETRY_MAX_MS: u64 = 5_000;
/// The ARN the local "cluster" reports in events.
const LOCAL_CLUSTER_ARN: &str = "arn:aws:kafka:local:000000000000:cluster/paystream-local/00000000-0000-0000-0000-000000000000-1";

pub fn consumer_for(config: &Config, source: &MskSource) -> Result<StreamConsumer, String> {
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

pub async fn poll(consumer: Arc<StreamConsumer>, source: MskSource, endpoint: String, client: HttpClient, mut stop: watch::Receiver<bool>) {
    assert!(source.batch_size > 0, "BatchSize must be positive");
    let window = Duration::from_secs(source.batching_window_s).max(Duration::from_millis(50));
    'batches: loop {
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
        // The same batch until it succeeds: never skip, never reorder. The
        // only way out without success is shutdown, which leaves the batch
        // uncommitted, so it is delivered again after the restart.
        let mut delay_ms = RETRY_FIRST_MS;
        loop {
            match client.invoke(&endpoint, &source.function, &event).await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(function = %source.function, records = batch.len(), retry_in_ms = delay_ms, error = %e, "invocation failed; retrying the batch");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
                        _ = stop.changed() => {
                            tracing::info!(function = %source.function, records = batch.len(), "stopping; the undelivered batch stays uncommitted");
                            break 'batches;
                        }
                    }
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

pub async fn tick(schedule: Schedule, every_s: u64, endpoint: String, client: HttpClient, mut stop: watch::Receiver<bool>) {
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
