//! Mirrors `b3iq-core/src/payout.rs`: keccak256 payout trees compatible with OpenZeppelin's
//! `MerkleProof`.

use std::sync::Arc;

use b3iq_core::payout as core;
use b3iq_core::Hash32;

use crate::convert::{array, from_json, to_json};
use crate::error::B3iqError;

/// A payout tree over entries (JSON: `[{"index", "account", "amount"}]`).
#[derive(uniffi::Object)]
pub struct PayoutTree {
    inner: core::PayoutTree,
}

#[uniffi::export]
impl PayoutTree {
    /// Builds the tree from JSON entries; claim indices must be unique.
    #[uniffi::constructor]
    pub fn new(entries_json: String) -> Result<Arc<Self>, B3iqError> {
        let entries: Vec<core::PayoutEntry> = from_json("payout entries", &entries_json)?;
        Ok(Arc::new(Self { inner: core::PayoutTree::build(entries)? }))
    }

    /// The root to publish on chain (32 bytes).
    pub fn root(&self) -> Vec<u8> {
        self.inner.root().to_bytes().to_vec()
    }

    /// The entries in tree order, as JSON.
    pub fn entries_json(&self) -> Result<String, B3iqError> {
        to_json(&self.inner.entries())
    }

    /// The proof (32-byte hashes) for the entry with claim index `claim_index`.
    pub fn proof(&self, claim_index: u64) -> Result<Vec<Vec<u8>>, B3iqError> {
        Ok(self.inner.proof_for_index(claim_index)?.iter().map(|h| h.to_bytes().to_vec()).collect())
    }
}

/// The payout leaf of an entry (JSON).
#[uniffi::export]
pub fn payout_leaf(entry_json: String) -> Result<Vec<u8>, B3iqError> {
    let entry: core::PayoutEntry = from_json("payout entry", &entry_json)?;
    Ok(entry.leaf().to_bytes().to_vec())
}

/// True if `proof` shows the entry under `root`.
#[uniffi::export]
pub fn verify_payout(root: Vec<u8>, entry_json: String, proof: Vec<Vec<u8>>) -> Result<bool, B3iqError> {
    let root = Hash32(array::<32>("root", &root)?);
    let entry: core::PayoutEntry = from_json("payout entry", &entry_json)?;
    let proof = proof
        .iter()
        .map(|h| array::<32>("proof hash", h).map(Hash32))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(core::verify_payout(&root, &entry, &proof))
}

/// keccak256 of `data`.
#[uniffi::export]
pub fn keccak256(data: Vec<u8>) -> Vec<u8> {
    core::keccak256(&data).to_bytes().to_vec()
}
