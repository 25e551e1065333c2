//! Mirrors `b3iq-core/src/identity.rs`: node keys, public keys, node ids, raw signatures.

use b3iq_core::identity as core;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::convert::{array, buffer};
use crate::error::{raise, BindingError, Result};

/// An Ed25519 node signing key. `toString()` shows only the node id, never the secret.
#[napi]
pub struct NodeKey {
    pub(crate) inner: core::NodeKey,
}

#[napi]
impl NodeKey {
    /// A fresh random key from the operating system's CSPRNG.
    #[napi(factory)]
    pub fn generate() -> Self {
        Self { inner: core::NodeKey::generate(&mut rand_core::OsRng) }
    }

    /// The key for a 32-byte secret seed.
    #[napi(factory)]
    pub fn from_seed(seed: Buffer) -> Result<Self> {
        core::NodeKey::from_bytes(&seed).map(|inner| Self { inner }).map_err(raise)
    }

    /// Parses a key file's contents (the `b3iq-node-key-v1` text form or 32 raw bytes).
    #[napi(factory)]
    pub fn from_key_file(data: Buffer) -> Result<Self> {
        core::NodeKey::from_key_file(&data).map(|inner| Self { inner }).map_err(raise)
    }

    /// Reads and parses a key file.
    #[napi(factory)]
    pub fn load(path: String) -> Result<Self> {
        let data = std::fs::read(&path)
            .map_err(|e| raise(BindingError::io(format_args!("cannot read key file {path}"), e)))?;
        core::NodeKey::from_key_file(&data).map(|inner| Self { inner }).map_err(raise)
    }

    /// The key-file form (`b3iq-node-key-v1\n<64 hex>\n`); store it with mode 0600.
    #[napi]
    pub fn to_key_file(&self) -> Buffer {
        buffer(&self.inner.to_key_file())
    }

    /// The 32-byte secret seed. Never log it.
    #[napi]
    pub fn secret_seed(&self) -> Buffer {
        buffer(self.inner.to_bytes().as_ref())
    }

    /// The public key.
    #[napi(getter)]
    pub fn public_key(&self) -> NodePublicKey {
        NodePublicKey { inner: self.inner.public() }
    }

    /// The node id derived from the public key.
    #[napi(getter)]
    pub fn node_id(&self) -> NodeId {
        NodeId { inner: self.inner.node_id() }
    }

    /// Signs raw bytes (64-byte Ed25519 signature).
    #[napi]
    pub fn sign(&self, message: Buffer) -> Buffer {
        buffer(self.inner.sign_raw(&message).as_bytes())
    }

    /// `NodeKey(b3n_..., secret: <redacted>)`.
    #[napi(js_name = "toString")]
    pub fn to_display(&self) -> String {
        format!("{:?}", self.inner)
    }
}

/// An Ed25519 public key.
#[napi]
pub struct NodePublicKey {
    pub(crate) inner: core::NodePublicKey,
}

#[napi]
impl NodePublicKey {
    /// Parses 32 bytes; small-order and invalid points are refused.
    #[napi(factory)]
    pub fn from_bytes(data: Buffer) -> Result<Self> {
        core::NodePublicKey::from_bytes(&array::<32>("public key", &data)?)
            .map(|inner| Self { inner })
            .map_err(raise)
    }

    /// Parses 64 lowercase hex characters.
    #[napi(factory)]
    pub fn from_hex(text: String) -> Result<Self> {
        core::NodePublicKey::from_hex(&text).map(|inner| Self { inner }).map_err(raise)
    }

    /// The 32 bytes.
    #[napi]
    pub fn to_bytes(&self) -> Buffer {
        buffer(self.inner.as_bytes())
    }

    /// Lowercase hex.
    #[napi]
    pub fn hex(&self) -> String {
        self.inner.to_hex()
    }

    /// The node id of this key.
    #[napi(getter)]
    pub fn node_id(&self) -> NodeId {
        NodeId { inner: self.inner.node_id() }
    }

    /// Strict Ed25519 verification of a raw signature: true or false.
    #[napi]
    pub fn verify(&self, message: Buffer, signature: Buffer) -> Result<bool> {
        let signature = core::Signature(array::<64>("signature", &signature)?);
        Ok(self.inner.verify_raw(&message, &signature))
    }

    /// True if both are the same key.
    #[napi]
    pub fn equals(&self, other: &NodePublicKey) -> bool {
        self.inner == other.inner
    }

    /// Lowercase hex.
    #[napi(js_name = "toString")]
    pub fn to_display(&self) -> String {
        self.inner.to_hex()
    }
}

/// A node id: 32 bytes, printed as `b3n_` + 52 base32 characters.
#[napi]
pub struct NodeId {
    pub(crate) inner: core::NodeId,
}

#[napi]
impl NodeId {
    /// Parses the strict text form (`b3n_...`).
    #[napi(factory)]
    pub fn parse(text: String) -> Result<Self> {
        core::NodeId::parse(&text).map(|inner| Self { inner }).map_err(raise)
    }

    /// Wraps 32 bytes (for example a `bytes32` read from chain).
    #[napi(factory)]
    pub fn from_bytes(data: Buffer) -> Result<Self> {
        Ok(Self { inner: core::NodeId::from_bytes(array::<32>("node id", &data)?) })
    }

    /// The 32 bytes.
    #[napi]
    pub fn to_bytes(&self) -> Buffer {
        buffer(self.inner.as_bytes())
    }

    /// A short human code such as `B3IQ-N7K4`; not unique, never for authentication.
    #[napi]
    pub fn short_code(&self) -> String {
        self.inner.short_code()
    }

    /// True if both are the same id.
    #[napi]
    pub fn equals(&self, other: &NodeId) -> bool {
        self.inner == other.inner
    }

    /// The text form `b3n_...`.
    #[napi(js_name = "toString")]
    pub fn to_display(&self) -> String {
        self.inner.to_text()
    }
}
