//! `verify`: the page behind the SMS link and the holder's decision, plus the
//! scheduled sweep that denies payments whose verification expired.
//!
//! `GET /verify/{token}` never changes state (link previewers fetch it);
//! `POST /verify/{token}` with `decision=approve|deny` (form or JSON) decides.

mod page;
mod sweep;

use lambda_http::http::StatusCode;
use time::OffsetDateTime;

use paystream::http::{self, method_not_allowed, no_route, HttpApi, Request, Response, ScheduledJob};
use paystream::sms::SmsSender;
use paystream::store::holders::{self, LastLocation};
use paystream::store::ledger::{self, reason, LedgerStatus};
use paystream::store::{notifications, verifications};
use paystream::verification::{hash_token, parse_token};
use paystream::{AppError, ErrorCode, Platform};

pub struct VerifyApi {
    pub platform: Platform,
    sms: SmsSender,
}

impl VerifyApi {
    pub fn new(platform: Platform) -> Self {
        let sms = SmsSender::new(&platform.config.sms);
        Self { platform, sms }
    }
}

impl HttpApi for VerifyApi {
    async fn route(&self, req: Request) -> Result<Response, AppError> {
        let result = match (http::segments(&req).as_slice(), req.method().as_str()) {
            (["verify", token], "GET") => self.show(token).await,
            (["verify", token], "POST") => self.decide(&req, token).await,
            (["verify", _], _) => Err(method_not_allowed()),
            _ => Err(no_route()),
        };
        // Browsers get pages, API clients problem+json.
        match result {
            Err(err) if http::wants_html(&req) => Ok(page::error(&err)),
            other => other,
        }
    }
}

impl ScheduledJob for VerifyApi {
    async fn run_scheduled(&self) -> Result<serde_json::Value, AppError> {
        sweep::run(&self.platform, &self.sms).await
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Approve,
    Deny,
}


fn parse_decision(req: &Request, max_bytes: usize) -> Result<Decision, AppError> {
    let content_type = http::header_str(req, "content-type").unwrap_or("");
    let raw = if content_type.starts_with("application/x-www-form-urlencoded") {
        let body: &[u8] = req.body().as_ref();
        if body.len() > max_bytes {
            return Err(AppError::new(ErrorCode::PayloadTooLarge, "body too large"));
        }
        let text = std::str::from_utf8(body).map_err(|_| AppError::validation("form must be UTF-8"))?;
        text.split('&').find_map(|pair| pair.strip_prefix("decision=")).unwrap_or("").to_owned()
    } else {
        http::parse_json::<paystream::api::VerificationDecision>(req, max_bytes)?.decision
    };
    match raw.as_str() {
        "approve" => Ok(Decision::Approve),
        "deny" => Ok(Decision::Deny),
        _ => Err(AppError::validation("decision must be approve or deny")),
    }
}

/// Refuses tokens that were used or expired; `status` is the verification's.
fn check_open(view: &verifications::VerificationView, now: OffsetDateTime) -> Result<(), AppError> {
    match view.status.as_str() {
        "EXPIRED" => Err(AppError::new(ErrorCode::TokenExpired, "this verification link has expired; the payment was denied")),
        "PENDING" if now >= view.expires_at => Err(AppError::new(ErrorCode::TokenExpired, "this verification link has expired")),
        "PENDING" => Ok(()),
        _ => Err(AppError::new(ErrorCode::TokenUsed, "this verification link was already used")),
    }
}

impl VerifyApi {
    async fn show(&self, raw_token: &str) -> Result<Response, AppError> {
        let token = parse_token(raw_token)?;
        let db = self.platform.pg.get().await?;
        let view = verifications::find(&**db, &hash_token(&token), false).await?.ok_or_else(|| AppError::not_found("verification"))?;
        check_open(&view, OffsetDateTime::now_utc())?;
        Ok(http::html(StatusCode::OK, page::approve_or_deny(&view)))
    }

    async fn decide(&self, req: &Request, raw_token: &str) -> Result<Response, AppError> {
        let p = &self.platform;
        let token = parse_token(raw_token)?;
        let decision = parse_decision(req, p.config.http.max_body_bytes)?;
        let mut db = p.pg.get().await?;
        let tx = paystream::db::begin(&mut db).await?;
        let view = verifications::find(&*tx, &hash_token(&token), true).await?.ok_or_else(|| AppError::not_found("verification"))?;
        check_open(&view, OffsetDateTime::now_utc())?;
        let (status, why, verification_status, kind) = match decision {
            Decision::Approve => (LedgerStatus::Completed, reason::APPROVED_BY_HOLDER, "APPROVED", notifications::kind::VERIFICATION_APPROVED),
            Decision::Deny => (LedgerStatus::Denied, reason::DENIED_BY_HOLDER, "DENIED", notifications::kind::VERIFICATION_DENIED),
        };
        verifications::decide(&*tx, view.id, verification_status).await?;
        ledger::settle_pending(&*tx, view.payment_id, status, why).await?;
        let location = LastLocation { payment_id: view.payment_id, country: view.country.clone(), lat: view.lat, lon: view.lon, at: view.occurred_at };
        match decision {
            Decision::Approve => {
                // Held, not refilled after commit: this approval may be older
                // than the location FDS keeps (which only moves forward), so
                // the next miss after the hold lapses reads the truth.
                holders::hold(&p.redis, &[view.user_id]).await?;
                holders::save_locations(&tx, &[(view.user_id, location)]).await?;
            }
            Decision::Deny => holders::lock(&*tx, view.user_id).await?,
        }
        let note = serde_json::json!({"payment_id": view.payment_id, "merchant": view.merchant_name, "amount": view.amount, "currency": view.currency});
        notifications::insert_once(&*tx, paystream::domain::UserId(view.user_id), kind, &note, &format!("verify:{}", view.payment_id)).await?;
        tx.commit().await?;
        tracing::info!(payment_id = %view.payment_id, decision = verification_status, "holder decided");
        let answer = paystream::api::responses::VerificationResult { payment_id: view.payment_id, status: status.as_str() };
        if http::wants_html(req) {
            Ok(http::html(StatusCode::OK, page::decided(&view, decision == Decision::Approve)))
        } else {
            Ok(http::json(StatusCode::OK, &answer))
        }
    }
}
