//! The one error catalogue: every error a client can see has a stable `code`,
//! and the code alone decides the HTTP status and title (mapped once, here).
//! Bodies are RFC 9457 `application/problem+json`.

use serde::Serialize;

/// Stable, machine-readable error codes. Renaming one is a breaking API change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    Validation,
    MalformedBody,
    InvalidPan,
    Unauthorized,
    BadCredentials,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    UsernameTaken,
    EmailTaken,
    CardAlreadyRegistered,
    IdempotencyKeyReused,
    IdempotencyKeyInProgress,
    SoldOut,
    AlreadyPurchased,
    TokenUsed,
    TokenExpired,
    SaleNotStarted,
    SaleEnded,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    BrokerUnavailable,
    DependencyUnavailable,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 25] = [
        Self::Validation,
        Self::MalformedBody,
        Self::InvalidPan,
        Self::Unauthorized,
        Self::BadCredentials,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::UsernameTaken,
        Self::EmailTaken,
        Self::CardAlreadyRegistered,
        Self::IdempotencyKeyReused,
        Self::IdempotencyKeyInProgress,
        Self::SoldOut,
        Self::AlreadyPurchased,
        Self::TokenUsed,
        Self::TokenExpired,
        Self::SaleNotStarted,
        Self::SaleEnded,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::RateLimited,
        Self::BrokerUnavailable,
        Self::DependencyUnavailable,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validation => "VALIDATION",
            Self::MalformedBody => "MALFORMED_BODY",
            Self::InvalidPan => "INVALID_PAN",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::BadCredentials => "BAD_CREDENTIALS",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::UsernameTaken => "USERNAME_TAKEN",
            Self::EmailTaken => "EMAIL_TAKEN",
            Self::CardAlreadyRegistered => "CARD_ALREADY_REGISTERED",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::IdempotencyKeyInProgress => "IDEMPOTENCY_KEY_IN_PROGRESS",
            Self::SoldOut => "SOLD_OUT",
            Self::AlreadyPurchased => "ALREADY_PURCHASED",
            Self::TokenUsed => "TOKEN_USED",
            Self::TokenExpired => "TOKEN_EXPIRED",
            Self::SaleNotStarted => "SALE_NOT_STARTED",
            Self::SaleEnded => "SALE_ENDED",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::RateLimited => "RATE_LIMITED",
            Self::BrokerUnavailable => "BROKER_UNAVAILABLE",
            Self::DependencyUnavailable => "DEPENDENCY_UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Self::Validation | Self::MalformedBody | Self::InvalidPan => 400,
            Self::Unauthorized | Self::BadCredentials => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::UsernameTaken
            | Self::EmailTaken
            | Self::CardAlreadyRegistered
            | Self::IdempotencyKeyReused
            | Self::IdempotencyKeyInProgress
            | Self::SoldOut
            | Self::AlreadyPurchased
            | Self::TokenUsed => 409,
            Self::TokenExpired => 410,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::SaleNotStarted | Self::SaleEnded => 422,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::BrokerUnavailable | Self::DependencyUnavailable => 503,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::Validation => "Invalid request",
            Self::MalformedBody => "Malformed request body",
            Self::InvalidPan => "Invalid card number",
            Self::Unauthorized => "Authentication required",
            Self::BadCredentials => "Wrong username or password",
            Self::Forbidden => "Not allowed",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::UsernameTaken => "Username taken",
            Self::EmailTaken => "Email taken",
            Self::CardAlreadyRegistered => "Card already registered",
            Self::IdempotencyKeyReused => "Idempotency key reused with another request",
            Self::IdempotencyKeyInProgress => "A request with this idempotency key is still in progress",
            Self::SoldOut => "Sold out",
            Self::AlreadyPurchased => "Already purchased",
            Self::TokenUsed => "Verification already used",
            Self::TokenExpired => "Verification expired",
            Self::SaleNotStarted => "Sale not started",
            Self::SaleEnded => "Sale ended",
            Self::PayloadTooLarge => "Request body too large",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::RateLimited => "Too many requests",
            Self::BrokerUnavailable => "Event broker unavailable",
            Self::DependencyUnavailable => "A backing service is unavailable",
            Self::Internal => "Internal error",
        }
    }
}

/// An error on its way to a client. `detail` is shown to the client, so it
/// must never contain a secret, a PAN or internal details; `source` is logged
/// only (and only for server-side errors).
#[derive(Debug, thiserror::Error)]
#[error("{code:?}: {detail}")]
pub struct AppError {
    pub code: ErrorCode,
    pub detail: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// Seconds the client should wait before trying again, sent as the
    /// `Retry-After` header (429 `RATE_LIMITED`).
    pub retry_after_s: Option<u64>,
}

