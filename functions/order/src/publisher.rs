//! What follows an accepted order, done in batches beside the requests:
//! its reservation's record in the gate is dropped (the order is in
//! PostgreSQL now), and its event is published.
//!
//! An order is durable once its row and its outbox row are committed; from
//! then on its event only has to reach `order-stream` eventually, and the
//! relay schedule publishes whatever the outbox still holds. Published one
//! by one, each event cost a produce request and an outbox-deleting commit
//! of its own, most of an order's cost (README, `bench orders`). Here the
//! events of every invocation in flight in this environment go out
//! together: what queued while earlier batches were being published is the
//! next batch, its records share produce requests, and one DELETE clears it.
//! The batch's reservation records go first, one Redis script per product;
//! a record left behind (Redis unreachable, a crash) is dropped by the
//! relay schedule's reconciliation, which finds the order.
//!
//! Whether a request waits for its event: an environment that runs one
//! invocation at a time (classic Lambda) is frozen once it has answered,
//! so there the request waits for its batch (at most
//! `ORDER_INLINE_PUBLISH_MS`) before answering, as it always did. An
//! environment that runs several at once (`AWS_LAMBDA_MAX_CONCURRENCY` > 1,
//! Lambda Managed Instances) keeps running between them, and the request
//! answers as soon as the order is committed.
//!
//! Bounds ([`LIMITS`]): at most 8,192 events wait (a full queue leaves the
//! event to the relay), a batch holds at most 512, and at most 4 batches
//! are being published at once, each publish bounded by the producer's own
//! timeout. A crash loses nothing: every queued event is still an
//! unpublished outbox row.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use uuid::Uuid;

use paystream::batch::{Batcher, Limits, Step};
use paystream::events::{OrderEvent, HEADER_EVENT_ID, HEADER_EVENT_TYPE};
use paystream::flash::{self, Held, Recorded, Verdict};
use paystream::kafka::{EventProducer, OutgoingRecord};
use paystream::store::orders;
use paystream::{AppError, Platform};

pub const LIMITS: Limits = Limits { queue_max: 8_192, batch_max: 512, in_flight_max: 4 };

/// One per execution environment (held by the function's state).
pub struct Publisher {
    platform: Arc<Platform>,
    batcher: Batcher<PublishOrders>,
}

impl Publisher {
    pub fn new(platform: Arc<Platform>) -> Self {
        Self { batcher: Batcher::new(PublishOrders { platform: Arc::clone(&platform) }, LIMITS), platform }
    }

    /// Hands an accepted (committed) order over: its reservation `held`
    /// and its event. In an environment that runs one invocation at a time,
    /// waits until both are done.
    pub async fn publish(&self, event: OrderEvent, held: Held) {
        let config = &self.platform.config;
        let order_id = event.order_id;
        let published = match self.batcher.submit(Committed { event, held }) {
            Ok(published) => published,
            Err(e) => return tracing::warn!(order_id = %order_id, error = %e, "order event left in the outbox for the relay"),
        };
        if config.invocations_per_environment <= 1 {
            let bound = Duration::from_millis(config.flash.inline_publish_ms);
            if tokio::time::timeout(bound, published).await.is_err() {
                tracing::warn!(order_id = %order_id, "broker slow; the order event is published later (or by the relay)");
            }
        }
    }
}

/// An order PostgreSQL holds, with the reservation that became it.
struct Committed {
    event: OrderEvent,
    held: Held,
}

struct PublishOrders {
    platform: Arc<Platform>,
}

impl Step for PublishOrders {
    type Row = Committed;
    type Answer = ();
    async fn run(&self, committed: Vec<Committed>) -> Vec<()> {
        let count = committed.len();
        let (events, held): (Vec<OrderEvent>, Vec<Held>) = committed.into_iter().map(|c| (c.event, c.held)).unzip();
        forget_reservations(&self.platform, &held).await;
        if let Err(e) = publish_batch(&self.platform, events).await {
            tracing::warn!(events = count, error = ?e, "order events left in the outbox for the relay");
        }
        vec![(); count]
    }
}

/// Drops the gate's records of these reservations (their orders are
/// committed), one script per product. What fails is left to reconciliation.
async fn forget_reservations(p: &Platform, held: &[Held]) {
    let mut by_product: std::collections::HashMap<Uuid, Vec<(Recorded, Verdict)>> = std::collections::HashMap::new();
    for h in held {
        by_product.entry(h.product).or_default().push((Recorded { user: h.user, stamp_ms: h.stamp_ms }, Verdict::Forget));
    }
    for (product, forget) in by_product {
        if let Err(e) = flash::settle_stale(&p.redis, product, &forget).await {
            tracing::warn!(product_id = %product, reservations = forget.len(), error = ?e, "reservation records kept; reconciliation will drop them");
        }
    }
}

/// Publishes one batch (every record at once on the shared producer) and
/// deletes in one statement the outbox rows of those the broker
/// acknowledged. What fails stays in the outbox for the relay.
async fn publish_batch(p: &Platform, events: Vec<OrderEvent>) -> Result<(), AppError> {
    let producer = p.producer().await?;
    let topic: Arc<str> = Arc::from(p.config.kafka.order_topic.as_str());
    let mut in_flight = JoinSet::new();
    let count = events.len();
    for event in events {
        in_flight.spawn(publish_one(Arc::clone(&producer), Arc::clone(&topic), event));
    }
    let mut acknowledged = Vec::with_capacity(count);
    while let Some(outcome) = in_flight.join_next().await {
        match outcome.map_err(AppError::internal)? {
            (id, Ok(())) => acknowledged.push(id),
            (id, Err(e)) => tracing::warn!(order_id = %id, error = %e, "order event left in the outbox for the relay"),
        }
    }
    if !acknowledged.is_empty() {
        // Never waits for a relay run holding a row (it skips it).
        orders::delete_published_now(&p.pg.get().await?, &acknowledged).await?;
    }
    Ok(())
}

/// Publishes one order event (key and event id: the order id) and waits
/// for the broker's answer, within the producer's own timeout.
pub(crate) async fn publish_one(producer: Arc<EventProducer>, topic: Arc<str>, event: OrderEvent) -> (Uuid, Result<(), String>) {
    let id = event.order_id.to_string();
    let payload = match serde_json::to_vec(&event) {
        Ok(payload) => payload,
        Err(e) => return (event.order_id, Err(e.to_string())),
    };
    let record = OutgoingRecord {
        topic: &topic,
        key: id.as_bytes(),
        payload: &payload,
        headers: &[(HEADER_EVENT_TYPE, OrderEvent::TYPE.as_bytes()), (HEADER_EVENT_ID, id.as_bytes())],
    };
    (event.order_id, producer.publish(record).await.map(|_| ()).map_err(|e| e.to_string()))
}
