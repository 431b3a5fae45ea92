//! Amazon MSK event sources: decoding the batch exactly as MSK delivers it
//! (records grouped by `topic-partition`, base64 key and value), in offset
//! order per partition; sending poison records to `<topic>.dlq` with the
//! reason in a header; and running a consumer under the Lambda runtime.
//!
//! Delivery is at-least-once and a failed invocation retries the whole
//! batch, so consumers are idempotent per event id and return an error only
//! for failures worth retrying (a database or broker outage), never for a
//! bad record.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::kafka::KafkaEvent;
use base64::Engine;
use futures_util::FutureExt;
use lambda_runtime::{service_fn, LambdaEvent};
use tracing::Instrument;

use crate::error::AppError;
use crate::kafka::{EventProducer, OutgoingRecord};

/// Header on a DLQ record that says why it is there.
pub const HEADER_DLQ_REASON: &str = "dlq-reason";
/// On a DLQ record whose original headers were not MSK's: those headers'
/// JSON as MSK sent it ([`dead_letter`]).
pub const HEADER_DLQ_ORIGINAL_HEADERS: &str = "dlq-original-headers";
/// Beside [`HEADER_DLQ_ORIGINAL_HEADERS`]: why they could not be read.
pub const HEADER_DLQ_HEADERS_ERROR: &str = "dlq-headers-error";

/// One record of a batch, decoded from base64.
#[derive(Clone, Debug)]
pub struct InRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    /// The value, or why it could not be base64-decoded.
    pub value: Result<Vec<u8>, String>,
    /// Read only when the record is dead-lettered ([`InRecord::headers`]).
    pub headers: Headers,
}

/// A record's headers: as MSK sent them (a slice of the invocation's
/// body, not a copy), decoded only when asked for, or already decoded.
///
/// Why not decode every record's headers up front: no consumer reads them
/// except to pass them on with a poison record, and MSK writes each byte as
/// a JSON number, so decoding them cost as much as the rest of the event
/// (2026-12-05, the benchmark's 1,000-payment event with pay's two headers,
/// release, 3 × 20 batches: 1.27–1.35 ms a batch decoded, 0.50–0.66 ms
/// with the headers left out). Taking them as raw JSON still checks that
/// they are JSON; what they hold is checked when they are decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Headers {
    /// MSK's JSON array of `{name: [signed bytes]}` objects.
    Wire(bytes::Bytes),
    Decoded(Vec<(String, Vec<u8>)>),
}

impl InRecord {
    /// The record's headers as (name, bytes), in order, or why MSK's JSON
    /// for them is not headers (`MALFORMED_BODY`, naming the record and
    /// the field).
    pub fn headers(&self) -> Result<std::borrow::Cow<'_, [(String, Vec<u8>)]>, AppError> {
        match &self.headers {
            Headers::Decoded(headers) => Ok(std::borrow::Cow::Borrowed(headers)),
            Headers::Wire(json) => serde_path_to_error::deserialize::<_, WireHeaders>(&mut serde_json::Deserializer::from_slice(json))
                .map(|headers| std::borrow::Cow::Owned(headers.0))
                .map_err(|e| {
                    let (topic, partition, offset) = (&self.topic, self.partition, self.offset);
                    let detail = format!("the headers of {topic}-{partition} at offset {offset} are not MSK's headers: [{}] {}", e.path(), e.inner());
                    AppError::new(crate::error::ErrorCode::MalformedBody, detail)
                }),
        }
    }
}

/// Every record of the event (`aws_lambda_events`' type, as tests and tools
/// build events), in [`parse_records`]' order. Takes the event, so its
/// strings and header values move into the records rather than being
/// copied.
pub fn ordered_records(event: KafkaEvent) -> Vec<InRecord> {
    let records = event.records.into_iter().flat_map(|(group, records)| {
        records.into_iter().map(move |r| {
            // i8 to u8 keeps the layout: the values are reused in place.
            let headers = r.headers.into_iter().flat_map(|h| h.into_iter().map(|(k, v)| (k, v.into_iter().map(|b| b as u8).collect()))).collect();
            let at = RecordAt { partition: r.partition, offset: r.offset, timestamp_ms: r.timestamp.0.timestamp_millis() };
            in_record(&group, r.topic.map(Into::into), at, r.key.as_deref(), r.value.as_deref(), Headers::Decoded(headers))
        })
    });
    in_order(records.collect())
}

/// Where a record sits in its partition, and when it was written.
struct RecordAt {
    partition: i64,
    offset: i64,
    timestamp_ms: i64,
}

/// One record of the group `group` with its base64 key and value decoded.
fn in_record(group: &str, topic: Option<std::borrow::Cow<'_, str>>, at: RecordAt, key: Option<&str>, value: Option<&str>, headers: Headers) -> InRecord {
    InRecord {
        // MSK names the group `topic-partition`; the record repeats the topic.
        topic: topic.map_or_else(|| group.rsplit_once('-').map_or(group, |(t, _)| t).to_owned(), |t| t.into_owned()),
        partition: at.partition as i32,
        offset: at.offset,
        timestamp_ms: at.timestamp_ms,
        key: key.and_then(|k| from_base64(k).ok()),
        value: match value {
            Some(v) => from_base64(v).map_err(|e| format!("value is not base64: {e}")),
            None => Err("record has no value".to_owned()),
        },
        headers,
    }
}

