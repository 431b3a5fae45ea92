//! Settlements: exactly one per SUCCESS order (unique order_id), and the
//! queries behind the settlement reports.

use std::collections::HashMap;

use base64::Engine;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::rfc3339;
use crate::error::AppError;

pub struct ProductTerms {
    pub stock: i64,
    /// Units settled so far (`products.sold`).
    pub sold: i64,
    pub price: i64,
    pub currency: String,
}

/// Locks the products (serialising settlement per product) and returns
/// their terms with the units already sold: one row each, whatever the
/// product's order history.
pub async fn lock_products(db: &impl deadpool_postgres::GenericClient, ids: &[Uuid]) -> Result<HashMap<Uuid, ProductTerms>, AppError> {
    let rows = db.query(&db.prepare_cached("SELECT id, stock, sold, price, currency FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE").await?, &[&ids]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let terms = ProductTerms { stock: i64::from(r.get::<_, i32>(1)), sold: i64::from(r.get::<_, i32>(2)), price: r.get(3), currency: r.get(4) };
            (r.get(0), terms)
        })
        .collect())
}

pub struct OrderRow {
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub status: String,
}

pub async fn orders(db: &impl deadpool_postgres::GenericClient, ids: &[Uuid]) -> Result<HashMap<Uuid, OrderRow>, AppError> {
    let rows = db.query(&db.prepare_cached("SELECT id, user_id, product_id, status FROM orders WHERE id = ANY($1)").await?, &[&ids]).await?;
    Ok(rows.iter().map(|r| (r.get(0), OrderRow { user_id: r.get(1), product_id: r.get(2), status: r.get(3) })).collect())
}

pub struct Granted {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub product_id: Uuid,
    pub amount: i64,
    pub currency: String,
}

/// Marks orders SUCCESS with one settlement each and adds them to their
/// products' `sold`, or FAILED with a reason; at most four statements for
/// the whole batch. The caller holds the products' locks and read the
/// orders PENDING under them. Returns settlements inserted.
pub async fn apply(db: &impl deadpool_postgres::GenericClient, granted: &[Granted], failed: &[(Uuid, &str)]) -> Result<u64, AppError> {
    let mut inserted = 0;
    if !granted.is_empty() {
        let ids: Vec<Uuid> = granted.iter().map(|g| g.order_id).collect();
        let updated = db.execute(&db.prepare_cached("UPDATE orders SET status = 'SUCCESS', updated_at = now() WHERE id = ANY($1) AND status = 'PENDING'").await?, &[&ids]).await?;
        // Read PENDING under the products' locks, and only settle changes
        // an order's status, so every granted order is still PENDING here;
        // if not, roll back and let the batch be retried.
        if updated as usize != granted.len() {
            return Err(AppError::new(
                crate::ErrorCode::DependencyUnavailable,
                format!("{} of {} granted orders were no longer PENDING; batch will be retried", granted.len() - updated as usize, granted.len()),
            ));
        }
        let mut per_product: HashMap<Uuid, i32> = HashMap::new();
        for g in granted {
            *per_product.entry(g.product_id).or_default() += 1;
        }
        let (products, units): (Vec<Uuid>, Vec<i32>) = per_product.into_iter().unzip();
        db.execute(
            &db.prepare_cached(
                "UPDATE products p SET sold = p.sold + g.units FROM unnest($1::uuid[], $2::int[]) AS g(id, units) WHERE p.id = g.id",
            )
            .await?,
            &[&products, &units],
        )
        .await?;
        let settlement_ids: Vec<Uuid> = granted.iter().map(|_| crate::domain::new_id()).collect();
        let users: Vec<Uuid> = granted.iter().map(|g| g.user_id).collect();
        let products: Vec<Uuid> = granted.iter().map(|g| g.product_id).collect();
        let amounts: Vec<i64> = granted.iter().map(|g| g.amount).collect();
        let currencies: Vec<&str> = granted.iter().map(|g| g.currency.as_str()).collect();
        // A plain INSERT: these orders were PENDING until the UPDATE above,
        // and only that UPDATE's transaction writes their settlements, so
        // none exists; a unique violation would be a broken invariant and
        // fails the batch.
        inserted = db
            .execute(
                &db.prepare_cached(
                    "INSERT INTO settlements (id, order_id, user_id, product_id, amount, currency)
                     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[], $6::text[])",
                )
                .await?,
                &[&settlement_ids, &ids, &users, &products, &amounts, &currencies],
            )
            .await?;
    }
    if !failed.is_empty() {
        let ids: Vec<Uuid> = failed.iter().map(|(id, _)| *id).collect();
        let reasons: Vec<&str> = failed.iter().map(|(_, r)| *r).collect();
        db.execute(
            &db.prepare_cached(
                "UPDATE orders o SET status = 'FAILED', reason = f.reason, updated_at = now()
                 FROM unnest($1::uuid[], $2::text[]) AS f(id, reason) WHERE o.id = f.id AND o.status = 'PENDING'",
            )
            .await?,
            &[&ids, &reasons],
        )
        .await?;
    }
    Ok(inserted)
}

