//! Cold start on AWS, for real except AWS itself: the function is given only
//! secret ARNs, `Platform::bootstrap` fetches them through the AWS SDK from a
//! Secrets-Manager-compatible endpoint on loopback, and the values it got
//! are the ones in use (database credentials, JWT key). This test binary
//! sets process environment variables, so it holds exactly one test.

use std::collections::HashMap;

use paystream::testing::{aws_endpoint, fresh_config};
use paystream::{Need, Platform};

const JWT_ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:paystream/jwt-AbCdEf";
const PAN_ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:paystream/pan-AbCdEf";
const DB_ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-1234-AbCdEf";
const JWT_KEY: &str = "jwt-key-from-secrets-manager-0123456789abcdef";

/// GetSecretValue over the JSON protocol, as Secrets Manager answers it.
fn secrets_manager(request: &str, _calls: usize) -> paystream::testing::AwsAnswer {
    let secrets = HashMap::from([
        (JWT_ARN, JWT_KEY.to_owned()),
        (PAN_ARN, "pan-key-from-secrets-manager-0123456789abcdef".to_owned()),
        // An RDS-managed master user secret: JSON with username and password.
        (DB_ARN, r#"{"username":"postgres","password":"rotated-by-rds"}"#.to_owned()),
    ]);
    let body = &request[request.find("\r\n\r\n").map_or(request.len(), |i| i + 4)..];
    let asked: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let id = asked["SecretId"].as_str().unwrap_or_default();
    match secrets.get(id) {
        Some(value) => {
            let answer = serde_json::json!({"ARN": id, "Name": "n", "SecretString": value, "VersionId": "v1", "VersionStages": ["AWSCURRENT"], "CreatedDate": 1.7e9});
            (200, answer.to_string(), "application/x-amz-json-1.1")
        }
        None => (400, r#"{"__type":"ResourceNotFoundException","message":"Secrets Manager can't find the specified secret."}"#.to_owned(), "application/x-amz-json-1.1"),
    }
}

#[tokio::test]
async fn bootstrap_fetches_each_secret_once_uses_them_and_fails_fast_without_a_needed_one() {
    let (endpoint, requests) = aws_endpoint(secrets_manager).await;
    let local = fresh_config().await;
    // On AWS the database URL carries no credentials (they come from the
    // secret) and TLS is verify-full: against the local server, its own
    // certificate (for `localhost`) is the CA.
    let plain = paystream::db::pool(&local.database, "secrets-test").unwrap().get().await.unwrap();
    let cert_file: String = plain.query_one("SHOW ssl_cert_file", &[]).await.unwrap().get(0);
    let url_without_user = local.database.url.expose().replace("postgres://postgres@127.0.0.1:", "postgres://localhost:");
    let env = [
        ("PAYSTREAM_ENV", "aws"),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("DATABASE_URL", url_without_user.as_str()),
        ("DATABASE_TLS", "verify-full"),
        ("DATABASE_CA_FILE", cert_file.as_str()),
        // Never contacted here; AWS mode only accepts TLS to Redis.
        ("REDIS_URL", "rediss://localhost:6380/0"),
        ("DATABASE_SECRET_ARN", DB_ARN),
        ("JWT_SECRET_ARN", JWT_ARN),
        ("PAN_FINGERPRINT_KEY_ARN", PAN_ARN),
    ];
    for (name, value) in env {
        std::env::set_var(name, value);
    }
    for name in ["JWT_SECRET", "PAN_FINGERPRINT_KEY", "DATABASE_USER", "DATABASE_PASSWORD"] {
        std::env::remove_var(name);
    }

    let platform = Platform::bootstrap("account", &[Need::JwtSecret, Need::PanFingerprintKey]).await.expect("cold start with secrets");
    // One GetSecretValue per secret, signed like any AWS call.
    let seen = requests.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    for request in &seen {
        let lower = request.to_ascii_lowercase();
        assert!(lower.contains("x-amz-target: secretsmanager.getsecretvalue"), "{request}");
        assert!(lower.contains("authorization: aws4-hmac-sha256 credential=akidtest/"), "{request}");
    }
    assert_eq!(platform.config.database.user.as_deref(), Some("postgres"));
    assert_eq!(platform.config.database.password.as_ref().map(|p| p.expose()), Some("rotated-by-rds"));
    // The session runs as the secret's user, over TLS. (The local server
    // trusts loopback, so it never asks for the password; the password's
    // way into the connection settings is asserted above.)
    let db = platform.pg.get().await.expect("connects with the secret's user, TLS verified");
    let row = db.query_one("SELECT current_user::text, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())", &[]).await.unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, bool>(1)), ("postgres".to_owned(), true));
    // Tokens are signed with the fetched key, not a local default.
    let token = platform.tokens.issue(paystream::demo::ALICE, paystream::domain::Role::User).unwrap();
    let check = jsonwebtoken::decode::<serde_json::Value>(
        &token.access_token,
        &jsonwebtoken::DecodingKey::from_secret(JWT_KEY.as_bytes()),
        &{
            let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
            v.set_audience(&["paystream-api"]);
            v
        },
    );
    assert!(check.is_ok(), "{check:?}");
    assert!(!format!("{:?}", platform.config).contains("rotated-by-rds"), "Debug masks fetched secrets");

    // A consumer needs neither key and reads neither secret.
    std::env::remove_var("JWT_SECRET_ARN");
    std::env::remove_var("PAN_FINGERPRINT_KEY_ARN");
    let consumer = Platform::bootstrap("settle", &[]).await.expect("a consumer needs no signing key");
    assert!(consumer.config.auth.jwt_secret.is_none());
    assert!(consumer.tokens.issue(paystream::demo::ALICE, paystream::domain::Role::User).is_err(), "no key, no tokens");
    // The account function without its keys does not start.
    let err = Platform::bootstrap("account", &[Need::JwtSecret]).await.err().expect("missing key");
    assert!(err.to_string().contains("JWT_SECRET_ARN"), "{err}");
    // A secret that does not exist stops the cold start with its variable named.
    std::env::set_var("JWT_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing");
    let err = Platform::bootstrap("account", &[Need::JwtSecret]).await.err().expect("unknown secret");
    assert!(err.to_string().contains("JWT_SECRET_ARN") && err.to_string().contains("ResourceNotFound"), "{err}");
}
