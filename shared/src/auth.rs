//! Authentication: HS256 access tokens (algorithm pinned; `exp`, `iss`,
//! `aud` required) and Argon2id password hashes.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::cache::Redis;
use crate::config::{AuthConfig, LoginLimits};
use crate::domain::{Password, Role, UserId};
use crate::error::{AppError, ErrorCode};
use crate::secret::Secret;

/// The one algorithm we issue and accept. Pinning it shuts out `alg: none`
/// and key-confusion attacks: a token with any other header is refused.
const JWT_ALGORITHM: Algorithm = Algorithm::HS256;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: uuid::Uuid,
    role: Role,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// Who is calling, established from a verified token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    pub role: Role,
}

impl Caller {
    /// Fails with 403 unless the caller has one of `roles`.
    pub fn require_role(&self, roles: &[Role]) -> Result<(), AppError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            let names: Vec<_> = roles.iter().map(|r| r.as_str()).collect();
            Err(AppError::forbidden(format!("this needs the role {}", names.join(" or "))))
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Owners and admins may see an object; for anyone else it does not exist.
    pub fn may_see(&self, owner: UserId) -> bool {
        self.user_id == owner || self.is_admin()
    }
}

/// The `token_type` of every access token.
pub const TOKEN_TYPE: &str = "Bearer";

/// What log-in returns.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccessToken {
    /// HS256 JWT.
    pub access_token: String,
    #[schema(schema_with = crate::api::responses::bearer)]
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

pub struct TokenIssuer {
    /// `None` when this function was given no signing key: it then refuses
    /// to issue or accept any token (never signs with an empty key).
    keys: Option<(EncodingKey, DecodingKey)>,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_s: u64,
}

impl TokenIssuer {
    pub fn new(config: &AuthConfig) -> Self {
        let keys = config.jwt_secret.as_ref().map(|secret| {
            let secret = secret.expose().as_bytes();
            (EncodingKey::from_secret(secret), DecodingKey::from_secret(secret))
        });
        let mut validation = Validation::new(JWT_ALGORITHM);
        validation.set_issuer(&[&config.jwt_issuer]);
        validation.set_audience(&[&config.jwt_audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = config.jwt_leeway_s;
        validation.validate_exp = true;
        Self {
            keys,
            validation,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            ttl_s: config.access_token_ttl_s,
        }
    }

    pub fn issue(&self, user_id: UserId, role: Role) -> Result<AccessToken, AppError> {
        self.issue_at(user_id, role, OffsetDateTime::now_utc())
    }

    /// Issues a token as if it were `now` (tests use it to mint expired ones).
    pub fn issue_at(&self, user_id: UserId, role: Role, now: OffsetDateTime) -> Result<AccessToken, AppError> {
        let iat = now.unix_timestamp();
        let claims = Claims {
            sub: user_id.0,
            role,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat,
            exp: iat + self.ttl_s as i64,
        };
        let token = jsonwebtoken::encode(&Header::new(JWT_ALGORITHM), &claims, &self.keys()?.0).map_err(AppError::internal)?;
        Ok(AccessToken { access_token: token, token_type: TOKEN_TYPE, expires_in: self.ttl_s })
    }

    pub fn verify(&self, token: &str) -> Result<Caller, AppError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.keys()?.1, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let detail = match e.kind() {
                ErrorKind::ExpiredSignature => "access token expired",
                ErrorKind::InvalidSignature => "access token signature invalid",
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "access token algorithm not accepted",
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => "access token not issued for this API",
                _ => "access token invalid",
            };
            AppError::unauthorized(detail)
        })?;
        Ok(Caller { user_id: UserId(data.claims.sub), role: data.claims.role })
    }

    fn keys(&self) -> Result<&(EncodingKey, DecodingKey), AppError> {
        // Logged with the source; the client sees only the generic detail.
        self.keys
            .as_ref()
            .ok_or_else(|| AppError::internal(crate::config::ConfigError("this function has no JWT signing key (JWT_SECRET / JWT_SECRET_ARN)".into())))
    }

    /// Reads `Authorization: Bearer <token>` and verifies it.
    pub fn authenticate(&self, headers: &lambda_http::http::HeaderMap) -> Result<Caller, AppError> {
        let value = headers
            .get(lambda_http::http::header::AUTHORIZATION)
            .ok_or_else(|| AppError::unauthorized("missing Authorization: Bearer token"))?;
        let value = value.to_str().map_err(|_| AppError::unauthorized("malformed Authorization header"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| AppError::unauthorized("Authorization must be a Bearer token"))?;
        self.verify(token.trim())
    }
}

