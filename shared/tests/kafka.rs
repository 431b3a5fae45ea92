//! The shared producer and the broker, for real: what the platform's
//! delivery guarantees rest on. Each test uses its own topics and groups.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use paystream::config::Config;
use paystream::kafka::{client_config, EventProducer, OutgoingRecord, PublishError};
use paystream::testing::{create_topics, fresh_config, unique_suffix, PrivateBroker};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

fn consumer(config: &Config, group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = client_config(&config.kafka, "paystream-tests")
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

async fn topic(config: &Config, partitions: i32) -> String {
    let name = format!("test-{}", unique_suffix());
    create_topics(config, &[(&name, partitions)]).await;
    name
}

#[tokio::test]
async fn a_published_record_is_read_back_by_a_group_with_key_and_headers() {
    let config = fresh_config().await;
    let topic = topic(&config, 3).await;
    let producer = EventProducer::new(&config.kafka, "tests").unwrap();
    let key = uuid::Uuid::new_v4().to_string();
    let payload = br#"{"v":1,"payment_id":"p1"}"#;
    let delivered = producer
        .publish(OutgoingRecord {
            topic: &topic,
            key: key.as_bytes(),
            payload,
            headers: &[("event-type", b"payment.received"), ("schema-version", b"1")],
        })
        .await
        .expect("broker acknowledges");

    let consumer = consumer(&config, &format!("g-{}", unique_suffix()), &topic);
    let message = tokio::time::timeout(RECEIVE_TIMEOUT, consumer.recv()).await.expect("a record arrives").expect("no consumer error");
    assert_eq!((message.partition(), message.offset()), (delivered.partition, delivered.offset));
    assert_eq!(message.key(), Some(key.as_bytes()));
    assert_eq!(message.payload(), Some(&payload[..]));
    let headers = message.headers().expect("headers kept");
    let headers: HashMap<&str, &[u8]> = headers.iter().map(|h| (h.key, h.value.unwrap())).collect();
    assert_eq!(headers["event-type"], b"payment.received");
    assert_eq!(headers["schema-version"], b"1");
}

/// A group that commits part-way and stops, then resumes, must get exactly
/// the records it had not committed: no skip, no duplicate. The platform's
/// at-least-once consumers (and the local poller) depend on it.
#[tokio::test]
async fn a_group_that_stops_part_way_resumes_with_exactly_the_rest() {
    const RECORDS: usize = 30;
    const FIRST_PART: usize = 10;
    let config = fresh_config().await;
    let topic = topic(&config, 3).await;
    let producer = EventProducer::new(&config.kafka, "tests").unwrap();
    for i in 0..RECORDS {
        let key = format!("user-{}", i % 7);
        let payload = format!("record-{i}");
        producer.publish(OutgoingRecord { topic: &topic, key: key.as_bytes(), payload: payload.as_bytes(), headers: &[] }).await.unwrap();
    }

    let group = format!("g-{}", unique_suffix());
    let mut seen: Vec<String> = Vec::new();
    {
        let first = consumer(&config, &group, &topic);
        let mut positions = TopicPartitionList::new();
        while seen.len() < FIRST_PART {
            let m = tokio::time::timeout(RECEIVE_TIMEOUT, first.recv()).await.expect("records arrive").unwrap();
            seen.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
            positions.add_partition_offset(&topic, m.partition(), Offset::Offset(m.offset() + 1)).unwrap();
        }
        first.commit(&positions, CommitMode::Sync).expect("commit");
        first.unsubscribe();
        // Dropping closes the consumer, which leaves the group cleanly.
    }

    let second = consumer(&config, &group, &topic);
    while seen.len() < RECORDS {
        let m = tokio::time::timeout(RECEIVE_TIMEOUT, second.recv()).await.expect("the rest arrives").unwrap();
        seen.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
    }
    // Nothing beyond the rest may follow (a duplicate would show up here).
    let extra = tokio::time::timeout(Duration::from_secs(3), second.recv()).await;
    assert!(extra.is_err(), "unexpected extra record: {:?}", extra.map(|r| r.map(|m| m.offset())));

    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), RECORDS, "no duplicates: {seen:?}");
    let expected: BTreeSet<String> = (0..RECORDS).map(|i| format!("record-{i}")).collect();
    assert_eq!(unique.into_iter().cloned().collect::<BTreeSet<_>>(), expected, "no skips");
}

