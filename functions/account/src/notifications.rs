//! `GET /me/notifications`: the caller's own notifications, newest first.

use lambda_http::http::StatusCode;

use paystream::http::{json, page_limit, Request, Response};
use paystream::store::notifications;
use paystream::{AppError, Platform};

const DEFAULT_PAGE: u32 = 50;

pub async fn list(p: &Platform, req: &Request) -> Result<Response, AppError> {
    let caller = p.tokens.authenticate(req.headers())?;
    let limit = page_limit(req, DEFAULT_PAGE, p.config.http.page_limit_max)?;
    let items = notifications::list_for_user(&**p.pg.get().await?, caller.user_id, limit).await?;
    Ok(json(StatusCode::OK, &items))
}
