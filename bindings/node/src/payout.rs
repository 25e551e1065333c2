//! Mirrors `b3iq-core/src/payout.rs`: keccak256 payout trees compatible with OpenZeppelin's
//! `MerkleProof` (sorted pairs, double-hashed leaves).

use b3iq_core::payout as core;
use b3iq_core::Hash32;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::convert::{array, buffer, from_js, to_js, uint};
use crate::error::{raise, Result};

/// A payout tree over entries `{ index, account: "0x..", amount: "decimal string" }`.
#[napi]
pub struct PayoutTree {
    inner: core::PayoutTree,
}

#[napi]
impl PayoutTree {
    /// Builds the tree; claim indices must be unique.
    #[napi(constructor)]
    pub fn new(entries: serde_json::Value) -> Result<Self> {
        let entries: Vec<core::PayoutEntry> = from_js("payout entries", entries)?;
        core::PayoutTree::build(entries).map(|inner| Self { inner }).map_err(raise)
    }

    /// The root to publish on chain (32 bytes).
    #[napi(getter)]
    pub fn root(&self) -> Buffer {
        buffer(self.inner.root().as_bytes())
    }

    /// The entries in tree order.
    #[napi]
    pub fn entries(&self) -> Result<serde_json::Value> {
        to_js(&self.inner.entries())
    }

    /// The proof (32-byte hashes) for the entry with claim index `claimIndex`.
    #[napi]
    pub fn proof(&self, claim_index: f64) -> Result<Vec<Buffer>> {
        let proof = self.inner.proof_for_index(uint("claimIndex", claim_index)?).map_err(raise)?;
        Ok(proof.iter().map(|h| buffer(h.as_bytes())).collect())
    }
}

/// The payout leaf of an entry: `keccak256(keccak256(abi.encode(index, account, amount)))`.
#[napi]
pub fn payout_leaf(entry: serde_json::Value) -> Result<Buffer> {
    let entry: core::PayoutEntry = from_js("payout entry", entry)?;
    Ok(buffer(entry.leaf().as_bytes()))
}

/// True if `proof` shows `entry` under `root` (what the settlement contract checks).
#[napi]
pub fn verify_payout(root: Buffer, entry: serde_json::Value, proof: Vec<Buffer>) -> Result<bool> {
    let root = Hash32(array::<32>("root", &root)?);
    let entry: core::PayoutEntry = from_js("payout entry", entry)?;
    let proof = proof
        .iter()
        .map(|h| array::<32>("proof hash", h).map(Hash32))
        .collect::<Result<Vec<_>>>()?;
    Ok(core::verify_payout(&root, &entry, &proof))
}

/// keccak256 of `data` (32 bytes).
#[napi]
pub fn keccak256(data: Buffer) -> Buffer {
    buffer(core::keccak256(&data).as_bytes())
}
