//! Card numbers. A PAN lives only in memory, only as a [`CardNumber`], only
//! for as long as it takes to compute its last four digits and keyed
//! fingerprint. It has no `Display`, no `Serialize`, and its `Debug` shows
//! the last four digits at most.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::error::{AppError, ErrorCode};
use crate::secret::Secret;

const PAN_MAX_DIGITS: usize = 19;

pub struct CardNumber {
    digits: String,
}

impl CardNumber {
    /// What a card number looks like on the wire: 12–19 digits, spaces or
    /// dashes between them allowed. The parser and the OpenAPI schema both
    /// use it; the Luhn check comes on top.
    pub const PATTERN: &'static str = "^[ -]*(?:[0-9][ -]*){12,19}$";

    /// Accepts [`Self::PATTERN`]; the digits must pass the Luhn check.
    pub fn parse(raw: &Secret) -> Result<Self, AppError> {
        static SHAPE: std::sync::OnceLock<regex_lite::Regex> = std::sync::OnceLock::new();
        if !crate::api::matcher(&SHAPE, Self::PATTERN).is_match(raw.expose()) {
            return Err(invalid("a card number is 12-19 digits, spaces or dashes between them allowed"));
        }
        let mut digits = String::with_capacity(PAN_MAX_DIGITS);
        digits.extend(raw.expose().chars().filter(char::is_ascii_digit));
        if !luhn_valid(&digits) {
            return Err(invalid("card number failed the Luhn check"));
        }
        Ok(Self { digits })
    }

    pub fn last4(&self) -> String {
        self.digits[self.digits.len() - 4..].to_owned()
    }

    /// HMAC-SHA256 of the digits under a secret key: equal cards give equal
    /// fingerprints, and without the key the PAN cannot be brute-forced back
    /// from it (a plain hash of a 16-digit PAN can).
    pub fn fingerprint(&self, key: &Secret) -> PanFingerprint {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).expect("HMAC accepts any key length");
        mac.update(self.digits.as_bytes());
        PanFingerprint(mac.finalize().into_bytes().to_vec())
    }
}

impl std::fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CardNumber(****{})", &self.digits[self.digits.len() - 4..])
    }
}

fn invalid(detail: &str) -> AppError {
    AppError::new(ErrorCode::InvalidPan, detail)
}

/// Luhn (mod 10) check over ASCII digits.
pub fn luhn_valid(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// Keyed fingerprint of a PAN (32 bytes); what we store instead of the PAN.
#[derive(Clone, PartialEq, Eq)]
pub struct PanFingerprint(pub Vec<u8>);

impl std::fmt::Debug for PanFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PanFingerprint(..)")
    }
}

/// Card expiry month, `MM/YY` on the wire. Valid through the last day of
/// that month.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CardExpiry {
    pub month: u8,
    pub year: u16,
}

impl CardExpiry {
    /// `MM/YY` (the parser and the OpenAPI schema both use it).
    pub const PATTERN: &'static str = "^(?:0[1-9]|1[0-2])/[0-9]{2}$";

    pub fn parse(raw: &str, now: OffsetDateTime) -> Result<Self, AppError> {
        static SHAPE: std::sync::OnceLock<regex_lite::Regex> = std::sync::OnceLock::new();
        let bad = || AppError::validation("expiry must be MM/YY");
        if !crate::api::matcher(&SHAPE, Self::PATTERN).is_match(raw) {
            return Err(bad());
        }
        let (mm, yy) = raw.split_once('/').ok_or_else(bad)?;
        let month: u8 = mm.parse().map_err(|_| bad())?;
        let yy: u16 = yy.parse().map_err(|_| bad())?;
        let expiry = CardExpiry { month, year: 2000 + yy };
        let current = (now.year() as u16, now.month() as u8);
        if (expiry.year, expiry.month) < current {
            return Err(AppError::validation("card has expired"));
        }
        Ok(expiry)
    }

    pub fn to_wire(self) -> String {
        format!("{:02}/{:02}", self.month, self.year % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn pan(s: &str) -> Result<CardNumber, AppError> {
        CardNumber::parse(&Secret::new(s))
    }

    #[test]
    fn accepts_known_test_pans() {
        for p in ["4111111111111111", "5555 5555 5555 4444", "3782-822463-10005", "6011111111111117"] {
            assert!(pan(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn rejects_bad_pans_with_invalid_pan() {
        for p in ["4111111111111112", "411111111111", "abcd", "", "4111 1111 1111 111x", "41111111111111111111"] {
            assert_eq!(pan(p).unwrap_err().code, ErrorCode::InvalidPan, "{p}");
        }
    }

    #[test]
    fn debug_shows_last_four_only() {
        let card = pan("4111111111111111").unwrap();
        assert_eq!(format!("{card:?}"), "CardNumber(****1111)");
        assert_eq!(card.last4(), "1111");
    }

    #[test]
    fn fingerprint_is_keyed_and_stable() {
        let a = pan("4111 1111 1111 1111").unwrap();
        let b = pan("4111111111111111").unwrap();
        let k1 = Secret::new("k".repeat(32));
        let k2 = Secret::new("j".repeat(32));
        assert_eq!(a.fingerprint(&k1), b.fingerprint(&k1));
        assert_ne!(a.fingerprint(&k1), a.fingerprint(&k2));
        assert_eq!(a.fingerprint(&k1).0.len(), 32);
    }

    #[test]
    fn expiry_parses_and_rejects_the_past() {
        let now = datetime!(2026-11-22 12:00 UTC);
        assert_eq!(CardExpiry::parse("11/26", now).unwrap(), CardExpiry { month: 11, year: 2026 });
        assert_eq!(CardExpiry::parse("01/30", now).unwrap().to_wire(), "01/30");
        assert!(CardExpiry::parse("10/26", now).is_err());
        assert!(CardExpiry::parse("13/27", now).is_err());
        assert!(CardExpiry::parse("1/27", now).is_err());
        assert!(CardExpiry::parse("0127", now).is_err());
    }

    /// Appends the Luhn check digit to a digit string.
    fn with_check_digit(body: &str) -> String {
        (0..10).map(|d| format!("{body}{d}")).find(|c| luhn_valid(c)).unwrap()
    }

    proptest! {
        #[test]
        fn every_pan_with_a_correct_check_digit_parses(body in "[0-9]{11,18}") {
            let full = with_check_digit(&body);
            let card = pan(&full).unwrap();
            prop_assert_eq!(card.last4(), full[full.len()-4..].to_string());
            let shown = format!("{:?}", card);
            prop_assert!(!shown.contains(&full[..full.len()-4]));
        }

        #[test]
        fn changing_one_digit_breaks_luhn(body in "[0-9]{15}", pos in 0usize..16, delta in 1u8..10) {
            let full = with_check_digit(&body);
            let mut bytes = full.into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            prop_assert!(!luhn_valid(std::str::from_utf8(&bytes).unwrap()));
        }
    }
}
