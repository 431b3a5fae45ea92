//! The flash-sale gate in Redis: one Lua script checks the sale window, the
//! one-per-user rule and the stock, and reserves, atomically. No lock, no
//! check-then-decrement race.
//!
//! Redis is the fast gate, PostgreSQL the record of truth. A product's gate
//! is four keys in one hash slot: `meta` (the window), `remaining`,
//! `buyers` (a set) and `reservations` (a sorted set: user -> when the
//! reservation was made, by Redis's clock). Redis deletes an empty set, so
//! `buyers` and `reservations` each keep a sentinel member: once loaded, all
//! four keys exist. Any of them missing (restart, FLUSHALL, eviction of a
//! single key) means "not loaded": every script refuses to act on a partial
//! gate, and the caller rebuilds all four keys from PostgreSQL (remaining =
//! stock - orders not FAILED; buyers = everyone with an order). The unique
//! (user, product) constraint stops a second purchase even then, and
//! settlement grants SUCCESS only up to the stock, so an order accepted in
//! the instant of a rebuild can at worst end FAILED — never oversell.
//!
//! A reservation is recorded until its order is committed: a request that
//! dies between the gate and PostgreSQL's commit leaves the record, and the
//! relay schedule returns the unit once the record is older than
//! `RESERVATION_TTL_MS` and PostgreSQL holds no order for it
//! ([`stale_reservations`], [`settle_stale`]). A retry by the same buyer
//! does not wait for that: it takes the unordered reservation over
//! ([`Reservation::Reserved`] with `adopted`), so nobody is refused as a
//! repeat buyer without an order. Every reservation is identified by its
//! stamp (strictly increasing per buyer), and releasing, forgetting and
//! returning act only on the stamp they saw.

use redis::Script;
use std::sync::OnceLock;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::cache::Redis;
use crate::error::{AppError, ErrorCode};

/// Member kept in `buyers` and `reservations` so neither is ever empty (an
/// empty set does not exist in Redis, and a missing key means "not loaded").
/// Never a user id (those are UUIDs); its reservation score is +inf, so it is
/// never stale.
const SENTINEL: &str = "-";

/// `true` when all four keys of the product exist (shared Lua prologue).
const LOADED_LUA: &str = "local function loaded() return redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3], KEYS[4]) == 4 end\n";

const RESERVE_LUA: &str = r#"
-- KEYS: meta, remaining, buyers, reservations. ARGV: user id, now (ms, the caller's clock, for the window).
-- Answers {code, stamp}; stamp identifies the reservation (ms by Redis's clock).
if not loaded() then return {'NOT_LOADED', 0} end
local window = redis.call('HMGET', KEYS[1], 'start_ms', 'end_ms')
local now = tonumber(ARGV[2])
if now < tonumber(window[1]) then return {'NOT_STARTED', 0} end
if now >= tonumber(window[2]) then return {'ENDED', 0} end
local t = redis.call('TIME')
local stamp = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
  local held = redis.call('ZSCORE', KEYS[4], ARGV[1])
  -- A buyer without a recorded reservation has an order.
  if not held then return {'ALREADY', 0} end
  -- A reservation whose order is not recorded yet (in flight, or left by a
  -- crash): this request takes it over with a newer stamp; the unit is the
  -- same, and at most one order can commit (unique user and product).
  stamp = math.max(stamp, tonumber(held) + 1)
  redis.call('ZADD', KEYS[4], stamp, ARGV[1])
  return {'ADOPTED', stamp}
end
local remaining = tonumber(redis.call('GET', KEYS[2]))
if remaining == nil or remaining <= 0 then return {'SOLD_OUT', 0} end
redis.call('DECR', KEYS[2])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], stamp, ARGV[1])
return {'OK', stamp}
"#;

const RELEASE_LUA: &str = r#"
-- Gives a reservation back (its order could not be recorded), only if it is
-- still the one with this stamp. ARGV: user, stamp.
if not loaded() then return 0 end
local held = redis.call('ZSCORE', KEYS[4], ARGV[1])
if not held or tonumber(held) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[4], ARGV[1])
if redis.call('SREM', KEYS[3], ARGV[1]) == 1 then redis.call('INCR', KEYS[2]) end
return 1
"#;

