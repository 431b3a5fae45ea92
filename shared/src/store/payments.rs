//! Payment intake records (`pay`) and the facts copied into each event.

use std::time::Duration;

use serde::Serialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db::PgPool;
use crate::domain::{CardId, MerchantId, UserId};
use crate::error::AppError;
use crate::idempotency::{ClaimRows, NewClaim};
use crate::memo::Memo;

/// The card's product and the merchant's facts, for the payment event.
pub struct IntakeFacts {
    pub card_product_id: Uuid,
    pub merchant: MerchantFacts,
}

/// What every payment event at a merchant copies in.
#[derive(Clone, Debug, PartialEq)]
pub struct MerchantFacts {
    pub category: String,
    pub country: String,
    pub lat: f64,
    pub lon: f64,
}

/// Looks up the caller's card and the merchant in one round trip (a
/// statement prepared once per connection). Someone else's card is "not
/// found", like a missing one.
pub async fn intake_facts(db: &impl deadpool_postgres::GenericClient, user: UserId, card: CardId, merchant: MerchantId) -> Result<IntakeFacts, AppError> {
    let statement = db
        .prepare_cached(
            "SELECT c.card_product_id, m.category, m.country, m.lat, m.lon
             FROM (SELECT 1) one
             LEFT JOIN cards c ON c.id = $1 AND c.user_id = $2
             LEFT JOIN merchants m ON m.id = $3",
        )
        .await?;
    let row = db.query_one(&statement, &[&card.0, &user.0, &merchant.0]).await?;
    let card_product_id: Option<Uuid> = row.get(0);
    let category: Option<String> = row.get(1);
    let card_product_id = card_product_id.ok_or_else(|| AppError::not_found("card"))?;
    let category = category.ok_or_else(|| AppError::not_found("merchant"))?;
    Ok(IntakeFacts { card_product_id, merchant: MerchantFacts { category, country: row.get(2), lat: row.get(3), lon: row.get(4) } })
}

/// [`intake_facts`] through one execution environment's memory. A card's
/// owner and product and a merchant's facts are written once and never
/// changed (no route updates or deletes either), so once read they are
/// kept (bounded, for at most the TTL; `crate::memo`). The card is kept
/// under (card, owner): another user's payment with it is a miss, goes to
/// PostgreSQL and is "not found" there, so the ownership check is never
/// skipped. Nothing that was not found is kept.
pub struct IntakeMemo {
    cards: Memo<(CardId, UserId), Uuid>,
    merchants: Memo<MerchantId, MerchantFacts>,
}

impl IntakeMemo {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self { cards: Memo::new(capacity, ttl), merchants: Memo::new(capacity, ttl) }
    }

    /// The facts, from memory when both are known, else from PostgreSQL
    /// (one statement, and both remembered).
    pub async fn facts(&self, pg: &PgPool, user: UserId, card: CardId, merchant: MerchantId) -> Result<IntakeFacts, AppError> {
        if let (Some(card_product_id), Some(merchant)) = (self.cards.get(&(card, user)), self.merchants.get(&merchant)) {
            return Ok(IntakeFacts { card_product_id, merchant });
        }
        let facts = intake_facts(&pg.get().await?, user, card, merchant).await?;
        self.cards.insert((card, user), facts.card_product_id);
        self.merchants.insert(merchant, facts.merchant.clone());
        Ok(facts)
    }
}

pub struct NewPayment {
    pub id: Uuid,
    pub user_id: Uuid,
    pub card_id: Uuid,
    pub merchant_id: Uuid,
    pub amount: i64,
    pub currency: &'static str,
}

/// The answer stored for an Idempotency-Key (see `idempotency::complete`).
pub struct KeyAnswer {
    pub scope: String,
    pub key: String,
    pub status: u16,
    pub body: serde_json::Value,
}

/// A broker-acknowledged payment to record, with its key's answer if keyed.
pub struct Accepted {
    pub payment: NewPayment,
    pub key: Option<KeyAnswer>,
}

