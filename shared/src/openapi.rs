//! The OpenAPI 3.1 document of every HTTP route, generated from code.
//!
//! The route table below is the one place the HTTP surface is described;
//! `document()` turns it into the JSON that `GET /openapi.json` serves and
//! that is committed as `openapi.json` (CI regenerates it and fails on drift).
//! Error codes, titles and statuses come from the one catalogue in
//! [`crate::error`], and limits from the domain types, so the document cannot
//! disagree with them. Request bodies are derived (`utoipa::ToSchema`) from
//! the types the functions decode, in [`crate::api`], whose every rule (a
//! pattern, a list, a bound) is the constant the parser itself checks: the
//! document is exactly as strict as the server. Response bodies are derived
//! the same way from the types the functions serialise
//! ([`crate::api::responses`] and the read models under `store/`).

use serde_json::{json, Map, Value};

use crate::error::ErrorCode;
// A short alias keeps each row of the route table on a readable line.
use crate::error::ErrorCode as E;

/// How a route authenticates its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Public.
    None,
    /// `Authorization: Bearer <JWT>` (HS256 access token from `POST /auth/login`).
    Bearer,
    /// The single-use token in the path (the SMS link) is the credential.
    VerificationToken,
}

/// One HTTP route: what it takes, what it answers, which function serves it.
#[derive(Clone, Copy, Debug)]
pub struct Operation {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// API Gateway route template, e.g. `/merchants/{id}/dashboard`.
    pub path: &'static str,
    /// Binary name of the Lambda function that serves it.
    pub function: &'static str,
    /// camelCase, unique.
    pub operation_id: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// Name of a schema in `components.schemas`, or `None` without a body.
    pub request: Option<&'static str>,
    pub success_status: u16,
    /// Schema name of the success body.
    pub success: &'static str,
    /// Error codes this route can answer with (500 `INTERNAL` is implied, and
    /// so is 400 `VALIDATION`: any request whose text carries U+0000, in the
    /// body, the query or the path, answers it).
    pub errors: &'static [ErrorCode],
    /// Accepts an `Idempotency-Key` header.
    pub idempotency_key: bool,
    /// `(name, description)` of optional string query parameters.
    pub query: &'static [(&'static str, &'static str)],
}

/// The route whose answers are HTML pages (a browser follows the SMS link).
const VERIFY_PATH: &str = "/verify/{token}";
/// Schema of an HTML page body.
const HTML_PAGE: &str = "VerifyPage";
/// Schema of the browser pages `/docs` and `/console`.
const WEB_PAGE: &str = "WebPage";
/// Schema of their scripts and style sheets.
const WEB_ASSET: &str = "WebAsset";
/// Schema of every error body.
const PROBLEM: &str = "Problem";

const LIMIT: (&str, &str) = ("limit", "Page size: an integer from 1 to the configured maximum (HTTP_PAGE_LIMIT_MAX, default 200); default 50.");

