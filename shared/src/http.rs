//! The HTTP edge every API function shares: decoding JSON bodies with clear
//! errors, encoding answers and problems, logging each request once, and
//! running under `lambda_http` (API Gateway HTTP API v2 events).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, RequestExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::error::{AppError, ErrorCode};

pub type Request = lambda_http::Request;
pub type Response = lambda_http::Response<Body>;

/// An HTTP-triggered function: routes a request to the domain and back.
pub trait HttpApi: Send + Sync + 'static {
    fn route(&self, req: Request) -> impl Future<Output = Result<Response, AppError>> + Send;
}

/// Handles one request: routes it, turns errors into problem+json, and logs
/// one line with the outcome. Never panics on bad input, never fails.
pub async fn respond<A: HttpApi>(api: &A, req: Request) -> Response {
    let request_id = request_id(&req);
    // The route template, never the raw path: paths can carry tokens.
    let route = route_key(&req).unwrap_or_else(|| req.method().to_string());
    let span = tracing::info_span!("http", request_id = %request_id, route = %route);
    async move {
        let started = Instant::now();
        let path = req.uri().path().to_owned();
        let outcome = match check_request_text(&req).and_then(|()| check_query_names(&req)) {
            Ok(()) => api.route(req).await,
            Err(err) => Err(err),
        };
        let response = match outcome {
            Ok(response) => response,
            Err(err) => {
                log_error(&err);
                let mut response = problem(&err);
                if err.code == ErrorCode::MethodNotAllowed {
                    allow(&mut response, &path);
                }
                response
            }
        };
        tracing::info!(status = response.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request handled");
        response
    }
    .instrument(span)
    .await
}

fn log_error(err: &AppError) {
    let source = err.source.as_ref().map(|s| s.to_string()).unwrap_or_default();
    if err.status() >= 500 {
        tracing::error!(code = err.code.as_str(), detail = %err.detail, source = %source, "request failed");
    } else {
        tracing::info!(code = err.code.as_str(), detail = %err.detail, "request refused");
    }
}

/// The Lambda request id, or API Gateway's when no Lambda context exists
/// (local tools and tests invoke handlers directly).
fn request_id(req: &Request) -> String {
    if let Some(ctx) = req.lambda_context_ref() {
        return ctx.request_id.clone();
    }
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

fn route_key(req: &Request) -> Option<String> {
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.route_key.clone(),
        _ => None,
    }
}

/// Runs `api` as a Lambda function until the runtime shuts it down: one
/// invocation at a time per execution environment (classic Lambda), or up
/// to `AWS_LAMBDA_MAX_CONCURRENCY` at once (Lambda Managed Instances), all
/// sharing the environment's pools and producer.
pub async fn run<A: HttpApi>(api: A) -> Result<(), lambda_http::Error> {
    let api = Arc::new(api);
    crate::metrics::runtime_ready();
    lambda_http::run_concurrent(lambda_http::service_fn(move |req: Request| {
        let api = Arc::clone(&api);
        async move {
            crate::metrics::invocation_started(&request_id(&req));
            let response = respond(api.as_ref(), req).await;
            // Before the answer: once it is posted the environment may freeze.
            crate::metrics::flush();
            Ok::<_, std::convert::Infallible>(response)
        }
    }))
    .await
}

/// A function that also runs on a schedule (EventBridge).
pub trait ScheduledJob: Send + Sync + 'static {
    fn run_scheduled(&self) -> impl Future<Output = Result<serde_json::Value, AppError>> + Send;
}

/// Runs a function triggered both by API Gateway (HTTP API v2) and by an
/// EventBridge schedule: scheduled events go to [`ScheduledJob`], everything
/// else is decoded as an HTTP request. Concurrent as [`run`].
pub async fn run_http_and_schedule<A: HttpApi + ScheduledJob>(api: A) -> Result<(), lambda_http::Error> {
    let api = Arc::new(api);
    crate::metrics::runtime_ready();
    lambda_http::lambda_runtime::run_concurrent(lambda_http::service_fn(move |event: lambda_http::LambdaEvent<serde_json::Value>| {
        let api = Arc::clone(&api);
        async move {
            crate::metrics::invocation_started(&event.context.request_id);
            let answer = dispatch(api.as_ref(), event.payload, event.context).await;
            crate::metrics::flush();
            answer
        }
    }))
    .await
}

