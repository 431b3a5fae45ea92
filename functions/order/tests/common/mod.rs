//! A flash sale on the real services: the order, settle and report
//! functions on one fresh database, Redis prefix and pair of topics.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;
use std::time::Duration;

use order::OrderApi;
use paystream::config::Config;
use paystream::msk::{handle_event, BatchOutcome};
pub use paystream::testing::call;
use paystream::testing::{create_topics, fresh_config, msk_event, read_topic, seed, user, ReadRecord};
use paystream::Platform;
use report::ReportApi;
use serde_json::{json, Value};
use settle::Settle;

pub struct Sale {
    pub config: Config,
    pub order: Arc<OrderApi>,
    pub settle: Settle,
    pub report: ReportApi,
    pub admin: String,
}

/// Settles at most this many records per MSK batch, like the event source.
pub const BATCH_MAX: usize = 1_000;

impl Sale {
    pub async fn new() -> Self {
        Self::with_config(fresh_config().await).await
    }

    pub async fn with_config(config: Config) -> Self {
        paystream::telemetry::init("warn,librdkafka=off,rdkafka=off");
        let topic = config.kafka.order_topic.clone();
        create_topics(&config, &[(&topic, 3), (&format!("{topic}.dlq"), 1)]).await;
        let order = OrderApi::new(Platform::from_config("order", config.clone()).unwrap());
        seed(&order.platform).await;
        let admin = user(&order.platform, "admin").await.token;
        let settle = Settle::new(Platform::from_config("settle", config.clone()).unwrap());
        let report = ReportApi::new(Platform::from_config("report", config.clone()).unwrap());
        Self { config, order: Arc::new(order), settle, report, admin }
    }

    /// Creates a product through the API; `start_s`/`end_s` are seconds from now.
    pub async fn product(&self, stock: i64, price: i64, start_s: i64, end_s: i64) -> String {
        let now = time::OffsetDateTime::now_utc();
        let rfc = |s: i64| (now + time::Duration::seconds(s)).format(&time::format_description::well_known::Rfc3339).unwrap();
        let body = json!({"title": "Limited sneakers", "price": price, "currency": "KRW", "stock": stock, "start_time": rfc(start_s), "end_time": rfc(end_s)});
        let (status, body) = call(self.order.as_ref(), "POST", "/products", &self.admin, None, Some(body)).await;
        assert_eq!(status, 201, "{body}");
        body["product_id"].as_str().unwrap().to_owned()
    }

    pub async fn order(&self, token: &str, product: &str, key: Option<&str>) -> (u16, Value) {
        call(self.order.as_ref(), "POST", "/orders", token, key, Some(json!({"product_id": product}))).await
    }

    /// Every order event published so far (exactly `expected` of them).
    pub async fn events(&self, expected: usize) -> Vec<ReadRecord> {
        read_topic(&self.config, &self.config.kafka.order_topic, expected, Duration::from_millis(500)).await
    }

    /// Runs records through `settle` in MSK-sized batches.
    pub async fn settle(&self, records: &[ReadRecord]) -> BatchOutcome {
        let mut total = BatchOutcome::default();
        for chunk in records.chunks(BATCH_MAX) {
            let outcome = handle_event(&self.settle, msk_event(chunk), "test").await.expect("settle batch");
            total.applied += outcome.applied;
            total.duplicates += outcome.duplicates;
            total.dead_lettered += outcome.dead_lettered;
        }
        total
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        self.order.platform.pg.get().await.unwrap().query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Deletes this sale's Redis keys, as a Redis restart (or FLUSHALL) would.
    pub async fn flush_redis(&self) {
        let redis = &self.order.platform.redis;
        let mut conn = redis.conn().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}*", redis.prefix())).query_async(&mut conn).await.unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
        }
    }
}