/// Every HTTP route of the API, in the order of the spec's contract table.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "POST",
        path: "/auth/signup",
        function: "account",
        operation_id: "signup",
        summary: "Create an account (role USER or MERCHANT)",
        auth: Auth::None,
        request: Some("SignupRequest"),
        success_status: 201,
        success: "UserCreated",
        errors: &[E::Validation, E::MalformedBody, E::PayloadTooLarge, E::UnsupportedMediaType, E::UsernameTaken, E::EmailTaken, E::DependencyUnavailable],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "POST",
        path: "/auth/login",
        function: "account",
        operation_id: "login",
        summary: "Log in and get a short-lived access token",
        auth: Auth::None,
        request: Some("LoginRequest"),
        success_status: 200,
        success: "AccessToken",
        // A malformed username is BAD_CREDENTIALS too, never VALIDATION: the
        // answer must not tell which part was wrong (U+0000 anywhere is
        // VALIDATION, as on every route: no username can hold it).
        // RATE_LIMITED: too many failures for the username or the address.
        errors: &[E::MalformedBody, E::PayloadTooLarge, E::UnsupportedMediaType, E::BadCredentials, E::RateLimited, E::DependencyUnavailable],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "POST",
        path: "/cards",
        function: "account",
        operation_id: "registerCard",
        summary: "Register one of the caller's cards (USER)",
        auth: Auth::Bearer,
        request: Some("RegisterCardRequest"),
        success_status: 201,
        success: "RegisteredCard",
        errors: &[
            E::Validation,
            E::MalformedBody,
            E::InvalidPan,
            E::PayloadTooLarge,
            E::UnsupportedMediaType,
            E::Unauthorized,
            E::Forbidden,
            E::NotFound,
            E::CardAlreadyRegistered,
            E::DependencyUnavailable,
        ],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "GET",
        path: "/cards",
        function: "account",
        operation_id: "listCards",
        summary: "The caller's cards, oldest first (USER)",
        auth: Auth::Bearer,
        request: None,
        success_status: 200,
        success: "CardList",
        errors: &[E::Unauthorized, E::Forbidden, E::DependencyUnavailable],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "GET",
        path: "/me/notifications",
        function: "account",
        operation_id: "listNotifications",
        summary: "The caller's notifications, newest first (any role)",
        auth: Auth::Bearer,
        request: None,
        success_status: 200,
        success: "NotificationList",
        errors: &[E::Validation, E::Unauthorized, E::DependencyUnavailable],
        idempotency_key: false,
        query: &[LIMIT],
    },
    Operation {
        method: "GET",
        path: "/card-products",
        function: "account",
        operation_id: "listCardProducts",
        summary: "Card products with their benefit rules",
        auth: Auth::None,
        request: None,
        success_status: 200,
        success: "CardProductList",
        errors: &[E::DependencyUnavailable],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "POST",
        path: "/merchants",
        function: "account",
        operation_id: "createMerchant",
        summary: "Create a merchant owned by the caller (MERCHANT or ADMIN)",
        auth: Auth::Bearer,
        request: Some("CreateMerchantRequest"),
        success_status: 201,
        success: "MerchantCreated",
        errors: &[E::Validation, E::MalformedBody, E::PayloadTooLarge, E::UnsupportedMediaType, E::Unauthorized, E::Forbidden, E::DependencyUnavailable],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "GET",
        path: "/merchants",
        function: "account",
        operation_id: "listMerchants",
        summary: "The caller's own merchants by name (ADMIN: every merchant)",
        auth: Auth::Bearer,
        request: None,
        success_status: 200,
        success: "MerchantList",
        errors: &[E::Validation, E::Unauthorized, E::DependencyUnavailable],
        idempotency_key: false,
        query: &[LIMIT],
    },
    Operation {
        method: "GET",
        path: "/merchants/{id}",
        function: "account",
        operation_id: "getMerchant",
        summary: "A merchant's public facts (any role)",
        auth: Auth::Bearer,
        request: None,
        success_status: 200,
        success: "MerchantPublic",
        errors: &[E::Unauthorized, E::NotFound, E::DependencyUnavailable],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "POST",
        path: "/payments",
        function: "pay",
        operation_id: "createPayment",
        summary: "Accept a card payment; 202 once the event broker acknowledged it (USER)",
        auth: Auth::Bearer,
        request: Some("CreatePaymentRequest"),
        success_status: 202,
        success: "PaymentAccepted",
        errors: &[
            E::Validation,
            E::MalformedBody,
            E::PayloadTooLarge,
            E::UnsupportedMediaType,
            E::Unauthorized,
            E::Forbidden,
            E::NotFound,
            E::IdempotencyKeyReused,
            E::IdempotencyKeyInProgress,
            E::BrokerUnavailable,
            E::DependencyUnavailable,
        ],
        idempotency_key: true,
        query: &[],
    },
    Operation {
        method: "GET",
        path: "/payments/{id}",
        function: "pay",
        operation_id: "getPayment",
        summary: "A payment's status (its owner or ADMIN)",
        auth: Auth::Bearer,
        request: None,
        success_status: 200,
        success: "Payment",
        errors: &[E::Unauthorized, E::NotFound, E::DependencyUnavailable],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "GET",
        path: VERIFY_PATH,
        function: "verify",
        operation_id: "showVerification",
        summary: "The approve/deny page behind the SMS link; never changes state",
        auth: Auth::VerificationToken,
        request: None,
        success_status: 200,
        success: HTML_PAGE,
        errors: &[E::NotFound, E::TokenUsed, E::TokenExpired, E::DependencyUnavailable],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "POST",
        path: VERIFY_PATH,
        function: "verify",
        operation_id: "decideVerification",
        summary: "The card holder approves or denies a held payment",
        auth: Auth::VerificationToken,
        request: Some("VerificationDecision"),
        success_status: 200,
        success: "VerificationResult",
        errors: &[
            E::Validation,
            E::MalformedBody,
            E::PayloadTooLarge,
            E::UnsupportedMediaType,
            E::NotFound,
            E::TokenUsed,
            E::TokenExpired,
            E::DependencyUnavailable,
        ],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "POST",
        path: "/products",
        function: "order",
        operation_id: "createProduct",
        summary: "Put a limited-stock product on flash sale (ADMIN)",
        auth: Auth::Bearer,
        request: Some("CreateProductRequest"),
        success_status: 201,
        success: "Product",
        errors: &[E::Validation, E::MalformedBody, E::PayloadTooLarge, E::UnsupportedMediaType, E::Unauthorized, E::Forbidden, E::DependencyUnavailable],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "GET",
        path: "/products",
        function: "order",
        operation_id: "listProducts",
        summary: "Flash-sale products, latest sale first, with live remaining stock",
        auth: Auth::None,
        request: None,
        success_status: 200,
        success: "ProductList",
        errors: &[E::Validation, E::DependencyUnavailable],
        idempotency_key: false,
        query: &[LIMIT],
    },
    Operation {
        method: "GET",
        path: "/products/{id}",
        function: "order",
        operation_id: "getProduct",
        summary: "One flash-sale product with live remaining stock",
        auth: Auth::None,
        request: None,
        success_status: 200,
        success: "Product",
        errors: &[E::NotFound, E::DependencyUnavailable],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "POST",
        path: "/orders",
        function: "order",
        operation_id: "createOrder",
        summary: "Order one unit of a flash-sale product (USER)",
        auth: Auth::Bearer,
        request: Some("CreateOrderRequest"),
        success_status: 202,
        success: "OrderAccepted",
        // 503 here is DEPENDENCY_UNAVAILABLE (nothing reserved); a slow broker
        // never fails an order, the outbox relay publishes it later.
        errors: &[
            E::Validation,
            E::MalformedBody,
            E::PayloadTooLarge,
            E::UnsupportedMediaType,
            E::Unauthorized,
            E::Forbidden,
            E::NotFound,
            E::IdempotencyKeyReused,
            E::IdempotencyKeyInProgress,
            E::SoldOut,
            E::AlreadyPurchased,
            E::SaleNotStarted,
            E::SaleEnded,
            E::DependencyUnavailable,
        ],
        idempotency_key: true,
        query: &[],
    },
    Operation {
        method: "GET",
        path: "/orders/{id}",
        function: "order",
        operation_id: "getOrder",
        summary: "An order's status (its owner or ADMIN)",
        auth: Auth::Bearer,
        request: None,
        success_status: 200,
        success: "Order",
        errors: &[E::Unauthorized, E::NotFound, E::DependencyUnavailable],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "GET",
        path: "/settlements",
        function: "report",
        operation_id: "listSettlements",
        summary: "Settlements, newest first, in cursor pages (ADMIN, or a USER for their own)",
        auth: Auth::Bearer,
        request: None,
        success_status: 200,
        success: "SettlementPage",
        errors: &[E::Validation, E::Unauthorized, E::Forbidden, E::DependencyUnavailable],
        idempotency_key: false,
        query: &[
            ("user_id", "Only this buyer's settlements. A USER may pass only their own id (another answers 403); a USER always sees only their own."),
            ("product_id", "Only this product's settlements."),
            LIMIT,
            ("cursor", "The `next_cursor` of the previous page."),
        ],
    },
    Operation {
        method: "GET",
        path: "/settlements/summary",
        function: "report",
        operation_id: "settlementsSummary",
        summary: "Count and total of settlements (ADMIN, or a USER for their own)",
        auth: Auth::Bearer,
        request: None,
        success_status: 200,
        success: "SettlementSummary",
        errors: &[E::Validation, E::Unauthorized, E::Forbidden, E::DependencyUnavailable],
        idempotency_key: false,
        query: &[
            ("product_id", "Only this product's settlements."),
            ("user_id", "Only this buyer's settlements. A USER may pass only their own id (another answers 403); a USER always sees only their own."),
        ],
    },
    Operation {
        method: "GET",
        path: "/merchants/{id}/dashboard",
        function: "report",
        operation_id: "merchantDashboard",
        summary: "A merchant's loyalty dashboard (its owner or ADMIN)",
        auth: Auth::Bearer,
        request: None,
        success_status: 200,
        success: "Dashboard",
        errors: &[E::Unauthorized, E::NotFound, E::DependencyUnavailable],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "GET",
        path: "/openapi.json",
        function: "account",
        operation_id: "getOpenApiDocument",
        summary: "This OpenAPI 3.1 document",
        auth: Auth::None,
        request: None,
        success_status: 200,
        success: "OpenApiDocument",
        errors: &[],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "GET",
        path: "/docs",
        function: "account",
        operation_id: "getApiExplorer",
        summary: "Interactive explorer of this document (Swagger UI, served from the function)",
        auth: Auth::None,
        request: None,
        success_status: 200,
        success: WEB_PAGE,
        errors: &[],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "GET",
        path: "/console",
        function: "account",
        operation_id: "getMerchantConsole",
        summary: "Merchant console: a page that signs in and shows the caller's merchants' dashboards through this API",
        auth: Auth::None,
        request: None,
        success_status: 200,
        success: WEB_PAGE,
        errors: &[],
        idempotency_key: false,
        query: &[],
    },
    Operation {
        method: "GET",
        path: "/assets/{name}",
        function: "account",
        operation_id: "getWebAsset",
        summary: "A script or style sheet of /docs or /console (versioned third-party files are cached for a year)",
        auth: Auth::None,
        request: None,
        success_status: 200,
        success: WEB_ASSET,
        errors: &[E::NotFound],
        idempotency_key: false,
        query: &[],
    },
];

