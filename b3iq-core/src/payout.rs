//! keccak256 payout trees, compatible with OpenZeppelin `MerkleProof.verify` and
//! `StandardMerkleTree` (`["uint256", "address", "uint256"]`).
//!
//! * leaf = `keccak256(keccak256(abi.encode(uint256 index, address account, uint256 amount)))`,
//!   i.e. the inner hash is over 96 bytes: index as 32-byte big-endian, account left-padded with
//!   12 zero bytes, amount as 32-byte big-endian;
//! * inner node = `keccak256(min(a, b) || max(a, b))` (sorted pair, bytewise);
//! * construction (deterministic, the same as OpenZeppelin's `StandardMerkleTree.of` with its
//!   default `sortLeaves: true`): sort the leaf hashes ascending, lay them out as a complete
//!   binary tree in an array of `2n - 1` nodes with leaf `i` (in sorted order) at position
//!   `2n - 2 - i`, and fill `tree[k] = hash_pair(tree[2k + 1], tree[2k + 2])` for `k` from
//!   `n - 2` down to `0`; the root is `tree[0]`. A proof is the sibling of each node on the way
//!   from the leaf to the root (`sibling(k) = k - 1` if `k` is even, `k + 1` if odd).
//! * claim indices must be unique; an empty tree is an error (nothing to claim).
//!
//! Solidity side: `MerkleProof.verify(proof, root, leaf)` with
//! `leaf = keccak256(bytes.concat(keccak256(abi.encode(index, account, amount))))`.

use sha3::{Digest as _, Keccak256};

use crate::bytes::Hash32;
use crate::error::{CoreError, Result};

/// keccak256 of `data`.
pub fn keccak256(data: &[u8]) -> Hash32 {
    Hash32(Keccak256::digest(data).into())
}

/// A 20-byte Ethereum address; text form `0x` + 40 hex characters. On input, all lowercase
/// or all uppercase hex is accepted as is, and mixed case must be a valid EIP-55 checksum (so
/// a mistyped checksummed address is refused before money is sent to it); output is
/// lowercase, [`EthAddress::to_checksum`] gives the EIP-55 form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EthAddress(pub [u8; 20]);

impl EthAddress {
    /// Parses `0x` + 40 hex characters.
    ///
    /// # Errors
    /// `InvalidHex` when the prefix, length or digits are wrong, or when mixed case is not
    /// the address's EIP-55 checksum.
    pub fn parse(s: &str) -> Result<Self> {
        let body = s.strip_prefix("0x").ok_or_else(|| CoreError::InvalidHex {
            field: "address",
            reason: "an address starts with 0x".into(),
        })?;
        if body.len() != 40 || !body.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CoreError::InvalidHex {
                field: "address",
                reason: "expected 0x followed by 40 hex characters".into(),
            });
        }
        let mut out = [0u8; 20];
        hex::decode_to_slice(body, &mut out).map_err(|e| CoreError::InvalidHex {
            field: "address",
            reason: e.to_string(),
        })?;
        let a = Self(out);
        let lower = body.bytes().any(|b| b.is_ascii_lowercase());
        let upper = body.bytes().any(|b| b.is_ascii_uppercase());
        if lower && upper && a.to_checksum()[2..] != *body {
            return Err(CoreError::InvalidHex {
                field: "address",
                reason: "the mixed-case address fails its EIP-55 checksum (a typo?); give \
                         the checksummed address, or all lowercase to skip the check"
                    .into(),
            });
        }
        Ok(a)
    }

    /// The EIP-55 mixed-case checksum form: hex digit `i` is upper case when nibble `i` of
    /// keccak256 of the lowercase hex text is >= 8 (EIP-55, "Specification").
    pub fn to_checksum(&self) -> String {
        let lower = hex::encode(self.0);
        let h = keccak256(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let nibble = (h.0[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 0x0f;
            out.push(if nibble >= 8 { c.to_ascii_uppercase() } else { c });
        }
        out
    }
}

impl std::fmt::Display for EthAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl std::fmt::Debug for EthAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EthAddress(0x{})", hex::encode(self.0))
    }
}

