//! `loyalty-consumer`: every payment on `payment-stream` is one visit of
//! (customer, merchant). At the merchant's `vip_threshold` the customer
//! becomes VIP exactly once: a notification and a dashboard entry.
//!
//! PostgreSQL holds the truth (visits keyed by payment id, so a redelivered
//! payment is never counted twice; counts per pair); Redis mirrors the
//! counts after each commit, so Redis losing them costs nothing. A batch is
//! split into shards of customers (`CONSUMER_BATCH_SHARDS`, applied at
//! once: `msk::shards`). Per shard: one transaction of up to three
//! statements in two round trips, each prepared once per connection: the
//! visits and counts, beside which the merchants' thresholds are read
//! cache-aside (one Redis MGET, + one query and one pipeline on misses);
//! then, when customers became VIP, their VIP rows and notifications
//! together. After the commit, one Redis `MSET`. The visits
//! are written assuming none was counted before; a shard holding one that
//! was (a redelivery) finds out from the visits' key, and its transaction
//! runs again looking each payment up (`loyalty::Lookup`).

use std::collections::HashSet;
use std::sync::Arc;

use uuid::Uuid;

use paystream::events::{decode_payment, PaymentEvent};
use paystream::metrics::{self, Unit};
use paystream::msk::{self, decode_batch, BatchConsumer, BatchOutcome, InRecord};
use paystream::store::loyalty::{self, CountChange, Lookup, Recorded, Visit};
use paystream::store::notifications::{self, NewNotification};
use paystream::domain::VipThreshold;
use paystream::{AppError, Platform};

pub const CONSUMER_NAME: &str = "loyalty-consumer";

pub struct Loyalty {
    pub platform: Arc<Platform>,
}

impl Loyalty {
    pub fn new(platform: Platform) -> Self {
        Self { platform: Arc::new(platform) }
    }
}

impl BatchConsumer for Loyalty {
    async fn handle(&self, records: Vec<InRecord>) -> Result<BatchOutcome, AppError> {
        let p = &self.platform;
        let batch = decode_batch(p, CONSUMER_NAME, &records, decode_payment, |e: &PaymentEvent| e.payment_id).await?;
        let visits: Vec<Visit> =
            batch.events.iter().map(|(_, e)| Visit { payment_id: e.payment_id, user_id: e.user_id, merchant_id: e.merchant_id, at: e.occurred_at }).collect();
        // A customer's visits stay in one shard: each (merchant, customer)
        // count is bumped by one transaction only.
        let shards = msk::shards(visits, p.config.consumer, |v| v.user_id);
        let mut outcome = msk::apply_shards(shards, &self.platform, |p, shard| async move { count(&p, shard).await }).await?;
        outcome.duplicates += batch.repeated;
        outcome.dead_lettered = batch.dead_lettered;
        Ok(outcome)
    }
}

/// Counts one shard's visits in one transaction; VIPs at the threshold.
/// A shard is first written as if none of its payments were counted (a
/// batch is normally delivered once); if one was (a redelivery), that
/// transaction did nothing and the shard is written again looking each
/// payment up.
async fn count(p: &Platform, visits: Vec<Visit>) -> Result<BatchOutcome, AppError> {
    for lookup in [Lookup::Skipped, Lookup::ByKey] {
        if let Some(outcome) = count_once(p, &visits, lookup).await? {
            return Ok(outcome);
        }
    }
    // Looked up and still there: a concurrent writer of the same payments
    // (an overlapping redelivery). Retrying the batch finds them counted.
    Err(AppError::new(paystream::ErrorCode::DependencyUnavailable, paystream::error::WRITE_CONFLICT))
}

/// One transaction of [`count`]; `None` when a payment was counted already
/// (nothing was written).
async fn count_once(p: &Platform, visits: &[Visit], lookup: Lookup) -> Result<Option<BatchOutcome>, AppError> {
    let mut db = p.pg.get().await?;
    let tx = paystream::db::begin(&mut db).await?;
    // Independent: the merchants' thresholds (Redis, rarely PostgreSQL
    // on the same connection) are read while the visits are written.
    let merchants: Vec<Uuid> = visits.iter().map(|v| v.merchant_id).collect::<HashSet<_>>().into_iter().collect();
    let (recorded, facts) =
        tokio::join!(loyalty::record_visits(&tx, visits, lookup), loyalty::merchant_facts(&p.redis, &*tx, &merchants, p.config.cache_ttl_s));
    // An aborted transaction fails the facts' query too: what the visits
    // say comes first.
    let changes = match recorded? {
        Recorded::Counted(changes) => changes,
        Recorded::AlreadyThere => return Ok(None),
    };
    let facts = facts?;
    // Became VIP at the threshold-th visit (the batch may have gone past it).
    let crossing: Vec<CountChange> = changes
        .iter()
        .filter_map(|c| {
            let threshold = facts.get(&c.merchant_id).map_or(VipThreshold::DEFAULT, |(_, t)| *t);
            (c.before < threshold && c.after >= threshold).then_some(CountChange { after: threshold, ..*c })
        })
        .collect();
    // The VIP rows and their notifications go in one round trip (pipelined
    // on the connection): a notification's dedupe key is the VIP's own
    // (merchant, customer), and notifications are never deleted, so
    // notifying every crossing notifies only the new VIPs, as the VIP rows'
    // key makes them: a crossing whose VIP exists (its merchant raised the
    // threshold since) was notified when it became VIP.
    let notes: Vec<NewNotification> = crossing
        .iter()
        .map(|c| NewNotification {
            user_id: c.user_id,
            kind: paystream::store::notifications::kind::VIP,
            payload: serde_json::json!({
                "merchant_id": c.merchant_id,
                "merchant": facts.get(&c.merchant_id).map(|(name, _)| name.as_str()).unwrap_or("a merchant"),
                "message": "You are now a VIP here. Thank you for your visits!",
            }),
            dedupe_key: format!("vip:{}:{}", c.merchant_id, c.user_id),
        })
        .collect();
    let (new_vips, notified) = tokio::join!(loyalty::insert_vips(&tx, &crossing), notifications::insert_many_once(&tx, &notes));
    let new_vips = new_vips?;
    let notified = notified?;
    // Both keyed by the pair, and written only together: a VIP row is new
    // exactly when its notification is. (Not a panic in production: it
    // would fail this batch on every redelivery.)
    debug_assert_eq!(notified, new_vips.len() as u64, "a VIP without its notification, or the other way round");
    tx.commit().await?;
    let committed_at = time::OffsetDateTime::now_utc();
    metrics::latencies_ms(metrics::EVENT_LAG, visits.iter().map(|v| metrics::lag_ms(v.at, committed_at)));
    paystream::crash_point!("loyalty.after_commit");
    if let Err(e) = loyalty::mirror_counts(&p.redis, &changes).await {
        tracing::warn!(error = %e, "visit counts not mirrored to Redis; the next write rebuilds them from PostgreSQL");
    }

    let counted: i32 = changes.iter().map(|c| c.after - c.before).sum();
    metrics::emit(p.function, &[("VisitsCounted", f64::from(counted), Unit::Count), ("VipsMade", new_vips.len() as f64, Unit::Count)]);
    for (merchant, user) in &new_vips {
        tracing::info!(merchant_id = %merchant, user_id = %user, "customer became VIP");
    }
    let applied = counted as usize;
    Ok(Some(BatchOutcome { applied, duplicates: visits.len() - applied, dead_lettered: 0 }))
}
