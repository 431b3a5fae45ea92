//! The Kafka producer every function shares: `acks=all`, one request in
//! flight (ordered), every publish bounded in time. Created once per execution environment
//! (librdkafka keeps its connections and threads) and reused by every
//! invocation.
//!
//! A publish either returns the broker's acknowledgement or an error; it
//! never silently drops a record. When the broker restarts, in-flight
//! requests fail and are surfaced as [`PublishError`] so callers can answer
//! 503 or keep the record in an outbox.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::config::{ConfigError, KafkaAuth, KafkaConfig};
use crate::msk_connect::IamTokenContext;
use crate::error::{AppError, ErrorCode};

/// A producer with the context its authentication needs.
enum Inner {
    Plain(FutureProducer),
    Iam(FutureProducer<IamTokenContext>),
}

pub struct EventProducer {
    producer: Inner,
    publish_timeout: Duration,
    /// Cleared by any failed delivery; the platform then starts a new
    /// producer, with fresh connections and an empty queue, which costs a
    /// few milliseconds. (Found when the producer was idempotent: after a
    /// timed-out record it needed a new producer epoch, which tansu 0.6,
    /// the broker before nisshi, did not grant, and every later record
    /// timed out too. A fresh producer is right on any broker.)
    healthy: std::sync::atomic::AtomicBool,
}

/// Where the broker stored a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A record to publish. Keys decide the partition (and so the ordering).
#[derive(Debug)]
pub struct OutgoingRecord<'a> {
    pub topic: &'a str,
    pub key: &'a [u8],
    pub payload: &'a [u8],
    pub headers: &'a [(&'a str, &'a [u8])],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn settings(pairs: &[(&str, &str)]) -> ClientConfig {
        let config = Config::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).unwrap();
        client_config(&config.kafka, "test")
    }

    #[test]
    fn authentication_modes_set_the_librdkafka_properties() {
        let local = settings(&[]);
        assert_eq!(local.get("security.protocol"), Some("plaintext"));
        let iam = settings(&[("KAFKA_AUTH", "iam"), ("KAFKA_BOOTSTRAP_SERVERS", "b:9098")]);
        assert_eq!((iam.get("security.protocol"), iam.get("sasl.mechanism")), (Some("sasl_ssl"), Some("OAUTHBEARER")));
        let scram = settings(&[("KAFKA_AUTH", "scram"), ("KAFKA_SASL_USERNAME", "u"), ("KAFKA_SASL_PASSWORD", "p")]);
        assert_eq!((scram.get("sasl.mechanism"), scram.get("sasl.username")), (Some("SCRAM-SHA-512"), Some("u")));
        assert!(Config::from_vars([("KAFKA_AUTH".to_string(), "scram".to_string())].into()).is_err(), "SCRAM needs credentials");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Not acknowledged in time (broker down, unreachable, restarting).
    #[error("broker did not acknowledge within {timeout_ms} ms: {reason}")]
    Unavailable { timeout_ms: u64, reason: String },
    /// The broker answered and refused the record (unknown topic, too large...).
    #[error("broker rejected the record: {0}")]
    Rejected(String),
}

impl From<PublishError> for AppError {
    fn from(err: PublishError) -> Self {
        AppError::new(ErrorCode::BrokerUnavailable, "the event broker did not acknowledge; nothing was recorded, retry later")
            .with_source(err)
    }
}

/// Creates topics (the local broker does not create them on first use); a
/// topic that already exists is fine. Used by tests and the benchmarks.
pub async fn create_topics(config: &KafkaConfig, topics: &[(&str, i32)]) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(config, "paystream-admin").create().map_err(|e| format!("admin client: {e}"))?;
    let new: Vec<NewTopic> = topics.iter().map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(&new, &options).await.map_err(|e| format!("create topics: {e}"))?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(format!("creating topic {topic}: {code}")),
        }
    }
    Ok(())
}

/// librdkafka settings shared by producers and (test/tool) consumers.
pub fn client_config(config: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.bootstrap_servers).set("client.id", client_id);
    match config.auth {
        KafkaAuth::None => client.set("security.protocol", &config.security_protocol),
        KafkaAuth::Scram => client.set("security.protocol", "sasl_ssl").set("sasl.mechanism", "SCRAM-SHA-512"),
        KafkaAuth::Iam => client.set("security.protocol", "sasl_ssl").set("sasl.mechanism", "OAUTHBEARER"),
    };
    if let Some(mechanism) = config.sasl_mechanism.as_ref().filter(|_| config.auth == KafkaAuth::None) {
        client.set("sasl.mechanism", mechanism);
    }
    if let Some(username) = &config.sasl_username {
        client.set("sasl.username", username);
    }
    if let Some(password) = &config.sasl_password {
        client.set("sasl.password", password.expose());
    }
    client
}

