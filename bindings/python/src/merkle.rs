//! Mirrors `b3iq-core/src/merkle.rs`: blake3 receipt trees (RFC 6962 shape) and inclusion proofs.

use b3iq_core::merkle as core;
use b3iq_core::Hash32;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::{array, bytes, from_py, to_py};
use crate::error::raise;

/// A blake3 Merkle tree over leaf data (for receipts: their 32-byte receipt ids).
#[pyclass(module = "b3iq", name = "MerkleTree", frozen)]
pub struct MerkleTree(core::MerkleTree);

#[pymethods]
impl MerkleTree {
    /// Builds a tree over the leaves (each `bytes`), hashing each with the leaf prefix.
    #[new]
    fn new(leaves: Vec<Vec<u8>>) -> Self {
        Self(core::MerkleTree::from_leaves(leaves))
    }

    /// Builds a tree over already-hashed leaves (32 bytes each).
    #[staticmethod]
    fn from_leaf_hashes(leaf_hashes: Vec<Vec<u8>>) -> PyResult<Self> {
        let hashes = leaf_hashes
            .iter()
            .map(|h| array::<32>("leaf hash", h).map(Hash32))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Self(core::MerkleTree::from_leaf_hashes(hashes)))
    }

    /// The root (32 bytes); the tree of no leaves has the documented empty root.
    #[getter]
    fn root<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.root().as_bytes())
    }

    /// The inclusion proof for leaf `index` as a dict `{"leaf_count", "siblings"}`.
    fn prove<'py>(&self, py: Python<'py>, index: u64) -> PyResult<Bound<'py, PyAny>> {
        let proof = self.0.prove(index).map_err(raise)?;
        to_py(py, &proof)
    }

    fn __len__(&self) -> usize {
        self.0.len() as usize
    }
}

/// The root over `leaves` without keeping the tree.
#[pyfunction]
fn merkle_root<'py>(py: Python<'py>, leaves: Vec<Vec<u8>>) -> Bound<'py, PyBytes> {
    bytes(py, core::merkle_root(leaves).as_bytes())
}

/// The leaf hash of `data` (blake3 of `0x00 || data`).
#[pyfunction]
fn merkle_leaf_hash<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    bytes(py, core::leaf_hash(data).as_bytes())
}

/// True if `proof` (a dict from `MerkleTree.prove`) shows `leaf` at `index` under `root`.
#[pyfunction]
fn verify_inclusion(root: &[u8], leaf: &[u8], index: u64, proof: &Bound<'_, PyAny>) -> PyResult<bool> {
    let root = Hash32(array::<32>("root", root)?);
    let proof: core::MerkleProof = from_py("Merkle proof", proof)?;
    Ok(core::verify_inclusion(&root, leaf, index, &proof))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<MerkleTree>()?;
    m.add_function(wrap_pyfunction!(merkle_root, m)?)?;
    m.add_function(wrap_pyfunction!(merkle_leaf_hash, m)?)?;
    m.add_function(wrap_pyfunction!(verify_inclusion, m)?)?;
    Ok(())
}
