//! `GET /merchants`: the merchants the caller owns (an admin: every
//! merchant), so the merchant console can find the dashboards to show.

use lambda_http::http::StatusCode;

use paystream::http::{json, page_limit, Request, Response};
use paystream::store::merchants;
use paystream::{AppError, Platform};

/// Merchants listed per answer unless `limit` says otherwise.
const DEFAULT_PAGE: u32 = 50;

pub async fn list(p: &Platform, req: &Request) -> Result<Response, AppError> {
    let caller = p.tokens.authenticate(req.headers())?;
    let limit = page_limit(req, DEFAULT_PAGE, p.config.http.page_limit_max)?;
    let owner = if caller.is_admin() { None } else { Some(caller.user_id.0) };
    let items = merchants::list(&**p.pg.get().await?, owner, limit).await?;
    Ok(json(StatusCode::OK, &paystream::api::responses::MerchantList { items }))
}
