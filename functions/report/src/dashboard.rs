//! `GET /merchants/{id}/dashboard`: for the merchant's owner or an admin;
//! for anyone else the merchant's dashboard does not exist (404).

use lambda_http::http::StatusCode;
use uuid::Uuid;

use paystream::domain::UserId;
use paystream::http::{json, Request, Response};
use paystream::store::loyalty;
use paystream::{AppError, Platform};

pub async fn get(p: &Platform, req: &Request, raw_id: &str) -> Result<Response, AppError> {
    let caller = p.tokens.authenticate(req.headers())?;
    let id = Uuid::parse_str(raw_id).map_err(|_| AppError::not_found("merchant"))?;
    let db = p.pg.get().await?;
    match loyalty::merchant_owner(&**db, id).await? {
        Some(owner) if caller.may_see(UserId(owner)) => Ok(json(StatusCode::OK, &loyalty::dashboard(&**db, id).await?)),
        _ => Err(AppError::not_found("merchant")),
    }
}
