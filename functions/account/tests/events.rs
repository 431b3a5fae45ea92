//! Every sample event under `events/account/` runs through the handler
//! against a seeded database and gets the answer its route promises.
//! Tokens in the samples are placeholders, replaced here by real ones.

use account::AccountApi;
use paystream::demo::{DEMO_MERCHANT_OWNER, DEMO_USER_PASSWORD};
use paystream::http::respond;
use paystream::secret::Secret;
use paystream::testing::{apigw_request, body_json, platform};

const EVENTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/account");

async fn login(api: &AccountApi, username: &str) -> String {
    let body = serde_json::json!({"username": username, "password": DEMO_USER_PASSWORD}).to_string();
    let response = respond(api, apigw_request("POST", "/auth/login", &[("content-type", "application/json")], Some(&body))).await;
    assert_eq!(response.status(), 200);
    body_json(&response)["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_account_sample_event_gets_its_documented_answer() {
    let api = AccountApi::new(platform("account").await);
    paystream::demo::seed(&api.platform.pg, &api.platform.config, &Secret::new("admin-password-for-tests")).await.unwrap();
    let user_token = login(&api, "alice").await;
    let merchant_token = login(&api, DEMO_MERCHANT_OWNER).await;

    // (sample, expected status), in an order where each can succeed.
    let expected = [
        ("signup", 201),
        ("login", 200),
        ("list-card-products", 200),
        ("create-card", 201),
        ("list-cards", 200),
        ("create-merchant", 201),
        ("get-merchant", 200),
        ("list-notifications", 200),
        ("get-openapi", 200),
    ];
    let mut files: Vec<String> = std::fs::read_dir(EVENTS_DIR)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut listed: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
    listed.sort();
    assert_eq!(files, listed.iter().map(|n| format!("{n}.json")).collect::<Vec<_>>(), "every sample event is covered");

    for (name, status) in expected {
        let raw = std::fs::read_to_string(format!("{EVENTS_DIR}/{name}.json")).unwrap();
        let raw = raw.replace("REPLACE_WITH_USER_TOKEN", &user_token).replace("REPLACE_WITH_MERCHANT_TOKEN", &merchant_token);
        let request = lambda_http::request::from_str(&raw).unwrap_or_else(|e| panic!("{name}: not an API Gateway v2 event: {e}"));
        let response = respond(&api, request).await;
        assert_eq!(response.status().as_u16(), status, "{name}: {:?}", response.body());
        assert!(body_json(&response).is_object() || body_json(&response).is_array(), "{name}");
    }
}
