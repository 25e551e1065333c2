//! Mirrors `b3iq-core/src/identity.rs`: node keys, public keys, node ids, raw signatures.

use std::sync::Arc;

use b3iq_core::identity as core;

use crate::convert::array;
use crate::error::{B3iqError, BindingError};

/// An Ed25519 node signing key.
#[derive(uniffi::Object)]
pub struct NodeKey {
    pub(crate) inner: core::NodeKey,
}

#[uniffi::export]
impl NodeKey {
    /// A fresh random key from the operating system's CSPRNG.
    #[uniffi::constructor]
    pub fn generate() -> Arc<Self> {
        Arc::new(Self { inner: core::NodeKey::generate(&mut rand_core::OsRng) })
    }

    /// The key for a 32-byte secret seed.
    #[uniffi::constructor]
    pub fn from_seed(seed: Vec<u8>) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: core::NodeKey::from_bytes(&seed)? }))
    }

    /// Parses a key file's contents (the `b3iq-node-key-v1` text form or 32 raw bytes).
    #[uniffi::constructor]
    pub fn from_key_file(data: Vec<u8>) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: core::NodeKey::from_key_file(&data)? }))
    }

    /// Reads and parses a key file.
    #[uniffi::constructor]
    pub fn load(path: String) -> Result<Arc<Self>, B3iqError> {
        let data = std::fs::read(&path)
            .map_err(|e| B3iqError::from(BindingError::io(format_args!("cannot read key file {path}"), e)))?;
        Ok(Arc::new(Self { inner: core::NodeKey::from_key_file(&data)? }))
    }

    /// The key-file form; store it with mode 0600.
    pub fn to_key_file(&self) -> Vec<u8> {
        self.inner.to_key_file().to_vec()
    }

    /// The 32-byte secret seed. Never log it.
    pub fn secret_seed(&self) -> Vec<u8> {
        self.inner.to_bytes().to_vec()
    }

    /// The public key.
    pub fn public_key(&self) -> Arc<NodePublicKey> {
        Arc::new(NodePublicKey { inner: self.inner.public() })
    }

    /// The node id derived from the public key.
    pub fn node_id(&self) -> Arc<NodeId> {
        Arc::new(NodeId { inner: self.inner.node_id() })
    }

    /// Signs raw bytes (64-byte Ed25519 signature).
    pub fn sign(&self, message: Vec<u8>) -> Vec<u8> {
        self.inner.sign_raw(&message).to_bytes().to_vec()
    }
}

/// An Ed25519 public key.
#[derive(uniffi::Object)]
pub struct NodePublicKey {
    pub(crate) inner: core::NodePublicKey,
}

#[uniffi::export]
impl NodePublicKey {
    /// Parses 32 bytes; small-order and invalid points are refused.
    #[uniffi::constructor]
    pub fn from_bytes(data: Vec<u8>) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: core::NodePublicKey::from_bytes(&array::<32>("public key", &data)?)? }))
    }

    /// Parses 64 lowercase hex characters.
    #[uniffi::constructor]
    pub fn from_hex(text: String) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: core::NodePublicKey::from_hex(&text)? }))
    }

    /// The 32 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.inner.to_bytes().to_vec()
    }

    /// Lowercase hex.
    pub fn hex(&self) -> String {
        self.inner.to_hex()
    }

    /// The node id of this key.
    pub fn node_id(&self) -> Arc<NodeId> {
        Arc::new(NodeId { inner: self.inner.node_id() })
    }

    /// Strict Ed25519 verification of a raw signature.
    pub fn verify(&self, message: Vec<u8>, signature: Vec<u8>) -> Result<bool, B3iqError> {
        let signature = core::Signature(array::<64>("signature", &signature)?);
        Ok(self.inner.verify_raw(&message, &signature))
    }
}

/// A node id: 32 bytes, printed as `b3n_` + 52 base32 characters.
#[derive(uniffi::Object)]
pub struct NodeId {
    pub(crate) inner: core::NodeId,
}

#[uniffi::export]
impl NodeId {
    /// Parses the strict text form (`b3n_...`).
    #[uniffi::constructor]
    pub fn parse(text: String) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: core::NodeId::parse(&text)? }))
    }

    /// Wraps 32 bytes.
    #[uniffi::constructor]
    pub fn from_bytes(data: Vec<u8>) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: core::NodeId::from_bytes(array::<32>("node id", &data)?) }))
    }

    /// The 32 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.inner.to_bytes().to_vec()
    }

    /// The text form `b3n_...`.
    pub fn text(&self) -> String {
        self.inner.to_text()
    }

    /// A short human code such as `B3IQ-N7K4`; not unique, never for authentication.
    pub fn short_code(&self) -> String {
        self.inner.short_code()
    }
}
