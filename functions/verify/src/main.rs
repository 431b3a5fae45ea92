use paystream::Platform;
use verify::VerifyApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let platform = Platform::bootstrap("verify", &[]).await?;
    paystream::http::run_http_and_schedule(VerifyApi::new(platform)).await
}
