//! Builds API Gateway HTTP API (payload format 2.0) events, the shape
//! `lambda_http` decodes. Used by local tools (demo, local gateway) and tests
//! to drive a function exactly as API Gateway would.

use serde_json::{json, Map, Value};

/// The event API Gateway would deliver for this request. `path` may carry a
/// query string; `route_key` is the template (e.g. `GET /merchants/{id}`),
/// defaulting to the concrete path.
pub fn v2_event(method: &str, path: &str, route_key: Option<&str>, headers: &[(&str, &str)], body: Option<&str>) -> Value {
    let (raw_path, raw_query) = path.split_once('?').unwrap_or((path, ""));
    let route_key = route_key.map(str::to_owned).unwrap_or_else(|| format!("{method} {}", template_of(raw_path)));
    let header_map: Map<String, Value> = headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), Value::String((*v).to_owned()))).collect();
    let now = time::OffsetDateTime::now_utc();
    json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": header_map,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "localhost",
            "domainPrefix": "localhost",
            "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "paystream-local"},
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": route_key,
            "stage": "$default",
            "time": "",
            "timeEpoch": (now.unix_timestamp_nanos() / 1_000_000) as i64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

/// A route template for a concrete path: segments that are ids or tokens
/// (UUIDs, long hex strings) become `{id}`, as in API Gateway's `routeKey`,
/// so nothing secret ends up where route keys are logged.
fn template_of(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            let hex_token = segment.len() >= 16 && segment.bytes().all(|b| b.is_ascii_hexdigit());
            if uuid::Uuid::parse_str(segment).is_ok() || hex_token { "{id}" } else { segment }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// [`v2_event`] decoded into the request a handler receives.
pub fn v2_request(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> crate::http::Request {
    let event = v2_event(method, path, None, headers, body);
    lambda_http::request::from_str(&event.to_string()).expect("v2_event builds valid API Gateway v2 events")
}
