//! The `pay` sample events run through the handler and get their answers.

use pay::PayApi;
use paystream::http::respond;
use paystream::testing::{body_json, create_topics, fresh_config, seed, user};
use paystream::Platform;

const EVENTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/pay");
/// The payment id the `get-payment` sample names; replaced by a real one.
const SAMPLE_PAYMENT_ID: &str = "00000000-0000-4000-8000-00000000f001";

#[tokio::test]
async fn every_pay_sample_event_gets_its_documented_answer() {
    let config = fresh_config().await;
    create_topics(&config, &[(&config.kafka.payment_topic, 3)]).await;
    let api = PayApi::new(Platform::from_config("pay", config).unwrap());
    seed(&api.platform).await;
    let alice = user(&api.platform, "alice").await;
    let load = |name: &str, payment_id: &str| {
        let raw = std::fs::read_to_string(format!("{EVENTS_DIR}/{name}.json")).unwrap();
        let raw = raw.replace("REPLACE_WITH_USER_TOKEN", &alice.token).replace(SAMPLE_PAYMENT_ID, payment_id);
        lambda_http::request::from_str(&raw).unwrap_or_else(|e| panic!("{name}: {e}"))
    };

    let created = respond(&api, load("create-payment", "")).await;
    assert_eq!(created.status(), 202);
    let id = body_json(&created)["payment_id"].as_str().unwrap().to_owned();
    let again = respond(&api, load("create-payment", "")).await;
    assert_eq!(body_json(&again)["payment_id"], id.as_str(), "the sample's Idempotency-Key replays");

    let fetched = respond(&api, load("get-payment", &id)).await;
    assert_eq!(fetched.status(), 200);
    assert_eq!(body_json(&fetched)["status"], "RECEIVED");
    assert_eq!(respond(&api, load("get-payment", SAMPLE_PAYMENT_ID)).await.status(), 404, "unknown payment");
}
