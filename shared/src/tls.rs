//! TLS client settings for the connections we open ourselves (PostgreSQL;
//! Redis builds its own from the same PEM bytes). rustls with the aws-lc-rs
//! provider, the one the AWS SDK already links, so there is one TLS stack.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::config::ConfigError;

/// The Amazon RDS CA bundle, compiled in so a function needs no file on
/// disk (see the file's header for its source).
pub const AWS_RDS_CA_BUNDLE_PEM: &str = include_str!("../certs/aws-rds-ca-bundle.pem");

/// Reads a PEM file named by a configuration variable.
pub fn read_pem_file(variable: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError(format!("{variable}: cannot read {}: {e}", path.display())))
}

/// Every certificate in `pem` as a trust anchor. At least one is required:
/// an empty store would refuse every server, which is a configuration error
/// better reported at cold start.
pub fn root_store(variable: &str, pem: &[u8]) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| ConfigError(format!("{variable}: not a PEM certificate bundle: {e}")))?;
        roots.add(cert).map_err(|e| ConfigError(format!("{variable}: unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ConfigError(format!("{variable}: no CA certificate found")));
    }
    Ok(roots)
}

/// A client configuration that verifies the server's chain against `roots`
/// and its name against the host we dialled. TLS 1.2 and 1.3 only.
pub fn client_config(variable: &str, roots: RootCertStore) -> Result<ClientConfig, ConfigError> {
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("{variable}: TLS settings: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_rds_cas_all_load() {
        let roots = root_store("bundle", AWS_RDS_CA_BUNDLE_PEM.as_bytes()).unwrap();
        let in_file = AWS_RDS_CA_BUNDLE_PEM.matches("-----BEGIN CERTIFICATE-----").count();
        assert_eq!(roots.len(), in_file);
        assert!(in_file >= 90, "every region's roots: {in_file}");
    }

    #[test]
    fn a_file_without_certificates_is_a_configuration_error() {
        let err = root_store("DATABASE_CA_FILE", b"not a certificate").unwrap_err();
        assert!(err.0.contains("DATABASE_CA_FILE"), "{err}");
    }
}
