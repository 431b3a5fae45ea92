//! `POST /merchants` (MERCHANT or ADMIN; the caller owns it) and
//! `GET /merchants/{id}` (public facts, any signed-in caller).

use lambda_http::http::StatusCode;
use serde::Deserialize;

use paystream::domain::{Coordinates, CountryCode, MerchantCategory, MerchantId, Role, VipThreshold};
use paystream::http::{json, parse_json, Request, Response};
use paystream::store::merchants::{self, NewMerchant};
use paystream::{AppError, Platform};

const NAME_MAX_CHARS: usize = 120;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateMerchant {
    name: String,
    category: String,
    country: String,
    lat: f64,
    lon: f64,
    vip_threshold: Option<i64>,
}

pub async fn create(p: &Platform, req: &Request) -> Result<Response, AppError> {
    let caller = p.tokens.authenticate(req.headers())?;
    caller.require_role(&[Role::Merchant, Role::Admin])?;
    let body: CreateMerchant = parse_json(req, p.config.http.max_body_bytes)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX_CHARS {
        return Err(AppError::validation(format!("name must be 1-{NAME_MAX_CHARS} characters")));
    }
    let merchant = NewMerchant {
        owner: caller.user_id,
        name,
        category: MerchantCategory::parse(&body.category)?,
        country: CountryCode::parse(&body.country)?,
        location: Coordinates::parse(body.lat, body.lon)?,
        vip_threshold: VipThreshold::parse(body.vip_threshold)?,
    };
    let id = MerchantId::new_random();
    merchants::insert(&**p.pg.get().await?, id, &merchant).await?;
    tracing::info!(merchant_id = %id, owner = %caller.user_id, "merchant created");
    Ok(json(StatusCode::CREATED, &serde_json::json!({ "merchant_id": id })))
}

pub async fn get(p: &Platform, req: &Request, raw_id: &str) -> Result<Response, AppError> {
    p.tokens.authenticate(req.headers())?;
    let id = MerchantId::parse_path(raw_id)?;
    let view = merchants::public_view(&**p.pg.get().await?, id).await?.ok_or_else(|| AppError::not_found("merchant"))?;
    Ok(json(StatusCode::OK, &view))
}
