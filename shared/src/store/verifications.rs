//! SMS verifications of PENDING payments. Only token hashes are stored.

use time::OffsetDateTime;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::error::AppError;

pub struct NewVerification {
    pub payment_id: Uuid,
    pub user_id: Uuid,
    pub token_hash: Vec<u8>,
    pub expires_at: OffsetDateTime,
}

pub async fn insert_many(db: &impl deadpool_postgres::GenericClient, rows: &[NewVerification]) -> Result<(), AppError> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|_| crate::domain::new_id()).collect();
    let payments: Vec<Uuid> = rows.iter().map(|r| r.payment_id).collect();
    let users: Vec<Uuid> = rows.iter().map(|r| r.user_id).collect();
    let hashes: Vec<&[u8]> = rows.iter().map(|r| r.token_hash.as_slice()).collect();
    let expiries: Vec<OffsetDateTime> = rows.iter().map(|r| r.expires_at).collect();
    db.execute(
        &db.prepare_cached(
            "INSERT INTO verifications (id, payment_id, user_id, token_hash, expires_at)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bytea[], $5::timestamptz[])",
        )
        .await?,
        &[&ids, &payments, &users, &hashes, &expiries],
    )
    .await?;
    Ok(())
}

/// A verification with the payment it is about.
pub struct VerificationView {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub user_id: Uuid,
    pub status: String,
    pub expires_at: OffsetDateTime,
    pub amount: i64,
    pub currency: String,
    pub merchant_name: String,
    pub country: String,
    pub lat: f64,
    pub lon: f64,
    pub occurred_at: OffsetDateTime,
    /// The card the payment used (None if it was removed since).
    pub card_last4: Option<String>,
    pub card_product: Option<String>,
}

/// Finds a verification by token hash; `for_update` locks it for a decision.
pub async fn find(db: &impl GenericClient, token_hash: &[u8], for_update: bool) -> Result<Option<VerificationView>, AppError> {
    let sql = format!(
        "SELECT v.id, v.payment_id, v.user_id, v.status, v.expires_at, t.amount, t.currency, coalesce(m.name, 'unknown merchant'),
                t.country, t.lat, t.lon, t.occurred_at, c.last4, cp.name
         FROM verifications v JOIN transactions t ON t.payment_id = v.payment_id LEFT JOIN merchants m ON m.id = t.merchant_id
              LEFT JOIN cards c ON c.id = t.card_id LEFT JOIN card_products cp ON cp.id = c.card_product_id
         WHERE v.token_hash = $1 {}",
        if for_update { "FOR UPDATE OF v" } else { "" }
    );
    let row = db.query_opt(&sql, &[&token_hash]).await?;
    Ok(row.map(|r| VerificationView {
        id: r.get(0),
        payment_id: r.get(1),
        user_id: r.get(2),
        status: r.get(3),
        expires_at: r.get(4),
        amount: r.get(5),
        currency: r.get(6),
        merchant_name: r.get(7),
        country: r.get(8),
        lat: r.get(9),
        lon: r.get(10),
        occurred_at: r.get(11),
        card_last4: r.get(12),
        card_product: r.get(13),
    }))
}

/// Records the holder's decision on a PENDING verification.
pub async fn decide(db: &impl GenericClient, id: Uuid, status: &str) -> Result<(), AppError> {
    debug_assert!(status == "APPROVED" || status == "DENIED");
    db.execute("UPDATE verifications SET status = $2, decided_at = now() WHERE id = $1 AND status = 'PENDING'", &[&id, &status]).await?;
    Ok(())
}

/// Expires up to `limit` PENDING verifications past their deadline; returns
/// their (payment id, user id).
pub async fn expire_due(db: &impl GenericClient, limit: i64) -> Result<Vec<(Uuid, Uuid)>, AppError> {
    let rows = db
        .query(
            "UPDATE verifications SET status = 'EXPIRED', decided_at = now() WHERE id IN
               (SELECT id FROM verifications WHERE status = 'PENDING' AND expires_at <= now()
                ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING payment_id, user_id",
            &[&limit],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
