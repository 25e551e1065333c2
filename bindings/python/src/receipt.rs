//! Mirrors `b3iq-core/src/receipt.rs`: receipts (versions 1 and 2), signed receipts, public
//! summaries, commitments and per-receipt salts.

use b3iq_core::receipt as core;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::{array, bytes, from_py, to_py};
use crate::error::raise;
use crate::identity::{NodeId, NodeKey, NodePublicKey};

/// An unsigned usage receipt (the signed body). Build it from a dict with the core's JSON
/// field names (`node_id`, `request_id`, `model_id`, ...; hashes as hex, ids as text). A dict
/// with `commitment_basis` (and optionally `attestation_digest`) is a version-2 receipt.
#[pyclass(module = "b3iq", name = "Receipt", frozen)]
pub struct Receipt(pub(crate) core::Receipt);

#[pymethods]
impl Receipt {
    /// Builds a receipt from a dict (unknown fields are refused).
    #[staticmethod]
    fn from_dict(value: &Bound<'_, PyAny>) -> PyResult<Self> {
        from_py("receipt", value).map(Self)
    }

    /// The receipt as a dict (the core's JSON form).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.0)
    }

    /// Signs the receipt; `key`'s node id must be the receipt's `node_id`.
    fn sign(&self, key: &NodeKey) -> PyResult<SignedReceipt> {
        self.0.clone().sign(&key.0).map(SignedReceipt).map_err(raise)
    }

    /// Prompt plus completion tokens.
    #[getter]
    fn total_tokens(&self) -> u64 {
        self.0.total_tokens()
    }

    /// The receipt version: 2 with a commitment basis, else 1.
    #[getter]
    fn version(&self) -> u8 {
        self.0.version()
    }

    /// Whether this receipt's revealed 32-byte `salt` and the token ids open it (version 2,
    /// `token_ids` basis, counts equal to the list lengths).
    fn opens_token_ids(&self, salt: &[u8], prompt: Vec<u32>, completion: Vec<u32>) -> PyResult<bool> {
        let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", salt)?);
        Ok(self.0.opens_token_ids(&salt, &prompt, &completion))
    }

    /// Whether this receipt's revealed 32-byte `salt` and the texts open it (version 2,
    /// `utf8_text` basis).
    fn opens_text(&self, salt: &[u8], prompt: &str, completion: &str) -> PyResult<bool> {
        let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", salt)?);
        Ok(self.0.opens_text(&salt, prompt, completion))
    }
}

/// A signed usage receipt: decode the wire bytes, verify, and summarise.
#[pyclass(module = "b3iq", name = "SignedReceipt", frozen)]
pub struct SignedReceipt(pub(crate) core::SignedReceipt);

#[pymethods]
impl SignedReceipt {
    /// Strictly decodes the wire form. Does not verify: call `verify` or `verify_self_certified`.
    #[staticmethod]
    fn decode(data: &[u8]) -> PyResult<Self> {
        core::SignedReceipt::decode(data).map(Self).map_err(raise)
    }

    /// Builds from the signed JSON form (`{"version", "kind", "signer", "body", "signature"}`).
    /// Does not verify.
    #[staticmethod]
    fn from_dict(value: &Bound<'_, PyAny>) -> PyResult<Self> {
        from_py("signed receipt", value).map(Self)
    }

    /// The signed JSON form.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.0)
    }

    /// The version the receipt was signed as (1 or 2).
    #[getter]
    fn version(&self) -> u8 {
        self.0.version()
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

    /// Checks that `expected` signed this receipt and that its node id is `expected`'s.
    /// Raises `B3iqAuthError` otherwise.
    fn verify(&self, expected: &NodePublicKey) -> PyResult<()> {
        self.0.verify(&expected.0).map_err(raise)
    }

    /// Checks the signature against the key in the envelope and that the receipt's node id
    /// derives from it; returns that node id. Says nothing about whether you trust the node.
    fn verify_self_certified(&self) -> PyResult<NodeId> {
        self.0.verify_self_certified().map(NodeId).map_err(raise)
    }

    /// The stable receipt id (32 bytes, also the Merkle leaf data).
    #[getter]
    fn receipt_id<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.receipt_id().as_bytes())
    }

    /// The signed body.
    #[getter]
    fn receipt(&self) -> Receipt {
        Receipt(self.0.body().clone())
    }

    /// The key written in the envelope (not yet trusted: see `verify`).
    #[getter]
    fn signer(&self) -> NodePublicKey {
        NodePublicKey(*self.0.signer())
    }

    /// The 64-byte signature.
    #[getter]
    fn signature<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.signature().as_bytes())
    }

    /// The public summary as a dict: ids, hashes, counts and totals, nothing private.
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.0.summary())
    }

    fn __repr__(&self) -> String {
        format!("SignedReceipt(id={})", self.0.receipt_id().to_hex())
    }
}