/// Whether a route template matches a request path (`{name}` segments
/// match any one segment).
fn template_matches(template: &str, path: &str) -> bool {
    let mut parts = template.split('/').filter(|s| !s.is_empty());
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    loop {
        match (parts.next(), segments.next()) {
            (None, None) => return true,
            (Some(part), Some(segment)) if part.starts_with('{') || part == segment => {}
            _ => return false,
        }
    }
}

/// The operation serving `method` on a request `path`, if any.
pub fn operation_for(method: &str, path: &str) -> Option<&'static Operation> {
    OPERATIONS.iter().find(|op| op.method == method && template_matches(op.path, path))
}

/// The methods of the routes whose template matches `path` (a request path,
/// `{name}` segments matching any one segment), for the `Allow` header of a
/// 405.
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    let mut methods: Vec<&'static str> = Vec::new();
    for op in OPERATIONS.iter().filter(|op| template_matches(op.path, path)) {
        if !methods.contains(&op.method) {
            methods.push(op.method);
        }
    }
    methods
}

/// The document, built once per execution environment (it never changes
/// while the code does not).
pub fn document_cached() -> &'static Value {
    static DOCUMENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(document)
}

/// The document as committed in `openapi.json`: pretty, with a final newline.
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("a JSON value always serialises");
    text.push('\n');
    text
}

