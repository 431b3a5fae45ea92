//! Flash-sale orders and their outbox.

use std::collections::HashSet;

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::rfc3339;
use crate::error::AppError;
use crate::events::OrderEvent;

/// Inserts PENDING orders and their outbox rows in one statement (prepared
/// once per connection): on its own it is one round trip and one commit for
/// the whole batch; inside the caller's transaction (an Idempotency-Key's
/// claim) it commits with it. A buyer who already has an order for the
/// product is skipped, not an error, so one such row does not fail the
/// others: returns the ids recorded. The outbox rows are stamped when
/// written, not when the transaction began (which can be much earlier with
/// an Idempotency-Key): the relay's grace period counts from here.
pub async fn insert_with_outbox(db: &impl deadpool_postgres::GenericClient, events: &[&OrderEvent]) -> Result<HashSet<Uuid>, AppError> {
    let statement = db
        .prepare_cached(
            "WITH input AS (
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::text[], $6::timestamptz[], $7::jsonb[])
                     AS t(id, user_id, product_id, amount, currency, created_at, payload)),
             ordered AS (
                 INSERT INTO orders (id, user_id, product_id, amount, currency, created_at)
                 SELECT id, user_id, product_id, amount, currency, created_at FROM input
                 ON CONFLICT (user_id, product_id) DO NOTHING
                 RETURNING id)
             INSERT INTO order_outbox (order_id, payload, created_at)
             SELECT input.id, input.payload, clock_timestamp() FROM input JOIN ordered USING (id)
             RETURNING order_id",
        )
        .await?;
    // Rows in one order (buyer, product: the unique key), so two batches
    // with the same buyer wait for each other at most one way, never in a
    // cycle.
    let mut events = events.to_vec();
    events.sort_unstable_by_key(|e| (e.user_id, e.product_id));
    let ids: Vec<Uuid> = events.iter().map(|e| e.order_id).collect();
    let users: Vec<Uuid> = events.iter().map(|e| e.user_id).collect();
    let products: Vec<Uuid> = events.iter().map(|e| e.product_id).collect();
    let amounts: Vec<i64> = events.iter().map(|e| e.amount).collect();
    let currencies: Vec<&str> = events.iter().map(|e| e.currency.as_str()).collect();
    let times: Vec<OffsetDateTime> = events.iter().map(|e| e.ordered_at).collect();
    let payloads = events.iter().map(|e| serde_json::to_value(e)).collect::<Result<Vec<_>, _>>().map_err(AppError::internal)?;
    let rows = db.query(&statement, &[&ids, &users, &products, &amounts, &currencies, &times, &payloads]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Deletes the outbox rows of events the broker acknowledged, inside the
/// caller's transaction, which holds their locks (the relay). The topic is
/// the record of what was published.
pub async fn delete_published(db: &impl GenericClient, ids: &[Uuid]) -> Result<(), AppError> {
    db.execute("DELETE FROM order_outbox WHERE order_id = ANY($1)", &[&ids]).await?;
    Ok(())
}

/// Deletes the outbox rows of events the broker acknowledged, from the
/// request path, skipping any row a relay run holds: the request never
/// waits behind the relay (which then publishes that event again;
/// settlement is idempotent per order). Returns the rows deleted.
pub async fn delete_published_now(db: &impl deadpool_postgres::GenericClient, ids: &[Uuid]) -> Result<u64, AppError> {
    let statement = db
        .prepare_cached(
            "DELETE FROM order_outbox WHERE order_id IN (
                 SELECT order_id FROM order_outbox WHERE order_id = ANY($1) FOR UPDATE SKIP LOCKED)",
        )
        .await?;
    Ok(db.execute(&statement, &[&ids]).await?)
}

/// Locks up to `limit` unpublished outbox rows at least `grace_ms` old,
/// oldest first, skipping rows another run holds (caller's transaction).
/// Younger rows belong to the request that wrote them, which is publishing.
pub async fn claim_unpublished(db: &impl GenericClient, grace_ms: u64, limit: i64) -> Result<Vec<OrderEvent>, AppError> {
    let grace_ms = grace_ms as f64;
    let rows = db
        .query(
            "SELECT payload FROM order_outbox
             WHERE created_at < now() - make_interval(secs => $1::float8 / 1000)
             ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            &[&grace_ms, &limit],
        )
        .await?;
    rows.iter()
        .map(|r| serde_json::from_value(r.get::<_, serde_json::Value>(0)).map_err(AppError::internal))
        .collect()
}

/// Which of `users` have an order (any status) for `product`.
pub async fn buyers_with_orders(db: &impl GenericClient, product: Uuid, users: &[Uuid]) -> Result<HashSet<Uuid>, AppError> {
    let rows = db.query("SELECT user_id FROM orders WHERE product_id = $1 AND user_id = ANY($2)", &[&product, &users]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Products whose gate may hold reservations: the sale has started and its
/// keys have not expired (`keys_after_end_ms` after the end); most recently
/// ending first, at most `limit`.
pub async fn products_with_live_gates(db: &impl GenericClient, keys_after_end_ms: i64, limit: i64) -> Result<Vec<Uuid>, AppError> {
    let after_end_ms = keys_after_end_ms as f64;
    let rows = db
        .query(
            "SELECT id FROM products
             WHERE start_time <= now() AND end_time > now() - make_interval(secs => $1::float8 / 1000)
             ORDER BY end_time DESC, id LIMIT $2",
            &[&after_end_ms, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// `orders.status`: PENDING until settled, then SUCCESS or FAILED.
pub const STATUSES: &[&str] = &["PENDING", "SUCCESS", "FAILED"];

/// Why settlement failed an order: no unit was left for it.
pub const REASON_NO_STOCK: &str = "NO_STOCK_AT_SETTLEMENT";

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Order)]
pub struct OrderView {
    pub order_id: Uuid,
    pub product_id: Uuid,
    #[schema(schema_with = crate::api::responses::order_status)]
    pub status: String,
    /// Integer amount in minor units of `currency`.
    pub amount: i64,
    #[schema(schema_with = crate::api::responses::currency)]
    pub currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::api::responses::order_reason)]
    pub reason: Option<String>,
    #[schema(schema_with = crate::api::responses::time)]
    pub created_at: String,
    #[serde(skip)]
    pub user_id: Uuid,
}

pub async fn view(db: &impl GenericClient, id: Uuid) -> Result<Option<OrderView>, AppError> {
    let row = db
        .query_opt("SELECT id, product_id, status, amount, currency, reason, created_at, user_id FROM orders WHERE id = $1", &[&id])
        .await?;
    Ok(row.map(|r| OrderView {
        order_id: r.get(0),
        product_id: r.get(1),
        status: r.get(2),
        amount: r.get(3),
        currency: r.get(4),
        reason: r.get(5),
        created_at: rfc3339(r.get::<_, OffsetDateTime>(6)),
        user_id: r.get(7),
    }))
}
