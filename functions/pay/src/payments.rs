//! Payment intake. A payment is answered 202 only once the broker has
//! acknowledged its event, and no database connection or transaction is
//! held while the broker answers, so the pool serves other requests then:
//!
//! 1. with an Idempotency-Key, the key is claimed first, and committed
//!    (`payments::write_intake`: one statement for the writes of all the
//!    invocations in flight, `paystream::batch`): a replay answers here, a
//!    twin waits for the first answer (`idempotency::await_claim`);
//! 2. the caller's card and the merchant's facts are read (one statement,
//!    or none when this environment has seen both: `IntakeMemo`);
//! 3. the event is published and acknowledged; if that fails, nothing was
//!    recorded (503) and the claim is abandoned: kept unanswered with its
//!    lease ended, because a publish that timed out may still have landed,
//!    so the retry must take the same claim over and publish the same
//!    payment id (a card or merchant not found releases the claim instead:
//!    nothing was published);
//! 4. the payment row and the key's answer are written in one statement
//!    (the same shared write statement: the claims of the requests
//!    starting and the records of those finishing commit together).
//!
//! The window after the acknowledgement and before step 4 (the statement
//! fails, the function dies or times out) leaves the event without its row
//! and answer. Two rules close it:
//! - with an Idempotency-Key the payment id is derived from the claim
//!   (user, key, request, and the time of the claim, which a takeover
//!   keeps), so the client's retry (which takes over the unanswered claim
//!   once its lease ran out) publishes the *same* payment again, and every
//!   consumer deduplicates it by id;
//! - the event is the record: FDS writes the payment row from the event
//!   when intake did not (`payments::reconcile_from_events`), so an
//!   acknowledged payment always ends with exactly one record and one
//!   ledger row.

use std::sync::Arc;

use lambda_http::http::StatusCode;
use time::OffsetDateTime;
use uuid::Uuid;

use paystream::api::responses::PaymentAccepted;
use paystream::api::CreatePaymentRequest;
use paystream::domain::{Amount, CardId, Currency, MerchantId, Role};
use paystream::events::{PaymentEvent, EVENT_VERSION, HEADER_EVENT_ID, HEADER_EVENT_TYPE};
use paystream::http::{json, parse_json, Request, Response};
use paystream::batch::{self, Step};
use paystream::idempotency::{self, Claim, NewClaim};
use paystream::kafka::OutgoingRecord;
use paystream::metrics::{self, Unit};
use paystream::store::payments::{self, Accepted, KeyAnswer};
use paystream::{AppError, Platform};

use crate::PayApi;

/// A claimed Idempotency-Key of this request.
struct Keyed<'a> {
    scope: &'a str,
    key: &'a str,
    hash: &'a [u8],
}