/// Standard base64 with padding, decoded with SIMD (`base64-simd`, which
/// the AWS SDK already builds: a record's key and value took 8
/// instructions a character with the `base64` crate, a tenth of the
/// consumers' parse). Its error says only that the text is not base64, so
/// the `base64` crate decodes a failure again to say where, for the DLQ.
fn from_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64_simd::STANDARD.decode_to_vec(text).or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
}

/// Sorted by (topic, partition, offset), so each partition is handled in
/// the order it was written.
fn in_order(mut records: Vec<InRecord>) -> Vec<InRecord> {
    records.sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    records
}

/// The MSK event as it arrives, only what [`InRecord`] keeps: key and
/// value borrowed from the payload (base64 has no escapes, so nothing is
/// copied before decoding), the timestamp as the integer milliseconds MSK
/// sends, and the headers as their raw JSON ([`Headers`]).
///
/// Why not parse `aws_lambda_events`' `KafkaEvent` here: it keeps every
/// header as its own `HashMap<String, Vec<i8>>` and reads the timestamp
/// through a float (1,733,300,000,123 ms came back as ...122). The unit
/// test `the_wire_parse_agrees_with_aws_lambda_events_and_a_bad_event_names_the_field`
/// holds the two to the same records.
///
/// The runtime's pass and this parse of the benchmark's 1,000-payment event
/// (release, 300 rounds): 1.92 µs a record, against 2.52 with `KafkaEvent`
/// and [`ordered_records`].
#[derive(serde::Deserialize)]
struct WireEvent<'a> {
    #[serde(borrow, default)]
    records: Option<std::collections::HashMap<std::borrow::Cow<'a, str>, Vec<WireRecord<'a>>>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRecord<'a> {
    #[serde(borrow, default)]
    topic: Option<std::borrow::Cow<'a, str>>,
    partition: i64,
    offset: i64,
    #[serde(deserialize_with = "millis")]
    timestamp: i64,
    #[serde(borrow, default)]
    key: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    value: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    headers: Option<&'a serde_json::value::RawValue>,
}

/// A record's timestamp in milliseconds: MSK sends a number;
/// `aws_lambda_events` writes a string of digits (so do tools that build
/// events with it), and reads both, so this does too.
fn millis<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct Millis;
    impl serde::de::Visitor<'_> for Millis {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("milliseconds since the epoch, as an integer or a string of digits")
        }
        fn visit_i64<E: serde::de::Error>(self, ms: i64) -> Result<i64, E> {
            Ok(ms)
        }
        fn visit_u64<E: serde::de::Error>(self, ms: u64) -> Result<i64, E> {
            i64::try_from(ms).map_err(|_| E::custom("timestamp out of range"))
        }
        fn visit_str<E: serde::de::Error>(self, ms: &str) -> Result<i64, E> {
            ms.parse().map_err(|_| E::invalid_value(serde::de::Unexpected::Str(ms), &self))
        }
    }
    deserializer.deserialize_any(Millis)
}

/// MSK's headers: a list of one-entry objects, each value the header's
/// bytes as signed numbers. Read into one flat list of (name, bytes).
#[derive(Default)]
struct WireHeaders(Vec<(String, Vec<u8>)>);

impl<'de> serde::Deserialize<'de> for WireHeaders {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Headers;
        impl<'de> serde::de::Visitor<'de> for Headers {
            type Value = WireHeaders;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of objects of header name to an array of signed bytes")
            }
            fn visit_unit<E>(self) -> Result<WireHeaders, E> {
                Ok(WireHeaders::default())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<WireHeaders, A::Error> {
                let mut headers = WireHeaders(Vec::with_capacity(seq.size_hint().unwrap_or(2)));
                while seq.next_element_seed(OneHeader(&mut headers.0))?.is_some() {}
                Ok(headers)
            }
        }
        deserializer.deserialize_any(Headers)
    }
}

/// One `{name: [bytes]}` object of [`WireHeaders`], appended to the list.
struct OneHeader<'h>(&'h mut Vec<(String, Vec<u8>)>);

impl<'de> serde::de::DeserializeSeed<'de> for OneHeader<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for OneHeader<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of header name to an array of signed bytes")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<String>()? {
            let bytes = map.next_value_seed(HeaderBytes)?;
            self.0.push((name, bytes));
        }
        Ok(())
    }
}

/// A header's value: MSK's array of signed bytes (Java's `byte`), as the
/// bytes they are. Read into a vector sized for the usual header up front:
/// serde's own `Vec` starts empty (JSON does not say how long an array
/// is) and grew a 36-byte `event-id` through four allocations (8, 16, 32,
/// 64 bytes) and three copies, and the `event-type` through two: six of a
/// payment record's twelve allocations, where two do.
struct HeaderBytes;

