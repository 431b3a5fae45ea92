//! Stripe-style idempotency keys: the same key with the same request returns
//! the first response and does nothing twice; the same key with another
//! request is refused; only successful responses are stored (a request that
//! failed, in validation or otherwise, leaves no key behind).
//!
//! Two ways to hold a key while its work runs, one per kind of work:
//! - [`claim`] inserts the key in the caller's transaction, with the work it
//!   guards (`order`: the order row). A twin blocks on the unique key until
//!   the first commits (then it replays) or rolls back (then it does the
//!   work), but only for `wait_ms`.
//! - [`claim_new`] commits the claim on its own, with a lease, before a
//!   side effect that no transaction can hold (`pay`: the broker's
//!   acknowledgement), so no connection is held across it; the claims of
//!   concurrent requests share one statement (`pay` runs the same INSERT
//!   inside its combined intake statement, `store::payments::write_intake`,
//!   beside the records of the requests done). A key found taken goes to
//!   [`await_claim`]: a twin polls for the answer for `wait_ms`. The answer
//!   is stored with the work's record (`pay`: `payments::write_intake`),
//!   which ends the lease; [`release`] removes the claim of a request that
//!   failed before its side effect, and [`abandon`] ends the lease of one
//!   whose side effect failed (it may still have happened: a publish that
//!   timed out). A claim whose lease ran out (its invocation died, or it was
//!   abandoned) is taken over by the next request with the same key and
//!   request.
//!
//! Either way, a first request still working after `wait_ms` makes the twin
//! answer 409 `IDEMPOTENCY_KEY_IN_PROGRESS` with `Retry-After` (never a
//! statement timeout, never a 500).
//!
//! Work that must be recognisable after a crash derives its id from the
//! claim ([`derived_id`]: the key, the request and the time the key was
//! first claimed, which a takeover keeps): a retry of a request whose side
//! effect happened (an event published) but whose answer was not stored
//! gets the same id again, so downstream deduplication by id makes the
//! retry harmless. That is why a lease is only about liveness, never about
//! safety: two holders of one claim (a takeover while the first is somehow
//! still running) do the same work with the same id. It is also why a
//! failed side effect abandons its claim rather than releasing it: a new
//! claim would have a new time, hence a new id.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
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
    /// First use (or a takeover of a dead claim): do the work, then
    /// [`complete`]. `claimed_at` is when the key was first claimed (a
    /// takeover keeps it), for [`derived_id`].
    New { claimed_at: OffsetDateTime },
    /// Seen before with the same request: answer this again.
    Replay { status: u16, body: serde_json::Value },
}

/// The id of the work a keyed request creates: the same claim (scope, key,
/// request and the time the key was first claimed) always gives the same
/// id; anything else gives another. A UUIDv7 like every id the platform
/// creates (`domain::new_id`), so it is time-ordered too: the claim's
/// milliseconds, then 74 bits of SHA-256 of the rest.
pub fn derived_id(scope: &str, key: &str, request_hash: &[u8], claimed_at: OffsetDateTime) -> uuid::Uuid {
    let mut hasher = Sha256::new();
    for part in [scope.as_bytes(), key.as_bytes(), request_hash] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut rest = [0u8; 10];
    rest.copy_from_slice(&digest[..10]);
    let claimed_at_ms = u64::try_from(claimed_at.unix_timestamp_nanos() / 1_000_000).expect("claims are made after 1970");
    uuid::Builder::from_unix_timestamp_millis(claimed_at_ms, &rest).into_uuid()
}

