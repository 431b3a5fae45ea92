//! `pay`: `POST /payments` accepts a payment and answers 202 only once the
//! broker acknowledged its event; `GET /payments/{id}` reports its status.

mod payments;

use paystream::http::{self, method_not_allowed, no_route, HttpApi, Request, Response};
use paystream::{AppError, Platform};

pub struct PayApi {
    pub platform: Platform,
}

impl PayApi {
    pub fn new(platform: Platform) -> Self {
        Self { platform }
    }
}

impl HttpApi for PayApi {
    async fn route(&self, req: Request) -> Result<Response, AppError> {
        let p = &self.platform;
        match (http::segments(&req).as_slice(), req.method().as_str()) {
            (["payments"], "POST") => payments::create(p, &req).await,
            (["payments", id], "GET") => payments::get(p, &req, id).await,
            (["payments"] | ["payments", _], _) => Err(method_not_allowed()),
            _ => Err(no_route()),
        }
    }
}
