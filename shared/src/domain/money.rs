//! Money is an integer amount of minor units plus an ISO 4217 currency.
//! No floats anywhere near money.

use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// Largest amount we accept in one payment or price: 10^12 minor units
/// (10 billion in a two-decimal currency). Keeps every sum of a bounded
/// batch far from `i64::MAX`.
pub const AMOUNT_MAX_MINOR: i64 = 1_000_000_000_000;

/// A strictly positive amount in minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    pub fn parse(minor: i64) -> Result<Self, AppError> {
        if minor <= 0 {
            return Err(AppError::validation("amount must be a positive integer of minor units"));
        }
        if minor > AMOUNT_MAX_MINOR {
            return Err(AppError::validation(format!("amount must be at most {AMOUNT_MAX_MINOR}")));
        }
        Ok(Self(minor))
    }

    pub fn minor(self) -> i64 {
        self.0
    }
}

/// An ISO 4217 currency we support, with its number of minor-unit digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(&'static str, u8);

/// Supported currencies and their minor-unit exponents (ISO 4217).
const CURRENCIES: &[(&str, u8)] = &[
    ("KRW", 0),
    ("JPY", 0),
    ("USD", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("CNY", 2),
    ("SGD", 2),
    ("AUD", 2),
    ("CAD", 2),
    ("CHF", 2),
];

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        CURRENCIES
            .iter()
            .find(|(code, _)| *code == raw)
            .map(|(code, exp)| Currency(code, *exp))
            .ok_or_else(|| AppError::validation(format!("currency must be an uppercase ISO 4217 code we support ({})", supported())))
    }

    pub fn code(self) -> &'static str {
        self.0
    }

    /// Every supported code (the OpenAPI schema's enum).
    pub fn codes() -> impl Iterator<Item = &'static str> {
        CURRENCIES.iter().map(|(code, _)| *code)
    }

    pub fn minor_unit_digits(self) -> u8 {
        self.1
    }
}

fn supported() -> String {
    CURRENCIES.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Currency::parse(&value).map_err(|e| e.detail)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.0.to_owned()
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// `12.50 USD`, `10000 KRW`: minor units shown in the currency's own
/// precision (unknown codes show raw minor units).
pub fn format_minor(minor: i64, currency: &str) -> String {
    let digits = Currency::parse(currency).map(|c| c.minor_unit_digits()).unwrap_or(0);
    if digits == 0 {
        return format!("{minor} {currency}");
    }
    let scale = 10_i64.pow(u32::from(digits));
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:0width$} {currency}", abs / scale as u64, abs % scale as u64, width = digits as usize)
}

/// `89,000 KRW`, `1,234.50 USD`: [`format_minor`] with thousands
/// separators, for people.
pub fn format_grouped(minor: i64, currency: &str) -> String {
    format!("{} {currency}", grouped_number(minor, currency))
}

/// `₩89,000`, `$1,234.50`, `€0.05`: how people write the amount, with the
/// currency's symbol; a currency without one here reads as [`format_grouped`].
pub fn format_with_symbol(minor: i64, currency: &str) -> String {
    let symbol = match currency {
        "KRW" => "₩",
        "JPY" => "¥",
        "USD" => "$",
        "EUR" => "€",
        "GBP" => "£",
        "CNY" => "CN¥",
        "SGD" => "S$",
        "AUD" => "A$",
        "CAD" => "CA$",
        _ => return format_grouped(minor, currency),
    };
    let number = grouped_number(minor, currency);
    match number.strip_prefix('-') {
        Some(abs) => format!("-{symbol}{abs}"),
        None => format!("{symbol}{number}"),
    }
}

/// The amount in the currency's precision with `,` every three digits.
fn grouped_number(minor: i64, currency: &str) -> String {
    let plain = format_minor(minor, currency);
    let number = plain.split(' ').next().unwrap_or("");
    let (sign, unsigned) = number.strip_prefix('-').map_or(("", number), |rest| ("-", rest));
    let (whole, fraction) = unsigned.split_once('.').map_or((unsigned, None), |(w, f)| (w, Some(f)));
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    match fraction {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Money {
    pub amount: Amount,
    pub currency: Currency,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn currency_parses_known_codes_only() {
        assert_eq!(Currency::parse("KRW").unwrap().minor_unit_digits(), 0);
        assert_eq!(Currency::parse("EUR").unwrap().code(), "EUR");
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("XXX").is_err());
        assert!(Currency::parse("").is_err());
    }

    #[test]
    fn currency_round_trips_through_json() {
        let c: Currency = serde_json::from_str("\"USD\"").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"USD\"");
        assert!(serde_json::from_str::<Currency>("\"usd\"").is_err());
    }

    #[test]
    fn amounts_format_in_their_currency_precision() {
        assert_eq!(format_minor(10_000, "KRW"), "10000 KRW");
        assert_eq!(format_minor(1_250, "USD"), "12.50 USD");
        assert_eq!(format_minor(5, "EUR"), "0.05 EUR");
        assert_eq!(format_minor(7, "XXX"), "7 XXX");
    }

    #[test]
    fn amounts_read_as_people_write_them() {
        assert_eq!(format_with_symbol(89_000, "KRW"), "₩89,000");
        assert_eq!(format_grouped(89_000, "KRW"), "89,000 KRW");
        assert_eq!(format_with_symbol(123_450, "USD"), "$1,234.50");
        assert_eq!(format_with_symbol(5, "EUR"), "€0.05");
        assert_eq!(format_with_symbol(100_000_000, "JPY"), "¥100,000,000");
        assert_eq!(format_with_symbol(-1_000_000, "GBP"), "-£10,000.00");
        assert_eq!(format_with_symbol(1_250, "CHF"), "12.50 CHF");
        assert_eq!(format_grouped(999, "KRW"), "999 KRW");
        assert_eq!(format_grouped(1_000, "KRW"), "1,000 KRW");
    }

    proptest! {
        #[test]
        fn amount_accepts_exactly_the_positive_bounded_range(minor in any::<i64>()) {
            let parsed = Amount::parse(minor);
            prop_assert_eq!(parsed.is_ok(), minor > 0 && minor <= AMOUNT_MAX_MINOR);
            if let Ok(a) = parsed { prop_assert_eq!(a.minor(), minor); }
        }
    }
}