/// Claims `key` in `scope` (e.g. `pay:<user id>`), inside the caller's
/// transaction, waiting at most `wait_ms` for a concurrent request with
/// the same key to finish.
pub async fn claim(tx: &impl GenericClient, scope: &str, key: &str, hash: &[u8], wait_ms: u64) -> Result<Claim, AppError> {
    assert!(wait_ms > 0, "a zero lock_timeout would mean wait forever");
    // SET LOCAL: only for this transaction; the pool's connection keeps its defaults.
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {wait_ms}")).await?;
    let inserted = tx
        .query_opt(
            "INSERT INTO idempotency_keys (scope, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT (scope, key) DO NOTHING RETURNING created_at",
            &[&scope, &key, &hash],
        )
        .await
        .map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
                in_progress()
            } else {
                AppError::from(e)
            }
        })?;
    if let Some(row) = inserted {
        return Ok(Claim::New { claimed_at: row.get(0) });
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

/// Stores the response for a claimed key (same transaction as [`claim`];
/// after the work for a leased claim), which ends its lease.
pub async fn complete(tx: &impl GenericClient, scope: &str, key: &str, status: u16, body: &serde_json::Value) -> Result<(), AppError> {
    tx.execute(
        "UPDATE idempotency_keys SET status_code = $3, response_body = $4, lease_until = NULL WHERE scope = $1 AND key = $2",
        &[&scope, &key, &(status as i16), body],
    )
    .await?;
    Ok(())
}

/// A key to claim with [`claim_new`].
pub struct NewClaim {
    pub scope: String,
    pub key: String,
    pub hash: Vec<u8>,
}

/// New claims' INSERT: `$1` scopes, `$2` keys, `$3` request hashes (in
/// [`ClaimRows`]' order), `$4` the lease in milliseconds; returns the
/// claims that were new with when they were made. Also the first part of
/// `pay`'s combined intake statement (`store::payments::write_intake`),
/// which keeps these parameter numbers.
pub const CLAIM_NEW_SQL: &str = "INSERT INTO idempotency_keys (scope, key, request_hash, lease_until)
     SELECT scope, key, hash, now() + make_interval(secs => $4::float8 / 1000)
     FROM unnest($1::text[], $2::text[], $3::bytea[]) AS t(scope, key, hash)
     ON CONFLICT (scope, key) DO NOTHING
     RETURNING scope, key, created_at";

/// The claims of one statement ([`CLAIM_NEW_SQL`]), each key once and in
/// one order (scope, key), so two statements claiming some of the same
/// keys wait for each other at most one way, never in a cycle. A key twice
/// in the claims is tried once: the later one goes on with [`await_claim`].
pub struct ClaimRows<'a> {
    claims: &'a [NewClaim],
    first: Vec<bool>,
    pub scopes: Vec<&'a str>,
    pub keys: Vec<&'a str>,
    pub hashes: Vec<&'a [u8]>,
}

impl<'a> ClaimRows<'a> {
    pub fn new(claims: &'a [NewClaim]) -> Self {
        let mut seen = std::collections::HashSet::with_capacity(claims.len());
        let first: Vec<bool> = claims.iter().map(|c| seen.insert((c.scope.as_str(), c.key.as_str()))).collect();
        let mut sorted: Vec<&NewClaim> = claims.iter().zip(&first).filter(|(_, first)| **first).map(|(c, _)| c).collect();
        sorted.sort_unstable_by(|a, b| (&a.scope, &a.key).cmp(&(&b.scope, &b.key)));
        Self {
            claims,
            first,
            scopes: sorted.iter().map(|c| c.scope.as_str()).collect(),
            keys: sorted.iter().map(|c| c.key.as_str()).collect(),
            hashes: sorted.iter().map(|c| c.hash.as_slice()).collect(),
        }
    }

    /// Per claim, in the claims' order: when it was claimed if it was new
    /// (`rows` are what [`CLAIM_NEW_SQL`] returned).
    pub fn outcomes(&self, rows: &[tokio_postgres::Row]) -> Vec<Option<OffsetDateTime>> {
        let claimed: std::collections::HashMap<(&str, &str), OffsetDateTime> = rows.iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect();
        self.claims.iter().zip(&self.first).map(|(c, first)| if *first { claimed.get(&(c.scope.as_str(), c.key.as_str())).copied() } else { None }).collect()
    }
}

/// Claims new keys, each leased for `lease_ms` (at least the function's
/// timeout), in one committed statement for all of them. Returns, per
/// claim, when it was claimed if it was new; a key seen before (or twice
/// in `claims`) goes on with [`await_claim`].
pub async fn claim_new(db: &impl deadpool_postgres::GenericClient, claims: &[NewClaim], lease_ms: u64) -> Result<Vec<Option<OffsetDateTime>>, AppError> {
    assert!(lease_ms > 0, "a claim needs a lease");
    let rows = ClaimRows::new(claims);
    let statement = db.prepare_cached(CLAIM_NEW_SQL).await?;
    let returned = db.query(&statement, &[&rows.scopes, &rows.keys, &rows.hashes, &(lease_ms as f64)]).await?;
    Ok(rows.outcomes(&returned))
}

/// How long a twin sleeps between looks at a leased claim, first and at most.
const POLL_FIRST_MS: u64 = 5;
const POLL_MAX_MS: u64 = 100;

