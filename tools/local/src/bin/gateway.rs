//! The local API Gateway: serves every HttpApi route of `template.yaml` on
//! one port (`PAYSTREAM_HTTP_PORT`, default 3000) with the same paths as on
//! AWS, turns each request into an HTTP API (payload 2.0) event and invokes
//! the route's function through the Lambda Invoke API (`LAMBDA_ENDPOINT`,
//! default `http://127.0.0.1:9000`, which the local Lambda host serves).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use paystream_local::client::HttpClient;
use paystream_local::template::{RouteMatch, Template};

/// Largest request body the gateway forwards (API Gateway's own limit is 10 MB).
const BODY_MAX_BYTES: usize = 1024 * 1024;

struct Gateway {
    template: Template,
    endpoint: String,
    client: HttpClient,
}

#[tokio::main]
async fn main() {
    paystream::telemetry::init(&std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into()));
    let template = Template::from_env().unwrap_or_else(|e| fail(&e));
    let port: u16 = std::env::var("PAYSTREAM_HTTP_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3000);
    let endpoint = std::env::var("LAMBDA_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9000".into());
    let gateway = Arc::new(Gateway { template, endpoint, client: HttpClient::new(Duration::from_secs(60)) });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| fail(&format!("bind {addr}: {e}")));
    tracing::info!(%addr, routes = gateway.template.routes.len(), endpoint = %gateway.endpoint, "gateway listening");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let gateway = Arc::clone(&gateway);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let gateway = Arc::clone(&gateway);
                        async move { Ok::<_, Infallible>(gateway.handle(req).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            _ = paystream_local::shutdown_signal() => {
                tracing::info!("gateway stopping");
                return;
            }
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("gateway: {message}");
    std::process::exit(1)
}

fn problem(status: u16, code: &str, detail: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"type": "about:blank", "title": code, "status": status, "code": code, "detail": detail});
    Response::builder()
        .status(status)
        .header("content-type", "application/problem+json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

impl Gateway {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let method = parts.method.as_str().to_owned();
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or("").to_owned();
        let (route, params) = match self.template.route(&method, &path) {
            RouteMatch::Found(route, params) => (route, params),
            RouteMatch::WrongMethod(allowed) => {
                let mut response = problem(405, "METHOD_NOT_ALLOWED", "this route does not accept that method");
                if let Ok(value) = allowed.join(", ").parse() {
                    response.headers_mut().insert("allow", value);
                }
                return response;
            }
            RouteMatch::NotFound => return problem(404, "NOT_FOUND", "no such route"),
        };
        let body = match http_body_util::Limited::new(body, BODY_MAX_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return problem(413, "PAYLOAD_TOO_LARGE", "request body too large"),
        };
        let headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned())))
            .collect();
        let header_refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (text, is_base64) = match std::str::from_utf8(&body) {
            Ok(t) => (t.to_owned(), false),
            Err(_) => (base64::engine::general_purpose::STANDARD.encode(&body), true),
        };
        let target = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
        let route_key = format!("{} {}", route.method, route.path);
        let mut event = paystream::apigw::v2_event(&method, &target, Some(&route_key), &header_refs, (!body.is_empty()).then_some(text.as_str()));
        event["isBase64Encoded"] = is_base64.into();
        if !params.is_empty() {
            event["pathParameters"] = params.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect::<serde_json::Map<_, _>>().into();
        }
        if !query.is_empty() {
            let pairs: serde_json::Map<String, serde_json::Value> = query
                .split('&')
                .filter_map(|p| p.split_once('=').or(Some((p, ""))))
                .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
                .collect();
            event["queryStringParameters"] = pairs.into();
        }
        match self.client.invoke(&self.endpoint, &route.function, &event).await {
            Ok(answer) => to_http(&answer),
            Err(e) => {
                tracing::error!(function = %route.function, route = %route_key, error = %e, "invocation failed");
                problem(502, "BAD_GATEWAY", "the function failed; see its log")
            }
        }
    }
}

/// An HTTP API (payload 2.0) function answer as an HTTP response.
fn to_http(answer: &serde_json::Value) -> Response<Full<Bytes>> {
    let status = answer["statusCode"].as_u64().unwrap_or(200) as u16;
    let mut response = Response::builder().status(status);
    if let Some(headers) = answer["headers"].as_object() {
        for (k, v) in headers {
            if let Some(v) = v.as_str() {
                response = response.header(k.as_str(), v);
            }
        }
    }
    let body = answer["body"].as_str().unwrap_or("");
    let bytes = if answer["isBase64Encoded"].as_bool() == Some(true) {
        base64::engine::general_purpose::STANDARD.decode(body).unwrap_or_default()
    } else {
        body.as_bytes().to_vec()
    };
    response.body(Full::new(Bytes::from(bytes))).unwrap_or_else(|_| problem(502, "BAD_GATEWAY", "malformed function answer"))
}
