//! Flash-sale orders and their outbox.

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::rfc3339;
use crate::db::unique_violation;
use crate::error::{AppError, ErrorCode};
use crate::events::OrderEvent;

/// Inserts a PENDING order and its outbox row (caller's transaction).
pub async fn insert_with_outbox(db: &impl GenericClient, event: &OrderEvent) -> Result<(), AppError> {
    let inserted = db
        .execute(
            "INSERT INTO orders (id, user_id, product_id, amount, currency, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&event.order_id, &event.user_id, &event.product_id, &event.amount, &event.currency, &event.ordered_at],
        )
        .await;
    if let Err(e) = inserted {
        return Err(match unique_violation(&e) {
            Some("orders_user_product_key") => AppError::new(ErrorCode::AlreadyPurchased, "you already ordered this product"),
            _ => e.into(),
        });
    }
    let payload = serde_json::to_value(event).map_err(AppError::internal)?;
    db.execute("INSERT INTO order_outbox (order_id, payload) VALUES ($1, $2)", &[&event.order_id, &payload]).await?;
    Ok(())
}

pub async fn mark_published(db: &impl GenericClient, ids: &[Uuid]) -> Result<(), AppError> {
    db.execute("UPDATE order_outbox SET published_at = now() WHERE order_id = ANY($1) AND published_at IS NULL", &[&ids]).await?;
    Ok(())
}

/// Locks up to `limit` unpublished outbox rows (caller's transaction).
pub async fn claim_unpublished(db: &impl GenericClient, limit: i64) -> Result<Vec<OrderEvent>, AppError> {
    let rows = db
        .query(
            "SELECT payload FROM order_outbox WHERE published_at IS NULL ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED",
            &[&limit],
        )
        .await?;
    rows.iter()
        .map(|r| serde_json::from_value(r.get::<_, serde_json::Value>(0)).map_err(AppError::internal))
        .collect()
}

#[derive(Debug, Serialize)]
pub struct OrderView {
    pub order_id: Uuid,
    pub product_id: Uuid,
    pub status: String,
    pub amount: i64,
    pub currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
