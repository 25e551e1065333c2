//! Wallet key files: one secp256k1 private key as `0x` + 64 hex characters on the first line,
//! in a file only its owner can read (mode 0600 on Unix, checked when loading). Made locally
//! ([`create_key_file`]); the key never leaves the machine. Used by the control plane's settler
//! (`settlement.settler_key_file`) and by `b3iqd wallet`.

use std::io::Write;
use std::path::Path;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;

use crate::error::{ChainError, Result};

fn err(path: &Path, message: impl std::fmt::Display) -> ChainError {
    ChainError::Signing { action: format!("key file {}", path.display()), message: message.to_string() }
}

/// Makes a new random key at `path` (mode 0600, created exclusively: an existing file is never
/// overwritten) and returns its address.
///
/// # Errors
/// [`ChainError::Signing`] naming the file when it exists or cannot be written.
pub fn create_key_file(path: &Path) -> Result<Address> {
    let signer = PrivateKeySigner::random();
    let text = format!("0x{}\n", hex::encode(signer.to_bytes()));
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path).map_err(|e| err(path, e))?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| err(path, e))?;
    Ok(signer.address())
}

/// Loads a key file.
///
/// # Errors
/// [`ChainError::Signing`] naming the file when it is unreadable, readable by others than its
/// owner (Unix), or not `0x` + 64 hex characters of a valid key.
pub fn load_key_file(path: &Path) -> Result<PrivateKeySigner> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(|e| err(path, e))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(err(path, format!("mode {:o} lets others read the key; run chmod 600", mode & 0o777)));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(path, e))?;
    let line = text.lines().next().unwrap_or("").trim();
    let body = line.strip_prefix("0x").unwrap_or(line);
    if body.len() != 64 || !body.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(path, "expected 0x followed by 64 hex characters on the first line"));
    }
    let mut k = [0u8; 32];
    hex::decode_to_slice(body, &mut k).map_err(|e| err(path, e))?;
    PrivateKeySigner::from_bytes(&k.into()).map_err(|e| err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_keys_load_back_and_loose_or_bad_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("b3iq-key-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("wallet.key");
        let _ = std::fs::remove_file(&p);
        let a = create_key_file(&p).unwrap();
        assert_eq!(load_key_file(&p).unwrap().address(), a);
        assert!(create_key_file(&p).is_err(), "an existing key is never overwritten");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(load_key_file(&p).unwrap_err().to_string().contains("chmod 600"));
        }
        let bad = dir.join("bad.key");
        std::fs::write(&bad, "0x1234\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(load_key_file(&bad).unwrap_err().to_string().contains("64 hex"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
