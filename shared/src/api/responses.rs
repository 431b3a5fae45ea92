//! The response bodies of the HTTP API: the types the functions serialise,
//! and (by `utoipa::ToSchema`) the schemas `openapi.json` publishes for them.
//!
//! The read models (`PaymentView`, `OrderView`, `Dashboard`, ...) live with
//! their queries under `store/` and derive their schema there; the small
//! answers of the creating routes are the types below. Every schema in the
//! document therefore comes from the type that produces the body: a field
//! added, renamed or made optional changes the document, and the drift test
//! (`openapi::tests::the_committed_openapi_json_matches_the_code`) makes the
//! committed `openapi.json` follow.
//!
//! Rules on response fields a type cannot state itself (a status's values, a
//! currency's shape) are the schema helpers at the end of this file, each
//! built from the constants the code writes.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{KnownFormat, Ref, RefOr};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::store;
use crate::store::ledger::{reason, LedgerStatus};
use crate::store::loyalty::DASHBOARD_DAYS;

/// `POST /auth/signup`, 201.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserCreated {
    pub user_id: Uuid,
}

/// `POST /cards`, 201.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredCard {
    pub card_id: Uuid,
    #[schema(schema_with = last4)]
    pub last4: String,
    pub card_product_id: Uuid,
}

/// `POST /merchants`, 201.
#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantCreated {
    pub merchant_id: Uuid,
}

/// `GET /merchants`, 200.
#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantList {
    pub items: Vec<store::merchants::MerchantPublicView>,
}

/// The payment is durable; fraud detection decides it later.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Received {
    Received,
}

/// The order is durable; settlement decides it later.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Pending {
    Pending,
}

/// `POST /payments`, 202: the broker acknowledged the payment.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentAccepted {
    pub payment_id: Uuid,
    #[schema(inline)]
    pub status: Received,
}

impl PaymentAccepted {
    pub fn new(payment_id: Uuid) -> Self {
        Self { payment_id, status: Received::Received }
    }
}

/// `POST /orders`, 202: the order is durable and will be settled.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderAccepted {
    pub order_id: Uuid,
    #[schema(inline)]
    pub status: Pending,
}

impl OrderAccepted {
    pub fn new(order_id: Uuid) -> Self {
        Self { order_id, status: Pending::Pending }
    }
}

/// `POST /verify/{token}` with `Accept: application/json`, 200.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationResult {
    pub payment_id: Uuid,
    #[schema(schema_with = decided_status)]
    pub status: &'static str,
}

/// Every response body's schema, by name (the names the route table uses),
/// with the schemas they refer to.
pub fn schemas() -> BTreeMap<String, serde_json::Value> {
    type Collected = Vec<(String, RefOr<Schema>)>;
    fn of<T: ToSchema>(out: &mut Collected) {
        out.push((T::name().into_owned(), T::schema()));
        T::schemas(out);
    }
    /// A list answer: a JSON array of `T`.
    fn list_of<T: ToSchema>(out: &mut Collected, name: &str) {
        of::<T>(out);
        let items = Ref::from_schema_name(T::name());
        out.push((name.to_owned(), ArrayBuilder::new().items(items).into()));
    }
    let mut all = Collected::new();
    of::<crate::auth::AccessToken>(&mut all);
    of::<UserCreated>(&mut all);
    of::<RegisteredCard>(&mut all);
    list_of::<store::cards::CardView>(&mut all, "CardList");
    list_of::<store::notifications::NotificationView>(&mut all, "NotificationList");
    list_of::<store::card_products::CardProductView>(&mut all, "CardProductList");
    of::<MerchantCreated>(&mut all);
    of::<MerchantList>(&mut all);
    of::<PaymentAccepted>(&mut all);
    of::<store::payments::PaymentView>(&mut all);
    of::<VerificationResult>(&mut all);
    list_of::<store::products::ProductView>(&mut all, "ProductList");
    of::<OrderAccepted>(&mut all);
    of::<store::orders::OrderView>(&mut all);
    of::<store::settlements::SettlementPage>(&mut all);
    of::<store::settlements::SettlementSummary>(&mut all);
    of::<store::loyalty::Dashboard>(&mut all);
    // Referred to by `visits_by_day`, whose bounds are stated by hand.
    of::<store::loyalty::DayVisits>(&mut all);
    all.into_iter().map(|(name, schema)| (name, serde_json::to_value(schema).expect("schemas serialise"))).collect()
}

// Field rules. utoipa's attributes take literals only; these build each
// schema from the constant the code itself writes.

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn strings(values: &[&'static str]) -> ObjectBuilder {
    string().enum_values(Some(values.iter().copied()))
}

/// Times leave the API as RFC 3339 UTC (`store::rfc3339`).
pub(crate) fn time() -> Schema {
    string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))).into()
}

/// An ISO 4217 code as stored (the accepted ones are a list, see the
/// request schemas; an answer only repeats what was accepted).
pub(crate) fn currency() -> Schema {
    string().pattern(Some("^[A-Z]{3}$")).description(Some("ISO 4217 code, uppercase.")).into()
}

/// `currency`, or null when there is none.
pub(crate) fn currency_or_null() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .pattern(Some("^[A-Z]{3}$"))
        .description(Some("ISO 4217 code of the total; null when there are no settlements or they mix currencies."))
        .into()
}

pub(crate) fn last4() -> Schema {
    string().pattern(Some("^[0-9]{4}$")).into()
}

