//! API keys and setup tokens: `b3iq_local_`, `b3iq_support_`, `b3iq_gateway_`, `b3iq_setup_`.
//!
//! Format (like GitHub tokens): `prefix || body || checksum` where
//!
//! * `body` is 32 random base62 characters (`0-9A-Za-z`, about 190 bits), drawn without bias;
//! * `checksum` is the CRC-32 (IEEE) of the ASCII bytes of `prefix || body`, written as 6 base62
//!   characters, most significant first, left-padded with `0`.
//!
//! So a typo or a truncated paste is refused by [`Credential::parse`] without any lookup.
//! Storage: [`Credential::hash_for_storage`] = sha256 of the full token string (ASCII);
//! compare stored hashes with [`CredentialHash::ct_eq`] (constant time).
//!
//! `Debug` and `Display` never print the secret.
//!
//! ```
//! use b3iq_core::credential::{Credential, CredentialKind};
//! # use rand_chacha::rand_core::SeedableRng;
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7); // the host uses an OS rng
//! let key = Credential::generate(CredentialKind::Local, &mut rng);
//! let text = key.expose_secret().to_owned();
//! let parsed = Credential::parse(&text).unwrap();
//! assert_eq!(parsed.kind(), CredentialKind::Local);
//! assert!(parsed.hash_for_storage().ct_eq(&key.hash_for_storage()));
//! assert!(!format!("{key:?} {key}").contains(&text));
//! ```

use rand_core::CryptoRngCore;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::bytes::fixed_bytes;
use crate::error::{CoreError, Result};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Random body length in characters.
pub const BODY_LEN: usize = 32;
/// Checksum length in characters.
pub const CHECKSUM_LEN: usize = 6;

/// What a credential is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// `b3iq_local_`: client key for the local OpenAI-compatible API.
    Local,
    /// `b3iq_support_`: expiring remote-support grant.
    Support,
    /// `b3iq_gateway_`: hosted gateway key.
    Gateway,
    /// `b3iq_setup_`: single-use setup token.
    Setup,
    /// `b3iq_enroll_`: single-use, expiring control-plane enrollment token, scoped to an
    /// organisation.
    Enrollment,
}

impl CredentialKind {
    /// All kinds.
    pub const ALL: [CredentialKind; 5] = [
        CredentialKind::Local,
        CredentialKind::Support,
        CredentialKind::Gateway,
        CredentialKind::Setup,
        CredentialKind::Enrollment,
    ];

    /// The text prefix.
    pub const fn prefix(self) -> &'static str {
        match self {
            CredentialKind::Local => "b3iq_local_",
            CredentialKind::Support => "b3iq_support_",
            CredentialKind::Gateway => "b3iq_gateway_",
            CredentialKind::Setup => "b3iq_setup_",
            CredentialKind::Enrollment => "b3iq_enroll_",
        }
    }

    /// Lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Local => "local",
            CredentialKind::Support => "support",
            CredentialKind::Gateway => "gateway",
            CredentialKind::Setup => "setup",
            CredentialKind::Enrollment => "enrollment",
        }
    }

    /// Total token length for this kind.
    pub const fn token_len(self) -> usize {
        self.prefix().len() + BODY_LEN + CHECKSUM_LEN
    }
}

fixed_bytes!(
    /// sha256 of a credential string: what the host stores instead of the secret.
    CredentialHash,
    32,
    "credential hash"
);

impl CredentialHash {
    /// Constant-time equality.
    pub fn ct_eq(&self, other: &CredentialHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// True if `credential` hashes to this value (constant-time comparison).
    pub fn matches(&self, credential: &Credential) -> bool {
        self.ct_eq(&credential.hash_for_storage())
    }
}

/// A parsed, well-formed credential. Holds the secret; never printed.
#[derive(Clone)]
pub struct Credential {
    kind: CredentialKind,
    secret: Zeroizing<String>,
}

fn checksum_chars(prefix_and_body: &str) -> [u8; CHECKSUM_LEN] {
    let mut c = u64::from(crc32fast::hash(prefix_and_body.as_bytes()));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(c % 62) as usize];
        c /= 62;
    }
    out
}

impl Credential {
    /// A fresh random credential of `kind`.
    pub fn generate(kind: CredentialKind, rng: &mut impl CryptoRngCore) -> Self {
        let mut s = Zeroizing::new(String::with_capacity(kind.token_len()));
        s.push_str(kind.prefix());
        let mut buf = Zeroizing::new([0u8; 64]);
        let mut filled = 0;
        while filled < BODY_LEN {
            rng.fill_bytes(buf.as_mut());
            for &b in buf.iter() {
                // 248 = 4 * 62: rejection sampling keeps every character equally likely.
                if b < 248 && filled < BODY_LEN {
                    s.push(BASE62[usize::from(b % 62)] as char);
                    filled += 1;
                }
            }
        }
        let cs = checksum_chars(&s);
        s.extend(cs.iter().map(|&b| b as char));
        Self { kind, secret: s }
    }

