//! `Settlement`: roles (settler, guardian), escrow, posting built epochs, claims, cancellation,
//! and epoch / claim reads.

use alloy::primitives::{Address, U256};
use alloy::providers::DynProvider;
use alloy::sol_types::SolEvent;
use b3iq_core::payout::PayoutEntry;
use b3iq_core::Hash32;
use b3iq_protocol::settlement::ClaimFile;
use b3iq_protocol::EpochSettlement;

use super::{ChainClient, Deployment, TxOutcome};
use crate::bindings::{settlement, Settlement};
use crate::convert::{b256, to_address};
use crate::error::{ChainError, Result};

/// A posted epoch.
#[derive(Debug, Clone)]
pub struct PostedEpoch {
    /// The post transaction.
    pub outcome: TxOutcome,
    /// Block timestamp of the post (claims open `challengeWindow` seconds later).
    pub posted_at: u64,
}

/// What [`ChainClient::ensure_epoch_posted`] found or did.
#[derive(Debug, Clone)]
pub enum EpochPost {
    /// This call posted the epoch.
    Posted(Box<PostedEpoch>),
    /// The chain already held this epoch with the same payout root (an earlier post, maybe one
    /// whose answer was lost or whose sender crashed): nothing was sent.
    AlreadyPosted {
        /// Block timestamp of the earlier post.
        posted_at: u64,
    },
}

impl EpochPost {
    /// Block timestamp of the post (claims open `challengeWindow` seconds later).
    pub fn posted_at(&self) -> u64 {
        match self {
            Self::Posted(p) => p.posted_at,
            Self::AlreadyPosted { posted_at } => *posted_at,
        }
    }
}

/// What `postEpoch` commits: the parts of a built epoch (from an [`EpochSettlement`], or from
/// its stored claim file, so a restarted settler posts exactly what it built before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochCommit {
    /// Epoch id.
    pub epoch_id: u64,
    /// blake3 receipt root.
    pub receipt_root: Hash32,
    /// keccak payout root.
    pub payout_root: Hash32,
    /// Sum of the leaves, token base units.
    pub total_payout: u128,
    /// Accepted receipts.
    pub receipt_count: u64,
    /// Payout leaves.
    pub leaf_count: u64,
}

impl From<&EpochSettlement> for EpochCommit {
    fn from(e: &EpochSettlement) -> Self {
        Self { epoch_id: e.epoch_id, receipt_root: e.receipt_root, payout_root: e.payout_root, total_payout: e.total_payout, receipt_count: e.receipt_count, leaf_count: e.leaf_count() }
    }
}

impl TryFrom<&ClaimFile> for EpochCommit {
    type Error = ChainError;
    fn try_from(f: &ClaimFile) -> Result<Self> {
        let total_payout = f.total_payout.parse::<u128>().map_err(|e| ChainError::Unexpected { action: "claim file".into(), message: format!("total_payout {:?}: {e}", f.total_payout) })?;
        Ok(Self { epoch_id: f.epoch_id, receipt_root: f.receipt_root, payout_root: f.payout_root, total_payout, receipt_count: f.receipt_count, leaf_count: f.leaf_count })
    }
}

/// Top 192 bits of a payout root: the part `Settlement` stores (its low 64 bits hold the post
/// time).
fn root_prefix(word: &[u8; 32]) -> [u8; 24] {
    let mut p = [0u8; 24];
    p.copy_from_slice(&word[..24]);
    p
}

impl ChainClient {
    /// Settlement handle.
    pub fn settlement(&self, d: &Deployment) -> Settlement::SettlementInstance<DynProvider> {
        Settlement::new(d.settlement, self.provider.clone())
    }

    /// Grants the settler role on Settlement.
    pub async fn grant_settler(&self, d: &Deployment, who: Address) -> Result<TxOutcome> {
        let s = self.settlement(d);
        let role = self
            .call("Settlement.SETTLER_ROLE", s.SETTLER_ROLE())
            .await?;
        self.send("Settlement.grantRole", s.grantRole(role, who))
            .await
    }

