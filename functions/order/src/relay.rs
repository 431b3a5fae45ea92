//! The relay schedule: returns reservations that never became orders, and
//! publishes order events the broker did not take at order time (outage,
//! crash between commit and publish). Publishing twice is harmless:
//! settlement is idempotent per order.
//!
//! Every run is bounded: at most `RECONCILE_BATCH_MAX` products and stale
//! reservations, at most `RELAY_BATCH_MAX` outbox rows with
//! `RELAY_CONCURRENCY` publishes in flight, and all of it within
//! `RELAY_DEADLINE_MS` (below the function's timeout), after which what the
//! broker acknowledged leaves the outbox and the rest waits for the next
//! run. The relay takes only outbox rows older than `RELAY_GRACE_MS`, skips rows
//! another run holds, and the request path skips rows the relay holds, so
//! neither ever waits for the other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;
use uuid::Uuid;

use paystream::flash::{self, Recorded, Verdict};
use paystream::store::orders;
use paystream::{AppError, Platform};

use crate::publisher::publish_one;

/// What one run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RelayReport {
    /// Outbox events the broker acknowledged (their outbox rows now deleted).
    pub published: usize,
    /// Reservations without an order given back (buyer removed, unit returned).
    pub reservations_returned: u64,
    /// Records of reservations whose order exists, dropped.
    pub reservations_forgotten: u64,
}

/// One run: reconciliation first (Redis and PostgreSQL only, quick), then
/// the outbox with whatever time is left. Both run even if one fails; the
/// first error is returned after both (the schedule retries).
pub async fn run(p: &Platform) -> Result<RelayReport, AppError> {
    let deadline = Instant::now() + Duration::from_millis(p.config.flash.relay_deadline_ms);
    let mut report = RelayReport::default();
    let reconciled = reconcile(p, deadline).await;
    if let Ok((returned, forgotten)) = &reconciled {
        (report.reservations_returned, report.reservations_forgotten) = (*returned, *forgotten);
    }
    let published = publish_outbox(p, deadline).await;
    if let Ok(n) = &published {
        report.published = *n;
    }
    tracing::info!(
        published = report.published,
        reservations_returned = report.reservations_returned,
        reservations_forgotten = report.reservations_forgotten,
        "relay run"
    );
    reconciled?;
    published?;
    Ok(report)
}

/// Returns stale reservations without an order and forgets those with one
/// (see [`flash`]). A reservation is stale once older than
/// `RESERVATION_TTL_MS`, when the request that made it can no longer commit.
pub async fn reconcile(p: &Platform, deadline: Instant) -> Result<(u64, u64), AppError> {
    let limits = &p.config.flash;
    let db = p.pg.get().await?;
    let products = orders::products_with_live_gates(&**db, flash::KEYS_AFTER_END_MS, i64::from(limits.reconcile_batch_max)).await?;
    let mut budget = limits.reconcile_batch_max;
    let (mut returned, mut forgotten) = (0, 0);
    for product in products {
        if budget == 0 || Instant::now() >= deadline {
            break;
        }
        let stale = flash::stale_reservations(&p.redis, product, limits.reservation_ttl_ms, budget).await?;
        if stale.is_empty() {
            continue;
        }
        budget = budget.saturating_sub(stale.len() as u32);
        let users: Vec<Uuid> = stale.iter().map(|r| r.user).collect();
        let ordered = orders::buyers_with_orders(&**db, product, &users).await?;
        let verdicts = verdicts(&stale, |user| ordered.contains(&user));
        let (r, f) = flash::settle_stale(&p.redis, product, &verdicts).await?;
        if r > 0 {
            tracing::warn!(product_id = %product, returned = r, "reservations without an order returned to the sale");
        }
        (returned, forgotten) = (returned + r, forgotten + f);
    }
    Ok((returned, forgotten))
}

/// The reconciliation rule over one product's stale reservations.
pub fn verdicts(stale: &[Recorded], has_order: impl Fn(Uuid) -> bool) -> Vec<(Recorded, Verdict)> {
    stale.iter().map(|r| (*r, flash::verdict(has_order(r.user)))).collect()
}