/// Who may see which settlements: an admin any, a user only their own.
#[derive(Clone, Copy, Debug, Default)]
pub struct SettlementFilter {
    pub user_id: Option<Uuid>,
    pub product_id: Option<Uuid>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Settlement)]
pub struct SettlementView {
    pub settlement_id: Uuid,
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub product_id: Uuid,
    /// Integer amount in minor units of `currency`.
    pub amount: i64,
    #[schema(schema_with = crate::api::responses::currency)]
    pub currency: String,
    #[schema(schema_with = crate::api::responses::time)]
    pub settled_at: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SettlementPage {
    pub items: Vec<SettlementView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_cursor: Option<String>,
}

fn where_clause(filter: &SettlementFilter, params: &mut Vec<Box<dyn ToSql + Sync + Send>>) -> String {
    let mut clauses = Vec::new();
    if let Some(user) = filter.user_id {
        params.push(Box::new(user));
        clauses.push(format!("user_id = ${}", params.len()));
    }
    if let Some(product) = filter.product_id {
        params.push(Box::new(product));
        clauses.push(format!("product_id = ${}", params.len()));
    }
    if clauses.is_empty() { "TRUE".into() } else { clauses.join(" AND ") }
}

fn encode_cursor(at: OffsetDateTime, id: Uuid) -> String {
    let raw = format!("{}:{}", at.unix_timestamp_nanos() / 1_000, id);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

pub fn decode_cursor(cursor: &str) -> Result<(OffsetDateTime, Uuid), AppError> {
    let bad = || AppError::validation("cursor is not one this API returned");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let (micros, id) = raw.split_once(':').ok_or_else(bad)?;
    let micros: i128 = micros.parse().map_err(|_| bad())?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(micros * 1_000).map_err(|_| bad())?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

/// One page, newest first.
pub async fn page(db: &impl GenericClient, filter: &SettlementFilter, limit: u32, cursor: Option<(OffsetDateTime, Uuid)>) -> Result<SettlementPage, AppError> {
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut sql = format!(
        "SELECT id, order_id, user_id, product_id, amount, currency, settled_at FROM settlements WHERE {}",
        where_clause(filter, &mut params)
    );
    if let Some((at, id)) = cursor {
        params.push(Box::new(at));
        params.push(Box::new(id));
        sql.push_str(&format!(" AND (settled_at, id) < (${}, ${})", params.len() - 1, params.len()));
    }
    params.push(Box::new(i64::from(limit) + 1));
    sql.push_str(&format!(" ORDER BY settled_at DESC, id DESC LIMIT ${}", params.len()));
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
    let rows = db.query(&sql, &refs).await?;
    let mut items: Vec<(OffsetDateTime, SettlementView)> = rows
        .iter()
        .map(|r| {
            let at: OffsetDateTime = r.get(6);
            (at, SettlementView {
                settlement_id: r.get(0),
                order_id: r.get(1),
                user_id: r.get(2),
                product_id: r.get(3),
                amount: r.get(4),
                currency: r.get(5),
                settled_at: rfc3339(at),
            })
        })
        .collect();
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|(at, v)| encode_cursor(*at, v.settlement_id))
    } else {
        None
    };
    Ok(SettlementPage { items: items.into_iter().map(|(_, v)| v).collect(), next_cursor })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SettlementSummary {
    #[schema(minimum = 0)]
    pub count: i64,
    /// Sum in minor units of `currency`.
    pub total_amount: i64,
    /// The currency of the total; `null` when the settlements mix currencies.
    #[schema(schema_with = crate::api::responses::currency_or_null, required = true)]
    pub currency: Option<String>,
    /// The newest settlement, null when there is none.
    #[schema(required = true)]
    pub latest: Option<SettlementView>,
}

pub async fn summary(db: &impl GenericClient, filter: &SettlementFilter) -> Result<SettlementSummary, AppError> {
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let sql = format!(
        "SELECT count(*), coalesce(sum(amount), 0)::bigint, min(currency), max(currency) FROM settlements WHERE {}",
        where_clause(filter, &mut params)
    );
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
    let row = db.query_one(&sql, &refs).await?;
    let (min, max): (Option<String>, Option<String>) = (row.get(2), row.get(3));
    let latest = page(db, filter, 1, None).await?.items.into_iter().next();
    Ok(SettlementSummary {
        count: row.get(0),
        total_amount: row.get(1),
        currency: if min == max { min } else { None },
        latest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let at = time::macros::datetime!(2026-11-22 12:00:00.123456 UTC);
        let id = crate::domain::new_id();
        assert_eq!(decode_cursor(&encode_cursor(at, id)).unwrap(), (at, id));
        assert!(decode_cursor("not-a-cursor").is_err());
        assert!(decode_cursor("").is_err());
    }
}
