use paystream::Platform;
use report::ReportApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let platform = Platform::bootstrap("report")?;
    paystream::http::run(ReportApi::new(platform)).await
}
