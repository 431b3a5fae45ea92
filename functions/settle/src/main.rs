use paystream::Platform;
use settle::Settle;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let platform = Platform::bootstrap("settle", &[]).await?;
    paystream::msk::run(Settle::new(platform)).await
}
