//! [`Sha256Digest`]: a strictly validated sha256 digest, safe to use in file paths.
//!
//! Text form: exactly 64 lowercase hex characters, optionally prefixed with `sha256:`.
//! Anything else (upper case, whitespace, other prefixes, `/`, `..`, wrong length) is refused,
//! so `digest.to_hex()` can be joined to a directory without any path traversal
//! (compare Ollama CVE-2024-37032).

use sha2::{Digest as _, Sha256};

use crate::codec::{Canonical, Reader, Writer};
use crate::error::{CoreError, Result};

/// A sha256 digest (32 bytes). JSON and `Display`: `sha256:` + 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Text prefix accepted by [`Sha256Digest::parse`] and written by `Display`.
    pub const PREFIX: &'static str = "sha256:";

    /// Hashes `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// An incremental hasher (for large files read in chunks).
    pub fn hasher() -> Sha256Hasher {
        Sha256Hasher(Sha256::new())
    }

    /// Wraps 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// 64 lowercase hex characters (no prefix): always safe as a file name.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// `sha256:` + hex.
    pub fn to_prefixed(&self) -> String {
        format!("{}{}", Self::PREFIX, self.to_hex())
    }

    /// Parses exactly 64 lowercase hex characters, optionally prefixed with `sha256:`.
    pub fn parse(s: &str) -> Result<Self> {
        let body = s.strip_prefix(Self::PREFIX).unwrap_or(s);
        if body.len() != 64 {
            return Err(CoreError::InvalidDigest {
                reason: format!("expected 64 hex characters, got {}", body.len()),
            });
        }
        if !body.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(CoreError::InvalidDigest {
                reason: "only lowercase hex characters 0-9 a-f are allowed".into(),
            });
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(body, &mut out).map_err(|e| CoreError::InvalidDigest { reason: e.to_string() })?;
        Ok(Self(out))
    }
}

/// Incremental sha256 producing a [`Sha256Digest`].
#[derive(Clone, Default)]
pub struct Sha256Hasher(Sha256);

impl Sha256Hasher {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// The digest.
    pub fn finalize(self) -> Sha256Digest {
        Sha256Digest(self.0.finalize().into())
    }
}

impl std::fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

impl std::fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_prefixed())
    }
}

impl std::str::FromStr for Sha256Digest {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl serde::Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_prefixed())
    }
}

impl<'de> serde::Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Canonical for Sha256Digest {
    const NAME: &'static str = "sha256 digest";
    fn encode_to(&self, w: &mut Writer) {
        w.raw(&self.0);
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        r.array::<32>("sha256 digest").map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_forms() {
        let d = Sha256Digest::of(b"abc");
        assert_eq!(d.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(Sha256Digest::parse(&d.to_hex()).unwrap(), d);
        assert_eq!(Sha256Digest::parse(&d.to_prefixed()).unwrap(), d);
        assert_eq!(d.to_string(), d.to_prefixed());
        let mut h = Sha256Digest::hasher();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finalize(), d);
    }

    #[test]
    fn refuses_everything_else() {
        let good = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
        assert!(Sha256Digest::parse(good).is_ok());
        let bad = [
            String::new(),
            good.to_uppercase(),
            format!("sha256-{good}"),
            format!("SHA256:{good}"),
            format!(" {good}"),
            format!("{good}\n"),
            format!("../{}", &good[3..]),
            format!("{}/..", &good[..61]),
            good[..63].to_string(),
            format!("{good}0"),
            format!("sha256:sha256:{good}"),
            format!("{}g", &good[..63]),
        ];
        for b in bad {
            assert!(matches!(Sha256Digest::parse(&b), Err(CoreError::InvalidDigest { .. })), "{b:?}");
        }
    }
}
