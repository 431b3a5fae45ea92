//! PostgreSQL access for the platform's shared records, one module per
//! resource. Functions call these; SQL lives nowhere else for these tables.
//!
//! Which of a batch's ids a table holds already (the consumers'
//! deduplication) is read one id at a time by its key, `unnest($1) ...
//! LATERAL (... WHERE key = t.id LIMIT 1)`, not with `key = ANY($1)`: for
//! the first executions of a prepared statement PostgreSQL plans with the
//! array's real length, and with a thousand ids it chose to read the whole
//! table instead (measured on 2026-12-04: `loyalty_visits` and
//! `transactions` scanned whole in about one batch in four of
//! `bench consumers`, 8 ms of a 16 ms statement at 105,000 rows), so a
//! batch's cost grew with the table. A lateral subquery with a `LIMIT`
//! cannot become a hash join: each id is one index probe, whatever the
//! table's size.

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
