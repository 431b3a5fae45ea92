//! `POST /auth/signup` and `POST /auth/login`.

use lambda_http::http::StatusCode;

use paystream::api::{LoginRequest, SignupRequest};
use paystream::auth::{dummy_password_hash, hash_password, verify_password, with_login_limits, AccessToken};
use paystream::domain::{Email, Password, Phone, Role, Username};
use paystream::http::{json, parse_json, source_ip, Request, Response};
use paystream::store::users::{self, NewUser};
use paystream::{AppError, ErrorCode, Platform};


pub async fn signup(p: &Platform, req: &Request) -> Result<Response, AppError> {
    let body: SignupRequest = parse_json(req, p.config.http.max_body_bytes)?;
    let username = Username::parse(&body.username)?;
    let email = Email::parse(&body.email)?;
    let phone = Phone::parse(&body.phone)?;
    let role = Role::parse_for_signup(body.role.as_deref())?;
    let password = Password::parse(body.password)?;
    // Argon2 burns ~tens of ms of CPU: keep it off the async workers.
    let password_hash = tokio::task::spawn_blocking(move || hash_password(&password)).await.map_err(AppError::internal)??;
    let db = p.pg.get().await?;
    let user_id = users::insert(&**db, paystream::domain::UserId::generate(), &NewUser { username: &username, email: &email, password_hash: &password_hash, phone: &phone, role }).await?;
    tracing::info!(user_id = %user_id, role = role.as_str(), "user signed up");
    Ok(json(StatusCode::CREATED, &paystream::api::responses::UserCreated { user_id: user_id.0 }))
}


pub async fn login(p: &Platform, req: &Request) -> Result<Response, AppError> {
    let body: LoginRequest = parse_json(req, p.config.http.max_body_bytes)?;
    let limits = &p.config.auth.login;
    // The failure limits come before the hash: a refused attempt costs no Argon2id.
    let token = with_login_limits(&p.redis, limits, &body.username, source_ip(req), check_credentials(p, &body)).await?;
    Ok(json(StatusCode::OK, &token))
}

async fn check_credentials(p: &Platform, body: &LoginRequest) -> Result<AccessToken, AppError> {
    let bad_credentials = || AppError::new(ErrorCode::BadCredentials, "wrong username or password");
    // A username that cannot exist is still checked against a dummy hash so
    // the answer takes the same time either way.
    let credentials = match Username::parse(&body.username) {
        Ok(username) => users::find_credentials(&**p.pg.get().await?, &username).await?,
        Err(_) => None,
    };
    let stored = credentials.as_ref().map(|c| c.password_hash.clone());
    let password = body.password.clone();
    let matches = tokio::task::spawn_blocking(move || {
        let hash = stored.as_deref().unwrap_or_else(|| dummy_password_hash());
        verify_password(&password, hash)
    })
    .await
    .map_err(AppError::internal)?;
    match credentials {
        Some(c) if matches => {
            let token = p.tokens.issue(c.user_id, c.role)?;
            tracing::info!(user_id = %c.user_id, "user logged in");
            Ok(token)
        }
        _ => Err(bad_credentials()),
    }
}
