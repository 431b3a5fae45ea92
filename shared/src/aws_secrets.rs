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
    /// The secret's current `SecretString`. The error must not contain it.
    async fn secret_string(&self, arn: &str) -> Result<String, String>;
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
    let mut fetched: HashMap<String, String> = HashMap::new();
    for secret_ref in SECRET_REFS {
        let Some(arn) = vars.get(secret_ref.arn_var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else { continue };
        if vars.get(secret_ref.target).is_some_and(|v| !v.trim().is_empty()) {
            return Err(ConfigError(format!("{} and {} are both set; set only one", secret_ref.target, secret_ref.arn_var)));
        }
        if !fetched.contains_key(&arn) {
            let value = store
                .secret_string(&arn)
                .await
                .map_err(|e| ConfigError(format!("{}: could not read the secret: {e}", secret_ref.arn_var)))?;
            fetched.insert(arn.clone(), value);
        }
        let secret = &fetched[&arn];
        let value = match secret_ref.json_field {
            None => secret.clone(),
            Some(field) => json_field(secret, field)
                .ok_or_else(|| ConfigError(format!("{}: the secret is not a JSON object with a string field {field:?}", secret_ref.arn_var)))?,
        };
        vars.insert(secret_ref.target.to_owned(), value);
    }
    debug_assert!(fetched.len() <= SECRET_REFS.len());
    Ok(())
}

fn json_field(secret: &str, field: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(secret).ok()?;
    value.get(field)?.as_str().map(str::to_owned)
}

/// The AWS Secrets Manager client. Honours the SDK's usual environment
/// (region, credentials, `AWS_ENDPOINT_URL_SECRETS_MANAGER`).
pub struct SecretsManager {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsManager {
    pub async fn from_env() -> Self {
        Self { client: aws_sdk_secretsmanager::Client::new(&aws_config::load_from_env().await) }
    }

    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        Self { client }
    }
}

impl SecretStore for SecretsManager {
    async fn secret_string(&self, arn: &str) -> Result<String, String> {
        let answer = self
            .client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())?;
        answer.secret_string.ok_or_else(|| "the secret has no SecretString (binary secrets are not supported)".to_owned())
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
        async fn secret_string(&self, arn: &str) -> Result<String, String> {
            self.1.set(self.1.get() + 1);
            self.0.get(arn).map(|v| v.to_string()).ok_or_else(|| format!("ResourceNotFoundException: {arn}"))
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