    /// Grants the guardian role (may cancel epochs during the challenge window).
    pub async fn grant_guardian(&self, d: &Deployment, who: Address) -> Result<TxOutcome> {
        let s = self.settlement(d);
        let role = self
            .call("Settlement.GUARDIAN_ROLE", s.GUARDIAN_ROLE())
            .await?;
        self.send("Settlement.grantRole", s.grantRole(role, who))
            .await
    }

    /// Adds `amount` to the payout escrow (approve Settlement first).
    pub async fn fund_escrow(&self, d: &Deployment, amount: U256) -> Result<TxOutcome> {
        self.send("Settlement.fund", self.settlement(d).fund(amount))
            .await
    }

    /// Posts a built epoch (settler wallet) and returns the reference claimers need.
    pub async fn post_epoch(&self, d: &Deployment, epoch: &EpochSettlement) -> Result<PostedEpoch> {
        self.post_epoch_parts(
            d,
            epoch.epoch_id,
            &epoch.receipt_root,
            &epoch.payout_root,
            epoch.total_payout,
            epoch.receipt_count,
            epoch.leaf_count(),
        )
        .await
    }

    /// Posts an epoch from its parts (settler wallet).
    #[allow(clippy::too_many_arguments)]
    pub async fn post_epoch_parts(
        &self,
        d: &Deployment,
        epoch_id: u64,
        receipt_root: &Hash32,
        payout_root: &Hash32,
        total_payout: u128,
        receipt_count: u64,
        leaf_count: u64,
    ) -> Result<PostedEpoch> {
        let s = self.settlement(d);
        let outcome = self
            .send(
                "Settlement.postEpoch",
                s.postEpoch(
                    epoch_id,
                    b256(receipt_root),
                    b256(payout_root),
                    U256::from(total_payout),
                    receipt_count,
                    leaf_count,
                ),
            )
            .await?;
        let event = outcome
            .receipt
            .inner
            .logs()
            .iter()
            .find_map(|l| settlement::Settlement::EpochPosted::decode_log_data(l.data()).ok())
            .ok_or_else(|| ChainError::MissingEvent {
                action: "Settlement.postEpoch".into(),
                tx_hash: outcome.tx_hash.to_string(),
                event: "EpochPosted",
            })?;
        if event.payoutRoot != b256(payout_root) || event.epochId != epoch_id {
            return Err(ChainError::Unexpected {
                action: "Settlement.postEpoch".into(),
                message: format!("EpochPosted event does not match the posted epoch {epoch_id}"),
            });
        }
        Ok(PostedEpoch {
            posted_at: event.postedAt,
            outcome,
        })
    }

    /// The stored commitment of an epoch: top 192 bits of its payout root and, in the low 64
    /// bits, its post time; all zero when not posted (or cancelled).
    pub async fn epoch_commitment(&self, d: &Deployment, epoch_id: u64) -> Result<[u8; 32]> {
        let c = self
            .call(
                "Settlement.epochCommitment",
                self.settlement(d).epochCommitment(epoch_id),
            )
            .await?;
        Ok(c.0)
    }

    /// Unreserved escrow, token base units.
    pub async fn escrow_available(&self, d: &Deployment) -> Result<U256> {
        self.call(
            "Settlement.escrowAvailable",
            self.settlement(d).escrowAvailable(),
        )
        .await
    }

