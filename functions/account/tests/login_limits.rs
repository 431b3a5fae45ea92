//! Failed log-in limits against the real Redis and PostgreSQL: per username,
//! per source address (API Gateway's `requestContext.http.sourceIp`), checked
//! before the password hash, the same answer for unknown usernames, windows
//! that pass, and Redis down failing closed (a private redis-server).

use std::time::{Duration, Instant};

use account::AccountApi;
use paystream::config::{Config, LoginLimits};
use paystream::http::respond;
use paystream::testing::{body_json, fresh_config};
use paystream::Platform;
use serde_json::{json, Value};

const PASSWORD: &str = "correct-horse-battery";
const WRONG: &str = "wrong-horse-battery";
const HOME_IP: &str = "198.51.100.7";

struct Answer {
    status: u16,
    retry_after_s: Option<u64>,
    body: Value,
}

impl Answer {
    fn code(&self) -> Option<&str> {
        self.body["code"].as_str()
    }

    fn assert_limited(&self, what: &str, window_s: u64) {
        assert_eq!((self.status, self.code()), (429, Some("RATE_LIMITED")), "{what}: {}", self.body);
        let retry = self.retry_after_s.unwrap_or_else(|| panic!("{what}: 429 without Retry-After"));
        assert!((1..=window_s).contains(&retry), "{what}: Retry-After {retry} outside 1..={window_s}");
    }
}

async fn api(limits: LoginLimits) -> AccountApi {
    api_with(fresh_config().await, limits).await
}

async fn api_with(mut config: Config, limits: LoginLimits) -> AccountApi {
    config.auth.login = limits;
    AccountApi::new(Platform::from_config("account", config).unwrap())
}

fn limits(user_failures_max: u32, user_window_s: u64, ip_failures_max: u32, ip_window_s: u64) -> LoginLimits {
    LoginLimits { user_failures_max, user_window_s, ip_failures_max, ip_window_s }
}

/// `POST /auth/login` as API Gateway delivers it from `source_ip`.
async fn login(api: &AccountApi, username: &str, password: &str, source_ip: &str) -> Answer {
    let body = json!({"username": username, "password": password}).to_string();
    let mut event = paystream::apigw::v2_event("POST", "/auth/login", None, &[("content-type", "application/json")], Some(&body));
    event["requestContext"]["http"]["sourceIp"] = json!(source_ip);
    let request = lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway v2 event");
    let response = respond(api, request).await;
    let retry_after_s = response.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().expect("Retry-After is seconds"));
    Answer { status: response.status().as_u16(), retry_after_s, body: body_json(&response) }
}

