//! What the tests that run the real function binaries under the local
//! Lambda host share: where the binaries are, the environment that points a
//! function at a test's own database, Redis prefix and topics, starting a
//! host, and API Gateway events.
#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use paystream::config::Config;
use paystream_local::host::{FunctionSpec, Host};
use serde_json::{json, Value};

/// A function binary of the debug build (`cargo test --workspace` builds them).
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
    let path = target.join("debug").join(name);
    assert!(path.exists(), "{} missing: `cargo test --workspace --all-targets` builds it", path.display());
    path
}

/// A function binary that must have its crash points compiled in.
pub fn binary_with_failpoints(name: &str) -> PathBuf {
    let path = binary(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // The text `crash_point!` prints exists only in a build with failpoints.
    let marker = b"reached: aborting";
    assert!(
        bytes.windows(marker.len()).any(|w| w == marker),
        "{} was built without failpoints (a plain `cargo build` replaced it); `cargo test --workspace --all-targets` builds it with them",
        path.display()
    );
    path
}

/// The function's environment: the test's database, Redis prefix, topics
/// and consumer sharding, then `extra`, then `FAILPOINTS` when a crash point is armed.
pub fn function_env(config: &Config, extra: &[(&str, String)], failpoint: Option<&str>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("DATABASE_URL", config.database.url.expose().to_owned()),
        ("REDIS_KEY_PREFIX", config.redis.key_prefix.clone()),
        ("PAYMENT_TOPIC", config.kafka.payment_topic.clone()),
        ("ORDER_TOPIC", config.kafka.order_topic.clone()),
        ("CONSUMER_SHARD_MIN_EVENTS", config.consumer.shard_min_events.to_string()),
        ("LOG_LEVEL", "warn".to_owned()),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| ((*k).to_owned(), v.clone()))
    .collect();
    if let Some(step) = failpoint {
        env.push(("FAILPOINTS".to_owned(), format!("{step}=return")));
    }
    env
}

/// One instance of `function` (its process runs `binary`) under a new host.
pub async fn host(function: &str, binary: PathBuf, env: Vec<(String, String)>, timeout_ms: u64) -> Arc<Host> {
    let spec = FunctionSpec { name: function.to_owned(), binary, env, instances: 1, concurrency: 1, timeout_ms };
    Host::start(vec![spec]).await.expect("host starts the function")
}

/// An API Gateway HTTP API (payload 2.0) event, as the gateway sends it.
pub fn http_event(method: &str, path: &str, headers: Value, body: &Value) -> Bytes {
    let route = format!("{method} {path}");
    let event = json!({
        "version": "2.0",
        "routeKey": route,
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "paystream", "domainName": "localhost", "domainPrefix": "localhost",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "tests"},
            "requestId": uuid::Uuid::new_v4().to_string(), "routeKey": route, "stage": "$default",
            "time": "30/Nov/2026:12:00:00 +0000", "timeEpoch": 1_796_040_000_000u64
        },
        "isBase64Encoded": false,
        "body": body.to_string(),
    });
    Bytes::from(event.to_string())
}
