//! Mirrors `b3iq-core/src/merkle.rs`: blake3 receipt trees (RFC 6962 shape) and inclusion proofs.

use b3iq_core::merkle as core;
use b3iq_core::Hash32;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::convert::{array, buffer, from_js, to_js, uint};
use crate::error::{raise, Result};

/// A blake3 Merkle tree over leaf data (for receipts: their 32-byte receipt ids).
#[napi]
pub struct MerkleTree {
    inner: core::MerkleTree,
}

#[napi]
impl MerkleTree {
    /// Builds a tree over the leaves, hashing each with the leaf prefix.
    #[napi(constructor)]
    pub fn new(leaves: Vec<Buffer>) -> Self {
        Self { inner: core::MerkleTree::from_leaves(leaves.iter().map(|b| b.as_ref())) }
    }

    /// Builds a tree over already-hashed leaves (32 bytes each).
    #[napi(factory)]
    pub fn from_leaf_hashes(leaf_hashes: Vec<Buffer>) -> Result<Self> {
        let hashes = leaf_hashes
            .iter()
            .map(|h| array::<32>("leaf hash", h).map(Hash32))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { inner: core::MerkleTree::from_leaf_hashes(hashes) })
    }

    /// The root (32 bytes).
    #[napi(getter)]
    pub fn root(&self) -> Buffer {
        buffer(self.inner.root().as_bytes())
    }

    /// Number of leaves.
    #[napi(getter)]
    pub fn length(&self) -> f64 {
        self.inner.len() as f64
    }

    /// The inclusion proof for leaf `index`: `{ leaf_count, siblings }` (hex siblings).
    #[napi]
    pub fn prove(&self, index: f64) -> Result<serde_json::Value> {
        let proof = self.inner.prove(uint("index", index)?).map_err(raise)?;
        to_js(&proof)
    }
}

/// The root over `leaves` without keeping the tree.
#[napi]
pub fn merkle_root(leaves: Vec<Buffer>) -> Buffer {
    buffer(core::merkle_root(leaves.iter().map(|b| b.as_ref())).as_bytes())
}

/// The leaf hash of `data` (blake3 of `0x00 || data`).
#[napi]
pub fn merkle_leaf_hash(data: Buffer) -> Buffer {
    buffer(core::leaf_hash(&data).as_bytes())
}

/// True if `proof` (from `MerkleTree.prove`) shows `leaf` at `index` under `root`.
#[napi]
pub fn verify_inclusion(root: Buffer, leaf: Buffer, index: f64, proof: serde_json::Value) -> Result<bool> {
    let root = Hash32(array::<32>("root", &root)?);
    let proof: core::MerkleProof = from_js("Merkle proof", proof)?;
    Ok(core::verify_inclusion(&root, &leaf, uint("index", index)?, &proof))
}
