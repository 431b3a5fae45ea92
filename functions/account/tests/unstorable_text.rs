//! Text PostgreSQL cannot hold (U+0000) is the client's mistake: every
//! account route answers 400 VALIDATION naming where it was, nothing is
//! stored, and the database's own refusal (SQLSTATE 22021/22P05) maps to
//! VALIDATION too, never 500. Real handlers, real PostgreSQL and Redis.

use account::AccountApi;
use paystream::domain::{Coordinates, CountryCode, MerchantCategory, MerchantId, VipThreshold};
use paystream::http::respond;
use paystream::store::merchants::{self, NewMerchant};
use paystream::testing::{apigw_request, body_json, platform};
use paystream::{AppError, ErrorCode};
use serde_json::{json, Value};

const PASSWORD: &str = "correct-horse-battery";
const NUL: &str = "bad\u{0}text";

async fn call(api: &AccountApi, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    let body = body.map(|b| b.to_string());
    let response = respond(api, apigw_request(method, path, &headers, body.as_deref())).await;
    (response.status().as_u16(), body_json(&response))
}

/// Asserts 400 VALIDATION whose detail names `place`.
fn assert_refused((status, body): (u16, Value), place: &str) {
    assert_eq!((status, body["code"].as_str()), (400, Some("VALIDATION")), "{place}: {body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(place) && detail.contains("U+0000"), "{place}: {detail}");
    assert!(!detail.contains("bad"), "the value is not echoed: {detail}");
}

/// `good` with `field` replaced by text holding U+0000.
fn with_nul(good: &Value, field: &str) -> Value {
    let mut body = good.clone();
    body[field] = json!(NUL);
    body
}

async fn token(api: &AccountApi, username: &str, role: &str) -> String {
    let signup = json!({"username": username, "email": format!("{username}@example.com"), "password": PASSWORD, "phone": "+821012345678", "role": role});
    assert_eq!(call(api, "POST", "/auth/signup", None, Some(signup)).await.0, 201);
    let (status, body) = call(api, "POST", "/auth/login", None, Some(json!({"username": username, "password": PASSWORD}))).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn count(api: &AccountApi, table: &str) -> i64 {
    api.platform.pg.get().await.unwrap().query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn every_text_field_of_every_account_route_refuses_nul() {
    let api = AccountApi::new(platform("account").await);
    paystream::testing::seed(&api.platform).await;
    let users_before = count(&api, "users").await;

    let signup = json!({"username": "zed", "email": "zed@example.com", "password": PASSWORD, "phone": "+821012345678", "role": "USER"});
    for field in ["username", "email", "password", "phone", "role"] {
        assert_refused(call(&api, "POST", "/auth/signup", None, Some(with_nul(&signup, field))).await, &format!("field `{field}`"));
    }
    assert_eq!(count(&api, "users").await, users_before, "no account was created");

    let login = json!({"username": "alice", "password": "demo-password"});
    for field in ["username", "password"] {
        assert_refused(call(&api, "POST", "/auth/login", None, Some(with_nul(&login, field))).await, &format!("field `{field}`"));
    }

    let user = token(&api, "yara", "USER").await;
    let card = json!({"card_product_id": paystream::demo::EVERYDAY.to_string(), "pan": "4111111111111111", "expiry": "12/30"});
    for field in ["card_product_id", "pan", "expiry"] {
        assert_refused(call(&api, "POST", "/cards", Some(&user), Some(with_nul(&card, field))).await, &format!("field `{field}`"));
    }
    let cards_before = count(&api, "cards").await;

    // The reported case: a merchant name with U+0000 answered 500.
    let owner = token(&api, "xavier", "MERCHANT").await;
    let merchants_before = count(&api, "merchants").await;
    let shop = json!({"name": "Cafe X", "category": "cafe", "country": "KR", "lat": 37.5, "lon": 127.0});
    for field in ["name", "category", "country"] {
        assert_refused(call(&api, "POST", "/merchants", Some(&owner), Some(with_nul(&shop, field))).await, &format!("field `{field}`"));
    }
    assert_eq!(count(&api, "merchants").await, merchants_before, "no merchant was created");
    assert_eq!(count(&api, "cards").await, cards_before, "no card was registered");

    // Query and path parameters, percent-encoded as a client sends them.
    assert_refused(call(&api, "GET", "/me/notifications?limit=%00", Some(&user), None).await, "query parameter `limit`");
    assert_refused(call(&api, "GET", "/cards?anything=a%00b", Some(&user), None).await, "query parameter `anything`");
    assert_refused(call(&api, "GET", "/merchants/%00", Some(&user), None).await, "the path");
    assert_refused(call(&api, "GET", "/card-products?x=%00", None, None).await, "query parameter `x`");

    // The same routes still work with clean text.
    let (status, body) = call(&api, "POST", "/merchants", Some(&owner), Some(shop)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(call(&api, "GET", "/me/notifications?limit=5", Some(&user), None).await.0, 200);
}

/// The backstop: a value with U+0000 that reaches PostgreSQL by any path is
/// VALIDATION (22021 in text, 22P05 in jsonb), not INTERNAL.
#[tokio::test]
async fn the_database_refusing_nul_is_validation_not_internal() {
    let api = AccountApi::new(platform("account").await);
    let owner = token(&api, "walter", "MERCHANT").await;
    let owner = api.platform.tokens.verify(&owner).unwrap().user_id;
    let db = api.platform.pg.get().await.unwrap();

    let merchant = NewMerchant {
        owner,
        name: NUL,
        category: MerchantCategory::parse("cafe").unwrap(),
        country: CountryCode::parse("KR").unwrap(),
        location: Coordinates::parse(37.5, 127.0).unwrap(),
        vip_threshold: VipThreshold::parse(None).unwrap(),
    };
    let err = merchants::insert(&**db, MerchantId::generate(), &merchant).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Validation, "{err:?}");
    assert_eq!(err.detail, paystream::error::TEXT_NOT_STORABLE);

    let text = db.query_one("SELECT $1::text", &[&NUL]).await.unwrap_err();
    assert_eq!(text.code().map(|c| c.code()), Some("22021"));
    assert_eq!(AppError::from(text).code, ErrorCode::Validation);
    let jsonb = db.query_one("SELECT $1::jsonb", &[&json!({"note": NUL})]).await.unwrap_err();
    assert_eq!(jsonb.code().map(|c| c.code()), Some("22P05"));
    assert_eq!(AppError::from(jsonb).code, ErrorCode::Validation);
}
