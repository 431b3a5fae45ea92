//! The FDS ledger (`transactions`): one row per payment, written once.

use std::collections::HashSet;

use time::OffsetDateTime;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::error::AppError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerStatus {
    Completed,
    Pending,
    Denied,
}

impl LedgerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "COMPLETED",
            Self::Pending => "PENDING",
            Self::Denied => "DENIED",
        }
    }
}

/// Why a payment got its status (stable strings, shown to the payer).
pub mod reason {
    pub const IMPOSSIBLE_TRAVEL: &str = "IMPOSSIBLE_TRAVEL";
    pub const HOLDER_LOCKED: &str = "HOLDER_LOCKED";
    pub const APPROVED_BY_HOLDER: &str = "APPROVED_BY_HOLDER";
    pub const DENIED_BY_HOLDER: &str = "DENIED_BY_HOLDER";
    pub const VERIFICATION_EXPIRED: &str = "VERIFICATION_EXPIRED";
}

pub struct LedgerRow {
    pub payment_id: Uuid,
    pub user_id: Uuid,
    pub card_id: Uuid,
    pub merchant_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub country: String,
    pub lat: f64,
    pub lon: f64,
    pub status: LedgerStatus,
    pub reason: Option<&'static str>,
    pub occurred_at: OffsetDateTime,
}

/// What PostgreSQL already holds of a batch's payments.
#[derive(Debug, Default)]
pub struct Known {
    /// Payments with a ledger row: decided before (a redelivery).
    pub decided: HashSet<Uuid>,
    /// Payments with no payment record: intake died after publishing, so
    /// the event is all there is (rare; FDS records them from the event).
    pub unrecorded: HashSet<Uuid>,
}

/// Which of `ids` are decided and which have no payment record: two
/// index probes per id (`= ANY`, which PostgreSQL always runs as index
/// scans; joins against `unnest` were planned as hash joins over whole
/// tables), sent together, each prepared once per connection.
pub async fn known(db: &impl deadpool_postgres::GenericClient, ids: &[Uuid]) -> Result<Known, AppError> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
    let (decided, recorded) = tokio::try_join!(
        // Each id by its primary key (see the `store` module comment).
        async {
            let known = "SELECT x.payment_id FROM unnest($1::uuid[]) AS t(id)
                         CROSS JOIN LATERAL (SELECT payment_id FROM transactions WHERE payment_id = t.id LIMIT 1) x";
            db.query(&db.prepare_cached(known).await?, &params).await
        },
        async {
            let recorded = "SELECT x.id FROM unnest($1::uuid[]) AS t(id) CROSS JOIN LATERAL (SELECT id FROM payments WHERE id = t.id LIMIT 1) x";
            db.query(&db.prepare_cached(recorded).await?, &params).await
        },
    )?;
    let recorded: HashSet<Uuid> = recorded.iter().map(|r| r.get(0)).collect();
    Ok(Known {
        decided: decided.iter().map(|r| r.get(0)).collect(),
        unrecorded: ids.iter().copied().filter(|id| !recorded.contains(id)).collect(),
    })
}

/// Inserts rows in one plain multi-row INSERT (no speculative insertion:
/// the caller has checked they are new). A row another invocation inserted
/// meanwhile fails the whole statement with a unique violation, reported as
/// a retryable error: the batch is retried and then skips it. Prepared
/// once per connection.
pub async fn insert_many(db: &impl deadpool_postgres::GenericClient, rows: &[LedgerRow]) -> Result<u64, AppError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&LedgerRow) -> Uuid| rows.iter().map(f).collect::<Vec<Uuid>>();
    let (ids, users, cards, merchants) = (col(|r| r.payment_id), col(|r| r.user_id), col(|r| r.card_id), col(|r| r.merchant_id));
    let amounts: Vec<i64> = rows.iter().map(|r| r.amount).collect();
    let currencies: Vec<&str> = rows.iter().map(|r| r.currency.as_str()).collect();
    let countries: Vec<&str> = rows.iter().map(|r| r.country.as_str()).collect();
    let lats: Vec<f64> = rows.iter().map(|r| r.lat).collect();
    let lons: Vec<f64> = rows.iter().map(|r| r.lon).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    let reasons: Vec<Option<&str>> = rows.iter().map(|r| r.reason).collect();
    let times: Vec<OffsetDateTime> = rows.iter().map(|r| r.occurred_at).collect();
    let statement = db
        .prepare_cached(
            "INSERT INTO transactions (payment_id, user_id, card_id, merchant_id, amount, currency, country, lat, lon, status, reason, occurred_at)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[], $6::text[], $7::text[],
                                  $8::float8[], $9::float8[], $10::text[], $11::text[], $12::timestamptz[])",
        )
        .await?;
    let inserted = db
        .execute(
            &statement,
            &[&ids, &users, &cards, &merchants, &amounts, &currencies, &countries, &lats, &lons, &statuses, &reasons, &times],
        )
        .await
        .map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                AppError::new(crate::ErrorCode::DependencyUnavailable, "concurrent decision; batch will be retried").with_source(e)
            } else {
                e.into()
            }
        })?;
    Ok(inserted)
}

/// Moves a PENDING payment to its final status; false when it was not PENDING.
pub async fn settle_pending(db: &impl GenericClient, payment_id: Uuid, status: LedgerStatus, reason: &str) -> Result<bool, AppError> {
    debug_assert!(status != LedgerStatus::Pending);
    let n = db
        .execute(
            "UPDATE transactions SET status = $2, reason = $3, decided_at = now() WHERE payment_id = $1 AND status = 'PENDING'",
            &[&payment_id, &status.as_str(), &reason],
        )
        .await?;
    Ok(n == 1)
}

/// Moves many PENDING payments to one final status; returns those moved.
pub async fn settle_many_pending(db: &impl GenericClient, ids: &[Uuid], status: LedgerStatus, reason: &str) -> Result<Vec<Uuid>, AppError> {
    debug_assert!(status != LedgerStatus::Pending);
    let rows = db
        .query(
            "UPDATE transactions SET status = $2, reason = $3, decided_at = now()
             WHERE payment_id = ANY($1) AND status = 'PENDING' RETURNING payment_id",
            &[&ids, &status.as_str(), &reason],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
