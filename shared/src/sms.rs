//! SMS. Messages are written to the `sms_outbox` table in the same
//! transaction as the decision that sends them (so a decision and its SMS
//! commit or vanish together), then delivered:
//! - `SMS_MODE=outbox` (laptops, CI): the table is the destination; rows are
//!   marked delivered and keep their body, so tests and the demo read them.
//! - `SMS_MODE=sns` (AWS): Amazon SNS sends each row; once sent its body,
//!   which carries a verification link, is blanked so no usable token stays
//!   at rest. Rows a failed delivery left behind are retried by the sweep.

use aws_sdk_sns::Client as SnsClient;
use time::OffsetDateTime;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::config::{SmsConfig, SmsMode};
use crate::db::PgPool;
use crate::error::AppError;

pub const KIND_VERIFICATION: &str = "VERIFICATION";
/// What an SNS-delivered row's body becomes.
const DELIVERED_BODY: &str = "[delivered]";
/// A claimed row not delivered within this long is taken over by the next
/// pass (its deliverer died or timed out). Far above `SMS_SEND_TIMEOUT_MS`.
pub const CLAIM_LAPSE_S: u64 = 60;

pub struct SmsMessage {
    pub user_id: Uuid,
    pub phone: String,
    pub body: String,
    pub kind: &'static str,
}

impl std::fmt::Debug for SmsMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body carries a verification link.
        f.debug_struct("SmsMessage").field("user_id", &self.user_id).field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// Writes messages to the outbox (inside the caller's transaction).
pub async fn enqueue(db: &impl deadpool_postgres::GenericClient, messages: &[SmsMessage]) -> Result<(), AppError> {
    if messages.is_empty() {
        return Ok(());
    }
    let users: Vec<Uuid> = messages.iter().map(|m| m.user_id).collect();
    let phones: Vec<&str> = messages.iter().map(|m| m.phone.as_str()).collect();
    let bodies: Vec<&str> = messages.iter().map(|m| m.body.as_str()).collect();
    let kinds: Vec<&str> = messages.iter().map(|m| m.kind).collect();
    db.execute(
        &db.prepare_cached(
            "INSERT INTO sms_outbox (user_id, phone, body, kind)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])",
        )
        .await?,
        &[&users, &phones, &bodies, &kinds],
    )
    .await?;
    Ok(())
}

/// How many verification SMS each of `users` was sent within the window.
pub async fn recent_counts(db: &impl deadpool_postgres::GenericClient, users: &[Uuid], window_s: u64) -> Result<Vec<(Uuid, i64)>, AppError> {
    let since = OffsetDateTime::now_utc() - time::Duration::seconds(window_s as i64);
    let rows = db
        .query(
            &db.prepare_cached(
                "SELECT user_id, count(*) FROM sms_outbox WHERE user_id = ANY($1) AND kind = $2 AND created_at > $3 GROUP BY user_id",
            )
            .await?,
            &[&users, &KIND_VERIFICATION, &since],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

pub struct SmsSender {
    config: SmsConfig,
    sns: OnceCell<SnsClient>,
}

impl SmsSender {
    pub fn new(config: &SmsConfig) -> Self {
        Self { config: config.clone(), sns: OnceCell::new() }
    }

    /// An SNS sender with a client of the caller's (another region,
    /// endpoint or credentials than the environment's).
    pub fn with_sns_client(config: &SmsConfig, client: SnsClient) -> Self {
        Self { config: SmsConfig { mode: SmsMode::Sns, ..config.clone() }, sns: OnceCell::new_with(Some(client)) }
    }

    /// Delivers up to `SMS_DELIVERY_BATCH_MAX` undelivered rows; returns how
    /// many were delivered. Each SNS call is bounded by `SMS_SEND_TIMEOUT_MS`
    /// and at most `SMS_SEND_CONCURRENCY` run at once, so a pass lasts at
    /// most about `batch / concurrency * timeout`. A failed or timed-out
    /// call leaves its row claimed; the claim lapses after
    /// [`CLAIM_LAPSE_S`] and a later pass (the verify sweep) sends it.
    pub async fn deliver_pending(&self, pg: &PgPool) -> Result<usize, AppError> {
        let db = pg.get().await?;
        let batch_max = i64::from(self.config.delivery_batch_max);
        let delivered = match self.config.mode {
            SmsMode::Outbox => {
                let n = db
                    .execute(
                        "UPDATE sms_outbox SET delivered_at = now() WHERE id IN
                           (SELECT id FROM sms_outbox WHERE delivered_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)",
                        &[&batch_max],
                    )
                    .await?;
                n as usize
            }
            SmsMode::Sns => {
                let sns = self.sns.get_or_init(|| Box::pin(async { SnsClient::new(&aws_config::load_from_env().await) })).await;
                // Claim first; a claim older than the lapse belongs to a
                // deliverer that died and may be taken over.
                let rows = db
                    .query(
                        "UPDATE sms_outbox SET claimed_at = now() WHERE id IN
                           (SELECT id FROM sms_outbox
                            WHERE delivered_at IS NULL AND (claimed_at IS NULL OR claimed_at < now() - make_interval(secs => $2))
                            ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
                         RETURNING id, phone, body",
                        &[&batch_max, &(CLAIM_LAPSE_S as f64)],
                    )
                    .await?;
                let timeout = std::time::Duration::from_millis(self.config.send_timeout_ms);
                let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(self.config.send_concurrency));
                let mut sends = tokio::task::JoinSet::new();
                for row in rows {
                    let (id, phone, body): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
                    let sns = sns.clone();
                    let permits = permits.clone();
                    sends.spawn(async move {
                        let _permit = permits.acquire_owned().await.expect("semaphore never closed");
                        match tokio::time::timeout(timeout, sns.publish().phone_number(&phone).message(&body).send()).await {
                            Ok(Ok(_)) => Some(id),
                            Ok(Err(e)) => {
                                tracing::warn!(sms_id = id, error = %aws_sdk_sns::error::DisplayErrorContext(&e), "SNS publish failed; will retry");
                                None
                            }
                            Err(_) => {
                                tracing::warn!(sms_id = id, timeout_ms = timeout.as_millis() as u64, "SNS publish timed out; will retry");
                                None
                            }
                        }
                    });
                }
                let mut delivered: Vec<i64> = Vec::new();
                while let Some(sent) = sends.join_next().await {
                    if let Ok(Some(id)) = sent {
                        delivered.push(id);
                    }
                }
                if !delivered.is_empty() {
                    db.execute("UPDATE sms_outbox SET delivered_at = now(), body = $2 WHERE id = ANY($1)", &[&delivered, &DELIVERED_BODY])
                        .await?;
                }
                delivered.len()
            }
        };
        crate::metrics::count(crate::metrics::SMS_SENT, delivered as u64);
        Ok(delivered)
    }
}