const FORGET_LUA: &str = r#"
-- Drops the record of a reservation whose order is committed, only if it is
-- still the one with this stamp. ARGV: user, stamp.
if not loaded() then return 0 end
local held = redis.call('ZSCORE', KEYS[4], ARGV[1])
if not held or tonumber(held) ~= tonumber(ARGV[2]) then return 0 end
return redis.call('ZREM', KEYS[4], ARGV[1])
"#;

const LOAD_LUA: &str = r#"
-- Loads a product's sale state unless all four keys exist; a partial set is
-- replaced whole. ARGV: start_ms, end_ms, remaining, expire_at_ms, sentinel, buyers...
if loaded() then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], 'start_ms', ARGV[1], 'end_ms', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[5])
for i = 6, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
redis.call('ZADD', KEYS[4], '+inf', ARGV[5])
for i = 1, 4 do redis.call('PEXPIREAT', KEYS[i], ARGV[4]) end
return 1
"#;

const REMAINING_LUA: &str = r#"
-- Remaining stock, or false when the gate is not (fully) loaded.
if not loaded() then return false end
return tonumber(redis.call('GET', KEYS[2]))
"#;

const SET_REMAINING_LUA: &str = r#"
-- Lowers the remaining counter after settlement found the truth lower.
if not loaded() then return 0 end
local current = tonumber(redis.call('GET', KEYS[2]))
if current > tonumber(ARGV[1]) then redis.call('SET', KEYS[2], ARGV[1]) end
return 1
"#;

const STALE_LUA: &str = r#"
-- Reservations made at least ARGV[1] ms ago (Redis's clock), at most ARGV[2]:
-- {user, stamp, user, stamp, ...}; none when the gate is not loaded.
if not loaded() then return {} end
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', cutoff, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
"#;

const SETTLE_STALE_LUA: &str = r#"
-- ARGV: triples user, stamp, has_order (1/0). A reservation still recorded
-- with that stamp is forgotten when it has an order, else returned (buyer
-- removed, unit back). Answers {returned, forgotten}.
if not loaded() then return {0, 0} end
local returned, forgotten = 0, 0
for i = 1, #ARGV, 3 do
  local held = redis.call('ZSCORE', KEYS[4], ARGV[i])
  if held and tonumber(held) == tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[4], ARGV[i])
    if ARGV[i + 2] == '1' then
      forgotten = forgotten + 1
    else
      if redis.call('SREM', KEYS[3], ARGV[i]) == 1 then redis.call('INCR', KEYS[2]) end
      returned = returned + 1
    end
  end
end
return {returned, forgotten}
"#;

/// Every script is the loaded-check prologue plus its body.
fn script(cell: &'static OnceLock<Script>, body: &'static str) -> &'static Script {
    cell.get_or_init(|| Script::new(&format!("{LOADED_LUA}{body}")))
}

/// Keeps sale keys this long after the sale ends.
pub const KEYS_AFTER_END_MS: i64 = 24 * 3_600 * 1_000;

/// The four keys of a product; the hash tag keeps them in one cluster slot.
fn keys(redis: &Redis, product: Uuid) -> [String; 4] {
    let tag = format!("{{fs:{product}}}");
    ["meta", "remaining", "buyers", "reservations"].map(|k| redis.key(&format!("{tag}:{k}")))
}

/// The gate's keys of `product`, in the order meta, remaining, buyers,
/// reservations (tests delete single ones to play an eviction).
pub fn key_names(redis: &Redis, product: Uuid) -> [String; 4] {
    keys(redis, product)
}

/// A reservation this request holds: the buyer and its stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub product: Uuid,
    pub user: Uuid,
    /// Milliseconds by Redis's clock, unique per buyer and product.
    pub stamp_ms: i64,
    /// Taken over from an earlier request of the same buyer that has no
    /// order yet (no unit was taken for it).
    pub adopted: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    Reserved(Held),
    /// The product's keys are missing (all or some): rebuild from PostgreSQL and retry.
    NotLoaded,
}

