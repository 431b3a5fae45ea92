//! `POST /cards` and `GET /cards`: only the caller's own cards, ever.

use lambda_http::http::StatusCode;
use time::OffsetDateTime;

use paystream::api::RegisterCardRequest;
use paystream::domain::{CardExpiry, CardNumber, CardProductId, Role};
use paystream::http::{json, parse_json, Request, Response};
use paystream::store::{card_products, cards};
use paystream::{AppError, Platform};


pub async fn register(p: &Platform, req: &Request) -> Result<Response, AppError> {
    let caller = p.tokens.authenticate(req.headers())?;
    caller.require_role(&[Role::User])?;
    let body: RegisterCardRequest = parse_json(req, p.config.http.max_body_bytes)?;
    let pan = CardNumber::parse(&body.pan)?;
    let expiry = CardExpiry::parse(&body.expiry, OffsetDateTime::now_utc())?;
    let product = CardProductId(body.card_product_id);
    let fingerprint = pan.fingerprint(p.config.auth.pan_key()?);
    let last4 = pan.last4();
    drop(pan);

    let db = p.pg.get().await?;
    if !card_products::exists(&**db, product).await? {
        return Err(AppError::not_found("card product"));
    }
    let card_id = cards::insert(
        &**db,
        paystream::domain::CardId::generate(),
        &cards::NewCard { user_id: caller.user_id, card_product_id: product, last4: &last4, fingerprint: &fingerprint, expiry },
    )
    .await?;
    // The benefit guide caches each user's cards; this one must count now.
    if let Err(e) = paystream::store::benefits::forget_cards(&p.redis, caller.user_id.0).await {
        tracing::warn!(error = %e, "cached cards not forgotten; they refresh within CACHE_TTL_S");
    }
    tracing::info!(card_id = %card_id, user_id = %caller.user_id, "card registered");
    Ok(json(StatusCode::CREATED, &paystream::api::responses::RegisteredCard { card_id: card_id.0, last4, card_product_id: product.0 }))
}

pub async fn list(p: &Platform, req: &Request) -> Result<Response, AppError> {
    let caller = p.tokens.authenticate(req.headers())?;
    caller.require_role(&[Role::User])?;
    let cards = cards::list_for_user(&**p.pg.get().await?, caller.user_id).await?;
    Ok(json(StatusCode::OK, &cards))
}
