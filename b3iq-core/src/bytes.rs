//! Fixed-size byte newtypes (ids, hashes, commitments) with hex text and JSON forms.

use crate::error::{CoreError, Result};

/// Parses exactly `2 * N` lowercase hex characters.
pub(crate) fn parse_hex_array<const N: usize>(field: &'static str, s: &str) -> Result<[u8; N]> {
    if s.len() != 2 * N {
        return Err(CoreError::InvalidHex {
            field,
            reason: format!("expected {} hex characters, got {}", 2 * N, s.len()),
        });
    }
    if !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(CoreError::InvalidHex {
            field,
            reason: "only lowercase hex characters 0-9 a-f are allowed".into(),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| CoreError::InvalidHex {
        field,
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Serde helpers: `[u8; N]` as a lowercase hex string.
pub mod hex_array {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    /// Serialize as lowercase hex.
    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    /// Deserialize from exactly `2N` lowercase hex characters.
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::parse_hex_array::<N>("bytes", &s).map_err(D::Error::custom)
    }
}

/// Defines a `[u8; N]` newtype with hex Display/FromStr/serde and canonical encoding.
macro_rules! fixed_bytes {
    ($(#[$m:meta])* $name:ident, $n:expr, $label:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $n]);

        impl $name {
            /// Byte length.
            pub const LEN: usize = $n;
            /// Wraps raw bytes.
            pub const fn from_bytes(bytes: [u8; $n]) -> Self {
                Self(bytes)
            }
            /// The raw bytes.
            pub const fn to_bytes(&self) -> [u8; $n] {
                self.0
            }
            /// The raw bytes, borrowed.
            pub const fn as_bytes(&self) -> &[u8; $n] {
                &self.0
            }
            /// Lowercase hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// From a slice of exactly the right length.
            pub fn from_slice(bytes: &[u8]) -> $crate::error::Result<Self> {
                <[u8; $n]>::try_from(bytes).map(Self).map_err(|_| $crate::error::CoreError::InvalidField {
                    field: $label,
                    reason: format!("expected {} bytes, got {}", $n, bytes.len()),
                })
            }
            /// Parses exactly the lowercase hex form.
            pub fn from_hex(s: &str) -> $crate::error::Result<Self> {
                $crate::bytes::parse_hex_array::<$n>($label, s).map(Self)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($name), hex::encode(self.0))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::error::CoreError;
            fn from_str(s: &str) -> $crate::error::Result<Self> {
                Self::from_hex(s)
            }
        }

        impl From<[u8; $n]> for $name {
            fn from(b: [u8; $n]) -> Self {
                Self(b)
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::from_hex(&s).map_err(serde::de::Error::custom)
            }
        }

        impl $crate::codec::Canonical for $name {
            const NAME: &'static str = $label;
            fn encode_to(&self, w: &mut $crate::codec::Writer) {
                w.raw(&self.0);
            }
            fn decode_from(r: &mut $crate::codec::Reader<'_>) -> $crate::error::Result<Self> {
                r.array::<$n>($label).map(Self)
            }
        }
    };
}
pub(crate) use fixed_bytes;

fixed_bytes!(
    /// A 32-byte hash (blake3 or keccak256, depending on where it is used), hex in text forms.
    Hash32,
    32,
    "hash"
);
