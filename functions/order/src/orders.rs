//! `POST /orders` and `GET /orders/{id}`.

use std::time::Duration;

use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use paystream::domain::{Role, UserId};
use paystream::events::{OrderEvent, EVENT_VERSION, HEADER_EVENT_ID, HEADER_EVENT_TYPE};
use paystream::flash::{self, Reservation};
use paystream::http::{json, parse_json, Request, Response};
use paystream::idempotency::{self, Claim};
use paystream::kafka::OutgoingRecord;
use paystream::metrics::{self, Unit};
use paystream::store::orders;
use paystream::{AppError, ErrorCode, Platform};

use crate::products::load_gate;
use crate::OrderApi;

/// How long an order waits for the broker before leaving its event to the
/// relay. Short: the order is already durable, the answer need not wait.
const INLINE_PUBLISH_BOUND: Duration = Duration::from_millis(250);
/// A missing gate is rebuilt once per request; a second miss is an outage.
const GATE_ATTEMPTS_MAX: usize = 2;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOrder {
    product_id: Uuid,
}

pub async fn create(api: &OrderApi, req: &Request) -> Result<Response, AppError> {
    let p = &api.platform;
    let caller = p.tokens.authenticate(req.headers())?;
    caller.require_role(&[Role::User])?;
    let key = idempotency::key_from(req)?;
    let body: CreateOrder = parse_json(req, p.config.http.max_body_bytes)?;
    let now = OffsetDateTime::now_utc();

    let mut db;
    let tx;
    let scope = format!("order:{}", caller.user_id);
    let product = match &key {
        // With a key, the key is claimed first: a replay must not touch the
        // gate (which would now say ALREADY_PURCHASED), and a racing twin
        // waits on the key.
        Some(key) => {
            let request_hash = idempotency::request_hash("POST /orders", &serde_json::to_value(&body).map_err(AppError::internal)?);
            db = p.pg.get().await?;
            tx = paystream::db::begin(&mut db).await?;
            if let Claim::Replay { status, body } = idempotency::claim(&tx, &scope, key, &request_hash).await? {
                return Ok(json(StatusCode::from_u16(status).map_err(AppError::internal)?, &body));
            }
            let product = api.product(body.product_id).await?;
            reserve(p, &product, caller.user_id, now).await?;
            product
        }
        // Without one, a refused order never touches PostgreSQL.
        None => {
            let product = api.product(body.product_id).await?;
            reserve(p, &product, caller.user_id, now).await?;
            db = match p.pg.get().await {
                Ok(db) => db,
                Err(e) => {
                    release_quietly(p, product.id, caller.user_id).await;
                    return Err(e.into());
                }
            };
            tx = match paystream::db::begin(&mut db).await {
                Ok(tx) => tx,
                Err(e) => {
                    release_quietly(p, product.id, caller.user_id).await;
                    return Err(e.into());
                }
            };
            product
        }
    };

    // Reserved: make it durable, or give the reservation back.
    let event = OrderEvent {
        v: EVENT_VERSION,
        order_id: Uuid::new_v4(),
        user_id: caller.user_id.0,
        product_id: product.id,
        amount: product.price,
        currency: product.currency.clone(),
        ordered_at: now,
    };
    let answer = serde_json::json!({"order_id": event.order_id, "status": "PENDING"});
    let durable = async {
        orders::insert_with_outbox(&tx, &event).await?;
        if let Some(key) = &key {
            idempotency::complete(&tx, &scope, key, StatusCode::ACCEPTED.as_u16(), &answer).await?;
        }
        tx.commit().await?;
        Ok::<_, AppError>(())
    }
    .await;
    if let Err(e) = durable {
        release_quietly(p, product.id, caller.user_id).await;
        return Err(e);
    }
    drop(db);

    publish_now(p, &event).await;
    tracing::info!(order_id = %event.order_id, product_id = %product.id, "order accepted");
    metrics::emit(p.function, &[("OrdersAccepted", 1.0, Unit::Count)]);
    Ok(json(StatusCode::ACCEPTED, &answer))
}

/// One unit for `user` through the gate, rebuilding the gate once if Redis lost it.
async fn reserve(p: &Platform, product: &paystream::store::products::Product, user: UserId, now: OffsetDateTime) -> Result<(), AppError> {
    for attempt in 1..=GATE_ATTEMPTS_MAX {
        match flash::reserve(&p.redis, product.id, user.0, now).await {
            Ok(Reservation::Reserved) => return Ok(()),
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
    Err(AppError::new(ErrorCode::DependencyUnavailable, "sale gate unavailable; retry"))
}

/// Returns a reservation whose order could not be recorded. If even that
/// fails, settlement corrects the gate later.
async fn release_quietly(p: &Platform, product: Uuid, user: UserId) {
    if let Err(e) = flash::release(&p.redis, product, user.0).await {
        tracing::error!(error = %e, product_id = %product, "reservation not returned; settlement will correct the gate");
    }
}

/// Publishes an accepted order's event if the broker answers quickly; the
/// relay publishes it otherwise (the outbox row stays unpublished).
async fn publish_now(p: &Platform, event: &OrderEvent) {
    let payload = match serde_json::to_vec(event) {
        Ok(payload) => payload,
        Err(e) => return tracing::error!(error = %e, "order event not serialisable; left to the relay"),
    };
    let id = event.order_id.to_string();
    let published = async {
        let producer = p.producer().await?;
        let record = OutgoingRecord {
            topic: &p.config.kafka.order_topic,
            key: id.as_bytes(),
            payload: &payload,
            headers: &[(HEADER_EVENT_TYPE, OrderEvent::TYPE.as_bytes()), (HEADER_EVENT_ID, id.as_bytes())],
        };
        match tokio::time::timeout(INLINE_PUBLISH_BOUND, producer.publish(record)).await {
            Ok(result) => result.map_err(AppError::from),
            Err(_) => Err(AppError::new(ErrorCode::BrokerUnavailable, "broker slow; left to the relay")),
        }?;
        orders::mark_published(&**p.pg.get().await?, &[event.order_id]).await
    }
    .await;
    if let Err(e) = published {
        tracing::warn!(order_id = %event.order_id, error = %e, "order event left in the outbox for the relay");
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