pub async fn create(api: &PayApi, req: &Request) -> Result<Response, AppError> {
    let p = &api.platform;
    let started = std::time::Instant::now();
    let caller = p.tokens.authenticate(req.headers())?;
    caller.require_role(&[Role::User])?;
    let key = idempotency::key_from(req)?;
    let body: CreatePaymentRequest = parse_json(req, p.config.http.max_body_bytes)?;
    let amount = Amount::parse(body.amount)?;
    let currency = Currency::parse(&body.currency)?;
    let request_hash = idempotency::request_hash("POST /payments", &serde_json::to_value(&body).map_err(AppError::internal)?);
    let scope = format!("pay:{}", caller.user_id);
    let keyed = key.as_deref().map(|key| Keyed { scope: &scope, key, hash: &request_hash });

    let keyed_id = if let Some(k) = &keyed {
        let http = &p.config.http;
        let claim = NewClaim { scope: k.scope.to_owned(), key: k.key.to_owned(), hash: k.hash.to_vec() };
        let claimed = if let Some(claimed_at) = api.writes.run(IntakeWrite::Claim(claim)).await?? {
            Claim::New { claimed_at }
        } else {
            idempotency::await_claim(&p.pg, k.scope, k.key, k.hash, http.idempotency_lease_ms, http.idempotency_wait_ms).await?
        };
        let claimed_at = match claimed {
            Claim::Replay { status, body } => {
                tracing::info!(user_id = %caller.user_id, "idempotent replay");
                return Ok(json(StatusCode::from_u16(status).map_err(AppError::internal)?, &body));
            }
            Claim::New { claimed_at } => claimed_at,
        };
        paystream::crash_point!("pay.after_claim");
        Some(idempotency::derived_id(k.scope, k.key, k.hash, claimed_at))
    } else {
        None
    };
    let payment_id = keyed_id.unwrap_or_else(paystream::domain::new_id);
    let payment = payments::NewPayment {
        id: payment_id,
        user_id: caller.user_id.0,
        card_id: body.card_id,
        merchant_id: body.merchant_id,
        amount: amount.minor(),
        currency: currency.code(),
    };
    let facts = match api.facts.facts(&p.pg, paystream::domain::UserId(payment.user_id), CardId(payment.card_id), MerchantId(payment.merchant_id)).await {
        Ok(facts) => facts,
        Err(e) => {
            // Nothing was published: the key is free for any request again.
            if let Some(k) = &keyed {
                end_claim_quietly(p, k, Ending::Release).await;
            }
            return Err(e);
        }
    };
    if let Err(e) = publish(api, &payment, facts).await {
        // Nothing was recorded, but the event may have landed (a timeout):
        // the retry with the key takes this claim over, same payment id.
        if let Some(k) = &keyed {
            end_claim_quietly(p, k, Ending::Abandon).await;
        }
        return Err(e);
    }
    // A crash here is the "after the acknowledgement, before the record"
    // window the module comment describes.
    paystream::crash_point!("pay.after_publish");
    let answer = serde_json::to_value(PaymentAccepted::new(payment_id)).map_err(AppError::internal)?;
    let key = keyed.as_ref().map(|k| KeyAnswer { scope: k.scope.to_owned(), key: k.key.to_owned(), status: StatusCode::ACCEPTED.as_u16(), body: answer.clone() });
    let recorded = api.writes.run(IntakeWrite::Record(Accepted { payment, key })).await.and_then(|r| r);
    if let Err(e) = recorded {
        // The broker has acknowledged: the payment exists (FDS records it
        // from its event), so the honest answer is still 202. Failing here
        // would make a client without a key pay twice. Only the key's
        // answer is lost; a retry with the key derives the same payment id.
        tracing::warn!(payment_id = %payment_id, error = %e, "recording the payment failed after the broker acknowledged; the event is the record");
    }
    paystream::crash_point!("pay.after_commit");
    tracing::info!(payment_id = %payment_id, user_id = %caller.user_id, "payment accepted");
    metrics::emit(p.function, &[("PaymentsAccepted", 1.0, Unit::Count), (metrics::INTAKE_LATENCY, metrics::elapsed_ms(started), Unit::Milliseconds)]);
    Ok(json(StatusCode::ACCEPTED, &answer))
}

/// Publishes the payment's event with the card's and the merchant's facts
/// (read before: no connection is held while the broker answers),
/// returning once the broker acknowledged it.
async fn publish(api: &PayApi, payment: &payments::NewPayment, facts: payments::IntakeFacts) -> Result<(), AppError> {
    let p = &api.platform;
    let event = PaymentEvent {
        v: EVENT_VERSION,
        payment_id: payment.id,
        user_id: payment.user_id,
        card_id: payment.card_id,
        card_product_id: facts.card_product_id,
        merchant_id: payment.merchant_id,
        merchant_category: facts.merchant.category,
        amount: payment.amount,
        currency: payment.currency.to_owned(),
        country: facts.merchant.country,
        lat: facts.merchant.lat,
        lon: facts.merchant.lon,
        occurred_at: OffsetDateTime::now_utc(),
    };
    let payload = serde_json::to_vec(&event).map_err(AppError::internal)?;
    let user_key = payment.user_id.to_string();
    let event_id = payment.id.to_string();
    p.producer()
        .await?
        .publish(OutgoingRecord {
            topic: &p.config.kafka.payment_topic,
            key: user_key.as_bytes(),
            payload: &payload,
            headers: &[(HEADER_EVENT_TYPE, PaymentEvent::TYPE.as_bytes()), (HEADER_EVENT_ID, event_id.as_bytes())],
        })
        .await?;
    Ok(())
}

