//! Node identity: Ed25519 keys, node ids (`b3n_...`), signatures, key-file helpers.
//!
//! * [`NodeKey`] is the secret signing key (32-byte seed). Its `Debug` never prints the secret.
//! * [`NodePublicKey`] is the 32-byte Ed25519 public key.
//! * [`NodeId`] is `blake3("b3iq/node-id/v1" || public_key)`, printed as `b3n_` + 52 lowercase
//!   base32 characters (RFC 4648 alphabet, no padding). Its 32 bytes go on chain as `bytes32`.
//!
//! Key files are handled as bytes: [`NodeKey::to_key_file`] / [`NodeKey::from_key_file`]. The
//! host writes them with mode 0600; this crate never touches the file system.
//!
//! ```
//! use b3iq_core::identity::{NodeKey, NodeId};
//! let key = NodeKey::from_seed([7u8; 32]);
//! let id = key.node_id();
//! let text = id.to_string();
//! assert!(text.starts_with("b3n_"));
//! assert_eq!(text.parse::<NodeId>().unwrap(), id);
//! ```

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use zeroize::{Zeroize, Zeroizing};

use crate::codec::{Canonical, Reader, Writer};
use crate::error::{CoreError, Result};

/// Domain tag hashed in front of the public key to derive a node id.
pub const NODE_ID_DOMAIN: &[u8] = b"b3iq/node-id/v1";
/// Text prefix of a node id.
pub const NODE_ID_PREFIX: &str = "b3n_";
/// First line of the text key-file format.
pub const KEY_FILE_HEADER: &str = "b3iq-node-key-v1";

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Alphabet of [`NodeId::short_code`]: no `0`, `1`, `I`, `O`.
pub const SHORT_CODE_ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// An Ed25519 signing key (the node's private identity).
///
/// `Debug` prints only the public node id. The secret is zeroized on drop.
#[derive(Clone)]
pub struct NodeKey {
    inner: SigningKey,
}

