use benefit_consumer::BenefitGuide;
use paystream::Platform;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let platform = Platform::bootstrap("benefit-consumer", &[]).await?;
    paystream::msk::run(BenefitGuide::new(platform)).await
}