/// Room for the headers pay and order write (`event-type`, `event-id`)
/// without growing; a longer value grows as any vector does.
const HEADER_BYTES_CAPACITY: usize = 40;

impl<'de> serde::de::DeserializeSeed<'de> for HeaderBytes {
    type Value = Vec<u8>;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for HeaderBytes {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of signed bytes")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(HEADER_BYTES_CAPACITY));
        while let Some(byte) = seq.next_element::<i8>()? {
            bytes.push(byte as u8);
        }
        Ok(bytes)
    }
}

/// Every record of an MSK event's JSON, in [`ordered_records`]' order, or
/// why the payload is not an MSK event (with the path of what did not
/// parse, worked out only then: a second, slower pass). The records'
/// headers stay slices of `body` until asked for ([`Headers`]).
pub fn parse_records(body: &bytes::Bytes) -> Result<Vec<InRecord>, AppError> {
    let event: WireEvent<'_> = serde_json::from_slice(body).map_err(|plain| {
        let detail = match serde_path_to_error::deserialize::<_, WireEvent<'_>>(&mut serde_json::Deserializer::from_slice(body)) {
            Err(e) => format!("the invocation's payload is not an MSK event: [{}] {}", e.path(), e.inner()),
            Ok(_) => format!("the invocation's payload is not an MSK event: {plain}"),
        };
        AppError::new(crate::error::ErrorCode::MalformedBody, detail)
    })?;
    let records = event.records.unwrap_or_default().into_iter().flat_map(|(group, records)| {
        records.into_iter().map(move |r| {
            let at = RecordAt { partition: r.partition, offset: r.offset, timestamp_ms: r.timestamp };
            // `null` and a missing field alike: no headers.
            let headers = r.headers.map_or(Headers::Decoded(Vec::new()), |raw| Headers::Wire(body.slice_ref(raw.get().as_bytes())));
            in_record(&group, r.topic, at, r.key.as_deref(), r.value.as_deref(), headers)
        })
    });
    Ok(in_order(records.collect()))
}

/// A record that cannot be processed, and why.
#[derive(Debug)]
pub struct Poison<'a> {
    pub record: &'a InRecord,
    pub reason: String,
}

/// Decodes every record; good ones keep their batch order.
pub fn decode_all<'a, T, E: std::fmt::Display>(
    records: &'a [InRecord],
    decode: impl Fn(&[u8]) -> Result<T, E>,
) -> (Vec<(&'a InRecord, T)>, Vec<Poison<'a>>) {
    let mut good = Vec::with_capacity(records.len());
    let mut poison = Vec::new();
    for record in records {
        match record.value.as_deref().map_err(|e| e.to_owned()).and_then(|v| decode(v).map_err(|e| e.to_string())) {
            Ok(event) => good.push((record, event)),
            Err(reason) => poison.push(Poison { record, reason }),
        }
    }
    (good, poison)
}

/// Publishes poison records to `<topic>.dlq`: key, value and headers as
/// received (so whoever replays it still has its `event-id` and
/// `event-type`), reason and origin in `dlq-*` headers first (an earlier
/// trip's `dlq-*` headers are dropped, so each name appears once). Headers
/// that are not MSK's (MSK never sends such, but a hand-made event can)
/// travel as their raw JSON in [`HEADER_DLQ_ORIGINAL_HEADERS`], with why
/// in [`HEADER_DLQ_HEADERS_ERROR`]: failing instead would fail the batch
/// on every redelivery, and settle dead-letters after its commit. Fails,
/// so the batch is retried, only when the DLQ itself cannot be written: a
/// record is never dropped.
pub async fn dead_letter(producer: &EventProducer, consumer: &str, poison: &[Poison<'_>]) -> Result<(), AppError> {
    for p in poison {
        let dlq = format!("{}.dlq", p.record.topic);
        let partition = p.record.partition.to_string();
        let offset = p.record.offset.to_string();
        let raw: Vec<u8> = match &p.record.value {
            Ok(v) => v.clone(),
            Err(_) => Vec::new(),
        };
        tracing::warn!(topic = %p.record.topic, partition = p.record.partition, offset = p.record.offset, reason = %p.reason, "poison record to DLQ");
        let original = p.record.headers();
        let mut headers: Vec<(&str, &[u8])> = vec![
            (HEADER_DLQ_REASON, p.reason.as_bytes()),
            ("dlq-source-topic", p.record.topic.as_bytes()),
            ("dlq-source-partition", partition.as_bytes()),
            ("dlq-source-offset", offset.as_bytes()),
            ("dlq-consumer", consumer.as_bytes()),
        ];
        match &original {
            Ok(original) => {
                headers.extend(original.iter().filter(|(name, _)| !name.starts_with("dlq-")).map(|(name, value)| (name.as_str(), value.as_slice())));
            }
            Err(e) => {
                // Only MSK's JSON can fail to read (decoded headers cannot).
                let json: &[u8] = match &p.record.headers {
                    Headers::Wire(json) => json,
                    Headers::Decoded(_) => &[],
                };
                tracing::warn!(topic = %p.record.topic, partition = p.record.partition, offset = p.record.offset, error = %e,
                    "poison record's headers are not MSK's: kept as raw JSON");
                headers.push((HEADER_DLQ_HEADERS_ERROR, e.detail.as_bytes()));
                headers.push((HEADER_DLQ_ORIGINAL_HEADERS, json));
            }
        }
        producer
            .publish(OutgoingRecord { topic: &dlq, key: p.record.key.as_deref().unwrap_or_default(), payload: &raw, headers: &headers })
            .await?;
    }
    Ok(())
}

/// A batch's good events (first occurrence of each event id, in batch order)
/// after its poison records went to the DLQ.
pub struct Decoded<'r, T> {
    pub events: Vec<(&'r InRecord, T)>,
    /// Good records whose event id already appeared earlier in the batch.
    pub repeated: usize,
    pub dead_lettered: usize,
}

/// The start of every consumer's batch: decode, dead-letter what cannot be
/// decoded, and drop repeats of an event id inside the batch.
pub async fn decode_batch<'r, T, E: std::fmt::Display>(
    platform: &crate::Platform,
    consumer: &str,
    records: &'r [InRecord],
    decode: impl Fn(&[u8]) -> Result<T, E>,
    event_id: impl Fn(&T) -> uuid::Uuid,
) -> Result<Decoded<'r, T>, AppError> {
    let (good, poison) = decode_all(records, decode);
    if !poison.is_empty() {
        dead_letter(&*platform.producer().await?, consumer, &poison).await?;
    }
    let decoded = good.len();
    let mut seen = std::collections::HashSet::with_capacity(decoded);
    let events: Vec<(&InRecord, T)> = good.into_iter().filter(|(_, e)| seen.insert(event_id(e))).collect();
    Ok(Decoded { repeated: decoded - events.len(), dead_lettered: poison.len(), events })
}

