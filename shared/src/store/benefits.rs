//! What the benefit guide reads (the payer's cards, card products' rules,
//! both cache-aside) and writes (one tip per payment).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::cache::Redis;
use crate::domain::benefit::{Rule, Scope};
use crate::error::AppError;

/// A card as the benefit guide needs it (never more than last4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCard {
    pub card_id: Uuid,
    pub card_product_id: Uuid,
    pub product_name: String,
    pub last4: String,
}

fn cards_namespace() -> &'static str {
    "ben:cards"
}

/// Every card of each user.
pub async fn cards_of(redis: &Redis, db: &impl GenericClient, users: &[Uuid], ttl_s: u64) -> Result<HashMap<Uuid, Vec<HeldCard>>, AppError> {
    redis.read_through(cards_namespace(), users, ttl_s, |misses| async move {
        let rows = db
            .query(
                "SELECT c.user_id, c.id, c.card_product_id, p.name, c.last4 FROM cards c JOIN card_products p ON p.id = c.card_product_id
                 WHERE c.user_id = ANY($1) ORDER BY c.created_at, c.id",
                &[&misses],
            )
            .await?;
        let mut by_user: HashMap<Uuid, Vec<HeldCard>> = HashMap::new();
        for r in rows {
            by_user.entry(r.get(0)).or_default().push(HeldCard { card_id: r.get(1), card_product_id: r.get(2), product_name: r.get(3), last4: r.get(4) });
        }
        Ok(by_user)
    })
    .await
}

/// Forgets a user's cached cards (call after the user's cards changed).
pub async fn forget_cards(redis: &Redis, user: Uuid) -> Result<(), AppError> {
    let mut conn = redis.conn().await?;
    let _: () = redis::cmd("DEL").arg(redis.key(&format!("{}:{user}", cards_namespace()))).query_async(&mut conn).await?;
    Ok(())
}

/// Every rule of each card product.
pub async fn rules_of(redis: &Redis, db: &impl GenericClient, products: &[Uuid], ttl_s: u64) -> Result<HashMap<Uuid, Vec<Rule>>, AppError> {
    redis.read_through("ben:rules", products, ttl_s, |misses| async move {
        let rows = db
            .query(
                "SELECT card_product_id, merchant_category, merchant_id, rate_bp, cap_minor, currency FROM benefit_rules WHERE card_product_id = ANY($1)",
                &[&misses],
            )
            .await?;
        let mut by_product: HashMap<Uuid, Vec<Rule>> = HashMap::new();
        for r in rows {
            let scope = match (r.get::<_, Option<String>>(1), r.get::<_, Option<Uuid>>(2)) {
                (Some(category), _) => Scope::Category(category),
                (None, Some(merchant)) => Scope::Merchant(merchant),
                (None, None) => Scope::Everywhere,
            };
            by_product.entry(r.get(0)).or_default().push(Rule { scope, rate_bp: r.get(3), cap_minor: r.get(4), currency: r.get(5) });
        }
        Ok(by_product)
    })
    .await
}

pub struct NewTip {
    pub payment_id: Uuid,
    pub user_id: Uuid,
    pub merchant_id: Uuid,
    pub used_card_id: Uuid,
    pub better_card_id: Uuid,
    pub missed_minor: i64,
    pub currency: String,
}

/// Inserts tips, one per payment at most; returns the payments whose tip is new.
pub async fn insert_tips(db: &impl deadpool_postgres::GenericClient, tips: &[NewTip]) -> Result<Vec<Uuid>, AppError> {
    if tips.is_empty() {
        return Ok(Vec::new());
    }
    let col = |f: fn(&NewTip) -> Uuid| tips.iter().map(f).collect::<Vec<Uuid>>();
    let missed: Vec<i64> = tips.iter().map(|t| t.missed_minor).collect();
    let currencies: Vec<&str> = tips.iter().map(|t| t.currency.as_str()).collect();
    let rows = db
        .query(
            &db.prepare_cached(
                "INSERT INTO benefit_tips (payment_id, user_id, merchant_id, used_card_id, better_card_id, missed_amount, currency)
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::bigint[], $7::text[])
                 ON CONFLICT (payment_id) DO NOTHING RETURNING payment_id",
            )
            .await?,
            &[
                &col(|t| t.payment_id),
                &col(|t| t.user_id),
                &col(|t| t.merchant_id),
                &col(|t| t.used_card_id),
                &col(|t| t.better_card_id),
                &missed,
                &currencies,
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