/// Routes one raw invocation of a [`run_http_and_schedule`] function.
pub async fn dispatch<A: HttpApi + ScheduledJob>(
    api: &A,
    payload: serde_json::Value,
    context: lambda_http::Context,
) -> Result<serde_json::Value, lambda_http::Error> {
    if payload.get("source").and_then(|s| s.as_str()) == Some("aws.events") {
        let span = tracing::info_span!("schedule", request_id = %context.request_id);
        return Ok(api.run_scheduled().instrument(span).await?);
    }
    let event: lambda_http::request::LambdaRequest = serde_json::from_value(payload)?;
    let request: Request = lambda_http::http::Request::from(event).with_lambda_context(context);
    Ok(apigw_v2_response(respond(api, request).await))
}

/// The API Gateway HTTP API (payload 2.0) response for a response.
pub fn apigw_v2_response(response: Response) -> serde_json::Value {
    use base64::Engine;
    let (parts, body) = response.into_parts();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), serde_json::Value::String(v.to_owned()))))
        .collect();
    let (body, is_base64) = match body {
        Body::Empty => (String::new(), false),
        Body::Text(t) => (t, false),
        Body::Binary(b) => (base64::engine::general_purpose::STANDARD.encode(b), true),
        _ => (String::new(), false),
    };
    serde_json::json!({"statusCode": parts.status.as_u16(), "headers": headers, "body": body, "isBase64Encoded": is_base64})
}

/// Whether the client prefers HTML (a browser) over JSON.
pub fn wants_html(req: &Request) -> bool {
    let accept = header_str(req, header::ACCEPT.as_str()).unwrap_or("");
    accept.contains("text/html")
}

/// An HTML answer with headers suited to pages that carry a secret in their
/// URL: no caching, no referrer, no framing, no scripts.
pub fn html(status: StatusCode, page: String) -> Response {
    let mut response = with_type(status, page, "text/html; charset=utf-8");
    let headers = response.headers_mut();
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    response
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The character PostgreSQL `text` and `jsonb` cannot hold (a UTF-8
/// database stores every other Unicode scalar value, and a Rust `str` cannot
/// carry the lone surrogates that `jsonb` also refuses). A value with it would
/// fail in the database with SQLSTATE 22021/22P05, so it is refused at the
/// edge as the client's mistake, naming where it was.
const NOT_STORABLE: char = '\0';

fn not_storable(place: &str) -> AppError {
    AppError::validation(format!("{place} contains U+0000 (NUL), which text fields cannot hold"))
}

/// Refuses a request whose query parameters (names or values, decoded) or
/// path carry [`NOT_STORABLE`], before any route sees it. Path segments reach
/// handlers undecoded, so `%00` is looked for there; API Gateway's decoded
/// `pathParameters` are checked too.
fn check_request_text(req: &Request) -> Result<(), AppError> {
    if let Some(query) = req.query_string_parameters_ref() {
        for (name, value) in query.iter() {
            if name.contains(NOT_STORABLE) {
                return Err(not_storable("a query parameter name"));
            }
            if value.contains(NOT_STORABLE) {
                return Err(not_storable(&format!("query parameter `{}`", display_name(name))));
            }
        }
    }
    if let Some(params) = req.path_parameters_ref() {
        for (name, value) in params.iter() {
            if value.contains(NOT_STORABLE) {
                return Err(not_storable(&format!("path parameter `{}`", display_name(name))));
            }
        }
    }
    if req.uri().path().contains("%00") || req.uri().path().contains(NOT_STORABLE) {
        return Err(not_storable("the path"));
    }
    Ok(())
}

/// A query parameter the route does not declare (in the route table the
/// OpenAPI document is built from) is refused, as the document says: a
/// misspelt `limt=5` must not silently mean the default.
fn check_query_names(req: &Request) -> Result<(), AppError> {
    let (Some(query), Some(op)) = (req.query_string_parameters_ref(), crate::openapi::operation_for(req.method().as_str(), req.uri().path())) else {
        return Ok(());
    };
    for (name, _) in query.iter() {
        if !op.query.iter().any(|(declared, _)| *declared == name) {
            return Err(AppError::validation(format!("unknown query parameter `{}`", display_name(name))));
        }
    }
    Ok(())
}

/// A client-chosen name as it may appear in an error detail (and so in a
/// log): short identifiers only, anything else is not echoed.
fn display_name(name: &str) -> &str {
    let plain = (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain { name } else { "?" }
}

/// The first string (or object key) in `value` that holds [`NOT_STORABLE`],
/// as a path like `items[2].name`; `None` when there is none. Recursion is
/// bounded by serde_json's nesting limit (128).
fn unstorable_text_path(value: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains(NOT_STORABLE) => Some(String::new()),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| unstorable_text_path(item).map(|rest| format!("[{i}]{rest}"))),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            if key.contains(NOT_STORABLE) {
                return Some(".?".to_owned());
            }
            unstorable_text_path(item).map(|rest| format!(".{}{rest}", display_name(key)))
        }),
        _ => None,
    }
}

