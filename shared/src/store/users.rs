//! Users and their credentials.

use tokio_postgres::GenericClient;

use crate::db::unique_violation;
use crate::domain::{Email, Phone, Role, UserId, Username};
use crate::error::{AppError, ErrorCode};

pub struct NewUser<'a> {
    pub username: &'a Username,
    pub email: &'a Email,
    pub password_hash: &'a str,
    pub phone: &'a Phone,
    pub role: Role,
}

pub async fn insert(db: &impl GenericClient, id: UserId, user: &NewUser<'_>) -> Result<UserId, AppError> {
    let result = db
        .execute(
            "INSERT INTO users (id, username, email, password_hash, phone, role) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&id.0, &user.username.as_str(), &user.email.as_str(), &user.password_hash, &user.phone.as_str(), &user.role.as_str()],
        )
        .await;
    match result {
        Ok(_) => Ok(id),
        Err(e) => Err(match unique_violation(&e) {
            Some("users_username_key") => AppError::new(ErrorCode::UsernameTaken, "that username is taken"),
            Some("users_email_key") => AppError::new(ErrorCode::EmailTaken, "that email already has an account"),
            _ => e.into(),
        }),
    }
}

pub struct Credentials {
    pub user_id: UserId,
    pub role: Role,
    pub password_hash: String,
}

pub async fn find_credentials(db: &impl GenericClient, username: &Username) -> Result<Option<Credentials>, AppError> {
    let row = db.query_opt("SELECT id, role, password_hash FROM users WHERE username = $1", &[&username.as_str()]).await?;
    Ok(row.map(|row| Credentials {
        user_id: UserId(row.get(0)),
        role: Role::parse(row.get(1)).expect("role column is constrained"),
        password_hash: row.get(2),
    }))
}

pub async fn find_id(db: &impl GenericClient, username: &Username) -> Result<Option<UserId>, AppError> {
    let row = db.query_opt("SELECT id FROM users WHERE username = $1", &[&username.as_str()]).await?;
    Ok(row.map(|r| UserId(r.get(0))))
}
