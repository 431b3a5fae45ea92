//! `report`: settlement queries and summaries (admins see all, users their
//! own), and the merchant dashboard.

mod dashboard;
mod settlements;

use paystream::http::{self, method_not_allowed, no_route, HttpApi, Request, Response};
use paystream::{AppError, Platform};

pub struct ReportApi {
    pub platform: Platform,
}

impl ReportApi {
    pub fn new(platform: Platform) -> Self {
        Self { platform }
    }
}

impl HttpApi for ReportApi {
    async fn route(&self, req: Request) -> Result<Response, AppError> {
        let p = &self.platform;
        match (http::segments(&req).as_slice(), req.method().as_str()) {
            (["settlements"], "GET") => settlements::list(p, &req).await,
            (["settlements", "summary"], "GET") => settlements::summary(p, &req).await,
            (["merchants", id, "dashboard"], "GET") => dashboard::get(p, &req, id).await,
            (["settlements"] | ["settlements", "summary"] | ["merchants", _, "dashboard"], _) => Err(method_not_allowed()),
            _ => Err(no_route()),
        }
    }
}