/// The path split on `/`, without empty segments.
pub fn segments(req: &Request) -> Vec<&str> {
    req.uri().path().split('/').filter(|s| !s.is_empty()).collect()
}

/// The first value of a query-string parameter.
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    req.query_string_parameters_ref().and_then(|q| q.first(name)).map(str::to_owned)
}

/// Default of `HTTP_PAGE_LIMIT_MAX`, the largest `limit` (the OpenAPI
/// document states it).
pub const PAGE_LIMIT_MAX_DEFAULT: u32 = 200;

/// `limit` query parameter: default `default`, at most `max`.
pub fn page_limit(req: &Request, default: u32, max: u32) -> Result<u32, AppError> {
    debug_assert!(default <= max);
    match query_param(req, "limit") {
        None => Ok(default),
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(AppError::validation(format!("limit must be between 1 and {max}"))),
        },
    }
}

/// A header's value, when present and valid UTF-8.
pub fn header_str<'r>(req: &'r Request, name: &str) -> Option<&'r str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Decodes a JSON body of at most `max_bytes`. Serde messages can quote the
/// offending value (a PAN, a password), so they are reduced to their kind and
/// position before they reach the client or a log.
pub fn parse_json<T: DeserializeOwned>(req: &Request, max_bytes: usize) -> Result<T, AppError> {
    let content_type = header_str(req, header::CONTENT_TYPE.as_str()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if media != "application/json" && !media.ends_with("+json") {
        return Err(AppError::new(ErrorCode::UnsupportedMediaType, "send the body as Content-Type: application/json"));
    }
    let body: &[u8] = req.body().as_ref();
    if body.len() > max_bytes {
        return Err(AppError::new(ErrorCode::PayloadTooLarge, format!("body must be at most {max_bytes} bytes")));
    }
    // A JSON string can carry U+0000 only as the escape `\u0000` (raw control
    // characters are a syntax error), so bodies without it skip the walk.
    if body.windows(6).any(|w| w == b"\\u0000") {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| AppError::new(ErrorCode::MalformedBody, describe_json_error(&e)))?;
        if let Some(path) = unstorable_text_path(&value) {
            let field = path.trim_start_matches('.');
            return Err(not_storable(&if field.is_empty() { "the body".to_owned() } else { format!("field `{field}`") }));
        }
    }
    serde_json::from_slice(body).map_err(|e| AppError::new(ErrorCode::MalformedBody, describe_json_error(&e)))
}

/// The caller's address as API Gateway saw it (`requestContext.http.sourceIp`).
pub fn source_ip(req: &Request) -> Option<&str> {
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.as_deref(),
        _ => None,
    }
}

