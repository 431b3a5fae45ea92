//! The request bodies of the HTTP API: the types the functions decode, and
//! (by `utoipa::ToSchema`) the schemas `openapi.json` publishes for them.
//!
//! Each rule a parser enforces on a field is stated once, here or on its
//! domain type (a `PATTERN`, a list, a bound), and used both by the parser
//! and by the field's schema, so the document is exactly as strict as the
//! server: a body the schema accepts is refused only for a business rule the
//! schema cannot state (a Luhn check, an expiry in the past, an end before a
//! start, a taken name), and a body it refuses is refused by the server too.

pub mod responses;

use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::money::{Currency, AMOUNT_MAX_MINOR};
use crate::domain::{CardExpiry, CardNumber, MerchantCategory, Password, Phone, Username, VipThreshold};
use crate::secret::Secret;

/// Longest merchant name, in characters.
pub const MERCHANT_NAME_MAX_CHARS: usize = 120;
/// Longest product title, in characters.
pub const PRODUCT_TITLE_MAX_CHARS: usize = 200;
/// Largest stock of one flash-sale product.
pub const STOCK_MAX: i64 = 10_000_000;
/// A name or title must hold something other than blanks (searched, as
/// JSON Schema `pattern` is: unanchored).
pub const NOT_BLANK_PATTERN: &str = "[^ \\t\\r\\n]";
/// ISO 3166-1 alpha-2, uppercase (`CountryCode::parse`).
pub const COUNTRY_PATTERN: &str = "^[A-Z]{2}$";

/// A compiled `PATTERN`, built once. Patterns are plain ASCII classes and
/// counted repeats, which `regex-lite`, JSON Schema (ECMA-262) and Python
/// (schemathesis) read alike.
pub fn matcher(cell: &'static OnceLock<regex_lite::Regex>, pattern: &'static str) -> &'static regex_lite::Regex {
    cell.get_or_init(|| regex_lite::Regex::new(pattern).expect("patterns are constants, checked by the tests"))
}

/// The blanks [`NOT_BLANK_PATTERN`] means, and [`trim_name`] drops.
const BLANKS: [char; 4] = [' ', '\t', '\r', '\n'];

/// A name as stored: without surrounding blanks (only those: a name of
/// other white space, U+00A0 say, is a name, and stays one).
pub fn trim_name(text: &str) -> &str {
    text.trim_matches(BLANKS)
}

/// `true` when `text` is a name of at most `max_chars` characters that is not blank.
pub fn is_name(text: &str, max_chars: usize) -> bool {
    static NOT_BLANK: OnceLock<regex_lite::Regex> = OnceLock::new();
    text.chars().count() <= max_chars && matcher(&NOT_BLANK, NOT_BLANK_PATTERN).is_match(text)
}

/// JSON Schema's `integer` is any number without a fractional part, `7.0`
/// included, and serde's `i64` refuses `7.0`: integer fields decode with
/// this, so the server takes every integer the schema does.
fn integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct Integer;
    impl serde::de::Visitor<'_> for Integer {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            // 2^63 is the first f64 past i64::MAX.
            const BOUND: f64 = 9_223_372_036_854_775_808.0;
            if v.fract() == 0.0 && (-BOUND..BOUND).contains(&v) {
                Ok(v as i64)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
            }
        }
    }
    deserializer.deserialize_any(Integer)
}

fn optional_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "integer")] i64);
    Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(n)| n))
}

// Schemas of fields whose rule is a constant: utoipa's attributes take
// literals only, so these build the schema from the constant itself.

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn username() -> Schema {
    string().pattern(Some(Username::PATTERN)).description(Some("3-32 characters of a-z, 0-9, '_', '.', '-'; case-insensitive (stored lowercase), surrounding spaces ignored.")).into()
}

fn phone() -> Schema {
    string()
        .pattern(Some(Phone::PATTERN))
        .description(Some("E.164: '+' then 8-15 digits, the first not 0; spaces and dashes between them are ignored."))
        .examples([serde_json::json!("+821012345678")])
        .into()
}

fn password() -> Schema {
    string().min_length(Some(Password::MIN_CHARS)).max_length(Some(Password::MAX_CHARS)).format(Some(SchemaFormat::KnownFormat(KnownFormat::Password))).into()
}

fn role() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some([serde_json::json!("USER"), serde_json::json!("MERCHANT"), serde_json::Value::Null]))
        .description(Some("Default USER. ADMIN is never granted by sign-up."))
        .into()
}