/// Version 1: salted blake3 commitment to prompt bytes (32 bytes).
#[pyfunction]
fn commit_prompt<'py>(py: Python<'py>, salt: &[u8], prompt: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", salt)?);
    Ok(bytes(py, core::Commitment::prompt(&salt, prompt).as_bytes()))
}

/// Version 1: salted blake3 commitment to output bytes (32 bytes).
#[pyfunction]
fn commit_output<'py>(py: Python<'py>, salt: &[u8], output: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", salt)?);
    Ok(bytes(py, core::Commitment::output(&salt, output).as_bytes()))
}

/// The 32-byte commitment salt of the receipt for `request_id` (16 bytes), derived from the
/// node's 32-byte secret `node_salt`. Reveal it to open that one receipt.
#[pyfunction]
fn receipt_salt<'py>(py: Python<'py>, node_salt: &[u8], request_id: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let node_salt = core::NodeSalt::from_bytes(array::<32>("node_salt", node_salt)?);
    let request_id = core::RequestId(array::<16>("request_id", request_id)?);
    Ok(bytes(py, node_salt.receipt_salt(&request_id).expose_secret()))
}

/// Version 2: commitment to the prompt's token ids (32 bytes).
#[pyfunction]
fn commit_prompt_token_ids<'py>(py: Python<'py>, salt: &[u8], token_ids: Vec<u32>) -> PyResult<Bound<'py, PyBytes>> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", salt)?);
    Ok(bytes(py, core::Commitment::prompt_token_ids(&salt, &token_ids).map_err(raise)?.as_bytes()))
}

/// Version 2: commitment to the completion's token ids (32 bytes).
#[pyfunction]
fn commit_completion_token_ids<'py>(py: Python<'py>, salt: &[u8], token_ids: Vec<u32>) -> PyResult<Bound<'py, PyBytes>> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", salt)?);
    Ok(bytes(py, core::Commitment::completion_token_ids(&salt, &token_ids).map_err(raise)?.as_bytes()))
}

/// Version 2: commitment to the prompt's UTF-8 text (32 bytes).
#[pyfunction]
fn commit_prompt_text<'py>(py: Python<'py>, salt: &[u8], text: &str) -> PyResult<Bound<'py, PyBytes>> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", salt)?);
    Ok(bytes(py, core::Commitment::prompt_text(&salt, text).map_err(raise)?.as_bytes()))
}

/// Version 2: commitment to the completion's UTF-8 text (32 bytes).
#[pyfunction]
fn commit_completion_text<'py>(py: Python<'py>, salt: &[u8], text: &str) -> PyResult<Bound<'py, PyBytes>> {
    let salt = core::CommitmentSalt::from_bytes(array::<32>("salt", salt)?);
    Ok(bytes(py, core::Commitment::completion_text(&salt, text).map_err(raise)?.as_bytes()))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Receipt>()?;
    m.add_class::<SignedReceipt>()?;
    m.add_function(wrap_pyfunction!(commit_prompt, m)?)?;
    m.add_function(wrap_pyfunction!(commit_output, m)?)?;
    m.add_function(wrap_pyfunction!(receipt_salt, m)?)?;
    m.add_function(wrap_pyfunction!(commit_prompt_token_ids, m)?)?;
    m.add_function(wrap_pyfunction!(commit_completion_token_ids, m)?)?;
    m.add_function(wrap_pyfunction!(commit_prompt_text, m)?)?;
    m.add_function(wrap_pyfunction!(commit_completion_text, m)?)?;
    Ok(())
}
