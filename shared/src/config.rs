//! Typed configuration read once from the environment.
//!
//! Every bound the platform has (pool sizes, timeouts, body size, token life)
//! is a variable here with a documented local default. The README's
//! configuration table mirrors [`Config::from_env`]; keep them in step.

use std::collections::HashMap;
use std::time::Duration;

use crate::aws_secrets;
use crate::secret::Secret;

/// Secrets that are fine on a laptop and fatal on AWS.
pub const LOCAL_JWT_SECRET: &str = "paystream-local-only-jwt-secret-0123456789abcdef";
pub const LOCAL_PAN_FINGERPRINT_KEY: &str = "paystream-local-only-pan-key-0123456789abcdef";

/// Shortest HS256 key we accept: RFC 7518 §3.2 requires at least the hash size.
const JWT_SECRET_MIN_BYTES: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    /// A laptop or CI: local services on loopback, SMS into the outbox table.
    Local,
    /// Deployed: local defaults for secrets are refused.
    Aws,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub environment: Environment,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub kafka: KafkaConfig,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub fds: FdsConfig,
    pub consumer: ConsumerConfig,
    pub sms: SmsConfig,
    pub flash: FlashConfig,
    /// Least extra benefit (minor units) another card must have earned before
    /// the payer is told (`BENEFIT_MIN_GAIN`).
    pub benefit_min_gain_minor: i64,
    /// How long consumers keep cache-aside entries (rules, cards, thresholds),
    /// and `pay` its memo of cards and merchants.
    pub cache_ttl_s: u64,
    /// Base URL for links we send to people (the SMS verification link).
    pub public_base_url: String,
    /// tracing `EnvFilter` directive, e.g. `info` or `account=debug,info`.
    pub log_filter: String,
    /// Invocations this execution environment runs at once
    /// (`AWS_LAMBDA_MAX_CONCURRENCY`, set by Lambda Managed Instances; 1, a
    /// classic environment, when unset). An environment that runs one at a
    /// time is frozen between invocations, so work after the answer waits
    /// for the next one; one that runs several keeps going.
    pub invocations_per_environment: u32,
}

/// How connections to PostgreSQL are protected (`DATABASE_TLS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseTls {
    /// Plain TCP: loopback only (laptops, CI).
    Disable,
    /// TLS required, the server's certificate chain checked against the CA
    /// bundle and its name against the host (libpq's `verify-full`). RDS
    /// forces TLS from PostgreSQL 15; anything weaker lets a man in the
    /// middle read card holders' data.
    VerifyFull,
}

#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// Host, port and database; credentials may be in it (local) or come
    /// separately from a secret (`DATABASE_SECRET_ARN` on AWS).
    pub url: Secret,
    /// Overrides the URL's user (`DATABASE_USER`).
    pub user: Option<String>,
    /// Overrides the URL's password (`DATABASE_PASSWORD`).
    pub password: Option<Secret>,
    pub tls: DatabaseTls,
    /// PEM file of the CAs to trust instead of the bundled Amazon RDS bundle
    /// (`DATABASE_CA_FILE`).
    pub ca_file: Option<std::path::PathBuf>,
    pub pool_max_size: usize,
    pub connect_timeout_ms: u64,
    pub statement_timeout_ms: u64,
}

#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://` (plain) or `rediss://` (TLS, e.g. ElastiCache with
    /// in-transit encryption; the server certificate is verified).
    pub url: Secret,
    /// AUTH token, overriding the URL's (`REDIS_PASSWORD`).
    pub password: Option<Secret>,
    /// PEM file of the CAs to trust for `rediss://` instead of the system's
    /// (`REDIS_CA_FILE`).
    pub ca_file: Option<std::path::PathBuf>,
    /// Prefix for every key we write, so several deployments (or parallel
    /// tests) can share one Redis without seeing each other.
    pub key_prefix: String,
    pub response_timeout_ms: u64,
    pub connect_timeout_ms: u64,
}

/// How producers authenticate to the brokers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaAuth {
    /// None (local) or TLS only, per `KAFKA_SECURITY_PROTOCOL`.
    None,
    /// SASL/SCRAM-SHA-512 over TLS with `KAFKA_SASL_USERNAME`/`_PASSWORD`.
    Scram,
    /// MSK IAM: SASL/OAUTHBEARER over TLS with SigV4-signed tokens.
    Iam,
}

