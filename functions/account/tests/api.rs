//! The account API against a real PostgreSQL (a fresh database per test).

use account::AccountApi;
use paystream::domain::Role;
use paystream::http::respond;
use paystream::testing::{apigw_request, body_json, platform, LogCapture};
use serde_json::{json, Value};

const PASSWORD: &str = "correct-horse-battery";

struct Client {
    api: AccountApi,
}

impl Client {
    async fn new() -> Self {
        Self { api: AccountApi::new(platform("account").await) }
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let body = body.map(|b| b.to_string());
        let response = respond(&self.api, apigw_request(method, path, &headers, body.as_deref())).await;
        (response.status().as_u16(), body_json(&response))
    }

    async fn signup(&self, username: &str, role: Option<&str>) -> (u16, Value) {
        let mut body = json!({"username": username, "email": format!("{username}@example.com"), "password": PASSWORD, "phone": "+821012345678"});
        if let Some(r) = role {
            body["role"] = json!(r);
        }
        self.call("POST", "/auth/signup", None, Some(body)).await
    }

    /// Signs up and logs in; returns the access token.
    async fn user(&self, username: &str, role: Option<&str>) -> String {
        let (status, body) = self.signup(username, role).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = self.call("POST", "/auth/login", None, Some(json!({"username": username, "password": PASSWORD}))).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn seed_products(&self) {
        paystream::demo::seed(&self.api.platform.pg, &self.api.platform.config, &paystream::secret::Secret::new("admin-password-for-tests"))
            .await
            .unwrap();
    }
}

fn everyday() -> String {
    paystream::demo::EVERYDAY.to_string()
}

#[tokio::test]
async fn signup_login_and_the_token_works() {
    let c = Client::new().await;
    let (status, body) = c.signup("alice", None).await;
    assert_eq!(status, 201);
    assert!(uuid::Uuid::parse_str(body["user_id"].as_str().unwrap()).is_ok());

    let (status, body) = c.call("POST", "/auth/login", None, Some(json!({"username": "ALICE", "password": PASSWORD}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let token = body["access_token"].as_str().unwrap();

    let (status, body) = c.call("GET", "/cards", Some(token), None).await;
    assert_eq!((status, body), (200, json!([])));
    let (status, _) = c.call("GET", "/me/notifications", Some(token), None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn duplicate_username_or_email_is_a_conflict() {
    let c = Client::new().await;
    assert_eq!(c.signup("bob", None).await.0, 201);
    let (status, body) = c.signup("Bob", None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("USERNAME_TAKEN")));
    assert_eq!(body["type"], "about:blank");

    let other = json!({"username": "bobby", "email": "BOB@example.com", "password": PASSWORD, "phone": "+821012345678"});
    let (status, body) = c.call("POST", "/auth/signup", None, Some(other)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("EMAIL_TAKEN")));
}

#[tokio::test]
async fn signup_validates_and_refuses_admin() {
    let c = Client::new().await;
    let (status, body) = c.signup("mallory", Some("ADMIN")).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("VALIDATION")));
    let (status, body) = c.call("POST", "/auth/signup", None, Some(json!({"username": "x"}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("MALFORMED_BODY")));
    let weak = json!({"username": "weak", "email": "w@example.com", "password": "short", "phone": "+821012345678"});
    assert_eq!(c.call("POST", "/auth/signup", None, Some(weak)).await.1["code"], "VALIDATION");
    assert_eq!(c.signup("merchant1", Some("MERCHANT")).await.0, 201);
}

#[tokio::test]
async fn wrong_password_or_unknown_user_is_401() {
    let c = Client::new().await;
    c.user("carol", None).await;
    for (username, password) in [("carol", "wrong-password-123"), ("nobody", PASSWORD), ("!!", PASSWORD)] {
        let (status, body) = c.call("POST", "/auth/login", None, Some(json!({"username": username, "password": password}))).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("BAD_CREDENTIALS")), "{username}");
    }
}

#[tokio::test]
async fn bad_pan_is_invalid_pan_and_unknown_product_is_404() {
    let c = Client::new().await;
    c.seed_products().await;
    let token = c.user("dave", None).await;
    for pan in ["4111111111111112", "1234", "4111-1111-1111-111a"] {
        let (status, body) = c.call("POST", "/cards", Some(&token), Some(json!({"card_product_id": everyday(), "pan": pan, "expiry": "12/30"}))).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("INVALID_PAN")), "{pan}");
    }
    let unknown = uuid::Uuid::new_v4();
    let (status, _) = c.call("POST", "/cards", Some(&token), Some(json!({"card_product_id": unknown, "pan": "4111111111111111", "expiry": "12/30"}))).await;
    assert_eq!(status, 404);
    let (status, body) = c.call("POST", "/cards", Some(&token), Some(json!({"card_product_id": everyday(), "pan": "4111111111111111", "expiry": "01/20"}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("VALIDATION")));
}