fn pan() -> Schema {
    string()
        .pattern(Some(CardNumber::PATTERN))
        .description(Some(
            "12-19 digits, spaces or dashes between them allowed, passing the Luhn check (a number failing it answers 400 INVALID_PAN). \
             Never stored, logged or returned.",
        ))
        .examples([serde_json::json!("4111 1111 1111 1111")])
        .into()
}

fn expiry() -> Schema {
    string()
        .pattern(Some(CardExpiry::PATTERN))
        .description(Some("MM/YY; a month already past answers 400 VALIDATION."))
        .examples([serde_json::json!("12/39")])
        .into()
}

fn name(max_chars: usize, what: &str) -> ObjectBuilder {
    string()
        .min_length(Some(1))
        .max_length(Some(max_chars))
        .pattern(Some(NOT_BLANK_PATTERN))
        .description(Some(format!("{what}: 1-{max_chars} characters, not all blank; stored without surrounding blanks.")))
}

fn merchant_name() -> Schema {
    name(MERCHANT_NAME_MAX_CHARS, "Name").into()
}

fn product_title() -> Schema {
    name(PRODUCT_TITLE_MAX_CHARS, "Title").into()
}

fn category() -> Schema {
    string().enum_values(Some(MerchantCategory::ALL.iter().map(|c| c.as_str()))).into()
}

fn country() -> Schema {
    string().pattern(Some(COUNTRY_PATTERN)).description(Some("ISO 3166-1 alpha-2, uppercase.")).into()
}

fn vip_threshold() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
        .minimum(Some(1))
        .maximum(Some(VipThreshold::MAX))
        .default(Some(serde_json::json!(VipThreshold::DEFAULT)))
        .description(Some("Visits at which a customer becomes VIP."))
        .into()
}

/// What `Amount::parse` accepts: strictly positive, bounded.
fn amount() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(1))
        .maximum(Some(AMOUNT_MAX_MINOR as f64))
        .description(Some("Integer amount in minor units of `currency`."))
        .into()
}

/// What `Currency::parse` accepts: the supported codes.
fn currency() -> Schema {
    string().enum_values(Some(Currency::codes())).description(Some("ISO 4217 code of a supported currency.")).into()
}

fn stock() -> Schema {
    ObjectBuilder::new().schema_type(Type::Integer).format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64))).minimum(Some(1)).maximum(Some(STOCK_MAX as f64)).into()
}

fn date_time(description: &'static str) -> ObjectBuilder {
    string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))).description(Some(description))
}

fn start_time() -> Schema {
    date_time("RFC 3339; the sale opens at this instant.").into()
}

fn end_time() -> Schema {
    date_time("RFC 3339; the sale is closed from this instant. Not after start_time answers 400 VALIDATION.").into()
}

/// `POST /auth/signup`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    #[schema(schema_with = username)]
    pub username: String,
    /// Stored lowercase.
    #[schema(format = Email)]
    pub email: String,
    #[schema(schema_with = password)]
    pub password: Secret,
    #[schema(schema_with = phone)]
    pub phone: String,
    #[schema(schema_with = role)]
    pub role: Option<String>,
}

/// `POST /auth/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    #[schema(value_type = String, format = Password)]
    pub password: Secret,
}

/// `POST /cards`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterCardRequest {
    pub card_product_id: Uuid,
    /// Held as a `Secret` until parsed: its `Debug` cannot print it.
    #[schema(schema_with = pan)]
    pub pan: Secret,
    #[schema(schema_with = expiry)]
    pub expiry: String,
}

/// `POST /merchants`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMerchantRequest {
    #[schema(schema_with = merchant_name)]
    pub name: String,
    #[schema(schema_with = category)]
    pub category: String,
    #[schema(schema_with = country)]
    pub country: String,
    #[schema(minimum = -90, maximum = 90)]
    pub lat: f64,
    #[schema(minimum = -180, maximum = 180)]
    pub lon: f64,
    #[serde(default, deserialize_with = "optional_integer")]
    #[schema(schema_with = vip_threshold)]
    pub vip_threshold: Option<i64>,
}

/// `POST /payments`. Serialised again for the idempotency hash.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentRequest {
    pub card_id: Uuid,
    pub merchant_id: Uuid,
    #[serde(deserialize_with = "integer")]
    #[schema(schema_with = amount)]
    pub amount: i64,
    #[schema(schema_with = currency)]
    pub currency: String,
}

