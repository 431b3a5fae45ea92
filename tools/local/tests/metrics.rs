//! The metrics of real invocations: the real `pay` and `fds-consumer`
//! binaries run under the local Lambda host and their stdout is read back
//! as CloudWatch would: every line with `_aws` is an Embedded Metric Format
//! document. Checked: namespace, the one `function` dimension, units
//! (Count for counters, Milliseconds for latencies), one cold start per
//! execution environment, values written before the invocation answered,
//! and a consumer batch larger than one EMF document may carry (100 values
//! per metric) split over several lines with no value lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use paystream::config::Config;
use paystream::demo::{ALICE_EVERYDAY_CARD, SEOUL_CAFE};
use paystream::testing::{create_topics, fresh_config, msk_event, read_topic, seed, user, TestUser};
use paystream::Platform;
use paystream_local::host::Host;
use serde_json::{json, Value};

mod common;

const TIMEOUT_MS: u64 = 15_000;
/// More than one EMF document's 100 values, so FDS must split its batch.
const PAYMENTS: usize = 110;

/// The host sends a function's stdout to its own or nowhere; this wrapper
/// (exec'd by the host as the function's binary, so the process, its pid
/// and its Lambda environment are the function's) appends it to a file.
fn capturing(dir: &Path, function: &str) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let out = dir.join(format!("{function}.stdout"));
    let script = dir.join(function);
    std::fs::write(&script, format!("#!/bin/sh\nexec '{}' >>'{}'\n", common::binary(function).display(), out.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, out)
}

async fn host(config: &Config, function: &str, binary: PathBuf) -> Arc<Host> {
    common::host(function, binary, common::function_env(config, &[], None), TIMEOUT_MS).await
}

fn payment_request(alice: &TestUser, key: &str) -> Bytes {
    let headers = json!({"content-type": "application/json", "authorization": alice.bearer(), "idempotency-key": key});
    common::http_event("POST", "/payments", headers, &json!({"card_id": ALICE_EVERYDAY_CARD.0, "merchant_id": SEOUL_CAFE.0, "amount": 4_500, "currency": "KRW"}))
}

/// The EMF documents of a captured stdout, each checked against the format.
fn emf_documents(out: &Path, function: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let docs: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v.get("_aws").is_some()).collect();
    for doc in &docs {
        let aws = &doc["_aws"];
        assert!(aws["Timestamp"].as_u64().is_some_and(|t| t > 1_700_000_000_000), "Timestamp in ms: {doc}");
        let directive = &aws["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "paystream", "{doc}");
        assert_eq!(directive["Dimensions"], json!([["function"]]), "one low-cardinality dimension: {doc}");
        assert_eq!(doc["function"], function, "{doc}");
        assert!(doc["request_id"].as_str().is_some_and(|id| !id.is_empty()), "request id property: {doc}");
        for metric in directive["Metrics"].as_array().expect("Metrics") {
            let name = metric["Name"].as_str().unwrap();
            let value = &doc[name];
            let values = value.as_array().map_or(1, Vec::len);
            assert!(value.is_number() || value.is_array(), "{name} has a value: {doc}");
            assert!(values <= 100, "an EMF document carries at most 100 values per metric: {doc}");
        }
    }
    docs
}

/// Per metric: its unit (the same on every line) and all its values.
fn by_metric(docs: &[Value]) -> HashMap<String, (String, Vec<f64>)> {
    let mut metrics: HashMap<String, (String, Vec<f64>)> = HashMap::new();
    for doc in docs {
        for metric in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap().to_owned();
            let unit = metric["Unit"].as_str().unwrap_or_else(|| panic!("{name} names its unit: {doc}")).to_owned();
            let values: Vec<f64> = match &doc[&name] {
                Value::Array(values) => values.iter().map(|v| v.as_f64().unwrap()).collect(),
                v => vec![v.as_f64().unwrap()],
            };
            let entry = metrics.entry(name.clone()).or_insert_with(|| (unit.clone(), Vec::new()));
            assert_eq!(entry.0, unit, "{name} keeps its unit");
            entry.1.extend(values);
        }
    }
    metrics
}

fn expect<'m>(metrics: &'m HashMap<String, (String, Vec<f64>)>, name: &str, unit: &str) -> &'m [f64] {
    let (got_unit, values) = metrics.get(name).unwrap_or_else(|| panic!("{name} emitted; got {:?}", metrics.keys().collect::<Vec<_>>()));
    assert_eq!(got_unit, unit, "{name}'s unit");
    values
}

