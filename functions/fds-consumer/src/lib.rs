//! `fds-consumer`: reads `payment-stream` and writes the `transactions`
//! ledger. Each payment is compared with the holder's last accepted one
//! (impossible travel); a suspicious one is PENDING and the holder gets an
//! SMS link to approve or deny it; a LOCKED holder's payment is DENIED.
//!
//! A batch is split by holder into at most `CONSUMER_BATCH_SHARDS` shards
//! decided at once, each in its own transaction (`msk::shards`). Per shard
//! the work is a fixed number of round trips whatever its size: at once,
//! one query for what is already decided or unrecorded, one profile query
//! and one Redis MGET (plus one query and one pipeline for cache misses);
//! one SMS-count query for the holders to ask (if any); then one
//! transaction of at most five multi-row statements (pipelined, beside
//! the Redis pipeline that holds the moved locations), and one Redis call
//! after commit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use paystream::domain::travel::{assess, TravelVerdict};
use paystream::events::{decode_payment, PaymentEvent};
use paystream::metrics::{self, Unit};
use paystream::msk::{self, decode_batch, BatchConsumer, BatchOutcome, InRecord};
use paystream::sms::{self, SmsMessage, SmsSender, KIND_VERIFICATION};
use paystream::store::holders::{self, LastLocation};
use paystream::store::ledger::{self, reason, LedgerRow, LedgerStatus};
use paystream::store::verifications::{self, NewVerification};
use paystream::verification;
use paystream::{AppError, Platform};

pub const CONSUMER_NAME: &str = "fds-consumer";

pub struct Fds {
    pub platform: Arc<Platform>,
    sms: Arc<SmsSender>,
    /// One delivery pass at a time per environment.
    delivering: Arc<AtomicBool>,
}

impl Fds {
    pub fn new(platform: Platform) -> Self {
        let sms = Arc::new(SmsSender::new(&platform.config.sms));
        Self { platform: Arc::new(platform), sms, delivering: Arc::new(AtomicBool::new(false)) }
    }

    /// SMS delivery is off the decision path: the decisions and their
    /// outbox rows are committed; sending them (SNS, bounded per call and
    /// in parallelism) runs beside the next batches instead of delaying
    /// this one. If the environment is frozen or dies meanwhile, the rows
    /// stay claimed until the claim lapses and the verify sweep sends them.
    fn deliver_in_background(&self) {
        if self.delivering.swap(true, Ordering::AcqRel) {
            return; // a pass is running; it or the next one takes the new rows
        }
        let (sms, pg, delivering) = (Arc::clone(&self.sms), self.platform.pg.clone(), Arc::clone(&self.delivering));
        tokio::spawn(async move {
            if let Err(e) = sms.deliver_pending(&pg).await {
                tracing::warn!(error = %e, "SMS delivery deferred to the sweep");
            }
            delivering.store(false, Ordering::Release);
        });
    }
}

impl BatchConsumer for Fds {
    async fn handle(&self, records: Vec<InRecord>) -> Result<BatchOutcome, AppError> {
        let batch = decode_batch(&self.platform, CONSUMER_NAME, &records, decode_payment, |e: &PaymentEvent| e.payment_id).await?;
        let (repeated, dead_lettered) = (batch.repeated, batch.dead_lettered);
        let events: Vec<PaymentEvent> = batch.events.into_iter().map(|(_, e)| e).collect();
        // A holder's payments stay in one shard, in order: the travel check
        // and the SMS rate limit look only at the holder's own.
        let shards = msk::shards(events, self.platform.config.consumer, |e| e.user_id);
        let mut outcome = msk::apply_shards(shards, &self.platform, |p, shard| async move { decide(&p, &shard).await }).await?;
        outcome.duplicates += repeated;
        outcome.dead_lettered = dead_lettered;
        self.deliver_in_background();
        Ok(outcome)
    }
}

