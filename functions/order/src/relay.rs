//! The outbox relay: publishes order events the broker did not take at
//! order time (outage, crash between commit and publish). Publishing twice
//! is harmless: settlement is idempotent per order.

use paystream::events::{OrderEvent, HEADER_EVENT_ID, HEADER_EVENT_TYPE};
use paystream::kafka::OutgoingRecord;
use paystream::store::orders;
use paystream::{AppError, Platform};

/// Most outbox rows one relay pass publishes.
const RELAY_BATCH_MAX: i64 = 1_000;

/// Publishes up to [`RELAY_BATCH_MAX`] unpublished order events; returns how
/// many. Stops at the first broker failure (the rest waits for the next pass).
pub async fn run(p: &Platform) -> Result<usize, AppError> {
    let mut db = p.pg.get().await?;
    let tx = paystream::db::begin(&mut db).await?;
    let pending = orders::claim_unpublished(&tx, RELAY_BATCH_MAX).await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let producer = p.producer().await?;
    let mut published = Vec::with_capacity(pending.len());
    for event in &pending {
        let payload = serde_json::to_vec(event).map_err(AppError::internal)?;
        let id = event.order_id.to_string();
        let record = OutgoingRecord {
            topic: &p.config.kafka.order_topic,
            key: id.as_bytes(),
            payload: &payload,
            headers: &[(HEADER_EVENT_TYPE, OrderEvent::TYPE.as_bytes()), (HEADER_EVENT_ID, id.as_bytes())],
        };
        match producer.publish(record).await {
            Ok(_) => published.push(event.order_id),
            Err(e) => {
                tracing::warn!(error = %e, published = published.len(), "relay stopped: broker unavailable");
                break;
            }
        }
    }
    orders::mark_published(&tx, &published).await?;
    tx.commit().await?;
    tracing::info!(published = published.len(), "order outbox relayed");
    Ok(published.len())
}
