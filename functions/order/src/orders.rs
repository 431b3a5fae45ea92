//! `POST /orders` and `GET /orders/{id}`.

use std::time::{Duration, Instant};

use lambda_http::http::StatusCode;
use time::OffsetDateTime;
use uuid::Uuid;

use paystream::domain::{Role, UserId};
use paystream::events::{OrderEvent, EVENT_VERSION};
use paystream::flash::{self, Held, Reservation};
use paystream::http::{json, parse_json, Request, Response};
use paystream::idempotency::{self, Claim};
use paystream::metrics::{self, Unit};
use paystream::store::orders;
use paystream::{AppError, ErrorCode, Platform};

use crate::products::load_gate;
use crate::recorder::{Recorded, Unrecorded};
use crate::OrderApi;

/// A missing gate is rebuilt once per request; a second miss is an outage.
const GATE_ATTEMPTS_MAX: usize = 2;

/// The body, with its schema (`openapi.json`), is in the shared crate.
use paystream::api::responses::OrderAccepted;
use paystream::api::CreateOrderRequest as CreateOrder;

pub async fn create(api: &OrderApi, req: &Request) -> Result<Response, AppError> {
    let p = &api.platform;
    let caller = p.tokens.authenticate(req.headers())?;
    caller.require_role(&[Role::User])?;
    let key = idempotency::key_from(req)?;
    let body: CreateOrder = parse_json(req, p.config.http.max_body_bytes)?;
    let now = OffsetDateTime::now_utc();

    let scope = format!("order:{}", caller.user_id);
    let order_id = paystream::domain::new_id();
    let answer = serde_json::to_value(OrderAccepted::new(order_id)).map_err(AppError::internal)?;
    let commit_deadline = Duration::from_millis(p.config.flash.commit_deadline_ms);
    // Past the deadline the reservation may soon be returned by the
    // reconciliation (RESERVATION_TTL_MS exceeds this deadline plus the
    // statement timeout): committing then could sell a unit twice.
    let too_late = |reserved_at: Instant| (reserved_at.elapsed() > commit_deadline).then(too_late_error);
    let event_for = |product: &paystream::store::products::Product| OrderEvent {
        v: EVENT_VERSION,
        order_id,
        user_id: caller.user_id.0,
        product_id: product.id,
        amount: product.price,
        currency: product.currency.clone(),
        ordered_at: now,
    };
    let (event, held) = match &key {
        // With a key, the key is claimed first, in the transaction that
        // records the order: a replay must not touch the gate (which would
        // now say ALREADY_PURCHASED), and a racing twin waits on the key.
        Some(key) => {
            let request_hash = idempotency::request_hash("POST /orders", &serde_json::to_value(&body).map_err(AppError::internal)?);
            let mut db = p.pg.get().await?;
            let tx = db.transaction().await?;
            if let Claim::Replay { status, body } = idempotency::claim(&*tx, &scope, key, &request_hash, p.config.http.idempotency_wait_ms).await? {
                return Ok(json(StatusCode::from_u16(status).map_err(AppError::internal)?, &body));
            }
            let product = api.product(body.product_id).await?;
            let (held, reserved_at) = reserve(p, &product, caller.user_id, now).await?;
            // Dying here leaves a reservation without an order: a retry
            // adopts it, or the relay schedule returns it after
            // RESERVATION_TTL_MS.
            paystream::crash_point!("order.after_reserve");
            let event = event_for(&product);
            let prepared = async {
                if orders::insert_with_outbox(&tx, &[&event]).await?.is_empty() {
                    return Err(already_purchased());
                }
                idempotency::complete(&*tx, &scope, key, StatusCode::ACCEPTED.as_u16(), &answer).await?;
                paystream::crash_point!("order.before_commit");
                too_late(reserved_at).map_or(Ok(()), Err)
            }
            .await;
            if let Err(e) = prepared {
                return Err(give_back(p, &held, e).await);
            }
            if let Err(e) = tx.commit().await {
                // The commit may have happened (a connection lost during
                // COMMIT): the reservation stays recorded, and reconciliation
                // returns it after RESERVATION_TTL_MS only if PostgreSQL has
                // no order.
                tracing::warn!(error = %e, product_id = %product.id, "commit failed; the reservation is left to reconciliation");
                return Err(e.into());
            }
            (event, held)
        }
        // Without one, a refused order never touches PostgreSQL, and an
        // accepted one is one row of a statement shared with the other
        // invocations in flight (order and outbox row, one commit).
        None => {
            let product = api.product(body.product_id).await?;
            let (held, reserved_at) = reserve(p, &product, caller.user_id, now).await?;
            paystream::crash_point!("order.after_reserve");
            let event = event_for(&product);
            paystream::crash_point!("order.before_commit");
            let pending = match api.recorder.submit(Unrecorded { event: event.clone(), commit_by: reserved_at + commit_deadline }) {
                Ok(pending) => pending,
                Err(e) => return Err(give_back(p, &held, e).await),
            };
            match pending.await {
                Ok(Recorded::Yes) => {}
                Ok(Recorded::AlreadyPurchased) => return Err(give_back(p, &held, already_purchased()).await),
                Ok(Recorded::TooLate) => return Err(give_back(p, &held, too_late_error()).await),
                Ok(Recorded::NotSent(e)) => return Err(give_back(p, &held, e).await),
                // The connection was lost while the statement ran, so it may
                // have committed: as for a failed COMMIT, the reservation
                // stays recorded, and reconciliation returns it only if
                // PostgreSQL has no order.
                Ok(Recorded::Failed(e)) if e.code == ErrorCode::DependencyUnavailable => {
                    tracing::warn!(error = %e, product_id = %product.id, "order statement failed; the reservation is left to reconciliation");
                    return Err(e);
                }
                Ok(Recorded::Failed(e)) => return Err(give_back(p, &held, e).await),
                // The batch's task died: whether it committed is unknown.
                Err(_) => {
                    tracing::error!(product_id = %product.id, "order batch ended without an answer; the reservation is left to reconciliation");
                    return Err(AppError::new(ErrorCode::DependencyUnavailable, "the order's outcome is unknown; retry"));
                }
            }
            (event, held)
        }
    };
    let product_id = event.product_id;

    // Dying here leaves the reservation recorded (reconciliation finds the
    // order and forgets it) and the event in the outbox (the relay sends it).
    paystream::crash_point!("order.before_publish");
    let (order_id, adopted) = (event.order_id, held.adopted);
    api.publisher.publish(event, held).await;
    tracing::info!(order_id = %order_id, product_id = %product_id, adopted, "order accepted");
    metrics::emit(p.function, &[("OrdersAccepted", 1.0, Unit::Count)]);
    Ok(json(StatusCode::ACCEPTED, &answer))
}