/// Splits a batch's events into shards that share no key (the payer), each
/// keeping its events in batch order, so each shard can be applied in its
/// own transaction on its own connection while the others are: an event
/// source mapping invokes one batch per partition at a time, and in one
/// transaction the database would work it on one core. At most
/// `batch_shards` shards and none planned below `shard_min_events` events
/// (each shard costs its own round trips and commit); empty ones are
/// dropped. Applying shards independently is safe because every effect is
/// keyed by its event and its payer: a shard that committed before another
/// failed is skipped as duplicates when the batch is retried.
pub fn shards<T>(events: Vec<T>, limits: crate::config::ConsumerConfig, key: impl Fn(&T) -> uuid::Uuid) -> Vec<Vec<T>> {
    let count = (events.len() / limits.shard_min_events.max(1)).clamp(1, limits.batch_shards.max(1));
    if count == 1 {
        return vec![events];
    }
    let mut shards: Vec<Vec<T>> = (0..count).map(|_| Vec::with_capacity(events.len() / count + 1)).collect();
    for event in events {
        // Ids are random in their low bits (v4, and v7's rand_b).
        let shard = (key(&event).as_u128() % count as u128) as usize;
        shards[shard].push(event);
    }
    shards.retain(|s| !s.is_empty());
    shards
}

/// Applies every shard at once ([`shards`]) and adds up what they did.
/// The first shard runs on the calling task, each other one in a task of
/// its own, so a shard's own work (building its statements, reading its
/// answers, deciding) runs on another worker thread while PostgreSQL works
/// on the first one's, rather than taking turns with it on one thread
/// (FDS on one partition: about 5 % more records a second over 14
/// alternating pairs of runs, ahead in 11; on three partitions 8 % over
/// 6). `context` is what every shard needs (the platform).
///
/// Waits for all of them, so no transaction is dropped midway; the first
/// error fails the batch (and the event source retries it). A panicking
/// shard fails the batch like an error. If the invocation itself is
/// dropped, the tasks are aborted with it (their transactions roll back).
pub async fn apply_shards<T, C, F, Fut>(shards: Vec<Vec<T>>, context: &Arc<C>, apply: F) -> Result<BatchOutcome, AppError>
where
    T: Send + 'static,
    C: Send + Sync + 'static,
    F: Fn(Arc<C>, Vec<T>) -> Fut,
    Fut: Future<Output = Result<BatchOutcome, AppError>> + Send + 'static,
{
    let mut shards = shards.into_iter();
    let Some(first) = shards.next() else {
        return Ok(BatchOutcome::default());
    };
    let mut others = tokio::task::JoinSet::new();
    for shard in shards {
        others.spawn(apply(Arc::clone(context), shard).in_current_span());
    }
    let first = std::panic::AssertUnwindSafe(apply(Arc::clone(context), first)).catch_unwind().await;
    let mut outcomes = vec![first.unwrap_or_else(|panic| Err(shard_panicked(panic.as_ref())))];
    while let Some(joined) = others.join_next().await {
        outcomes.push(match joined {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => Err(shard_panicked(e.into_panic().as_ref())),
            Err(e) => Err(AppError::internal(e)),
        });
    }
    let mut total = BatchOutcome::default();
    for outcome in outcomes {
        let outcome = outcome?;
        total.applied += outcome.applied;
        total.duplicates += outcome.duplicates;
        total.dead_lettered += outcome.dead_lettered;
    }
    Ok(total)
}

