//! Secrets fetched from AWS Secrets Manager at cold start.
//!
//! On AWS the template gives a function the *ARN* of each secret it needs
//! (`JWT_SECRET_ARN`, `DATABASE_SECRET_ARN`, ...), never the value: a value in
//! an environment variable is readable by anyone who can read the function's
//! configuration, and it would not follow a rotation without a redeploy.
//! [`resolve`] turns each ARN into the variable(s) [`crate::config::Config`]
//! reads, once per execution environment, before the configuration is parsed.
//!
//! Locally nothing here runs: the variables hold their values directly.

use std::collections::HashMap;

use crate::config::ConfigError;

/// One configuration variable that may come from a secret.
#[derive(Clone, Copy, Debug)]
pub struct SecretRef {
    /// The variable the configuration reads, e.g. `DATABASE_PASSWORD`.
    pub target: &'static str,
    /// The variable holding the secret's ARN, e.g. `DATABASE_SECRET_ARN`.
    pub arn_var: &'static str,
    /// For JSON secrets (RDS- and MSK-managed ones are `{"username","password"}`),
    /// the field to read; `None` takes the whole secret string.
    pub json_field: Option<&'static str>,
}

/// Every variable that may come from Secrets Manager. The README's
/// configuration table lists the same.
pub const SECRET_REFS: &[SecretRef] = &[
    SecretRef { target: "JWT_SECRET", arn_var: "JWT_SECRET_ARN", json_field: None },
    SecretRef { target: "PAN_FINGERPRINT_KEY", arn_var: "PAN_FINGERPRINT_KEY_ARN", json_field: None },
    SecretRef { target: "DATABASE_USER", arn_var: "DATABASE_SECRET_ARN", json_field: Some("username") },
    SecretRef { target: "DATABASE_PASSWORD", arn_var: "DATABASE_SECRET_ARN", json_field: Some("password") },
    SecretRef { target: "REDIS_PASSWORD", arn_var: "REDIS_SECRET_ARN", json_field: None },
    SecretRef { target: "KAFKA_SASL_USERNAME", arn_var: "KAFKA_SCRAM_SECRET_ARN", json_field: Some("username") },
    SecretRef { target: "KAFKA_SASL_PASSWORD", arn_var: "KAFKA_SCRAM_SECRET_ARN", json_field: Some("password") },
];

/// Where secret strings come from (Secrets Manager on AWS).
#[allow(async_fn_in_trait)]
pub trait SecretStore {
    /// The current `SecretString` of every ARN, by ARN. An error names the
    /// ARN that failed and why, never a secret value.
    async fn secret_strings(&self, arns: &[String]) -> Result<HashMap<String, String>, (String, String)>;
}

/// True when any variable names a secret ARN, i.e. [`resolve`] has work.
pub fn has_refs(vars: &HashMap<String, String>) -> bool {
    SECRET_REFS.iter().any(|r| vars.get(r.arn_var).is_some_and(|v| !v.trim().is_empty()))
}

/// Replaces every `*_ARN` reference in `vars` by the secret's value under its
/// target name. Each distinct ARN is fetched once (at most one call per entry
/// of [`SECRET_REFS`]). A target that is also set directly is an error: two
/// sources for one secret is a deployment mistake, not a precedence question.
pub async fn resolve(vars: &mut HashMap<String, String>, store: &impl SecretStore) -> Result<(), ConfigError> {
    let arn_of = |vars: &HashMap<String, String>, r: &SecretRef| vars.get(r.arn_var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let mut arns: Vec<String> = Vec::new();
    for secret_ref in SECRET_REFS {
        let Some(arn) = arn_of(vars, secret_ref) else { continue };
        if vars.get(secret_ref.target).is_some_and(|v| !v.trim().is_empty()) {
            return Err(ConfigError(format!("{} and {} are both set; set only one", secret_ref.target, secret_ref.arn_var)));
        }
        if !arns.contains(&arn) {
            arns.push(arn);
        }
    }
    debug_assert!(arns.len() <= SECRET_REFS.len());
    if arns.is_empty() {
        return Ok(());
    }
    let fetched = store.secret_strings(&arns).await.map_err(|(arn, why)| {
        let variable = SECRET_REFS.iter().find(|r| arn_of(vars, r).as_deref() == Some(arn.as_str())).map_or("a secret ARN", |r| r.arn_var);
        ConfigError(format!("{variable}: could not read the secret: {why}"))
    })?;
    for secret_ref in SECRET_REFS {
        let Some(arn) = arn_of(vars, secret_ref) else { continue };
        let secret = fetched.get(&arn).ok_or_else(|| ConfigError(format!("{}: the secret store did not answer for it", secret_ref.arn_var)))?;
        let value = match secret_ref.json_field {
            None => secret.clone(),
            Some(field) => json_field(secret, field)
                .ok_or_else(|| ConfigError(format!("{}: the secret is not a JSON object with a string field {field:?}", secret_ref.arn_var)))?,
        };
        vars.insert(secret_ref.target.to_owned(), value);
    }
    Ok(())
}

fn json_field(secret: &str, field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(secret).ok()?;
    value.get(field)?.as_str().map(str::to_owned)
}

/// Bounds of one cold-start fetch: Lambda's init phase has 10 s in all, and
/// a function in a VPC without a route to Secrets Manager must fail with
/// the variable named, not time out silently.
const SECRETS_CONNECT_TIMEOUT_MS: u64 = 1_000;
const SECRETS_OPERATION_TIMEOUT_MS: u64 = 4_000;

/// The AWS Secrets Manager client. Honours the SDK's usual environment
/// (region, credentials, `AWS_ENDPOINT_URL_SECRETS_MANAGER`).
pub struct SecretsManager {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsManager {
    pub async fn from_env() -> Self {
        let shared = aws_config::load_from_env().await;
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_millis(SECRETS_CONNECT_TIMEOUT_MS))
            .operation_timeout(std::time::Duration::from_millis(SECRETS_OPERATION_TIMEOUT_MS))
            .build();
        let config = aws_sdk_secretsmanager::config::Builder::from(&shared).timeout_config(timeouts).build();
        Self { client: aws_sdk_secretsmanager::Client::from_conf(config) }
    }

    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        Self { client }
    }
}

