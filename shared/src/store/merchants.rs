//! Merchants: owned by a MERCHANT (or ADMIN) user; public facts readable by
//! any signed-in caller.

use serde::Serialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::domain::{Coordinates, CountryCode, MerchantCategory, MerchantId, UserId, VipThreshold};
use crate::error::AppError;

pub struct NewMerchant<'a> {
    pub owner: UserId,
    pub name: &'a str,
    pub category: MerchantCategory,
    pub country: CountryCode,
    pub location: Coordinates,
    pub vip_threshold: VipThreshold,
}

pub async fn insert(db: &impl GenericClient, id: MerchantId, m: &NewMerchant<'_>) -> Result<(), AppError> {
    db.execute(
        "INSERT INTO merchants (id, owner_id, name, category, country, lat, lon, vip_threshold)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        &[
            &id.0,
            &m.owner.0,
            &m.name,
            &m.category.as_str(),
            &m.country.as_str(),
            &m.location.lat,
            &m.location.lon,
            &m.vip_threshold.get(),
        ],
    )
    .await?;
    Ok(())
}

/// What anyone signed in may know about a merchant (no owner, no threshold).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = MerchantPublic)]
pub struct MerchantPublicView {
    pub merchant_id: Uuid,
    pub name: String,
    #[schema(schema_with = crate::api::responses::category)]
    pub category: String,
    #[schema(schema_with = crate::api::responses::country)]
    pub country: String,
    pub lat: f64,
    pub lon: f64,
}

pub async fn public_view(db: &impl GenericClient, id: MerchantId) -> Result<Option<MerchantPublicView>, AppError> {
    let row = db.query_opt("SELECT id, name, category, country, lat, lon FROM merchants WHERE id = $1", &[&id.0]).await?;
    Ok(row.map(|r| MerchantPublicView {
        merchant_id: r.get(0),
        name: r.get(1),
        category: r.get(2),
        country: r.get(3),
        lat: r.get(4),
        lon: r.get(5),
    }))
}

/// The merchants `owner` owns (every merchant when `owner` is `None`, for an
/// admin), by name, at most `limit`.
pub async fn list(db: &impl GenericClient, owner: Option<Uuid>, limit: u32) -> Result<Vec<MerchantPublicView>, AppError> {
    let rows = db
        .query(
            "SELECT id, name, category, country, lat, lon FROM merchants
             WHERE $1::uuid IS NULL OR owner_id = $1 ORDER BY name, id LIMIT $2",
            &[&owner, &i64::from(limit)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| MerchantPublicView { merchant_id: r.get(0), name: r.get(1), category: r.get(2), country: r.get(3), lat: r.get(4), lon: r.get(5) })
        .collect())
}
