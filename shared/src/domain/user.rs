//! Account fields, each parsed once at the edge.

use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::secret::Secret;

/// 3–32 characters of `a-z 0-9 _ . -`, stored lowercase so `Alice` and
/// `alice` are one account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    /// Case-insensitive, surrounding spaces ignored (the parser and the
    /// OpenAPI schema both use it).
    pub const PATTERN: &'static str = "^ *[A-Za-z0-9_.-]{3,32} *$";

    pub fn parse(raw: &str) -> Result<Self, AppError> {
        static SHAPE: std::sync::OnceLock<regex_lite::Regex> = std::sync::OnceLock::new();
        if !crate::api::matcher(&SHAPE, Self::PATTERN).is_match(raw) {
            return Err(AppError::validation("username must be 3-32 characters of a-z, 0-9, '_', '.', '-'"));
        }
        Ok(Self(raw.trim_matches(' ').to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A syntactically plausible e-mail address, lowercased. Deliverability is
/// not our business at sign-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        let email = raw.trim().to_ascii_lowercase();
        let bad = || AppError::validation("email must look like name@example.com");
        if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = email.split_once('@').ok_or_else(bad)?;
        if local.is_empty() || domain.contains('@') || !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
            return Err(bad());
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new password: 10–128 characters. Never logged (wraps [`Secret`]).
#[derive(Debug)]
pub struct Password(Secret);

impl Password {
    pub const MIN_CHARS: usize = 10;
    pub const MAX_CHARS: usize = 128;

    pub fn parse(raw: Secret) -> Result<Self, AppError> {
        let n = raw.expose().chars().count();
        if !(Self::MIN_CHARS..=Self::MAX_CHARS).contains(&n) {
            return Err(AppError::validation(format!(
                "password must be {}-{} characters",
                Self::MIN_CHARS,
                Self::MAX_CHARS
            )));
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

/// E.164 phone number: `+` and 8–15 digits (spaces and dashes dropped).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Phone(String);

impl Phone {
    /// `+`, then 8–15 digits, the first not 0, spaces or dashes between
    /// them allowed (the parser and the OpenAPI schema both use it).
    pub const PATTERN: &'static str = "^ *\\+[ -]*[1-9](?:[ -]*[0-9]){7,14}[ -]*$";

    pub fn parse(raw: &str) -> Result<Self, AppError> {
        static SHAPE: std::sync::OnceLock<regex_lite::Regex> = std::sync::OnceLock::new();
        if !crate::api::matcher(&SHAPE, Self::PATTERN).is_match(raw) {
            return Err(AppError::validation("phone must be E.164, e.g. +821012345678"));
        }
        let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
        Ok(Self(format!("+{digits}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    User,
    Merchant,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "USER",
            Role::Merchant => "MERCHANT",
            Role::Admin => "ADMIN",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "USER" => Some(Role::User),
            "MERCHANT" => Some(Role::Merchant),
            "ADMIN" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Roles anyone may choose at sign-up. ADMIN comes only from seeding or
    /// the operator command.
    pub fn parse_for_signup(raw: Option<&str>) -> Result<Self, AppError> {
        match raw.map(str::trim) {
            None | Some("USER") => Ok(Role::User),
            Some("MERCHANT") => Ok(Role::Merchant),
            Some(_) => Err(AppError::validation("role must be USER or MERCHANT")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn usernames() {
        assert_eq!(Username::parse(" Alice_1 ").unwrap().as_str(), "alice_1");
        for bad in ["al", "a b c", "ålice", &"x".repeat(33), "alice!", "\talice"] {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(Email::parse("Alice@Example.COM").unwrap().as_str(), "alice@example.com");
        for bad in ["alice", "@example.com", "a@b", "a@@b.com", "a b@c.com", "a@.com", "a@com."] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phones() {
        assert_eq!(Phone::parse("+82 10-1234-5678").unwrap().as_str(), "+821012345678");
        for bad in ["01012345678", "+1234", "+0123456789", "+12345678901234567", "+8210abc45678"] {
            assert!(Phone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signup_roles_exclude_admin() {
        assert_eq!(Role::parse_for_signup(None).unwrap(), Role::User);
        assert_eq!(Role::parse_for_signup(Some("MERCHANT")).unwrap(), Role::Merchant);
        assert!(Role::parse_for_signup(Some("ADMIN")).is_err());
        assert!(Role::parse_for_signup(Some("user")).is_err());
    }

    proptest! {
        #[test]
        fn password_length_bounds(len in 0usize..200) {
            let ok = Password::parse(Secret::new("p".repeat(len))).is_ok();
            prop_assert_eq!(ok, (Password::MIN_CHARS..=Password::MAX_CHARS).contains(&len));
        }
    }
}