#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// Empty when the brokers are to be looked up from `cluster_arn`.
    pub bootstrap_servers: String,
    /// The MSK cluster, for `GetBootstrapBrokers` at cold start.
    pub cluster_arn: Option<String>,
    pub auth: KafkaAuth,
    /// Region for IAM tokens (`AWS_REGION`, which Lambda sets).
    pub region: String,
    /// Upper bound for one publish, queueing and retries included
    /// (librdkafka `message.timeout.ms`). A publish never waits longer.
    pub publish_timeout_ms: u64,
    /// librdkafka `linger.ms`: how long the producer waits to fill a batch.
    pub linger_ms: u64,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: String,
    /// e.g. `SCRAM-SHA-512` when `security_protocol` is `sasl_ssl`.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<Secret>,
    pub payment_topic: String,
    pub order_topic: String,
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// HS256 key. `None` on AWS for a function that was given none (the
    /// consumers): it can then neither issue nor accept tokens.
    pub jwt_secret: Option<Secret>,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_token_ttl_s: u64,
    /// Clock skew tolerated when checking `exp`.
    pub jwt_leeway_s: u64,
    /// HMAC key for card fingerprints (a PAN is never stored, only this).
    /// `None` on AWS for functions that never see a PAN.
    pub pan_fingerprint_key: Option<Secret>,
    pub login: LoginLimits,
}

/// Failed log-ins allowed per window before `POST /auth/login` answers 429
/// `RATE_LIMITED` without checking the password (each check is an Argon2id
/// hash: 19 MiB and tens of ms of CPU). Counted in Redis, per username
/// (guessing one account) and per source address (stuffing many).
#[derive(Clone, Debug)]
pub struct LoginLimits {
    /// `LOGIN_USER_FAILURES_MAX`
    pub user_failures_max: u32,
    /// `LOGIN_USER_WINDOW_S`: the window starts at the first failure.
    pub user_window_s: u64,
    /// `LOGIN_IP_FAILURES_MAX`: higher than per user, as many people can
    /// share one address (NAT, offices, mobile carriers).
    pub ip_failures_max: u32,
    /// `LOGIN_IP_WINDOW_S`
    pub ip_window_s: u64,
}

impl AuthConfig {
    /// The card fingerprint key, or an internal error for a function that
    /// was deployed without one.
    pub fn pan_key(&self) -> Result<&Secret, crate::AppError> {
        self.pan_fingerprint_key.as_ref().ok_or_else(|| {
            // Logged with the source; the client sees only the generic detail.
            crate::AppError::internal(ConfigError("this function has no PAN_FINGERPRINT_KEY (PAN_FINGERPRINT_KEY_ARN)".into()))
        })
    }
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub max_body_bytes: usize,
    /// Largest page a list endpoint returns.
    pub page_limit_max: u32,
    /// Longest a request waits for a concurrent request with the same
    /// Idempotency-Key before answering 409 `IDEMPOTENCY_KEY_IN_PROGRESS`
    /// (`IDEMPOTENCY_WAIT_MS`); below the statement timeout so the wait
    /// never ends in a server error.
    pub idempotency_wait_ms: u64,
    /// How long an unanswered leased claim of an Idempotency-Key
    /// (`idempotency::claim_leased`, `pay`) keeps a retry waiting before the
    /// retry takes the key over (`IDEMPOTENCY_LEASE_MS`). At least the
    /// function's timeout (`pay`: 10 s), so the claim is taken over only
    /// once its invocation is surely dead; safety does not depend on it
    /// (the retry publishes the same payment id).
    pub idempotency_lease_ms: u64,
    /// Cards and merchants `pay` keeps in memory per execution environment
    /// (`INTAKE_FACTS_MEMO_MAX`, each; `paystream::memo`), each for at most
    /// `CACHE_TTL_S`: the card's owner and product and the merchant's facts
    /// are written once and never changed, so a payment with a known card
    /// at a known merchant reads nothing from PostgreSQL before publishing.
    pub intake_facts_memo_max: usize,
}

