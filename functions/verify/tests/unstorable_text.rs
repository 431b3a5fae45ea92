//! U+0000 in the decision (form or JSON) or the token answers 400
//! VALIDATION; nothing is decided. Real handler, real PostgreSQL.

use paystream::http::respond;
use paystream::testing::{apigw_request, body_json, platform};
use verify::VerifyApi;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

async fn post(api: &VerifyApi, path: &str, content_type: &str, body: &str) -> (u16, serde_json::Value) {
    let response = respond(api, apigw_request("POST", path, &[("content-type", content_type)], Some(body))).await;
    (response.status().as_u16(), body_json(&response))
}

#[tokio::test]
async fn the_decision_and_the_token_refuse_nul() {
    let api = VerifyApi::new(platform("verify").await);
    let path = format!("/verify/{TOKEN}");
    for (content_type, body) in [
        ("application/x-www-form-urlencoded", "decision=approve%00"),
        ("application/x-www-form-urlencoded", "decision=approve\u{0}"),
        ("application/json", r#"{"decision": "approve\u0000"}"#),
    ] {
        let (status, problem) = post(&api, &path, content_type, body).await;
        assert_eq!((status, problem["code"].as_str()), (400, Some("VALIDATION")), "{body:?}: {problem}");
    }
    let (_, problem) = post(&api, &path, "application/json", r#"{"decision": "approve\u0000"}"#).await;
    assert!(problem["detail"].as_str().unwrap().starts_with("field `decision` contains U+0000"), "{problem}");
    let (status, problem) = post(&api, "/verify/0123%00", "application/json", r#"{"decision": "approve"}"#).await;
    assert_eq!((status, problem["code"].as_str()), (400, Some("VALIDATION")), "{problem}");

    let decided: i64 = api.platform.pg.get().await.unwrap().query_one("SELECT count(*) FROM verifications WHERE status <> 'PENDING'", &[]).await.unwrap().get(0);
    assert_eq!(decided, 0);
}
