//! `POST /products` (ADMIN), `GET /products`, `GET /products/{id}` with the
//! live remaining stock.

use lambda_http::http::StatusCode;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use paystream::api::{is_name, trim_name, CreateProductRequest, PRODUCT_TITLE_MAX_CHARS, STOCK_MAX};
use paystream::domain::{Amount, Currency, Role};
use paystream::flash;
use paystream::http::{json, page_limit, parse_json, Request, Response};
use paystream::store::products::{self, Product};
use paystream::{AppError, Platform};

use crate::OrderApi;

fn parse_time(name: &str, raw: &str) -> Result<OffsetDateTime, AppError> {
    OffsetDateTime::parse(raw, &Rfc3339).map_err(|_| AppError::validation(format!("{name} must be an RFC 3339 time")))
}

pub async fn create(api: &OrderApi, req: &Request) -> Result<Response, AppError> {
    let p = &api.platform;
    let caller = p.tokens.authenticate(req.headers())?;
    caller.require_role(&[Role::Admin])?;
    let body: CreateProductRequest = parse_json(req, p.config.http.max_body_bytes)?;
    if !is_name(&body.title, PRODUCT_TITLE_MAX_CHARS) {
        return Err(AppError::validation(format!("title must be 1-{PRODUCT_TITLE_MAX_CHARS} characters, not all blank")));
    }
    let title = trim_name(&body.title);
    let price = Amount::parse(body.price)?;
    let currency = Currency::parse(&body.currency)?;
    if !(1..=STOCK_MAX).contains(&body.stock) {
        return Err(AppError::validation(format!("stock must be between 1 and {STOCK_MAX}")));
    }
    let (start_time, end_time) = (parse_time("start_time", &body.start_time)?, parse_time("end_time", &body.end_time)?);
    if start_time >= end_time {
        return Err(AppError::validation("start_time must be before end_time"));
    }
    let product = Product {
        id: paystream::domain::new_id(),
        title: title.to_owned(),
        price: price.minor(),
        currency: currency.code().to_owned(),
        stock: body.stock as i32,
        start_time,
        end_time,
    };
    products::insert(&**p.pg.get().await?, &product, caller.user_id.0).await?;
    tracing::info!(product_id = %product.id, stock = product.stock, "product created");
    Ok(json(StatusCode::CREATED, &product.view(i64::from(product.stock))))
}

/// Remaining stock from the gate, loading the gate from PostgreSQL if needed.
pub(crate) async fn live_remaining(p: &Platform, product: &Product) -> Result<i64, AppError> {
    if let Some(Some(n)) = flash::remaining(&p.redis, &[product.id]).await?.first() {
        return Ok(*n);
    }
    load_gate(p, product).await?;
    Ok(flash::remaining(&p.redis, &[product.id]).await?.first().copied().flatten().unwrap_or(0))
}

/// Rebuilds a product's gate from PostgreSQL (no-op if someone loaded it first).
pub(crate) async fn load_gate(p: &Platform, product: &Product) -> Result<(), AppError> {
    let state = products::sale_state(&**p.pg.get().await?, product).await?;
    if flash::load(&p.redis, product.id, &state).await? {
        tracing::info!(product_id = %product.id, remaining = state.remaining, "sale gate loaded from PostgreSQL");
    }
    Ok(())
}

pub async fn list(api: &OrderApi, req: &Request) -> Result<Response, AppError> {
    let p = &api.platform;
    let limit = page_limit(req, 50, p.config.http.page_limit_max)?;
    let all = products::list(&**p.pg.get().await?, limit).await?;
    let ids: Vec<Uuid> = all.iter().map(|p| p.id).collect();
    let cached = flash::remaining(&p.redis, &ids).await?;
    let mut views = Vec::with_capacity(all.len());
    for (product, remaining) in all.iter().zip(cached) {
        let remaining = match remaining {
            Some(n) => n,
            None => live_remaining(p, product).await?,
        };
        views.push(product.view(remaining));
    }
    Ok(json(StatusCode::OK, &views))
}

pub async fn get(api: &OrderApi, raw_id: &str) -> Result<Response, AppError> {
    let id = Uuid::parse_str(raw_id).map_err(|_| AppError::not_found("product"))?;
    let product = api.product(id).await?;
    let remaining = live_remaining(&api.platform, &product).await?;
    Ok(json(StatusCode::OK, &product.view(remaining)))
}