#[derive(Clone, Debug)]
pub struct FdsConfig {
    /// Implied speed between two countries above which a payment needs the
    /// holder's approval.
    pub max_speed_kmh: f64,
    /// How long a verification link stays valid (`VERIFY_TTL`: seconds, or
    /// with a unit: `90s`, `10m`, `1h`).
    pub verify_ttl_s: u64,
    /// Largest number of expired verifications one sweep denies.
    pub sweep_batch_max: u32,
}

/// How a stream consumer splits one batch (`paystream::msk::shards`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Most transactions one batch is applied in at once, each on its own
    /// connection and holding its own payers (`CONSUMER_BATCH_SHARDS`; 1:
    /// the batch is one transaction). An event source mapping invokes one
    /// batch per partition at a time, so with a single transaction the
    /// database works a partition on one core.
    pub batch_shards: usize,
    /// Events per planned shard (`CONSUMER_SHARD_MIN_EVENTS`): a batch is
    /// split into at most one shard per this many events, so a small batch
    /// stays one transaction, since each shard costs its own round trips
    /// and commit. (Shards are cut by payer hash, so one may come out a
    /// little smaller.)
    pub shard_min_events: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmsMode {
    /// The `sms_outbox` table is the destination (laptops, CI, tests).
    Outbox,
    /// Amazon SNS delivers the outbox rows.
    Sns,
}

#[derive(Clone, Debug)]
pub struct SmsConfig {
    pub mode: SmsMode,
    /// Verification SMS one user may receive per window; more are not sent.
    pub rate_limit_per_window: u32,
    pub rate_window_s: u64,
    /// Longest one SNS publish may take (`SMS_SEND_TIMEOUT_MS`).
    pub send_timeout_ms: u64,
    /// SNS publishes in flight at once (`SMS_SEND_CONCURRENCY`).
    pub send_concurrency: usize,
    /// Most outbox rows one delivery pass sends (`SMS_DELIVERY_BATCH_MAX`).
    pub delivery_batch_max: u32,
}

