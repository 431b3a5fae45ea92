//! SMS verification tokens: 128 bits from the OS RNG, sent once, stored only
//! as their SHA-256. A token is useless without the link, and the database
//! alone cannot produce a link.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::AppError;

const TOKEN_BYTES: usize = 16;

/// A fresh token as it goes into the SMS link (32 lowercase hex characters)
/// and its hash, which is all we keep.
pub struct NewToken {
    pub token: String,
    pub hash: Vec<u8>,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewToken([redacted])")
    }
}

pub fn new_token() -> NewToken {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash = hash_token(&token);
    NewToken { token, hash }
}

pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Parses a token from a URL path. Anything that is not 32 hex characters
/// cannot be one of ours: 404, like an unknown token.
pub fn parse_token(raw: &str) -> Result<String, AppError> {
    let token = raw.to_ascii_lowercase();
    if token.len() == TOKEN_BYTES * 2 && token.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(token)
    } else {
        Err(AppError::not_found("verification"))
    }
}

/// The link sent by SMS.
pub fn link(public_base_url: &str, token: &str) -> String {
    format!("{public_base_url}/verify/{token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_128_bit_hex_unique_and_hashed() {
        let a = new_token();
        let b = new_token();
        assert_eq!(a.token.len(), 32);
        assert_ne!(a.token, b.token);
        assert_eq!(a.hash, hash_token(&a.token));
        assert_eq!(a.hash.len(), 32);
        assert!(!format!("{a:?}").contains(&a.token));
        assert_eq!(parse_token(&a.token.to_uppercase()).unwrap(), a.token);
        assert!(parse_token("short").is_err());
        assert!(parse_token(&"g".repeat(32)).is_err());
    }
}