/// The OpenAPI 3.1 document of every route in [`OPERATIONS`].
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let item = paths.entry(op.path).or_insert_with(|| Value::Object(Map::new()));
        item.as_object_mut()
            .expect("path items are only ever created as objects, just above")
            .insert(op.method.to_ascii_lowercase(), operation(op));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "paystream",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Serverless payments: card payments with real-time fraud, loyalty and benefit analytics, and flash sales. \
                JSON in and out; money is an integer amount in minor units plus an ISO 4217 currency; ids are UUIDs; \
                times are RFC 3339 UTC. Errors are RFC 9457 problem+json with a stable `code`. \
                Someone else's object answers 404.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Access token from POST /auth/login (HS256; exp, iss and aud required).",
                },
            },
        },
    })
}

fn operation(op: &Operation) -> Value {
    let mut parameters: Vec<Value> = path_parameters(op.path).map(path_parameter).collect();
    if op.idempotency_key {
        parameters.push(idempotency_key_header());
    }
    parameters.extend(op.query.iter().map(|(name, description)| query_parameter(name, description)));

    let mut value = json!({
        "operationId": op.operation_id,
        "summary": op.summary,
        // Tagging by function tells a reader which Lambda serves the route.
        "tags": [op.function],
        "security": security(op.auth),
        "responses": responses(op),
    });
    let fields = value.as_object_mut().expect("built as an object just above");
    if !parameters.is_empty() {
        fields.insert("parameters".to_owned(), Value::Array(parameters));
    }
    if let Some(schema) = op.request {
        fields.insert("requestBody".to_owned(), request_body(op, schema));
    }
    let notes = notes(op);
    if !notes.is_empty() {
        fields.insert("description".to_owned(), Value::String(notes.join(" ")));
    }
    value
}

