//! The poller's delivery contract on the real broker: a failed invocation
//! gets the same batch again (same records, same order), offsets are
//! committed only after success, and nothing is skipped. The Lambda side is
//! a small Invoke API endpoint that fails its first invocation.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use paystream::kafka::{client_config, EventProducer, OutgoingRecord};
use paystream::testing::{create_topics, fresh_config, unique_suffix};
use paystream_local::client::HttpClient;
use paystream_local::poller::{consumer_for, poll};
use paystream_local::template::MskSource;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

/// Invocations received: (function, payload).
type Calls = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// An Invoke API endpoint whose first `failures` invocations fail.
async fn flaky_lambda(failures: usize) -> (String, Calls) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let calls: Calls = Arc::default();
    let seen = Arc::clone(&calls);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let function = req.uri().path().split('/').nth(3).unwrap_or_default().to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut calls = seen.lock().unwrap();
                        calls.push((function, serde_json::from_slice(&body).unwrap()));
                        let response = if calls.len() <= failures {
                            Response::builder()
                                .status(200)
                                .header("x-amz-function-error", "Unhandled")
                                .body(Full::new(Bytes::from(r#"{"errorType":"DependencyUnavailable","errorMessage":"database down"}"#)))
                        } else {
                            Response::builder().status(200).body(Full::new(Bytes::from(r#"{"applied":5}"#)))
                        };
                        Ok::<_, Infallible>(response.unwrap())
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (endpoint, calls)
}

/// An event source on `topic` with its own group, read from the start.
fn source(topic: &str, batch_size: usize, batching_window_s: u64) -> MskSource {
    MskSource {
        function: "settle".into(),
        topics: vec![topic.to_owned()],
        consumer_group_id: format!("group-{}", unique_suffix()),
        batch_size,
        batching_window_s,
        starting_position: "TRIM_HORIZON".into(),
    }
}

/// What `group` has committed for partition 0 of `topic`.
fn committed(config: &paystream::config::Config, group: &str, topic: &str) -> Offset {
    let probe: StreamConsumer = client_config(&config.kafka, "probe").set("group.id", group).create().unwrap();
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, 0);
    let committed = probe.committed_offsets(wanted, Duration::from_secs(10)).unwrap();
    committed.find_partition(topic, 0).unwrap().offset()
}

fn offsets(payload: &serde_json::Value) -> Vec<(i64, i64)> {
    payload["records"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|records| records.as_array().unwrap().iter().map(|r| (r["partition"].as_i64().unwrap(), r["offset"].as_i64().unwrap())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_invocation_gets_the_same_batch_again_and_commits_only_after_success() {
    let config = fresh_config().await;
    let topic = format!("poller-{}", unique_suffix());
    create_topics(&config, &[(&topic, 1)]).await;
    let producer = EventProducer::new(&config.kafka, "tests").unwrap();
    for i in 0..5 {
        let value = format!("record-{i}");
        producer.publish(OutgoingRecord { topic: &topic, key: b"k", payload: value.as_bytes(), headers: &[("h", b"v")] }).await.unwrap();
    }

    let (endpoint, calls) = flaky_lambda(1).await;
    let source = source(&topic, 100, 1);
    let group = source.consumer_group_id.clone();
    let consumer = Arc::new(consumer_for(&config, &source).unwrap());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(poll(Arc::clone(&consumer), source, endpoint, HttpClient::new(Duration::from_secs(10)), stop_rx));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while calls.lock().unwrap().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the poller did not retry");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the commit land, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true).unwrap();
    task.await.unwrap();

    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "one failure, one success, nothing more");
    assert_eq!(calls[0].0, "settle");
    assert_eq!(calls[0].1, calls[1].1, "the very same batch again");
    assert_eq!(offsets(&calls[0].1), (0..5).map(|o| (0, o)).collect::<Vec<_>>(), "all records, in offset order");
    let record = &calls[0].1["records"][format!("{topic}-0")][0];
    assert_eq!(record["value"], "cmVjb3JkLTA=", "base64 value, as MSK delivers it");
    assert_eq!(record["headers"][0]["h"], serde_json::json!([118]));

    // Committed after the success: the group resumes past all five.
    assert_eq!(committed(&config, &group, &topic), Offset::Offset(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_retries_stops_promptly_and_leaves_the_batch_uncommitted() {
    let config = fresh_config().await;
    let topic = format!("poller-stop-{}", unique_suffix());
    create_topics(&config, &[(&topic, 1)]).await;
    let producer = EventProducer::new(&config.kafka, "tests").unwrap();
    producer.publish(OutgoingRecord { topic: &topic, key: b"k", payload: b"only", headers: &[] }).await.unwrap();

    let (endpoint, calls) = flaky_lambda(usize::MAX).await;
    let source = source(&topic, 10, 0);
    let group = source.consumer_group_id.clone();
    let consumer = Arc::new(consumer_for(&config, &source).unwrap());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(poll(Arc::clone(&consumer), source, endpoint, HttpClient::new(Duration::from_secs(10)), stop_rx));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while calls.lock().unwrap().len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "the poller did not keep retrying");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopping = tokio::time::Instant::now();
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task).await.expect("stops within 2 s, mid-retry").unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(2));

    assert_eq!(committed(&config, &group, &topic), Offset::Invalid, "nothing committed: the batch comes again");
}
