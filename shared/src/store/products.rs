//! Flash-sale products.

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use super::rfc3339;
use crate::error::AppError;
use crate::flash::SaleState;

pub struct Product {
    pub id: Uuid,
    pub title: String,
    pub price: i64,
    pub currency: String,
    pub stock: i32,
    pub start_time: OffsetDateTime,
    pub end_time: OffsetDateTime,
}

impl Product {
    /// The API view, with live remaining stock.
    pub fn view(&self, remaining: i64) -> ProductView {
        ProductView {
            product_id: self.id,
            title: self.title.clone(),
            price: self.price,
            currency: self.currency.clone(),
            stock: self.stock,
            remaining: remaining.clamp(0, i64::from(self.stock)),
            start_time: rfc3339(self.start_time),
            end_time: rfc3339(self.end_time),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Product)]
pub struct ProductView {
    pub product_id: Uuid,
    pub title: String,
    /// Integer amount in minor units of `currency`.
    pub price: i64,
    #[schema(schema_with = crate::api::responses::currency)]
    pub currency: String,
    #[schema(minimum = 1)]
    pub stock: i32,
    /// Live remaining stock, 0..stock.
    #[schema(minimum = 0)]
    pub remaining: i64,
    #[schema(schema_with = crate::api::responses::time)]
    pub start_time: String,
    #[schema(schema_with = crate::api::responses::time)]
    pub end_time: String,
}

const COLUMNS: &str = "id, title, price, currency, stock, start_time, end_time";

fn from_row(r: &tokio_postgres::Row) -> Product {
    Product { id: r.get(0), title: r.get(1), price: r.get(2), currency: r.get(3), stock: r.get(4), start_time: r.get(5), end_time: r.get(6) }
}

pub async fn insert(db: &impl GenericClient, p: &Product, created_by: Uuid) -> Result<(), AppError> {
    db.execute(
        "INSERT INTO products (id, title, price, currency, stock, start_time, end_time, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&p.id, &p.title, &p.price, &p.currency, &p.stock, &p.start_time, &p.end_time, &created_by],
    )
    .await?;
    Ok(())
}

pub async fn get(db: &impl GenericClient, id: Uuid) -> Result<Option<Product>, AppError> {
    Ok(db.query_opt(&format!("SELECT {COLUMNS} FROM products WHERE id = $1"), &[&id]).await?.map(|r| from_row(&r)))
}

/// Products newest sale first, at most `limit`.
pub async fn list(db: &impl GenericClient, limit: u32) -> Result<Vec<Product>, AppError> {
    let rows = db.query(&format!("SELECT {COLUMNS} FROM products ORDER BY start_time DESC, id LIMIT $1"), &[&i64::from(limit)]).await?;
    Ok(rows.iter().map(from_row).collect())
}

/// The truth the Redis gate is rebuilt from.
pub async fn sale_state(db: &impl GenericClient, p: &Product) -> Result<SaleState, AppError> {
    let rows = db.query("SELECT user_id, status FROM orders WHERE product_id = $1", &[&p.id]).await?;
    let taken = rows.iter().filter(|r| r.get::<_, &str>(1) != "FAILED").count() as i64;
    Ok(SaleState {
        start_time: p.start_time,
        end_time: p.end_time,
        remaining: i64::from(p.stock) - taken,
        buyers: rows.iter().map(|r| r.get(0)).collect(),
    })
}

/// Units left to sell: stock less what is sold (`products.sold`) and what
/// is accepted but not yet settled. Reads one product row and the
/// product's PENDING orders only, never its whole order history.
pub async fn remaining(db: &impl GenericClient, id: Uuid) -> Result<Option<i64>, AppError> {
    let row = db
        .query_opt(
            "SELECT p.stock::bigint - p.sold - (SELECT count(*) FROM orders o WHERE o.product_id = p.id AND o.status = 'PENDING')
             FROM products p WHERE p.id = $1",
            &[&id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}