/// Behaviour a client must know that the schemas cannot say.
fn notes(op: &Operation) -> Vec<&'static str> {
    let mut notes = Vec::new();
    if op.auth == Auth::VerificationToken {
        notes.push("The token in the path (from the SMS link) is the credential; it is single use and expires.");
    }
    if op.path == VERIFY_PATH {
        notes.push("Browsers (Accept: text/html) get HTML pages, errors included; other clients get JSON and problem+json.");
    }
    if op.errors.contains(&ErrorCode::RateLimited) && op.operation_id == "login" {
        notes.push(
            "Failed log-ins are limited per username and per source address (LOGIN_USER_FAILURES_MAX per LOGIN_USER_WINDOW_S, \
             LOGIN_IP_FAILURES_MAX per LOGIN_IP_WINDOW_S). Over a limit the answer is 429 RATE_LIMITED with Retry-After, \
             the same whether or not the username exists, and no password is checked (a correct one included) until the window passes. \
             Successful log-ins do not count.",
        );
    }
    if op.idempotency_key {
        notes.push(
            "With an Idempotency-Key, the same key and body answer the first response again and do nothing twice; \
             the same key with another body answers 409 IDEMPOTENCY_KEY_REUSED. Keys live at least 24 h.",
        );
    }
    notes
}

/// Requirements are per operation, with no document-wide default, so a
/// public route can never inherit bearer auth by accident.
fn security(auth: Auth) -> Value {
    match auth {
        Auth::Bearer => json!([{ "bearerAuth": [] }]),
        Auth::None | Auth::VerificationToken => json!([]),
    }
}

/// Names of the `{name}` segments of a route template.
fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

