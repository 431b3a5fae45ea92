//! Notifications shown by `GET /me/notifications`: VIP news, benefit tips,
//! verification notices.

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::rfc3339;
use crate::domain::UserId;
use crate::error::AppError;

/// What a notification is about (`notifications.kind`).
pub mod kind {
    /// The customer became a VIP of a merchant (loyalty).
    pub const VIP: &str = "VIP";
    /// Another of the customer's cards would have earned more (benefit guide).
    pub const BENEFIT_TIP: &str = "BENEFIT_TIP";
    /// The card holder approved a held payment.
    pub const VERIFICATION_APPROVED: &str = "VERIFICATION_APPROVED";
    /// The card holder denied a held payment.
    pub const VERIFICATION_DENIED: &str = "VERIFICATION_DENIED";
}

/// Every [`kind`].
pub const KINDS: &[&str] = &[kind::VIP, kind::BENEFIT_TIP, kind::VERIFICATION_APPROVED, kind::VERIFICATION_DENIED];

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Notification)]
pub struct NotificationView {
    pub notification_id: Uuid,
    #[schema(schema_with = crate::api::responses::notification_kind)]
    pub kind: String,
    /// Kind-specific details.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    #[schema(schema_with = crate::api::responses::time)]
    pub created_at: String,
}

/// Inserts a notification once per `dedupe_key`; returns whether it was new.
pub async fn insert_once(
    db: &impl GenericClient,
    user: UserId,
    kind: &str,
    payload: &serde_json::Value,
    dedupe_key: &str,
) -> Result<bool, AppError> {
    let inserted = db
        .execute(
            "INSERT INTO notifications (id, user_id, kind, payload, dedupe_key) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (dedupe_key) DO NOTHING",
            &[&crate::domain::new_id(), &user.0, &kind, payload, &dedupe_key],
        )
        .await?;
    Ok(inserted == 1)
}

/// A notification to insert once per `dedupe_key`.
pub struct NewNotification {
    pub user_id: Uuid,
    pub kind: &'static str,
    pub payload: serde_json::Value,
    pub dedupe_key: String,
}

/// Inserts many notifications in one statement, each at most once.
pub async fn insert_many_once(db: &impl deadpool_postgres::GenericClient, rows: &[NewNotification]) -> Result<u64, AppError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = rows.iter().map(|_| crate::domain::new_id()).collect();
    let users: Vec<Uuid> = rows.iter().map(|r| r.user_id).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind).collect();
    let payloads: Vec<&serde_json::Value> = rows.iter().map(|r| &r.payload).collect();
    let keys: Vec<&str> = rows.iter().map(|r| r.dedupe_key.as_str()).collect();
    Ok(db
        .execute(
            &db.prepare_cached(
                "INSERT INTO notifications (id, user_id, kind, payload, dedupe_key)
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], $5::text[])
                 ON CONFLICT (dedupe_key) DO NOTHING",
            )
            .await?,
            &[&ids, &users, &kinds, &payloads, &keys],
        )
        .await?)
}

/// The caller's notifications, newest first.
pub async fn list_for_user(db: &impl GenericClient, user: UserId, limit: u32) -> Result<Vec<NotificationView>, AppError> {
    let rows = db
        .query(
            "SELECT id, kind, payload, created_at FROM notifications WHERE user_id = $1
             ORDER BY created_at DESC, id DESC LIMIT $2",
            &[&user.0, &i64::from(limit)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| NotificationView {
            notification_id: r.get(0),
            kind: r.get(1),
            payload: r.get(2),
            created_at: rfc3339(r.get::<_, OffsetDateTime>(3)),
        })
        .collect())
}
