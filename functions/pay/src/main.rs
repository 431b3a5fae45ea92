use pay::PayApi;
use paystream::Platform;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let platform = Platform::bootstrap("pay")?;
    paystream::http::run(PayApi::new(platform)).await
}
