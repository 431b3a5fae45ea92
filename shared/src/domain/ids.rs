//! Typed ids, so a card id can never be passed where a user id is expected.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::AppError;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            /// Parses an id from a path segment or query value. A malformed id
            /// answers 404 like an unknown one: it names nothing that exists.
            pub fn parse_path(raw: &str) -> Result<Self, AppError> {
                Uuid::parse_str(raw).map(Self).map_err(|_| AppError::not_found($what))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A person with an account (USER, MERCHANT or ADMIN).
    UserId, "user"
);
uuid_id!(
    /// A card registered by a user.
    CardId, "card"
);
uuid_id!(
    /// A card product (e.g. "Cafe Lover") that carries benefit rules.
    CardProductId, "card product"
);
uuid_id!(
    /// A merchant (shop) owned by a MERCHANT user.
    MerchantId, "merchant"
);
