//! Payment intake. The intake row, the idempotency key and the broker's
//! acknowledgement form one unit: the database transaction stays open while
//! the event is published and commits only after the broker acknowledged,
//! so a failed publish leaves no trace and a racing duplicate request
//! (same Idempotency-Key) waits on the key, then replays the first answer.
//!
//! The one window left is after the acknowledgement and before the commit
//! (the commit fails, the function dies or times out): the event exists
//! without its row and key. Two rules close it:
//! - with an Idempotency-Key the payment id is derived from (user, key,
//!   request), so the client's retry publishes the *same* payment again and
//!   every consumer deduplicates it by id;
//! - the event is the record: FDS writes the payment row from the event
//!   when intake did not (`payments::reconcile_from_events`), so an
//!   acknowledged payment always ends with exactly one record and one
//!   ledger row.

use lambda_http::http::StatusCode;
use time::OffsetDateTime;
use uuid::Uuid;

use paystream::api::responses::PaymentAccepted;
use paystream::api::CreatePaymentRequest;
use paystream::domain::{Amount, CardId, Currency, MerchantId, Role};
use paystream::events::{PaymentEvent, EVENT_VERSION, HEADER_EVENT_ID, HEADER_EVENT_TYPE};
use paystream::http::{json, parse_json, Request, Response};
use paystream::idempotency::{self, Claim};
use paystream::kafka::OutgoingRecord;
use paystream::metrics::{self, Unit};
use paystream::store::payments;
use paystream::{AppError, Platform};


pub async fn create(p: &Platform, req: &Request) -> Result<Response, AppError> {
    let started = std::time::Instant::now();
    let caller = p.tokens.authenticate(req.headers())?;
    caller.require_role(&[Role::User])?;
    let key = idempotency::key_from(req)?;
    let body: CreatePaymentRequest = parse_json(req, p.config.http.max_body_bytes)?;
    let amount = Amount::parse(body.amount)?;
    let currency = Currency::parse(&body.currency)?;
    let request_hash = idempotency::request_hash("POST /payments", &serde_json::to_value(&body).map_err(AppError::internal)?);
    let scope = format!("pay:{}", caller.user_id);

    let mut db = p.pg.get().await?;
    let tx = paystream::db::begin(&mut db).await?;
    if let Some(key) = &key {
        if let Claim::Replay { status, body } = idempotency::claim(&tx, &scope, key, &request_hash, p.config.http.idempotency_wait_ms).await? {
            tracing::info!(user_id = %caller.user_id, "idempotent replay");
            return Ok(json(StatusCode::from_u16(status).map_err(AppError::internal)?, &body));
        }
        paystream::crash_point!("pay.after_claim");
    }
    let facts = payments::intake_facts(&tx, caller.user_id, CardId(body.card_id), MerchantId(body.merchant_id)).await?;
    let payment_id = match &key {
        Some(key) => idempotency::derived_id(&scope, key, &request_hash),
        None => Uuid::new_v4(),
    };
    payments::insert(
        &tx,
        &payments::NewPayment {
            id: payment_id,
            user_id: caller.user_id.0,
            card_id: body.card_id,
            merchant_id: body.merchant_id,
            amount: amount.minor(),
            currency: currency.code(),
        },
    )
    .await?;
    let answer = serde_json::to_value(PaymentAccepted::new(payment_id)).map_err(AppError::internal)?;
    if let Some(key) = &key {
        idempotency::complete(&tx, &scope, key, StatusCode::ACCEPTED.as_u16(), &answer).await?;
    }

    let event = PaymentEvent {
        v: EVENT_VERSION,
        payment_id,
        user_id: caller.user_id.0,
        card_id: body.card_id,
        card_product_id: facts.card_product_id,
        merchant_id: body.merchant_id,
        merchant_category: facts.merchant_category,
        amount: amount.minor(),
        currency: currency.code().to_owned(),
        country: facts.country,
        lat: facts.lat,
        lon: facts.lon,
        occurred_at: OffsetDateTime::now_utc(),
    };
    let payload = serde_json::to_vec(&event).map_err(AppError::internal)?;
    let user_key = caller.user_id.to_string();
    let event_id = payment_id.to_string();
    // On failure the transaction is dropped (rolled back): nothing recorded.
    p.producer()
        .await?
        .publish(OutgoingRecord {
            topic: &p.config.kafka.payment_topic,
            key: user_key.as_bytes(),
            payload: &payload,
            headers: &[(HEADER_EVENT_TYPE, PaymentEvent::TYPE.as_bytes()), (HEADER_EVENT_ID, event_id.as_bytes())],
        })
        .await?;
    // The commit comes right after the acknowledgement: a crash here is the
    // "after publish, before commit" window the module comment describes.
    paystream::crash_point!("pay.after_publish");
    if let Err(e) = tx.commit().await {
        // The broker has acknowledged: the payment exists (FDS records it
        // from its event), so the honest answer is still 202. Failing here
        // would make a client without a key pay twice. Only the key row is
        // lost; a retry with the key derives the same payment id.
        tracing::warn!(payment_id = %payment_id, error = %e, "intake commit failed after the broker acknowledged; the event is the record");
    }
    paystream::crash_point!("pay.after_commit");
    tracing::info!(payment_id = %payment_id, user_id = %caller.user_id, "payment accepted");
    metrics::emit(p.function, &[("PaymentsAccepted", 1.0, Unit::Count), (metrics::INTAKE_LATENCY, metrics::elapsed_ms(started), Unit::Milliseconds)]);
    Ok(json(StatusCode::ACCEPTED, &answer))
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