async fn signup(api: &AccountApi, username: &str) {
    let body = json!({"username": username, "email": format!("{username}@example.com"), "password": PASSWORD, "phone": "+821012345678"});
    let response = respond(api, paystream::testing::apigw_request("POST", "/auth/signup", &[("content-type", "application/json")], Some(&body.to_string()))).await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn failures_per_username_are_limited_and_unknown_usernames_get_the_same_answer() {
    let api = api(limits(3, 60, 1_000, 60)).await;
    signup(&api, "alice").await;
    signup(&api, "bob").await;

    for i in 0..3 {
        let a = login(&api, "alice", WRONG, HOME_IP).await;
        assert_eq!((a.status, a.code()), (401, Some("BAD_CREDENTIALS")), "failure {i}");
    }
    let alice = login(&api, "alice", WRONG, HOME_IP).await;
    alice.assert_limited("alice after 3 failures", 60);
    // The right password is not even checked until the window passes.
    login(&api, "alice", PASSWORD, HOME_IP).await.assert_limited("alice, right password", 60);
    // The username is normalised as accounts are, and the limit follows it to other addresses.
    login(&api, " ALICE ", PASSWORD, "203.0.113.50").await.assert_limited("ALICE from elsewhere", 60);

    for i in 0..3 {
        assert_eq!(login(&api, "nobody", WRONG, HOME_IP).await.status, 401, "unknown user, failure {i}");
    }
    let nobody = login(&api, "nobody", WRONG, HOME_IP).await;
    nobody.assert_limited("unknown user after 3 failures", 60);
    assert_eq!(nobody.body, alice.body, "an unknown username is refused exactly like a real one");

    // Other usernames from the same address are unaffected.
    assert_eq!(login(&api, "bob", PASSWORD, HOME_IP).await.status, 200);
    assert_eq!(login(&api, "bob", WRONG, HOME_IP).await.status, 401);
}

#[tokio::test]
async fn failures_per_address_are_limited_across_usernames() {
    let api = api(limits(1_000, 60, 4, 60)).await;
    signup(&api, "carol").await;

    for (i, username) in ["u1", "u2", "carol", "u3"].into_iter().enumerate() {
        assert_eq!(login(&api, username, WRONG, HOME_IP).await.status, 401, "failure {i}");
    }
    login(&api, "u4", WRONG, HOME_IP).await.assert_limited("a fifth username from the same address", 60);
    login(&api, "carol", PASSWORD, HOME_IP).await.assert_limited("the right password from the limited address", 60);
    // Another address is not limited, for the same usernames.
    assert_eq!(login(&api, "carol", PASSWORD, "198.51.100.8").await.status, 200);
    assert_eq!(login(&api, "u4", WRONG, "198.51.100.8").await.status, 401);

    // IPv6 counts per /64: a client rotating through its own /64 is one address.
    for i in 0..4 {
        assert_eq!(login(&api, &format!("v{i}"), WRONG, &format!("2001:db8:7:7::{i}")).await.status, 401);
    }
    login(&api, "v9", WRONG, "2001:db8:7:7:ffff::1").await.assert_limited("same /64", 60);
    assert_eq!(login(&api, "v9", WRONG, "2001:db8:7:8::1").await.status, 401, "another /64");
}

#[tokio::test]
async fn successes_do_not_count_and_the_window_passes() {
    const WINDOW_S: u64 = 2;
    let api = api(limits(2, WINDOW_S, 1_000, WINDOW_S)).await;
    signup(&api, "dave").await;

    for _ in 0..4 {
        assert_eq!(login(&api, "dave", PASSWORD, HOME_IP).await.status, 200);
    }
    assert_eq!(login(&api, "dave", WRONG, HOME_IP).await.status, 401);
    assert_eq!(login(&api, "dave", PASSWORD, HOME_IP).await.status, 200, "one failure and successes stay under 2");
    assert_eq!(login(&api, "dave", WRONG, HOME_IP).await.status, 401);
    let limited = login(&api, "dave", PASSWORD, HOME_IP).await;
    limited.assert_limited("after 2 failures", WINDOW_S);

    tokio::time::sleep(Duration::from_secs(limited.retry_after_s.unwrap()) + Duration::from_millis(200)).await;
    assert_eq!(login(&api, "dave", PASSWORD, HOME_IP).await.status, 200, "the window passed");
    // A new window: two more failures before the limit again.
    assert_eq!(login(&api, "dave", WRONG, HOME_IP).await.status, 401);
    assert_eq!(login(&api, "dave", WRONG, HOME_IP).await.status, 401);
    login(&api, "dave", WRONG, HOME_IP).await.assert_limited("second window", WINDOW_S);
}

/// A refused attempt costs a Redis round trip, not an Argon2id hash, for a
/// real and an unknown username alike.
#[tokio::test]
async fn refused_attempts_skip_the_hash_for_real_and_unknown_usernames() {
    const SAMPLES: usize = 5;
    let api = api(limits(1, 60, 1_000, 60)).await;
    signup(&api, "erin").await;
    assert_eq!(login(&api, "erin", WRONG, HOME_IP).await.status, 401);
    assert_eq!(login(&api, "ghost", WRONG, HOME_IP).await.status, 401);

    let mut hash_ms = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        tokio::task::spawn_blocking(|| paystream::auth::verify_password(&paystream::secret::Secret::new(WRONG), paystream::auth::dummy_password_hash()))
            .await
            .unwrap();
        hash_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let hash_min_ms = hash_ms.iter().cloned().fold(f64::MAX, f64::min);
    for username in ["erin", "ghost"] {
        let mut refused_ms = Vec::new();
        for _ in 0..SAMPLES {
            let started = Instant::now();
            login(&api, username, PASSWORD, HOME_IP).await.assert_limited(username, 60);
            refused_ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
        refused_ms.sort_by(f64::total_cmp);
        let median_ms = refused_ms[SAMPLES / 2];
        assert!(median_ms < hash_min_ms / 2.0, "{username}: a refused attempt took {median_ms:.2} ms, one hash {hash_min_ms:.2} ms");
    }
}

/// A redis-server of this test's own, which it stops and starts again.
struct PrivateRedis {
    child: std::process::Child,
    port: u16,
}

impl PrivateRedis {
    fn start(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "private redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn without_redis_log_in_fails_closed_without_hashing_and_recovers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut redis = PrivateRedis::start(port);
    let mut config = fresh_config().await;
    config.redis.url = paystream::secret::Secret::new(format!("redis://127.0.0.1:{}/0", redis.port));
    let api = api_with(config, limits(2, 60, 1_000, 60)).await;
    signup(&api, "frank").await;
    assert_eq!(login(&api, "frank", PASSWORD, HOME_IP).await.status, 200);

    redis.stop();
    for username in ["frank", "ghost"] {
        let answer = login(&api, username, PASSWORD, HOME_IP).await;
        assert_eq!((answer.status, answer.code()), (503, Some("DEPENDENCY_UNAVAILABLE")), "{username}: {}", answer.body);
    }

    // Back: log-ins work again without anything being reset by hand.
    let _redis = PrivateRedis::start(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = login(&api, "frank", PASSWORD, HOME_IP).await;
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert!(Instant::now() < deadline, "log-in did not recover after Redis came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the limit applies again.
    assert_eq!(login(&api, "frank", WRONG, HOME_IP).await.status, 401);
    assert_eq!(login(&api, "frank", WRONG, HOME_IP).await.status, 401);
    login(&api, "frank", PASSWORD, HOME_IP).await.assert_limited("after Redis came back", 60);
}
