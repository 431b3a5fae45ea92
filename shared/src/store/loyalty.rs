//! Loyalty: visits (one per payment), visit counts per (merchant, customer)
//! mirrored to Redis, VIPs (once each), and the merchant dashboard's data.

use std::collections::HashMap;

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::rfc3339;
use crate::cache::Redis;
use crate::error::AppError;

pub struct Visit {
    pub payment_id: Uuid,
    pub user_id: Uuid,
    pub merchant_id: Uuid,
    pub at: OffsetDateTime,
}

/// A pair's visit count after a batch, and what it was before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountChange {
    pub merchant_id: Uuid,
    pub user_id: Uuid,
    pub before: i32,
    pub after: i32,
}

/// What [`record_visits`] assumes about a batch's payments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// None is recorded yet, the usual case (a batch is delivered once):
    /// the visits are inserted without looking each payment up first. A
    /// payment already recorded fails the statement on the visits' key.
    Skipped,
    /// Each payment is looked up by its key first (see the `store` module
    /// comment) and the recorded ones are left out: for a redelivery.
    ByKey,
}

/// What [`record_visits`] did.
#[derive(Debug)]
pub enum Recorded {
    /// The pairs whose counts the new visits changed.
    Counted(Vec<CountChange>),
    /// A payment of the batch was recorded already (or by a concurrent
    /// writer): nothing was, and the transaction is aborted. Run it again
    /// with [`Lookup::ByKey`].
    AlreadyThere,
}

/// Records visits and adds them to the pair counts, inside the caller's
/// transaction: one statement (one round trip, prepared once per
/// connection) whatever the batch's size. Only the visits this statement
/// inserted are counted, so a redelivered payment adds nothing.
///
/// Plain INSERTs and an UPDATE rather than `ON CONFLICT`: a speculative
/// insert writes a second WAL record per row (its confirmation) and an
/// upsert locks each existing row (another record) before updating it.
/// With [`Lookup::Skipped`] the visits' key is what finds a redelivered
/// payment: looking each one up first is an index descent per visit that
/// a batch delivered once does not need (measured in README, "Eleventh
/// session"). The pairs are probed by key only when the UPDATE did not
/// find them all (the usual case being that it did); no join between the
/// statement's own parts, whose row counts a generic plan guesses low.
/// Besides a payment recorded before, only a concurrent writer of the same
/// pair can make an INSERT fail: the partition key is the customer, so
/// that is only an overlapping redelivery of the same batch: the statement
/// fails, the batch is retried and finds them recorded. `visits` holds each payment
/// once (the batch decoder drops repeats).
pub async fn record_visits(db: &impl deadpool_postgres::GenericClient, visits: &[Visit], lookup: Lookup) -> Result<Recorded, AppError> {
    if visits.is_empty() {
        return Ok(Recorded::Counted(Vec::new()));
    }
    let payments: Vec<Uuid> = visits.iter().map(|v| v.payment_id).collect();
    assert_eq!(payments.iter().collect::<std::collections::HashSet<_>>().len(), payments.len(), "a payment twice in one batch");
    let users: Vec<Uuid> = visits.iter().map(|v| v.user_id).collect();
    let merchants: Vec<Uuid> = visits.iter().map(|v| v.merchant_id).collect();
    let times: Vec<OffsetDateTime> = visits.iter().map(|v| v.at).collect();
    let sql: &str = match lookup {
        Lookup::Skipped => &RECORD_NEW_VISITS_SQL,
        Lookup::ByKey => &RECORD_UNSEEN_VISITS_SQL,
    };
    let statement = db.prepare_cached(sql).await?;
    match db.query(&statement, &[&payments, &users, &merchants, &times]).await {
        Ok(totals) => Ok(Recorded::Counted(
            totals.iter().map(|r| CountChange { merchant_id: r.get(0), user_id: r.get(1), before: r.get(2), after: r.get(3) }).collect(),
        )),
        Err(e) if crate::db::unique_violation(&e) == Some(VISITS_KEY) => Ok(Recorded::AlreadyThere),
        Err(e) => Err(e.into()),
    }
}

/// The visits' primary key: one visit per payment.
const VISITS_KEY: &str = "loyalty_visits_pkey";

static RECORD_NEW_VISITS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| record_visits_sql(""));
static RECORD_UNSEEN_VISITS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    record_visits_sql(
        "LEFT JOIN LATERAL (SELECT true AS seen FROM loyalty_visits v WHERE v.payment_id = t.payment_id LIMIT 1) s ON true
         WHERE s.seen IS NULL",
    )
});

