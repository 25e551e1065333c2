//! blake3 Merkle trees for batching receipts (RFC 6962 / RFC 9162 shape).
//!
//! * leaf hash = `blake3(0x00 || data)`
//! * node hash = `blake3(0x01 || left || right)`
//! * shape: RFC 6962 — for `n > 1` leaves the left subtree holds the largest power of two
//!   smaller than `n`. Built bottom-up this is: pair neighbours, and an odd last node at any
//!   level is promoted unchanged to the next level (never duplicated, so no CVE-2012-2459
//!   style second preimages).
//! * empty tree: root = `blake3("")` (RFC 6962); it has no proofs.
//! * proofs: sibling hashes from the leaf up, skipping levels where the node was promoted, plus
//!   the leaf count; verification is RFC 9162 §2.1.3.2.
//!
//! For receipts the leaf data is the 32-byte [`crate::receipt::ReceiptId`].
//!
//! ```
//! use b3iq_core::merkle::{MerkleTree, verify_inclusion};
//! let leaves: Vec<Vec<u8>> = (0u8..5).map(|i| vec![i]).collect();
//! let tree = MerkleTree::from_leaves(&leaves);
//! let proof = tree.prove(3).unwrap();
//! assert!(verify_inclusion(&tree.root(), &[3u8], 3, &proof));
//! assert!(!verify_inclusion(&tree.root(), &[4u8], 3, &proof));
//! ```

use crate::bytes::Hash32;
use crate::error::{CoreError, Result};

/// Prefix byte of leaf hashes.
pub const LEAF_PREFIX: u8 = 0x00;
/// Prefix byte of inner node hashes.
pub const NODE_PREFIX: u8 = 0x01;

/// `blake3(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash32 {
    if data.len() <= 64 {
        let mut buf = [0u8; 65];
        buf[0] = LEAF_PREFIX;
        buf[1..=data.len()].copy_from_slice(data);
        return Hash32(*blake3::hash(&buf[..=data.len()]).as_bytes());
    }
    let mut h = blake3::Hasher::new();
    h.update(&[LEAF_PREFIX]);
    h.update(data);
    Hash32(*h.finalize().as_bytes())
}

/// `blake3(0x01 || left || right)`.
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    let mut buf = [0u8; 65];
    buf[0] = NODE_PREFIX;
    buf[1..33].copy_from_slice(&left.0);
    buf[33..].copy_from_slice(&right.0);
    Hash32(*blake3::hash(&buf).as_bytes())
}

/// Root of the empty tree: `blake3("")`.
pub fn empty_root() -> Hash32 {
    Hash32(*blake3::hash(b"").as_bytes())
}

/// An inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerkleProof {
    /// Number of leaves in the tree the proof is for.
    pub leaf_count: u64,
    /// Sibling hashes from the leaf level up (hex in JSON).
    pub siblings: Vec<Hash32>,
}

/// A blake3 Merkle tree keeping every level, so proofs are cheap.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    /// `levels[0]` are the leaf hashes, the last level holds the root.
    levels: Vec<Vec<Hash32>>,
}

impl MerkleTree {
    /// Builds the tree from leaf data (each item is hashed with [`leaf_hash`]).
    pub fn from_leaves<I, L>(leaves: I) -> Self
    where
        I: IntoIterator<Item = L>,
        L: AsRef<[u8]>,
    {
        Self::from_leaf_hashes(leaves.into_iter().map(|l| leaf_hash(l.as_ref())).collect())
    }

    /// Builds the tree from already-computed leaf hashes.
    pub fn from_leaf_hashes(leaf_hashes: Vec<Hash32>) -> Self {
        let mut levels = vec![leaf_hashes];
        while levels.last().map_or(0, Vec::len) > 1 {
            let prev = levels.last().map(Vec::as_slice).unwrap_or_default();
            let mut next = Vec::with_capacity(prev.len().div_ceil(2));
            let mut pairs = prev.chunks_exact(2);
            for p in &mut pairs {
                next.push(node_hash(&p[0], &p[1]));
            }
            if let [last] = pairs.remainder() {
                next.push(*last);
            }
            levels.push(next);
        }
        Self { levels }
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.levels[0].len() as u64
    }

    /// True for the empty tree.
    pub fn is_empty(&self) -> bool {
        self.levels[0].is_empty()
    }

