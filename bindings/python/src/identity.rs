//! Mirrors `b3iq-core/src/identity.rs`: node keys, public keys, node ids, raw signatures.

use std::path::PathBuf;

use b3iq_core::identity as core;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::{array, bytes};
use crate::error::{raise, BindingError};

/// An Ed25519 node signing key. `repr()` shows only the node id, never the secret.
#[pyclass(module = "b3iq", name = "NodeKey", frozen)]
pub struct NodeKey(pub(crate) core::NodeKey);

#[pymethods]
impl NodeKey {
    /// A fresh random key from the operating system's CSPRNG.
    #[staticmethod]
    fn generate() -> Self {
        Self(core::NodeKey::generate(&mut rand_core::OsRng))
    }

    /// The key for a 32-byte secret seed.
    #[staticmethod]
    fn from_seed(seed: &[u8]) -> PyResult<Self> {
        core::NodeKey::from_bytes(seed).map(Self).map_err(raise)
    }

    /// Parses a key file's contents (the `b3iq-node-key-v1` text form or 32 raw bytes).
    #[staticmethod]
    fn from_key_file(data: &[u8]) -> PyResult<Self> {
        core::NodeKey::from_key_file(data).map(Self).map_err(raise)
    }

    /// Reads and parses a key file (for example `$B3IQ_HOME/identity.key`).
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        let data = std::fs::read(&path).map_err(|e| {
            raise(BindingError::io(format_args!("cannot read key file {}", path.display()), e))
        })?;
        Self::from_key_file(&data)
    }

    /// The key-file form (`b3iq-node-key-v1\n<64 hex>\n`); store it with mode 0600.
    fn to_key_file<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, &self.0.to_key_file())
    }

    /// The 32-byte secret seed. Never log it.
    fn secret_seed<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.to_bytes().as_ref())
    }

    /// The public key.
    #[getter]
    fn public_key(&self) -> NodePublicKey {
        NodePublicKey(self.0.public())
    }

    /// The node id derived from the public key.
    #[getter]
    fn node_id(&self) -> NodeId {
        NodeId(self.0.node_id())
    }

    /// Signs raw bytes (64-byte Ed25519 signature). Signed objects add their own domain tag.
    fn sign<'py>(&self, py: Python<'py>, message: &[u8]) -> Bound<'py, PyBytes> {
        bytes(py, self.0.sign_raw(message).as_bytes())
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.0)
    }
}

/// An Ed25519 public key.
#[pyclass(module = "b3iq", name = "NodePublicKey", frozen, eq, hash)]
#[derive(PartialEq, Eq, Hash)]
pub struct NodePublicKey(pub(crate) core::NodePublicKey);

#[pymethods]
impl NodePublicKey {
    /// Parses 32 bytes; small-order and invalid points are refused.
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        core::NodePublicKey::from_bytes(&array::<32>("public key", data)?)
            .map(Self)
            .map_err(raise)
    }

    /// Parses 64 lowercase hex characters.
    #[staticmethod]
    fn from_hex(text: &str) -> PyResult<Self> {
        core::NodePublicKey::from_hex(text).map(Self).map_err(raise)
    }

    /// The 32 bytes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.as_bytes())
    }

    /// Lowercase hex.
    fn hex(&self) -> String {
        self.0.to_hex()
    }

    /// The node id of this key.
    #[getter]
    fn node_id(&self) -> NodeId {
        NodeId(self.0.node_id())
    }

    /// Strict Ed25519 verification of a raw signature: True or False, never raises for a bad
    /// signature (a signature that is not 64 bytes is a `ValueError`).
    fn verify(&self, message: &[u8], signature: &[u8]) -> PyResult<bool> {
        let signature = core::Signature(array::<64>("signature", signature)?);
        Ok(self.0.verify_raw(message, &signature))
    }

    fn __str__(&self) -> String {
        self.0.to_hex()
    }

    fn __repr__(&self) -> String {
        format!("NodePublicKey('{}')", self.0.to_hex())
    }
}

/// A node id: 32 bytes, printed as `b3n_` + 52 base32 characters.
#[pyclass(module = "b3iq", name = "NodeId", frozen, eq, hash)]
#[derive(PartialEq, Eq, Hash)]
pub struct NodeId(pub(crate) core::NodeId);

#[pymethods]
impl NodeId {
    /// Parses the strict text form (`b3n_...`).
    #[staticmethod]
    fn parse(text: &str) -> PyResult<Self> {
        core::NodeId::parse(text).map(Self).map_err(raise)
    }

    /// Wraps 32 bytes (for example a `bytes32` read from chain).
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        Ok(Self(core::NodeId::from_bytes(array::<32>("node id", data)?)))
    }

    /// The 32 bytes (the on-chain `bytes32`).
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.as_bytes())
    }

    /// A short human code such as `B3IQ-N7K4`; not unique, never for authentication.
    fn short_code(&self) -> String {
        self.0.short_code()
    }

    fn __str__(&self) -> String {
        self.0.to_text()
    }

    fn __repr__(&self) -> String {
        format!("NodeId('{}')", self.0.to_text())
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NodeKey>()?;
    m.add_class::<NodePublicKey>()?;
    m.add_class::<NodeId>()?;
    Ok(())
}
