//! The README's demo, through the local gateway and so through the real
//! function binaries, the poller and the broker. `--check` turns every
//! expectation into an assertion (exit code 1 on the first miss): the
//! end-to-end test runs it that way.

use std::time::{Duration, Instant};

use hyper::Method;
use paystream::config::Config;
use paystream_local::client::{Answer, HttpClient};
use serde_json::{json, Value};

struct Demo {
    base: String,
    client: HttpClient,
    check: bool,
    db: paystream::db::PgPool,
}

/// How long the demo waits for asynchronous work (consumers) to show.
const SETTLE_WAIT: Duration = Duration::from_secs(90);
const BUYERS: usize = 50;
const STOCK: i64 = 10;

#[tokio::main]
async fn main() {
    let check = std::env::args().any(|a| a == "--check");
    let config = Config::from_env().expect("configuration");
    let port = std::env::var("PAYSTREAM_HTTP_PORT").unwrap_or_else(|_| "3000".into());
    let demo = Demo {
        base: format!("http://127.0.0.1:{port}"),
        client: HttpClient::new(Duration::from_secs(120)),
        check,
        db: paystream::db::pool(&config.database, "demo").expect("database pool"),
    };
    if let Err(e) = demo.run().await {
        eprintln!("demo: FAILED: {e}");
        std::process::exit(1);
    }
    println!("demo: all steps done");
}

impl Demo {
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Result<Answer, String> {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json"), ("accept", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        self.client.send(method, &format!("{}{path}", self.base), &headers, body.map(|b| b.to_string().into_bytes())).await
    }

    fn expect(&self, ok: bool, what: &str) -> Result<(), String> {
        match (ok, self.check) {
            (true, _) => Ok(()),
            (false, true) => Err(what.to_owned()),
            (false, false) => {
                println!("   (expected: {what})");
                Ok(())
            }
        }
    }

    async fn login(&self, username: &str, password: &str) -> Result<String, String> {
        let answer = self.call(Method::POST, "/auth/login", None, Some(json!({"username": username, "password": password}))).await?;
        answer.json()["access_token"].as_str().map(str::to_owned).ok_or_else(|| format!("log-in of {username} failed: {}", answer.status))
    }

    async fn signup_and_login(&self, username: &str) -> Result<String, String> {
        let body = json!({"username": username, "email": format!("{username}@example.com"), "password": "demo-password-123", "phone": "+821055550000"});
        let answer = self.call(Method::POST, "/auth/signup", None, Some(body)).await?;
        if answer.status != 201 {
            return Err(format!("sign-up of {username}: {} {}", answer.status, String::from_utf8_lossy(&answer.body)));
        }
        self.login(username, "demo-password-123").await
    }

