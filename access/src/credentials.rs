//! Secrets: password hashing, session tokens and gateway keys.
//!
//! Passwords are hashed with argon2id (OWASP parameters: 19 MiB, 2 passes). Session
//! tokens and gateway keys are 256-bit random values; only their SHA-256 is stored.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of session tokens, so a token pasted in the wrong place is recognisable.
pub const SESSION_PREFIX: &str = "hs_";
/// Prefix of gateway keys: `gk_<id>_<secret>`.
pub const GATEWAY_KEY_PREFIX: &str = "gk_";

/// Shortest password an admin may set.
pub const MIN_PASSWORD_CHARS: usize = 10;

fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Hex SHA-256 of a token or key secret: what is stored and looked up.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new session token.
pub fn new_session_token() -> String {
    format!("{SESSION_PREFIX}{}", random_b64(32))
}

/// A new gateway key: (id, full key to hand out once, digest of its secret to store).
pub fn new_gateway_key() -> (String, String, String) {
    let mut id = [0u8; 6];
    rand::rng().fill_bytes(&mut id);
    let id = hex::encode(id);
    let secret = random_b64(32);
    let key = format!("{GATEWAY_KEY_PREFIX}{id}_{secret}");
    (id, key, digest(&secret))
}

/// Split a presented gateway key into (id, secret); `None` if it is not shaped like one.
pub fn parse_gateway_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(GATEWAY_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let secret_ok = secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some((id, secret))
}

/// Compare two digests without an early exit, so timing tells nothing about the match.
pub fn digests_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A random password for a new account or a reset, to be shown once.
pub fn generate_password() -> String {
    // 15 random bytes -> 20 URL-safe characters, about 120 bits.
    random_b64(15)
}

/// Why a password cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Too short.
    #[error("a password needs at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    /// Hashing failed (should not happen).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Check a new password's strength rules.
pub fn check_new_password(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    Ok(())
}

/// Hash a password with argon2id (CPU-heavy: call from a blocking context).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    check_new_password(password)?;
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// A valid hash of no password anybody knows: verified against when the user does not
/// exist, so an unknown name takes as long to refuse as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&generate_password()).unwrap_or_default())
}

/// Does the password match the stored hash? (CPU-heavy: call from a blocking context.)
pub fn verify_password(password: &str, stored_hash: &str) -> bool {
    match PasswordHash::new(stored_hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterz", &hash));
        assert!(!verify_password("x", "not a hash"));
        assert!(matches!(
            hash_password("short"),
            Err(PasswordError::TooShort)
        ));
    }

    #[test]
    fn gateway_keys_round_trip() {
        let (id, key, stored) = new_gateway_key();
        let (pid, secret) = parse_gateway_key(&key).expect("parses");
        assert_eq!(pid, id);
        assert!(digests_equal(&digest(secret), &stored));
        assert!(parse_gateway_key("gk_zz_abc").is_none());
        assert!(parse_gateway_key(&key[..key.len() - 1]).is_none());
        assert!(parse_gateway_key(&new_session_token()).is_none());
    }
}
