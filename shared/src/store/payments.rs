//! Payment intake records (`pay`) and the facts copied into each event.

use serde::Serialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::domain::{CardId, MerchantId, UserId};
use crate::error::AppError;

/// The card's product and the merchant's facts, for the payment event.
pub struct IntakeFacts {
    pub card_product_id: Uuid,
    pub merchant_category: String,
    pub country: String,
    pub lat: f64,
    pub lon: f64,
}

/// Looks up the caller's card and the merchant in one round trip. Someone
/// else's card is "not found", like a missing one.
pub async fn intake_facts(db: &impl GenericClient, user: UserId, card: CardId, merchant: MerchantId) -> Result<IntakeFacts, AppError> {
    let row = db
        .query_one(
            "SELECT c.card_product_id, m.category, m.country, m.lat, m.lon
             FROM (SELECT 1) one
             LEFT JOIN cards c ON c.id = $1 AND c.user_id = $2
             LEFT JOIN merchants m ON m.id = $3",
            &[&card.0, &user.0, &merchant.0],
        )
        .await?;
    let card_product_id: Option<Uuid> = row.get(0);
    let category: Option<String> = row.get(1);
    let card_product_id = card_product_id.ok_or_else(|| AppError::not_found("card"))?;
    let merchant_category = category.ok_or_else(|| AppError::not_found("merchant"))?;
    Ok(IntakeFacts { card_product_id, merchant_category, country: row.get(2), lat: row.get(3), lon: row.get(4) })
}

pub struct NewPayment {
    pub id: Uuid,
    pub user_id: Uuid,
    pub card_id: Uuid,
    pub merchant_id: Uuid,
    pub amount: i64,
    pub currency: &'static str,
}

pub async fn insert(db: &impl GenericClient, p: &NewPayment) -> Result<(), AppError> {
    db.execute(
        "INSERT INTO payments (id, user_id, card_id, merchant_id, amount, currency) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&p.id, &p.user_id, &p.card_id, &p.merchant_id, &p.amount, &p.currency],
    )
    .await?;
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct PaymentView {
    pub payment_id: Uuid,
    /// `RECEIVED` until FDS has decided, then the ledger's status.
    pub status: String,
    pub amount: i64,
    pub currency: String,
    pub merchant_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip)]
    pub user_id: Uuid,
}

pub async fn view(db: &impl GenericClient, id: Uuid) -> Result<Option<PaymentView>, AppError> {
    let row = db
        .query_opt(
            "SELECT p.id, coalesce(t.status, 'RECEIVED'), p.amount, p.currency, p.merchant_id, t.reason, p.user_id
             FROM payments p LEFT JOIN transactions t ON t.payment_id = p.id WHERE p.id = $1",
            &[&id],
        )
        .await?;
    Ok(row.map(|r| PaymentView {
        payment_id: r.get(0),
        status: r.get(1),
        amount: r.get(2),
        currency: r.get(3),
        merchant_id: r.get(4),
        reason: r.get(5),
        user_id: r.get(6),
    }))
}
