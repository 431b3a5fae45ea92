//! U+0000 in any text of the pay routes answers 400 VALIDATION naming where
//! it was, before anything is recorded or published. Real handler, real
//! PostgreSQL.

use pay::PayApi;
use paystream::demo::SEOUL_CAFE;
use paystream::testing::{call, fresh_config, seed, user};
use paystream::Platform;
use serde_json::{json, Value};

fn assert_refused((status, body): (u16, Value), place: &str) {
    assert_eq!((status, body["code"].as_str()), (400, Some("VALIDATION")), "{place}: {body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(place) && detail.contains("U+0000"), "{place}: {detail}");
}

#[tokio::test]
async fn every_text_field_of_the_pay_routes_refuses_nul() {
    let api = PayApi::new(Platform::from_config("pay", fresh_config().await).unwrap());
    seed(&api.platform).await;
    let alice = user(&api.platform, "alice").await;

    let payment = json!({"card_id": alice.cards[0], "merchant_id": SEOUL_CAFE.to_string(), "amount": 1000, "currency": "KRW"});
    for field in ["card_id", "merchant_id", "currency"] {
        let mut body = payment.clone();
        body[field] = json!("KR\u{0}W");
        assert_refused(call(&api, "POST", "/payments", &alice.token, Some("key-1"), Some(body)).await, &format!("field `{field}`"));
    }
    assert_refused(call(&api, "GET", "/payments/%00", &alice.token, None, None).await, "the path");
    assert_refused(call(&api, "GET", &format!("/payments/{}?x=%00", uuid::Uuid::new_v4()), &alice.token, None, None).await, "query parameter `x`");

    let db = api.platform.pg.get().await.unwrap();
    for table in ["payments", "idempotency_keys"] {
        let n: i64 = db.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
        assert_eq!(n, 0, "nothing recorded in {table}");
    }
}