/// The sale facts the gate needs to (re)load a product.
pub struct SaleState {
    pub start_time: OffsetDateTime,
    pub end_time: OffsetDateTime,
    pub remaining: i64,
    pub buyers: Vec<Uuid>,
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn unexpected(what: String) -> AppError {
    AppError::internal(std::io::Error::other(what))
}

/// Tries to reserve one unit of `product` for `user` at `now`.
pub async fn reserve(redis: &Redis, product: Uuid, user: Uuid, now: OffsetDateTime) -> Result<Reservation, AppError> {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    let [meta, remaining, buyers, reservations] = keys(redis, product);
    let mut conn = redis.conn().await?;
    let (answer, stamp_ms): (String, i64) = script(&SCRIPT, RESERVE_LUA)
        .key(meta)
        .key(remaining)
        .key(buyers)
        .key(reservations)
        .arg(user.to_string())
        .arg(unix_ms(now))
        .invoke_async(&mut conn)
        .await?;
    let held = |adopted| Ok(Reservation::Reserved(Held { product, user, stamp_ms, adopted }));
    match answer.as_str() {
        "OK" => held(false),
        "ADOPTED" => held(true),
        "NOT_LOADED" => Ok(Reservation::NotLoaded),
        "NOT_STARTED" => Err(AppError::new(ErrorCode::SaleNotStarted, "the sale has not started yet")),
        "ENDED" => Err(AppError::new(ErrorCode::SaleEnded, "the sale has ended")),
        "ALREADY" => Err(AppError::new(ErrorCode::AlreadyPurchased, "you already ordered this product")),
        "SOLD_OUT" => Err(AppError::new(ErrorCode::SoldOut, "no stock left")),
        other => Err(unexpected(format!("unexpected gate answer {other}"))),
    }
}

/// Gives a reservation back (its order was certainly not recorded); true if
/// it was still this request's to give. An adopted reservation is left
/// alone: the request it was taken from may have committed an order after
/// all, which only PostgreSQL knows, so reconciliation decides it (and a
/// retry adopts it again meanwhile).
pub async fn release(redis: &Redis, held: &Held) -> Result<bool, AppError> {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    if held.adopted {
        return Ok(false);
    }
    by_stamp(redis, &SCRIPT, RELEASE_LUA, held).await
}

/// Drops the record of a reservation whose order PostgreSQL now holds (the
/// unit stays taken); true if it was still this request's record.
pub async fn forget(redis: &Redis, held: &Held) -> Result<bool, AppError> {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    by_stamp(redis, &SCRIPT, FORGET_LUA, held).await
}

async fn by_stamp(redis: &Redis, cell: &'static OnceLock<Script>, body: &'static str, held: &Held) -> Result<bool, AppError> {
    let [meta, remaining, buyers, reservations] = keys(redis, held.product);
    let mut conn = redis.conn().await?;
    let done: i64 = script(cell, body)
        .key(meta)
        .key(remaining)
        .key(buyers)
        .key(reservations)
        .arg(held.user.to_string())
        .arg(held.stamp_ms)
        .invoke_async(&mut conn)
        .await?;
    Ok(done == 1)
}

/// Loads a product's state unless all its keys exist (a partial set is
/// replaced); true if this call loaded it.
pub async fn load(redis: &Redis, product: Uuid, state: &SaleState) -> Result<bool, AppError> {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    let [meta, remaining, buyers, reservations] = keys(redis, product);
    let mut invocation = script(&SCRIPT, LOAD_LUA).prepare_invoke();
    invocation.key(meta).key(remaining).key(buyers).key(reservations);
    invocation
        .arg(unix_ms(state.start_time))
        .arg(unix_ms(state.end_time))
        .arg(state.remaining.max(0))
        .arg(unix_ms(state.end_time) + KEYS_AFTER_END_MS)
        .arg(SENTINEL);
    for buyer in &state.buyers {
        invocation.arg(buyer.to_string());
    }
    let mut conn = redis.conn().await?;
    let loaded: i64 = invocation.invoke_async(&mut conn).await?;
    Ok(loaded == 1)
}

/// Live remaining stock as the gate sees it; `None` when not (fully) loaded.
/// One script per product, pipelined (the keys of two products may live in
/// different cluster slots).
pub async fn remaining(redis: &Redis, products: &[Uuid]) -> Result<Vec<Option<i64>>, AppError> {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    if products.is_empty() {
        return Ok(Vec::new());
    }
    let script = script(&SCRIPT, REMAINING_LUA);
    let mut conn = redis.conn().await?;
    // Cached first, so the pipeline can use EVALSHA.
    let hash = script.load_async(&mut conn).await?;
    let mut pipe = redis::pipe();
    for product in products {
        let [meta, remaining, buyers, reservations] = keys(redis, *product);
        pipe.cmd("EVALSHA").arg(&hash).arg(4).arg(meta).arg(remaining).arg(buyers).arg(reservations);
    }
    Ok(pipe.query_async(&mut conn).await?)
}

/// Lowers the remaining counter to `truth` if it is above it.
pub async fn correct_remaining(redis: &Redis, product: Uuid, truth: i64) -> Result<(), AppError> {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    let [meta, remaining, buyers, reservations] = keys(redis, product);
    let mut conn = redis.conn().await?;
    let _: i64 = script(&SCRIPT, SET_REMAINING_LUA)
        .key(meta)
        .key(remaining)
        .key(buyers)
        .key(reservations)
        .arg(truth.max(0))
        .invoke_async(&mut conn)
        .await?;
    Ok(())
}

/// A recorded reservation: who, and its stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Recorded {
    pub user: Uuid,
    pub stamp_ms: i64,
}

