//! PostgreSQL access for the platform's shared records, one module per
//! resource. Functions call these; SQL lives nowhere else for these tables.

pub mod benefits;
pub mod card_products;
pub mod cards;
pub mod holders;
pub mod ledger;
pub mod loyalty;
pub mod merchants;
pub mod notifications;
pub mod orders;
pub mod payments;
pub mod products;
pub mod settlements;
pub mod users;
pub mod verifications;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// RFC 3339 UTC, the one time format of the API.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC).format(&Rfc3339).expect("every UTC timestamp formats as RFC 3339")
}
