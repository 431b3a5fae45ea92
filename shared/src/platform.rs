//! The one bootstrap every function calls: configuration, tracing, the
//! metrics recorder, the PostgreSQL pool, Redis and the Kafka producer,
//! created once per execution environment and shared by every invocation.
//!
//! Nothing here connects eagerly: pools and the producer open connections on
//! first use, so a cold start costs microseconds and a function that never
//! publishes never starts a producer.

use std::sync::{Arc, Mutex};

use crate::auth::TokenIssuer;
use crate::cache::Redis;
use crate::config::{Config, ConfigError, KafkaConfig};
use crate::msk_connect;
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
    producer: Mutex<Option<Arc<EventProducer>>>,
    /// Bootstrap brokers, resolved once (from configuration or MSK).
    bootstrap: tokio::sync::OnceCell<String>,
}

/// A key a function cannot work without. Each function names its own, so
/// on AWS it is given (and may read) only those, and a deployment that
/// forgot one fails at cold start instead of on the first request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Issues or checks access tokens.
    JwtSecret,
    /// Fingerprints card numbers.
    PanFingerprintKey,
}

impl Platform {
    /// Reads the environment (fetching secrets named by ARN from Secrets
    /// Manager), installs JSON logging and the metrics recorder, and builds
    /// the clients.
    pub async fn bootstrap(function: &'static str, needs: &[Need]) -> Result<Self, ConfigError> {
        let init_started = std::time::Instant::now();
        crate::failpoint::setup();
        let config = Config::load().await?;
        telemetry::init(&config.log_filter);
        crate::metrics::install(function, init_started);
        for need in needs {
            let (present, name) = match need {
                Need::JwtSecret => (config.auth.jwt_secret.is_some(), "JWT_SECRET or JWT_SECRET_ARN"),
                Need::PanFingerprintKey => (config.auth.pan_fingerprint_key.is_some(), "PAN_FINGERPRINT_KEY or PAN_FINGERPRINT_KEY_ARN"),
            };
            if !present {
                return Err(ConfigError(format!("{function} needs {name}")));
            }
        }
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
            producer: Mutex::new(None),
            bootstrap: tokio::sync::OnceCell::new(),
            config,
        })
    }

    /// The shared producer, created on first use and replaced when the
    /// broker stopped accepting its state (see [`EventProducer::is_healthy`]).
    pub async fn producer(&self) -> Result<Arc<EventProducer>, AppError> {
        let bootstrap = self
            .bootstrap
            .get_or_try_init(|| async {
                if self.config.kafka.bootstrap_servers.is_empty() {
                    msk_connect::resolve_bootstrap(&self.config.kafka, &msk_connect::MskDirectory::from_env().await).await
                } else {
                    Ok(self.config.kafka.bootstrap_servers.clone())
                }
            })
            .await
            .map_err(|e| AppError::new(crate::ErrorCode::BrokerUnavailable, "event brokers unknown").with_source(e))?;
        let mut slot = self.producer.lock().expect("producer slot lock");
        match slot.as_ref() {
            Some(producer) if producer.is_healthy() => Ok(Arc::clone(producer)),
            _ => {
                let kafka = KafkaConfig { bootstrap_servers: bootstrap.clone(), ..self.config.kafka.clone() };
                let producer = Arc::new(EventProducer::new(&kafka, self.function).map_err(AppError::internal)?);
                if let Some(old) = slot.replace(Arc::clone(&producer)) {
                    // Destroying a librdkafka client may wait for its queue
                    // (bounded by the publish timeout): not on a runtime thread.
                    tokio::task::spawn_blocking(move || drop(old));
                }
                Ok(producer)
            }
        }
    }
}
