//! Stripe-style idempotency keys: the same key with the same request returns
//! the first response and does nothing twice; the same key with another
//! request is refused; only successful responses are stored (a request that
//! failed, in validation or otherwise, leaves no key behind).
//!
//! The key row is inserted in the same transaction as the work it guards.
//! A second request racing with the first blocks on the unique key until
//! the first commits (then it replays) or rolls back (then it does the work),
//! but only for `wait_ms`: a first request still publishing after that makes
//! the twin answer 409 `IDEMPOTENCY_KEY_IN_PROGRESS` with `Retry-After`
//! (never a statement timeout, never a 500).
//!
//! Work that must be recognisable after a crash derives its id from the key
//! ([`derived_id`]): a retry of a request whose side effect happened (an
//! event published) but whose commit did not gets the same id again, so
//! downstream deduplication by id makes the retry harmless.

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

/// The id of the work a keyed request creates: the same scope, key and
/// request always give the same id; anything else gives another. Version 8
/// (custom) UUID from SHA-256, so it never collides with random v4 ids.
pub fn derived_id(scope: &str, key: &str, request_hash: &[u8]) -> uuid::Uuid {
    let mut hasher = Sha256::new();
    for part in [scope.as_bytes(), key.as_bytes(), request_hash] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Claims `key` in `scope` (e.g. `pay:<user id>`), inside the caller's
/// transaction, waiting at most `wait_ms` for a concurrent request with
/// the same key to finish.
pub async fn claim(tx: &impl GenericClient, scope: &str, key: &str, hash: &[u8], wait_ms: u64) -> Result<Claim, AppError> {
    assert!(wait_ms > 0, "a zero lock_timeout would mean wait forever");
    // SET LOCAL: only for this transaction; the pool's connection keeps its defaults.
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {wait_ms}")).await?;
    let inserted = tx
        .execute(
            "INSERT INTO idempotency_keys (scope, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT (scope, key) DO NOTHING",
            &[&scope, &key, &hash],
        )
        .await
        .map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                AppError::new(ErrorCode::IdempotencyKeyInProgress, "a request with this Idempotency-Key is still in progress; retry shortly")
                    .retry_after(1)
            } else {
                AppError::from(e)
            }
        })?;
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

    #[test]
    fn derived_ids_are_stable_per_scope_key_and_request() {
        let id = derived_id("pay:u1", "k1", b"h1");
        assert_eq!(id, derived_id("pay:u1", "k1", b"h1"));
        assert_eq!(id.get_version_num(), 8);
        assert_ne!(id, derived_id("pay:u2", "k1", b"h1"));
        assert_ne!(id, derived_id("pay:u1", "k2", b"h1"));
        assert_ne!(id, derived_id("pay:u1", "k1", b"h2"));
        // Length-prefixed parts: moving bytes between parts changes the id.
        assert_ne!(derived_id("ab", "c", b"h"), derived_id("a", "bc", b"h"));
    }
}
