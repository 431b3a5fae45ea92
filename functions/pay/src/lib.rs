//! `pay`: `POST /payments` accepts a payment and answers 202 only once the
//! broker acknowledged its event; `GET /payments/{id}` reports its status.

mod payments;

use std::sync::Arc;
use std::time::Duration;

use paystream::batch::Batcher;
use paystream::store::payments::IntakeMemo;
use paystream::http::{self, method_not_allowed, no_route, HttpApi, Request, Response};
use paystream::{AppError, Platform};

pub struct PayApi {
    pub platform: Arc<Platform>,
    /// The Idempotency-Key claims and the accepted payments (with their
    /// keys' answers) of the invocations in flight, one statement per batch.
    writes: Batcher<payments::WriteIntake>,
    /// Cards and merchants this environment has read (never changed rows).
    facts: IntakeMemo,
}

impl PayApi {
    pub fn new(platform: Platform) -> Self {
        let platform = Arc::new(platform);
        Self {
            writes: Batcher::new(payments::WriteIntake { platform: Arc::clone(&platform) }, paystream::batch::WRITE_STEP),
            facts: IntakeMemo::new(platform.config.http.intake_facts_memo_max, Duration::from_secs(platform.config.cache_ttl_s)),
            platform,
        }
    }
}

impl HttpApi for PayApi {
    async fn route(&self, req: Request) -> Result<Response, AppError> {
        match (http::segments(&req).as_slice(), req.method().as_str()) {
            (["payments"], "POST") => payments::create(self, &req).await,
            (["payments", id], "GET") => payments::get(&self.platform, &req, id).await,
            (["payments"] | ["payments", _], _) => Err(method_not_allowed()),
            _ => Err(no_route()),
        }
    }
}
