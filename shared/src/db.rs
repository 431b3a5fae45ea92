//! PostgreSQL: one pool per execution environment, and versioned migrations
//! that live in the repository (`migrations/`) and are compiled into every
//! binary, so code and schema cannot drift apart.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use sha2::{Digest, Sha256};
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;

use crate::config::{ConfigError, DatabaseConfig, DatabaseTls};
use crate::tls;

pub type PgPool = Pool;
pub use tokio_postgres::error::SqlState;

/// Builds the pool. Connections open lazily, on first use, so a cold start
/// never waits for the database.
pub fn pool(config: &DatabaseConfig, application_name: &str) -> Result<PgPool, ConfigError> {
    let mut pg: tokio_postgres::Config =
        config.url.expose().parse().map_err(|e| ConfigError(format!("DATABASE_URL: {e}")))?;
    pg.connect_timeout(Duration::from_millis(config.connect_timeout_ms));
    pg.application_name(application_name);
    // A runaway statement must not hold a connection (and a Lambda) forever.
    pg.options(format!("-c statement_timeout={}", config.statement_timeout_ms));
    if let Some(user) = &config.user {
        pg.user(user);
    }
    if let Some(password) = &config.password {
        pg.password(password.expose());
    }
    let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
    let manager = match config.tls {
        DatabaseTls::Disable => Manager::from_config(pg, NoTls, manager_config),
        DatabaseTls::VerifyFull => {
            // `Require`, not the default `Prefer`: a server (or a man in the
            // middle) that declines TLS must not get a plaintext session.
            pg.ssl_mode(SslMode::Require);
            let pem = match &config.ca_file {
                Some(path) => tls::read_pem_file("DATABASE_CA_FILE", path)?,
                None => tls::AWS_RDS_CA_BUNDLE_PEM.as_bytes().to_vec(),
            };
            let client = tls::client_config("DATABASE_CA_FILE", tls::root_store("DATABASE_CA_FILE", &pem)?)?;
            Manager::from_config(pg, tokio_postgres_rustls::MakeRustlsConnect::new(client), manager_config)
        }
    };
    let timeout = Some(Duration::from_millis(config.connect_timeout_ms));
    Pool::builder(manager)
        .max_size(config.pool_max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .recycle_timeout(timeout)
        .build()
        .map_err(|e| ConfigError(format!("database pool: {e}")))
}

/// A pooled connection.
pub type PgConn = deadpool_postgres::Object;

/// Starts a transaction on a pooled connection: deadpool's, so `store`
/// functions on hot paths can keep their statements prepared once per
/// connection (`prepare_cached`). Those that take tokio-postgres's
/// `GenericClient` are given `&*tx`.
pub async fn begin(conn: &mut PgConn) -> Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error> {
    conn.transaction().await
}

/// One schema change. Never edit a migration that has shipped; add a new one.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "accounts", sql: include_str!("../../migrations/0001_accounts.sql") },
    Migration { version: 2, name: "payments", sql: include_str!("../../migrations/0002_payments.sql") },
    Migration { version: 3, name: "flash_sale", sql: include_str!("../../migrations/0003_flash_sale.sql") },
    Migration { version: 4, name: "analytics", sql: include_str!("../../migrations/0004_analytics.sql") },
    Migration { version: 5, name: "consumer_write_paths", sql: include_str!("../../migrations/0005_consumer_write_paths.sql") },
    Migration { version: 6, name: "intake_write_paths", sql: include_str!("../../migrations/0006_intake_write_paths.sql") },
    Migration { version: 7, name: "unread_indexes", sql: include_str!("../../migrations/0007_unread_indexes.sql") },
    Migration { version: 8, name: "outbox_delete_on_publish", sql: include_str!("../../migrations/0008_outbox_delete_on_publish.sql") },
];

/// Key for the advisory lock that serialises concurrent migrators.
const MIGRATION_LOCK_KEY: i64 = 0x7061_7973_7472_6d01;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("database error while migrating: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("migration {version} ({name}) was changed after it was applied; add a new migration instead")]
    Edited { version: i32, name: &'static str },
}

/// Applies every migration not yet applied, each in its own transaction, and
/// returns the versions it applied. Safe to run concurrently and repeatedly.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<Vec<i32>, MigrateError> {
    debug_assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version), "migrations must be ordered");
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY]).await?;
    let result = apply_pending(client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY]).await?;
    result
}

async fn apply_pending(client: &mut tokio_postgres::Client) -> Result<Vec<i32>, MigrateError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let checksum = sha256_hex(migration.sql);
        let row = client.query_opt("SELECT checksum FROM schema_migrations WHERE version = $1", &[&migration.version]).await?;
        match row {
            Some(row) if row.get::<_, String>(0) == checksum => continue,
            Some(_) => return Err(MigrateError::Edited { version: migration.version, name: migration.name }),
            None => {}
        }
        let tx = client.transaction().await?;
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &checksum],
        )
        .await?;
        tx.commit().await?;
        applied.push(migration.version);
    }
    Ok(applied)
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The name of the unique constraint a statement violated, if that is why it
/// failed. Lets callers map constraint names to catalogue codes.
pub fn unique_violation(err: &tokio_postgres::Error) -> Option<&str> {
    let db = err.as_db_error()?;
    (db.code() == &SqlState::UNIQUE_VIOLATION).then(|| db.constraint()).flatten()
}
