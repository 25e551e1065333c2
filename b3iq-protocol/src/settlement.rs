//! Settlement builder: signed receipts -> epoch -> totals -> payout leaves -> payout tree.
//!
//! The pipeline, all deterministic (the same receipts in any order give the same roots):
//!
//! 1. [`EpochBuilder::add`] verifies every receipt's Ed25519 signature (self-certified: the
//!    signer key must derive the receipt's node id), rejects receipts that were not served in
//!    network mode or that started outside the epoch window `[start_ms, end_ms)`, rejects
//!    receipts of nodes without a payout account, and drops exact duplicates (same receipt id).
//!    If a node signed two different receipts for the same request id, the one with the
//!    smaller receipt id is kept and the pair is recorded in [`EpochSettlement::conflicts`]
//!    (it is dispute evidence).
//! 2. [`EpochBuilder::build`] sums prices per (node, model), splits each sum with the core
//!    [`SplitPolicy`] (host 70 / publisher 10 / protocol 15 / verifier 5, remainder to the
//!    host), credits host parts to the node's payout account, publisher parts to the model's
//!    royalty recipient (or where the policy says when the model has no publisher), and the
//!    protocol and verifier parts to their accounts.
//! 3. Amounts per account (micro-credits) are converted to token base units with
//!    `token_units_per_micro_credit`; accounts are sorted by address and numbered 0..n: these
//!    are the payout leaves (zero amounts get no leaf). The core [`PayoutTree`] gives the root
//!    and the proofs that `Settlement.claim` checks.
//! 4. The receipt root is the core blake3 Merkle root over the accepted receipt ids, in
//!    ascending receipt-id order.

use std::collections::{BTreeMap, HashMap};

use b3iq_core::merkle::merkle_root;
use b3iq_core::payout::{EthAddress, PayoutEntry, PayoutTree};
use b3iq_core::receipt::{ReceiptId, RequestId, SignedReceipt};
use b3iq_core::split::SplitPolicy;
use b3iq_core::{Hash32, NodeId, OperatingMode};

use crate::error::{ProtocolError, Result};

/// Who gets paid: node payout accounts, model royalty recipients, protocol and verifier pools.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payees {
    /// Payout account (operator wallet) per registered node.
    pub hosts: BTreeMap<NodeId, EthAddress>,
    /// Royalty recipient per model id; a model not listed has no publisher.
    pub publishers: BTreeMap<String, EthAddress>,
    /// Protocol treasury.
    pub protocol: EthAddress,
    /// Verifier pool.
    pub verifier: EthAddress,
}

/// Parameters of one epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochConfig {
    /// Epoch id (the on-chain key).
    pub epoch_id: u64,
    /// First millisecond of the epoch (inclusive), unix ms.
    pub start_ms: u64,
    /// End of the epoch (exclusive), unix ms.
    pub end_ms: u64,
    /// Token base units per micro-credit (e.g. `10^12` for an 18-decimal token at 1 token per credit).
    pub token_units_per_micro_credit: u128,
    /// Split policy (default 70/10/15/5, no-publisher slot to the protocol).
    pub policy: SplitPolicy,
}

