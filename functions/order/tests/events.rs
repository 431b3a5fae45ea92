//! The `order`, `settle` and `report` sample events run through their
//! handlers. The samples name a fixed product and order; the product is
//! created with that id here, and the order samples' ids are real ones.

mod common;

use common::Sale;
use paystream::http::{dispatch, respond};
use paystream::msk::handle_event;
use paystream::testing::{body_json, user};

const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events");
const PRODUCT: &str = "00000000-0000-4000-8000-00000000d001";
const ORDER: &str = "00000000-0000-4000-8000-00000000e001";

#[tokio::test]
async fn the_flash_sale_samples_get_their_documented_answers() {
    let sale = Sale::new().await;
    let alice = user(&sale.order.platform, "alice").await;
    let sample = |path: &str| {
        std::fs::read_to_string(format!("{EVENTS}/{path}"))
            .unwrap()
            .replace("REPLACE_WITH_ADMIN_TOKEN", &sale.admin)
            .replace("REPLACE_WITH_USER_TOKEN", &alice.token)
    };
    let request = |raw: String| lambda_http::request::from_str(&raw).expect("an API Gateway v2 event");

    // create-product makes a product with a fresh id; give the fixed sample id one too.
    let created = respond(sale.order.as_ref(), request(sample("order/create-product.json"))).await;
    assert_eq!(created.status(), 201);
    let db = sale.order.platform.pg.get().await.unwrap();
    db.execute(
        "INSERT INTO products (id, title, price, currency, stock, start_time, end_time, created_by)
         SELECT $1::uuid, title, price, currency, stock, start_time, end_time, created_by FROM products WHERE id = $2",
        &[&uuid::Uuid::parse_str(PRODUCT).unwrap(), &uuid::Uuid::parse_str(body_json(&created)["product_id"].as_str().unwrap()).unwrap()],
    )
    .await
    .unwrap();

    assert_eq!(respond(sale.order.as_ref(), request(sample("order/list-products.json"))).await.status(), 200);
    let product = respond(sale.order.as_ref(), request(sample("order/get-product.json"))).await;
    assert_eq!((product.status().as_u16(), body_json(&product)["remaining"].as_i64()), (200, Some(100)));

    let ordered = respond(sale.order.as_ref(), request(sample("order/create-order.json"))).await;
    assert_eq!(ordered.status(), 202);
    let order_id = body_json(&ordered)["order_id"].as_str().unwrap().to_owned();
    let fetched = respond(sale.order.as_ref(), request(sample("order/get-order.json").replace(ORDER, &order_id))).await;
    assert_eq!(body_json(&fetched)["status"], "PENDING");
    assert_eq!(respond(sale.order.as_ref(), request(sample("order/get-order.json"))).await.status(), 404, "the sample's own order id is nobody's");

    let relay = dispatch(sale.order.as_ref(), serde_json::from_str(&sample("order/relay-schedule.json")).unwrap(), Default::default()).await.unwrap();
    assert!(relay["published"].is_number(), "{relay}");

    // The settle sample names ORDER: settle that order, as the sample says.
    let (fixed, real) = (uuid::Uuid::parse_str(ORDER).unwrap(), uuid::Uuid::parse_str(&order_id).unwrap());
    db.execute("DELETE FROM order_outbox WHERE order_id = $1", &[&real]).await.unwrap();
    db.execute("UPDATE orders SET id = $1 WHERE id = $2", &[&fixed, &real]).await.unwrap();
    let event = serde_json::from_str(&sample("settle/order-batch.json")).expect("an MSK event");
    let outcome = handle_event(&sale.settle, event, "sample").await.unwrap();
    assert_eq!(outcome.applied, 1);

    let listed = respond(&sale.report, request(sample("report/list-settlements.json"))).await;
    assert_eq!(listed.status(), 200);
    assert_eq!(body_json(&listed)["items"].as_array().unwrap().len(), 1);
    let summary = respond(&sale.report, request(sample("report/settlements-summary.json"))).await;
    assert_eq!((summary.status().as_u16(), body_json(&summary)["count"].as_i64()), (200, Some(1)));
}