impl std::str::FromStr for EthAddress {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl serde::Serialize for EthAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for EthAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One payout: `amount` (token base units) claimable by `account` at claim `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutEntry {
    /// Claim index (bit in the claimed bitmap).
    pub index: u64,
    /// Receiving account.
    pub account: EthAddress,
    /// Amount; JSON: decimal string (it can exceed 2^53).
    #[serde(with = "u128_string")]
    pub amount: u128,
}

mod u128_string {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
            return Err(D::Error::custom("amount must be a canonical decimal string"));
        }
        s.parse().map_err(D::Error::custom)
    }
}

impl PayoutEntry {
    /// `abi.encode(uint256 index, address account, uint256 amount)`: 96 bytes.
    pub fn abi_encode(&self) -> [u8; 96] {
        let mut out = [0u8; 96];
        out[24..32].copy_from_slice(&self.index.to_be_bytes());
        out[44..64].copy_from_slice(&self.account.0);
        out[80..96].copy_from_slice(&self.amount.to_be_bytes());
        out
    }

    /// The double-hashed leaf.
    pub fn leaf(&self) -> Hash32 {
        keccak256(&keccak256(&self.abi_encode()).0)
    }
}

/// `keccak256(min(a, b) || max(a, b))`.
pub fn hash_pair(a: &Hash32, b: &Hash32) -> Hash32 {
    let (lo, hi) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(&lo.0);
    buf[32..].copy_from_slice(&hi.0);
    keccak256(&buf)
}

/// OpenZeppelin `MerkleProof.processProof`: the root implied by `leaf` and `proof`.
pub fn process_proof(leaf: &Hash32, proof: &[Hash32]) -> Hash32 {
    proof.iter().fold(*leaf, |acc, p| hash_pair(&acc, p))
}

/// OpenZeppelin `MerkleProof.verify` for a payout entry.
pub fn verify_payout(root: &Hash32, entry: &PayoutEntry, proof: &[Hash32]) -> bool {
    process_proof(&entry.leaf(), proof) == *root
}

/// A payout tree over unique claim indices.
#[derive(Debug, Clone)]
pub struct PayoutTree {
    tree: Vec<Hash32>,
    /// Entries in input order.
    entries: Vec<PayoutEntry>,
    /// For each entry (input order), its position in `tree`.
    positions: Vec<usize>,
}

impl PayoutTree {
    /// Builds the tree (see the module docs for the exact layout).
    pub fn build(entries: Vec<PayoutEntry>) -> Result<Self> {
        if entries.is_empty() {
            return Err(CoreError::EmptyTree);
        }
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        for e in &entries {
            if !seen.insert(e.index) {
                return Err(CoreError::DuplicatePayoutIndex { index: e.index });
            }
        }
        let n = entries.len();
        let mut hashed: Vec<(Hash32, usize)> = entries.iter().enumerate().map(|(i, e)| (e.leaf(), i)).collect();
        // Stable sort by hash; ties (identical entries cannot occur: indices are unique).
        hashed.sort_by_key(|a| a.0);
        let len = 2 * n - 1;
        let mut tree = vec![Hash32([0; 32]); len];
        let mut positions = vec![0usize; n];
        for (sorted_i, (h, input_i)) in hashed.iter().enumerate() {
            let pos = len - 1 - sorted_i;
            tree[pos] = *h;
            positions[*input_i] = pos;
        }
        for k in (0..n - 1).rev() {
            tree[k] = hash_pair(&tree[2 * k + 1], &tree[2 * k + 2]);
        }
        Ok(Self {
            tree,
            entries,
            positions,
        })
    }

    /// The root (for the settlement contract).
    pub fn root(&self) -> Hash32 {
        self.tree[0]
    }

    /// Entries in input order.
    pub fn entries(&self) -> &[PayoutEntry] {
        &self.entries
    }

    /// The proof for the entry at input position `position`.
    pub fn proof_at(&self, position: usize) -> Result<Vec<Hash32>> {
        let mut k = *self.positions.get(position).ok_or(CoreError::IndexOutOfRange {
            index: position as u64,
            len: self.entries.len() as u64,
        })?;
        let mut proof = Vec::new();
        while k > 0 {
            let sib = if k % 2 == 0 { k - 1 } else { k + 1 };
            proof.push(self.tree[sib]);
            k = (k - 1) / 2;
        }
        Ok(proof)
    }

    /// The proof for the entry with claim index `claim_index`.
    pub fn proof_for_index(&self, claim_index: u64) -> Result<Vec<Hash32>> {
        let pos = self
            .entries
            .iter()
            .position(|e| e.index == claim_index)
            .ok_or(CoreError::IndexOutOfRange {
                index: claim_index,
                len: self.entries.len() as u64,
            })?;
        self.proof_at(pos)
    }

    /// Every node of the array layout (root first), as OpenZeppelin's `tree` field.
    pub fn nodes(&self) -> &[Hash32] {
        &self.tree
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip55_checksums() {
        // The test vectors of EIP-55.
        for v in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let a = EthAddress::parse(v).unwrap();
            assert_eq!(a.to_checksum(), v);
            assert_eq!(EthAddress::parse(&v.to_lowercase()).unwrap(), a);
            assert_eq!(EthAddress::parse(&format!("0x{}", v[2..].to_uppercase())).unwrap(), a);
            // One letter's case flipped: refused, with the reason.
            let i = v[2..].find(|c: char| c.is_ascii_alphabetic()).unwrap() + 2;
            let mut bad: Vec<char> = v.chars().collect();
            bad[i] = if bad[i].is_ascii_uppercase() {
                bad[i].to_ascii_lowercase()
            } else {
                bad[i].to_ascii_uppercase()
            };
            let bad: String = bad.into_iter().collect();
            let e = EthAddress::parse(&bad).unwrap_err().to_string();
            assert!(e.contains("EIP-55"), "{e}");
        }
    }

    #[test]
    fn keccak_known_vector() {
        assert_eq!(
            keccak256(b"").to_hex(),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }

    #[test]
    fn abi_encoding_layout() {
        let e = PayoutEntry {
            index: 1,
            account: EthAddress([0x11; 20]),
            amount: 2,
        };
        let b = e.abi_encode();
        assert_eq!(b[31], 1);
        assert!(b[..31].iter().all(|&x| x == 0));
        assert!(b[32..44].iter().all(|&x| x == 0));
        assert!(b[44..64].iter().all(|&x| x == 0x11));
        assert_eq!(b[95], 2);
    }

    #[test]
    fn all_proofs_verify_and_others_fail() {
        for n in 1..=20u64 {
            let entries: Vec<PayoutEntry> = (0..n)
                .map(|i| PayoutEntry {
                    index: i,
                    account: EthAddress([i as u8 + 1; 20]),
                    amount: u128::from(i) * 1_000 + 7,
                })
                .collect();
            let t = PayoutTree::build(entries.clone()).unwrap();
            for (pos, e) in entries.iter().enumerate() {
                let p = t.proof_at(pos).unwrap();
                assert_eq!(p, t.proof_for_index(e.index).unwrap());
                assert!(verify_payout(&t.root(), e, &p));
                let mut more = *e;
                more.amount += 1;
                assert!(!verify_payout(&t.root(), &more, &p));
                for (other_pos, o) in entries.iter().enumerate() {
                    if other_pos != pos {
                        assert!(!verify_payout(&t.root(), o, &p));
                    }
                }
            }
        }
    }

    #[test]
    fn duplicates_and_empty_are_refused() {
        assert!(matches!(PayoutTree::build(vec![]), Err(CoreError::EmptyTree)));
        let e = PayoutEntry {
            index: 3,
            account: EthAddress([1; 20]),
            amount: 1,
        };
        assert!(matches!(
            PayoutTree::build(vec![e, e]),
            Err(CoreError::DuplicatePayoutIndex { index: 3 })
        ));
    }

    #[test]
    fn address_parsing() {
        let a = EthAddress::parse("0x00000000000000000000000000000000000000ff").unwrap();
        assert_eq!(a.0[19], 0xff);
        assert_eq!(EthAddress::parse("0x00000000000000000000000000000000000000FF").unwrap(), a);
        // Mixed case is a checksum, and this one is wrong.
        assert!(EthAddress::parse("0x00000000000000000000000000000000000000Ff").is_err());
        assert_eq!(a.to_string(), "0x00000000000000000000000000000000000000ff");
        assert!(EthAddress::parse("00000000000000000000000000000000000000ff").is_err());
        assert!(EthAddress::parse("0x0000").is_err());
    }
}