    /// Posts `epoch` exactly once, whatever happened before: reads the chain's commitment for
    /// the epoch id first and sends nothing when the same payout root is already there
    /// ([`EpochPost::AlreadyPosted`]). When the escrow does not cover the epoch, first approves
    /// and funds the difference from this wallet (it must hold the tokens). When the post's
    /// answer is lost ([`ChainError::SendOutcomeUnknown`], a receipt timeout), the chain is read
    /// again before anything is resent, so a retry can never post twice.
    ///
    /// # Errors
    /// [`ChainError::Unexpected`] when the chain holds a different payout root under this
    /// epoch id (never overwritten); the send and read errors of [`ChainClient::send`] and
    /// [`ChainClient::call`] otherwise.
    pub async fn ensure_epoch_posted(
        &self,
        d: &Deployment,
        epoch: &EpochCommit,
    ) -> Result<EpochPost> {
        if let Some(done) = self.posted_state(d, epoch).await? {
            return Ok(done);
        }
        let total = U256::from(epoch.total_payout);
        let available = self.escrow_available(d).await?;
        if available < total {
            let missing = total - available;
            self.approve(d, d.settlement, missing).await?;
            self.fund_escrow(d, missing).await?;
        }
        match self.post_epoch_parts(d, epoch.epoch_id, &epoch.receipt_root, &epoch.payout_root, epoch.total_payout, epoch.receipt_count, epoch.leaf_count).await {
            Ok(p) => Ok(EpochPost::Posted(Box::new(p))),
            Err(e) => {
                // The post may have landed (a lost answer, a race with another sender): trust
                // the chain, not the error.
                if let Some(done) = self.posted_state(d, epoch).await? {
                    return Ok(done);
                }
                Err(e)
            }
        }
    }

    /// `Some(AlreadyPosted)` when the chain holds `epoch`'s payout root, `None` when the epoch
    /// id is free, an error when it holds another root.
    async fn posted_state(
        &self,
        d: &Deployment,
        epoch: &EpochCommit,
    ) -> Result<Option<EpochPost>> {
        let stored = self.epoch_commitment(d, epoch.epoch_id).await?;
        if stored == [0u8; 32] {
            return Ok(None);
        }
        if root_prefix(&stored) != root_prefix(&epoch.payout_root.0) {
            return Err(ChainError::Unexpected {
                action: "Settlement.postEpoch".into(),
                message: format!(
                    "epoch {} is already posted with another payout root (0x{}...); refusing to post a second one",
                    epoch.epoch_id,
                    hex::encode(&stored[..24])
                ),
            });
        }
        let mut at = [0u8; 8];
        at.copy_from_slice(&stored[24..]);
        Ok(Some(EpochPost::AlreadyPosted {
            posted_at: u64::from_be_bytes(at),
        }))
    }

    /// Claims one payout leaf (any wallet may send it; the tokens go to `entry.account`).
    pub async fn claim(
        &self,
        d: &Deployment,
        epoch_id: u64,
        entry: &PayoutEntry,
        proof: &[Hash32],
    ) -> Result<TxOutcome> {
        self.send(
            "Settlement.claim",
            self.settlement(d).claim(
                epoch_id,
                U256::from(entry.index),
                to_address(&entry.account),
                U256::from(entry.amount),
                proof.iter().map(b256).collect(),
            ),
        )
        .await
    }

    /// Guardian cancels an epoch during its challenge window, refunding `total_payout` (from its
    /// `EpochPosted` event) to the escrow.
    pub async fn cancel_epoch(
        &self,
        d: &Deployment,
        epoch_id: u64,
        total_payout: u128,
    ) -> Result<TxOutcome> {
        self.send(
            "Settlement.cancelEpoch",
            self.settlement(d)
                .cancelEpoch(epoch_id, U256::from(total_payout)),
        )
        .await
    }

    /// Block timestamp at which an epoch was posted (0 if not posted or cancelled).
    pub async fn epoch_posted_at(&self, d: &Deployment, epoch_id: u64) -> Result<u64> {
        self.call("Settlement.postedAt", self.settlement(d).postedAt(epoch_id))
            .await
    }

    /// Whether a leaf was claimed.
    pub async fn is_claimed(&self, d: &Deployment, epoch_id: u64, index: u64) -> Result<bool> {
        self.call(
            "Settlement.isClaimed",
            self.settlement(d).isClaimed(epoch_id, U256::from(index)),
        )
        .await
    }
}
