//! sha256 helpers: strict digest parsing and file hashing.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::RuntimeError;

/// Parses a sha256 digest strictly: exactly 64 lower-case hex characters, optionally prefixed
/// with `sha256:`. Anything else (upper case, separators, `..`, `/`, NUL, wrong length) is
/// refused, so a digest can safely become a file name. Returns the bare 64-character form.
/// Same rule as b3iq-core's `Sha256Digest::parse`.
pub fn parse_sha256(s: &str) -> Result<String, RuntimeError> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(hex.to_string())
    } else {
        Err(RuntimeError::InvalidDigest(s.chars().take(100).collect()))
    }
}

/// Parses a digest into b3iq-core's type .
pub fn parse_digest(s: &str) -> Result<b3iq_core::digest::Sha256Digest, RuntimeError> {
    b3iq_core::digest::Sha256Digest::parse(s).map_err(|_| RuntimeError::InvalidDigest(s.chars().take(100).collect()))
}

/// Hashes a file, returning (lower-case hex sha256, size in bytes).
pub fn sha256_file(path: &Path) -> Result<(String, u64), RuntimeError> {
    let mut f = std::fs::File::open(path).map_err(|e| RuntimeError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n: u64 = 0;
    loop {
        let k = f.read(&mut buf).map_err(|e| RuntimeError::io(path, e))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_parsed_strictly() {
        let ok = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
        assert_eq!(parse_sha256(ok).unwrap(), ok);
        assert_eq!(parse_sha256(&format!("sha256:{ok}")).unwrap(), ok);
        for bad in [
            "",
            "sha256:",
            &ok[..63],
            &format!("{ok}0"),
            &ok.to_uppercase(),
            "../../../../etc/passwd",
            &format!("sha256-{ok}"),
            &format!("{}/..", &ok[..61]),
            &format!("{}\0", &ok[..63]),
            &format!(" {}", &ok[..63]),
            "sha512:00",
        ] {
            assert!(matches!(parse_sha256(bad), Err(RuntimeError::InvalidDigest(_))), "{bad:?}");
        }
    }
}
