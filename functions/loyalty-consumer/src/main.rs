use loyalty_consumer::Loyalty;
use paystream::Platform;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let platform = Platform::bootstrap("loyalty-consumer", &[]).await?;
    paystream::msk::run(Loyalty::new(platform)).await
}
