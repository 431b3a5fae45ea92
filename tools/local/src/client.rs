//! A small HTTP/1.1 JSON client (hyper), used to call the Lambda Invoke API
//! and, in the demo, the gateway.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl HttpClient {
    pub fn new(timeout: Duration) -> Self {
        Self { inner: Client::builder(TokioExecutor::new()).build_http(), timeout }
    }

    pub async fn send(&self, method: Method, url: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Result<Answer, String> {
        let mut request = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| e.to_string())?;
        let call = async {
            let response = self.inner.request(request).await.map_err(|e| format!("{url}: {e}"))?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok(Answer { status: parts.status.as_u16(), headers: parts.headers, body })
        };
        tokio::time::timeout(self.timeout, call).await.map_err(|_| format!("{url}: no answer within {:?}", self.timeout))?
    }

    /// Invokes a function through the Lambda Invoke API; an error when the
    /// invocation failed (transport, non-2xx, or a function error).
    pub async fn invoke(&self, endpoint: &str, function: &str, payload: &serde_json::Value) -> Result<serde_json::Value, String> {
        let url = format!("{endpoint}/2015-03-31/functions/{function}/invocations");
        let answer = self.send(Method::POST, &url, &[("content-type", "application/json")], Some(payload.to_string().into_bytes())).await?;
        let body = answer.json();
        let function_error = answer.headers.contains_key("x-amz-function-error") || body.get("errorType").is_some();
        if !(200..300).contains(&answer.status) || function_error {
            return Err(format!("{function} failed ({}): {}", answer.status, String::from_utf8_lossy(&answer.body)));
        }
        Ok(body)
    }
}
