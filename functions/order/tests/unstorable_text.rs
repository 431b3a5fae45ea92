//! U+0000 in any text of the order routes answers 400 VALIDATION naming
//! where it was (it used to reach PostgreSQL and answer 500), and nothing
//! is stored. Real handler, real PostgreSQL and Redis.

use order::OrderApi;
use paystream::testing::{call, fresh_config, seed, user};
use paystream::Platform;
use serde_json::{json, Value};

fn assert_refused((status, body): (u16, Value), place: &str) {
    assert_eq!((status, body["code"].as_str()), (400, Some("VALIDATION")), "{place}: {body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(place) && detail.contains("U+0000"), "{place}: {detail}");
}

#[tokio::test]
async fn every_text_field_of_the_order_routes_refuses_nul() {
    let api = OrderApi::new(Platform::from_config("order", fresh_config().await).unwrap());
    seed(&api.platform).await;
    let admin = user(&api.platform, "admin").await.token;
    let alice = user(&api.platform, "alice").await.token;

    let product = json!({"title": "Limited sneakers", "price": 1000, "currency": "KRW", "stock": 5,
        "start_time": "2030-01-01T00:00:00Z", "end_time": "2030-01-02T00:00:00Z"});
    for field in ["title", "currency", "start_time", "end_time"] {
        let mut body = product.clone();
        body[field] = json!(format!("bad\u{0}{}", product[field].as_str().unwrap()));
        assert_refused(call(&api, "POST", "/products", &admin, None, Some(body)).await, &format!("field `{field}`"));
    }
    let stored: i64 = api.platform.pg.get().await.unwrap().query_one("SELECT count(*) FROM products", &[]).await.unwrap().get(0);
    assert_eq!(stored, 0, "no product was created");

    assert_refused(call(&api, "POST", "/orders", &alice, None, Some(json!({"product_id": "bad\u{0}id"}))).await, "field `product_id`");
    assert_refused(call(&api, "GET", "/products?limit=1%00", &alice, None, None).await, "query parameter `limit`");
    assert_refused(call(&api, "GET", "/products/%00", &alice, None, None).await, "the path");
    assert_refused(call(&api, "GET", "/orders/%00", &alice, None, None).await, "the path");

    let (status, body) = call(&api, "POST", "/products", &admin, None, Some(product)).await;
    assert_eq!(status, 201, "clean text still works: {body}");
}