fn shard_panicked(panic: &(dyn std::any::Any + Send)) -> AppError {
    let message = panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("a panic");
    AppError::internal(std::io::Error::other(format!("a shard panicked: {message}")))
}

/// What a consumer did with a batch (logged, and emitted as metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub applied: usize,
    pub duplicates: usize,
    pub dead_lettered: usize,
}

/// An MSK-triggered function.
pub trait BatchConsumer: Send + Sync + 'static {
    fn handle(&self, records: Vec<InRecord>) -> impl Future<Output = Result<BatchOutcome, AppError>> + Send;
}

/// Handles one MSK event built as `aws_lambda_events`' type (tests and
/// tools build events that way): [`handle_records`] of its records.
pub async fn handle_event<C: BatchConsumer>(consumer: &C, event: KafkaEvent, request_id: &str) -> Result<BatchOutcome, AppError> {
    handle_records(consumer, ordered_records(event), request_id).await
}

/// Handles one MSK event's records ([`parse_records`] or
/// [`ordered_records`]): logs one line with the outcome; an error fails
/// the invocation so the event source retries the batch.
pub async fn handle_records<C: BatchConsumer>(consumer: &C, records: Vec<InRecord>, request_id: &str) -> Result<BatchOutcome, AppError> {
    let span = tracing::info_span!("batch", request_id = %request_id, records = records.len());
    async move {
        let started = Instant::now();
        let result = consumer.handle(records).await;
        crate::metrics::latency_ms(crate::metrics::BATCH_DURATION, crate::metrics::elapsed_ms(started));
        match result {
            Ok(outcome) => {
                tracing::info!(applied = outcome.applied, duplicates = outcome.duplicates, dead_lettered = outcome.dead_lettered,
                    elapsed_us = started.elapsed().as_micros() as u64, "batch handled");
                Ok(outcome)
            }
            Err(err) => {
                let source = err.source.as_ref().map(|s| s.to_string()).unwrap_or_default();
                tracing::error!(code = err.code.as_str(), detail = %err.detail, source = %source, "batch failed; it will be retried");
                Err(err)
            }
        }
    }
    .instrument(span)
    .await
}

tokio::task_local! {
    /// The invocation's body as the Runtime API delivered it, set by
    /// [`TakeBody`] for the invocation's handler.
    static INVOCATION_BODY: bytes::Bytes;
}

/// A layer in front of lambda_runtime's own services that takes the
/// invocation's body (the MSK event's JSON) before the runtime deserializes
/// it and hands it to the handler untouched, which parses it once
/// ([`parse_records`]).
///
/// Why: lambda_runtime deserializes every body into the handler's payload
/// type through `serde_path_to_error`. As a `KafkaEvent` that cost 2.31 µs
/// a record for 1,000 payments with their two headers (serde_json alone
/// 1.54); as a `Box<RawValue>` that the handler then parsed, the runtime's
/// pass still scanned and copied the whole body, 0.41 µs a record
/// (2026-12-04, release build, 300 rounds). Behind this layer the runtime
/// deserializes `null` into `()` and the body is never copied: parsing and
/// decoding a 1,000-payment batch went from 2.66 to 2.03–2.05 ms
/// (`bench consumers`' decode baseline, ninth session of 2026-12-04). A body that
/// is not an MSK event is refused by [`parse_records`] (`MALFORMED_BODY`,
/// with the path of what did not parse) instead of by the runtime.
#[derive(Clone)]
struct TakeBody<S>(S);

struct TakeBodyLayer;

impl<S> lambda_runtime::tower::Layer<S> for TakeBodyLayer {
    type Service = TakeBody<S>;
    fn layer(&self, inner: S) -> TakeBody<S> {
        TakeBody(inner)
    }
}

impl<S> lambda_runtime::Service<lambda_runtime::LambdaInvocation> for TakeBody<S>
where
    S: lambda_runtime::Service<lambda_runtime::LambdaInvocation, Response = (), Error = lambda_runtime::Error>,
{
    type Response = ();
    type Error = lambda_runtime::Error;
    type Future = tokio::task::futures::TaskLocalFuture<bytes::Bytes, S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut invocation: lambda_runtime::LambdaInvocation) -> Self::Future {
        let body = std::mem::replace(&mut invocation.body, bytes::Bytes::from_static(b"null"));
        // The handler's future is polled inside this scope, where it reads
        // the body ([`invocation_body`]).
        INVOCATION_BODY.scope(body, self.0.call(invocation))
    }
}

