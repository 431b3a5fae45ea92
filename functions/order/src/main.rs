use order::OrderApi;
use paystream::{Need, Platform};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let platform = Platform::bootstrap("order", &[Need::JwtSecret]).await?;
    paystream::http::run_http_and_schedule(OrderApi::new(platform)).await
}
