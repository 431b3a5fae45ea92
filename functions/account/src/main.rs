use account::AccountApi;
use paystream::{Need, Platform};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let platform = Platform::bootstrap("account", &[Need::JwtSecret, Need::PanFingerprintKey]).await?;
    paystream::http::run(AccountApi::new(platform)).await
}