    /// The root hash (`blake3("")` for the empty tree).
    pub fn root(&self) -> Hash32 {
        match self.levels.last().and_then(|l| l.first()) {
            Some(r) if !self.is_empty() => *r,
            _ => empty_root(),
        }
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash32> {
        usize::try_from(index).ok().and_then(|i| self.levels[0].get(i).copied())
    }

    /// The inclusion proof for leaf `index`.
    pub fn prove(&self, index: u64) -> Result<MerkleProof> {
        let len = self.len();
        if index >= len {
            return Err(CoreError::IndexOutOfRange { index, len });
        }
        let mut i = index as usize;
        let mut siblings = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            let sib = i ^ 1;
            if sib < level.len() {
                siblings.push(level[sib]);
            }
            i >>= 1;
        }
        Ok(MerkleProof {
            leaf_count: len,
            siblings,
        })
    }
}

/// Root of the tree over `leaves` without keeping the levels.
pub fn merkle_root<I, L>(leaves: I) -> Hash32
where
    I: IntoIterator<Item = L>,
    L: AsRef<[u8]>,
{
    let mut level: Vec<Hash32> = leaves.into_iter().map(|l| leaf_hash(l.as_ref())).collect();
    if level.is_empty() {
        return empty_root();
    }
    while level.len() > 1 {
        let n = level.len();
        let half = n / 2;
        for k in 0..half {
            level[k] = node_hash(&level[2 * k], &level[2 * k + 1]);
        }
        if n % 2 == 1 {
            level[half] = level[n - 1];
            level.truncate(half + 1);
        } else {
            level.truncate(half);
        }
    }
    level[0]
}

/// Verifies that `leaf` (raw leaf data) is at `index` in the tree with `root`.
pub fn verify_inclusion(root: &Hash32, leaf: &[u8], index: u64, proof: &MerkleProof) -> bool {
    verify_inclusion_hash(root, &leaf_hash(leaf), index, proof)
}

/// Like [`verify_inclusion`] but takes the leaf hash (RFC 9162 §2.1.3.2).
pub fn verify_inclusion_hash(root: &Hash32, leaf_hash: &Hash32, index: u64, proof: &MerkleProof) -> bool {
    if index >= proof.leaf_count {
        return false;
    }
    let mut fnode = index;
    let mut snode = proof.leaf_count - 1;
    let mut r = *leaf_hash;
    for p in &proof.siblings {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straight from the RFC 6962 definition (recursive, k = largest power of two < n).
    fn reference_root(leaves: &[Vec<u8>]) -> Hash32 {
        match leaves.len() {
            0 => empty_root(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn matches_rfc6962_definition_and_all_proofs_verify() {
        for n in 0..70usize {
            let leaves: Vec<Vec<u8>> = (0..n).map(|i| (i as u32).to_le_bytes().to_vec()).collect();
            let tree = MerkleTree::from_leaves(&leaves);
            assert_eq!(tree.root(), reference_root(&leaves), "n={n}");
            assert_eq!(merkle_root(&leaves), tree.root(), "n={n}");
            for i in 0..n {
                let p = tree.prove(i as u64).unwrap();
                assert!(verify_inclusion(&tree.root(), &leaves[i], i as u64, &p), "n={n} i={i}");
                for j in 0..n {
                    if j != i {
                        assert!(!verify_inclusion(&tree.root(), &leaves[j], i as u64, &p));
                        assert!(!verify_inclusion(&tree.root(), &leaves[i], j as u64, &p));
                    }
                }
                let mut longer = p.clone();
                longer.siblings.push(tree.root());
                assert!(!verify_inclusion(&tree.root(), &leaves[i], i as u64, &longer));
                if !p.siblings.is_empty() {
                    let mut shorter = p.clone();
                    shorter.siblings.pop();
                    assert!(!verify_inclusion(&tree.root(), &leaves[i], i as u64, &shorter));
                }
                let mut wrong_count = p.clone();
                wrong_count.leaf_count += 1;
                // Same path may coincide for some sizes, but never with the leaf hashed as a node.
                let _ = verify_inclusion(&tree.root(), &leaves[i], i as u64, &wrong_count);
            }
            assert!(tree.prove(n as u64).is_err());
        }
    }

    #[test]
    fn leaf_and_node_domains_differ() {
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        let mut cat = vec![];
        cat.extend_from_slice(&a.0);
        cat.extend_from_slice(&b.0);
        assert_ne!(leaf_hash(&cat), node_hash(&a, &b));
        assert_eq!(leaf_hash(&[7u8; 100]), {
            let mut v = vec![0u8];
            v.extend_from_slice(&[7u8; 100]);
            Hash32(*blake3::hash(&v).as_bytes())
        });
    }
}
