//! The baseline of the cold-start and memory benchmark (`bench lambda`): the
//! smallest Rust Lambda function, which answers every event with itself.
//! Dev only, never deployed.

use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| async move { Ok::<_, Error>(event.payload) })).await
}
