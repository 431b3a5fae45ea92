//! After the load: wait (bounded) until the system is quiet, then read what
//! the checker needs from the database, the topics and the live sale gate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hyper::Method;
use paystream::config::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

use crate::check::{CountRow, Database, LedgerRow, OrderRow, PaymentRow, ProductRow, SettlementRow, Topics, VisitRow};
use crate::load::Ctx;

const POLL_EVERY: Duration = Duration::from_secs(2);
const KAFKA_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a topic read may take.
const TOPIC_READ_BOUND: Duration = Duration::from_secs(60);
/// Attempts of each database read (PostgreSQL may just have restarted).
const READ_ATTEMPTS_MAX: usize = 5;

/// Counters that must settle before checking.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    payments: i64,
    undecided: i64,
    pending: i64,
    orders_pending: i64,
    outbox_unpublished: i64,
    visits: i64,
    tips: i64,
    settlements: i64,
    lag: Option<i64>,
}

impl Snapshot {
    fn quiet(&self) -> bool {
        self.undecided == 0 && self.pending == 0 && self.orders_pending == 0 && self.outbox_unpublished == 0 && self.lag == Some(0)
    }
}

/// Waits until every payment is decided (none PENDING), every order settled,
/// the outbox empty and every consumer group caught up, and nothing changed
/// over one more poll; false if that did not happen within `bound`.
pub async fn quiesce(ctx: &Ctx, kafka: &KafkaConfig, groups: &[(String, Vec<String>)], bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    let mut previous: Option<Snapshot> = None;
    let mut logged = Instant::now() - Duration::from_secs(60);
    loop {
        let snapshot = snapshot(ctx, kafka, groups).await;
        if let Some(s) = &snapshot {
            if s.quiet() && previous.as_ref() == Some(s) {
                ctx.log(&format!("quiet: {s:?}"));
                return true;
            }
            if logged.elapsed() >= Duration::from_secs(6) {
                ctx.log(&format!("waiting for quiet: {s:?}"));
                logged = Instant::now();
            }
        }
        if Instant::now() >= deadline {
            ctx.log(&format!("not quiet within {bound:?}: {snapshot:?}"));
            return false;
        }
        previous = snapshot;
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn snapshot(ctx: &Ctx, kafka: &KafkaConfig, groups: &[(String, Vec<String>)]) -> Option<Snapshot> {
    let row = async {
        let db = ctx.pg.get().await.ok()?;
        db.query_one(
            "SELECT (SELECT count(*) FROM payments),
                    (SELECT count(*) FROM payments p WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.payment_id = p.id)),
                    (SELECT count(*) FROM transactions WHERE status = 'PENDING'),
                    (SELECT count(*) FROM orders WHERE status = 'PENDING'),
                    (SELECT count(*) FROM order_outbox),
                    (SELECT count(*) FROM loyalty_visits),
                    (SELECT count(*) FROM benefit_tips),
                    (SELECT count(*) FROM settlements)",
            &[],
        )
        .await
        .ok()
    }
    .await?;
    let (kafka, groups) = (kafka.clone(), groups.to_vec());
    let lag = tokio::task::spawn_blocking(move || total_lag(&kafka, &groups)).await.ok().and_then(Result::ok);
    Some(Snapshot {
        payments: row.get(0),
        undecided: row.get(1),
        pending: row.get(2),
        orders_pending: row.get(3),
        outbox_unpublished: row.get(4),
        visits: row.get(5),
        tips: row.get(6),
        settlements: row.get(7),
        lag,
    })
}

fn consumer(kafka: &KafkaConfig, group: &str) -> Result<BaseConsumer, String> {
    paystream::kafka::client_config(kafka, "chaos-checker")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| format!("consumer: {e}"))
}

/// (partition, low, high) of every partition of `topic`.
fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<Vec<(i32, i64, i64)>, String> {
    let metadata = consumer.fetch_metadata(Some(topic), KAFKA_REQUEST_TIMEOUT).map_err(|e| format!("metadata of {topic}: {e}"))?;
    let mut out = Vec::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), KAFKA_REQUEST_TIMEOUT).map_err(|e| format!("watermarks of {topic}-{}: {e}", p.id()))?;
            out.push((p.id(), low, high));
        }
    }
    Ok(out)
}

/// Records the event-source groups have not committed yet, over all their topics.
fn total_lag(kafka: &KafkaConfig, groups: &[(String, Vec<String>)]) -> Result<i64, String> {
    let mut lag = 0;
    for (group, topics) in groups {
        let probe = consumer(kafka, group)?;
        for topic in topics {
            let parts = partitions(&probe, topic)?;
            let mut wanted = TopicPartitionList::new();
            for (p, _, _) in &parts {
                wanted.add_partition(topic, *p);
            }
            let committed = probe.committed_offsets(wanted, KAFKA_REQUEST_TIMEOUT).map_err(|e| format!("committed offsets of {group}: {e}"))?;
            for (p, low, high) in parts {
                let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(n)) if n >= 0 => n,
                    _ => low,
                };
                lag += (high - at).max(0);
            }
        }
    }
    Ok(lag)
}

