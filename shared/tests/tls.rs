//! TLS to PostgreSQL and Redis, against real servers: the local PostgreSQL
//! (Debian enables TLS with its snakeoil certificate for `localhost`) and a
//! private `redis-server` listening only for TLS, with a CA made for the test.
//! Each side is checked both ways: the right CA and name connect (and the
//! session really is encrypted), anything else is refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use paystream::cache::Redis;
use paystream::config::{DatabaseConfig, DatabaseTls, RedisConfig};
use paystream::secret::Secret;
use paystream::testing::{fresh_config, unique_suffix};

/// The error and every cause under it, so the reason (unknown issuer, wrong
/// name) is visible whatever layer reports it.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(" / ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn connect(database: &DatabaseConfig) -> Result<deadpool_postgres::Object, String> {
    let pool = paystream::db::pool(database, "tls-test").map_err(|e| e.to_string())?;
    pool.get().await.map_err(|e| chain(&e))
}

#[tokio::test]
async fn postgres_verify_full_encrypts_and_refuses_an_unknown_ca_or_a_wrong_name() {
    let config = fresh_config().await;
    let plain = connect(&config.database).await.unwrap();
    // The server's own certificate file is the CA a test can trust.
    let cert_file: String = plain.query_one("SHOW ssl_cert_file", &[]).await.unwrap().get(0);
    let encrypted: bool = plain.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0);
    assert!(!encrypted, "DATABASE_TLS=disable stays plaintext on loopback");

    // The snakeoil certificate names `localhost`, so dial that name.
    let by_name = config.database.url.expose().replace("@127.0.0.1:", "@localhost:");
    let verified = DatabaseConfig {
        url: Secret::new(by_name),
        tls: DatabaseTls::VerifyFull,
        ca_file: Some(PathBuf::from(&cert_file)),
        ..config.database.clone()
    };
    let conn = connect(&verified).await.expect("verify-full with the server's CA and name");
    let row = conn.query_one("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
    assert!(row.get::<_, bool>(0), "the session is encrypted");
    let version: String = row.get(1);
    assert!(version == "TLSv1.3" || version == "TLSv1.2", "{version}");

    // The right CA but another name: refused.
    let wrong_name = DatabaseConfig { url: config.database.url.clone(), ..verified.clone() };
    let err = connect(&wrong_name).await.err().expect("127.0.0.1 is not the certificate's name");
    assert!(err.contains("certificate") || err.contains("NotValidForName"), "{err}");

    // The bundled Amazon RDS CAs do not vouch for this server: refused.
    let rds_bundle = DatabaseConfig { ca_file: None, ..verified.clone() };
    let err = connect(&rds_bundle).await.err().expect("unknown issuer");
    assert!(err.contains("UnknownIssuer") || err.contains("certificate"), "{err}");
}

/// A throwaway CA and a server certificate for `localhost`, made by the
/// `openssl` command-line tool.
fn make_ca_and_server_cert(dir: &Path) {
    let run = |args: &[&str]| {
        let status = Command::new("openssl").args(args).current_dir(dir).stdout(Stdio::null()).stderr(Stdio::null()).status().expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    run(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=paystream-test-ca"]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    run(&["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf"]);
}

/// A private Redis that speaks only TLS and wants a password; killed on drop.
struct TlsRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl TlsRedis {
    const PASSWORD: &'static str = "test-redis-auth-token";

    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("paystream-tls-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        make_ca_and_server_cert(&dir);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--tls-cert-file", "server.pem", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem"])
            .args(["--tls-auth-clients", "no", "--requirepass", Self::PASSWORD, "--save", "", "--appendonly", "no"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "TLS redis-server did not start");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self { child, port, dir }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn ping(config: &RedisConfig) -> Result<String, String> {
    let redis = Redis::new(config).map_err(|e| e.to_string())?;
    let mut conn = redis.conn().await.map_err(|e| format!("{e:?}"))?;
    let key = redis.key("tls-probe");
    redis::cmd("SET").arg(&key).arg("over-tls").query_async::<()>(&mut conn).await.map_err(|e| chain(&e))?;
    redis::cmd("GET").arg(&key).query_async::<String>(&mut conn).await.map_err(|e| chain(&e))
}

#[tokio::test]
async fn redis_over_tls_verifies_the_server_and_sends_the_auth_token() {
    let server = TlsRedis::start().await;
    let base = fresh_config().await.redis;
    let tls = RedisConfig {
        url: Secret::new(format!("rediss://localhost:{}/0", server.port)),
        password: Some(Secret::new(TlsRedis::PASSWORD)),
        ca_file: Some(server.dir.join("ca.pem")),
        ..base.clone()
    };
    assert_eq!(ping(&tls).await.expect("TLS with the right CA and the token"), "over-tls");

    // The system's roots do not know the test CA: refused.
    let err = ping(&RedisConfig { ca_file: None, ..tls.clone() }).await.expect_err("unknown CA");
    assert!(err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"), "{err}");

    // Plain TCP to a TLS-only server does not get through either.
    let plain = RedisConfig { url: Secret::new(format!("redis://localhost:{}/0", server.port)), ca_file: None, ..tls.clone() };
    assert!(ping(&plain).await.is_err(), "plaintext refused");

    // Without the token the server refuses the commands.
    let err = ping(&RedisConfig { password: None, ..tls }).await.expect_err("NOAUTH");
    assert!(err.contains("NOAUTH") || err.contains("Authentication"), "{err}");
}
