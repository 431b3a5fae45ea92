//! The flash-sale gate in Redis: one Lua script checks the sale window, the
//! one-per-user rule and the stock, and reserves, atomically. No lock, no
//! check-then-decrement race.
//!
//! Redis is the fast gate, PostgreSQL the record of truth. When Redis has
//! lost a product's keys (restart, FLUSHALL, eviction) the script answers
//! `NOT_LOADED` and the caller rebuilds them from PostgreSQL (remaining =
//! stock - orders not FAILED; buyers = everyone with an order), loading
//! only if nobody else loaded first. PostgreSQL's unique (user, product)
//! constraint stops a second purchase even then, and settlement only ever
//! grants SUCCESS up to the stock, so an order accepted in the instant of a
//! rebuild can at worst end FAILED — never oversell.

use redis::Script;
use std::sync::OnceLock;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::cache::Redis;
use crate::error::{AppError, ErrorCode};

const RESERVE_LUA: &str = r#"
-- KEYS: meta hash, remaining counter, buyers set. ARGV: user id, now (ms).
if redis.call('EXISTS', KEYS[1]) == 0 then return 'NOT_LOADED' end
local window = redis.call('HMGET', KEYS[1], 'start_ms', 'end_ms')
local now = tonumber(ARGV[2])
if now < tonumber(window[1]) then return 'NOT_STARTED' end
if now >= tonumber(window[2]) then return 'ENDED' end
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return 'ALREADY' end
local remaining = tonumber(redis.call('GET', KEYS[2]) or '0')
if remaining <= 0 then return 'SOLD_OUT' end
redis.call('DECR', KEYS[2])
redis.call('SADD', KEYS[3], ARGV[1])
return 'OK'
"#;

const RELEASE_LUA: &str = r#"
-- Gives a reservation back (its order could not be recorded).
if redis.call('SREM', KEYS[3], ARGV[1]) == 1 then redis.call('INCR', KEYS[2]) end
return 1
"#;

const LOAD_LUA: &str = r#"
-- Loads a product's sale state unless someone already did.
-- ARGV: start_ms, end_ms, remaining, expire_at_ms, buyers...
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'start_ms', ARGV[1], 'end_ms', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
for i = 5, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
for i = 1, 3 do redis.call('PEXPIREAT', KEYS[i], ARGV[4]) end
return 1
"#;

const SET_REMAINING_LUA: &str = r#"
-- Corrects the remaining counter after settlement found the truth lower.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current > tonumber(ARGV[1]) then redis.call('SET', KEYS[2], ARGV[1]) end
return 1
"#;

fn script(cell: &'static OnceLock<Script>, source: &'static str) -> &'static Script {
    cell.get_or_init(|| Script::new(source))
}

/// Keeps sale keys this long after the sale ends.
const KEYS_AFTER_END_MS: i64 = 24 * 3_600 * 1_000;

/// The three keys of a product; the hash tag keeps them in one cluster slot.
fn keys(redis: &Redis, product: Uuid) -> [String; 3] {
    let tag = format!("{{fs:{product}}}");
    [redis.key(&format!("{tag}:meta")), redis.key(&format!("{tag}:remaining")), redis.key(&format!("{tag}:buyers"))]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reservation {
    Reserved,
    /// The product's keys are missing: rebuild from PostgreSQL and retry.
    NotLoaded,
}

/// The sale facts the gate needs to (re)load a product.
pub struct SaleState {
    pub start_time: OffsetDateTime,
    pub end_time: OffsetDateTime,
    pub remaining: i64,
    pub buyers: Vec<Uuid>,
}

/// Tries to reserve one unit of `product` for `user` at `now`.
pub async fn reserve(redis: &Redis, product: Uuid, user: Uuid, now: OffsetDateTime) -> Result<Reservation, AppError> {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    let [meta, remaining, buyers] = keys(redis, product);
    let mut conn = redis.conn().await?;
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    let answer: String = script(&SCRIPT, RESERVE_LUA)
        .key(meta)
        .key(remaining)
        .key(buyers)
        .arg(user.to_string())
        .arg(now_ms)
        .invoke_async(&mut conn)
        .await?;
    match answer.as_str() {
        "OK" => Ok(Reservation::Reserved),
        "NOT_LOADED" => Ok(Reservation::NotLoaded),
        "NOT_STARTED" => Err(AppError::new(ErrorCode::SaleNotStarted, "the sale has not started yet")),
        "ENDED" => Err(AppError::new(ErrorCode::SaleEnded, "the sale has ended")),
        "ALREADY" => Err(AppError::new(ErrorCode::AlreadyPurchased, "you already ordered this product")),
        "SOLD_OUT" => Err(AppError::new(ErrorCode::SoldOut, "no stock left")),
        other => Err(AppError::internal(std::io::Error::other(format!("unexpected gate answer {other}")))),
    }
}

/// Gives a reservation back.
pub async fn release(redis: &Redis, product: Uuid, user: Uuid) -> Result<(), AppError> {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    let [meta, remaining, buyers] = keys(redis, product);
    let mut conn = redis.conn().await?;
    let _: i64 = script(&SCRIPT, RELEASE_LUA).key(meta).key(remaining).key(buyers).arg(user.to_string()).invoke_async(&mut conn).await?;
    Ok(())
}

/// Loads a product's state unless it is already loaded; true if this call loaded it.
pub async fn load(redis: &Redis, product: Uuid, state: &SaleState) -> Result<bool, AppError> {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    let [meta, remaining, buyers] = keys(redis, product);
    let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
    let mut invocation = script(&SCRIPT, LOAD_LUA).prepare_invoke();
    invocation.key(meta).key(remaining).key(buyers);
    invocation.arg(ms(state.start_time)).arg(ms(state.end_time)).arg(state.remaining.max(0)).arg(ms(state.end_time) + KEYS_AFTER_END_MS);
    for buyer in &state.buyers {
        invocation.arg(buyer.to_string());
    }
    let mut conn = redis.conn().await?;
    let loaded: i64 = invocation.invoke_async(&mut conn).await?;
    Ok(loaded == 1)
}

/// Live remaining stock as the gate sees it; `None` when not loaded.
pub async fn remaining(redis: &Redis, products: &[Uuid]) -> Result<Vec<Option<i64>>, AppError> {
    if products.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = products.iter().map(|p| keys(redis, *p)[1].clone()).collect();
    let mut conn = redis.conn().await?;
    Ok(redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?)
}

/// Lowers the remaining counter to `truth` if it is above it.
pub async fn correct_remaining(redis: &Redis, product: Uuid, truth: i64) -> Result<(), AppError> {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    let [meta, remaining, buyers] = keys(redis, product);
    let mut conn = redis.conn().await?;
    let _: i64 = script(&SCRIPT, SET_REMAINING_LUA).key(meta).key(remaining).key(buyers).arg(truth.max(0)).invoke_async(&mut conn).await?;
    Ok(())
}
