//! Operator commands for paystream. Dev/ops only, never deployed.
//!
//!   paystream-ops migrate                     apply pending migrations
//!   paystream-ops seed                        migrate, then seed demo data (repeatable)
//!   paystream-ops create-admin NAME PHONE     create an admin; password from PAYSTREAM_ADMIN_PASSWORD
//!   paystream-ops openapi                     print the OpenAPI document (committed as openapi.json)

use paystream::config::{Config, Environment};
use paystream::domain::Role;
use paystream::secret::Secret;
use paystream::{db, Platform};

/// The admin password used on laptops when none is configured. Refused on AWS.
const LOCAL_ADMIN_PASSWORD: &str = "admin-local-only";

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args).await {
        // The whole chain: an operator needs the cause, not just the summary.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e.as_ref());
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        eprintln!("paystream-ops: {message}");
        std::process::exit(1);
    }
}

async fn run(args: &[String]) -> Result<(), Error> {
    if args == ["openapi"] {
        // Needs no configuration: the document is a function of the code.
        print!("{}", paystream::openapi::document_text());
        return Ok(());
    }
    // With secret ARNs (on AWS) the secrets are fetched first, as a function would.
    let config = Config::load().await?;
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["migrate"] => {
            let applied = migrate(&config).await?;
            println!("migrations applied: {applied:?}");
        }
        ["seed"] => {
            migrate(&config).await?;
            let admin_password = admin_password(&config)?;
            let platform = Platform::from_config("paystream-ops", config)?;
            let summary = paystream::demo::seed(&platform.pg, &platform.config, &admin_password).await?;
            println!("seeded: {summary:?}");
        }
        ["create-admin", username, phone] => {
            let admin_password = admin_password(&config)?;
            let platform = Platform::from_config("paystream-ops", config)?;
            let id = paystream::demo::ensure_user(&platform.pg, paystream::domain::UserId::generate(), username, phone, Role::Admin, &admin_password).await?;
            println!("admin {username}: {id}");
        }
        _ => return Err("usage: paystream-ops migrate | seed | create-admin NAME PHONE | openapi".into()),
    }
    Ok(())
}

async fn migrate(config: &Config) -> Result<Vec<i32>, Error> {
    let (mut client, connection) = tokio_postgres::connect(config.database.url.expose(), tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let applied = db::migrate(&mut client).await?;
    drop(client);
    let _ = connection.await;
    Ok(applied)
}

fn admin_password(config: &Config) -> Result<Secret, Error> {
    match std::env::var("PAYSTREAM_ADMIN_PASSWORD").ok().filter(|p| !p.is_empty()) {
        Some(p) => Ok(Secret::new(p)),
        None if config.environment == Environment::Local => Ok(Secret::new(LOCAL_ADMIN_PASSWORD)),
        None => Err("PAYSTREAM_ADMIN_PASSWORD is required outside local development".into()),
    }
}