fn path_parameter(name: &str) -> Value {
    if name == "name" {
        return json!({
            "name": name, "in": "path", "required": true,
            "description": "File name of the asset, as the pages name it; any other answers 404.",
            "schema": { "type": "string", "pattern": "^[A-Za-z0-9._-]+$" },
        });
    }
    let schema = if name == "token" {
        // 128 random bits as hex (`verification::parse_token`, case-insensitive).
        json!({ "type": "string", "pattern": "^[0-9a-fA-F]{32}$" })
    } else {
        json!({ "type": "string", "format": "uuid" })
    };
    let description = if name == "token" {
        "Verification token from the SMS link; a malformed or unknown one answers 404 (one holding U+0000, 400)."
    } else {
        "A malformed id answers 404, like an unknown one or someone else's (one holding U+0000, 400)."
    };
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": schema })
}

fn query_parameter(name: &str, description: &str) -> Value {
    let schema = if name.ends_with("_id") {
        json!({ "type": "string", "format": "uuid" })
    } else if name == LIMIT.0 {
        // What `http::page_limit` accepts under the default maximum.
        json!({ "type": "integer", "minimum": 1, "maximum": crate::http::PAGE_LIMIT_MAX_DEFAULT })
    } else {
        json!({ "type": "string" })
    };
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

fn idempotency_key_header() -> Value {
    json!({
        "name": "Idempotency-Key",
        "in": "header",
        "required": false,
        "description": "Makes a retry safe: 1-255 visible ASCII characters, scoped to the caller.",
        // Mirrors `idempotency::key_from` (KEY_MAX_CHARS = 255, visible ASCII).
        "schema": { "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$" },
    })
}

fn request_body(op: &Operation, schema: &str) -> Value {
    let mut content = Map::new();
    content.insert("application/json".to_owned(), json!({ "schema": schema_ref(schema) }));
    // The approve/deny page posts an HTML form.
    if op.path == VERIFY_PATH && op.method == "POST" {
        content.insert("application/x-www-form-urlencoded".to_owned(), json!({ "schema": schema_ref(schema) }));
    }
    json!({ "required": true, "content": content })
}

fn responses(op: &Operation) -> Value {
    let mut responses = Map::new();
    responses.insert(op.success_status.to_string(), success_response(op));

    // One response per distinct status; a failure of ours (500) is always
    // possible, and so is text with U+0000 (400 VALIDATION, `http::respond`
    // and `http::parse_json` refuse it on every route).
    const IMPLIED: [ErrorCode; 2] = [ErrorCode::Validation, ErrorCode::Internal];
    let mut statuses: Vec<u16> = op.errors.iter().chain(&IMPLIED).map(|code| code.status()).collect();
    statuses.sort_unstable();
    statuses.dedup();
    for status in statuses {
        let mut codes: Vec<&str> = op.errors.iter().filter(|code| code.status() == status).map(|code| code.as_str()).collect();
        for implied in IMPLIED {
            if status == implied.status() && !op.errors.contains(&implied) {
                codes.push(implied.as_str());
            }
        }
        let mut content = Map::new();
        content.insert("application/problem+json".to_owned(), json!({ "schema": schema_ref(PROBLEM) }));
        if op.path == VERIFY_PATH {
            content.insert("text/html".to_owned(), json!({ "schema": schema_ref(HTML_PAGE) }));
        }
        let mut response = json!({ "description": codes.join(", "), "content": content });
        if status == ErrorCode::RateLimited.status() {
            response["headers"] = json!({
                "Retry-After": {
                    "description": "Seconds to wait before trying again.",
                    "schema": { "type": "integer", "minimum": 1 },
                },
            });
        }
        responses.insert(status.to_string(), response);
    }
    Value::Object(responses)
}

/// `(creating operation, reading operation, its path parameter, where the
/// created id is in the creating answer)`: OpenAPI links, so a client (and a
/// stateful test) knows which id to read back.
const LINKS: &[(&str, &str, &str, &str)] = &[
    ("createMerchant", "getMerchant", "id", "$response.body#/merchant_id"),
    ("createMerchant", "merchantDashboard", "id", "$response.body#/merchant_id"),
    ("createPayment", "getPayment", "id", "$response.body#/payment_id"),
    ("createProduct", "getProduct", "id", "$response.body#/product_id"),
    ("createProduct", "createOrder", "", "$response.body#/product_id"),
    ("createOrder", "getOrder", "id", "$response.body#/order_id"),
];

fn links(op: &Operation) -> Map<String, Value> {
    let mut links = Map::new();
    for (_, to, parameter, value) in LINKS.iter().filter(|(from, ..)| *from == op.operation_id) {
        let link = if parameter.is_empty() {
            // The id goes into the next request's body.
            json!({ "operationId": to, "requestBody": { "product_id": value } })
        } else {
            json!({ "operationId": to, "parameters": { *parameter: value } })
        };
        // Link names: the reading operation, capitalised (`GetMerchant`).
        let mut name = to.to_string();
        name[..1].make_ascii_uppercase();
        links.insert(name, link);
    }
    links
}

fn success_response(op: &Operation) -> Value {
    let mut content = Map::new();
    if op.path == VERIFY_PATH {
        content.insert("text/html".to_owned(), json!({ "schema": schema_ref(HTML_PAGE) }));
    }
    match op.success {
        WEB_PAGE => {
            content.insert("text/html".to_owned(), json!({ "schema": schema_ref(WEB_PAGE) }));
        }
        WEB_ASSET => {
            content.insert("text/javascript".to_owned(), json!({ "schema": schema_ref(WEB_ASSET) }));
            content.insert("text/css".to_owned(), json!({ "schema": schema_ref(WEB_ASSET) }));
        }
        _ => {}
    }
    // The pages and their assets are not JSON; every other answer is (also) JSON.
    if ![HTML_PAGE, WEB_PAGE, WEB_ASSET].contains(&op.success) {
        content.insert("application/json".to_owned(), json!({ "schema": schema_ref(op.success) }));
    }
    let description = match op.success_status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        _ => "Success",
    };
    let mut response = json!({ "description": description, "content": content });
    let links = links(op);
    if !links.is_empty() {
        response["links"] = Value::Object(links);
    }
    response
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Every schema of the document. Request and response bodies are derived
/// from the Rust types the functions decode and serialise ([`crate::api`],
/// [`crate::api::responses`], [`crate::error::Problem`]); only the bodies
/// that are not JSON (pages, scripts, this document) are described here.
fn schemas() -> Value {
    let mut s = Map::new();
    let mut add = |name: &str, schema: Value| {
        let earlier = s.insert(name.to_owned(), schema);
        assert!(earlier.is_none(), "two schemas named {name}");
    };
    let problem = serde_json::to_value(<crate::error::Problem<'_> as utoipa::PartialSchema>::schema()).expect("schemas serialise");
    add(PROBLEM, problem);
    add(HTML_PAGE, json!({ "type": "string", "contentMediaType": "text/html", "description": "An HTML page." }));
    add(WEB_PAGE, json!({ "type": "string", "contentMediaType": "text/html", "description": "A browser page (scripts from this origin only)." }));
    add(WEB_ASSET, json!({ "type": "string", "description": "JavaScript or CSS, per Content-Type." }));
    add("OpenApiDocument", json!({ "type": "object", "description": "An OpenAPI 3.1 document (this one)." }));
    for (name, schema) in crate::api::schemas() {
        add(name, schema);
    }
    for (name, schema) in crate::api::responses::schemas() {
        add(&name, schema);
    }
    Value::Object(s)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn operation_ids_are_unique_camel_case() {
        let mut seen = HashSet::new();
        for op in OPERATIONS {
            assert!(seen.insert(op.operation_id), "duplicate operationId {}", op.operation_id);
            assert!(op.operation_id.starts_with(|c: char| c.is_ascii_lowercase()), "{}", op.operation_id);
            assert!(op.operation_id.chars().all(|c| c.is_ascii_alphanumeric()), "{}", op.operation_id);
        }
    }

    /// CI fails when the committed document and the code disagree.
    #[test]
    fn the_committed_openapi_json_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == document_text(),
            "openapi.json is out of date with the code; regenerate it: cargo run -p paystream-ops -- openapi > openapi.json"
        );
    }

    #[test]
    fn allowed_methods_follow_the_route_table() {
        assert_eq!(allowed_methods("/payments"), ["POST"]);
        assert_eq!(allowed_methods("/cards"), ["POST", "GET"]);
        assert_eq!(allowed_methods("/merchants/abc/dashboard"), ["GET"]);
        assert!(allowed_methods("/nowhere").is_empty());
    }

    #[test]
    fn routes_are_unique() {
        let mut seen = HashSet::new();
        for op in OPERATIONS {
            assert!(op.method == "GET" || op.method == "POST", "{} {}", op.method, op.path);
            assert!(op.path.starts_with('/'), "{}", op.path);
            assert!(seen.insert((op.method, op.path)), "duplicate route {} {}", op.method, op.path);
        }
    }

    #[test]
    fn every_referenced_schema_exists() {
        let schemas = schemas();
        for op in OPERATIONS {
            for name in op.request.into_iter().chain([op.success]) {
                assert!(schemas.get(name).is_some(), "{} {}: schema {name} missing", op.method, op.path);
            }
        }
        assert!(schemas.get(PROBLEM).is_some());
        assert!(schemas.get(HTML_PAGE).is_some());
    }

    fn collect_refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(fields) => {
                for (key, child) in fields {
                    match (key.as_str(), child.as_str()) {
                        ("$ref", Some(target)) => out.push(target.to_owned()),
                        _ => collect_refs(child, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| collect_refs(item, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_in_the_document_resolves() {
        let doc = document();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for target in refs {
            let name = target.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {target}"));
            assert!(doc["components"]["schemas"].get(name).is_some(), "dangling $ref {target}");
        }
    }

    #[test]
    fn document_has_every_operation() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "paystream");
        for op in OPERATIONS {
            let item = &doc["paths"][op.path][op.method.to_ascii_lowercase()];
            assert_eq!(item["operationId"], op.operation_id, "{} {}", op.method, op.path);
            let responses = item["responses"].as_object().expect("responses object");
            assert!(responses.contains_key(&op.success_status.to_string()), "{} {}", op.method, op.path);
            assert!(responses.contains_key("500"), "{} {}", op.method, op.path);
            assert!(responses["400"]["description"].as_str().expect("description").contains("VALIDATION"), "{} {}", op.method, op.path);
            for code in op.errors {
                let description = responses[&code.status().to_string()]["description"].as_str().expect("description");
                assert!(description.contains(code.as_str()), "{} {}: {description}", op.method, op.path);
            }
            assert_eq!(item["requestBody"].is_object(), op.request.is_some(), "{} {}", op.method, op.path);
        }
    }

    #[test]
    fn every_path_segment_parameter_is_declared() {
        let doc = document();
        for op in OPERATIONS {
            let item = &doc["paths"][op.path][op.method.to_ascii_lowercase()];
            let declared: Vec<&str> = item["parameters"]
                .as_array()
                .map(|params| params.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            let expected: Vec<&str> = path_parameters(op.path).collect();
            assert_eq!(declared, expected, "{} {}", op.method, op.path);
        }
    }

    #[test]
    fn problem_code_lists_the_whole_catalogue() {
        let doc = document();
        let codes = doc["components"]["schemas"][PROBLEM]["properties"]["code"]["enum"].as_array().expect("enum").clone();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert!(codes.contains(&Value::from(code.as_str())), "{}", code.as_str());
        }
    }

    #[test]
    fn bearer_routes_require_the_bearer_scheme() {
        let doc = document();
        for op in OPERATIONS {
            let security = &doc["paths"][op.path][op.method.to_ascii_lowercase()]["security"];
            let wants_bearer = op.auth == Auth::Bearer;
            assert_eq!(security[0].get("bearerAuth").is_some(), wants_bearer, "{} {}", op.method, op.path);
        }
    }
}