#[tokio::test]
async fn real_invocations_emit_counters_latencies_and_one_cold_start_as_emf() {
    let config = fresh_config().await;
    create_topics(&config, &[(&config.kafka.payment_topic, 1)]).await;
    let platform = Platform::from_config("tests", config).unwrap();
    seed(&platform).await;
    let alice = user(&platform, "alice").await;
    let dir = std::env::temp_dir().join(format!("paystream-metrics-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();

    let (pay_binary, pay_out) = capturing(&dir, "pay");
    let pay = host(&platform.config, "pay", pay_binary).await;
    for i in 0..PAYMENTS {
        let raw = pay.invoke("pay", payment_request(&alice, &format!("metrics-{i}"))).await.unwrap();
        let response: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(response["statusCode"], 202, "{response}");
        if i == 0 {
            // Flushed before the answer, not at exit: the line is already there.
            let first = by_metric(&emf_documents(&pay_out, "pay"));
            assert_eq!(expect(&first, "PaymentsAccepted", "Count"), [1.0]);
            assert_eq!(expect(&first, "IntakeLatency", "Milliseconds").len(), 1);
        }
    }
    pay.shutdown().await;

    let pay_metrics = by_metric(&emf_documents(&pay_out, "pay"));
    assert_eq!(expect(&pay_metrics, "ColdStart", "Count"), [1.0], "one environment, one cold start");
    let init = expect(&pay_metrics, "InitDuration", "Milliseconds");
    assert!(init.len() == 1 && init[0] > 0.0 && init[0] < 10_000.0, "init duration {init:?}");
    assert_eq!(expect(&pay_metrics, "PaymentsAccepted", "Count").iter().sum::<f64>(), PAYMENTS as f64);
    let intake = expect(&pay_metrics, "IntakeLatency", "Milliseconds");
    assert_eq!(intake.len(), PAYMENTS, "one intake latency per payment");
    assert!(intake.iter().all(|ms| *ms > 0.0 && *ms < TIMEOUT_MS as f64), "{intake:?}");

    let records = read_topic(&platform.config, &platform.config.kafka.payment_topic, PAYMENTS, Duration::from_millis(800)).await;
    assert_eq!(records.len(), PAYMENTS, "events on the topic");
    let batch = Bytes::from(serde_json::to_vec(&msk_event(&records)).unwrap());
    let (fds_binary, fds_out) = capturing(&dir, "fds-consumer");
    let fds = host(&platform.config, "fds-consumer", fds_binary).await;
    // A payload that is not an MSK event fails its invocation, naming the
    // field (the consumer takes the body from the runtime untouched and
    // parses it itself: msk::TakeBody, msk::parse_records), and so does a
    // body that is not JSON at all; the same environment serves the next one.
    let not_msk = Bytes::from_static(br#"{"eventSource":"aws:kafka","records":{"t-0":[{"partition":"zero"}]}}"#);
    match fds.invoke("fds-consumer", not_msk).await {
        Err(paystream_local::host::InvokeError::Function { message, .. }) => {
            assert!(message.contains("MalformedBody") && message.contains("not an MSK event") && message.contains("records.t-0[0].partition"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    match fds.invoke("fds-consumer", Bytes::from_static(br#"{"records": "#)).await {
        Err(paystream_local::host::InvokeError::Function { message, .. }) => {
            assert!(message.contains("MalformedBody") && message.contains("not an MSK event"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    fds.invoke("fds-consumer", batch).await.unwrap();
    fds.shutdown().await;

    let fds_docs = emf_documents(&fds_out, "fds-consumer");
    assert!(fds_docs.len() >= 2, "{PAYMENTS} latencies need two documents");
    let fds_metrics = by_metric(&fds_docs);
    assert_eq!(expect(&fds_metrics, "ColdStart", "Count"), [1.0]);
    let decided: f64 = ["FdsCompleted", "FdsPending", "FdsDenied"].iter().filter_map(|n| fds_metrics.get(*n)).flat_map(|(unit, v)| {
        assert_eq!(unit, "Count");
        v.iter().copied()
    }).sum();
    assert_eq!(decided, PAYMENTS as f64, "every payment decided once");
    let decision = expect(&fds_metrics, "FdsDecisionLatency", "Milliseconds");
    assert_eq!(decision.len(), PAYMENTS, "one decision latency per payment, none dropped");
    assert!(decision.iter().all(|ms| *ms > 0.0 && *ms < 600_000.0), "{decision:?}");
    let batch_ms = expect(&fds_metrics, "BatchDuration", "Milliseconds");
    assert!(batch_ms.len() == 1 && batch_ms[0] > 0.0, "one batch: {batch_ms:?}");
    let text = std::fs::read_to_string(&fds_out).unwrap();
    assert!(!text.contains("Failed to record histogram value"), "no latency dropped by the recorder");

    let _ = std::fs::remove_dir_all(&dir);
}
