//! Merchant facts: category, country, coordinates, VIP threshold.

use serde::{Deserialize, Serialize};

use crate::error::AppError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MerchantCategory {
    Cafe,
    Restaurant,
    Grocery,
    Convenience,
    Fuel,
    Travel,
    Online,
    Entertainment,
    Other,
}

impl MerchantCategory {
    pub const ALL: [MerchantCategory; 9] = [
        Self::Cafe,
        Self::Restaurant,
        Self::Grocery,
        Self::Convenience,
        Self::Fuel,
        Self::Travel,
        Self::Online,
        Self::Entertainment,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cafe => "cafe",
            Self::Restaurant => "restaurant",
            Self::Grocery => "grocery",
            Self::Convenience => "convenience",
            Self::Fuel => "fuel",
            Self::Travel => "travel",
            Self::Online => "online",
            Self::Entertainment => "entertainment",
            Self::Other => "other",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, AppError> {
        Self::ALL.into_iter().find(|c| c.as_str() == raw).ok_or_else(|| {
            let all: Vec<_> = Self::ALL.iter().map(|c| c.as_str()).collect();
            AppError::validation(format!("category must be one of {}", all.join(", ")))
        })
    }
}

/// ISO 3166-1 alpha-2 country code, uppercase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        match raw.as_bytes() {
            [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Ok(Self([*a, *b])),
            _ => Err(AppError::validation("country must be an ISO 3166-1 alpha-2 code such as KR")),
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("two ASCII letters")
    }
}

/// A point on Earth in degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coordinates {
    pub lat: f64,
    pub lon: f64,
}

impl Coordinates {
    pub fn parse(lat: f64, lon: f64) -> Result<Self, AppError> {
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(AppError::validation("lat must be between -90 and 90"));
        }
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            return Err(AppError::validation("lon must be between -180 and 180"));
        }
        Ok(Self { lat, lon })
    }
}

/// Visits at which a customer becomes a merchant's VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipThreshold(i32);

impl VipThreshold {
    pub const DEFAULT: i32 = 10;
    pub const MAX: i32 = 100_000;

    pub fn parse(raw: Option<i64>) -> Result<Self, AppError> {
        match raw {
            None => Ok(Self(Self::DEFAULT)),
            Some(n) if (1..=i64::from(Self::MAX)).contains(&n) => Ok(Self(n as i32)),
            Some(_) => Err(AppError::validation(format!("vip_threshold must be between 1 and {}", Self::MAX))),
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_round_trip() {
        for c in MerchantCategory::ALL {
            assert_eq!(MerchantCategory::parse(c.as_str()).unwrap(), c);
        }
        assert!(MerchantCategory::parse("Cafe").is_err());
    }

    #[test]
    fn countries_and_coordinates() {
        assert_eq!(CountryCode::parse("KR").unwrap().as_str(), "KR");
        assert!(CountryCode::parse("kr").is_err());
        assert!(CountryCode::parse("KOR").is_err());
        assert!(Coordinates::parse(37.56, 126.97).is_ok());
        assert!(Coordinates::parse(91.0, 0.0).is_err());
        assert!(Coordinates::parse(0.0, f64::NAN).is_err());
    }

    #[test]
    fn vip_threshold_defaults_and_bounds() {
        assert_eq!(VipThreshold::parse(None).unwrap().get(), 10);
        assert_eq!(VipThreshold::parse(Some(3)).unwrap().get(), 3);
        assert!(VipThreshold::parse(Some(0)).is_err());
        assert!(VipThreshold::parse(Some(i64::from(VipThreshold::MAX) + 1)).is_err());
    }
}
