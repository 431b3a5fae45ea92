//! The README's demo: drives the account API through its real handler with
//! API Gateway v2 events, printing each step.

use account::AccountApi;
use lambda_http::Body;
use paystream::http::{respond, Response};
use paystream::Platform;
use serde_json::{json, Value};

pub async fn run(platform: Platform) -> Result<(), super::Error> {
    let api = AccountApi::new(platform);
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let username = format!("demo_{suffix}");
    println!("== account demo: user {username}");

    let signup = json!({"username": username, "email": format!("{username}@example.com"), "password": "demo-password-123", "phone": "+821055550000"});
    let (status, body) = call(&api, "POST", "/auth/signup", None, Some(signup)).await;
    println!("POST /auth/signup            -> {status} {body}");

    let (status, body) = call(&api, "POST", "/auth/login", None, Some(json!({"username": username, "password": "demo-password-123"}))).await;
    println!("POST /auth/login             -> {status} (token issued, expires_in {})", body["expires_in"]);
    let token = body["access_token"].as_str().ok_or("login returned no token")?.to_owned();

    let (status, body) = call(&api, "GET", "/card-products", None, None).await;
    let names: Vec<&str> = body.as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
    println!("GET /card-products           -> {status} {names:?}");
    let product = body[0]["card_product_id"].as_str().ok_or("no card products: run the seed")?.to_owned();

    let card = json!({"card_product_id": product, "pan": "4242 4242 4242 4242", "expiry": "12/30"});
    let (status, body) = call(&api, "POST", "/cards", Some(&token), Some(card)).await;
    println!("POST /cards                  -> {status} {body}");
    let bad = json!({"card_product_id": product, "pan": "4242 4242 4242 4241", "expiry": "12/30"});
    let (status, body) = call(&api, "POST", "/cards", Some(&token), Some(bad)).await;
    println!("POST /cards (bad PAN)        -> {status} {}", body["code"]);
    let (status, body) = call(&api, "GET", "/cards", Some(&token), None).await;
    println!("GET /cards                   -> {status} {} card(s), last4 {}", body.as_array().map_or(0, Vec::len), body[0]["last4"]);

    let merchant = paystream::demo::SEOUL_CAFE;
    let (status, body) = call(&api, "GET", &format!("/merchants/{merchant}"), Some(&token), None).await;
    println!("GET /merchants/{{id}}          -> {status} {} ({}, {})", body["name"], body["category"], body["country"]);
    let (status, body) = call(&api, "GET", "/me/notifications", Some(&token), None).await;
    println!("GET /me/notifications        -> {status} {body}");
    Ok(())
}

async fn call(api: &AccountApi, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let body = body.map(|b| b.to_string());
    let request = paystream::apigw::v2_request(method, path, &headers, body.as_deref());
    let response: Response = respond(api, request).await;
    let value = match response.body() {
        Body::Text(t) => serde_json::from_str(t).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (response.status().as_u16(), value)
}
