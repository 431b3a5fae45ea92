//! `POST /merchants` (MERCHANT or ADMIN; the caller owns it) and
//! `GET /merchants/{id}` (public facts, any signed-in caller).

use lambda_http::http::StatusCode;

use paystream::api::{self, CreateMerchantRequest};
use paystream::domain::{Coordinates, CountryCode, MerchantCategory, MerchantId, Role, VipThreshold};
use paystream::http::{json, parse_json, Request, Response};
use paystream::store::merchants::{self, NewMerchant};
use paystream::{AppError, Platform};


pub async fn create(p: &Platform, req: &Request) -> Result<Response, AppError> {
    let caller = p.tokens.authenticate(req.headers())?;
    caller.require_role(&[Role::Merchant, Role::Admin])?;
    let body: CreateMerchantRequest = parse_json(req, p.config.http.max_body_bytes)?;
    if !api::is_name(&body.name, api::MERCHANT_NAME_MAX_CHARS) {
        return Err(AppError::validation(format!("name must be 1-{} characters, not all blank", api::MERCHANT_NAME_MAX_CHARS)));
    }
    let name = api::trim_name(&body.name);
    let merchant = NewMerchant {
        owner: caller.user_id,
        name,
        category: MerchantCategory::parse(&body.category)?,
        country: CountryCode::parse(&body.country)?,
        location: Coordinates::parse(body.lat, body.lon)?,
        vip_threshold: VipThreshold::parse(body.vip_threshold)?,
    };
    let id = MerchantId::generate();
    merchants::insert(&**p.pg.get().await?, id, &merchant).await?;
    tracing::info!(merchant_id = %id, owner = %caller.user_id, "merchant created");
    Ok(json(StatusCode::CREATED, &paystream::api::responses::MerchantCreated { merchant_id: id.0 }))
}

pub async fn get(p: &Platform, req: &Request, raw_id: &str) -> Result<Response, AppError> {
    p.tokens.authenticate(req.headers())?;
    let id = MerchantId::parse_path(raw_id)?;
    let view = merchants::public_view(&**p.pg.get().await?, id).await?.ok_or_else(|| AppError::not_found("merchant"))?;
    Ok(json(StatusCode::OK, &view))
}
