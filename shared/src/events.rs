//! Event payloads on the topics. Version 1 of each; a consumer rejects (to
//! the DLQ) a version it does not know rather than guessing.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

pub const EVENT_VERSION: u8 = 1;

/// Header names every producer sets.
pub const HEADER_EVENT_TYPE: &str = "event-type";
pub const HEADER_EVENT_ID: &str = "event-id";

/// `payment-stream`, key = user id. Merchant facts are copied in at intake,
/// so consumers never look the merchant up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentEvent {
    pub v: u8,
    pub payment_id: Uuid,
    pub user_id: Uuid,
    pub card_id: Uuid,
    pub card_product_id: Uuid,
    pub merchant_id: Uuid,
    pub merchant_category: String,
    pub amount: i64,
    pub currency: String,
    pub country: String,
    pub lat: f64,
    pub lon: f64,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
}

impl PaymentEvent {
    pub const TYPE: &'static str = "payment.received";
}

/// `order-stream`, key = order id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderEvent {
    pub v: u8,
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub amount: i64,
    pub currency: String,
    #[serde(with = "time::serde::rfc3339")]
    pub ordered_at: OffsetDateTime,
}

impl OrderEvent {
    pub const TYPE: &'static str = "order.accepted";
}

/// Decodes and checks an order event; anything wrong is a poison record.
pub fn decode_order(bytes: &[u8]) -> Result<OrderEvent, DecodeError> {
    let event: OrderEvent = serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
    if event.v != EVENT_VERSION {
        return Err(DecodeError::Version(event.v));
    }
    if event.amount <= 0 {
        return Err(DecodeError::Field("amount"));
    }
    Ok(event)
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid JSON for this event: {0}")]
    Json(String),
    #[error("unsupported event version {0}")]
    Version(u8),
    #[error("invalid field: {0}")]
    Field(&'static str),
}

/// Decodes and checks a payment event; anything wrong is a poison record.
pub fn decode_payment(bytes: &[u8]) -> Result<PaymentEvent, DecodeError> {
    let event: PaymentEvent = serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
    if event.v != EVENT_VERSION {
        return Err(DecodeError::Version(event.v));
    }
    if event.amount <= 0 {
        return Err(DecodeError::Field("amount"));
    }
    if !(-90.0..=90.0).contains(&event.lat) || !(-180.0..=180.0).contains(&event.lon) {
        return Err(DecodeError::Field("lat/lon"));
    }
    if event.country.len() != 2 || event.currency.len() != 3 {
        return Err(DecodeError::Field("country/currency"));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PaymentEvent {
        PaymentEvent {
            v: 1,
            payment_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            card_id: Uuid::new_v4(),
            card_product_id: Uuid::new_v4(),
            merchant_id: Uuid::new_v4(),
            merchant_category: "cafe".into(),
            amount: 10_000,
            currency: "KRW".into(),
            country: "KR".into(),
            lat: 37.5,
            lon: 127.0,
            occurred_at: time::macros::datetime!(2026-11-22 09:00 UTC),
        }
    }

    #[test]
    fn round_trips_and_rejects_poison() {
        let event = sample();
        let bytes = serde_json::to_vec(&event).unwrap();
        assert_eq!(decode_payment(&bytes).unwrap(), event);
        assert!(String::from_utf8(bytes).unwrap().contains("\"occurred_at\":\"2026-11-22T09:00:00Z\""));
        assert!(matches!(decode_payment(b"not json"), Err(DecodeError::Json(_))));
        let mut v2 = sample();
        v2.v = 2;
        assert!(matches!(decode_payment(&serde_json::to_vec(&v2).unwrap()), Err(DecodeError::Version(2))));
        let mut bad = sample();
        bad.amount = 0;
        assert!(decode_payment(&serde_json::to_vec(&bad).unwrap()).is_err());
    }
}