#[tokio::test]
async fn with_the_broker_stopped_a_publish_fails_clearly_within_its_bound() {
    let mut broker = PrivateBroker::start();
    let mut config = fresh_config().await;
    config.kafka.bootstrap_servers = format!("127.0.0.1:{}", broker.port);
    config.kafka.publish_timeout_ms = 2_000;
    let topic = topic(&config, 1).await;
    let producer = EventProducer::new(&config.kafka, "tests").unwrap();
    let record = || OutgoingRecord { topic: &topic, key: b"k", payload: b"v", headers: &[] };
    producer.publish(record()).await.expect("the running broker acknowledges");

    broker.stop();
    let started = Instant::now();
    let err = producer.publish(record()).await.expect_err("no broker, no acknowledgement");
    let elapsed = started.elapsed();
    assert!(matches!(err, PublishError::Unavailable { timeout_ms: 2_000, .. }), "{err}");
    assert!(elapsed <= Duration::from_millis(2_000 + 1_000), "publish gave up after {elapsed:?}");
    let app: paystream::AppError = err.into();
    assert_eq!((app.status(), app.code.as_str()), (503, "BROKER_UNAVAILABLE"));
}

/// After a broker restart, publishing works again (the old producer is
/// replaced if the broker refuses its state) and records from before the
/// restart are still there: the broker's SQLite storage is durable.
#[tokio::test]
async fn after_a_broker_restart_publishing_resumes_and_nothing_was_lost() {
    let mut broker = PrivateBroker::start();
    let mut config = fresh_config().await;
    config.kafka.bootstrap_servers = broker.bootstrap();
    config.kafka.publish_timeout_ms = 2_000;
    let topic = topic(&config, 1).await;
    let platform = paystream::Platform::from_config("tests", config.clone()).unwrap();
    let record = |payload: &'static [u8]| OutgoingRecord { topic: &topic, key: b"k", payload, headers: &[] };
    platform.producer().await.unwrap().publish(record(b"before")).await.expect("acknowledged");

    broker.stop();
    let failed = platform.producer().await.unwrap().publish(record(b"during")).await;
    assert!(failed.is_err(), "no broker, no acknowledgement");
    broker.restart();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match platform.producer().await.unwrap().publish(record(b"after")).await {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "publishing never resumed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let consumer = consumer(&config, &format!("g-{}", unique_suffix()), &topic);
    let mut seen = Vec::new();
    while !seen.contains(&b"after".to_vec()) {
        let m = tokio::time::timeout(RECEIVE_TIMEOUT, consumer.recv()).await.expect("records arrive").unwrap();
        seen.push(m.payload().unwrap().to_vec());
    }
    assert_eq!(seen[0], b"before", "the record from before the restart survived it");
}

/// A member that leaves while its group rebalances must not stall the rest:
/// the coordinator makes a remaining member the leader and the rebalance
/// completes. (tansu 0.6.0 failed this: it kept the departed member as the
/// leader of the "Forming" group, so nobody ever got a partition again
/// until the broker restarted.)
#[tokio::test]
async fn a_member_leaving_mid_rebalance_does_not_stall_the_group() {
    let config = fresh_config().await;
    let topic = topic(&config, 2).await;
    let producer = EventProducer::new(&config.kafka, "tests").unwrap();
    for key in ["k0", "k1", "k2", "k3"] {
        producer.publish(OutgoingRecord { topic: &topic, key: key.as_bytes(), payload: key.as_bytes(), headers: &[] }).await.unwrap();
    }
    let group = format!("g-{}", unique_suffix());
    let member = |instance: Option<&str>, heartbeat_ms: u32| {
        let mut settings = client_config(&config.kafka, "paystream-tests");
        settings
            .set("group.id", &group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("heartbeat.interval.ms", heartbeat_ms.to_string())
            .set("session.timeout.ms", "45000");
        if let Some(instance) = instance {
            settings.set("group.instance.id", instance);
        }
        let member: StreamConsumer = settings.create().expect("consumer");
        member.subscribe(&[&topic]).expect("subscribe");
        member
    };
    // A forms the group as its leader; it hears of the next rebalance only
    // at its next heartbeat, seconds away.
    let a = member(None, 10_000);
    tokio::time::timeout(RECEIVE_TIMEOUT, a.recv()).await.expect("A gets partitions").unwrap();
    // B joins, so the group rebalances and waits for A to rejoin; A leaves
    // (LeaveGroup) before it does.
    let b = member(Some(&format!("{group}-b")), 3_000);
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(a);
    let m = tokio::time::timeout(RECEIVE_TIMEOUT, b.recv()).await.expect("B gets partitions after A left mid-rebalance").unwrap();
    assert!(m.payload().is_some());
}
