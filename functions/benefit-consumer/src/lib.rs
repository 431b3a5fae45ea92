//! `benefit-consumer`: for each payment, compares what the card used earned
//! with each of the payer's other cards; when another would have earned at
//! least `BENEFIT_MIN_GAIN` more, the payer is told which card and how much
//! was missed. One tip per payment at most, also under redelivery.
//!
//! Cards and rules are read cache-aside (Redis first, PostgreSQL on a miss).
//! Per batch: two Redis MGETs (+ one query and one pipeline each on misses)
//! and one transaction of two statements.

use std::collections::HashSet;

use uuid::Uuid;

use paystream::domain::benefit::{better_card, card_benefit, Purchase};
use paystream::domain::money::format_minor;
use paystream::events::{decode_payment, PaymentEvent};
use paystream::metrics::{self, Unit};
use paystream::msk::{decode_batch, BatchConsumer, BatchOutcome, InRecord};
use paystream::store::benefits::{self, HeldCard, NewTip};
use paystream::store::notifications::{self, NewNotification};
use paystream::{AppError, Platform};

pub const CONSUMER_NAME: &str = "benefit-consumer";

pub struct BenefitGuide {
    pub platform: Platform,
}

impl BenefitGuide {
    pub fn new(platform: Platform) -> Self {
        Self { platform }
    }
}

impl BatchConsumer for BenefitGuide {
    async fn handle(&self, records: Vec<InRecord>) -> Result<BatchOutcome, AppError> {
        let p = &self.platform;
        let batch = decode_batch(p, CONSUMER_NAME, &records, decode_payment, |e: &PaymentEvent| e.payment_id).await?;
        let unique: Vec<&PaymentEvent> = batch.events.iter().map(|(_, e)| e).collect();
        let ttl_s = p.config.cache_ttl_s;

        let mut db = p.pg.get().await?;
        let users: Vec<Uuid> = unique.iter().map(|e| e.user_id).collect::<HashSet<_>>().into_iter().collect();
        let cards = benefits::cards_of(&p.redis, &**db, &users, ttl_s).await?;
        let mut products: HashSet<Uuid> = unique.iter().map(|e| e.card_product_id).collect();
        products.extend(cards.values().flatten().map(|c| c.card_product_id));
        let products: Vec<Uuid> = products.into_iter().collect();
        let rules = benefits::rules_of(&p.redis, &**db, &products, ttl_s).await?;

        let mut tips = Vec::new();
        let mut notes = Vec::new();
        for event in &unique {
            let purchase = Purchase { merchant_id: event.merchant_id, category: &event.merchant_category, amount_minor: event.amount, currency: &event.currency };
            let earned = |product: &Uuid| rules.get(product).map_or(0, |r| card_benefit(r, &purchase));
            let used = earned(&event.card_product_id);
            let others: Vec<(&HeldCard, i64)> = cards
                .get(&event.user_id)
                .into_iter()
                .flatten()
                .filter(|c| c.card_id != event.card_id && c.card_product_id != event.card_product_id)
                .map(|c| (c, earned(&c.card_product_id)))
                .collect();
            let Some(tip) = better_card(used, others.iter().map(|(c, e)| (*c, *e)), p.config.benefit_min_gain_minor) else { continue };
            tips.push(NewTip {
                payment_id: event.payment_id,
                user_id: event.user_id,
                merchant_id: event.merchant_id,
                used_card_id: event.card_id,
                better_card_id: tip.card.card_id,
                missed_minor: tip.missed_minor,
                currency: event.currency.clone(),
            });
            notes.push(NewNotification {
                user_id: event.user_id,
                kind: paystream::store::notifications::kind::BENEFIT_TIP,
                payload: serde_json::json!({
                    "payment_id": event.payment_id,
                    "merchant_id": event.merchant_id,
                    "better_card": {"card_id": tip.card.card_id, "card_product": tip.card.product_name, "last4": tip.card.last4},
                    "missed_amount": tip.missed_minor,
                    "currency": event.currency,
                    "message": format!("Paying with your {} card ending {} would have earned {} more.",
                        tip.card.product_name, tip.card.last4, format_minor(tip.missed_minor, &event.currency)),
                }),
                dedupe_key: format!("tip:{}", event.payment_id),
            });
        }

        let tx = paystream::db::begin(&mut db).await?;
        let new = benefits::insert_tips(&tx, &tips).await?;
        let new: HashSet<Uuid> = new.into_iter().collect();
        notes.retain(|n| n.payload["payment_id"].as_str().and_then(|id| Uuid::parse_str(id).ok()).is_some_and(|id| new.contains(&id)));
        notifications::insert_many_once(&tx, &notes).await?;
        tx.commit().await?;
        let committed_at = time::OffsetDateTime::now_utc();
        metrics::latencies_ms(metrics::EVENT_LAG, batch.events.iter().map(|(_, e)| metrics::lag_ms(e.occurred_at, committed_at)));
        paystream::crash_point!("benefit.after_commit");
        metrics::emit(p.function, &[("TipsSent", new.len() as f64, Unit::Count)]);
        Ok(BatchOutcome { applied: unique.len(), duplicates: batch.repeated, dead_lettered: batch.dead_lettered })
    }
}
