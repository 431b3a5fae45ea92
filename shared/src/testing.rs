//! Test helpers (feature `testing`): every test gets its own PostgreSQL
//! database, its own Redis key prefix and its own Kafka topics, so tests run
//! in parallel against the real services without seeing each other.

use std::io::Write;
use std::sync::{Arc, Mutex};

use lambda_http::Body;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::Config;
use crate::db;
use crate::http::{Request, Response};
use crate::kafka::client_config;
use crate::platform::Platform;
use crate::secret::Secret;

/// Connection to the server's maintenance database, used to create and drop
/// per-test databases. `TEST_PG_ADMIN_URL` overrides it.
fn admin_url() -> String {
    std::env::var("TEST_PG_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Every per-test database name starts with this, so the test script can drop
/// leftovers of an interrupted run.
pub const TEST_DB_PREFIX: &str = "paystream_t_";

pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

/// Creates a fresh, migrated database and returns a configuration that
/// points at it (plus a fresh Redis prefix and fresh topic names).
pub async fn fresh_config() -> Config {
    let suffix = unique_suffix();
    let name = format!("{TEST_DB_PREFIX}{suffix}");
    let (admin, connection) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await.expect("connect to PostgreSQL (is it running?)");
    tokio::spawn(connection);
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create test database");

    let mut config = Config::from_env().expect("test configuration");
    let mut url: String = admin_url();
    url.truncate(url.rfind('/').expect("admin URL has a database"));
    config.database.url = Secret::new(format!("{url}/{name}"));
    config.redis.key_prefix = format!("t:{suffix}:");
    config.kafka.payment_topic = format!("payment-stream-{suffix}");
    config.kafka.order_topic = format!("order-stream-{suffix}");
    // Tests deliver small batches: split every one of two events or more,
    // so the consumers' tests (redelivery, twins, crashes) cover batches
    // applied in several transactions, as large ones are in production.
    config.consumer.shard_min_events = 1;

    let (mut client, connection) = tokio_postgres::connect(config.database.url.expose(), tokio_postgres::NoTls).await.expect("connect to test database");
    tokio::spawn(connection);
    db::migrate(&mut client).await.expect("migrations apply to a fresh database");
    config
}

/// A platform wired to a fresh database.
pub async fn platform(function: &'static str) -> Platform {
    Platform::from_config(function, fresh_config().await).expect("platform from test configuration")
}

/// Creates topics on the configured broker (they are not auto-created).
pub async fn create_topics(config: &Config, topics: &[(&str, i32)]) {
    crate::kafka::create_topics(&config.kafka, topics).await.expect("create topics");
}

/// Builds the request an API Gateway HTTP API (payload v2) would deliver,
/// going through the same decoding as production.
pub fn apigw_request(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Request {
    crate::apigw::v2_request(method, path, headers, body)
}

/// Calls an HTTP function as `token`'s holder, with an optional
/// Idempotency-Key and JSON body; returns the status and the JSON answer.
pub async fn call<A: crate::http::HttpApi>(
    api: &A,
    method: &str,
    path: &str,
    token: &str,
    idempotency_key: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("content-type", "application/json"), ("authorization", bearer.as_str())];
    if let Some(key) = idempotency_key {
        headers.push(("idempotency-key", key));
    }
    let body = body.map(|b| b.to_string());
    let response = crate::http::respond(api, apigw_request(method, path, &headers, body.as_deref())).await;
    (response.status().as_u16(), body_json(&response))
}

/// The JSON body of a response.
pub fn body_json(response: &Response) -> serde_json::Value {
    match response.body() {
        Body::Text(t) => serde_json::from_str(t).unwrap_or_else(|e| panic!("body is not JSON ({e}): {t}")),
        Body::Binary(b) => serde_json::from_slice(b).expect("body is JSON"),
        Body::Empty => serde_json::Value::Null,
        _ => panic!("unexpected body kind"),
    }
}

/// Collects the JSON log lines of the whole test process, written by the
/// production formatter. Process-wide on purpose: a thread-local subscriber
/// races with tracing's callsite-interest cache when tests run in parallel,
/// and checking every test's logs for secrets is stricter anyway.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// The process-wide capture, installed as the global subscriber at
    /// `trace` level on first use.
    pub fn global() -> LogCapture {
        static CAPTURE: std::sync::OnceLock<LogCapture> = std::sync::OnceLock::new();
        CAPTURE
            .get_or_init(|| {
                let capture = LogCapture::default();
                tracing::subscriber::set_global_default(crate::telemetry::json_subscriber("trace", capture.clone()))
                    .expect("no other global subscriber in tests");
                capture
            })
            .clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("logs are UTF-8")
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A broker of the test's own (its own port and SQLite file), which the
/// test may stop to see how the platform behaves without a broker.
pub struct PrivateBroker {
    child: std::process::Child,
    pub port: u16,
    dir: std::path::PathBuf,
    bin: String,
}

impl PrivateBroker {
    /// Starts the broker named by `PAYSTREAM_BROKER_BIN` (the scripts set it).
    pub fn start() -> Self {
        let bin = std::env::var("PAYSTREAM_BROKER_BIN").unwrap_or_else(|_| "nisshi".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("paystream-broker-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Self::spawn(&bin, port, &dir);
        Self { child, port, dir, bin }
    }

    /// Starts the broker again on the same port and data (after [`Self::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(&self.bin, self.port, &self.dir);
    }

    fn spawn(bin: &str, port: u16, dir: &std::path::Path) -> std::process::Child {
        use std::time::{Duration, Instant};
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "sqlite://broker.db"])
            .current_dir(dir)
            .stdout(std::fs::OpenOptions::new().create(true).append(true).open(dir.join("broker.log")).expect("broker log"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start the broker ({bin}; set PAYSTREAM_BROKER_BIN): {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "private broker did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A record read back from a topic.
#[derive(Clone, Debug)]
pub struct ReadRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Reads `topic` from the beginning with a fresh group until `expected`
/// records arrived, then waits `settle` for any extra one (so a test can
/// prove there is no duplicate). Panics after 30 s without the expected count.
pub async fn read_topic(config: &Config, topic: &str, expected: usize, settle: std::time::Duration) -> Vec<ReadRecord> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};
    let consumer: StreamConsumer = client_config(&config.kafka, "paystream-tests")
        .set("group.id", format!("read-{}", unique_suffix()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let wait = if out.len() >= expected { settle } else { deadline.saturating_duration_since(tokio::time::Instant::now()) };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Ok(m)) => out.push(ReadRecord {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
                timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
                headers: m.headers().map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec())).collect()).unwrap_or_default(),
            }),
            Ok(Err(e)) => panic!("consumer error: {e}"),
            Err(_) if out.len() >= expected => return out,
            Err(_) => panic!("only {} of {expected} records arrived on {topic}", out.len()),
        }
    }
}

/// The MSK event an event source mapping would deliver for these records.
pub fn msk_event(records: &[ReadRecord]) -> aws_lambda_events::event::kafka::KafkaEvent {
    let headers: Vec<Vec<(&str, &[u8])>> = records.iter().map(|r| r.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect()).collect();
    let raw: Vec<crate::msk::OutRecordForEvent<'_>> = records
        .iter()
        .zip(&headers)
        .map(|(r, h)| crate::msk::OutRecordForEvent {
            topic: &r.topic,
            partition: r.partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key: r.key.as_deref(),
            value: &r.value,
            headers: h,
        })
        .collect();
    serde_json::from_value(crate::msk::build_event("arn:aws:kafka:local:000000000000:cluster/paystream/local", &raw)).expect("valid MSK event")
}

/// Seeds the demo data into the platform's database.
pub async fn seed(p: &Platform) {
    crate::demo::seed(&p.pg, &p.config, &Secret::new("admin-password-for-tests")).await.expect("seed");
}

/// A seeded user: id, card ids (registration order) and an access token.
pub struct TestUser {
    pub id: crate::domain::UserId,
    pub cards: Vec<uuid::Uuid>,
    pub token: String,
}

impl TestUser {
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }
}