/// [`record_visits`]' statement, `unseen` filtering the batch's visits.
fn record_visits_sql(unseen: &str) -> String {
    format!(
        "WITH new_visits AS (
             INSERT INTO loyalty_visits (payment_id, user_id, merchant_id, visited_at)
             SELECT t.payment_id, t.user_id, t.merchant_id, t.visited_at
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[]) AS t(payment_id, user_id, merchant_id, visited_at)
             {unseen}
             RETURNING merchant_id, user_id),
         added AS (
             SELECT merchant_id, user_id, count(*)::int AS visits FROM new_visits GROUP BY merchant_id, user_id),
         bumped AS (
             UPDATE loyalty_counts c SET visits = c.visits + a.visits FROM added a
             WHERE c.merchant_id = a.merchant_id AND c.user_id = a.user_id
             RETURNING c.merchant_id, c.user_id, c.visits - a.visits AS before, c.visits AS after),
         created AS (
             INSERT INTO loyalty_counts (merchant_id, user_id, visits)
             SELECT a.merchant_id, a.user_id, a.visits FROM added a
             LEFT JOIN LATERAL (SELECT true AS seen FROM loyalty_counts c WHERE c.merchant_id = a.merchant_id AND c.user_id = a.user_id LIMIT 1) s ON true
             WHERE s.seen IS NULL AND (SELECT count(*) FROM bumped) < (SELECT count(*) FROM added)
             RETURNING merchant_id, user_id, 0 AS before, visits AS after)
         SELECT merchant_id, user_id, before, after FROM bumped UNION ALL SELECT merchant_id, user_id, before, after FROM created"
    )
}

