//! Domain types that parse instead of validate: once you hold one, it is valid.

pub mod benefit;
pub mod card;
pub mod country;
pub mod ids;
pub mod merchant;
pub mod money;
pub mod travel;
pub mod user;

pub use card::{CardExpiry, CardNumber, PanFingerprint};
pub use ids::{new_id, CardId, CardProductId, MerchantId, UserId};
pub use merchant::{Coordinates, CountryCode, MerchantCategory, VipThreshold};
pub use money::{Amount, Currency, Money};
pub use user::{Email, Password, Phone, Role, Username};