impl AppError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into(), source: None, retry_after_s: None }
    }

    /// Adds a `Retry-After` of `seconds` (at least 1) to the answer.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds.max(1));
        self
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Validation, detail)
    }

    /// The same answer for another request that shared the failed work (a
    /// batch: `crate::batch`); the source stays with the original, which
    /// the batch logs once.
    pub fn for_each_request(&self) -> Self {
        Self { code: self.code, detail: self.detail.clone(), source: None, retry_after_s: self.retry_after_s }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, detail)
    }

    /// A failure of ours: the client sees a generic message, the log the cause.
    pub fn internal(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::new(ErrorCode::Internal, "unexpected error; it has been logged").with_source(source)
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    pub fn problem(&self) -> Problem<'_> {
        Problem {
            kind: PROBLEM_TYPE,
            title: self.code.title(),
            status: self.code.status(),
            code: self.code,
            detail: &self.detail,
        }
    }
}

/// RFC 9457 body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// Always about:blank: `code` identifies the problem.
    #[serde(rename = "type")]
    #[schema(schema_with = problem_type)]
    pub kind: &'static str,
    /// Fixed per code.
    pub title: &'static str,
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// Stable, machine-readable error code.
    #[schema(schema_with = problem_code)]
    pub code: ErrorCode,
    /// Human-readable explanation for this occurrence.
    pub detail: &'a str,
}

/// `type` of every problem: RFC 9457's default, as `code` says what it is.
const PROBLEM_TYPE: &str = "about:blank";

fn problem_type() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String).enum_values(Some([PROBLEM_TYPE]))
        .description(Some("Always about:blank: `code` identifies the problem."))
        .into()
}

fn problem_code() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
        .description(Some("Stable, machine-readable error code."))
        .into()
}

/// The detail of a write PostgreSQL aborted in favour of a concurrent one.
pub const WRITE_CONFLICT: &str = "a concurrent write conflicted with this one; nothing was done, retry";

/// The detail of a text value the database refused (the value is not echoed).
pub const TEXT_NOT_STORABLE: &str = "a text value contains a character that cannot be stored (U+0000)";

impl From<tokio_postgres::Error> for AppError {
    fn from(err: tokio_postgres::Error) -> Self {
        // A lost or refused connection is an outage, not a bug: say so, so
        // clients retry. Everything else (constraint, SQL, conversion) is ours.
        let io_failure = std::error::Error::source(&err).is_some_and(|s| s.is::<std::io::Error>());
        let server_unavailable = err.code().is_some_and(|c| {
            let code = c.code();
            code.starts_with("08") || code == "57P01" || code == "57P03" || code == "53300"
        });
        if err.is_closed() || io_failure || server_unavailable {
            return AppError::new(ErrorCode::DependencyUnavailable, "database unavailable; retry later").with_source(err);
        }
        // A transaction PostgreSQL chose to abort so that another could go
        // on (40P01 deadlock_detected, 40001 serialization_failure) did
        // nothing: the same request succeeds when retried. Retryable, not a
        // bug of the request.
        if err.code().is_some_and(|c| *c == crate::db::SqlState::T_R_DEADLOCK_DETECTED || *c == crate::db::SqlState::T_R_SERIALIZATION_FAILURE) {
            return AppError::new(ErrorCode::DependencyUnavailable, WRITE_CONFLICT).with_source(err);
        }
        // Text PostgreSQL cannot hold (U+0000 in text: 22021
        // character_not_in_repertoire; in jsonb: 22P05 untranslatable_character)
        // is the client's input, never our failure. `http::parse_json` and
        // `http::respond` refuse it first, naming the field; this is the backstop
        // for any path that reaches the database without them.
        if err.code().is_some_and(|c| c.code() == "22021" || c.code() == "22P05") {
            return AppError::validation(TEXT_NOT_STORABLE).with_source(err);
        }
        AppError::internal(err)
    }
}

impl From<deadpool_postgres::PoolError> for AppError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        AppError::new(ErrorCode::DependencyUnavailable, "database unavailable; retry later").with_source(err)
    }
}

impl From<redis::RedisError> for AppError {
    fn from(err: redis::RedisError) -> Self {
        AppError::new(ErrorCode::DependencyUnavailable, "cache unavailable; retry later").with_source(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serialises_as_its_stable_name() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert!((400..600).contains(&code.status()));
        }
    }

    #[test]
    fn problem_body_is_rfc9457() {
        let err = AppError::new(ErrorCode::SoldOut, "no stock left");
        let body = serde_json::to_value(err.problem()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type":"about:blank","title":"Sold out","status":409,"code":"SOLD_OUT","detail":"no stock left"})
        );
    }
}
