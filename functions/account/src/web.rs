//! The two browser pages the account function serves, and their assets:
//! `GET /docs` (Swagger UI over `GET /openapi.json`) and `GET /console` (the
//! merchant console, a client of the public API with the caller's token).
//!
//! Every file is compiled into the binary (`include_str!`): nothing is
//! fetched from a CDN or downloaded at build or run time. Third-party files
//! are committed under `assets/vendor/` at a pinned version (see its
//! README); their names here carry that version, so they can be cached for
//! a year. The pages and our own scripts are revalidated on every load.

use lambda_http::http::header::{self, HeaderValue};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};

use paystream::http::no_route;
use paystream::AppError;

// Pinned third-party versions (assets/vendor/README.md); they are part of
// the asset names, so a new version is a new name and no browser keeps an
// old file under it. The pages name the same files (a test checks).
macro_rules! swagger_ui_version {
    () => {
        "5.35.0"
    };
}
macro_rules! chart_js_version {
    () => {
        "4.6.1"
    };
}

/// Scripts only from this origin (no inline script, no eval); styles may be
/// inline because Swagger UI and Chart.js set element styles; data: images
/// are Swagger UI's icons. Calls go to this origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How long a browser may keep an asset.
#[derive(Clone, Copy)]
enum Caching {
    /// Versioned third-party file: a year, never revalidated.
    Immutable,
    /// Our own page or script: revalidate each time (it changes with a deploy).
    Revalidate,
}

struct Asset {
    name: &'static str,
    content_type: &'static str,
    caching: Caching,
    /// UTF-8 text (`include_str!` takes nothing else), sent as text: a binary body would reach
    /// API Gateway base64-encoded, a third larger.
    text: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Everything under `/assets/{name}`.
const ASSETS: &[Asset] = &[
    Asset {
        name: concat!("swagger-ui-bundle-", swagger_ui_version!(), ".js"),
        content_type: JS,
        caching: Caching::Immutable,
        text: include_str!("../assets/vendor/swagger-ui-bundle.js"),
    },
    Asset {
        name: concat!("swagger-ui-", swagger_ui_version!(), ".css"),
        content_type: CSS, caching: Caching::Immutable,
        text: include_str!("../assets/vendor/swagger-ui.css"),
    },
    Asset {
        name: concat!("chart-", chart_js_version!(), ".umd.min.js"),
        content_type: JS,
        caching: Caching::Immutable,
        text: include_str!("../assets/vendor/chart.umd.min.js"),
    },
    Asset { name: "docs.js", content_type: JS, caching: Caching::Revalidate, text: include_str!("../assets/docs.js") },
    Asset { name: "console.js", content_type: JS, caching: Caching::Revalidate, text: include_str!("../assets/console.js") },
    Asset { name: "console.css", content_type: CSS, caching: Caching::Revalidate, text: include_str!("../assets/console.css") },
];

const DOCS_PAGE: &str = include_str!("../assets/docs.html");
const CONSOLE_PAGE: &str = include_str!("../assets/console.html");

pub fn docs() -> Response<Body> {
    page(DOCS_PAGE)
}

pub fn console() -> Response<Body> {
    page(CONSOLE_PAGE)
}

pub fn asset(name: &str) -> Result<Response<Body>, AppError> {
    let asset = ASSETS.iter().find(|a| a.name == name).ok_or_else(no_route)?;
    let mut response = Response::new(Body::Text(asset.text.to_owned()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let cache = match asset.caching {
        Caching::Immutable => "public, max-age=31536000, immutable",
        Caching::Revalidate => "no-cache",
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(response)
}

fn page(html: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::Text(html.to_owned()));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_names_match_the_pinned_versions_and_pages_name_existing_assets() {
        for asset in ASSETS {
            if matches!(asset.caching, Caching::Immutable) {
                assert!(asset.name.contains(swagger_ui_version!()) || asset.name.contains(chart_js_version!()), "{}", asset.name);
            }
            assert!(!asset.text.is_empty(), "{}", asset.name);
        }
        for page in [DOCS_PAGE, CONSOLE_PAGE] {
            for reference in page.split("/assets/").skip(1) {
                let name = reference.split('"').next().unwrap();
                assert!(ASSETS.iter().any(|a| a.name == name), "page names /assets/{name}, which is not served");
            }
            assert!(!page.contains("<script>"), "no inline script");
        }
    }
}