    /// Parses any credential kind, checking prefix, length, alphabet and checksum.
    /// Error messages never include the secret.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |reason: &str| CoreError::InvalidCredential {
            reason: reason.to_owned(),
        };
        let kind = CredentialKind::ALL
            .into_iter()
            .find(|k| text.starts_with(k.prefix()))
            .ok_or_else(|| bad("unknown prefix (expected b3iq_local_, b3iq_support_, b3iq_gateway_, b3iq_setup_ or b3iq_enroll_)"))?;
        if text.len() != kind.token_len() {
            return Err(CoreError::InvalidCredential {
                reason: format!("a {} key is {} characters long, got {}", kind.as_str(), kind.token_len(), text.len()),
            });
        }
        let rest = &text.as_bytes()[kind.prefix().len()..];
        if !rest.iter().all(u8::is_ascii_alphanumeric) {
            return Err(bad("the key contains characters outside 0-9 A-Z a-z"));
        }
        let split = text.len() - CHECKSUM_LEN;
        let expected = checksum_chars(&text[..split]);
        if !bool::from(expected.ct_eq(&text.as_bytes()[split..])) {
            return Err(bad("checksum mismatch (mistyped or truncated key)"));
        }
        Ok(Self {
            kind,
            secret: Zeroizing::new(text.to_owned()),
        })
    }

    /// Parses and requires a specific kind.
    pub fn parse_kind(text: &str, expected: CredentialKind) -> Result<Self> {
        let c = Self::parse(text)?;
        if c.kind != expected {
            return Err(CoreError::WrongCredentialKind {
                expected: expected.as_str(),
                found: c.kind.as_str(),
            });
        }
        Ok(c)
    }

    /// The kind.
    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// The full secret string. Show it to the user once; never log it.
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }

    /// sha256 of the full token string: what to store.
    pub fn hash_for_storage(&self) -> CredentialHash {
        CredentialHash(Sha256::digest(self.secret.as_bytes()).into())
    }

    /// A non-secret hint for listings: the prefix and the last 4 characters
    /// (`b3iq_local_...Ab3x`). The last characters are checksum characters.
    pub fn hint(&self) -> String {
        format!("{}...{}", self.kind.prefix(), &self.secret[self.secret.len() - 4..])
    }

    /// Constant-time comparison of two credentials.
    pub fn ct_eq(&self, other: &Credential) -> bool {
        self.secret.len() == other.secret.len() && bool::from(self.secret.as_bytes().ct_eq(other.secret.as_bytes()))
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}<redacted>)", self.kind.prefix())
    }
}

impl std::fmt::Display for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}<redacted>", self.kind.prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn generate_parse_round_trip_all_kinds() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        for kind in CredentialKind::ALL {
            for _ in 0..50 {
                let c = Credential::generate(kind, &mut rng);
                assert_eq!(c.expose_secret().len(), kind.token_len());
                let p = Credential::parse(c.expose_secret()).unwrap();
                assert_eq!(p.kind(), kind);
                assert!(p.ct_eq(&c));
                assert!(c.hash_for_storage().matches(&p));
                Credential::parse_kind(c.expose_secret(), kind).unwrap();
            }
        }
    }

    #[test]
    fn every_single_character_change_is_refused() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let c = Credential::generate(CredentialKind::Local, &mut rng);
        let s = c.expose_secret().to_owned();
        for i in 0..s.len() {
            for repl in ['0', 'a', 'Z', '_', '-'] {
                let mut b = s.clone().into_bytes();
                if b[i] == repl as u8 {
                    continue;
                }
                b[i] = repl as u8;
                let t = String::from_utf8(b).unwrap();
                let r = Credential::parse(&t);
                assert!(r.is_err(), "accepted change at {i}");
                if let Err(e) = r {
                    assert!(!e.to_string().contains(&s[11..]), "error leaks secret");
                }
            }
        }
        assert!(Credential::parse(&s[..s.len() - 1]).is_err());
        assert!(Credential::parse(&format!("{s}x")).is_err());
        assert!(matches!(
            Credential::parse_kind(&s, CredentialKind::Support),
            Err(CoreError::WrongCredentialKind { .. })
        ));
    }

    #[test]
    fn redaction_and_hint() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let c = Credential::generate(CredentialKind::Setup, &mut rng);
        let body = &c.expose_secret()[11..];
        assert!(!format!("{c:?}").contains(body));
        assert!(!format!("{c}").contains(body));
        assert_eq!(c.hint().len(), "b3iq_setup_...".len() + 4);
    }

    #[test]
    fn known_checksum() {
        // CRC-32("b3iq_local_" + 32 x '0') written in base62.
        let body = "0".repeat(32);
        let pre = format!("b3iq_local_{body}");
        let crc = crc32fast::hash(pre.as_bytes());
        let cs = checksum_chars(&pre);
        let mut v = 0u64;
        for b in cs {
            v = v * 62 + BASE62.iter().position(|&x| x == b).unwrap() as u64;
        }
        assert_eq!(v, u64::from(crc));
        Credential::parse(&format!("{pre}{}", std::str::from_utf8(&cs).unwrap())).unwrap();
    }
}