impl EventProducer {
    /// `config.bootstrap_servers` must be resolved (see
    /// [`crate::msk_connect::resolve_bootstrap`]). With IAM auth it must be
    /// called inside a Tokio runtime.
    pub fn new(config: &KafkaConfig, client_id: &str) -> Result<Self, ConfigError> {
        let timeout_ms = config.publish_timeout_ms.to_string();
        let mut settings = client_config(config, client_id);
        settings
            // Durable and in order, without librdkafka's idempotent mode:
            // acks=all, and one produce request in flight per connection, so
            // a retried request can never overtake a later one (one user's
            // payments stay ordered). What idempotence would add, the broker
            // dropping a retried batch it already stored, the consumers do
            // anyway: every effect is keyed by the event's id, as they must
            // be for an event source's redeliveries. Why not idempotence:
            // librdkafka 2.12 caps an idempotent partition at 5 *messages* in
            // flight, so under load one produce request at a time goes out
            // per partition, and while it waits the broker thread finds its
            // next batch ready and spins (wake-up time "now") until the
            // answer comes, a whole core. Measured with `bench intake` (16 in
            // flight): raw publishes 3,100-3,300/s at p99 11-15 ms and 50 µs
            // of CPU each, against 1,100-1,500/s, 27-33 ms and 270-280 µs
            // idempotent. A failed delivery retires the producer either way
            // (see `healthy`).
            .set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1")
            .set("acks", "all")
            .set("message.timeout.ms", &timeout_ms)
            .set("request.timeout.ms", &timeout_ms)
            .set("socket.connection.setup.timeout.ms", &timeout_ms)
            .set("linger.ms", config.linger_ms.to_string());
        let fail = |e: rdkafka::error::KafkaError| ConfigError(format!("kafka producer: {e}"));
        let producer = match config.auth {
            KafkaAuth::Iam => Inner::Iam(settings.create_with_context(IamTokenContext::new(config.region.clone())).map_err(fail)?),
            _ => Inner::Plain(settings.create().map_err(fail)?),
        };
        Ok(Self { producer, publish_timeout: Duration::from_millis(config.publish_timeout_ms), healthy: true.into() })
    }

    /// False once this producer should be replaced (see [`Self::publish`]).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Publishes one record and waits for the broker's acknowledgement, at
    /// most the configured publish timeout.
    pub async fn publish(&self, record: OutgoingRecord<'_>) -> Result<Delivered, PublishError> {
        let timeout_ms = self.publish_timeout.as_millis() as u64;
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in record.headers {
            headers = headers.insert(Header { key: name, value: Some(*value) });
        }
        let future_record = FutureRecord::to(record.topic).key(record.key).payload(record.payload).headers(headers);
        let queue = Timeout::After(self.publish_timeout);
        let send = async {
            match &self.producer {
                Inner::Plain(p) => p.send(future_record, queue).await,
                Inner::Iam(p) => p.send(future_record, queue).await,
            }
        };
        // message.timeout.ms already bounds delivery; the outer timeout is a
        // second, independent bound in case librdkafka itself is wedged.
        let outer = self.publish_timeout + Duration::from_millis(500);
        match tokio::time::timeout(outer, send).await {
            Ok(Ok(delivery)) => Ok(Delivered { partition: delivery.partition, offset: delivery.offset }),
            Ok(Err((err, _message))) => {
                self.retire(&err.to_string());
                Err(classify(err, timeout_ms))
            }
            Err(_) => {
                self.retire("timed out");
                Err(PublishError::Unavailable { timeout_ms, reason: "timed out".into() })
            }
        }
    }

    /// For a caller that gave up waiting on publishes before their own
    /// timeout (a deadline shorter than `KAFKA_PUBLISH_TIMEOUT_MS`): their
    /// outcome is unknown, so the producer may be one the broker will no
    /// longer serve; the next publish starts a new one.
    pub fn abandon(&self) {
        self.retire("publishes abandoned before their timeout");
    }

    fn retire(&self, reason: &str) {
        if self.healthy.swap(false, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(reason, "delivery failed; the next publish starts a new producer");
        }
    }

    /// Waits (bounded) for queued records to be delivered; call on shutdown.
    pub fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        let flushed = match &self.producer {
            Inner::Plain(p) => p.flush(Timeout::After(timeout)),
            Inner::Iam(p) => p.flush(Timeout::After(timeout)),
        };
        flushed.map_err(|e| PublishError::Unavailable { timeout_ms: timeout.as_millis() as u64, reason: e.to_string() })
    }
}

fn classify(err: rdkafka::error::KafkaError, timeout_ms: u64) -> PublishError {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};
    match err.rdkafka_error_code() {
        Some(Code::UnknownTopicOrPartition | Code::UnknownTopic | Code::MessageSizeTooLarge | Code::InvalidRecord) => {
            PublishError::Rejected(err.to_string())
        }
        _ => match err {
            KafkaError::MessageProduction(code) => PublishError::Unavailable { timeout_ms, reason: code.to_string() },
            other => PublishError::Unavailable { timeout_ms, reason: other.to_string() },
        },
    }
}
