//! The scheduled sweep: denies payments whose verification expired, retries
//! undelivered SMS, and deletes idempotency keys past their retention.

use paystream::idempotency;
use paystream::metrics::{self, Unit};
use paystream::sms::SmsSender;
use paystream::store::ledger::{self, reason, LedgerStatus};
use paystream::store::verifications;
use paystream::{AppError, Platform};

/// Most idempotency keys one sweep deletes.
const PURGE_BATCH_MAX: i64 = 10_000;

pub async fn run(p: &Platform, sms: &SmsSender) -> Result<serde_json::Value, AppError> {
    let mut db = p.pg.get().await?;
    let tx = paystream::db::begin(&mut db).await?;
    let expired = verifications::expire_due(&*tx, i64::from(p.config.fds.sweep_batch_max)).await?;
    let ids: Vec<uuid::Uuid> = expired.iter().map(|(payment, _)| *payment).collect();
    let denied = ledger::settle_many_pending(&*tx, &ids, LedgerStatus::Denied, reason::VERIFICATION_EXPIRED).await?;
    tx.commit().await?;
    let purged = idempotency::purge_expired(&**db, PURGE_BATCH_MAX).await?;
    let delivered = sms.deliver_pending(&p.pg).await?;
    tracing::info!(expired = expired.len(), denied = denied.len(), purged, delivered, "sweep done");
    metrics::emit(p.function, &[("VerificationsExpired", denied.len() as f64, Unit::Count)]);
    Ok(serde_json::json!({"expired": expired.len(), "denied": denied.len(), "idempotency_keys_purged": purged, "sms_delivered": delivered}))
}