impl NodeKey {
    /// Deterministic key from a 32-byte secret seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            inner: SigningKey::from_bytes(&seed),
        }
    }

    /// A fresh random key.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        Self::from_seed(*seed)
    }

    /// The 32-byte secret seed. Handle with care; never log it.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.inner.to_bytes())
    }

    /// From the 32-byte secret seed.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let seed: [u8; 32] = bytes.try_into().map_err(|_| CoreError::InvalidKeyFile {
            reason: format!("a secret key is 32 bytes, got {}", bytes.len()),
        })?;
        Ok(Self::from_seed(seed))
    }

    /// The public key.
    pub fn public(&self) -> NodePublicKey {
        NodePublicKey(self.inner.verifying_key())
    }

    /// The node id derived from the public key.
    pub fn node_id(&self) -> NodeId {
        self.public().node_id()
    }

    /// Signs raw bytes. Prefer [`NodeKey::sign_object`], which adds the domain tag and version.
    pub fn sign_raw(&self, message: &[u8]) -> Signature {
        Signature(self.inner.sign(message).to_bytes())
    }

    /// Signs a canonical object: see [`crate::signed::Signed::sign`].
    pub fn sign_object<T: crate::signed::SignedKind>(&self, body: T) -> Result<crate::signed::Signed<T>> {
        crate::signed::Signed::sign(body, self)
    }

    /// The text key-file form: two lines, `b3iq-node-key-v1` and the 64-hex-char seed,
    /// each ending in `\n`. Write it with mode 0600.
    pub fn to_key_file(&self) -> Zeroizing<Vec<u8>> {
        let seed = self.to_bytes();
        let mut hexed = Zeroizing::new(hex::encode(seed.as_ref()));
        let mut out = Vec::with_capacity(KEY_FILE_HEADER.len() + 66);
        out.extend_from_slice(KEY_FILE_HEADER.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(hexed.as_bytes());
        out.push(b'\n');
        hexed.zeroize();
        Zeroizing::new(out)
    }

    /// Parses a key file: the text form (header line, 64 lowercase hex chars, optional final
    /// newline) or exactly 32 raw bytes (binary form).
    pub fn from_key_file(bytes: &[u8]) -> Result<Self> {
        if bytes.len() == 32 {
            return Self::from_bytes(bytes);
        }
        let bad = |reason: &str| CoreError::InvalidKeyFile {
            reason: reason.to_owned(),
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8 text and not 32 raw bytes"))?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let (header, body) = text
            .split_once('\n')
            .ok_or_else(|| bad("expected two lines: the header and the hex seed"))?;
        if header != KEY_FILE_HEADER {
            return Err(bad("the first line must be `b3iq-node-key-v1`"));
        }
        let seed = crate::bytes::parse_hex_array::<32>("key file", body)
            .map_err(|_| bad("the second line must be exactly 64 lowercase hex characters"))?;
        Ok(Self::from_seed(seed))
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({}, secret: <redacted>)", self.node_id())
    }
}

/// An Ed25519 public key (32 bytes, hex in JSON).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NodePublicKey(VerifyingKey);

thread_local! {
    /// The last key [`NodePublicKey::from_bytes`] accepted on this thread, with its bytes.
    static LAST_DECODED_KEY: std::cell::Cell<Option<([u8; 32], NodePublicKey)>> =
        const { std::cell::Cell::new(None) };
}

impl NodePublicKey {
    /// Parses 32 bytes, refusing points that are not valid keys.
    ///
    /// Parsing decompresses the curve point (a field square root, about as costly as a tenth of
    /// a signature check). A batch usually names one key many times (a receipt upload carries
    /// its node's key in each of up to 256 receipts), so the last key accepted on the calling
    /// thread is remembered and the same 32 bytes again return it without decompressing: the
    /// answer is the one decompression would give, since parsing is a pure function of the bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self> {
        if let Some((b, key)) = LAST_DECODED_KEY.with(std::cell::Cell::get) {
            if &b == bytes {
                return Ok(key);
            }
        }
        let vk = VerifyingKey::from_bytes(bytes).map_err(|e| CoreError::InvalidPublicKey {
            reason: e.to_string(),
        })?;
        if vk.is_weak() {
            return Err(CoreError::InvalidPublicKey {
                reason: "small-order (weak) key".into(),
            });
        }
        let key = Self(vk);
        LAST_DECODED_KEY.with(|c| c.set(Some((*bytes, key))));
        Ok(key)
    }

    /// The 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The 32 bytes, borrowed.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    /// Parses 64 lowercase hex characters.
    pub fn from_hex(s: &str) -> Result<Self> {
        Self::from_bytes(&crate::bytes::parse_hex_array::<32>("public key", s)?)
    }

    /// The node id of this key.
    pub fn node_id(&self) -> NodeId {
        let mut h = blake3::Hasher::new();
        h.update(NODE_ID_DOMAIN);
        h.update(self.as_bytes());
        NodeId(*h.finalize().as_bytes())
    }

    /// Strict Ed25519 verification of raw bytes (refuses malleable signatures).
    pub fn verify_raw(&self, message: &[u8], signature: &Signature) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0.verify_strict(message, &sig).is_ok()
    }

    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }
}

impl std::hash::Hash for NodePublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialOrd for NodePublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for NodePublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Debug for NodePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodePublicKey({})", self.to_hex())
    }
}

impl fmt::Display for NodePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for NodePublicKey {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_hex(s)
    }
}

impl serde::Serialize for NodePublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for NodePublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

impl Canonical for NodePublicKey {
    const NAME: &'static str = "public key";
    fn encode_to(&self, w: &mut Writer) {
        w.raw(self.as_bytes());
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        Self::from_bytes(&r.array::<32>("public key")?)
    }
}

crate::bytes::fixed_bytes!(
    /// A 64-byte Ed25519 signature (hex in JSON).
    Signature,
    64,
    "signature"
);