/// The PAN must not be stored, logged or returned, not even when a request
/// carrying it fails.
#[tokio::test]
async fn the_pan_appears_nowhere() {
    const PAN: &str = "4000056655665556";
    let logs = LogCapture::global();
    let c = Client::new().await;
    c.seed_products().await;
    let token = c.user("erin", None).await;

    let (status, body) = c.call("POST", "/cards", Some(&token), Some(json!({"card_product_id": everyday(), "pan": PAN, "expiry": "12/30"}))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["last4"], "5556");
    // Again (duplicate) and malformed, so error paths are covered too.
    let (status, body) = c.call("POST", "/cards", Some(&token), Some(json!({"card_product_id": everyday(), "pan": PAN, "expiry": "12/30"}))).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("CARD_ALREADY_REGISTERED")));
    let (status, body) = c.call("POST", "/cards", Some(&token), Some(json!({"card_product_id": everyday(), "pan": 4000056655665556_u64, "expiry": "12/30"}))).await;
    assert_eq!(status, 400);
    assert!(!body.to_string().contains(PAN));
    let (_, listed) = c.call("GET", "/cards", Some(&token), None).await;
    assert!(!listed.to_string().contains(PAN));

    // Every row of every table, as text.
    let db = c.api.platform.pg.get().await.unwrap();
    let tables = db.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", &[]).await.unwrap();
    assert!(tables.len() >= 8);
    for table in tables {
        let name: String = table.get(0);
        let rows = db.query(&format!("SELECT t::text FROM {name} t"), &[]).await.unwrap();
        for row in rows {
            let text: String = row.get(0);
            assert!(!text.contains(PAN) && !text.contains(&PAN[..12]), "PAN found in table {name}");
        }
    }
    let captured = logs.text();
    let card_id = body_card_id(&listed);
    let line = captured.lines().find(|l| l.contains("card registered") && l.contains(&card_id)).expect("logs were captured");
    let line: Value = serde_json::from_str(line).expect("log lines are JSON");
    assert!(line["spans"][0]["request_id"].as_str().is_some_and(|id| !id.is_empty()), "log lines carry the request id: {line}");
    assert!(!captured.contains(PAN) && !captured.contains(&PAN[..12]), "PAN found in logs");
}

fn body_card_id(cards: &Value) -> String {
    cards[0]["card_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn users_see_only_their_own_cards_and_notifications() {
    let c = Client::new().await;
    c.seed_products().await;
    let a = c.user("frank", None).await;
    let b = c.user("grace", None).await;
    let (status, _) = c.call("POST", "/cards", Some(&a), Some(json!({"card_product_id": everyday(), "pan": "4111111111111111", "expiry": "12/30"}))).await;
    assert_eq!(status, 201);
    let (_, a_cards) = c.call("GET", "/cards", Some(&a), None).await;
    let (_, b_cards) = c.call("GET", "/cards", Some(&b), None).await;
    assert_eq!(a_cards.as_array().unwrap().len(), 1);
    assert_eq!(b_cards, json!([]));
    // The same PAN may be registered by another holder (it is their card too).
    let (status, _) = c.call("POST", "/cards", Some(&b), Some(json!({"card_product_id": everyday(), "pan": "4111111111111111", "expiry": "12/30"}))).await;
    assert_eq!(status, 201);

    let db = c.api.platform.pg.get().await.unwrap();
    let frank = c.api.platform.tokens.verify(&a).unwrap().user_id;
    paystream::store::notifications::insert_once(&**db, frank, "VIP", &json!({"merchant": "x"}), "k1").await.unwrap();
    assert!(!paystream::store::notifications::insert_once(&**db, frank, "VIP", &json!({"merchant": "x"}), "k1").await.unwrap());
    let (_, a_notes) = c.call("GET", "/me/notifications", Some(&a), None).await;
    let (_, b_notes) = c.call("GET", "/me/notifications", Some(&b), None).await;
    assert_eq!(a_notes.as_array().unwrap().len(), 1);
    assert_eq!(a_notes[0]["kind"], "VIP");
    assert_eq!(b_notes, json!([]));
}

#[tokio::test]
async fn expired_forged_and_unsigned_tokens_are_401() {
    let c = Client::new().await;
    let good = c.user("heidi", None).await;
    let user = c.api.platform.tokens.verify(&good).unwrap().user_id;

    let expired = c.api.platform.tokens.issue_at(user, Role::User, time::OffsetDateTime::now_utc() - time::Duration::hours(1)).unwrap().access_token;
    let mut other = paystream::config::Config::from_env().unwrap();
    other.auth.jwt_secret = Some(paystream::secret::Secret::new("someone-elses-secret-someone-elses-secret"));
    let forged = paystream::auth::TokenIssuer::new(&other.auth).issue(user, Role::Admin).unwrap().access_token;
    let (_, payload, _) = { let mut p = good.split('.'); (p.next().unwrap(), p.next().unwrap().to_owned(), p.next()) };
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");

    for (what, token) in [("expired", expired.as_str()), ("wrong key", forged.as_str()), ("alg none", unsigned.as_str()), ("garbage", "abc")] {
        let (status, body) = c.call("GET", "/cards", Some(token), None).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("UNAUTHORIZED")), "{what}");
    }
    let (status, _) = c.call("GET", "/cards", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(c.call("GET", "/cards", Some(&good), None).await.0, 200);
}