/// `POST /products`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    #[schema(schema_with = product_title)]
    pub title: String,
    #[serde(deserialize_with = "integer")]
    #[schema(schema_with = amount)]
    pub price: i64,
    #[schema(schema_with = currency)]
    pub currency: String,
    #[serde(deserialize_with = "integer")]
    #[schema(schema_with = stock)]
    pub stock: i64,
    #[schema(schema_with = start_time)]
    pub start_time: String,
    #[schema(schema_with = end_time)]
    pub end_time: String,
}

/// `POST /orders`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderRequest {
    pub product_id: Uuid,
}

/// `POST /verify/{token}`: JSON, or the page's form (`decision=approve`).
#[derive(Deserialize, ToSchema)]
pub struct VerificationDecision {
    #[schema(value_type = Decision)]
    pub decision: String,
}

/// The card holder's answer.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // a schema only: the body's `decision` is parsed from text
enum Decision {
    Approve,
    Deny,
}

/// Every request body's schema, by the name the route table uses.
pub fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    fn of<T: ToSchema>(name: &'static str) -> (&'static str, serde_json::Value) {
        let schema: RefOr<Schema> = T::schema();
        (name, serde_json::to_value(schema).expect("schemas serialise"))
    }
    vec![
        of::<SignupRequest>("SignupRequest"),
        of::<LoginRequest>("LoginRequest"),
        of::<RegisterCardRequest>("RegisterCardRequest"),
        of::<CreateMerchantRequest>("CreateMerchantRequest"),
        of::<CreatePaymentRequest>("CreatePaymentRequest"),
        of::<CreateProductRequest>("CreateProductRequest"),
        of::<CreateOrderRequest>("CreateOrderRequest"),
        of::<VerificationDecision>("VerificationDecision"),
        of::<Decision>("Decision"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_what_json_schema_calls_integers() {
        let amount = |json: &str| serde_json::from_str::<CreatePaymentRequest>(&format!(
            r#"{{"card_id":"{0}","merchant_id":"{0}","amount":{json},"currency":"KRW"}}"#,
            Uuid::nil()
        ))
        .map(|body| body.amount);
        assert_eq!(amount("7").unwrap(), 7);
        assert_eq!(amount("7.0").unwrap(), 7);
        assert_eq!(amount("1e3").unwrap(), 1000);
        assert_eq!(amount("-2").unwrap(), -2);
        assert!(amount("7.5").is_err());
        assert!(amount("1e300").is_err());
        assert!(amount("\"7\"").is_err());
        let vip = |json: &str| {
            serde_json::from_str::<CreateMerchantRequest>(&format!(r#"{{"name":"n","category":"cafe","country":"KR","lat":0,"lon":0{json}}}"#)).map(|b| b.vip_threshold)
        };
        assert_eq!(vip("").unwrap(), None);
        assert_eq!(vip(r#","vip_threshold":null"#).unwrap(), None);
        assert_eq!(vip(r#","vip_threshold":736.0"#).unwrap(), Some(736));
    }

    #[test]
    fn every_pattern_compiles() {
        for pattern in [Username::PATTERN, Phone::PATTERN, CardNumber::PATTERN, CardExpiry::PATTERN, NOT_BLANK_PATTERN, COUNTRY_PATTERN] {
            regex_lite::Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        }
    }

    #[test]
    fn names_are_bounded_and_not_blank() {
        assert!(is_name("Cafe", 120));
        assert!(is_name("  Cafe  ", 120));
        assert!(!is_name("", 120));
        assert!(!is_name(" \t\r\n", 120));
        assert!(is_name(&"x".repeat(120), 120));
        assert!(!is_name(&"x".repeat(121), 120));
        assert!(is_name("\u{a0}", 120));
        assert_eq!(trim_name(" \u{a0} \n"), "\u{a0}");
    }

    #[test]
    fn request_schemas_are_closed_and_state_the_rules() {
        let all: std::collections::HashMap<_, _> = schemas().into_iter().collect();
        for (name, schema) in &all {
            if schema["type"] == "object" && *name != "VerificationDecision" {
                assert_eq!(schema["additionalProperties"], false, "{name}");
            }
        }
        let signup = &all["SignupRequest"];
        assert_eq!(signup["properties"]["phone"]["pattern"], Phone::PATTERN);
        assert_eq!(signup["properties"]["password"]["minLength"], Password::MIN_CHARS);
        let required: Vec<&str> = signup["required"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(required, ["username", "email", "password", "phone"]);
        assert_eq!(all["CreatePaymentRequest"]["properties"]["currency"]["enum"].as_array().unwrap().len(), Currency::codes().count());
        assert_eq!(all["RegisterCardRequest"]["properties"]["pan"]["pattern"], CardNumber::PATTERN);
    }
}