/// A node id: 32 bytes, `blake3("b3iq/node-id/v1" || public_key)`.
///
/// Text form: `b3n_` + 52 lowercase base32 characters (RFC 4648 alphabet, no padding; the 4
/// unused bits of the last character must be zero). Parsing is strict: no upper case, no
/// padding, no whitespace.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// Wraps 32 bytes (for example a `bytes32` read from chain).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes (the on-chain `bytes32`).
    pub const fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The 32 bytes, borrowed.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short human code such as `B3IQ-N7K4` for the setup wizard: the first 20 bits of the
    /// id in an alphabet without `0`, `1`, `I`, `O`. It identifies a node to a person; it is not
    /// unique and must never be used for authentication.
    pub fn short_code(&self) -> String {
        let bits = (u32::from(self.0[0]) << 16) | (u32::from(self.0[1]) << 8) | u32::from(self.0[2]);
        let mut s = String::from("B3IQ-");
        for i in 0..4 {
            let idx = (bits >> (19 - 5 * i)) & 0x1f;
            s.push(SHORT_CODE_ALPHABET[idx as usize] as char);
        }
        s
    }

    /// The text form (same as `Display`).
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(56);
        s.push_str(NODE_ID_PREFIX);
        s.push_str(&base32_encode(&self.0));
        s
    }

    /// Parses the strict text form.
    pub fn parse(s: &str) -> Result<Self> {
        let body = s.strip_prefix(NODE_ID_PREFIX).ok_or_else(|| CoreError::InvalidNodeId {
            reason: "missing the `b3n_` prefix".into(),
        })?;
        let bytes = base32_decode_32(body).map_err(|reason| CoreError::InvalidNodeId { reason })?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.to_text())
    }
}

impl FromStr for NodeId {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_text())
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Canonical for NodeId {
    const NAME: &'static str = "node id";
    fn encode_to(&self, w: &mut Writer) {
        w.raw(&self.0);
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        r.array::<32>("node id").map(Self)
    }
}

fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let mut acc: u32 = 0;
    let mut nbits = 0u32;
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 5 {
            nbits -= 5;
            out.push(BASE32[((acc >> nbits) & 0x1f) as usize] as char);
        }
        acc &= (1 << nbits) - 1;
    }
    if nbits > 0 {
        out.push(BASE32[((acc << (5 - nbits)) & 0x1f) as usize] as char);
    }
    out
}