/// Every record of `topic` from the beginning: its event id (payload field
/// `id_field`), or None when it has none.
fn read_topic(kafka: &KafkaConfig, topic: &str, id_field: &str) -> Result<Vec<Option<Uuid>>, String> {
    let consumer = consumer(kafka, &format!("chaos-checker-{}", Uuid::new_v4().simple()))?;
    let parts = partitions(&consumer, topic)?;
    let mut assignment = TopicPartitionList::new();
    let mut left: HashMap<i32, i64> = HashMap::new();
    for (p, low, high) in &parts {
        if high > low {
            assignment.add_partition_offset(topic, *p, Offset::Beginning).map_err(|e| e.to_string())?;
            left.insert(*p, *high);
        }
    }
    if left.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&assignment).map_err(|e| format!("assign {topic}: {e}"))?;
    let deadline = Instant::now() + TOPIC_READ_BOUND;
    let mut ids = Vec::new();
    while !left.is_empty() {
        if Instant::now() > deadline {
            return Err(format!("{topic}: not read to its end within {TOPIC_READ_BOUND:?} (left: {left:?})"));
        }
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message.map_err(|e| format!("reading {topic}: {e}"))?;
        let value: serde_json::Value = message.payload().and_then(|p| serde_json::from_slice(p).ok()).unwrap_or_default();
        ids.push(value[id_field].as_str().and_then(|s| Uuid::parse_str(s).ok()));
        if left.get(&message.partition()).is_some_and(|high| message.offset() + 1 >= *high) {
            left.remove(&message.partition());
        }
    }
    Ok(ids)
}

fn count_records(kafka: &KafkaConfig, topic: &str) -> Result<usize, String> {
    let probe = consumer(kafka, "chaos-checker")?;
    Ok(partitions(&probe, topic)?.iter().map(|(_, low, high)| (high - low).max(0) as usize).sum())
}

pub async fn topics(kafka: &KafkaConfig, payment_topic: &str, order_topic: &str) -> Result<Topics, String> {
    let (kafka, payment_topic, order_topic) = (kafka.clone(), payment_topic.to_owned(), order_topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let payments = read_topic(&kafka, &payment_topic, "payment_id")?;
        let orders = read_topic(&kafka, &order_topic, "order_id")?;
        let dead_letters = count_records(&kafka, &format!("{payment_topic}.dlq"))? + count_records(&kafka, &format!("{order_topic}.dlq"))?;
        let unreadable = payments.iter().chain(&orders).filter(|id| id.is_none()).count();
        Ok(Topics { payment_events: payments.into_iter().flatten().collect(), order_events: orders.into_iter().flatten().collect(), unreadable, dead_letters })
    })
    .await
    .map_err(|e| e.to_string())?
}

/// One query, retried while PostgreSQL is not back yet; each row mapped
/// with `$map`. (A macro: this crate does not name tokio-postgres's types.)
macro_rules! rows {
    ($ctx:expr, $sql:expr, $map:expr) => {{
        let mut result = Err(String::new());
        for _ in 0..READ_ATTEMPTS_MAX {
            match $ctx.pg.get().await {
                Ok(db) => match db.query($sql, &[]).await {
                    Ok(rows) => {
                        result = Ok(rows.iter().map($map).collect::<Vec<_>>());
                        break;
                    }
                    Err(e) => result = Err(format!("{}: {e}", $sql)),
                },
                Err(e) => result = Err(format!("{}: {e}", $sql)),
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        result?
    }};
}

pub async fn database(ctx: &Ctx) -> Result<Database, String> {
    let mut db = Database {
        payments: rows!(ctx, "SELECT id, user_id, merchant_id, amount FROM payments", |r| PaymentRow {
            id: r.get(0),
            user: r.get(1),
            merchant: r.get(2),
            amount: r.get(3)
        }),
        ledger: rows!(ctx, "SELECT payment_id, status FROM transactions", |r| LedgerRow { payment: r.get(0), status: r.get(1) }),
        visits: rows!(ctx, "SELECT payment_id, user_id, merchant_id FROM loyalty_visits", |r| VisitRow { payment: r.get(0), user: r.get(1), merchant: r.get(2) }),
        counts: rows!(ctx, "SELECT user_id, merchant_id, visits::bigint FROM loyalty_counts", |r| CountRow { user: r.get(0), merchant: r.get(1), visits: r.get(2) }),
        tips: rows!(ctx, "SELECT payment_id FROM benefit_tips", |r| r.get::<_, Uuid>(0)),
        tip_notifications: rows!(ctx, "SELECT payload->>'payment_id' FROM notifications WHERE kind = 'BENEFIT_TIP'", |r| r
            .get::<_, Option<String>>(0)
            .and_then(|s| Uuid::parse_str(&s).ok())),
        orders: rows!(ctx, "SELECT id, user_id, product_id, status FROM orders", |r| OrderRow { id: r.get(0), user: r.get(1), product: r.get(2), status: r.get(3) }),
        settlements: rows!(ctx, "SELECT order_id, product_id FROM settlements", |r| SettlementRow { order: r.get(0), product: r.get(1) }),
        products: rows!(ctx, "SELECT id, stock::bigint FROM products", |r| ProductRow { id: r.get(0), stock: r.get(1), remaining: None }),
    };
    // The live gate, as buyers see it (rebuilt from PostgreSQL if Redis lost it).
    for p in &mut db.products {
        for _ in 0..READ_ATTEMPTS_MAX {
            let (attempt, body) = ctx.call(Method::GET, &format!("/products/{}", p.id), None, None, None).await;
            if attempt.status == Some(200) {
                p.remaining = body["remaining"].as_i64();
                break;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
    Ok(db)
}