impl SecretsManager {
    async fn secret_string(client: &aws_sdk_secretsmanager::Client, arn: &str) -> Result<String, String> {
        let answer = client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())?;
        answer.secret_string.ok_or_else(|| "the secret has no SecretString (binary secrets are not supported)".to_owned())
    }
}

impl SecretStore for SecretsManager {
    /// All at once: a cold start waits for the slowest secret, not the sum.
    async fn secret_strings(&self, arns: &[String]) -> Result<HashMap<String, String>, (String, String)> {
        let mut fetches = tokio::task::JoinSet::new();
        for arn in arns {
            let (client, arn) = (self.client.clone(), arn.clone());
            fetches.spawn(async move {
                let value = Self::secret_string(&client, &arn).await;
                (arn, value)
            });
        }
        let mut values = HashMap::with_capacity(arns.len());
        while let Some(done) = fetches.join_next().await {
            let (arn, value) = done.map_err(|e| ("a secret ARN".to_owned(), e.to_string()))?;
            let value = value.map_err(|why| (arn.clone(), why))?;
            values.insert(arn, value);
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Secrets by ARN, counting calls. Stands in for Secrets Manager in the
    /// pure mapping tests; the SDK path is tested against an endpoint in
    /// `tests/secrets.rs`.
    struct Fixed(HashMap<&'static str, &'static str>, std::cell::Cell<usize>);

    impl SecretStore for Fixed {
        async fn secret_strings(&self, arns: &[String]) -> Result<HashMap<String, String>, (String, String)> {
            arns.iter()
                .map(|arn| {
                    self.1.set(self.1.get() + 1);
                    let value = self.0.get(arn.as_str()).ok_or_else(|| (arn.clone(), "ResourceNotFoundException".to_owned()))?;
                    Ok((arn.clone(), value.to_string()))
                })
                .collect()
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[tokio::test]
    async fn arns_become_values_and_json_secrets_are_fetched_once() {
        let store = Fixed(
            HashMap::from([("arn:db", r#"{"username":"app","password":"p@ss"}"#), ("arn:jwt", "k".repeat(40).leak())]),
            Default::default(),
        );
        let mut env = vars(&[("DATABASE_SECRET_ARN", "arn:db"), ("JWT_SECRET_ARN", "arn:jwt"), ("OTHER", "x")]);
        resolve(&mut env, &store).await.unwrap();
        assert_eq!(env["DATABASE_USER"], "app");
        assert_eq!(env["DATABASE_PASSWORD"], "p@ss");
        assert_eq!(env["JWT_SECRET"].len(), 40);
        assert_eq!(env["OTHER"], "x");
        assert_eq!(store.1.get(), 2, "one call per distinct ARN");
    }

    #[tokio::test]
    async fn a_value_and_an_arn_for_the_same_variable_is_refused() {
        let store = Fixed(HashMap::from([("arn:jwt", "x")]), Default::default());
        let mut env = vars(&[("JWT_SECRET_ARN", "arn:jwt"), ("JWT_SECRET", "direct")]);
        let err = resolve(&mut env, &store).await.unwrap_err();
        assert!(err.0.contains("both set"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_field_or_secret_names_the_variable_not_the_value() {
        let store = Fixed(HashMap::from([("arn:db", r#"{"user":"app","password":"s3cret-value"}"#)]), Default::default());
        let mut env = vars(&[("DATABASE_SECRET_ARN", "arn:db")]);
        let err = resolve(&mut env, &store).await.unwrap_err().to_string();
        assert!(err.contains("DATABASE_SECRET_ARN") && err.contains("username"), "{err}");
        assert!(!err.contains("s3cret-value"), "{err}");

        let mut env = vars(&[("JWT_SECRET_ARN", "arn:nope")]);
        let err = resolve(&mut env, &store).await.unwrap_err().to_string();
        assert!(err.contains("JWT_SECRET_ARN") && err.contains("ResourceNotFound"), "{err}");
    }

    #[test]
    fn refs_are_detected_only_when_set() {
        assert!(!has_refs(&vars(&[("JWT_SECRET", "x")])));
        assert!(!has_refs(&vars(&[("JWT_SECRET_ARN", " ")])));
        assert!(has_refs(&vars(&[("REDIS_SECRET_ARN", "arn:r")])));
    }
}