/// Looks up a seeded user (e.g. `alice`) and mints a token for them.
pub async fn user(p: &Platform, username: &str) -> TestUser {
    let db = p.pg.get().await.unwrap();
    let row = db.query_one("SELECT id, role FROM users WHERE username = $1", &[&username]).await.expect("seeded user");
    let id = crate::domain::UserId(row.get(0));
    let role = crate::domain::Role::parse(row.get(1)).unwrap();
    let cards = db
        .query("SELECT id FROM cards WHERE user_id = $1 ORDER BY created_at, id", &[&id.0])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    TestUser { id, cards, token: p.tokens.issue(id, role).unwrap().access_token }
}

/// Serves an [`HttpApi`](crate::http::HttpApi) over plain HTTP/1.1 on
/// 127.0.0.1 (one request per connection), turning each request into an API
/// Gateway v2 event, so a real browser can drive a function in a test.
/// Returns the port; the server lives as long as the runtime.
pub async fn serve_http<A: crate::http::HttpApi>(api: std::sync::Arc<A>, listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const HEAD_MAX_BYTES: usize = 16 * 1024;
    loop {
        let Ok((mut socket, _)) = listener.accept().await else { return };
        let api = std::sync::Arc::clone(&api);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 || buf.len() > HEAD_MAX_BYTES {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let mut lines = head.split("\r\n");
            let mut request_line = lines.next().unwrap_or("").split(' ');
            let (method, target) = (request_line.next().unwrap_or("GET").to_owned(), request_line.next().unwrap_or("/").to_owned());
            let headers: Vec<(String, String)> =
                lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
            let length: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
            let mut body = buf[head_end + 4..].to_vec();
            while body.len() < length {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            let header_refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let body = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).to_string());
            let response = crate::http::respond(api.as_ref(), apigw_request(&method, &target, &header_refs, body.as_deref())).await;
            let (parts, body) = response.into_parts();
            let body: Vec<u8> = match body {
                Body::Text(t) => t.into_bytes(),
                Body::Binary(b) => b,
                _ => Vec::new(),
            };
            let mut out = format!("HTTP/1.1 {} {}\r\n", parts.status.as_u16(), parts.status.canonical_reason().unwrap_or(""));
            for (k, v) in &parts.headers {
                out.push_str(&format!("{}: {}\r\n", k, v.to_str().unwrap_or("")));
            }
            out.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()));
            let _ = socket.write_all(out.as_bytes()).await;
            let _ = socket.write_all(&body).await;
            let _ = socket.shutdown().await;
        });
    }
}