/// `pay`'s one write statement: the new Idempotency-Key claims of the
/// requests starting (`idempotency::CLAIM_NEW_SQL`, `$1`-`$4`) and the
/// accepted (broker-acknowledged) payments of the requests finishing,
/// with their keys' answers (`$5`-`$14`). One statement: one round trip
/// and one commit for both kinds of row. A request's claim and its record
/// are never in the same statement (it records only after its claim
/// committed), so the claims' INSERT and the answers' UPDATE never touch
/// the same key.
static WRITE_INTAKE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH claimed AS ({claim}),
         recorded AS (
             INSERT INTO payments (id, user_id, card_id, merchant_id, amount, currency)
             SELECT * FROM unnest($5::uuid[], $6::uuid[], $7::uuid[], $8::uuid[], $9::bigint[], $10::text[])
             ON CONFLICT (id) DO NOTHING),
         answered AS (
             UPDATE idempotency_keys k SET status_code = a.status, response_body = a.body, lease_until = NULL
             FROM unnest($11::text[], $12::text[], $13::int2[], $14::jsonb[]) AS a(scope, key, status, body)
             WHERE k.scope = a.scope AND k.key = a.key)
         SELECT scope, key, created_at FROM claimed",
        claim = crate::idempotency::CLAIM_NEW_SQL
    )
});

/// Claims new keys (each leased for `lease_ms`; see
/// `idempotency::claim_new`) and records accepted payments and the answers
/// of their keys, in one statement (the concurrent requests of one
/// environment share it: `paystream::batch`). Returns, per claim, when it
/// was claimed if it was new. A payment is inserted with DO NOTHING: FDS
/// may already have recorded it from its event (a retry after a crash
/// between the acknowledgement and its record).
pub async fn write_intake(
    db: &impl deadpool_postgres::GenericClient,
    claims: &[NewClaim],
    accepted: &[Accepted],
    lease_ms: u64,
) -> Result<Vec<Option<time::OffsetDateTime>>, AppError> {
    assert!(lease_ms > 0, "a claim needs a lease");
    let statement = db.prepare_cached(&WRITE_INTAKE_SQL).await?;
    let claimed = ClaimRows::new(claims);
    // Rows in one order (by id, as FDS's reconcile_from_events inserts
    // them, and keys by scope and key), so two statements inserting some of
    // the same rows wait for each other at most one way, never in a cycle.
    let mut by_id: Vec<&Accepted> = accepted.iter().collect();
    by_id.sort_unstable_by_key(|a| a.payment.id);
    let payments = || by_id.iter().map(|a| &a.payment);
    let ids: Vec<Uuid> = payments().map(|p| p.id).collect();
    let users: Vec<Uuid> = payments().map(|p| p.user_id).collect();
    let cards: Vec<Uuid> = payments().map(|p| p.card_id).collect();
    let merchants: Vec<Uuid> = payments().map(|p| p.merchant_id).collect();
    let amounts: Vec<i64> = payments().map(|p| p.amount).collect();
    let currencies: Vec<&str> = payments().map(|p| p.currency).collect();
    let mut answers: Vec<&KeyAnswer> = accepted.iter().filter_map(|a| a.key.as_ref()).collect();
    answers.sort_unstable_by(|a, b| (&a.scope, &a.key).cmp(&(&b.scope, &b.key)));
    let keys = || answers.iter();
    let scopes: Vec<&str> = keys().map(|k| k.scope.as_str()).collect();
    let key_texts: Vec<&str> = keys().map(|k| k.key.as_str()).collect();
    let statuses: Vec<i16> = keys().map(|k| k.status as i16).collect();
    let bodies: Vec<&serde_json::Value> = keys().map(|k| &k.body).collect();
    let returned = db
        .query(
            &statement,
            &[
                &claimed.scopes,
                &claimed.keys,
                &claimed.hashes,
                &(lease_ms as f64),
                &ids,
                &users,
                &cards,
                &merchants,
                &amounts,
                &currencies,
                &scopes,
                &key_texts,
                &statuses,
                &bodies,
            ],
        )
        .await?;
    Ok(claimed.outcomes(&returned))
}

