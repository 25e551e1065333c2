//! `Disputes`: committee and arbiter roles (admin wallet), opening disputes, votes, appeals,
//! slash execution, dispute records.

use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use b3iq_core::{Hash32, NodeId};

use super::{ChainClient, Deployment, TxOutcome};
use crate::bindings::{disputes, Disputes};
use crate::convert::{b256, node_b256};
use crate::error::{ChainError, Result};

impl ChainClient {
    /// Disputes handle.
    pub fn disputes(&self, d: &Deployment) -> Disputes::DisputesInstance<DynProvider> {
        Disputes::new(d.disputes, self.provider.clone())
    }

    /// Adds a verifier committee member.
    pub async fn grant_verifier(&self, d: &Deployment, who: Address) -> Result<TxOutcome> {
        let c = self.disputes(d);
        let role = self
            .call("Disputes.VERIFIER_ROLE", c.VERIFIER_ROLE())
            .await?;
        self.send("Disputes.grantRole", c.grantRole(role, who))
            .await
    }

    /// Adds an appeal arbiter.
    pub async fn grant_arbiter(&self, d: &Deployment, who: Address) -> Result<TxOutcome> {
        let c = self.disputes(d);
        let role = self.call("Disputes.ARBITER_ROLE", c.ARBITER_ROLE()).await?;
        self.send("Disputes.grantRole", c.grantRole(role, who))
            .await
    }

    /// Opens a dispute (approve Disputes for the bond first); returns the dispute id.
    pub async fn open_dispute(
        &self,
        d: &Deployment,
        node: &NodeId,
        epoch_id: u64,
        evidence_hash: &Hash32,
        slash_amount: U256,
    ) -> Result<(U256, TxOutcome)> {
        let outcome = self
            .send(
                "Disputes.open",
                self.disputes(d)
                    .open(node_b256(node), epoch_id, b256(evidence_hash), slash_amount),
            )
            .await?;
        let id = outcome
            .receipt
            .inner
            .logs()
            .iter()
            .find_map(|l| disputes::Disputes::DisputeOpened::decode_log_data(l.data()).ok())
            .map(|e| e.disputeId)
            .ok_or_else(|| ChainError::MissingEvent {
                action: "Disputes.open".into(),
                tx_hash: outcome.tx_hash.to_string(),
                event: "DisputeOpened",
            })?;
        Ok((id, outcome))
    }

    /// A committee member's vote.
    pub async fn vote_dispute(
        &self,
        d: &Deployment,
        dispute_id: U256,
        uphold: bool,
    ) -> Result<TxOutcome> {
        self.send("Disputes.vote", self.disputes(d).vote(dispute_id, uphold))
            .await
    }

    /// The node operator appeals an upheld dispute.
    pub async fn appeal_dispute(&self, d: &Deployment, dispute_id: U256) -> Result<TxOutcome> {
        self.send("Disputes.appeal", self.disputes(d).appeal(dispute_id))
            .await
    }

    /// The arbiter decides an appeal.
    pub async fn decide_appeal(
        &self,
        d: &Deployment,
        dispute_id: U256,
        overturn: bool,
    ) -> Result<TxOutcome> {
        self.send(
            "Disputes.decideAppeal",
            self.disputes(d).decideAppeal(dispute_id, overturn),
        )
        .await
    }

    /// Executes the slash of an upheld dispute after its appeal window.
    pub async fn execute_slash(&self, d: &Deployment, dispute_id: U256) -> Result<TxOutcome> {
        self.send(
            "Disputes.executeSlash",
            self.disputes(d).executeSlash(dispute_id),
        )
        .await
    }

    /// A dispute record.
    pub async fn dispute(
        &self,
        d: &Deployment,
        dispute_id: U256,
    ) -> Result<disputes::Disputes::Dispute> {
        self.call(
            "Disputes.getDispute",
            self.disputes(d).getDispute(dispute_id),
        )
        .await
    }

    /// Whether `who` has voted on a dispute.
    pub async fn has_voted(&self, d: &Deployment, dispute_id: U256, who: Address) -> Result<bool> {
        self.call("Disputes.hasVoted", self.disputes(d).hasVoted(dispute_id, who))
            .await
    }

    /// The dispute bond (token base units) `Disputes.open` takes from the challenger.
    pub async fn dispute_bond(&self, d: &Deployment) -> Result<U256> {
        self.call("Disputes.bondAmount", self.disputes(d).bondAmount())
            .await
    }

    /// Every `DisputeOpened` event (oldest first), only those against `node` when given: what
    /// the chain says was opened, read before opening again (a send that timed out, or one
    /// sent just before a crash) and by a node listing the disputes against it.
    pub async fn disputes_opened(
        &self,
        d: &Deployment,
        node: Option<&NodeId>,
    ) -> Result<Vec<disputes::Disputes::DisputeOpened>> {
        let mut filter = Filter::new()
            .address(d.disputes)
            .event_signature(disputes::Disputes::DisputeOpened::SIGNATURE_HASH)
            .from_block(0);
        if let Some(n) = node {
            filter = filter.topic2(node_b256(n));
        }
        let logs = self
            .with_retries("eth_getLogs", || async { self.provider.get_logs(&filter).await })
            .await?;
        Ok(logs
            .iter()
            .filter_map(|l| disputes::Disputes::DisputeOpened::decode_log_data(l.data()).ok())
            .collect())
    }
}