impl EpochConfig {
    fn validate(&self) -> Result<()> {
        if self.end_ms <= self.start_ms {
            return Err(ProtocolError::InvalidEpochConfig(format!(
                "end_ms ({}) must be after start_ms ({})",
                self.end_ms, self.start_ms
            )));
        }
        if self.token_units_per_micro_credit == 0 {
            return Err(ProtocolError::InvalidEpochConfig(
                "token_units_per_micro_credit must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What [`EpochBuilder::add`] did with an accepted receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// New receipt, counted.
    New,
    /// Exact duplicate of a receipt already in the epoch; dropped.
    Duplicate,
    /// Same node and request id as a different receipt; the smaller receipt id is kept.
    Conflict,
}

/// Summary of a batch given to [`EpochBuilder::add_all`].
#[derive(Debug, Default)]
pub struct BatchReport {
    /// Receipts newly accepted.
    pub accepted: u64,
    /// Exact duplicates dropped.
    pub duplicates: u64,
    /// Conflicting receipts (same request, different content).
    pub conflicts: u64,
    /// Rejected receipts: position in the batch and why.
    pub rejected: Vec<(usize, ProtocolError)>,
}

/// A receipt whose Ed25519 signature is known to be valid (self-certified: the signer key
/// derives the receipt's node id), with its receipt id computed once.
///
/// Signature checks dominate an epoch build (about 118 of 121 s for 1,000,000 receipts on one
/// core), so they happen once: the control plane checks each receipt when its upload is
/// accepted and builds the epoch from the stored rows with [`VerifiedReceipt::assume_verified`];
/// a builder fed from outside uses [`VerifiedReceipt::verify`] or
/// [`VerifiedReceipt::verify_all`] (every core).
#[derive(Debug, Clone)]
pub struct VerifiedReceipt {
    receipt: SignedReceipt,
    receipt_id: ReceiptId,
}

impl VerifiedReceipt {
    /// Checks the signature.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidReceiptSignature`] naming the receipt id.
    pub fn verify(receipt: SignedReceipt) -> Result<Self> {
        let receipt_id = receipt.receipt_id();
        receipt
            .verify_self_certified()
            .map_err(|source| ProtocolError::InvalidReceiptSignature { receipt_id, source })?;
        Ok(Self {
            receipt,
            receipt_id,
        })
    }

    /// Wraps a receipt whose signature the caller checked before: only for receipts read back
    /// from a store that admits a receipt only after [`SignedReceipt::verify_self_certified`]
    /// (the control plane's receipt upload). Anything else goes through [`Self::verify`].
    pub fn assume_verified(receipt: SignedReceipt) -> Self {
        let receipt_id = receipt.receipt_id();
        Self {
            receipt,
            receipt_id,
        }
    }

    /// Checks every signature, spread over [`std::thread::available_parallelism`] threads; the
    /// results are in input order.
    pub fn verify_all(receipts: Vec<SignedReceipt>) -> Vec<Result<Self>> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads <= 1 || receipts.len() < 1024 {
            return receipts.into_iter().map(Self::verify).collect();
        }
        let chunk = receipts.len().div_ceil(threads);
        let mut chunks: Vec<Vec<SignedReceipt>> = Vec::with_capacity(threads);
        let mut rest = receipts;
        while rest.len() > chunk {
            let tail = rest.split_off(chunk);
            chunks.push(rest);
            rest = tail;
        }
        chunks.push(rest);
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|c| s.spawn(move || c.into_iter().map(Self::verify).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    }

    /// The receipt id.
    pub fn receipt_id(&self) -> ReceiptId {
        self.receipt_id
    }

    /// The signed receipt.
    pub fn receipt(&self) -> &SignedReceipt {
        &self.receipt
    }
}

/// What the builder keeps of an accepted receipt.
#[derive(Debug, Clone, Copy)]
struct Kept {
    node_id: NodeId,
    /// Index into `EpochBuilder::models`.
    model: u32,
    price_micro_credits: u64,
}

/// Collects the receipts of one epoch. See the module docs.
#[derive(Debug)]
pub struct EpochBuilder {
    config: EpochConfig,
    payees: Payees,
    /// Accepted receipts, reduced to what the build needs (a few dozen bytes each instead of
    /// the signed bytes, so a million-receipt epoch stays small and fast).
    receipts: BTreeMap<ReceiptId, Kept>,
    /// Model ids, interned: `Kept::model` indexes this.
    models: Vec<String>,
    model_index: HashMap<String, u32>,
    by_request: HashMap<(NodeId, RequestId), ReceiptId>,
    conflicts: Vec<(ReceiptId, ReceiptId)>,
}

impl EpochBuilder {
    /// A builder for `config` paying `payees`.
    pub fn new(config: EpochConfig, payees: Payees) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            payees,
            receipts: BTreeMap::new(),
            models: Vec::new(),
            model_index: HashMap::new(),
            by_request: HashMap::new(),
            conflicts: Vec::new(),
        })
    }

    /// The epoch configuration.
    pub fn config(&self) -> &EpochConfig {
        &self.config
    }

    /// Receipts accepted so far.
    pub fn len(&self) -> usize {
        self.receipts.len()
    }

    /// True when no receipt was accepted.
    pub fn is_empty(&self) -> bool {
        self.receipts.is_empty()
    }

    /// Ids of the receipts accepted so far, ascending: the leaves of the receipt tree, in
    /// their order (a receipt's leaf index is its position here).
    pub fn receipt_ids(&self) -> impl Iterator<Item = &ReceiptId> {
        self.receipts.keys()
    }

    /// Verifies and adds one receipt. A rejected receipt changes nothing.
    pub fn add(&mut self, receipt: SignedReceipt) -> Result<Added> {
        self.add_verified(VerifiedReceipt::verify(receipt)?)
    }

    /// Adds a receipt whose signature was already checked (see [`VerifiedReceipt`]): the epoch
    /// rules (network mode, window, known host, duplicates, conflicts) still apply. A rejected
    /// receipt changes nothing.
    pub fn add_verified(&mut self, receipt: VerifiedReceipt) -> Result<Added> {
        let VerifiedReceipt {
            receipt,
            receipt_id,
        } = receipt;
        let body = receipt.body();
        if body.mode != OperatingMode::Network {
            return Err(ProtocolError::NotNetworkMode {
                receipt_id,
                mode: body.mode.as_str().to_string(),
            });
        }
        let c = &self.config;
        if body.started_at_ms < c.start_ms || body.started_at_ms >= c.end_ms {
            return Err(ProtocolError::OutsideEpoch {
                receipt_id,
                epoch_id: c.epoch_id,
                started_at_ms: body.started_at_ms,
                start_ms: c.start_ms,
                end_ms: c.end_ms,
            });
        }
        if !self.payees.hosts.contains_key(&body.node_id) {
            return Err(ProtocolError::UnknownHost {
                receipt_id,
                node_id: body.node_id.to_string(),
            });
        }
        if self.receipts.contains_key(&receipt_id) {
            return Ok(Added::Duplicate);
        }
        let model = match self.model_index.get(body.model_id.as_str()) {
            Some(&m) => m,
            None => {
                let m = u32::try_from(self.models.len()).map_err(|_| {
                    ProtocolError::AmountOverflow {
                        what: "model count",
                    }
                })?;
                self.models.push(body.model_id.clone());
                self.model_index.insert(body.model_id.clone(), m);
                m
            }
        };
        let kept = Kept {
            node_id: body.node_id,
            model,
            price_micro_credits: body.price_micro_credits,
        };
        let key = (body.node_id, body.request_id);
        if let Some(&existing) = self.by_request.get(&key) {
            let (keep, drop) = if receipt_id < existing {
                (receipt_id, existing)
            } else {
                (existing, receipt_id)
            };
            self.conflicts.push((keep, drop));
            if keep == receipt_id {
                self.receipts.remove(&existing);
                self.by_request.insert(key, receipt_id);
                self.receipts.insert(receipt_id, kept);
            }
            return Ok(Added::Conflict);
        }
        self.by_request.insert(key, receipt_id);
        self.receipts.insert(receipt_id, kept);
        Ok(Added::New)
    }

    /// Adds a batch; rejected receipts are reported, the rest are added. Signatures are checked
    /// on every available core ([`VerifiedReceipt::verify_all`]); the result does not depend on
    /// the number of threads.
    pub fn add_all(&mut self, receipts: impl IntoIterator<Item = SignedReceipt>) -> BatchReport {
        let verified = VerifiedReceipt::verify_all(receipts.into_iter().collect());
        self.add_results(verified)
    }

    /// Adds a batch of receipts already checked (see [`VerifiedReceipt`]), in order.
    pub fn add_all_verified(
        &mut self,
        receipts: impl IntoIterator<Item = VerifiedReceipt>,
    ) -> BatchReport {
        self.add_results(receipts.into_iter().map(Ok))
    }

    fn add_results(
        &mut self,
        receipts: impl IntoIterator<Item = Result<VerifiedReceipt>>,
    ) -> BatchReport {
        let mut report = BatchReport::default();
        for (i, r) in receipts.into_iter().enumerate() {
            match r.and_then(|r| self.add_verified(r)) {
                Ok(Added::New) => report.accepted += 1,
                Ok(Added::Duplicate) => report.duplicates += 1,
                Ok(Added::Conflict) => report.conflicts += 1,
                Err(e) => report.rejected.push((i, e)),
            }
        }
        report
    }

    /// Computes totals, payout leaves, the payout tree and both roots.
    pub fn build(self) -> Result<EpochSettlement> {
        let c = &self.config;
        // Totals per (node, model) in micro-credits: summed by model index, then keyed by the
        // model id (the split and the payout order depend on ids, not on arrival order).
        let mut per_node_model_ix: HashMap<(NodeId, u32), u64> = HashMap::new();
        let mut node_totals: BTreeMap<NodeId, u64> = BTreeMap::new();
        let overflow = || ProtocolError::AmountOverflow {
            what: "per-node total",
        };
        for k in self.receipts.values() {
            let slot = per_node_model_ix.entry((k.node_id, k.model)).or_insert(0);
            *slot = slot
                .checked_add(k.price_micro_credits)
                .ok_or_else(overflow)?;
        }
        let mut per_node_model: BTreeMap<(NodeId, String), u64> = BTreeMap::new();
        for ((node_id, model), total) in per_node_model_ix {
            per_node_model.insert((node_id, self.models[model as usize].clone()), total);
            let n = node_totals.entry(node_id).or_insert(0);
            *n = n.checked_add(total).ok_or_else(overflow)?;
        }
        // Split and credit accounts (micro-credits, u128 so sums cannot overflow).
        let mut per_account: BTreeMap<EthAddress, u128> = BTreeMap::new();
        let mut publisher_totals: BTreeMap<String, u128> = BTreeMap::new();
        let mut credit = |account: EthAddress, amount: u64| {
            if amount > 0 {
                *per_account.entry(account).or_insert(0) += u128::from(amount);
            }
        };
        let mut total_micro: u128 = 0;
        for ((node_id, model_id), total) in &per_node_model {
            let publisher = self.payees.publishers.get(model_id).copied();
            let split = c.policy.split(*total, publisher.is_some());
            total_micro += u128::from(*total);
            let host = self.payees.hosts[node_id];
            credit(host, split.host);
            match publisher {
                Some(p) => {
                    credit(p, split.publisher);
                    *publisher_totals.entry(model_id.clone()).or_insert(0) +=
                        u128::from(split.publisher);
                }
                None => debug_assert_eq!(split.publisher, 0),
            }
            credit(self.payees.protocol, split.protocol);
            credit(self.payees.verifier, split.verifier);
        }
        if total_micro == 0 {
            return Err(ProtocolError::EmptyEpoch {
                epoch_id: c.epoch_id,
                receipts: self.receipts.len() as u64,
            });
        }
        let mut entries = Vec::with_capacity(per_account.len());
        let mut total_payout: u128 = 0;
        for (index, (account, micro)) in per_account.iter().enumerate() {
            let amount = micro.checked_mul(c.token_units_per_micro_credit).ok_or(
                ProtocolError::AmountOverflow {
                    what: "token amount",
                },
            )?;
            total_payout =
                total_payout
                    .checked_add(amount)
                    .ok_or(ProtocolError::AmountOverflow {
                        what: "epoch total",
                    })?;
            entries.push(PayoutEntry {
                index: index as u64,
                account: *account,
                amount,
            });
        }
        let receipt_root = merkle_root(self.receipts.keys().map(|id| id.0));
        let tree = PayoutTree::build(entries)?;
        Ok(EpochSettlement {
            epoch_id: c.epoch_id,
            receipt_root,
            payout_root: tree.root(),
            total_payout,
            total_micro_credits: total_micro,
            receipt_count: self.receipts.len() as u64,
            node_totals,
            publisher_totals,
            conflicts: self.conflicts,
            tree,
        })
    }
}

/// A built epoch: what goes on chain, plus the leaves and proofs claimers need.
#[derive(Debug, Clone)]
pub struct EpochSettlement {
    /// Epoch id.
    pub epoch_id: u64,
    /// blake3 Merkle root over the accepted receipt ids.
    pub receipt_root: Hash32,
    /// keccak payout root (OpenZeppelin `MerkleProof`).
    pub payout_root: Hash32,
    /// Sum of all leaf amounts, token base units (what the escrow must reserve).
    pub total_payout: u128,
    /// Sum of accepted receipt prices, micro-credits.
    pub total_micro_credits: u128,
    /// Accepted receipts.
    pub receipt_count: u64,
    /// Micro-credits earned per node (before the split).
    pub node_totals: BTreeMap<NodeId, u64>,
    /// Publisher share per model, micro-credits.
    pub publisher_totals: BTreeMap<String, u128>,
    /// (kept, dropped) receipt ids of conflicting receipts for the same request.
    pub conflicts: Vec<(ReceiptId, ReceiptId)>,
    tree: PayoutTree,
}

impl EpochSettlement {
    /// The payout leaves, in claim-index order.
    pub fn entries(&self) -> &[PayoutEntry] {
        self.tree.entries()
    }

