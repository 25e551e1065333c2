//! Credential helpers over `b3iq_core::credential`: generation with the OS rng, format checks
//! (prefix + checksum, refused without a lookup), and the hash that is stored instead of a secret.

use b3iq_core::credential::{Credential, CredentialKind};
use b3iq_core::digest::Sha256Digest;
use rand::RngCore;

fn generate(kind: CredentialKind) -> String {
    Credential::generate(kind, &mut rand::rngs::OsRng).expose_secret().to_string()
}

/// A new `b3iq_local_` key.
pub fn new_local_key() -> String {
    generate(CredentialKind::Local)
}

/// A new `b3iq_support_` grant secret.
pub fn new_support_key() -> String {
    generate(CredentialKind::Support)
}

/// A new `b3iq_setup_` token.
pub fn new_setup_token() -> String {
    generate(CredentialKind::Setup)
}

/// A new session cookie value (256 random bits, hex).
pub fn new_session_secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// A short random id (80 bits, hex) for records.
pub fn random_id() -> String {
    let mut b = [0u8; 10];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// The hash stored for a secret: sha256 of its text, hex (the same as
/// `Credential::hash_for_storage` for credentials).
pub fn hash_secret(secret: &str) -> String {
    Sha256Digest::of(secret.as_bytes()).to_hex()
}

/// A non-secret hint for listings (`b3iq_local_...Ab3x`).
pub fn display_prefix(secret: &str) -> String {
    Credential::parse(secret).map(|c| c.hint()).unwrap_or_else(|_| "invalid".into())
}

fn check(text: &str, kind: CredentialKind) -> Result<(), String> {
    Credential::parse_kind(text, kind).map(|_| ()).map_err(|e| e.to_string())
}

/// Check a `b3iq_local_` key's format and checksum.
pub fn check_local_key_format(text: &str) -> Result<(), String> {
    check(text, CredentialKind::Local)
}

/// Check a `b3iq_support_` secret's format and checksum.
pub fn check_support_key_format(text: &str) -> Result<(), String> {
    check(text, CredentialKind::Support)
}

/// Check a `b3iq_setup_` token's format and checksum.
pub fn check_setup_token_format(text: &str) -> Result<(), String> {
    check(text, CredentialKind::Setup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_hashes() {
        let k = new_local_key();
        assert!(k.starts_with("b3iq_local_"));
        assert!(check_local_key_format(&k).is_ok());
        assert!(check_support_key_format(&k).is_err());
        assert!(check_setup_token_format(&new_setup_token()).is_ok());
        let h = hash_secret(&k);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&k[11..20]));
        assert!(display_prefix(&k).starts_with("b3iq_local_..."));
        assert_ne!(new_session_secret(), new_session_secret());
    }
}
