//! A person approves a held payment in a real browser: headless Chromium
//! (Debian) driven by playwright-core opens the SMS link served by the
//! `verify` function at a phone's viewport, reads the payment as the holder
//! sees it (amount in its currency, card ending, country name, time with its
//! zone), clicks Approve, and the payment becomes COMPLETED. Screenshots go
//! to PAYSTREAM_SCREENSHOT_DIR (default: a folder in the temp dir).

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
    let screenshots = screenshot_dir();
    let output = tokio::process::Command::new("node")
        .arg(SCRIPT)
        .arg(&link)
        .arg(&screenshots)
        .env("NODE_PATH", node_modules)
        .output()
        .await
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "browser run failed: {}\n{}", stdout, String::from_utf8_lossy(&output.stderr));
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the script prints what it saw");
    assert_eq!(seen["merchant"], "Paris Croissant");
    assert_eq!(seen["amount"], "₩10,000");
    assert_eq!(seen["amount_code"], "10,000 KRW");
    assert_eq!(seen["country"], "France");
    let card = seen["card"].as_str().unwrap();
    let last4: String = w.fds.platform.pg.get().await.unwrap().query_one("SELECT last4 FROM cards WHERE id = $1", &[&paris.card_id]).await.unwrap().get(0);
    assert!(card.ends_with(&format!("•••• {last4}")), "{card}");
    let expected_time = paris.occurred_at.format(time::macros::format_description!("[day padding:none] [month repr:short] [year], [hour]:[minute] UTC")).unwrap();
    assert!(seen["time"].as_str().unwrap().ends_with(&expected_time), "{seen}");
    // Laid out for the phone: nothing wider than its 390 px, buttons that fill it.
    assert!(seen["page_width"].as_f64().unwrap() <= 390.0, "{seen}");
    assert!(seen["approve_width"].as_f64().unwrap() >= 300.0, "{seen}");
    assert!(seen["result"].as_str().unwrap().contains("complete"), "{seen}");
    assert_eq!(w.status(paris.payment_id).await, ("COMPLETED".into(), Some("APPROVED_BY_HOLDER".into())));
    for name in ["verify-question.png", "verify-approved.png"] {
        let shot = screenshots.join(name);
        assert!(std::fs::metadata(&shot).map(|m| m.len() > 0).unwrap_or(false), "{} written", shot.display());
    }
    println!("screenshots: {}", screenshots.display());
}

fn screenshot_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("PAYSTREAM_SCREENSHOT_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("paystream-screenshots"));
    std::fs::create_dir_all(&dir).expect("create the screenshot folder");
    dir
}