fn too_late_error() -> AppError {
    AppError::new(ErrorCode::DependencyUnavailable, "the order could not be recorded in time; nothing was ordered; retry")
}

fn already_purchased() -> AppError {
    AppError::new(ErrorCode::AlreadyPurchased, "you already ordered this product")
}

/// One unit for `user` through the gate, rebuilding the gate once if Redis
/// lost it (or part of it). Returns the reservation and when the successful
/// attempt started (the commit deadline counts from there).
async fn reserve(p: &Platform, product: &paystream::store::products::Product, user: UserId, now: OffsetDateTime) -> Result<(Held, Instant), AppError> {
    for attempt in 1..=GATE_ATTEMPTS_MAX {
        let started = Instant::now();
        match flash::reserve(&p.redis, product.id, user.0, now).await {
            Ok(Reservation::Reserved(held)) => return Ok((held, started)),
            Ok(Reservation::NotLoaded) if attempt < GATE_ATTEMPTS_MAX => load_gate(p, product).await?,
            Ok(Reservation::NotLoaded) => break,
            Err(e) => {
                if e.code == ErrorCode::SoldOut {
                    metrics::emit(p.function, &[("OrdersSoldOut", 1.0, Unit::Count)]);
                }
                return Err(e);
            }
        }
    }
    // The gate's keys expire KEYS_AFTER_END_MS after the sale: a sale over
    // for longer has no gate to load, and the answer is that it ended.
    if now >= product.end_time {
        return Err(AppError::new(ErrorCode::SaleEnded, "the sale has ended"));
    }
    Err(AppError::new(ErrorCode::DependencyUnavailable, "sale gate unavailable; retry"))
}

/// What a request that reserved a unit but recorded no order does with the
/// unit: a buyer PostgreSQL already has an order for keeps it (the gate had
/// lost track of that order: only the record goes); anyone else gives it
/// back now. Returns the request's error.
async fn give_back(p: &Platform, held: &Held, e: AppError) -> AppError {
    if e.code == ErrorCode::AlreadyPurchased {
        forget_quietly(p, held).await;
    } else {
        release_quietly(p, held).await;
    }
    e
}

/// Returns a reservation whose order could not be recorded. If that fails
/// too, the relay schedule's reconciliation returns it later.
async fn release_quietly(p: &Platform, held: &Held) {
    if let Err(e) = flash::release(&p.redis, held).await {
        tracing::error!(error = %e, product_id = %held.product, "reservation not returned; reconciliation will return it");
    }
}

/// Drops the record of a reservation whose order is committed. If that
/// fails, reconciliation finds the order and drops it later.
async fn forget_quietly(p: &Platform, held: &Held) {
    if let Err(e) = flash::forget(&p.redis, held).await {
        tracing::warn!(error = %e, product_id = %held.product, "reservation record kept; reconciliation will drop it");
    }
}

pub async fn get(api: &OrderApi, req: &Request, raw_id: &str) -> Result<Response, AppError> {
    let p = &api.platform;
    let caller = p.tokens.authenticate(req.headers())?;
    let id = Uuid::parse_str(raw_id).map_err(|_| AppError::not_found("order"))?;
    match orders::view(&**p.pg.get().await?, id).await? {
        Some(view) if caller.may_see(UserId(view.user_id)) => Ok(json(StatusCode::OK, &view)),
        _ => Err(AppError::not_found("order")),
    }
}
