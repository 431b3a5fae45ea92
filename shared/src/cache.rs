//! Redis: one reconnecting connection per execution environment, opened on
//! first use so cold starts do not wait for it, with bounded timeouts and
//! retries. Every key goes through [`Redis::key`] so it carries the
//! configured prefix.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::config::{ConfigError, RedisConfig};
use crate::error::AppError;

/// Reconnect attempts before a command fails (each with backoff).
const RECONNECT_RETRIES_MAX: usize = 3;

pub struct Redis {
    client: redis::Client,
    manager: OnceCell<ConnectionManager>,
    config: RedisConfig,
}

impl Redis {
    pub fn new(config: &RedisConfig) -> Result<Self, ConfigError> {
        let client = redis::Client::open(config.url.expose()).map_err(|e| ConfigError(format!("REDIS_URL: {e}")))?;
        Ok(Self { client, manager: OnceCell::new(), config: config.clone() })
    }

    /// A cheap clone of the shared connection (it multiplexes).
    pub async fn conn(&self) -> Result<ConnectionManager, AppError> {
        let manager = self
            .manager
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(Duration::from_millis(self.config.response_timeout_ms)))
                    .set_connection_timeout(Some(Duration::from_millis(self.config.connect_timeout_ms)))
                    .set_number_of_retries(RECONNECT_RETRIES_MAX);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await?;
        Ok(manager.clone())
    }

    /// `prefix + name`: the only way code should build a key.
    pub fn key(&self, name: &str) -> String {
        format!("{}{}", self.config.key_prefix, name)
    }

    pub fn prefix(&self) -> &str {
        &self.config.key_prefix
    }
}
