//! The baseline of the cold-start and memory benchmark (`bench lambda`): the
//! smallest Rust Lambda function, which answers every event with itself.
//! The Lambda host's tests also drive it: `{"sleep_ms": N}` answers after N
//! ms, `{"abort": true}` aborts the process mid-invocation, `{"fail": "why"}`
//! returns a function error. Dev only, never deployed.

use std::time::Duration;

use lambda_runtime::{service_fn, Error, LambdaEvent};

async fn handle(event: LambdaEvent<serde_json::Value>) -> Result<serde_json::Value, Error> {
    let payload = event.payload;
    if let Some(ms) = payload.get("sleep_ms").and_then(serde_json::Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if payload.get("abort").and_then(serde_json::Value::as_bool) == Some(true) {
        std::process::abort();
    }
    if let Some(why) = payload.get("fail").and_then(serde_json::Value::as_str) {
        return Err(why.into());
    }
    Ok(payload)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Sequential unless AWS_LAMBDA_MAX_CONCURRENCY says otherwise, like the
    // platform's functions.
    lambda_runtime::run_concurrent(service_fn(handle)).await
}
