//! Reaching Amazon MSK: bootstrap brokers come from configuration or, given
//! the cluster ARN, from `GetBootstrapBrokers` (once, at cold start); the
//! producer authenticates with IAM (SASL/OAUTHBEARER carrying SigV4-signed
//! tokens from `aws-msk-iam-sasl-signer`) or SASL/SCRAM, by configuration.

use std::future::Future;

use rdkafka::client::OAuthToken;
use rdkafka::ClientContext;

use crate::config::{ConfigError, KafkaAuth, KafkaConfig};

/// The broker strings MSK reports for a cluster, one per listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootstrapBrokers {
    pub plaintext: Option<String>,
    pub tls: Option<String>,
    pub sasl_scram: Option<String>,
    pub sasl_iam: Option<String>,
}

/// Where bootstrap brokers are looked up (MSK's API on AWS).
pub trait BrokerDirectory: Send + Sync {
    fn bootstrap_brokers(&self, cluster_arn: &str) -> impl Future<Output = Result<BootstrapBrokers, String>> + Send;
}

/// `GetBootstrapBrokers` through `aws-sdk-kafka`.
pub struct MskDirectory {
    client: aws_sdk_kafka::Client,
}

impl MskDirectory {
    pub async fn from_env() -> Self {
        Self { client: aws_sdk_kafka::Client::new(&aws_config::load_from_env().await) }
    }
}

impl BrokerDirectory for MskDirectory {
    async fn bootstrap_brokers(&self, cluster_arn: &str) -> Result<BootstrapBrokers, String> {
        let call: std::pin::Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(self.client.get_bootstrap_brokers().cluster_arn(cluster_arn).send());
        let out = call.await.map_err(|e| format!("GetBootstrapBrokers: {}", aws_sdk_kafka::error::DisplayErrorContext(&e)))?;
        Ok(BootstrapBrokers {
            plaintext: out.bootstrap_broker_string().map(str::to_owned),
            tls: out.bootstrap_broker_string_tls().map(str::to_owned),
            sasl_scram: out.bootstrap_broker_string_sasl_scram().map(str::to_owned),
            sasl_iam: out.bootstrap_broker_string_sasl_iam().map(str::to_owned),
        })
    }
}

/// The bootstrap string to use: the configured one, else the cluster's
/// listener that matches the configured authentication.
pub async fn resolve_bootstrap(config: &KafkaConfig, directory: &impl BrokerDirectory) -> Result<String, ConfigError> {
    if !config.bootstrap_servers.is_empty() {
        return Ok(config.bootstrap_servers.clone());
    }
    let arn = config.cluster_arn.as_deref().ok_or_else(|| ConfigError("set KAFKA_BOOTSTRAP_SERVERS or KAFKA_CLUSTER_ARN".into()))?;
    let brokers = directory.bootstrap_brokers(arn).await.map_err(ConfigError)?;
    let chosen = match config.auth {
        KafkaAuth::Iam => brokers.sasl_iam,
        KafkaAuth::Scram => brokers.sasl_scram,
        KafkaAuth::None => brokers.tls.or(brokers.plaintext),
    };
    chosen.filter(|s| !s.is_empty()).ok_or_else(|| ConfigError(format!("cluster {arn} has no listener for {:?} authentication", config.auth)))
}

/// librdkafka context that answers OAUTHBEARER token refreshes with MSK IAM
/// tokens. librdkafka calls it from its own thread, so the async signer is
/// driven on the runtime the producer was created in.
pub struct IamTokenContext {
    region: String,
    runtime: tokio::runtime::Handle,
}

impl IamTokenContext {
    /// Must be called inside a Tokio runtime.
    pub fn new(region: String) -> Self {
        Self { region, runtime: tokio::runtime::Handle::current() }
    }
}

impl ClientContext for IamTokenContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(&self, _config: Option<&str>) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let region = aws_types::region::Region::new(self.region.clone());
        let (token, expires_at_ms) = self.runtime.block_on(aws_msk_iam_sasl_signer::generate_auth_token(region))?;
        Ok(OAuthToken { token, principal_name: String::new(), lifetime_ms: expires_at_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    struct Fixed(BootstrapBrokers);

    impl BrokerDirectory for Fixed {
        async fn bootstrap_brokers(&self, cluster_arn: &str) -> Result<BootstrapBrokers, String> {
            assert!(cluster_arn.starts_with("arn:aws:kafka:"));
            Ok(self.0.clone())
        }
    }

    fn config(pairs: &[(&str, &str)]) -> KafkaConfig {
        Config::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).unwrap().kafka
    }

    fn directory() -> Fixed {
        Fixed(BootstrapBrokers {
            plaintext: None,
            tls: Some("b-1:9094".into()),
            sasl_scram: Some("b-1:9096".into()),
            sasl_iam: Some("b-1:9098".into()),
        })
    }

    const ARN: &str = "arn:aws:kafka:us-east-1:123456789012:cluster/paystream/abc-1";

    #[tokio::test]
    async fn configured_brokers_win_and_the_arn_picks_the_listener_for_the_auth() {
        assert_eq!(resolve_bootstrap(&config(&[]), &directory()).await.unwrap(), "127.0.0.1:9092");
        let iam = config(&[("KAFKA_CLUSTER_ARN", ARN), ("KAFKA_AUTH", "iam")]);
        assert_eq!(resolve_bootstrap(&iam, &directory()).await.unwrap(), "b-1:9098");
        let scram = config(&[("KAFKA_CLUSTER_ARN", ARN), ("KAFKA_AUTH", "scram"), ("KAFKA_SASL_USERNAME", "u"), ("KAFKA_SASL_PASSWORD", "p")]);
        assert_eq!(resolve_bootstrap(&scram, &directory()).await.unwrap(), "b-1:9096");
        let tls = config(&[("KAFKA_CLUSTER_ARN", ARN)]);
        assert_eq!(resolve_bootstrap(&tls, &directory()).await.unwrap(), "b-1:9094");
        let configured = config(&[("KAFKA_CLUSTER_ARN", ARN), ("KAFKA_BOOTSTRAP_SERVERS", "x:1")]);
        assert_eq!(resolve_bootstrap(&configured, &directory()).await.unwrap(), "x:1");
        let no_iam = Fixed(BootstrapBrokers { tls: Some("b:9094".into()), ..Default::default() });
        assert!(resolve_bootstrap(&iam, &no_iam).await.is_err());
    }

    #[tokio::test]
    async fn iam_tokens_are_signed_offline_from_credentials() {
        use aws_credential_types::provider::SharedCredentialsProvider;
        let credentials = aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "tests");
        let (token, expires_at_ms) = aws_msk_iam_sasl_signer::generate_auth_token_from_credentials_provider(
            aws_types::region::Region::new("us-east-1"),
            SharedCredentialsProvider::new(credentials),
        )
        .await
        .unwrap();
        use base64::Engine;
        let url = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&token).unwrap()).unwrap();
        assert!(url.contains("kafka.us-east-1.amazonaws.com") && url.contains("Action=kafka-cluster%3AConnect"), "{url}");
        assert!(url.contains("X-Amz-Signature="));
        assert!(expires_at_ms > time::OffsetDateTime::now_utc().unix_timestamp() * 1000);
    }
}
