//! `account`: sign-up, log-in, the caller's cards, card products, merchants
//! and notifications; the API explorer (`/docs`) and the merchant console
//! (`/console`) with their assets. Handlers decode the request, call the shared domain and
//! store, and encode the answer; nothing else.

mod auth;
mod card_products;
mod cards;
mod merchants;
mod notifications;
mod own_merchants;
mod web;

use paystream::http::{self, method_not_allowed, no_route, HttpApi, Request, Response};
use paystream::{AppError, Platform};

pub struct AccountApi {
    pub platform: Platform,
}

impl AccountApi {
    pub fn new(platform: Platform) -> Self {
        Self { platform }
    }
}

impl HttpApi for AccountApi {
    async fn route(&self, req: Request) -> Result<Response, AppError> {
        let p = &self.platform;
        let path = http::segments(&req);
        let method = req.method().as_str();
        match path.as_slice() {
            ["auth", "signup"] => match method {
                "POST" => auth::signup(p, &req).await,
                _ => Err(method_not_allowed()),
            },
            ["auth", "login"] => match method {
                "POST" => auth::login(p, &req).await,
                _ => Err(method_not_allowed()),
            },
            ["cards"] => match method {
                "POST" => cards::register(p, &req).await,
                "GET" => cards::list(p, &req).await,
                _ => Err(method_not_allowed()),
            },
            ["card-products"] => match method {
                "GET" => card_products::list(p).await,
                _ => Err(method_not_allowed()),
            },
            ["merchants"] => match method {
                "POST" => merchants::create(p, &req).await,
                "GET" => own_merchants::list(p, &req).await,
                _ => Err(method_not_allowed()),
            },
            ["merchants", id] => match method {
                "GET" => merchants::get(p, &req, id).await,
                _ => Err(method_not_allowed()),
            },
            ["openapi.json"] => match method {
                "GET" => Ok(http::json(lambda_http::http::StatusCode::OK, paystream::openapi::document_cached())),
                _ => Err(method_not_allowed()),
            },
            ["docs"] => match method {
                "GET" => Ok(web::docs()),
                _ => Err(method_not_allowed()),
            },
            ["console"] => match method {
                "GET" => Ok(web::console()),
                _ => Err(method_not_allowed()),
            },
            ["assets", name] => match method {
                "GET" => web::asset(name),
                _ => Err(method_not_allowed()),
            },
            ["me", "notifications"] => match method {
                "GET" => notifications::list(p, &req).await,
                _ => Err(method_not_allowed()),
            },
            _ => Err(no_route()),
        }
    }
}
