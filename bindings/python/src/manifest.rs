//! Mirrors `b3iq-core/src/manifest.rs`: signed model manifests from publishers.

use b3iq_core::manifest as core;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::{bytes, from_py, to_py};
use crate::error::raise;
use crate::identity::{NodeKey, NodePublicKey};

/// An unsigned model manifest, built from a dict with the core's JSON field names.
#[pyclass(module = "b3iq", name = "ModelManifest", frozen)]
pub struct ModelManifest(core::ModelManifest);

#[pymethods]
impl ModelManifest {
    /// Builds a manifest from a dict (unknown fields are refused).
    #[staticmethod]
    fn from_dict(value: &Bound<'_, PyAny>) -> PyResult<Self> {
        from_py("model manifest", value).map(Self)
    }

    /// The manifest as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.0)
    }

    /// Signs the manifest as its publisher.
    fn sign(&self, key: &NodeKey) -> PyResult<SignedManifest> {
        key.0.sign_object(self.0.clone()).map(SignedManifest).map_err(raise)
    }

    /// Total size of all artifacts in bytes.
    #[getter]
    fn total_size_bytes(&self) -> PyResult<u64> {
        self.0.total_size_bytes().map_err(raise)
    }
}

/// A signed model manifest.
#[pyclass(module = "b3iq", name = "SignedManifest", frozen)]
pub struct SignedManifest(core::SignedManifest);

#[pymethods]
impl SignedManifest {
    /// Strictly decodes the wire form (artifact names and digests are checked). Does not verify.
    #[staticmethod]
    fn decode(data: &[u8]) -> PyResult<Self> {
        core::SignedManifest::decode(data).map(Self).map_err(raise)
    }

    /// Builds from the signed JSON form (`{"version", "kind", "signer", "body", "signature"}`).
    /// Does not verify.
    #[staticmethod]
    fn from_dict(value: &Bound<'_, PyAny>) -> PyResult<Self> {
        from_py("signed manifest", value).map(Self)
    }

    /// The signed JSON form.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.0)
    }

    /// The canonical body bytes that were signed.
    #[getter]
    fn body_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.body_bytes())
    }

    /// `domain_tag || version || body`: the exact bytes the signature covers.
    fn signing_message<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, &self.0.signing_message())
    }

    /// blake3 of the signing message (32 bytes): the object's stable id.
    #[getter]
    fn object_hash<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, &self.0.object_hash())
    }

    /// The wire encoding.
    fn encode<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, &self.0.encode())
    }

    /// Checks that `publisher` signed this manifest; raises `B3iqAuthError` otherwise.
    fn verify(&self, publisher: &NodePublicKey) -> PyResult<()> {
        self.0.verify(&publisher.0).map_err(raise)
    }

    /// The signed manifest body.
    #[getter]
    fn manifest(&self) -> ModelManifest {
        ModelManifest(self.0.body().clone())
    }

    /// The key written in the envelope (not yet trusted).
    #[getter]
    fn signer(&self) -> NodePublicKey {
        NodePublicKey(*self.0.signer())
    }

    /// The 64-byte signature.
    #[getter]
    fn signature<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.signature().as_bytes())
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ModelManifest>()?;
    m.add_class::<SignedManifest>()?;
    Ok(())
}
