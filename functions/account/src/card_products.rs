//! `GET /card-products`: public catalogue with benefit rules.

use lambda_http::http::StatusCode;

use paystream::http::{json, Response};
use paystream::store::card_products;
use paystream::{AppError, Platform};

pub async fn list(p: &Platform) -> Result<Response, AppError> {
    let products = card_products::list_with_rules(&**p.pg.get().await?).await?;
    Ok(json(StatusCode::OK, &products))
}
