use fds_consumer::Fds;
use paystream::Platform;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let platform = Platform::bootstrap("fds-consumer", &[]).await?;
    paystream::msk::run(Fds::new(platform)).await
}
