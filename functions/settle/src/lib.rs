//! `settle`: reads `order-stream` and settles each order exactly once.
//!
//! Per batch, one transaction: lock the batch's products (each row carries
//! its units sold), read the orders, grant SUCCESS (with one settlement at
//! the product's price) while stock remains and FAILED otherwise, in a
//! fixed number of multi-row statements whatever the sale's history.
//! Only PENDING orders change, and a settlement is unique per order, so a
//! redelivered batch changes nothing. Successes can never exceed stock: the
//! product rows are locked while granting, and `sold <= stock` is a CHECK.

use std::collections::HashSet;

use uuid::Uuid;

use paystream::events::{decode_order, OrderEvent};
use paystream::flash;
use paystream::metrics::{self, Unit};
use paystream::msk::{dead_letter, decode_batch, BatchConsumer, BatchOutcome, InRecord, Poison};
use paystream::store::products;
use paystream::store::settlements::{self, Granted};
use paystream::{AppError, Platform};

pub const CONSUMER_NAME: &str = "settle";
/// Why an order accepted at the gate did not get stock at settlement (only
/// possible for orders accepted while the gate was being rebuilt).
pub use paystream::store::orders::REASON_NO_STOCK;

pub struct Settle {
    pub platform: Platform,
}

impl Settle {
    pub fn new(platform: Platform) -> Self {
        Self { platform }
    }
}

impl BatchConsumer for Settle {
    async fn handle(&self, records: Vec<InRecord>) -> Result<BatchOutcome, AppError> {
        let p = &self.platform;
        let batch = decode_batch(p, CONSUMER_NAME, &records, decode_order, |e: &OrderEvent| e.order_id).await?;
        let mut outcome = BatchOutcome { duplicates: batch.repeated, dead_lettered: batch.dead_lettered, ..Default::default() };
        let unique = &batch.events;
        let mut unknown: Vec<Poison<'_>> = Vec::new();

        let mut db = p.pg.get().await?;
        let tx = paystream::db::begin(&mut db).await?;
        // Lock the products first (by the events' product ids), then read
        // the orders: their statuses are then current, and `sold` cannot
        // move under us, so granting is exact without counting history.
        let mut product_ids: Vec<Uuid> = unique.iter().map(|(_, e)| e.product_id).collect::<HashSet<_>>().into_iter().collect();
        product_ids.sort_unstable();
        let mut terms = settlements::lock_products(&tx, &product_ids).await?;
        let ids: Vec<Uuid> = unique.iter().map(|(_, e)| e.order_id).collect();
        let known = settlements::orders(&tx, &ids).await?;
        let mut pending = Vec::with_capacity(unique.len());
        for (record, event) in unique {
            match known.get(&event.order_id) {
                None => unknown.push(Poison { record, reason: format!("unknown order {}", event.order_id) }),
                Some(order) if order.product_id != event.product_id => {
                    unknown.push(Poison { record, reason: format!("order {} is for another product than its event says", event.order_id) });
                }
                Some(order) if order.status != "PENDING" => outcome.duplicates += 1,
                Some(order) => pending.push((event.order_id, order.user_id, order.product_id)),
            }
        }
        let mut granted = Vec::new();
        let mut failed = Vec::new();
        for (order_id, user_id, product_id) in pending {
            let t = terms.get_mut(&product_id).expect("orders reference existing products, locked above");
            if t.sold < t.stock {
                t.sold += 1;
                granted.push(Granted { order_id, user_id, product_id, amount: t.price, currency: t.currency.clone() });
            } else {
                failed.push((order_id, REASON_NO_STOCK));
            }
        }
        let settled = settlements::apply(&tx, &granted, &failed).await?;
        tx.commit().await?;
        let settled_at = time::OffsetDateTime::now_utc();
        // Dying here: the batch is not acknowledged, MSK delivers it again,
        // and every order in it is already decided (duplicates).
        paystream::crash_point!("settle.after_commit");
        debug_assert_eq!(settled as usize, granted.len(), "one settlement per granted order");
        if !unknown.is_empty() {
            dead_letter(&*p.producer().await?, CONSUMER_NAME, &unknown).await?;
        }

        // A FAILED order means the gate was too generous: bring it down to
        // the truth. Orders already FAILED in a redelivered batch count too,
        // so a crash before this correction is made up on redelivery.
        let mut failed_products: HashSet<Uuid> = failed.iter().filter_map(|(id, _)| known.get(id).map(|o| o.product_id)).collect();
        failed_products.extend(unique.iter().filter_map(|(_, e)| known.get(&e.order_id)).filter(|o| o.status == "FAILED").map(|o| o.product_id));
        for product_id in failed_products {
            if let Some(remaining) = products::remaining(&**db, product_id).await? {
                flash::correct_remaining(&p.redis, product_id, remaining).await?;
            }
        }
        metrics::emit(
            p.function,
            &[("Settlements", settled as f64, Unit::Count), ("OrdersFailed", failed.len() as f64, Unit::Count)],
        );
        let granted_ids: HashSet<Uuid> = granted.iter().map(|g| g.order_id).collect();
        let settled_events = unique.iter().filter(|(_, e)| granted_ids.contains(&e.order_id));
        metrics::latencies_ms(metrics::SETTLEMENT_LAG, settled_events.map(|(_, e)| metrics::lag_ms(e.ordered_at, settled_at)));
        outcome.applied = granted.len() + failed.len();
        outcome.dead_lettered += unknown.len();
        Ok(outcome)
    }
}
