//! Event payloads on the topics. Version 1 of each; a consumer rejects (to
//! the DLQ) a version it does not know rather than guessing.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::merchant::{Coordinates, CountryCode, MerchantCategory};
use crate::domain::money::{Amount, Currency};

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
    // Every field a consumer stores is parsed as intake parses it, so a
    // record that decodes can never fail the batch's statement later (a
    // NUL byte, a four-letter currency: PostgreSQL would refuse the whole
    // batch on every retry, and the partition would stall behind it).
    Amount::parse(event.amount).map_err(|_| DecodeError::Field("amount"))?;
    Currency::parse(&event.currency).map_err(|_| DecodeError::Field("currency"))?;
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
    // As for orders: parsed as intake and the merchants' routes parse them.
    Amount::parse(event.amount).map_err(|_| DecodeError::Field("amount"))?;
    Coordinates::parse(event.lat, event.lon).map_err(|_| DecodeError::Field("lat/lon"))?;
    CountryCode::parse(&event.country).map_err(|_| DecodeError::Field("country"))?;
    Currency::parse(&event.currency).map_err(|_| DecodeError::Field("currency"))?;
    MerchantCategory::parse(&event.merchant_category).map_err(|_| DecodeError::Field("merchant_category"))?;
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

    /// What PostgreSQL would refuse (and so fail the whole batch on every
    /// retry) never decodes: it goes to the DLQ instead.
    #[test]
    fn fields_the_database_would_refuse_are_poison() {
        let spoil: [(&str, fn(&mut PaymentEvent)); 6] = [
            ("NUL in the currency", |e| e.currency = "KR\0".into()),
            ("an unknown currency", |e| e.currency = "XYZ".into()),
            ("NUL in the country", |e| e.country = "K\0".into()),
            ("a lowercase country", |e| e.country = "kr".into()),
            ("a two-byte single letter country", |e| e.country = "é".into()),
            ("NUL in the category", |e| e.merchant_category = "ca\0fe".into()),
        ];
        for (what, spoil) in spoil {
            let mut bad = sample();
            spoil(&mut bad);
            assert!(matches!(decode_payment(&serde_json::to_vec(&bad).unwrap()), Err(DecodeError::Field(_))), "{what}");
        }
        let order = OrderEvent {
            v: 1,
            order_id: Uuid::new_v4(),
            user_id: Uuid::new_v4(),
            product_id: Uuid::new_v4(),
            amount: 5_000,
            currency: "KRW".into(),
            ordered_at: time::macros::datetime!(2026-11-22 09:00 UTC),
        };
        assert!(decode_order(&serde_json::to_vec(&order).unwrap()).is_ok());
        let bad = OrderEvent { currency: "KR\0".into(), ..order.clone() };
        assert!(matches!(decode_order(&serde_json::to_vec(&bad).unwrap()), Err(DecodeError::Field("currency"))));
        let bad = OrderEvent { amount: i64::MAX, ..order };
        assert!(matches!(decode_order(&serde_json::to_vec(&bad).unwrap()), Err(DecodeError::Field("amount"))));
    }
}