/// Flash-sale bounds: reservations, their reconciliation, the outbox relay.
#[derive(Clone, Debug)]
pub struct FlashConfig {
    /// An order request commits its order only within this long after it
    /// reserved at the gate; later it rolls back and returns the reservation
    /// (`ORDER_COMMIT_DEADLINE_MS`).
    pub commit_deadline_ms: u64,
    /// A reservation older than this with no order in PostgreSQL is returned
    /// by the relay schedule (`RESERVATION_TTL_MS`). Must exceed
    /// `ORDER_COMMIT_DEADLINE_MS + PG_STATEMENT_TIMEOUT_MS`, so no live
    /// request can still commit a reservation that is being returned.
    pub reservation_ttl_ms: u64,
    /// Most products and most stale reservations one reconciliation run
    /// looks at (`RECONCILE_BATCH_MAX`).
    pub reconcile_batch_max: u32,
    /// In an environment that runs one invocation at a time, how long an
    /// accepted order waits for its event's batch to be published before
    /// answering (`ORDER_INLINE_PUBLISH_MS`); the batch goes on after that,
    /// and the relay publishes what it could not.
    pub inline_publish_ms: u64,
    /// The relay leaves outbox rows younger than this to the environment
    /// that wrote them, which is publishing them (`RELAY_GRACE_MS`; above
    /// `ORDER_INLINE_PUBLISH_MS`).
    pub relay_grace_ms: u64,
    /// Most outbox rows one relay run takes (`RELAY_BATCH_MAX`).
    pub relay_batch_max: u32,
    /// Publishes one relay run has in flight at once (`RELAY_CONCURRENCY`).
    pub relay_concurrency: u32,
    /// Total time one relay run (reconciliation and publishing) may take
    /// before it clears what was acknowledged and stops (`RELAY_DEADLINE_MS`);
    /// keep it plus `PG_STATEMENT_TIMEOUT_MS` below the order function's timeout.
    pub relay_deadline_ms: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Reads the process environment. Synchronous: it does not resolve
    /// secret ARNs (see [`Config::load`]).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars().collect())
    }

    /// Reads the process environment after replacing secret ARNs
    /// (`JWT_SECRET_ARN`, `DATABASE_SECRET_ARN`, ...) by the secrets' values
    /// from AWS Secrets Manager. Without such variables it makes no call.
    pub async fn load() -> Result<Self, ConfigError> {
        let mut vars: HashMap<String, String> = std::env::vars().collect();
        if aws_secrets::has_refs(&vars) {
            aws_secrets::resolve(&mut vars, &aws_secrets::SecretsManager::from_env().await).await?;
        }
        Self::from_vars(vars)
    }

    /// Reads configuration from an explicit map (tests build their own).
    pub fn from_vars(vars: HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Vars(vars);
        let environment = match env.string("PAYSTREAM_ENV", "local").as_str() {
            "local" => Environment::Local,
            "aws" => Environment::Aws,
            other => return Err(ConfigError(format!("PAYSTREAM_ENV must be local or aws, not {other:?}"))),
        };
        let cluster_arn = env.optional("KAFKA_CLUSTER_ARN");
        let config = Config {
            environment,
            database: DatabaseConfig {
                url: Secret::new(env.string("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/paystream")),
                user: env.optional("DATABASE_USER"),
                password: env.optional("DATABASE_PASSWORD").map(Secret::new),
                // On AWS the safe choice is the default; locally the loopback server.
                tls: match env.string("DATABASE_TLS", if environment == Environment::Aws { "verify-full" } else { "disable" }).as_str() {
                    "disable" => DatabaseTls::Disable,
                    "verify-full" => DatabaseTls::VerifyFull,
                    other => return Err(ConfigError(format!("DATABASE_TLS must be disable or verify-full, not {other:?}"))),
                },
                ca_file: env.optional("DATABASE_CA_FILE").map(Into::into),
                pool_max_size: env.number("PG_POOL_MAX_SIZE", 8)?,
                connect_timeout_ms: env.number("PG_CONNECT_TIMEOUT_MS", 3_000)?,
                statement_timeout_ms: env.number("PG_STATEMENT_TIMEOUT_MS", 5_000)?,
            },
            redis: RedisConfig {
                url: Secret::new(env.string("REDIS_URL", "redis://127.0.0.1:6379/0")),
                password: env.optional("REDIS_PASSWORD").map(Secret::new),
                ca_file: env.optional("REDIS_CA_FILE").map(Into::into),
                key_prefix: env.string("REDIS_KEY_PREFIX", "ps:"),
                response_timeout_ms: env.number("REDIS_RESPONSE_TIMEOUT_MS", 1_000)?,
                connect_timeout_ms: env.number("REDIS_CONNECT_TIMEOUT_MS", 1_000)?,
            },
            kafka: KafkaConfig {
                // With a cluster ARN and no brokers, they are looked up at cold start.
                bootstrap_servers: env.string("KAFKA_BOOTSTRAP_SERVERS", if cluster_arn.is_some() { "" } else { "127.0.0.1:9092" }),
                auth: match env.string("KAFKA_AUTH", "none").as_str() {
                    "none" => KafkaAuth::None,
                    "scram" => KafkaAuth::Scram,
                    "iam" => KafkaAuth::Iam,
                    other => return Err(ConfigError(format!("KAFKA_AUTH must be none, scram or iam, not {other:?}"))),
                },
                cluster_arn,
                region: env.string("AWS_REGION", "us-east-1"),
                publish_timeout_ms: env.number("KAFKA_PUBLISH_TIMEOUT_MS", 5_000)?,
                linger_ms: env.number("KAFKA_LINGER_MS", 1)?,
                security_protocol: env.string("KAFKA_SECURITY_PROTOCOL", "plaintext"),
                sasl_mechanism: env.optional("KAFKA_SASL_MECHANISM"),
                sasl_username: env.optional("KAFKA_SASL_USERNAME"),
                sasl_password: env.optional("KAFKA_SASL_PASSWORD").map(Secret::new),
                payment_topic: env.string("PAYMENT_TOPIC", "payment-stream"),
                order_topic: env.string("ORDER_TOPIC", "order-stream"),
            },
            auth: AuthConfig {
                jwt_secret: env.secret("JWT_SECRET", environment, LOCAL_JWT_SECRET),
                jwt_issuer: env.string("JWT_ISSUER", "paystream"),
                jwt_audience: env.string("JWT_AUDIENCE", "paystream-api"),
                access_token_ttl_s: env.number("ACCESS_TOKEN_TTL_S", 900)?,
                jwt_leeway_s: env.number("JWT_LEEWAY_S", 5)?,
                pan_fingerprint_key: env.secret("PAN_FINGERPRINT_KEY", environment, LOCAL_PAN_FINGERPRINT_KEY),
                login: LoginLimits {
                    user_failures_max: env.number("LOGIN_USER_FAILURES_MAX", 10)?,
                    user_window_s: env.number("LOGIN_USER_WINDOW_S", 900)?,
                    ip_failures_max: env.number("LOGIN_IP_FAILURES_MAX", 100)?,
                    ip_window_s: env.number("LOGIN_IP_WINDOW_S", 900)?,
                },
            },
            http: HttpConfig {
                max_body_bytes: env.number("HTTP_MAX_BODY_BYTES", 64 * 1024)?,
                page_limit_max: env.number("HTTP_PAGE_LIMIT_MAX", crate::http::PAGE_LIMIT_MAX_DEFAULT)?,
                idempotency_wait_ms: env.number("IDEMPOTENCY_WAIT_MS", 2_000)?,
                idempotency_lease_ms: env.number("IDEMPOTENCY_LEASE_MS", 10_000)?,
                intake_facts_memo_max: env.number("INTAKE_FACTS_MEMO_MAX", 50_000)?,
            },
            fds: FdsConfig {
                max_speed_kmh: env.number("FDS_MAX_SPEED_KMH", 900.0)?,
                verify_ttl_s: parse_duration_s("VERIFY_TTL", &env.string("VERIFY_TTL", "10m"))?,
                sweep_batch_max: env.number("VERIFY_SWEEP_BATCH_MAX", 1_000)?,
            },
            consumer: ConsumerConfig {
                batch_shards: env.number("CONSUMER_BATCH_SHARDS", 2)?,
                shard_min_events: env.number("CONSUMER_SHARD_MIN_EVENTS", 200)?,
            },
            sms: SmsConfig {
                mode: match env.string("SMS_MODE", if environment == Environment::Aws { "sns" } else { "outbox" }).as_str() {
                    "outbox" => SmsMode::Outbox,
                    "sns" => SmsMode::Sns,
                    other => return Err(ConfigError(format!("SMS_MODE must be outbox or sns, not {other:?}"))),
                },
                rate_limit_per_window: env.number("SMS_RATE_LIMIT", 3)?,
                rate_window_s: env.number("SMS_RATE_WINDOW_S", 600)?,
                send_timeout_ms: env.number("SMS_SEND_TIMEOUT_MS", 2_000)?,
                send_concurrency: env.number("SMS_SEND_CONCURRENCY", 8)?,
                delivery_batch_max: env.number("SMS_DELIVERY_BATCH_MAX", 100)?,
            },
            flash: FlashConfig {
                commit_deadline_ms: env.number("ORDER_COMMIT_DEADLINE_MS", 5_000)?,
                reservation_ttl_ms: env.number("RESERVATION_TTL_MS", 60_000)?,
                reconcile_batch_max: env.number("RECONCILE_BATCH_MAX", 1_000)?,
                inline_publish_ms: env.number("ORDER_INLINE_PUBLISH_MS", 250)?,
                relay_grace_ms: env.number("RELAY_GRACE_MS", 5_000)?,
                relay_batch_max: env.number("RELAY_BATCH_MAX", 1_000)?,
                relay_concurrency: env.number("RELAY_CONCURRENCY", 32)?,
                relay_deadline_ms: env.number("RELAY_DEADLINE_MS", 4_000)?,
            },
            benefit_min_gain_minor: env.number("BENEFIT_MIN_GAIN", 100)?,
            cache_ttl_s: env.number("CACHE_TTL_S", 3_600)?,
            public_base_url: env.string("PUBLIC_BASE_URL", "http://127.0.0.1:3000").trim_end_matches('/').to_owned(),
            log_filter: env.string("LOG_LEVEL", "info"),
            invocations_per_environment: env.number("AWS_LAMBDA_MAX_CONCURRENCY", 1)?,
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let keys = [
            ("JWT_SECRET", &self.auth.jwt_secret, LOCAL_JWT_SECRET),
            ("PAN_FINGERPRINT_KEY", &self.auth.pan_fingerprint_key, LOCAL_PAN_FINGERPRINT_KEY),
        ];
        for (name, key, local_value) in keys {
            let Some(key) = key else { continue };
            if key.expose().len() < JWT_SECRET_MIN_BYTES {
                return Err(ConfigError(format!("{name} must be at least {JWT_SECRET_MIN_BYTES} bytes")));
            }
            if self.environment == Environment::Aws && key.expose() == local_value {
                return Err(ConfigError(format!("the local-only {name} must not be used with PAYSTREAM_ENV=aws")));
            }
        }

        let bounds = [
            ("PG_POOL_MAX_SIZE", self.database.pool_max_size as u64),
            ("ACCESS_TOKEN_TTL_S", self.auth.access_token_ttl_s),
            ("KAFKA_PUBLISH_TIMEOUT_MS", self.kafka.publish_timeout_ms),
            ("HTTP_MAX_BODY_BYTES", self.http.max_body_bytes as u64),
            ("HTTP_PAGE_LIMIT_MAX", self.http.page_limit_max as u64),
            ("VERIFY_TTL", self.fds.verify_ttl_s),
            ("VERIFY_SWEEP_BATCH_MAX", u64::from(self.fds.sweep_batch_max)),
            ("CONSUMER_BATCH_SHARDS", self.consumer.batch_shards as u64),
            ("CONSUMER_SHARD_MIN_EVENTS", self.consumer.shard_min_events as u64),
            ("SMS_RATE_WINDOW_S", self.sms.rate_window_s),
            ("SMS_SEND_TIMEOUT_MS", self.sms.send_timeout_ms),
            ("SMS_SEND_CONCURRENCY", self.sms.send_concurrency as u64),
            ("SMS_DELIVERY_BATCH_MAX", u64::from(self.sms.delivery_batch_max)),
            ("IDEMPOTENCY_WAIT_MS", self.http.idempotency_wait_ms),
            ("IDEMPOTENCY_LEASE_MS", self.http.idempotency_lease_ms),
            ("INTAKE_FACTS_MEMO_MAX", self.http.intake_facts_memo_max as u64),
            ("CACHE_TTL_S", self.cache_ttl_s),
            ("ORDER_COMMIT_DEADLINE_MS", self.flash.commit_deadline_ms),
            ("RECONCILE_BATCH_MAX", u64::from(self.flash.reconcile_batch_max)),
            ("ORDER_INLINE_PUBLISH_MS", self.flash.inline_publish_ms),
            ("RELAY_BATCH_MAX", u64::from(self.flash.relay_batch_max)),
            ("RELAY_CONCURRENCY", u64::from(self.flash.relay_concurrency)),
            ("RELAY_DEADLINE_MS", self.flash.relay_deadline_ms),
            ("AWS_LAMBDA_MAX_CONCURRENCY", u64::from(self.invocations_per_environment)),
            ("LOGIN_USER_FAILURES_MAX", u64::from(self.auth.login.user_failures_max)),
            ("LOGIN_USER_WINDOW_S", self.auth.login.user_window_s),
            ("LOGIN_IP_FAILURES_MAX", u64::from(self.auth.login.ip_failures_max)),
            ("LOGIN_IP_WINDOW_S", self.auth.login.ip_window_s),
        ];
        // Card holders' data never crosses the VPC in plaintext.
        if self.environment == Environment::Aws && self.database.tls == DatabaseTls::Disable {
            return Err(ConfigError("DATABASE_TLS=disable is refused with PAYSTREAM_ENV=aws".into()));
        }
        if self.environment == Environment::Aws && !self.redis.url.expose().starts_with("rediss://") {
            return Err(ConfigError("REDIS_URL must be rediss:// (TLS) with PAYSTREAM_ENV=aws".into()));
        }
        if self.benefit_min_gain_minor < 1 {
            return Err(ConfigError("BENEFIT_MIN_GAIN must be at least 1".into()));
        }
        if self.kafka.auth == KafkaAuth::Scram && (self.kafka.sasl_username.is_none() || self.kafka.sasl_password.is_none()) {
            return Err(ConfigError("KAFKA_AUTH=scram needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD".into()));
        }
        // Each shard of a batch holds a connection until it commits.
        if self.consumer.batch_shards > self.database.pool_max_size {
            return Err(ConfigError("CONSUMER_BATCH_SHARDS must not exceed PG_POOL_MAX_SIZE".into()));
        }
        if !(self.fds.max_speed_kmh.is_finite() && self.fds.max_speed_kmh > 0.0) {
            return Err(ConfigError("FDS_MAX_SPEED_KMH must be a positive number".into()));
        }
        for (name, value) in bounds {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be greater than zero")));
            }
        }
        // A twin request's wait on the key must end before the statement
        // timeout does, or the twin would get a server error instead of 409.
        if self.http.idempotency_wait_ms >= self.database.statement_timeout_ms {
            return Err(ConfigError("IDEMPOTENCY_WAIT_MS must be below PG_STATEMENT_TIMEOUT_MS".into()));
        }
        // A reservation is returned only once the request that made it can
        // no longer commit: it stops trying after the commit deadline, and
        // its last statement ends within the statement timeout.
        let commit_bound_ms = self.flash.commit_deadline_ms.saturating_add(self.database.statement_timeout_ms);
        if self.flash.reservation_ttl_ms <= commit_bound_ms {
            return Err(ConfigError(format!(
                "RESERVATION_TTL_MS must exceed ORDER_COMMIT_DEADLINE_MS + PG_STATEMENT_TIMEOUT_MS ({commit_bound_ms} ms)"
            )));
        }
        // The relay must not take rows the request path is still publishing.
        if self.flash.relay_grace_ms <= self.flash.inline_publish_ms {
            return Err(ConfigError("RELAY_GRACE_MS must exceed ORDER_INLINE_PUBLISH_MS".into()));
        }
        Ok(())
    }

    pub fn pg_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.database.connect_timeout_ms)
    }
}