/// The body [`TakeBody`] took for this invocation: a reference-counted
/// handle, not a copy.
fn invocation_body() -> Result<bytes::Bytes, AppError> {
    INVOCATION_BODY.try_with(bytes::Bytes::clone).map_err(|_| AppError::internal(std::io::Error::other("no invocation body: the handler ran outside TakeBody")))
}

/// Runs `consumer` as a Lambda function until the runtime shuts it down
/// (concurrent as [`crate::http::run`] when `AWS_LAMBDA_MAX_CONCURRENCY` is
/// set; an event source mapping invokes one batch per partition at a time).
pub async fn run<C: BatchConsumer>(consumer: C) -> Result<(), lambda_runtime::Error> {
    let consumer = Arc::new(consumer);
    crate::metrics::runtime_ready();
    let handler = service_fn(move |event: LambdaEvent<()>| {
        let consumer = Arc::clone(&consumer);
        async move {
            crate::metrics::invocation_started(&event.context.request_id);
            let outcome = match invocation_body().and_then(|body| parse_records(&body)) {
                Ok(records) => handle_records(consumer.as_ref(), records, &event.context.request_id).await,
                Err(err) => {
                    tracing::error!(request_id = %event.context.request_id, code = err.code.as_str(), detail = %err.detail, "invocation failed");
                    Err(err)
                }
            };
            // Before the answer: once it is posted the environment may freeze.
            crate::metrics::flush();
            let outcome = outcome?;
            Ok::<_, lambda_runtime::Error>(serde_json::json!({
                "applied": outcome.applied, "duplicates": outcome.duplicates, "dead_lettered": outcome.dead_lettered
            }))
        }
    });
    // As `lambda_runtime::run_concurrent`, with the body taken first.
    lambda_runtime::Runtime::new(handler).layer(TakeBodyLayer).layer(lambda_runtime::layers::TracingLayer::new()).run_concurrent().await
}

/// Builds an MSK event (as the event source mapping delivers it) from raw
/// records. Used by the local poller and tests.
pub fn build_event(event_source_arn: &str, records: &[OutRecordForEvent<'_>]) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut groups = serde_json::Map::new();
    for r in records {
        let group = groups.entry(format!("{}-{}", r.topic, r.partition)).or_insert_with(|| serde_json::json!([]));
        let headers: Vec<serde_json::Value> = r
            .headers
            .iter()
            .map(|(k, v)| serde_json::json!({ *k: v.iter().map(|b| *b as i8).collect::<Vec<i8>>() }))
            .collect();
        group.as_array_mut().expect("group is an array").push(serde_json::json!({
            "topic": r.topic,
            "partition": r.partition,
            "offset": r.offset,
            "timestamp": r.timestamp_ms,
            "timestampType": "CREATE_TIME",
            "key": r.key.map(|k| b64.encode(k)),
            "value": b64.encode(r.value),
            "headers": headers,
        }));
    }
    serde_json::json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": event_source_arn,
        "bootstrapServers": "127.0.0.1:9092",
        "records": groups,
    })
}