/// Publishes up to `RELAY_BATCH_MAX` unpublished order events older than
/// the grace period, concurrently, until `deadline`; deletes the outbox rows
/// of those the broker acknowledged. Stops taking new ones at the first broker failure.
pub async fn publish_outbox(p: &Platform, deadline: Instant) -> Result<usize, AppError> {
    let limits = &p.config.flash;
    let mut db = p.pg.get().await?;
    let tx = paystream::db::begin(&mut db).await?;
    let pending = orders::claim_unpublished(&*tx, limits.relay_grace_ms, i64::from(limits.relay_batch_max)).await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let producer = p.producer().await?;
    let topic: Arc<str> = Arc::from(p.config.kafka.order_topic.as_str());
    let concurrency = limits.relay_concurrency as usize;
    let mut queue = pending.into_iter();
    let mut in_flight: JoinSet<(Uuid, Result<(), String>)> = JoinSet::new();
    let mut acknowledged = Vec::new();
    let mut broker_failed = false;
    let mut timed_out = false;
    loop {
        while !broker_failed && in_flight.len() < concurrency {
            let Some(event) = queue.next() else { break };
            in_flight.spawn(publish_one(Arc::clone(&producer), Arc::clone(&topic), event));
        }
        let next = match tokio::time::timeout_at(deadline.into(), in_flight.join_next()).await {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(_) => {
                timed_out = true;
                break;
            }
        };
        match next {
            Ok((id, Ok(()))) => acknowledged.push(id),
            Ok((id, Err(e))) => {
                if !broker_failed {
                    tracing::warn!(order_id = %id, error = %e, "relay stops taking new events: broker unavailable");
                }
                broker_failed = true;
            }
            Err(e) => return Err(AppError::internal(e)),
        }
    }
    // Whatever is still in flight at the deadline is left in the outbox: the
    // next run publishes it again (settlement deduplicates).
    if !in_flight.is_empty() {
        // Abandoned before their own timeout: without this the same stuck
        // producer would be reused by every run and none would progress.
        producer.abandon();
    }
    in_flight.abort_all();
    if timed_out {
        tracing::warn!(acknowledged = acknowledged.len(), "relay deadline reached; the rest waits for the next run");
    }
    orders::delete_published(&*tx, &acknowledged).await?;
    tx.commit().await?;
    Ok(acknowledged.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    fn recorded(n: u8, stamp_ms: i64) -> Recorded {
        Recorded { user: Uuid::from_bytes([n; 16]), stamp_ms }
    }

    #[test]
    fn ordered_reservations_are_forgotten_and_the_rest_returned() {
        let stale = [recorded(1, 10), recorded(2, 20)];
        let v = verdicts(&stale, |u| u == stale[0].user);
        assert_eq!(v, vec![(stale[0], Verdict::Forget), (stale[1], Verdict::Return)]);
    }

    proptest! {
        /// Every stale reservation gets exactly one verdict, with its own
        /// stamp; a buyer with an order is never returned, one without always.
        #[test]
        fn verdicts_cover_each_reservation_once(entries in proptest::collection::hash_map(any::<u8>(), (any::<i64>(), any::<bool>()), 0..50)) {
            let stale: Vec<Recorded> = entries.iter().map(|(n, (stamp, _))| recorded(*n, *stamp)).collect();
            let ordered: HashSet<Uuid> = entries.iter().filter(|(_, (_, o))| *o).map(|(n, _)| Uuid::from_bytes([*n; 16])).collect();
            let v = verdicts(&stale, |u| ordered.contains(&u));
            prop_assert_eq!(v.len(), stale.len());
            let by_user: HashMap<Uuid, (i64, Verdict)> = v.iter().map(|(r, v)| (r.user, (r.stamp_ms, *v))).collect();
            for r in &stale {
                let (stamp, verdict) = by_user[&r.user];
                prop_assert_eq!(stamp, r.stamp_ms);
                prop_assert_eq!(verdict == Verdict::Return, !ordered.contains(&r.user));
            }
        }
    }
}
