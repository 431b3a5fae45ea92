//! A person approves a held payment in a real browser: headless Chromium
//! (Debian) driven by playwright-core opens the SMS link served by the
//! `verify` function, clicks Approve, and the payment becomes COMPLETED.

mod common;

use std::sync::Arc;

use common::{hours, World, PARIS, SEOUL};
use paystream::demo::{PARIS_CAFE, SEOUL_CAFE};
use paystream::testing::{fresh_config, serve_http};
use time::OffsetDateTime;
use verify::VerifyApi;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../verify/tests/browser/approve.cjs");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_approves_in_a_browser_and_the_payment_completes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = fresh_config().await;
    config.public_base_url = format!("http://127.0.0.1:{port}");
    let mut w = World::with_config(config).await;
    let server_api = VerifyApi::new(paystream::Platform::from_config("verify", w.config.clone()).unwrap());
    tokio::spawn(serve_http(Arc::new(server_api), listener));

    let t0 = OffsetDateTime::now_utc() - hours(3);
    let paris = w.payment(PARIS, PARIS_CAFE.0, t0 + hours(1));
    let batch = w.deliver(&[w.payment(SEOUL, SEOUL_CAFE.0, t0), paris.clone()]).await;
    w.run(batch).await;
    assert_eq!(w.status(paris.payment_id).await.0, "PENDING");
    let link = format!("{}/verify/{}", w.config.public_base_url, w.last_token().await);

    let node_modules = std::env::var("PAYSTREAM_NODE_MODULES").expect("PAYSTREAM_NODE_MODULES (set by scripts/test.sh) points at playwright-core");
    let screenshot = std::env::temp_dir().join(format!("paystream-approved-{}.png", paris.payment_id));
    let output = tokio::process::Command::new("node")
        .arg(SCRIPT)
        .arg(&link)
        .arg(&screenshot)
        .env("NODE_PATH", node_modules)
        .output()
        .await
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "browser run failed: {}\n{}", stdout, String::from_utf8_lossy(&output.stderr));
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the script prints what it saw");
    assert_eq!(seen["merchant"], "Paris Croissant");
    assert_eq!(seen["amount"], "10000 KRW");
    assert!(seen["result"].as_str().unwrap().contains("complete"), "{seen}");
    assert_eq!(w.status(paris.payment_id).await, ("COMPLETED".into(), Some("APPROVED_BY_HOLDER".into())));
    assert!(std::fs::metadata(&screenshot).map(|m| m.len() > 0).unwrap_or(false), "screenshot written");
    println!("screenshot: {}", screenshot.display());
}