    /// Polls `GET path` until `done` holds for the answer.
    async fn wait_for(&self, path: &str, token: &str, done: impl Fn(&Value) -> bool) -> Result<Value, String> {
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            let answer = self.call(Method::GET, path, Some(token), None).await?;
            let body = answer.json();
            if done(&body) {
                return Ok(body);
            }
            if Instant::now() > deadline {
                return Err(format!("{path} never reached the expected state: {body}"));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn pay(&self, token: &str, card: &str, merchant: &str, amount: i64) -> Result<String, String> {
        let answer = self.call(Method::POST, "/payments", Some(token), Some(json!({"card_id": card, "merchant_id": merchant, "amount": amount, "currency": "KRW"}))).await?;
        self.expect(answer.status == 202, "POST /payments answers 202")?;
        answer.json()["payment_id"].as_str().map(str::to_owned).ok_or_else(|| format!("payment refused: {}", String::from_utf8_lossy(&answer.body)))
    }

    async fn run(&self) -> Result<(), String> {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let seoul = paystream::demo::SEOUL_CAFE.to_string();
        let paris = paystream::demo::PARIS_CAFE.to_string();

        println!("== 1. sign-up and log-in");
        let me = format!("demo_{suffix}");
        let token = self.signup_and_login(&me).await?;
        println!("   {me} signed up and logged in");
        let mut cards = Vec::new();
        for (product, pan) in [(paystream::demo::EVERYDAY, "4242 4242 4242 4242"), (paystream::demo::CAFE_LOVER, "5555 5555 5555 4444")] {
            let answer = self.call(Method::POST, "/cards", Some(&token), Some(json!({"card_product_id": product.to_string(), "pan": pan, "expiry": "12/30"}))).await?;
            self.expect(answer.status == 201, "POST /cards answers 201")?;
            cards.push(answer.json()["card_id"].as_str().unwrap_or_default().to_owned());
            println!("   card ending {} registered", answer.json()["last4"].as_str().unwrap_or("?"));
        }

        println!("== 2. loyalty and the benefit guide");
        let owner = self.login(paystream::demo::DEMO_MERCHANT_OWNER, paystream::demo::DEMO_USER_PASSWORD).await?;
        let shop = self
            .call(Method::POST, "/merchants", Some(&owner), Some(json!({"name": format!("Corner Cafe {suffix}"), "category": "cafe", "country": "KR", "lat": 37.57, "lon": 126.98, "vip_threshold": 3})))
            .await?
            .json()["merchant_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let first = self.pay(&token, &cards[0], &seoul, 10_000).await?;
        let status = self.wait_for(&format!("/payments/{first}"), &token, |b| b["status"] != "RECEIVED").await?;
        println!("   10,000 KRW at Seoul Bean Cafe with the Everyday card -> {}", status["status"]);
        self.expect(status["status"] == "COMPLETED", "the Seoul payment completes")?;
        for _ in 0..3 {
            self.pay(&token, &cards[1], &shop, 4_500).await?;
        }
        let notes = self
            .wait_for("/me/notifications", &token, |b| {
                let kinds: Vec<&str> = b.as_array().into_iter().flatten().filter_map(|n| n["kind"].as_str()).collect();
                kinds.contains(&"VIP") && kinds.contains(&"BENEFIT_TIP")
            })
            .await?;
        for n in notes.as_array().into_iter().flatten() {
            println!("   notification {}: {}", n["kind"], n["payload"]["message"].as_str().unwrap_or(""));
        }
        let board = self.wait_for(&format!("/merchants/{shop}/dashboard"), &owner, |b| b["vips"] == 1).await?;
        println!("   dashboard of Corner Cafe: {board}");

        println!("== 3. impossible travel: Paris moments after Seoul");
        let far = self.pay(&token, &cards[0], &paris, 10_000).await?;
        let status = self.wait_for(&format!("/payments/{far}"), &token, |b| b["status"] != "RECEIVED").await?;
        println!("   10,000 KRW at Paris Croissant -> {} ({})", status["status"], status["reason"]);
        self.expect(status["status"] == "PENDING", "the Paris payment is held")?;
        let db = self.db.get().await.map_err(|e| e.to_string())?;
        let sms: String = db
            .query_one("SELECT o.body FROM sms_outbox o JOIN users u ON u.id = o.user_id WHERE u.username = $1 ORDER BY o.id DESC LIMIT 1", &[&me])
            .await
            .map_err(|e| format!("no SMS in the outbox: {e}"))?
            .get(0);
        println!("   SMS: {sms}");
        let link = sms.split_whitespace().find(|w| w.contains("/verify/")).ok_or("the SMS has no link")?.to_owned();
        let path = format!("/verify/{}", link.rsplit('/').next().unwrap_or_default());
        let page = self.client.send(Method::GET, &format!("{}{path}", self.base), &[("accept", "text/html")], None).await?;
        self.expect(page.status == 200 && String::from_utf8_lossy(&page.body).contains("Approve"), "the link opens the approval page")?;
        let decided = self
            .client
            .send(Method::POST, &format!("{}{path}", self.base), &[("content-type", "application/x-www-form-urlencoded"), ("accept", "application/json")], Some(b"decision=approve".to_vec()))
            .await?;
        println!("   approved through the link -> {}", String::from_utf8_lossy(&decided.body));
        let status = self.wait_for(&format!("/payments/{far}"), &token, |b| b["status"] != "PENDING").await?;
        self.expect(status["status"] == "COMPLETED", "approval completes the payment")?;
        println!("   GET /payments/{{id}} -> {}", status["status"]);

        println!("== 4. flash sale: {BUYERS} buyers, {STOCK} items");
        let admin_password = std::env::var("PAYSTREAM_ADMIN_PASSWORD").unwrap_or_else(|_| "admin-local-only".into());
        let admin = self.login(paystream::demo::ADMIN_USERNAME, &admin_password).await?;
        let now = time::OffsetDateTime::now_utc();
        let rfc = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let product = self
            .call(Method::POST, "/products", Some(&admin), Some(json!({"title": format!("Demo sneakers {suffix}"), "price": 129_000, "currency": "KRW", "stock": STOCK, "start_time": rfc(now - time::Duration::minutes(1)), "end_time": rfc(now + time::Duration::hours(1))})))
            .await?
            .json()["product_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut buyers = Vec::with_capacity(BUYERS);
        for i in 0..BUYERS {
            buyers.push(self.signup_and_login(&format!("buyer{i}_{suffix}")).await?);
        }
        let mut orders = tokio::task::JoinSet::new();
        for token in buyers.clone() {
            let (client, url, product) = (self.client.clone(), format!("{}/orders", self.base), product.clone());
            orders.spawn(async move {
                let bearer = format!("Bearer {token}");
                let headers = [("content-type", "application/json"), ("authorization", bearer.as_str())];
                client.send(Method::POST, &url, &headers, Some(json!({"product_id": product}).to_string().into_bytes())).await.map(|a| a.status)
            });
        }
        let mut accepted = 0;
        let mut sold_out = 0;
        while let Some(status) = orders.join_next().await {
            match status.map_err(|e| e.to_string())?? {
                202 => accepted += 1,
                409 => sold_out += 1,
                other => return Err(format!("unexpected order answer {other}")),
            }
        }
        println!("   {accepted} accepted, {sold_out} sold out");
        self.expect(accepted == STOCK as usize, "exactly the stock is accepted")?;
        let summary = self
            .wait_for(&format!("/settlements/summary?product_id={product}"), &admin, |b| b["count"].as_i64() == Some(STOCK))
            .await?;
        println!("   settlements summary: {summary}");

        println!("== 5. the merchant dashboard");
        let board = self.call(Method::GET, &format!("/merchants/{seoul}/dashboard"), Some(&owner), None).await?.json();
        println!("   Seoul Bean Cafe: {board}");
        self.expect(board["customers"].as_i64().unwrap_or(0) >= 1, "the dashboard counts customers")?;
        Ok(())
    }
}