/// Argon2id with the crate's defaults (RFC 9106 / OWASP: m=19 MiB, t=2, p=1).
/// CPU-heavy by design: callers run it on the blocking pool.
pub fn hash_password(password: &Password) -> Result<String, AppError> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::new(ErrorCode::Internal, "password hashing failed").with_source(PasswordHashError(e.to_string())))
}

/// Constant-time check of a password against a stored PHC string.
pub fn verify_password(candidate: &Secret, stored_hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    match PasswordHash::new(stored_hash) {
        Ok(parsed) => argon2::Argon2::default().verify_password(candidate.expose().as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A PHC hash of a password nobody has, checked when the username is unknown
/// so that "no such user" and "wrong password" take the same time.
pub fn dummy_password_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let password = Password::parse(Secret::new("no-such-user-password")).expect("long enough");
        hash_password(&password).expect("hashing works")
    })
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PasswordHashError(String);

/// What every refused log-in attempt answers: the same for an existing and an
/// unknown username, and for the per-username and the per-address limit.
pub const LOGIN_RATE_LIMITED: &str = "too many failed log-ins; try again later";

/// Admits a log-in attempt under [`LoginLimits`], checked BEFORE the
/// password so a refused attempt costs one Redis round trip, not an Argon2id
/// hash. The admission counts the attempt at once (so concurrent guesses
/// cannot all slip under the limit); `attempt` is then run and, unless it
/// ends in `BAD_CREDENTIALS`, the count is given back: only failures
/// consume. Unknown usernames are counted exactly like real ones, so the
/// answer (429, body, Retry-After, timing) says nothing about existence.
///
/// Redis unavailable: fail CLOSED, with 503 `DEPENDENCY_UNAVAILABLE` and no
/// hash. Failing open would turn every Redis outage (or anything that
/// provokes one) into an unlimited password oracle and a CPU cost attack on
/// the accounts that move money; failing closed stops new log-ins only while
/// Redis is down. Each request asks Redis afresh (bounded by the
/// REDIS_*_TIMEOUT_MS settings), so log-ins come back the moment it does;
/// issued tokens keep working meanwhile. Counters always carry an expiry
/// (repaired if one is ever missing), so nothing can lock an account for
/// longer than its window.
pub async fn with_login_limits<T>(
    redis: &Redis,
    limits: &LoginLimits,
    username: &str,
    source_ip: Option<&str>,
    attempt: impl std::future::Future<Output = Result<T, AppError>>,
) -> Result<T, AppError> {
    let keys = login_limit_keys(redis, username, source_ip);
    let (wait_ms, tripped) = admit_login(redis, limits, &keys).await?;
    if wait_ms > 0 {
        let which = match tripped {
            1 => "username",
            2 => "source address",
            _ => "username and source address",
        };
        tracing::warn!(limit = which, retry_after_ms = wait_ms, "log-in refused: too many failures");
        return Err(AppError::new(ErrorCode::RateLimited, LOGIN_RATE_LIMITED).retry_after(wait_ms.div_ceil(1_000)));
    }
    let outcome = attempt.await;
    let failed_credentials = matches!(&outcome, Err(e) if e.code == ErrorCode::BadCredentials);
    if !failed_credentials {
        if let Err(e) = refund_login(redis, &keys).await {
            // The attempt stays counted until its window ends: harmless.
            tracing::warn!(error = %e, "log-in attempt not given back");
        }
    }
    outcome
}

/// Per-username and per-address counter keys. Both are SHA-256 of the
/// normalised value: fixed length whatever the client sent, and no
/// usernames or addresses at rest in Redis.
fn login_limit_keys(redis: &Redis, username: &str, source_ip: Option<&str>) -> [String; 2] {
    use sha2::{Digest, Sha256};
    let hex = |text: &str| Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>();
    // As `Username::parse` normalises, so `Alice` and `alice ` share a count.
    let user = username.trim().to_ascii_lowercase();
    [redis.key(&format!("login:fail:user:{}", hex(&user))), redis.key(&format!("login:fail:ip:{}", hex(&address_bucket(source_ip))))]
}

/// The unit an address limit counts: an IPv4 address, or an IPv6 /64 (one
/// subscriber usually holds a whole /64 and could rotate through it).
fn address_bucket(source_ip: Option<&str>) -> String {
    use std::net::IpAddr;
    match source_ip.map(|ip| ip.trim().parse::<IpAddr>()) {
        Some(Ok(IpAddr::V6(v6))) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Some(Ok(IpAddr::V4(v4))) => v4.to_string(),
        // Unparseable or absent: one shared bucket, which limits sooner.
        Some(Err(_)) | None => "unknown".to_owned(),
    }
}

/// KEYS: the per-username and per-address counters. ARGV: max and window
/// (ms) for each. Returns {0, 0} when admitted (and counted), else {the
/// milliseconds until every exceeded counter expires, 1 user | 2 address | 3 both}.
const ADMIT_LOGIN_LUA: &str = r#"
local wait, tripped = 0, 0
for i = 1, 2 do
  local max, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  if tonumber(redis.call('GET', KEYS[i]) or '0') >= max then
    local ttl = redis.call('PTTL', KEYS[i])
    -- A counter without an expiry would refuse forever: give it its window.
    if ttl < 0 then redis.call('PEXPIRE', KEYS[i], window); ttl = window end
    if ttl > wait then wait = ttl end
    tripped = tripped + i
  end
end
if wait > 0 then return {wait, tripped} end
for i = 1, 2 do
  if redis.call('INCR', KEYS[i]) == 1 or redis.call('PTTL', KEYS[i]) < 0 then
    redis.call('PEXPIRE', KEYS[i], ARGV[2 * i])
  end
end
return {0, 0}
"#;

/// Gives one admitted attempt back (never below zero; expiries untouched).
const REFUND_LOGIN_LUA: &str = r#"
for i = 1, #KEYS do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
return 0
"#;

async fn admit_login(redis: &Redis, limits: &LoginLimits, keys: &[String; 2]) -> Result<(u64, i64), AppError> {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    let script = SCRIPT.get_or_init(|| redis::Script::new(ADMIT_LOGIN_LUA));
    // Both keys go to one script: this client talks to one Redis node (the
    // ElastiCache primary endpoint), not a cluster.
    let unavailable = || AppError::new(ErrorCode::DependencyUnavailable, "log-in is unavailable for a moment; retry later");
    let mut conn = redis.conn().await.map_err(|e| unavailable().with_source(e))?;
    let (wait_ms, tripped): (i64, i64) = script
        .key(&keys[0])
        .key(&keys[1])
        .arg(limits.user_failures_max)
        .arg(limits.user_window_s.saturating_mul(1_000))
        .arg(limits.ip_failures_max)
        .arg(limits.ip_window_s.saturating_mul(1_000))
        .invoke_async(&mut conn)
        .await
        .map_err(|e| unavailable().with_source(e))?;
    Ok((wait_ms.max(0) as u64, tripped))
}

async fn refund_login(redis: &Redis, keys: &[String; 2]) -> Result<(), AppError> {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    let script = SCRIPT.get_or_init(|| redis::Script::new(REFUND_LOGIN_LUA));
    let mut conn = redis.conn().await?;
    let _: i64 = script.key(&keys[0]).key(&keys[1]).invoke_async(&mut conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use base64::Engine;

    fn url_b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(&Config::from_vars(Default::default()).unwrap().auth)
    }

    #[test]
    fn issued_tokens_verify() {
        let issuer = issuer();
        let user = UserId::generate();
        let token = issuer.issue(user, Role::Merchant).unwrap();
        assert_eq!(token.token_type, "Bearer");
        let caller = issuer.verify(&token.access_token).unwrap();
        assert_eq!(caller, Caller { user_id: user, role: Role::Merchant });
    }

    #[test]
    fn expired_tokens_are_refused() {
        let issuer = issuer();
        let long_ago = OffsetDateTime::now_utc() - time::Duration::hours(2);
        let token = issuer.issue_at(UserId::generate(), Role::User, long_ago).unwrap();
        assert_eq!(issuer.verify(&token.access_token).unwrap_err().code, ErrorCode::Unauthorized);
    }

    #[test]
    fn alg_none_is_refused() {
        let issuer = issuer();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let header = url_b64(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = format!(
            r#"{{"sub":"{}","role":"ADMIN","iss":"paystream","aud":"paystream-api","iat":{now},"exp":{}}}"#,
            uuid::Uuid::new_v4(),
            now + 600
        );
        let token = format!("{header}.{}.", url_b64(claims.as_bytes()));
        assert!(issuer.verify(&token).is_err());
    }

    #[test]
    fn other_key_issuer_or_audience_is_refused() {
        let ours = issuer();
        let mut vars = std::collections::HashMap::new();
        vars.insert("JWT_SECRET".to_string(), "another-secret-that-is-long-enough-000000".to_string());
        let theirs = TokenIssuer::new(&Config::from_vars(vars).unwrap().auth);
        let forged = theirs.issue(UserId::generate(), Role::Admin).unwrap();
        assert!(ours.verify(&forged.access_token).is_err());

        let mut vars = std::collections::HashMap::new();
        vars.insert("JWT_AUDIENCE".to_string(), "someone-else".to_string());
        let other_aud = TokenIssuer::new(&Config::from_vars(vars).unwrap().auth);
        let token = other_aud.issue(UserId::generate(), Role::User).unwrap();
        assert!(ours.verify(&token.access_token).is_err());
    }

    #[test]
    fn passwords_hash_and_verify() {
        let password = Password::parse(Secret::new("correct horse battery")).unwrap();
        let hash = hash_password(&password).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&Secret::new("correct horse battery"), &hash));
        assert!(!verify_password(&Secret::new("wrong horse battery"), &hash));
        assert!(!verify_password(&Secret::new("x"), "not a hash"));
    }

    #[test]
    fn addresses_are_bucketed() {
        assert_eq!(address_bucket(Some("203.0.113.7")), "203.0.113.7");
        assert_eq!(address_bucket(Some("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(address_bucket(Some("2001:db8:1:2:ffff::9")), address_bucket(Some("2001:db8:1:2::1")));
        assert_eq!(address_bucket(Some("::ffff:203.0.113.7")), "203.0.113.7");
        assert_eq!(address_bucket(Some("not an address")), "unknown");
        assert_eq!(address_bucket(None), "unknown");
    }

    #[test]
    fn roles_are_enforced() {
        let caller = Caller { user_id: UserId::generate(), role: Role::User };
        assert!(caller.require_role(&[Role::User]).is_ok());
        assert_eq!(caller.require_role(&[Role::Merchant, Role::Admin]).unwrap_err().code, ErrorCode::Forbidden);
        assert!(caller.may_see(caller.user_id));
        assert!(!caller.may_see(UserId::generate()));
    }
}