/// `600`, `600s`, `10m` or `1h` as seconds.
fn parse_duration_s(name: &str, raw: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError(format!("{name} must be seconds or a number with s, m or h, got {raw:?}"));
    let (digits, unit_s) = match raw.as_bytes().last() {
        Some(b's') => (&raw[..raw.len() - 1], 1),
        Some(b'm') => (&raw[..raw.len() - 1], 60),
        Some(b'h') => (&raw[..raw.len() - 1], 3_600),
        _ => (raw, 1),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(unit_s).ok_or_else(bad)
}

struct Vars(HashMap<String, String>);

impl Vars {
    fn optional(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// A key that has a local default and none on AWS (a function on AWS
    /// gets only the secrets it needs).
    fn secret(&self, name: &str, environment: Environment, local_default: &str) -> Option<Secret> {
        match (self.optional(name), environment) {
            (Some(value), _) => Some(Secret::new(value)),
            (None, Environment::Local) => Some(Secret::new(local_default)),
            (None, Environment::Aws) => None,
        }
    }

    fn string(&self, name: &str, default: &str) -> String {
        self.optional(name).unwrap_or_else(|| default.to_owned())
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError> {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|_| ConfigError(format!("{name} must be a number, got {raw:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn local_defaults_are_complete() {
        let config = Config::from_vars(HashMap::new()).unwrap();
        assert_eq!(config.environment, Environment::Local);
        assert_eq!(config.kafka.payment_topic, "payment-stream");
        assert_eq!(config.auth.access_token_ttl_s, 900);
    }

    const AWS_REDIS: (&str, &str) = ("REDIS_URL", "rediss://cache.example:6379/0");

    #[test]
    fn aws_refuses_local_secrets() {
        let err = Config::from_vars(vars(&[("PAYSTREAM_ENV", "aws"), AWS_REDIS, ("JWT_SECRET", LOCAL_JWT_SECRET)])).unwrap_err();
        assert!(err.0.contains("local-only JWT_SECRET"), "{err}");
    }

    #[test]
    fn aws_refuses_plaintext_to_the_database_and_redis() {
        let err = Config::from_vars(vars(&[("PAYSTREAM_ENV", "aws"), AWS_REDIS, ("DATABASE_TLS", "disable")])).unwrap_err();
        assert!(err.0.contains("DATABASE_TLS"), "{err}");
        let err = Config::from_vars(vars(&[("PAYSTREAM_ENV", "aws"), ("REDIS_URL", "redis://cache.example:6379/0")])).unwrap_err();
        assert!(err.0.contains("rediss://"), "{err}");
    }

    #[test]
    fn on_aws_a_function_has_only_the_keys_it_was_given_and_tls_to_the_database() {
        let config = Config::from_vars(vars(&[("PAYSTREAM_ENV", "aws"), AWS_REDIS])).unwrap();
        assert!(config.auth.jwt_secret.is_none() && config.auth.pan_fingerprint_key.is_none());
        assert_eq!(config.database.tls, DatabaseTls::VerifyFull);
        let local = Config::from_vars(HashMap::new()).unwrap();
        assert_eq!(local.auth.jwt_secret.as_ref().map(Secret::expose), Some(LOCAL_JWT_SECRET));
        assert_eq!(local.database.tls, DatabaseTls::Disable);
        assert!(Config::from_vars(vars(&[("DATABASE_TLS", "prefer")])).is_err(), "only disable or verify-full");
    }

    #[test]
    fn short_jwt_secret_is_refused() {
        assert!(Config::from_vars(vars(&[("JWT_SECRET", "short")])).is_err());
    }

    #[test]
    fn numbers_are_parsed_and_checked() {
        assert!(Config::from_vars(vars(&[("PG_POOL_MAX_SIZE", "many")])).is_err());
        assert!(Config::from_vars(vars(&[("HTTP_MAX_BODY_BYTES", "0")])).is_err());
        let config = Config::from_vars(vars(&[("KAFKA_PUBLISH_TIMEOUT_MS", "750")])).unwrap();
        assert_eq!(config.kafka.publish_timeout_ms, 750);
    }

    #[test]
    fn durations_and_fds_defaults() {
        let config = Config::from_vars(HashMap::new()).unwrap();
        assert_eq!(config.fds.verify_ttl_s, 600);
        assert_eq!(config.fds.max_speed_kmh, 900.0);
        assert_eq!(config.sms.mode, SmsMode::Outbox);
        for (raw, s) in [("90", 90), ("90s", 90), ("2m", 120), ("1h", 3600)] {
            assert_eq!(Config::from_vars(vars(&[("VERIFY_TTL", raw)])).unwrap().fds.verify_ttl_s, s, "{raw}");
        }
        assert!(Config::from_vars(vars(&[("VERIFY_TTL", "ten")])).is_err());
        assert!(Config::from_vars(vars(&[("FDS_MAX_SPEED_KMH", "-1")])).is_err());
    }

    #[test]
    fn flash_bounds_keep_reservations_longer_than_any_commit() {
        let config = Config::from_vars(HashMap::new()).unwrap();
        assert_eq!((config.flash.reservation_ttl_ms, config.flash.commit_deadline_ms), (60_000, 5_000));
        assert!(config.flash.reservation_ttl_ms > config.flash.commit_deadline_ms + config.database.statement_timeout_ms);
        let err = Config::from_vars(vars(&[("RESERVATION_TTL_MS", "10000")])).unwrap_err();
        assert!(err.0.contains("RESERVATION_TTL_MS"), "{err}");
        let short = [("RESERVATION_TTL_MS", "1000"), ("ORDER_COMMIT_DEADLINE_MS", "200"), ("PG_STATEMENT_TIMEOUT_MS", "500"), ("IDEMPOTENCY_WAIT_MS", "400")];
        assert!(Config::from_vars(vars(&short)).is_ok());
        assert!(Config::from_vars(vars(&[("RELAY_GRACE_MS", "250")])).is_err(), "grace must exceed the inline publish bound");
        assert!(Config::from_vars(vars(&[("RELAY_CONCURRENCY", "0")])).is_err());
    }

    #[test]
    fn debug_masks_secrets() {
        let config = Config::from_vars(HashMap::new()).unwrap();
        let config = Config { database: DatabaseConfig { password: Some(Secret::new("db-pass-word")), ..config.database }, ..config };
        let shown = format!("{config:?}");
        assert!(!shown.contains("db-pass-word"));
        assert!(!shown.contains(LOCAL_JWT_SECRET));
        assert!(!shown.contains(LOCAL_PAN_FINGERPRINT_KEY));
    }
}
