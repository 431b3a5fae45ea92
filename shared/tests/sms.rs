//! The SNS sender, for real: the AWS SDK client speaks to an SNS-compatible
//! endpoint on loopback (no AWS here), which records what it was asked to
//! send. Outbox rows are delivered once, then their bodies are blanked.

use std::sync::{Arc, Mutex};

use aws_sdk_sns::config::{BehaviorVersion, Credentials, Region};
use paystream::sms::{enqueue, SmsMessage, SmsSender, KIND_VERIFICATION};
use paystream::testing::{aws_endpoint, platform, seed};

/// Accepts SNS Publish calls (query or JSON protocol); the first fails when
/// `fail_first`. Returns the endpoint and the Publish calls it accepted.
async fn fake_sns(fail_first: bool) -> (String, Arc<Mutex<Vec<String>>>) {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&accepted);
    let (url, _all) = aws_endpoint(move |request, calls| {
        if fail_first && calls == 1 {
            return (500, "<ErrorResponse><Error><Code>InternalError</Code></Error></ErrorResponse>".to_owned(), "text/xml");
        }
        log.lock().unwrap().push(request.to_owned());
        if request.to_ascii_lowercase().contains("application/x-amz-json") {
            (200, r#"{"MessageId":"m-1"}"#.to_owned(), "application/x-amz-json-1.0")
        } else {
            (200, "<PublishResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><PublishResult><MessageId>m-1</MessageId></PublishResult><ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></PublishResponse>".to_owned(), "text/xml")
        }
    })
    .await;
    (url, accepted)
}

fn client(endpoint: &str) -> aws_sdk_sns::Client {
    let config = aws_sdk_sns::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "tests"))
        .endpoint_url(endpoint)
        // One attempt per pass: a failure is retried by the next pass.
        .retry_config(aws_sdk_sns::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_sns::Client::from_conf(config)
}

#[tokio::test]
async fn sns_delivers_each_outbox_row_once_and_blanks_it() {
    let p = platform("tests").await;
    seed(&p).await;
    let (endpoint, seen) = fake_sns(true).await;
    let sender = SmsSender::with_sns_client(&p.config.sms, client(&endpoint));
    let alice = paystream::demo::ALICE.0;
    let db = p.pg.get().await.unwrap();
    enqueue(&db, &[SmsMessage { user_id: alice, phone: "+821000000001".into(), body: "approve: http://x/verify/abc".into(), kind: KIND_VERIFICATION }])
        .await
        .unwrap();

    // The first SNS call fails: the row stays for the next pass.
    assert_eq!(sender.deliver_pending(&p.pg).await.unwrap(), 0);
    let undelivered: i64 = db.query_one("SELECT count(*) FROM sms_outbox WHERE delivered_at IS NULL", &[]).await.unwrap().get(0);
    assert_eq!(undelivered, 1);
    // A claim younger than a minute is not taken twice; release it as a crash would after a minute.
    db.execute("UPDATE sms_outbox SET claimed_at = now() - interval '2 minutes'", &[]).await.unwrap();

    assert_eq!(sender.deliver_pending(&p.pg).await.unwrap(), 1);
    assert_eq!(sender.deliver_pending(&p.pg).await.unwrap(), 0, "nothing is sent twice");
    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    let call = calls[0].replace("%2B", "+").replace("%3A", ":").replace("%2F", "/");
    assert!(call.contains("+821000000001"), "{call}");
    assert!(call.contains("verify/abc"), "{call}");
    let body: String = db.query_one("SELECT body FROM sms_outbox", &[]).await.unwrap().get(0);
    assert_eq!(body, "[delivered]", "no usable link stays at rest");
}

#[tokio::test]
async fn outbox_mode_keeps_the_message_and_marks_it_delivered() {
    let p = platform("tests").await;
    seed(&p).await;
    let db = p.pg.get().await.unwrap();
    enqueue(&db, &[SmsMessage { user_id: paystream::demo::ALICE.0, phone: "+821000000001".into(), body: "hello".into(), kind: KIND_VERIFICATION }])
        .await
        .unwrap();
    let sender = SmsSender::new(&paystream::config::SmsConfig { mode: paystream::config::SmsMode::Outbox, ..p.config.sms.clone() });
    assert_eq!(sender.deliver_pending(&p.pg).await.unwrap(), 1);
    let row = db.query_one("SELECT body, delivered_at IS NOT NULL FROM sms_outbox", &[]).await.unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, bool>(1)), ("hello".to_owned(), true));
}

/// An endpoint that accepts connections and never answers: SNS hanging.
async fn black_hole() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        // Bounded: a test sends a handful of calls.
        while held.len() < 64 {
            let Ok((stream, _)) = listener.accept().await else { return };
            held.push(stream);
        }
    });
    url
}

#[tokio::test]
async fn a_hanging_sns_costs_one_timeout_per_pass_not_one_per_message() {
    let p = platform("tests").await;
    seed(&p).await;
    let config = paystream::config::SmsConfig { send_timeout_ms: 300, send_concurrency: 8, ..p.config.sms.clone() };
    let sender = SmsSender::with_sns_client(&config, client(&black_hole().await));
    let db = p.pg.get().await.unwrap();
    let messages: Vec<SmsMessage> = (0..6)
        .map(|i| SmsMessage { user_id: paystream::demo::ALICE.0, phone: "+821000000001".into(), body: format!("m{i}"), kind: KIND_VERIFICATION })
        .collect();
    enqueue(&db, &messages).await.unwrap();

    let started = std::time::Instant::now();
    assert_eq!(sender.deliver_pending(&p.pg).await.unwrap(), 0);
    let took_ms = started.elapsed().as_millis();
    // Six sends in parallel, each bounded by 300 ms: well under 6 x 300 ms.
    assert!(took_ms < 1_200, "a pass took {took_ms} ms");
    let undelivered: i64 = db.query_one("SELECT count(*) FROM sms_outbox WHERE delivered_at IS NULL", &[]).await.unwrap().get(0);
    assert_eq!(undelivered, 6, "nothing marked delivered that was not sent");
}
