//! The console's API (GET /merchants: only the caller's own merchants, every
//! merchant for an admin) and the browser pages and assets the function
//! serves (types, caching, CSP), against a real PostgreSQL.

use account::AccountApi;
use paystream::http::respond;
use paystream::testing::{apigw_request, body_json, platform};
use serde_json::{json, Value};

const PASSWORD: &str = "correct-horse-battery";

struct Client {
    api: AccountApi,
}

impl Client {
    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let body = body.map(|b| b.to_string());
        let response = respond(&self.api, apigw_request(method, path, &headers, body.as_deref())).await;
        (response.status().as_u16(), body_json(&response))
    }

    async fn user(&self, username: &str, role: &str) -> String {
        let body = json!({"username": username, "email": format!("{username}@example.com"), "password": PASSWORD, "phone": "+821012345678", "role": role});
        let (status, answer) = self.call("POST", "/auth/signup", None, Some(body)).await;
        assert_eq!(status, 201, "{answer}");
        let (status, answer) = self.call("POST", "/auth/login", None, Some(json!({"username": username, "password": PASSWORD}))).await;
        assert_eq!(status, 200, "{answer}");
        answer["access_token"].as_str().unwrap().to_owned()
    }

    async fn merchant(&self, token: &str, name: &str) -> String {
        let body = json!({"name": name, "category": "cafe", "country": "KR", "lat": 37.5, "lon": 127.0});
        let (status, answer) = self.call("POST", "/merchants", Some(token), Some(body)).await;
        assert_eq!(status, 201, "{answer}");
        answer["merchant_id"].as_str().unwrap().to_owned()
    }
}

fn names(list: &Value) -> Vec<&str> {
    list["items"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn merchants_list_only_the_callers_own_and_all_for_an_admin() {
    let c = Client { api: AccountApi::new(platform("account").await) };
    let ann = c.user("ann_owner", "MERCHANT").await;
    let bob = c.user("bob_owner", "MERCHANT").await;
    let customer = c.user("cat_customer", "USER").await;
    c.merchant(&ann, "Zebra Tea").await;
    c.merchant(&ann, "Apple Bakery").await;
    c.merchant(&bob, "Bob's Diner").await;

    let (status, list) = c.call("GET", "/merchants", Some(&ann), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(names(&list), ["Apple Bakery", "Zebra Tea"], "by name, only her own");
    let (_, list) = c.call("GET", "/merchants", Some(&bob), None).await;
    assert_eq!(names(&list), ["Bob's Diner"]);
    let (_, list) = c.call("GET", "/merchants", Some(&customer), None).await;
    assert!(names(&list).is_empty(), "{list}");
    let (_, list) = c.call("GET", "/merchants?limit=1", Some(&ann), None).await;
    assert_eq!(names(&list), ["Apple Bakery"]);
    assert_eq!(c.call("GET", "/merchants?limit=0", Some(&ann), None).await.0, 400);
    assert_eq!(c.call("GET", "/merchants", None, None).await.0, 401);

    paystream::demo::seed(&c.api.platform.pg, &c.api.platform.config, &paystream::secret::Secret::new("admin-password-for-tests")).await.unwrap();
    let (status, login) = c
        .call("POST", "/auth/login", None, Some(json!({"username": paystream::demo::ADMIN_USERNAME, "password": "admin-password-for-tests"})))
        .await;
    assert_eq!(status, 200, "{login}");
    let (_, list) = c.call("GET", "/merchants?limit=200", Some(login["access_token"].as_str().unwrap()), None).await;
    let all = names(&list);
    for name in ["Apple Bakery", "Zebra Tea", "Bob's Diner"] {
        assert!(all.contains(&name), "the admin sees {name}: {all:?}");
    }
}

#[tokio::test]
async fn pages_and_assets_are_served_with_their_types_caching_and_policy() {
    let api = AccountApi::new(platform("account").await);
    for (path, content_type) in [("/docs", "text/html"), ("/console", "text/html")] {
        let response = respond(&api, apigw_request("GET", path, &[("accept", "text/html")], None)).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert!(headers["content-type"].to_str().unwrap().starts_with(content_type), "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-eval") && !csp.contains("http"), "{path}: {csp}");
        assert_eq!(headers["x-frame-options"], "DENY");
    }
    let asset = |name: &str| respond(&api, apigw_request("GET", &format!("/assets/{name}"), &[], None));
    let bundle = asset("swagger-ui-bundle-5.35.0.js").await;
    assert_eq!(bundle.status(), 200);
    assert_eq!(bundle.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(bundle.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    assert!(bundle.body().len() > 1_000_000, "the whole bundle");
    let css = asset("swagger-ui-5.35.0.css").await;
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    let chart = asset("chart-4.6.1.umd.min.js").await;
    assert_eq!(chart.status(), 200);
    let own = asset("console.js").await;
    assert_eq!(own.headers()["cache-control"], "no-cache", "our own scripts are revalidated");
    assert_eq!(asset("nope.js").await.status(), 404);
    assert_eq!(asset("..%2Fsrc%2Flib.rs").await.status(), 404);
}
