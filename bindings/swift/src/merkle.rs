//! Mirrors `b3iq-core/src/merkle.rs`: blake3 receipt trees (RFC 6962 shape) and inclusion proofs.

use std::sync::Arc;

use b3iq_core::merkle as core;
use b3iq_core::Hash32;

use crate::convert::{array, from_json, to_json};
use crate::error::B3iqError;

/// A blake3 Merkle tree over leaf data.
#[derive(uniffi::Object)]
pub struct MerkleTree {
    inner: core::MerkleTree,
}

#[uniffi::export]
impl MerkleTree {
    /// Builds a tree over the leaves, hashing each with the leaf prefix.
    #[uniffi::constructor]
    pub fn new(leaves: Vec<Vec<u8>>) -> Arc<Self> {
        Arc::new(Self { inner: core::MerkleTree::from_leaves(leaves) })
    }

    /// Builds a tree over already-hashed leaves (32 bytes each).
    #[uniffi::constructor]
    pub fn from_leaf_hashes(leaf_hashes: Vec<Vec<u8>>) -> Result<Arc<Self>, B3iqError> {
        let hashes = leaf_hashes
            .iter()
            .map(|h| array::<32>("leaf hash", h).map(Hash32))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self { inner: core::MerkleTree::from_leaf_hashes(hashes) }))
    }

    /// The root (32 bytes).
    pub fn root(&self) -> Vec<u8> {
        self.inner.root().to_bytes().to_vec()
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.inner.len()
    }

    /// The inclusion proof for leaf `index` as JSON `{"leaf_count", "siblings"}`.
    pub fn prove_json(&self, index: u64) -> Result<String, B3iqError> {
        to_json(&self.inner.prove(index)?)
    }
}

/// The root over `leaves` without keeping the tree.
#[uniffi::export]
pub fn merkle_root(leaves: Vec<Vec<u8>>) -> Vec<u8> {
    core::merkle_root(leaves).to_bytes().to_vec()
}

/// The leaf hash of `data` (blake3 of `0x00 || data`).
#[uniffi::export]
pub fn merkle_leaf_hash(data: Vec<u8>) -> Vec<u8> {
    core::leaf_hash(&data).to_bytes().to_vec()
}

/// True if `proof_json` (from `prove_json`) shows `leaf` at `index` under `root`.
#[uniffi::export]
pub fn verify_inclusion(root: Vec<u8>, leaf: Vec<u8>, index: u64, proof_json: String) -> Result<bool, B3iqError> {
    let root = Hash32(array::<32>("root", &root)?);
    let proof: core::MerkleProof = from_json("Merkle proof", &proof_json)?;
    Ok(core::verify_inclusion(&root, &leaf, index, &proof))
}
