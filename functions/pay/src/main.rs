use pay::PayApi;
use paystream::{Need, Platform};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let platform = Platform::bootstrap("pay", &[Need::JwtSecret]).await?;
    paystream::http::run(PayApi::new(platform)).await
}
