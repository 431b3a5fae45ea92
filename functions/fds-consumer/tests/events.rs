//! The `fds-consumer` and `verify` sample events run through their handlers:
//! the MSK sample (records grouped by topic-partition, base64) as MSK
//! delivers it, the HTTP samples as raw Lambda payloads through `dispatch`
//! (the same path the Lambda runtime takes), and the EventBridge schedule.

mod common;

use common::World;
use paystream::http::dispatch;
use paystream::msk::handle_event;

const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events");
const SAMPLE_TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn sample(path: &str) -> String {
    std::fs::read_to_string(format!("{EVENTS}/{path}")).unwrap()
}

async fn invoke(w: &World, raw: String) -> serde_json::Value {
    let payload: serde_json::Value = serde_json::from_str(&raw).unwrap();
    dispatch(&w.verify, payload, lambda_http::Context::default()).await.expect("invocation succeeds")
}

#[tokio::test]
async fn the_msk_sample_holds_paris_and_the_verify_samples_decide_it() {
    let w = World::new().await;
    let event = serde_json::from_str(&sample("fds-consumer/payment-batch.json")).expect("an MSK event");
    let outcome = handle_event(&w.fds, event, "sample").await.unwrap();
    assert_eq!(outcome.applied, 2);
    let paris = uuid::uuid!("00000000-0000-4000-8000-00000000f102");
    assert_eq!(w.status(paris).await.0, "PENDING");
    let token = w.last_token().await;

    let unknown = invoke(&w, sample("verify/get-verification.json")).await;
    assert_eq!(unknown["statusCode"], 404, "the sample's own token is nobody's");
    let page = invoke(&w, sample("verify/get-verification.json").replace(SAMPLE_TOKEN, &token)).await;
    assert_eq!(page["statusCode"], 200);
    assert!(page["headers"]["content-type"].as_str().unwrap().starts_with("text/html"));
    assert!(page["body"].as_str().unwrap().contains("Approve"));
    let decided = invoke(&w, sample("verify/post-decision.json").replace(SAMPLE_TOKEN, &token)).await;
    assert_eq!(decided["statusCode"], 200, "{decided}");
    assert_eq!(w.status(paris).await.0, "COMPLETED");

    let swept = invoke(&w, sample("verify/schedule.json")).await;
    assert_eq!(swept["denied"], 0, "{swept}");
}
