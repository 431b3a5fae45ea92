//! Redis: one reconnecting connection per execution environment, opened on
//! first use so cold starts do not wait for it, with bounded timeouts and
//! retries. Every key goes through [`Redis::key`] so it carries the
//! configured prefix.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::IntoConnectionInfo;
use tokio::sync::OnceCell;

use crate::config::{ConfigError, RedisConfig};
use crate::error::AppError;
use crate::tls;

/// Reconnect attempts before a command fails (each with backoff).
const RECONNECT_RETRIES_MAX: usize = 3;

pub struct Redis {
    client: redis::Client,
    manager: OnceCell<ConnectionManager>,
    config: RedisConfig,
}

impl Redis {
    /// `rediss://` URLs connect over TLS and verify the server's certificate
    /// and name: against `REDIS_CA_FILE` when set, else the system's roots
    /// (ElastiCache presents certificates from a public CA).
    pub fn new(config: &RedisConfig) -> Result<Self, ConfigError> {
        let bad_url = |e: redis::RedisError| ConfigError(format!("REDIS_URL: {e}"));
        let mut info = config.url.expose().into_connection_info().map_err(bad_url)?;
        if let Some(password) = &config.password {
            let settings = info.redis_settings().clone().set_password(password.expose());
            info = info.set_redis_settings(settings);
        }
        let client = match &config.ca_file {
            Some(path) => {
                let root_cert = tls::read_pem_file("REDIS_CA_FILE", path)?;
                redis::Client::build_with_tls(info, redis::TlsCertificates { client_tls: None, root_cert: Some(root_cert) })
                    .map_err(|e| ConfigError(format!("REDIS_CA_FILE: {e}")))?
            }
            None => redis::Client::open(info).map_err(bad_url)?,
        };
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

    /// `prefix + namespace + ":" + id` for each id: what
    /// `key(&format!("{namespace}:{id}"))` builds, in one allocation and
    /// without the formatting machinery, because a consumer builds a
    /// thousand of these per batch (in FDS's own profile, 9 % of its
    /// samples were in `format`).
    pub fn id_key(&self, namespace: &str, ids: &[uuid::Uuid]) -> String {
        id_key(&self.config.key_prefix, namespace, ids)
    }

    pub fn prefix(&self) -> &str {
        &self.config.key_prefix
    }
}

impl Redis {
    /// Cache-aside read of many ids: one MGET of `{namespace}:{id}`; the
    /// misses come from `load` (one query, the truth) and are written back
    /// in one pipeline with a TTL. Ids `load` does not return are cached as
    /// `T::default()` too, so a missing row is not re-read every batch.
    pub async fn read_through<T, F, Fut>(&self, namespace: &str, ids: &[uuid::Uuid], ttl_s: u64, load: F) -> Result<HashMap<uuid::Uuid, T>, AppError>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Default,
        F: FnOnce(Vec<uuid::Uuid>) -> Fut,
        Fut: std::future::Future<Output = Result<HashMap<uuid::Uuid, T>, AppError>>,
    {
        let mut found = HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(found);
        }
        let keys: Vec<String> = ids.iter().map(|id| self.id_key(namespace, &[*id])).collect();
        let mut conn = self.conn().await?;
        let cached: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut misses = Vec::new();
        for (id, value) in ids.iter().zip(cached) {
            match value.and_then(|v| serde_json::from_str::<T>(&v).ok()) {
                Some(v) => {
                    found.insert(*id, v);
                }
                None => misses.push(*id),
            }
        }
        if misses.is_empty() {
            return Ok(found);
        }
        let loaded_at = std::time::Instant::now();
        let mut loaded = load(misses.clone()).await?;
        // Filling only where nothing is (NX): a key that got a value after
        // our MGET holds something at least as fresh as what we read, and a
        // writer's hold (see `hold_for_write`) must stay until it lapses. A
        // read slower than the hold's margin is not cached at all: a writer
        // may have committed and its hold lapsed since.
        let fill = loaded_at.elapsed() < std::time::Duration::from_millis(FILL_AFTER_READ_MAX_MS);
        let mut pipe = redis::pipe();
        for id in misses {
            let value = loaded.remove(&id).unwrap_or_default();
            if fill {
                pipe.cmd("SET")
                    .arg(self.id_key(namespace, &[id]))
                    .arg(serde_json::to_string(&value).map_err(AppError::internal)?)
                    .arg("EX")
                    .arg(ttl_s)
                    .arg("NX")
                    .ignore();
            }
            found.insert(id, value);
        }
        if fill {
            let _: () = pipe.query_async(&mut conn).await?;
        }
        Ok(found)
    }

    /// Before a transaction that changes the truth behind cached ids: puts a
    /// hold on their keys that readers treat as a miss and never overwrite
    /// (their fill is NX). After the commit the writer may store the new
    /// value; if it dies first, the hold lapses after [`WRITE_HOLD_S`] and
    /// the next miss reads the committed truth. So a cached value is never
    /// older than the stored one, whatever crashes in between.
    pub async fn hold_for_write(&self, namespace: &str, ids: &[uuid::Uuid]) -> Result<(), AppError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.set_ex(self.id_key(namespace, &[*id]), WRITE_HOLD_VALUE, WRITE_HOLD_S).ignore();
        }
        let mut conn = self.conn().await?;
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }
}

/// What a held key contains: not JSON, so every reader sees a miss.
pub const WRITE_HOLD_VALUE: &str = "~hold";
/// How long a writer's hold lasts: longer than any transaction may stay open
/// (the statement timeout bounds each statement; a function's timeout the
/// whole invocation).
pub const WRITE_HOLD_S: u64 = 60;
/// A cache-aside fill later than this after its read is dropped: the read
/// may predate a commit whose hold has lapsed.
const FILL_AFTER_READ_MAX_MS: u64 = 5_000;

fn id_key(prefix: &str, namespace: &str, ids: &[uuid::Uuid]) -> String {
    let mut key = String::with_capacity(prefix.len() + namespace.len() + ids.len() * (1 + uuid::fmt::Hyphenated::LENGTH));
    key.push_str(prefix);
    key.push_str(namespace);
    let mut buffer = uuid::Uuid::encode_buffer();
    for id in ids {
        key.push(':');
        key.push_str(id.hyphenated().encode_lower(&mut buffer));
    }
    key
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// The same key as formatting builds, whatever the ids.
        #[test]
        fn id_keys_are_what_formatting_builds(a: u128, b: u128, prefix in "[a-z:]{0,12}") {
            let (a, b) = (uuid::Uuid::from_u128(a), uuid::Uuid::from_u128(b));
            proptest::prop_assert_eq!(super::id_key(&prefix, "fds:last", &[a]), format!("{prefix}fds:last:{a}"));
            proptest::prop_assert_eq!(super::id_key(&prefix, "loy:count", &[a, b]), format!("{prefix}loy:count:{a}:{b}"));
        }
    }
}