/// A raw record for [`build_event`].
pub struct OutRecordForEvent<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: &'a [(&'a str, &'a [u8])],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msk_events_decode_in_offset_order() {
        let records = [
            OutRecordForEvent { topic: "payment-stream", partition: 1, offset: 7, timestamp_ms: 1, key: Some(b"u1"), value: b"b", headers: &[("h", b"x\xff\x80")] },
            OutRecordForEvent { topic: "payment-stream", partition: 1, offset: 5, timestamp_ms: 1, key: Some(b"u1"), value: b"a", headers: &[] },
            OutRecordForEvent { topic: "payment-stream", partition: 0, offset: 9, timestamp_ms: 1, key: None, value: b"c", headers: &[] },
        ];
        let event: KafkaEvent = serde_json::from_value(build_event("arn:aws:kafka:local", &records)).unwrap();
        assert_eq!(event.records.len(), 2, "grouped by topic-partition");
        let ordered = ordered_records(event);
        let order: Vec<(i32, i64)> = ordered.iter().map(|r| (r.partition, r.offset)).collect();
        assert_eq!(order, vec![(0, 9), (1, 5), (1, 7)]);
        assert_eq!(ordered[2].value.as_deref().unwrap(), b"b");
        assert_eq!(ordered[2].key.as_deref(), Some(&b"u1"[..]));
        assert_eq!(*ordered[2].headers().unwrap(), [("h".to_owned(), b"x\xff\x80".to_vec())], "bytes above 127 survive MSK's signed bytes");
    }

    #[test]
    fn the_wire_parse_agrees_with_aws_lambda_events_and_a_bad_event_names_the_field() {
        let records = [
            OutRecordForEvent { topic: "payment-stream", partition: 2, offset: 7, timestamp_ms: 1_733_300_000_123, key: Some(b"u1"), value: b"v", headers: &[("event-id", b"e1"), ("h", b"x\xff\x80")] },
            // Longer than the room a header's bytes start with.
            OutRecordForEvent { topic: "payment-stream", partition: 2, offset: 5, timestamp_ms: 1, key: None, value: b"\xff\xff", headers: &[("long", &[0xab; 100])] },
            OutRecordForEvent { topic: "order-stream", partition: 0, offset: 9, timestamp_ms: 2, key: Some(b"o1"), value: b"w", headers: &[("event-type", b"order.accepted")] },
        ];
        let built = serde_json::to_string(&build_event("arn:aws:kafka:local", &records)).unwrap();
        // JSON may escape a slash: base64 "//8=" written as "\/\/8=".
        assert!(built.contains("\"//8=\""));
        let escaped = built.replace("\"//8=\"", "\"\\/\\/8=\"");
        // aws_lambda_events writes the timestamp as a string of digits.
        let rewritten = serde_json::to_string(&serde_json::from_str::<KafkaEvent>(&built).unwrap()).unwrap();
        assert!(rewritten.contains("\"timestamp\":\"2\""), "{rewritten}");
        let mut samples = vec![built.clone(), escaped, rewritten];
        // The sample MSK events committed for `sam local invoke`.
        for sample in ["fds-consumer/payment-batch.json", "loyalty-consumer/payment-batch.json", "benefit-consumer/payment-batch.json", "settle/order-batch.json"] {
            samples.push(std::fs::read_to_string(format!("{}/../events/{sample}", env!("CARGO_MANIFEST_DIR"))).unwrap());
        }
        for json in &samples {
            let wire = parse_records(&json.clone().into()).unwrap();
            let reference = ordered_records(serde_json::from_str::<KafkaEvent>(json).unwrap());
            assert!(!wire.is_empty());
            assert_eq!(wire.len(), reference.len());
            for (w, r) in wire.iter().zip(&reference) {
                assert_eq!((&w.topic, w.partition, w.offset, &w.key, &w.value), (&r.topic, r.partition, r.offset, &r.key, &r.value));
                assert!(matches!(w.headers, Headers::Wire(_)), "the wire parse leaves headers as MSK's JSON");
                assert_eq!(w.headers().unwrap(), r.headers().unwrap());
                // aws_lambda_events reads the time through a float.
                assert!((w.timestamp_ms - r.timestamp_ms).abs() <= 1);
            }
        }
        let wire = parse_records(&built.clone().into()).unwrap();
        assert_eq!(wire.iter().map(|r| (r.topic.as_str(), r.offset)).collect::<Vec<_>>(), [("order-stream", 9), ("payment-stream", 5), ("payment-stream", 7)]);
        assert_eq!(wire[2].timestamp_ms, 1_733_300_000_123, "the milliseconds exactly");
        assert_eq!(wire[1].value.as_deref().unwrap(), b"\xff\xff");
        assert_eq!(*wire[1].headers().unwrap(), [("long".to_owned(), vec![0xab; 100])]);
        assert_eq!(*wire[2].headers().unwrap(), [("event-id".to_owned(), b"e1".to_vec()), ("h".to_owned(), b"x\xff\x80".to_vec())], "bytes above 127 survive MSK's signed bytes");

        let mut bad: serde_json::Value = serde_json::from_str(&built).unwrap();
        bad["records"]["payment-stream-2"][0]["offset"] = serde_json::json!("seven");
        let parse = |event: &serde_json::Value| parse_records(&serde_json::to_vec(event).unwrap().into());
        let err = parse(&bad).unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::MalformedBody);
        assert!(err.detail.contains("records.payment-stream-2[0].offset"), "{}", err.detail);
        bad["records"]["payment-stream-2"][0]["offset"] = serde_json::json!(7);
        // Headers are read when asked for (a poison record's, to the DLQ):
        // what they hold is checked then, naming the record and the field.
        for (headers, at) in [(serde_json::json!([{"h": "not bytes"}]), "[0].h"), (serde_json::json!([{"h": [1, 200]}]), "[0].h[1]"), (serde_json::json!({"h": [1]}), ".")] {
            bad["records"]["payment-stream-2"][0]["headers"] = headers;
            let record = parse(&bad).unwrap().into_iter().find(|r| r.offset == 7).unwrap();
            let err = record.headers().unwrap_err();
            assert_eq!(err.code, crate::error::ErrorCode::MalformedBody);
            assert!(err.detail.contains("payment-stream-2 at offset 7") && err.detail.contains(&format!("[{at}]")), "{}", err.detail);
        }
        for no_headers in [serde_json::Value::Null, serde_json::json!([])] {
            bad["records"]["payment-stream-2"][0]["headers"] = no_headers;
            assert!(parse(&bad).unwrap().iter().find(|r| r.offset == 7).unwrap().headers().unwrap().is_empty());
        }
        bad["records"]["payment-stream-2"][0].as_object_mut().unwrap().remove("headers");
        assert!(parse(&bad).unwrap().iter().find(|r| r.offset == 7).unwrap().headers().unwrap().is_empty(), "no headers field: none");
        let err = parse_records(&bytes::Bytes::from_static(b"{\"records\": ")).unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::MalformedBody, "not JSON: refused as the runtime refused it before");
    }

    #[test]
    fn simd_base64_agrees_with_the_base64_crate() {
        let b64 = base64::engine::general_purpose::STANDARD;
        for len in 0..200usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 131 + len * 7) as u8).collect();
            assert_eq!(from_base64(&b64.encode(&bytes)).unwrap(), bytes, "{len} bytes");
        }
        for bad in ["%%%not-base64", "QQ=", "Q", "QQ==QQ==", "QUJD\n", "QUJ D"] {
            let ours = from_base64(bad).unwrap_err().to_string();
            assert_eq!(ours, b64.decode(bad).unwrap_err().to_string(), "{bad}: the DLQ reason names what is wrong");
        }
        // Not canonical (the last symbol's unused bits set): refused, as before.
        assert!(from_base64("QR==").is_err());
    }

    #[test]
    fn bad_records_are_poison_and_good_ones_keep_order() {
        let mut event: KafkaEvent = serde_json::from_value(build_event(
            "arn",
            &[OutRecordForEvent { topic: "t", partition: 0, offset: 1, timestamp_ms: 1, key: None, value: b"42", headers: &[] }],
        ))
        .unwrap();
        let mut broken = event.records["t-0"][0].clone();
        broken.offset = 2;
        broken.value = Some("%%%not-base64".into());
        event.records.get_mut("t-0").unwrap().push(broken);
        let records = ordered_records(event);
        let (good, poison) = decode_all(&records, |b| std::str::from_utf8(b).map_err(|e| e.to_string())?.parse::<i32>().map_err(|e| e.to_string()));
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].1, 42);
        assert_eq!(poison.len(), 1);
        assert!(poison[0].reason.contains("base64"));
    }

    /// The first shard runs on the calling task, the others on worker
    /// threads; every shard finishes before an error or a panic fails the
    /// batch, and outcomes add up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shards_run_on_their_own_threads_and_all_finish_before_the_batch_fails() {
        type Seen = std::sync::Mutex<Vec<(u32, std::thread::ThreadId)>>;
        let apply = |seen: Arc<Seen>, shard: Vec<u32>| async move {
            // The failing shards end first: the others must still finish.
            if shard[0] == 1 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            seen.lock().unwrap().push((shard[0], std::thread::current().id()));
            match shard[0] {
                3 => Err(AppError::internal(std::io::Error::other("shard 3 fails"))),
                4 => panic!("shard 4 panics"),
                _ => Ok(BatchOutcome { applied: shard.len(), duplicates: 1, dead_lettered: 0 }),
            }
        };
        let caller = std::thread::current().id();

        let seen: Arc<Seen> = Arc::default();
        let outcome = apply_shards(vec![vec![1, 10], vec![2, 20, 30]], &seen, apply).await.unwrap();
        assert_eq!(outcome, BatchOutcome { applied: 5, duplicates: 2, dead_lettered: 0 });
        let threads: std::collections::HashMap<u32, std::thread::ThreadId> = seen.lock().unwrap().iter().copied().collect();
        assert_eq!(threads[&1], caller, "the first shard on the calling task");
        assert_ne!(threads[&2], caller, "the second on a worker thread");

        for failing in [3, 4] {
            let seen: Arc<Seen> = Arc::default();
            let failed = apply_shards(vec![vec![failing], vec![1], vec![2]], &seen, apply).await;
            assert!(failed.is_err(), "shard {failing} fails the batch");
            let mut finished: Vec<u32> = seen.lock().unwrap().iter().map(|(shard, _)| *shard).collect();
            finished.sort_unstable();
            assert_eq!(finished, vec![1, 2, failing], "every shard finished first");
        }
    }

    proptest::proptest! {
        /// Every event lands in exactly one shard, a key's events in one
        /// shard and in batch order, and the shard count keeps its bounds.
        #[test]
        fn shards_split_by_key_and_keep_order(keys in proptest::collection::vec(0u8..40, 0..1_200), batch_shards in 1usize..5, shard_min_events in 1usize..400) {
            let limits = crate::config::ConsumerConfig { batch_shards, shard_min_events };
            let events: Vec<(usize, uuid::Uuid)> = keys.iter().enumerate().map(|(i, k)| (i, uuid::Uuid::from_u128(u128::from(*k) * 0x9e37_79b9_7f4a_7c15))).collect();
            let shards = shards(events.clone(), limits, |e| e.1);
            proptest::prop_assert!(!shards.is_empty() && shards.len() <= batch_shards);
            proptest::prop_assert!(shards.len() <= (events.len() / shard_min_events).max(1));
            let mut seen: Vec<usize> = shards.iter().flatten().map(|e| e.0).collect();
            seen.sort_unstable();
            proptest::prop_assert_eq!(seen, (0..events.len()).collect::<Vec<_>>());
            for (i, shard) in shards.iter().enumerate() {
                proptest::prop_assert!(shard.windows(2).all(|w| w[0].0 < w[1].0), "batch order kept");
                for other in &shards[i + 1..] {
                    proptest::prop_assert!(shard.iter().all(|a| other.iter().all(|b| a.1 != b.1)), "a key in two shards");
                }
            }
        }
    }
}