fn base32_decode_32(s: &str) -> std::result::Result<[u8; 32], String> {
    if s.len() != 52 {
        return Err(format!("expected 52 base32 characters after the prefix, got {}", s.len()));
    }
    let mut out = [0u8; 32];
    let mut acc: u32 = 0;
    let mut nbits = 0u32;
    let mut i = 0;
    for c in s.bytes() {
        let v = match c {
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return Err(format!("character {:?} is not lowercase base32", c as char)),
        };
        acc = (acc << 5) | u32::from(v);
        nbits += 5;
        if nbits >= 8 {
            nbits -= 8;
            out[i] = (acc >> nbits) as u8;
            i += 1;
            acc &= (1 << nbits) - 1;
        }
    }
    if acc != 0 {
        return Err("non-canonical encoding: the unused trailing bits must be zero".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_text_round_trips_and_is_strict() {
        for seed in 0u8..20 {
            let id = NodeKey::from_seed([seed; 32]).node_id();
            let t = id.to_string();
            assert_eq!(t.len(), 56);
            assert_eq!(NodeId::parse(&t).unwrap(), id);
            assert!(NodeId::parse(&t.to_uppercase()).is_err());
            assert!(NodeId::parse(&t[4..]).is_err());
            assert!(NodeId::parse(&format!("{t}=")).is_err());
        }
        // non-zero padding bits: last char 'b' sets a pad bit
        let id = NodeId([0u8; 32]);
        let mut t = id.to_string();
        assert!(t.ends_with('a'));
        t.pop();
        t.push('b');
        assert!(NodeId::parse(&t).is_err());
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32_encode(b"f"), "my");
        assert_eq!(base32_encode(b"fo"), "mzxq");
        assert_eq!(base32_encode(b"foobar"), "mzxw6ytboi");
    }

    #[test]
    fn short_code_shape() {
        let c = NodeKey::from_seed([1; 32]).node_id().short_code();
        assert_eq!(c.len(), 9);
        assert!(c.starts_with("B3IQ-"));
        assert!(c[5..].bytes().all(|b| SHORT_CODE_ALPHABET.contains(&b)));
        assert_eq!(NodeId([0; 32]).short_code(), "B3IQ-2222");
        assert_eq!(NodeId([0xff; 32]).short_code(), "B3IQ-ZZZZ");
    }

    #[test]
    fn key_file_round_trip_and_errors() {
        let k = NodeKey::from_seed([9; 32]);
        let f = k.to_key_file();
        assert!(f.starts_with(b"b3iq-node-key-v1\n"));
        let k2 = NodeKey::from_key_file(&f).unwrap();
        assert_eq!(k2.public(), k.public());
        let no_nl = &f[..f.len() - 1];
        assert_eq!(NodeKey::from_key_file(no_nl).unwrap().public(), k.public());
        assert_eq!(NodeKey::from_key_file(&[9; 32]).unwrap().public(), k.public());
        for bad in [&b""[..], b"b3iq-node-key-v1\n", b"other\n0000", &[0u8; 31]] {
            assert!(matches!(NodeKey::from_key_file(bad), Err(CoreError::InvalidKeyFile { .. })));
        }
        let k = NodeKey::from_seed([0xab; 32]);
        let upper = String::from_utf8(k.to_key_file().to_vec()).unwrap().to_uppercase().replace("B3IQ-NODE-KEY-V1", KEY_FILE_HEADER);
        assert!(NodeKey::from_key_file(upper.as_bytes()).is_err());
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let k = NodeKey::from_seed([0xab; 32]);
        let d = format!("{k:?}");
        assert!(!d.contains(&hex::encode([0xab; 32])));
        assert!(d.contains("redacted"));
    }

    #[test]
    fn weak_public_keys_are_refused() {
        // the identity point (a small-order point)
        let mut ident = [0u8; 32];
        ident[0] = 1;
        assert!(NodePublicKey::from_bytes(&ident).is_err());
    }

    #[test]
    fn a_remembered_key_decodes_as_a_fresh_one_and_refusals_stay_refused() {
        let (a, b) = (NodeKey::from_seed([1; 32]).public(), NodeKey::from_seed([2; 32]).public());
        let mut ident = [0u8; 32];
        ident[0] = 1;
        // y = 2 is not the y-coordinate of a curve point: decompression fails.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert!(VerifyingKey::from_bytes(&off_curve).is_err());
        for _ in 0..3 {
            for k in [a, a, b, a, b, b] {
                let d = NodePublicKey::from_bytes(k.as_bytes()).unwrap();
                assert_eq!(d, k);
                assert_eq!(d.node_id(), k.node_id());
                let s = NodeKey::from_seed(if k == a { [1; 32] } else { [2; 32] }).sign_raw(b"m");
                assert!(d.verify_raw(b"m", &s));
                // A bad key right after a good one is still refused, and does not replace it.
                assert!(NodePublicKey::from_bytes(&ident).is_err());
                assert!(NodePublicKey::from_bytes(&off_curve).is_err());
                assert_eq!(NodePublicKey::from_bytes(k.as_bytes()).unwrap(), k);
            }
        }
    }

    #[test]
    fn raw_sign_verify() {
        let k = NodeKey::from_seed([3; 32]);
        let s = k.sign_raw(b"hello");
        assert!(k.public().verify_raw(b"hello", &s));
        assert!(!k.public().verify_raw(b"hellO", &s));
    }
}
