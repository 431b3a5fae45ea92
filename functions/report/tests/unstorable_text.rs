//! U+0000 in a query or path parameter of the report routes answers 400
//! VALIDATION naming it. Real handler, real PostgreSQL.

use paystream::testing::{call, fresh_config, seed, user};
use paystream::Platform;
use report::ReportApi;
use serde_json::Value;

fn assert_refused((status, body): (u16, Value), place: &str) {
    assert_eq!((status, body["code"].as_str()), (400, Some("VALIDATION")), "{place}: {body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(place) && detail.contains("U+0000"), "{place}: {detail}");
}

#[tokio::test]
async fn query_and_path_parameters_refuse_nul() {
    let api = ReportApi::new(Platform::from_config("report", fresh_config().await).unwrap());
    seed(&api.platform).await;
    let admin = user(&api.platform, "admin").await.token;
    for name in ["cursor", "user_id", "product_id", "limit"] {
        assert_refused(call(&api, "GET", &format!("/settlements?{name}=a%00b"), &admin, None, None).await, &format!("query parameter `{name}`"));
    }
    assert_refused(call(&api, "GET", "/settlements/summary?product_id=%00", &admin, None, None).await, "query parameter `product_id`");
    assert_refused(call(&api, "GET", "/merchants/%00/dashboard", &admin, None, None).await, "the path");
    assert_eq!(call(&api, "GET", "/settlements?limit=5", &admin, None, None).await.0, 200);
}