#[tokio::test]
async fn merchants_are_created_by_merchants_and_readable_by_anyone_signed_in() {
    let c = Client::new().await;
    let owner = c.user("ivan", Some("MERCHANT")).await;
    let customer = c.user("judy", None).await;
    let shop = json!({"name": "Cafe Ivan", "category": "cafe", "country": "KR", "lat": 37.5, "lon": 127.0, "vip_threshold": 3});

    let (status, body) = c.call("POST", "/merchants", Some(&customer), Some(shop.clone())).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("FORBIDDEN")));
    let (status, body) = c.call("POST", "/merchants", Some(&owner), Some(shop)).await;
    assert_eq!(status, 201, "{body}");
    let id = body["merchant_id"].as_str().unwrap().to_owned();

    let (status, body) = c.call("GET", &format!("/merchants/{id}"), Some(&customer), None).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"merchant_id": id, "name": "Cafe Ivan", "category": "cafe", "country": "KR", "lat": 37.5, "lon": 127.0}));
    assert_eq!(c.call("GET", &format!("/merchants/{id}"), None, None).await.0, 401);
    assert_eq!(c.call("GET", &format!("/merchants/{}", uuid::Uuid::new_v4()), Some(&customer), None).await.0, 404);
    assert_eq!(c.call("GET", "/merchants/not-a-uuid", Some(&customer), None).await.0, 404);

    for bad in [
        json!({"name": "X", "category": "casino", "country": "KR", "lat": 0.0, "lon": 0.0}),
        json!({"name": "X", "category": "cafe", "country": "Korea", "lat": 0.0, "lon": 0.0}),
        json!({"name": "X", "category": "cafe", "country": "KR", "lat": 95.0, "lon": 0.0}),
        json!({"name": "", "category": "cafe", "country": "KR", "lat": 0.0, "lon": 0.0}),
        json!({"name": "X", "category": "cafe", "country": "KR", "lat": 0.0, "lon": 0.0, "vip_threshold": 0}),
    ] {
        let (status, body) = c.call("POST", "/merchants", Some(&owner), Some(bad.clone())).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("VALIDATION")), "{bad}");
    }
}

#[tokio::test]
async fn card_products_list_their_benefit_rules() {
    let c = Client::new().await;
    c.seed_products().await;
    let (status, body) = c.call("GET", "/card-products", None, None).await;
    assert_eq!(status, 200);
    let cafe = body.as_array().unwrap().iter().find(|p| p["name"] == "Cafe Lover").expect("seeded product");
    let rule = cafe["benefit_rules"].as_array().unwrap().iter().find(|r| r["scope"] == "category").unwrap();
    assert_eq!((rule["merchant_category"].as_str(), rule["rate_bp"].as_i64(), rule["cap_amount"].as_i64()), (Some("cafe"), Some(500), Some(2000)));
}

#[tokio::test]
async fn the_openapi_document_is_served_without_authentication() {
    let c = Client::new().await;
    let (status, body) = c.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body, paystream::openapi::document());
    assert_eq!(body["paths"]["/payments"]["post"]["responses"]["503"]["content"]["application/problem+json"]["schema"]["$ref"], "#/components/schemas/Problem");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let c = Client::new().await;
    let (status, body) = c.call("GET", "/nowhere", None, None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("NOT_FOUND")));
    let (status, body) = c.call("DELETE", "/cards", None, None).await;
    assert_eq!((status, body["code"].as_str()), (405, Some("METHOD_NOT_ALLOWED")));
}