pub(crate) fn expiry() -> Schema {
    string().pattern(Some(crate::domain::CardExpiry::PATTERN)).description(Some("MM/YY.")).into()
}

pub(crate) fn country() -> Schema {
    string().pattern(Some(super::COUNTRY_PATTERN)).into()
}

pub(crate) fn category() -> Schema {
    string().enum_values(Some(crate::domain::MerchantCategory::ALL.iter().map(|c| c.as_str()))).into()
}

/// `GET /payments/{id}`: RECEIVED, then the ledger's status.
pub(crate) fn payment_status() -> Schema {
    let ledger = [LedgerStatus::Completed, LedgerStatus::Pending, LedgerStatus::Denied].map(LedgerStatus::as_str);
    let mut values = vec![store::payments::STATUS_RECEIVED];
    values.extend(ledger);
    strings(&values).description(Some("RECEIVED until fraud detection has decided.")).into()
}

pub(crate) fn payment_reason() -> Schema {
    let reasons = [reason::IMPOSSIBLE_TRAVEL, reason::HOLDER_LOCKED, reason::APPROVED_BY_HOLDER, reason::DENIED_BY_HOLDER, reason::VERIFICATION_EXPIRED];
    strings(&reasons).description(Some("Why the payment got its status, when there is a reason.")).into()
}

/// The card holder's decision as the ledger records it.
pub(crate) fn decided_status() -> Schema {
    strings(&[LedgerStatus::Completed.as_str(), LedgerStatus::Denied.as_str()]).into()
}

pub(crate) fn order_status() -> Schema {
    strings(store::orders::STATUSES).into()
}

pub(crate) fn order_reason() -> Schema {
    strings(&[store::orders::REASON_NO_STOCK]).description(Some("Why a FAILED order failed.")).into()
}

pub(crate) fn benefit_scope() -> Schema {
    strings(store::card_products::SCOPES).into()
}

pub(crate) fn bearer() -> Schema {
    strings(&[crate::auth::TOKEN_TYPE]).into()
}

pub(crate) fn masked_customer() -> Schema {
    string().description(Some("Masked: the first two letters of the username, then ***.")).into()
}

pub(crate) fn utc_day() -> Schema {
    string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Date))).description(Some("A UTC day.")).into()
}

pub(crate) fn visits_by_day() -> Schema {
    ArrayBuilder::new()
        .items(Ref::from_schema_name("DayVisits"))
        .min_items(Some(DASHBOARD_DAYS as usize))
        .max_items(Some(DASHBOARD_DAYS as usize))
        .description(Some(format!("Visits per UTC day over the last {DASHBOARD_DAYS} days, oldest first, today last; quiet days read 0.")))
        .into()
}

pub(crate) fn notification_kind() -> Schema {
    strings(store::notifications::KINDS).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema of `T` describes what `value` serialises to: every key is
    /// a declared property, every required property is there.
    fn describes<T: ToSchema + Serialize>(value: &T) {
        let all = schemas();
        let schema = &all[T::name().as_ref()];
        let body = serde_json::to_value(value).expect("serialises");
        let keys: Vec<&String> = body.as_object().expect("an object").keys().collect();
        let properties = schema["properties"].as_object().expect("properties");
        for key in &keys {
            assert!(properties.contains_key(key.as_str()), "{}: `{key}` is not declared", T::name());
        }
        for required in schema["required"].as_array().expect("required") {
            assert!(keys.iter().any(|k| Some(k.as_str()) == required.as_str()), "{}: required {required} missing", T::name());
        }
    }

    #[test]
    fn schemas_describe_what_the_types_serialise() {
        let id = Uuid::nil();
        describes(&PaymentAccepted::new(id));
        describes(&OrderAccepted::new(id));
        describes(&VerificationResult { payment_id: id, status: LedgerStatus::Completed.as_str() });
        describes(&RegisteredCard { card_id: id, last4: "1111".into(), card_product_id: id });
        describes(&store::settlements::SettlementSummary { count: 0, total_amount: 0, currency: None, latest: None });
        describes(&store::settlements::SettlementPage { items: Vec::new(), next_cursor: None });
        describes(&store::payments::PaymentView {
            payment_id: id,
            status: store::payments::STATUS_RECEIVED.into(),
            amount: 1,
            currency: "KRW".into(),
            merchant_id: id,
            reason: None,
            user_id: id,
        });
        assert_eq!(serde_json::to_value(PaymentAccepted::new(id)).unwrap()["status"], "RECEIVED");
        assert_eq!(serde_json::to_value(OrderAccepted::new(id)).unwrap()["status"], "PENDING");
    }

    #[test]
    fn optional_answers_are_absent_or_null_as_documented() {
        let all = schemas();
        // Skipped when `None`: optional and never null.
        assert!(!all["Payment"]["required"].as_array().unwrap().contains(&"reason".into()));
        assert_eq!(all["Payment"]["properties"]["reason"]["type"], "string");
        assert_eq!(all["SettlementPage"]["properties"]["next_cursor"]["type"], "string");
        // Always serialised, `null` when `None`: required and nullable.
        let summary = &all["SettlementSummary"];
        assert!(summary["required"].as_array().unwrap().contains(&"latest".into()));
        assert_eq!(summary["properties"]["currency"]["type"], serde_json::json!(["string", "null"]));
        // Internal fields stay out of the document.
        assert!(all["Payment"]["properties"].get("user_id").is_none());
        assert!(all["Order"]["properties"].get("user_id").is_none());
    }
}