fn describe_json_error(err: &serde_json::Error) -> String {
    let message = err.to_string();
    // "invalid type: string \"4111...\", expected u64 at line 1 column 9"
    // keeps only "invalid type" and the position.
    let what = if message.starts_with("invalid type") || message.starts_with("invalid value") || message.starts_with("invalid length") {
        message.split(':').next().unwrap_or("invalid value").to_owned()
    } else if err.is_syntax() || err.is_eof() {
        "malformed JSON".to_owned()
    } else {
        // "missing field `x`", "unknown field `x`, expected ..." name fields only.
        message.split(" at line").next().unwrap_or("invalid body").to_owned()
    };
    format!("{what} at line {} column {}", err.line(), err.column())
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => with_type(status, body, "application/json"),
        Err(e) => problem(&AppError::internal(e)),
    }
}

pub fn problem(err: &AppError) -> Response {
    let body = serde_json::to_string(&err.problem()).expect("problem bodies always serialise");
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = with_type(status, body, "application/problem+json");
    if let Some(seconds) = err.retry_after_s {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn with_type(status: StatusCode, body: String, content_type: &'static str) -> Response {
    let mut response = Response::new(Body::Text(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Answers carry tokens and personal data; no cache may keep them.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// RFC 9110: a 405 lists the methods the path does accept, taken from the
/// route table (the one the OpenAPI document and the template are checked
/// against).
fn allow(response: &mut Response, path: &str) {
    let methods = crate::openapi::allowed_methods(path);
    if let Ok(value) = HeaderValue::from_str(&methods.join(", ")) {
        response.headers_mut().insert(header::ALLOW, value);
    }
}

pub fn method_not_allowed() -> AppError {
    AppError::new(ErrorCode::MethodNotAllowed, "this route does not accept that method")
}

pub fn no_route() -> AppError {
    AppError::not_found("route")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body2 {
        pan: String,
        n: u32,
    }

    fn request(body: &str, content_type: Option<&str>) -> Request {
        let mut builder = lambda_http::http::Request::builder().method("POST").uri("/x");
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        builder.body(Body::Text(body.to_owned())).unwrap()
    }

    #[test]
    fn json_errors_never_echo_values() {
        let err = parse_json::<Body2>(&request(r#"{"pan": 4111111111111111, "n": 1}"#, Some("application/json")), 1024).unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedBody);
        assert!(!err.detail.contains("4111"), "{}", err.detail);
        assert!(err.detail.starts_with("invalid type at line 1"), "{}", err.detail);

        let err = parse_json::<Body2>(&request(r#"{"pan": "x"}"#, Some("application/json")), 1024).unwrap_err();
        assert!(err.detail.starts_with("missing field `n`"), "{}", err.detail);
        let err = parse_json::<Body2>(&request("{", Some("application/json")), 1024).unwrap_err();
        assert!(err.detail.starts_with("malformed JSON"), "{}", err.detail);
    }

    #[test]
    fn content_type_and_size_are_enforced() {
        let ok = r#"{"pan":"1","n":1}"#;
        assert!(parse_json::<Body2>(&request(ok, Some("application/json; charset=utf-8")), 1024).is_ok());
        assert_eq!(parse_json::<Body2>(&request(ok, None), 1024).unwrap_err().code, ErrorCode::UnsupportedMediaType);
        assert_eq!(parse_json::<Body2>(&request(ok, Some("text/plain")), 1024).unwrap_err().code, ErrorCode::UnsupportedMediaType);
        assert_eq!(parse_json::<Body2>(&request(ok, Some("application/json")), 4).unwrap_err().code, ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn nul_in_any_string_is_a_validation_error_naming_the_field() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Nested {
            items: Vec<std::collections::HashMap<String, String>>,
        }
        let json = |body: &str| request(body, Some("application/json"));
        let err = parse_json::<Body2>(&json(r#"{"pan": "41\u00001", "n": 1}"#), 1024).unwrap_err();
        assert_eq!(err.code, ErrorCode::Validation);
        assert!(err.detail.starts_with("field `pan` contains U+0000"), "{}", err.detail);
        assert!(!err.detail.contains("41"), "the value is never echoed: {}", err.detail);

        let err = parse_json::<Nested>(&json(r#"{"items": [{"a": "ok"}, {"name": "x\u0000"}]}"#), 1024).unwrap_err();
        assert!(err.detail.starts_with("field `items[1].name`"), "{}", err.detail);
        let err = parse_json::<Nested>(&json(r#"{"items": [{"k\u0000": "v"}]}"#), 1024).unwrap_err();
        assert!(err.detail.starts_with("field `items[0].?`"), "{}", err.detail);
        let err = parse_json::<String>(&json(r#""\u0000""#), 1024).unwrap_err();
        assert!(err.detail.starts_with("the body contains U+0000"), "{}", err.detail);

        // An escaped backslash before `u0000` is no NUL.
        let ok = parse_json::<Body2>(&json(r#"{"pan": "\\u0000", "n": 1}"#), 1024).unwrap();
        assert_eq!(ok.pan, "\\u0000");
    }

    #[test]
    fn nul_in_query_or_path_is_refused_before_routing() {
        let refused = |target: &str| check_request_text(&crate::apigw::v2_request("GET", target, &[], None)).map_err(|e| (e.code, e.detail));
        assert_eq!(refused("/products?limit=5"), Ok(()));
        let (code, detail) = refused("/products?limit=%00").unwrap_err();
        assert_eq!(code, ErrorCode::Validation);
        assert!(detail.starts_with("query parameter `limit` contains U+0000"), "{detail}");
        assert!(refused("/products?a%00b=1").unwrap_err().1.starts_with("a query parameter name"));
        assert!(refused("/merchants/%00").unwrap_err().1.starts_with("the path"));
    }

    #[test]
    fn retry_after_becomes_a_header() {
        let response = problem(&AppError::new(ErrorCode::RateLimited, "slow down").retry_after(42));
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "42");
        assert!(problem(&AppError::not_found("x")).headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn problem_responses_have_the_problem_media_type() {
        let response = problem(&AppError::not_found("card"));
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
    }

    struct RefusesEverything;

    impl HttpApi for RefusesEverything {
        async fn route(&self, _req: Request) -> Result<Response, AppError> {
            Err(method_not_allowed())
        }
    }

    #[test]
    fn undeclared_query_parameters_are_refused() {
        let get = |uri: &str| {
            let req = lambda_http::http::Request::builder().method("GET").uri(uri).body(Body::Empty).unwrap();
            let query: std::collections::HashMap<String, String> =
                req.uri().query().unwrap_or("").split('&').filter(|p| !p.is_empty()).filter_map(|p| p.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            req.with_query_string_parameters(query)
        };
        assert!(check_query_names(&get("/products?limit=5")).is_ok());
        assert!(check_query_names(&get("/settlements?cursor=x&user_id=y")).is_ok());
        let err = check_query_names(&get("/products?limt=5")).unwrap_err();
        assert_eq!((err.code, err.detail.as_str()), (ErrorCode::Validation, "unknown query parameter `limt`"));
        assert!(check_query_names(&get("/cards?x=1")).is_err());
        // No such route: the 404 is the answer, not the query.
        assert!(check_query_names(&get("/nowhere?x=1")).is_ok());
    }

    #[tokio::test]
    async fn every_405_says_which_methods_the_path_accepts() {
        let req = lambda_http::http::Request::builder().method("DELETE").uri("/cards").body(Body::Empty).unwrap();
        let response = respond(&RefusesEverything, req).await;
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[header::ALLOW], "POST, GET");
        let req = lambda_http::http::Request::builder().method("PUT").uri("/orders/0b9c").body(Body::Empty).unwrap();
        assert_eq!(respond(&RefusesEverything, req).await.headers()[header::ALLOW], "GET");
    }
}
