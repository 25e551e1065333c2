//! Mirrors `b3iq-core/src/payout.rs`: keccak256 payout trees compatible with OpenZeppelin's
//! `MerkleProof` (sorted pairs, double-hashed leaves).

use b3iq_core::payout as core;
use b3iq_core::Hash32;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::{array, bytes, from_py, to_py};
use crate::error::raise;

/// A payout tree over entries `{"index": int, "account": "0x..", "amount": "decimal string"}`.
#[pyclass(module = "b3iq", name = "PayoutTree", frozen)]
pub struct PayoutTree(core::PayoutTree);

#[pymethods]
impl PayoutTree {
    /// Builds the tree; claim indices must be unique.
    #[new]
    fn new(entries: &Bound<'_, PyAny>) -> PyResult<Self> {
        let entries: Vec<core::PayoutEntry> = from_py("payout entries", entries)?;
        core::PayoutTree::build(entries).map(Self).map_err(raise)
    }

    /// The root to publish on chain (32 bytes).
    #[getter]
    fn root<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.root().as_bytes())
    }

    /// The entries in tree order, as dicts.
    fn entries<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.0.entries())
    }

    /// The proof (list of 32-byte hashes) for the entry with claim index `claim_index`.
    fn proof<'py>(&self, py: Python<'py>, claim_index: u64) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let proof = self.0.proof_for_index(claim_index).map_err(raise)?;
        Ok(proof.iter().map(|h| bytes(py, h.as_bytes())).collect())
    }
}

/// The payout leaf of an entry: `keccak256(keccak256(abi.encode(index, account, amount)))`.
#[pyfunction]
fn payout_leaf<'py>(py: Python<'py>, entry: &Bound<'_, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let entry: core::PayoutEntry = from_py("payout entry", entry)?;
    Ok(bytes(py, entry.leaf().as_bytes()))
}

/// True if `proof` shows `entry` under `root` (what the settlement contract checks).
#[pyfunction]
fn verify_payout(root: &[u8], entry: &Bound<'_, PyAny>, proof: Vec<Vec<u8>>) -> PyResult<bool> {
    let root = Hash32(array::<32>("root", root)?);
    let entry: core::PayoutEntry = from_py("payout entry", entry)?;
    let proof = proof
        .iter()
        .map(|h| array::<32>("proof hash", h).map(Hash32))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(core::verify_payout(&root, &entry, &proof))
}

/// keccak256 of `data` (32 bytes).
#[pyfunction]
fn keccak256<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    bytes(py, core::keccak256(data).as_bytes())
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PayoutTree>()?;
    m.add_function(wrap_pyfunction!(payout_leaf, m)?)?;
    m.add_function(wrap_pyfunction!(verify_payout, m)?)?;
    m.add_function(wrap_pyfunction!(keccak256, m)?)?;
    Ok(())
}
