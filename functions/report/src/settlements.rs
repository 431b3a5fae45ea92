//! `GET /settlements` (newest first, cursor pages) and
//! `GET /settlements/summary`. An admin may filter by anyone; a user sees
//! only their own (asking for someone else's is 403).

use lambda_http::http::StatusCode;
use uuid::Uuid;

use paystream::auth::Caller;
use paystream::domain::Role;
use paystream::http::{json, page_limit, query_param, Request, Response};
use paystream::store::settlements::{self, SettlementFilter};
use paystream::{AppError, Platform};

const DEFAULT_PAGE: u32 = 50;

fn uuid_param(req: &Request, name: &str) -> Result<Option<Uuid>, AppError> {
    query_param(req, name)
        .map(|raw| Uuid::parse_str(&raw).map_err(|_| AppError::validation(format!("{name} must be a UUID"))))
        .transpose()
}

/// The filter the caller is allowed to run.
fn filter_for(caller: &Caller, req: &Request) -> Result<SettlementFilter, AppError> {
    let user_id = uuid_param(req, "user_id")?;
    let product_id = uuid_param(req, "product_id")?;
    match caller.role {
        Role::Admin => Ok(SettlementFilter { user_id, product_id }),
        Role::User if user_id.is_none_or(|u| u == caller.user_id.0) => Ok(SettlementFilter { user_id: Some(caller.user_id.0), product_id }),
        Role::User => Err(AppError::forbidden("users see only their own settlements")),
        Role::Merchant => Err(AppError::forbidden("settlements are for admins and the buyers themselves")),
    }
}

pub async fn list(p: &Platform, req: &Request) -> Result<Response, AppError> {
    let caller = p.tokens.authenticate(req.headers())?;
    let filter = filter_for(&caller, req)?;
    let limit = page_limit(req, DEFAULT_PAGE, p.config.http.page_limit_max)?;
    let cursor = query_param(req, "cursor").map(|c| settlements::decode_cursor(&c)).transpose()?;
    let page = settlements::page(&**p.pg.get().await?, &filter, limit, cursor).await?;
    Ok(json(StatusCode::OK, &page))
}

pub async fn summary(p: &Platform, req: &Request) -> Result<Response, AppError> {
    let caller = p.tokens.authenticate(req.headers())?;
    let filter = filter_for(&caller, req)?;
    let summary = settlements::summary(&**p.pg.get().await?, &filter).await?;
    Ok(json(StatusCode::OK, &summary))
}