/// Records payments from their events where intake's row is missing (the
/// intake committed nothing after the broker acknowledged: a crash or a
/// failed commit). The event is the record of truth then; returns how many
/// rows were missing. One statement for the whole batch.
pub async fn reconcile_from_events(db: &impl GenericClient, events: &[&crate::events::PaymentEvent]) -> Result<u64, AppError> {
    if events.is_empty() {
        return Ok(0);
    }
    // By id, as intake's write_intake inserts them (no lock cycle).
    let mut events = events.to_vec();
    events.sort_unstable_by_key(|e| e.payment_id);
    let ids: Vec<Uuid> = events.iter().map(|e| e.payment_id).collect();
    let users: Vec<Uuid> = events.iter().map(|e| e.user_id).collect();
    let cards: Vec<Uuid> = events.iter().map(|e| e.card_id).collect();
    let merchants: Vec<Uuid> = events.iter().map(|e| e.merchant_id).collect();
    let amounts: Vec<i64> = events.iter().map(|e| e.amount).collect();
    let currencies: Vec<&str> = events.iter().map(|e| e.currency.as_str()).collect();
    let times: Vec<time::OffsetDateTime> = events.iter().map(|e| e.occurred_at).collect();
    let inserted = db
        .execute(
            // Only events whose card (of that user) and merchant exist: an
            // event naming rows that do not exist must not fail the batch
            // forever on a foreign key; FDS still decides it.
            "INSERT INTO payments (id, user_id, card_id, merchant_id, amount, currency, created_at)
             SELECT e.* FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[], $6::text[], $7::timestamptz[])
                  AS e(id, user_id, card_id, merchant_id, amount, currency, created_at)
             -- Intake recorded nearly every payment: skip those first, with
             -- one probe, before checking card and merchant.
             WHERE NOT EXISTS (SELECT 1 FROM payments p WHERE p.id = e.id)
               AND EXISTS (SELECT 1 FROM cards c WHERE c.id = e.card_id AND c.user_id = e.user_id)
               AND EXISTS (SELECT 1 FROM merchants m WHERE m.id = e.merchant_id)
               AND e.amount > 0
             ON CONFLICT (id) DO NOTHING",
            &[&ids, &users, &cards, &merchants, &amounts, &currencies, &times],
        )
        .await?;
    Ok(inserted)
}

/// A payment's status until fraud detection has decided.
pub const STATUS_RECEIVED: &str = "RECEIVED";

/// `GET /payments/{id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Payment)]
pub struct PaymentView {
    pub payment_id: Uuid,
    /// `RECEIVED` until FDS has decided, then the ledger's status.
    #[schema(schema_with = crate::api::responses::payment_status)]
    pub status: String,
    /// Integer amount in minor units of `currency`.
    pub amount: i64,
    #[schema(schema_with = crate::api::responses::currency)]
    pub currency: String,
    pub merchant_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::api::responses::payment_reason)]
    pub reason: Option<String>,
    #[serde(skip)]
    pub user_id: Uuid,
}

pub async fn view(db: &impl GenericClient, id: Uuid) -> Result<Option<PaymentView>, AppError> {
    let row = db
        .query_opt(
            "SELECT p.id, coalesce(t.status, $2), p.amount, p.currency, p.merchant_id, t.reason, p.user_id
             FROM payments p LEFT JOIN transactions t ON t.payment_id = p.id WHERE p.id = $1",
            &[&id, &STATUS_RECEIVED],
        )
        .await?;
    Ok(row.map(|r| PaymentView {
        payment_id: r.get(0),
        status: r.get(1),
        amount: r.get(2),
        currency: r.get(3),
        merchant_id: r.get(4),
        reason: r.get(5),
        user_id: r.get(6),
    }))
}