/// Inserts VIPs; returns the (merchant, user) pairs that are new.
pub async fn insert_vips(db: &impl deadpool_postgres::GenericClient, vips: &[CountChange]) -> Result<Vec<(Uuid, Uuid)>, AppError> {
    if vips.is_empty() {
        return Ok(Vec::new());
    }
    let merchants: Vec<Uuid> = vips.iter().map(|v| v.merchant_id).collect();
    let users: Vec<Uuid> = vips.iter().map(|v| v.user_id).collect();
    let visits: Vec<i32> = vips.iter().map(|v| v.after).collect();
    let rows = db
        .query(
            &db.prepare_cached(
                "INSERT INTO loyalty_vips (merchant_id, user_id, visits) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[])
                 ON CONFLICT (merchant_id, user_id) DO NOTHING RETURNING merchant_id, user_id",
            )
            .await?,
            &[&merchants, &users, &visits],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Merchants' names and VIP thresholds, cache-aside (Redis first, then
/// PostgreSQL for the misses, filling Redis).
pub async fn merchant_facts(redis: &Redis, db: &impl GenericClient, merchants: &[Uuid], ttl_s: u64) -> Result<HashMap<Uuid, (String, i32)>, AppError> {
    let read = redis
        .read_through("loy:merchant", merchants, ttl_s, |misses| async move {
            let rows = db.query("SELECT id, name, vip_threshold FROM merchants WHERE id = ANY($1)", &[&misses]).await?;
            Ok(rows.iter().map(|r| (r.get(0), Some((r.get(1), r.get(2))))).collect::<HashMap<Uuid, Option<(String, i32)>>>())
        })
        .await?;
    Ok(read.into_iter().filter_map(|(m, facts)| facts.map(|f| (m, f))).collect())
}

fn count_key(redis: &Redis, merchant: Uuid, user: Uuid) -> String {
    redis.id_key("loy:count", &[merchant, user])
}

/// Mirrors counts into Redis (one `MSET`: the counts keep no TTL, and one
/// command for the batch costs Redis less than a `SET` per pair), after the
/// PostgreSQL commit. PostgreSQL is the truth, so a lost Redis is rebuilt
/// by the next write or read, never double counted.
pub async fn mirror_counts(redis: &Redis, counts: &[CountChange]) -> Result<(), AppError> {
    if counts.is_empty() {
        return Ok(());
    }
    let pairs: Vec<(String, i32)> = counts.iter().map(|c| (count_key(redis, c.merchant_id, c.user_id), c.after)).collect();
    let mut conn = redis.conn().await?;
    let _: () = redis::cmd("MSET").arg(&pairs).query_async(&mut conn).await?;
    Ok(())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TopCustomer {
    #[schema(schema_with = crate::api::responses::masked_customer)]
    pub customer: String,
    pub visits: i32,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecentVip {
    #[schema(schema_with = crate::api::responses::masked_customer)]
    pub customer: String,
    pub visits: i32,
    #[schema(schema_with = crate::api::responses::time)]
    pub became_at: String,
}

/// Visits on one UTC day.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DayVisits {
    #[schema(schema_with = crate::api::responses::utc_day)]
    pub day: String,
    #[schema(minimum = 0)]
    pub visits: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Dashboard {
    pub merchant_id: Uuid,
    #[schema(minimum = 0)]
    pub customers: i64,
    #[schema(minimum = 0)]
    pub vips: i64,
    pub top_customers: Vec<TopCustomer>,
    pub recent_vips: Vec<RecentVip>,
    /// Benefit tips sent for payments at this merchant.
    #[schema(minimum = 0)]
    pub tips_sent: i64,
    /// The last [`DASHBOARD_DAYS`] UTC days, oldest first, today last; days
    /// without a visit are there with 0.
    #[schema(schema_with = crate::api::responses::visits_by_day)]
    pub visits_by_day: Vec<DayVisits>,
}

/// `alice` -> `al***`: enough for the merchant to recognise a regular, not
/// enough to identify anyone.
pub fn mask(username: &str) -> String {
    let head: String = username.chars().take(2).collect();
    format!("{head}***")
}

/// Dashboard rows shown at most.
pub const DASHBOARD_LIST_MAX: i64 = 10;

/// Days in the dashboard's visits series (today included).
pub const DASHBOARD_DAYS: i32 = 30;

pub async fn dashboard(db: &impl GenericClient, merchant: Uuid) -> Result<Dashboard, AppError> {
    let totals = db
        .query_one(
            "SELECT (SELECT count(*) FROM loyalty_counts WHERE merchant_id = $1),
                    (SELECT count(*) FROM loyalty_vips WHERE merchant_id = $1),
                    (SELECT count(*) FROM benefit_tips WHERE merchant_id = $1)",
            &[&merchant],
        )
        .await?;
    let top = db
        .query(
            "SELECT u.username, c.visits FROM loyalty_counts c JOIN users u ON u.id = c.user_id
             WHERE c.merchant_id = $1 ORDER BY c.visits DESC, c.user_id LIMIT $2",
            &[&merchant, &DASHBOARD_LIST_MAX],
        )
        .await?;
    let recent = db
        .query(
            "SELECT u.username, v.visits, v.became_at FROM loyalty_vips v JOIN users u ON u.id = v.user_id
             WHERE v.merchant_id = $1 ORDER BY v.became_at DESC, v.user_id LIMIT $2",
            &[&merchant, &DASHBOARD_LIST_MAX],
        )
        .await?;
    // One pass over the window's visits (index on merchant_id), then every
    // day of the window, so a quiet day reads 0 rather than missing.
    let days = db
        .query(
            "WITH bounds AS (SELECT (now() AT TIME ZONE 'UTC')::date AS today),
                  counted AS (
                      SELECT (v.visited_at AT TIME ZONE 'UTC')::date AS day, count(*) AS visits
                      FROM loyalty_visits v, bounds b
                      WHERE v.merchant_id = $1 AND v.visited_at >= (b.today - ($2::int - 1))::timestamp AT TIME ZONE 'UTC'
                      GROUP BY 1)
             SELECT to_char(d.day, 'YYYY-MM-DD'), coalesce(c.visits, 0)
             FROM bounds b, generate_series(b.today - ($2::int - 1), b.today, interval '1 day') AS g(ts)
                  CROSS JOIN LATERAL (SELECT g.ts::date AS day) d LEFT JOIN counted c ON c.day = d.day
             ORDER BY d.day",
            &[&merchant, &DASHBOARD_DAYS],
        )
        .await?;
    Ok(Dashboard {
        merchant_id: merchant,
        customers: totals.get(0),
        vips: totals.get(1),
        tips_sent: totals.get(2),
        top_customers: top.iter().map(|r| TopCustomer { customer: mask(r.get(0)), visits: r.get(1) }).collect(),
        recent_vips: recent
            .iter()
            .map(|r| RecentVip { customer: mask(r.get(0)), visits: r.get(1), became_at: rfc3339(r.get::<_, OffsetDateTime>(2)) })
            .collect(),
        visits_by_day: days.iter().map(|r| DayVisits { day: r.get(0), visits: r.get(1) }).collect(),
    })
}

/// The merchant's owner, if the merchant exists.
pub async fn merchant_owner(db: &impl GenericClient, merchant: Uuid) -> Result<Option<Uuid>, AppError> {
    Ok(db.query_opt("SELECT owner_id FROM merchants WHERE id = $1", &[&merchant]).await?.map(|r| r.get(0)))
}
