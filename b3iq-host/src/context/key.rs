//! The node's secrets in its home, each a file written crash-safely with mode 0600:
//! `identity.key` (the Ed25519 node key), `receipt-salt.key` (the secret every receipt's
//! commitment salt is derived from) and `owner.key` (the owner's job-issuer key, made at claim).

use b3iq_core::identity::NodeKey;
use b3iq_core::receipt::NodeSalt;

use super::home::{write_atomic, Home};
use crate::error::{HostError, Result};

/// Load the node key from `identity.key`, creating it (mode 0600) on first start.
///
/// # Errors
/// `Config` when the file is not a valid key (restore it from a backup), `Home` for I/O.
pub fn load_or_create_identity(home: &Home) -> Result<NodeKey> {
    load_or_create_key(home, &home.identity_path(), "identity.key")
}

/// Load the owner's job-issuer key from `owner.key`, creating it (mode 0600) if absent.
///
/// # Errors
/// As [`load_or_create_identity`].
pub fn load_or_create_owner_issuer(home: &Home) -> Result<NodeKey> {
    load_or_create_key(home, &home.owner_key_path(), "owner.key")
}

/// The owner's job-issuer key if it exists (it is made when the node is claimed).
///
/// # Errors
/// `Config` when the file is not a valid key, `Home` for I/O other than "not found".
pub fn owner_issuer(home: &Home) -> Result<Option<NodeKey>> {
    match std::fs::read(home.owner_key_path()) {
        Ok(b) => NodeKey::from_key_file(&b).map(Some).map_err(|e| HostError::Config(format!("owner.key is not valid ({e})"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HostError::home("read owner.key", e)),
    }
}

fn load_or_create_key(_home: &Home, path: &std::path::Path, name: &str) -> Result<NodeKey> {
    match std::fs::read(path) {
        Ok(bytes) => NodeKey::from_key_file(&bytes)
            .map_err(|e| HostError::Config(format!("{name} is not a valid node key ({e}); restore it from a backup"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = NodeKey::generate(&mut rand::rngs::OsRng);
            write_atomic(path, &key.to_key_file(), 0o600)?;
            Ok(key)
        }
        Err(e) => Err(HostError::home(format!("read {name}"), e)),
    }
}

/// Load the node salt from `receipt-salt.key` (64 hex characters), creating it (mode 0600) on
/// first start. Losing it loses the ability to open this node's v2 receipt commitments.
///
/// # Errors
/// `Config` when the file is not 32 bytes of hex, `Home` for I/O.
pub fn load_or_create_node_salt(home: &Home) -> Result<NodeSalt> {
    let path = home.receipt_salt_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes: [u8; 32] = hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| HostError::Config("receipt-salt.key is not 64 hex characters; restore it from a backup".into()))?;
            Ok(NodeSalt::from_bytes(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let salt = NodeSalt::generate(&mut rand::rngs::OsRng);
            write_atomic(&path, format!("{}\n", hex::encode(salt.expose_secret())).as_bytes(), 0o600)?;
            Ok(salt)
        }
        Err(e) => Err(HostError::home("read receipt-salt.key", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_created_once_with_mode_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h"));
        home.ensure().unwrap();
        let k1 = load_or_create_identity(&home).unwrap();
        let k2 = load_or_create_identity(&home).unwrap();
        assert_eq!(k1.public(), k2.public());
        let s1 = load_or_create_node_salt(&home).unwrap();
        let s2 = load_or_create_node_salt(&home).unwrap();
        assert_eq!(s1.expose_secret(), s2.expose_secret());
        assert!(owner_issuer(&home).unwrap().is_none());
        let o = load_or_create_owner_issuer(&home).unwrap();
        assert_eq!(owner_issuer(&home).unwrap().unwrap().public(), o.public());
        #[cfg(unix)]
        for p in [home.identity_path(), home.receipt_salt_path(), home.owner_key_path()] {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600, "{}", p.display());
        }
        std::fs::write(home.receipt_salt_path(), "not hex").unwrap();
        assert!(load_or_create_node_salt(&home).unwrap_err().to_string().contains("receipt-salt.key"));
    }
}