/// One of the two writes of a payment request, done in the environment's
/// shared write statement (`payments::write_intake`).
pub enum IntakeWrite {
    /// Step 1: claim the request's Idempotency-Key.
    Claim(NewClaim),
    /// Step 4: record the acknowledged payment and its key's answer.
    Record(Accepted),
}

/// Claims the keys of the invocations starting and records the payments
/// of those finishing, all in one statement: one round trip and one commit
/// for both kinds of row.
pub struct WriteIntake {
    pub platform: Arc<Platform>,
}

impl Step for WriteIntake {
    type Row = IntakeWrite;
    /// For a claim, when the key was claimed if it was new (a record's is
    /// `None`); or the statement's error.
    type Answer = Result<Option<time::OffsetDateTime>, AppError>;

    async fn run(&self, writes: Vec<IntakeWrite>) -> Vec<Self::Answer> {
        let p = &self.platform;
        let rows = writes.len();
        let mut claims = Vec::with_capacity(rows);
        let mut accepted = Vec::with_capacity(rows);
        // Where each row's answer is: its index among the claims, or none.
        let mut claim_at = Vec::with_capacity(rows);
        for write in writes {
            match write {
                IntakeWrite::Claim(claim) => {
                    claim_at.push(Some(claims.len()));
                    claims.push(claim);
                }
                IntakeWrite::Record(record) => {
                    claim_at.push(None);
                    accepted.push(record);
                }
            }
        }
        let written = async { payments::write_intake(&p.pg.get().await?, &claims, &accepted, p.config.http.idempotency_lease_ms).await }.await;
        match written {
            Ok(claimed) => {
                assert_eq!(claimed.len(), claims.len(), "one outcome per claim");
                claim_at.into_iter().map(|at| Ok(at.and_then(|i| claimed[i]))).collect()
            }
            // Claims: if it committed after all, their leases run out and
            // the clients' retries take them over. Records: the events are
            // the record (FDS writes the rows).
            Err(e) => batch::each_failed(rows, "writing claims and accepted payments", e),
        }
    }
}

/// How a failed request gives its claim back.
enum Ending {
    /// Nothing happened: the claim is removed (`idempotency::release`).
    Release,
    /// The side effect may have happened: the lease ends now
    /// (`idempotency::abandon`).
    Abandon,
}

/// Gives back the claim of a failed request. If that fails too, the
/// claim's lease runs out and the client's retry takes it over.
async fn end_claim_quietly(p: &Platform, k: &Keyed<'_>, ending: Ending) {
    let ended = async {
        let db = p.pg.get().await?;
        match ending {
            Ending::Release => idempotency::release(&db, k.scope, k.key, k.hash).await,
            Ending::Abandon => idempotency::abandon(&db, k.scope, k.key, k.hash).await,
        }
    }
    .await;
    if let Err(e) = ended {
        tracing::warn!(error = %e, "idempotency claim not given back; a retry takes it over once its lease runs out");
    }
}

pub async fn get(p: &Platform, req: &Request, raw_id: &str) -> Result<Response, AppError> {
    let caller = p.tokens.authenticate(req.headers())?;
    let id = Uuid::parse_str(raw_id).map_err(|_| AppError::not_found("payment"))?;
    let view = payments::view(&**p.pg.get().await?, id).await?;
    match view {
        Some(view) if caller.may_see(paystream::domain::UserId(view.user_id)) => Ok(json(StatusCode::OK, &view)),
        _ => Err(AppError::not_found("payment")),
    }
}