/// Up to `limit` reservations of `product` made at least `older_than_ms`
/// ago by Redis's clock (none when the gate is not loaded).
pub async fn stale_reservations(redis: &Redis, product: Uuid, older_than_ms: u64, limit: u32) -> Result<Vec<Recorded>, AppError> {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    let [meta, remaining, buyers, reservations] = keys(redis, product);
    let mut conn = redis.conn().await?;
    let flat: Vec<String> = script(&SCRIPT, STALE_LUA)
        .key(meta)
        .key(remaining)
        .key(buyers)
        .key(reservations)
        .arg(older_than_ms)
        .arg(limit)
        .invoke_async(&mut conn)
        .await?;
    let mut found = Vec::with_capacity(flat.len() / 2);
    for pair in flat.chunks(2) {
        let [user, score] = pair else { return Err(unexpected("odd reservation listing".into())) };
        let score: f64 = score.parse().map_err(|_| unexpected(format!("reservation score {score:?}")))?;
        // Only the sentinel is not a user id, and its score (+inf) is never stale.
        if let Ok(user) = Uuid::parse_str(user) {
            found.push(Recorded { user, stamp_ms: score as i64 });
        }
    }
    Ok(found)
}

/// What reconciliation does with one stale reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// PostgreSQL holds its order: drop the record, the unit stays sold.
    Forget,
    /// No order, and none can come any more: the buyer and the unit go back.
    Return,
}

/// The reconciliation rule: a stale reservation with an order is forgotten,
/// one without is returned.
pub fn verdict(has_order: bool) -> Verdict {
    if has_order { Verdict::Forget } else { Verdict::Return }
}

/// Applies verdicts atomically, each only if the reservation is still
/// recorded with the stamp it had when listed (not released, adopted or
/// reloaded meanwhile). Returns (returned, forgotten).
pub async fn settle_stale(redis: &Redis, product: Uuid, verdicts: &[(Recorded, Verdict)]) -> Result<(u64, u64), AppError> {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    if verdicts.is_empty() {
        return Ok((0, 0));
    }
    let [meta, remaining, buyers, reservations] = keys(redis, product);
    let mut invocation = script(&SCRIPT, SETTLE_STALE_LUA).prepare_invoke();
    invocation.key(meta).key(remaining).key(buyers).key(reservations);
    for (recorded, verdict) in verdicts {
        invocation.arg(recorded.user.to_string()).arg(recorded.stamp_ms).arg(if *verdict == Verdict::Forget { "1" } else { "0" });
    }
    let mut conn = redis.conn().await?;
    Ok(invocation.invoke_async(&mut conn).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_slot_and_the_sentinel_is_no_user() {
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_owned();
        let config = crate::config::Config::from_vars(Default::default()).unwrap();
        let redis = Redis::new(&config.redis).unwrap();
        let product = Uuid::new_v4();
        let names = keys(&redis, product);
        assert!(names.iter().all(|k| tag(k) == tag(&names[0])), "{names:?}");
        assert!(Uuid::parse_str(SENTINEL).is_err());
    }

    #[test]
    fn a_reservation_with_an_order_is_forgotten_and_one_without_returned() {
        assert_eq!(verdict(true), Verdict::Forget);
        assert_eq!(verdict(false), Verdict::Return);
    }

    #[test]
    fn every_mutating_script_refuses_a_partial_gate() {
        for body in [RESERVE_LUA, RELEASE_LUA, FORGET_LUA, SET_REMAINING_LUA, STALE_LUA, SETTLE_STALE_LUA, REMAINING_LUA] {
            assert!(body.contains("if not loaded()"), "{body}");
        }
        assert!(LOAD_LUA.contains("if loaded() then return 0 end"));
    }
}
