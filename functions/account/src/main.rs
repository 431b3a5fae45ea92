use account::AccountApi;
use paystream::Platform;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let platform = Platform::bootstrap("account")?;
    paystream::http::run(AccountApi::new(platform)).await
}
