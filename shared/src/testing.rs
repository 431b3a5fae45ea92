//! Test helpers (feature `testing`): every test gets its own PostgreSQL
//! database, its own Redis key prefix and its own Kafka topics, so tests run
//! in parallel against the real services without seeing each other.

use std::io::Write;
use std::sync::{Arc, Mutex};

use lambda_http::Body;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
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
    let admin: AdminClient<DefaultClientContext> = client_config(&config.kafka, "paystream-tests").create().expect("admin client");
    let new: Vec<NewTopic> = topics.iter().map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1))).collect();
    let opts = AdminOptions::new().operation_timeout(Some(std::time::Duration::from_secs(10)));
    let results = admin.create_topics(&new, &opts).await.expect("create topics");
    for result in results {
        if let Err((topic, code)) = result {
            assert_eq!(code, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists, "creating topic {topic}");
        }
    }
}

/// Builds the request an API Gateway HTTP API (payload v2) would deliver,
/// going through the same decoding as production.
pub fn apigw_request(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Request {
    crate::apigw::v2_request(method, path, headers, body)
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
