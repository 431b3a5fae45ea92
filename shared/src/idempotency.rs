//! Stripe-style idempotency keys: the same key with the same request returns
//! the first response and does nothing twice; the same key with another
//! request is refused; only successful responses are stored (a request that
//! failed, in validation or otherwise, leaves no key behind).
//!
//! The key row is inserted in the same transaction as the work it guards.
//! A second request racing with the first blocks on the unique key until
//! the first commits (then it replays) or rolls back (then it does the work).

use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;

use crate::error::{AppError, ErrorCode};
use crate::http::Request;

pub const HEADER: &str = "idempotency-key";
const KEY_MAX_CHARS: usize = 255;
/// Keys are kept at least this long (the sweep deletes older ones).
pub const RETENTION_S: i64 = 24 * 3_600;

/// The `Idempotency-Key` header, when present: 1–255 visible ASCII characters.
pub fn key_from(req: &Request) -> Result<Option<String>, AppError> {
    let Some(value) = req.headers().get(HEADER) else { return Ok(None) };
    let key = value.to_str().map_err(|_| AppError::validation("Idempotency-Key must be visible ASCII"))?.trim();
    if key.is_empty() || key.len() > KEY_MAX_CHARS || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::validation(format!("Idempotency-Key must be 1-{KEY_MAX_CHARS} visible ASCII characters")));
    }
    Ok(Some(key.to_owned()))
}

/// Fingerprint of what a request asks for. JSON objects serialise with
/// sorted keys, so formatting and key order do not matter.
pub fn request_hash(route: &str, body: &serde_json::Value) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0]);
    hasher.update(body.to_string().as_bytes());
    hasher.finalize().to_vec()
}

pub enum Claim {
    /// First use: do the work, then [`complete`] in the same transaction.
    New,
    /// Seen before with the same request: answer this again.
    Replay { status: u16, body: serde_json::Value },
}

/// Claims `key` in `scope` (e.g. `pay:<user id>`), inside the caller's transaction.
pub async fn claim(tx: &impl GenericClient, scope: &str, key: &str, hash: &[u8]) -> Result<Claim, AppError> {
    let inserted = tx
        .execute(
            "INSERT INTO idempotency_keys (scope, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT (scope, key) DO NOTHING",
            &[&scope, &key, &hash],
        )
        .await?;
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let row = tx
        .query_one("SELECT request_hash, status_code, response_body FROM idempotency_keys WHERE scope = $1 AND key = $2", &[&scope, &key])
        .await?;
    let stored_hash: Vec<u8> = row.get(0);
    if stored_hash != hash {
        return Err(AppError::new(ErrorCode::IdempotencyKeyReused, "this Idempotency-Key was used with a different request"));
    }
    let status: Option<i16> = row.get(1);
    let body: Option<serde_json::Value> = row.get(2);
    match (status, body) {
        (Some(status), Some(body)) => Ok(Claim::Replay { status: status as u16, body }),
        // Rows are only ever committed complete; this is a bug, not a race.
        _ => Err(AppError::internal(std::io::Error::other("idempotency key committed without a response"))),
    }
}

/// Stores the response for a claimed key (same transaction as [`claim`]).
pub async fn complete(tx: &impl GenericClient, scope: &str, key: &str, status: u16, body: &serde_json::Value) -> Result<(), AppError> {
    tx.execute(
        "UPDATE idempotency_keys SET status_code = $3, response_body = $4 WHERE scope = $1 AND key = $2",
        &[&scope, &key, &(status as i16), body],
    )
    .await?;
    Ok(())
}

/// Deletes keys older than the retention; returns how many.
pub async fn purge_expired(db: &impl GenericClient, limit: i64) -> Result<u64, AppError> {
    let n = db
        .execute(
            "DELETE FROM idempotency_keys WHERE ctid IN
               (SELECT ctid FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1) LIMIT $2)",
            &[&(RETENTION_S as f64), &limit],
        )
        .await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hash_ignores_key_order_but_not_values() {
        let a: serde_json::Value = serde_json::from_str(r#"{"amount": 1, "currency": "KRW"}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{ "currency":"KRW","amount":1 }"#).unwrap();
        let c: serde_json::Value = serde_json::from_str(r#"{"amount": 2, "currency": "KRW"}"#).unwrap();
        assert_eq!(request_hash("POST /payments", &a), request_hash("POST /payments", &b));
        assert_ne!(request_hash("POST /payments", &a), request_hash("POST /payments", &c));
        assert_ne!(request_hash("POST /payments", &a), request_hash("POST /orders", &a));
    }
}