/// For a key [`claim_new`] found taken: replays its answer, refuses another
/// request, takes over a claim whose lease ran out (same request only), or
/// polls for the first request's answer for at most `wait_ms` and then
/// answers 409 in progress. Takes a connection for each look only, so a
/// waiting twin holds none while it sleeps.
pub async fn await_claim(pool: &crate::db::PgPool, scope: &str, key: &str, hash: &[u8], lease_ms: u64, wait_ms: u64) -> Result<Claim, AppError> {
    assert!(lease_ms > 0 && wait_ms > 0, "a claim needs a lease and a bounded wait");
    let lease_ms = lease_ms as f64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(wait_ms);
    let mut pause_ms = POLL_FIRST_MS;
    loop {
        if std::time::Instant::now() >= deadline {
            return Err(in_progress());
        }
        let db = pool.get().await?;
        let look = db
            .prepare_cached(
                "SELECT request_hash, status_code, response_body, lease_until < now(), created_at FROM idempotency_keys WHERE scope = $1 AND key = $2",
            )
            .await?;
        let Some(row) = db.query_opt(&look, &[&scope, &key]).await? else {
            // Released (the first request failed) or purged: claim it now.
            let claim = NewClaim { scope: scope.to_owned(), key: key.to_owned(), hash: hash.to_vec() };
            if let Some(claimed_at) = claim_new(&db, std::slice::from_ref(&claim), lease_ms as u64).await?[0] {
                return Ok(Claim::New { claimed_at });
            }
            continue;
        };
        let stored_hash: Vec<u8> = row.get(0);
        if stored_hash != hash {
            return Err(AppError::new(ErrorCode::IdempotencyKeyReused, "this Idempotency-Key was used with a different request"));
        }
        let status: Option<i16> = row.get(1);
        let body: Option<serde_json::Value> = row.get(2);
        if let (Some(status), Some(body)) = (status, body) {
            return Ok(Claim::Replay { status: status as u16, body });
        }
        // A dead claim is taken over only by the same request (same hash),
        // keeping its time: the work it does has the same derived id as
        // the dead one's.
        let expired: Option<bool> = row.get(3);
        if expired == Some(true) {
            let take_over = db
                .prepare_cached(
                    "UPDATE idempotency_keys SET lease_until = now() + make_interval(secs => $4::float8 / 1000)
                     WHERE scope = $1 AND key = $2 AND request_hash = $3 AND status_code IS NULL AND lease_until < now()",
                )
                .await?;
            if db.execute(&take_over, &[&scope, &key, &hash, &lease_ms]).await? == 1 {
                tracing::warn!(scope, "idempotency claim taken over from a request that did not finish");
                return Ok(Claim::New { claimed_at: row.get(4) });
            }
        }
        drop(db);
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        tokio::time::sleep(std::time::Duration::from_millis(pause_ms).min(left)).await;
        pause_ms = (pause_ms * 2).min(POLL_MAX_MS);
    }
}

/// Removes the claim of a request that failed before its side effect (it
/// surely did not happen), so that a retry, with this request or another,
/// starts afresh. Only an unanswered claim of the same request is removed.
pub async fn release(db: &impl deadpool_postgres::GenericClient, scope: &str, key: &str, hash: &[u8]) -> Result<(), AppError> {
    let statement = db
        .prepare_cached("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND request_hash = $3 AND status_code IS NULL")
        .await?;
    db.execute(&statement, &[&scope, &key, &hash]).await?;
    Ok(())
}

/// Ends the lease of a request whose side effect failed but may still have
/// happened (a publish that timed out), keeping the claim unanswered: the
/// retry of the same request takes it over at once and so does the work
/// with the same derived id (consumers deduplicate it if the first attempt
/// did land), and another request with this key is refused, since the
/// first may have taken effect. Only an unanswered claim of the same
/// request is abandoned.
pub async fn abandon(db: &impl deadpool_postgres::GenericClient, scope: &str, key: &str, hash: &[u8]) -> Result<(), AppError> {
    let statement = db
        .prepare_cached(
            "UPDATE idempotency_keys SET lease_until = now() - interval '1 millisecond'
             WHERE scope = $1 AND key = $2 AND request_hash = $3 AND status_code IS NULL",
        )
        .await?;
    db.execute(&statement, &[&scope, &key, &hash]).await?;
    Ok(())
}

fn in_progress() -> AppError {
    AppError::new(ErrorCode::IdempotencyKeyInProgress, "a request with this Idempotency-Key is still in progress; retry shortly").retry_after(1)
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
    fn derived_ids_are_stable_per_claim_and_time_ordered() {
        let at = time::macros::datetime!(2026-12-01 12:00:00.123456 UTC);
        let later = at + time::Duration::milliseconds(1);
        let id = derived_id("pay:u1", "k1", b"h1", at);
        assert_eq!(id, derived_id("pay:u1", "k1", b"h1", at));
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().expect("a v7 id carries its time").to_unix();
        assert_eq!((secs as i64, nanos / 1_000_000), (at.unix_timestamp(), 123), "the claim's milliseconds");
        assert_ne!(id, derived_id("pay:u2", "k1", b"h1", at));
        assert_ne!(id, derived_id("pay:u1", "k2", b"h1", at));
        assert_ne!(id, derived_id("pay:u1", "k1", b"h2", at));
        assert!(derived_id("pay:u1", "k1", b"h1", later) > id, "a later claim sorts after");
        // Length-prefixed parts: moving bytes between parts changes the id.
        assert_ne!(derived_id("ab", "c", b"h", at), derived_id("a", "bc", b"h", at));
    }
}
