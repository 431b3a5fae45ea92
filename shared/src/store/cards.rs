//! Cards. Only last4 and the keyed fingerprint are stored, never the PAN.

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::rfc3339;
use crate::db::unique_violation;
use crate::domain::{CardExpiry, CardId, CardProductId, PanFingerprint, UserId};
use crate::error::{AppError, ErrorCode};

pub struct NewCard<'a> {
    pub user_id: UserId,
    pub card_product_id: CardProductId,
    pub last4: &'a str,
    pub fingerprint: &'a PanFingerprint,
    pub expiry: CardExpiry,
}

pub async fn insert(db: &impl GenericClient, id: CardId, card: &NewCard<'_>) -> Result<CardId, AppError> {
    debug_assert!(card.last4.len() == 4 && card.last4.bytes().all(|b| b.is_ascii_digit()));
    let result = db
        .execute(
            "INSERT INTO cards (id, user_id, card_product_id, last4, fingerprint, expiry_month, expiry_year)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &id.0,
                &card.user_id.0,
                &card.card_product_id.0,
                &card.last4,
                &card.fingerprint.0,
                &i16::from(card.expiry.month),
                &(card.expiry.year as i16),
            ],
        )
        .await;
    match result {
        Ok(_) => Ok(id),
        // The same card id twice (re-seeding fixed ids) is the same card too.
        Err(e) if matches!(unique_violation(&e), Some("cards_user_fingerprint_key" | "cards_pkey")) => {
            Err(AppError::new(ErrorCode::CardAlreadyRegistered, "this card is already registered to your account"))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Card)]
pub struct CardView {
    pub card_id: Uuid,
    #[schema(schema_with = crate::api::responses::last4)]
    pub last4: String,
    pub card_product_id: Uuid,
    pub card_product_name: String,
    #[schema(schema_with = crate::api::responses::expiry)]
    pub expiry: String,
    #[schema(schema_with = crate::api::responses::time)]
    pub created_at: String,
}

/// The caller's own cards, oldest first.
pub async fn list_for_user(db: &impl GenericClient, user: UserId) -> Result<Vec<CardView>, AppError> {
    let rows = db
        .query(
            "SELECT c.id, c.last4, c.card_product_id, p.name, c.expiry_month, c.expiry_year, c.created_at
             FROM cards c JOIN card_products p ON p.id = c.card_product_id
             WHERE c.user_id = $1 ORDER BY c.created_at, c.id",
            &[&user.0],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let expiry = CardExpiry { month: r.get::<_, i16>(4) as u8, year: r.get::<_, i16>(5) as u16 };
            CardView {
                card_id: r.get(0),
                last4: r.get(1),
                card_product_id: r.get(2),
                card_product_name: r.get(3),
                expiry: expiry.to_wire(),
                created_at: rfc3339(r.get::<_, OffsetDateTime>(6)),
            }
        })
        .collect())
}