/// Creates `n` USER accounts in one statement (no usable password: tests
/// use tokens) and returns their ids and tokens.
pub async fn bulk_users(p: &Platform, n: usize) -> Vec<(crate::domain::UserId, String)> {
    let suffix = unique_suffix();
    let db = p.pg.get().await.unwrap();
    let rows = db
        .query(
            "INSERT INTO users (id, username, email, password_hash, phone, role)
             SELECT gen_random_uuid(), 'u' || i || '_' || $2, 'u' || i || '_' || $2 || '@example.com', 'unusable', '+821055550000', 'USER'
             FROM generate_series(1, $1::int) AS i RETURNING id",
            &[&(n as i32), &suffix],
        )
        .await
        .expect("bulk users");
    rows.iter()
        .map(|r| {
            let id = crate::domain::UserId(r.get(0));
            (id, p.tokens.issue(id, crate::domain::Role::User).unwrap().access_token)
        })
        .collect()
}

/// What an [`aws_endpoint`] answers: HTTP status, body, content type.
pub type AwsAnswer = (u16, String, &'static str);

/// An AWS-API-compatible endpoint on loopback (there is no AWS here): every
/// request (head and body, as text) is recorded, and `answer` says what to
/// send back. The SDK clients under test point their `endpoint_url` at it,
/// so they sign, serialise and parse exactly as they would against AWS.
pub async fn aws_endpoint<F>(answer: F) -> (String, Arc<Mutex<Vec<String>>>)
where
    F: Fn(&str, usize) -> AwsAnswer + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // The head, then the body by Content-Length.
            let (head_end, length) = loop {
                let Ok(n) = socket.read(&mut chunk).await else { break (0, 0) };
                if n == 0 {
                    break (0, 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                    let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap_or(0));
                    break (i + 4, length);
                }
            };
            if head_end == 0 {
                continue;
            }
            while buf.len() < head_end + length {
                match socket.read(&mut chunk).await {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            let request = String::from_utf8_lossy(&buf).to_string();
            let calls = {
                let mut log = log.lock().expect("endpoint log");
                log.push(request.clone());
                log.len()
            };
            let (status, body, content_type) = answer(&request, calls);
            let response = format!("HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    (url, seen)
}