    /// Number of payout leaves.
    pub fn leaf_count(&self) -> u64 {
        self.tree.entries().len() as u64
    }

    /// The leaf paying `account`, if any.
    pub fn entry_for(&self, account: &EthAddress) -> Option<&PayoutEntry> {
        self.entries().iter().find(|e| &e.account == account)
    }

    /// The Merkle proof for claim index `index`.
    pub fn proof(&self, index: u64) -> Result<Vec<Hash32>> {
        // Leaves are numbered in input order, so the index is the position.
        Ok(self.tree.proof_at(index as usize)?)
    }

    /// The public claim file: every leaf with its proof (JSON for claimers and explorers).
    pub fn claim_file(&self) -> Result<ClaimFile> {
        let mut claims = Vec::with_capacity(self.entries().len());
        for e in self.entries() {
            claims.push(ClaimLeaf {
                entry: *e,
                proof: self.proof(e.index)?,
            });
        }
        Ok(ClaimFile {
            epoch_id: self.epoch_id,
            receipt_root: self.receipt_root,
            payout_root: self.payout_root,
            total_payout: self.total_payout.to_string(),
            receipt_count: self.receipt_count,
            leaf_count: self.leaf_count(),
            claims,
        })
    }
}

/// Public claim data of an epoch (no receipts, no private data: accounts, amounts, proofs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimFile {
    /// Epoch id.
    pub epoch_id: u64,
    /// blake3 receipt root.
    pub receipt_root: Hash32,
    /// keccak payout root.
    pub payout_root: Hash32,
    /// Total payout, decimal string (token base units).
    pub total_payout: String,
    /// Accepted receipts.
    pub receipt_count: u64,
    /// Leaves.
    pub leaf_count: u64,
    /// One entry per leaf.
    pub claims: Vec<ClaimLeaf>,
}

/// One leaf and its proof.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimLeaf {
    /// The leaf.
    #[serde(flatten)]
    pub entry: PayoutEntry,
    /// Sibling hashes from the leaf up.
    pub proof: Vec<Hash32>,
}
