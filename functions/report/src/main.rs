use paystream::{Need, Platform};
use report::ReportApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let platform = Platform::bootstrap("report", &[Need::JwtSecret]).await?;
    paystream::http::run(ReportApi::new(platform)).await
}