/// Decides one shard's payments (each once: the batch decoder drops repeats).
async fn decide(p: &Platform, unique: &[PaymentEvent]) -> Result<BatchOutcome, AppError> {
    let mut outcome = BatchOutcome::default();
    if unique.is_empty() {
        return Ok(outcome);
    }

    let mut db = p.pg.get().await?;
    let ids: Vec<Uuid> = unique.iter().map(|e| e.payment_id).collect();
    // Independent reads at once: PostgreSQL pipelines the two queries on
    // the one connection while Redis answers the location lookup. They
    // cover every payer of the batch; a redelivered payment's payer is
    // read for nothing, which is rare and harmless.
    let users: Vec<Uuid> = unique.iter().map(|e| e.user_id).collect::<HashSet<_>>().into_iter().collect();
    let (known, profiles, mut last) = tokio::try_join!(
        ledger::known(&db, &ids),
        holders::profiles(&db, &users),
        holders::last_locations(&p.redis, &**db, &users),
    )?;
    let fresh: Vec<&PaymentEvent> = unique.iter().filter(|e| !known.decided.contains(&e.payment_id)).collect();
    outcome.duplicates += known.decided.len();
    if fresh.is_empty() {
        return Ok(outcome);
    }

    let now = OffsetDateTime::now_utc();
    let expires_at = now + time::Duration::seconds(p.config.fds.verify_ttl_s as i64);
    let mut rows = Vec::with_capacity(fresh.len());
    let mut moved: HashMap<Uuid, LastLocation> = HashMap::new();
    let mut pending = Vec::new();
    // Holders to ask by SMS, in batch order, with their links' tokens.
    let mut asks: Vec<(&PaymentEvent, String)> = Vec::new();
    for event in &fresh {
        let place = paystream::domain::travel::PaymentPlace {
            country: event.country.clone(),
            lat: event.lat,
            lon: event.lon,
            at: event.occurred_at,
        };
        let locked = profiles.get(&event.user_id).is_none_or(|p| p.locked);
        let (status, why) = if locked {
            (LedgerStatus::Denied, Some(reason::HOLDER_LOCKED))
        } else {
            match assess(last.get(&event.user_id).map(|l| l.place()).as_ref(), &place, p.config.fds.max_speed_kmh) {
                TravelVerdict::Plausible => {
                    // The holder's location only moves forward in time
                    // (as in PostgreSQL): a late-arriving older payment
                    // is accepted but does not move it back.
                    if last.get(&event.user_id).is_none_or(|l| l.at <= place.at) {
                        let location = LastLocation { payment_id: event.payment_id, country: place.country, lat: place.lat, lon: place.lon, at: place.at };
                        last.insert(event.user_id, location.clone());
                        moved.insert(event.user_id, location);
                    }
                    (LedgerStatus::Completed, None)
                }
                TravelVerdict::Impossible { distance_km, speed_kmh } => {
                    tracing::info!(payment_id = %event.payment_id, distance_km, speed_kmh, "impossible travel: asking the holder");
                    let token = verification::new_token();
                    pending.push(NewVerification { payment_id: event.payment_id, user_id: event.user_id, token_hash: token.hash.clone(), expires_at });
                    asks.push((event, token.token));
                    (LedgerStatus::Pending, Some(reason::IMPOSSIBLE_TRAVEL))
                }
            }
        };
        rows.push(LedgerRow {
            payment_id: event.payment_id,
            user_id: event.user_id,
            card_id: event.card_id,
            merchant_id: event.merchant_id,
            amount: event.amount,
            currency: event.currency.clone(),
            country: event.country.clone(),
            lat: event.lat,
            lon: event.lon,
            status,
            reason: why,
            occurred_at: event.occurred_at,
        });
    }

    // The SMS rate limit counts only the holders asked in this batch (a
    // few in a hundred), not every payer.
    let mut messages = Vec::with_capacity(asks.len());
    if !asks.is_empty() {
        let asked: Vec<Uuid> = asks.iter().map(|(e, _)| e.user_id).collect::<HashSet<_>>().into_iter().collect();
        let mut sms_sent: HashMap<Uuid, i64> = sms::recent_counts(&db, &asked, p.config.sms.rate_window_s).await?.into_iter().collect();
        for (event, token) in &asks {
            let count = sms_sent.entry(event.user_id).or_default();
            if *count < i64::from(p.config.sms.rate_limit_per_window) {
                *count += 1;
                let phone = profiles.get(&event.user_id).map(|p| p.phone.clone()).unwrap_or_default();
                messages.push(SmsMessage { user_id: event.user_id, phone, body: sms_body(p, event, token), kind: KIND_VERIFICATION });
            } else {
                tracing::warn!(payment_id = %event.payment_id, user_id = %event.user_id, "verification SMS rate-limited; payment will expire");
            }
        }
    }

    let moved: Vec<(Uuid, LastLocation)> = moved.into_iter().collect();
    let moved_users: Vec<Uuid> = moved.iter().map(|(u, _)| *u).collect();
    let tx = paystream::db::begin(&mut db).await?;
    // Before the ledger: an event whose intake never committed becomes
    // a payment record here (only those; usually none).
    let unrecorded: Vec<&PaymentEvent> = fresh.iter().copied().filter(|e| known.unrecorded.contains(&e.payment_id)).collect();
    if !unrecorded.is_empty() {
        let recovered = paystream::store::payments::reconcile_from_events(&*tx, &unrecorded).await?;
        tracing::warn!(recovered, "payments recorded from their events (intake did not commit after publishing)");
    }
    // At once: the statements go out pipelined on the connection, and
    // the holds beside them. Their order on the wire is whichever is
    // ready first, so only the verifications, whose rows reference the
    // ledger's, wait for it. Hold before commit, fill after: a failure
    // in between leaves a cache miss (read from PostgreSQL) once the
    // hold lapses, never a stale location. The ledger's INSERT fails as
    // a whole (retryable) if another invocation decided one of these
    // meanwhile; the retried batch then skips it.
    let ledger_then_verifications = async {
        let inserted = ledger::insert_many(&tx, &rows).await?;
        assert_eq!(inserted as usize, rows.len(), "a plain INSERT writes every row or fails");
        verifications::insert_many(&tx, &pending).await
    };
    tokio::try_join!(
        holders::hold(&p.redis, &moved_users),
        ledger_then_verifications,
        holders::save_locations(&tx, &moved),
        sms::enqueue(&tx, &messages),
    )?;
    tx.commit().await?;
    let decided_at = time::OffsetDateTime::now_utc();
    paystream::crash_point!("fds.after_commit");
    if let Err(e) = holders::cache(&p.redis, &moved).await {
        tracing::warn!(error = %e, "location cache not filled; next read goes to PostgreSQL");
    }

    let count = |s: LedgerStatus| rows.iter().filter(|r| r.status == s).count() as f64;
    metrics::emit(
        p.function,
        &[
            ("FdsCompleted", count(LedgerStatus::Completed), Unit::Count),
            ("FdsPending", count(LedgerStatus::Pending), Unit::Count),
            ("FdsDenied", count(LedgerStatus::Denied), Unit::Count),
            ("VerificationSmsQueued", messages.len() as f64, Unit::Count),
        ],
    );
    metrics::latencies_ms(metrics::FDS_DECISION_LATENCY, rows.iter().map(|r| metrics::lag_ms(r.occurred_at, decided_at)));
    outcome.applied = rows.len();
    Ok(outcome)
}

fn sms_body(p: &Platform, event: &PaymentEvent, token: &str) -> String {
    format!(
        "paystream: a payment of {} in {} needs your approval. Approve or deny: {}",
        paystream::domain::money::format_minor(event.amount, &event.currency),
        event.country,
        verification::link(&p.config.public_base_url, token)
    )
}
