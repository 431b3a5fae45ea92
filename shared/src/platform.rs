//! The one bootstrap every function calls: configuration, tracing, the
//! PostgreSQL pool, Redis and the Kafka producer, created once per execution
//! environment and shared by every invocation.
//!
//! Nothing here connects eagerly: pools and the producer open connections on
//! first use, so a cold start costs microseconds and a function that never
//! publishes never starts a producer.

use tokio::sync::OnceCell;

use crate::auth::TokenIssuer;
use crate::cache::Redis;
use crate::config::{Config, ConfigError};
use crate::db::{self, PgPool};
use crate::error::AppError;
use crate::kafka::EventProducer;
use crate::telemetry;

pub struct Platform {
    /// The function's name (client id for Kafka, application name for Postgres).
    pub function: &'static str,
    pub config: Config,
    pub pg: PgPool,
    pub redis: Redis,
    pub tokens: TokenIssuer,
    producer: OnceCell<EventProducer>,
}

impl Platform {
    /// Reads the environment, installs JSON logging and builds the clients.
    pub fn bootstrap(function: &'static str) -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        telemetry::init(&config.log_filter);
        let platform = Self::from_config(function, config)?;
        tracing::info!(function, "bootstrapped");
        Ok(platform)
    }

    /// Builds the clients from an explicit configuration (tests and tools).
    pub fn from_config(function: &'static str, config: Config) -> Result<Self, ConfigError> {
        Ok(Self {
            function,
            pg: db::pool(&config.database, function)?,
            redis: Redis::new(&config.redis)?,
            tokens: TokenIssuer::new(&config.auth),
            producer: OnceCell::new(),
            config,
        })
    }

    /// The shared producer, created on first use.
    pub async fn producer(&self) -> Result<&EventProducer, AppError> {
        self.producer
            .get_or_try_init(|| async { EventProducer::new(&self.config.kafka, self.function) })
            .await
            .map_err(AppError::internal)
    }
}
