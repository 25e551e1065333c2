//! Payouts on the wire: a node naming the address its earnings are paid to, and the control
//! plane's answer to "what can this address claim" (each posted epoch's leaf and Merkle proof).
//!
//! * `POST /v1/node/payout-address` ([`PayoutAddressRequest`], signed by the node key) ->
//!   [`PayoutAddressAck`]. The address is an Ethereum account (`0x` + 40 hex); the node need not
//!   hold its key (`b3iqd wallet set-address`): anyone may send a claim, the tokens go to the
//!   leaf's account.
//! * `GET /v1/payouts/{address}` -> [`AccountPayouts`]: public (an address's leaves are in the
//!   public claim files anyway).

use b3iq_core::payout::{EthAddress, PayoutEntry};
use b3iq_core::{Hash32, NodeId, NodeKey, NodePublicKey, Signature};

use crate::error::{ProtocolError, Result};

/// Domain tag of [`PayoutAddressRequest::signing_message`].
pub const PAYOUT_ADDRESS_TAG: &[u8] = b"b3iq/cp/payout-address/v1";

/// Node -> control plane: pay this node's host share to `address` from the next epoch on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutAddressRequest {
    /// The node.
    pub node_id: NodeId,
    /// Its public key.
    pub public_key: NodePublicKey,
    /// The payout account.
    pub address: EthAddress,
    /// Send time, unix ms (the control plane refuses one more than 5 minutes away from its clock).
    pub sent_at_ms: u64,
    /// Ed25519 signature over [`PayoutAddressRequest::signing_message`].
    pub signature: Signature,
}

impl PayoutAddressRequest {
    /// Signs a request.
    pub fn sign(key: &NodeKey, address: EthAddress, now_ms: u64) -> Self {
        let mut r = Self { node_id: key.node_id(), public_key: key.public(), address, sent_at_ms: now_ms, signature: Signature([0; 64]) };
        r.signature = key.sign_raw(&r.signing_message());
        r
    }

    /// `b"b3iq/cp/payout-address/v1" || node_id (32) || public_key (32) || address (20) ||
    /// sent_at_ms (u64 BE)`.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(PAYOUT_ADDRESS_TAG.len() + 92);
        m.extend_from_slice(PAYOUT_ADDRESS_TAG);
        m.extend_from_slice(&self.node_id.0);
        m.extend_from_slice(self.public_key.as_bytes());
        m.extend_from_slice(&self.address.0);
        m.extend_from_slice(&self.sent_at_ms.to_be_bytes());
        m
    }

    /// Checks that the node id derives from the key and the signature; returns the node id.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidMessage`] naming `node_id` or `signature`.
    pub fn verify(&self) -> Result<NodeId> {
        if self.public_key.node_id() != self.node_id {
            return Err(ProtocolError::InvalidMessage { field: "node_id", reason: format!("payout address: {} is not derived from the given public key", self.node_id) });
        }
        if !self.public_key.verify_raw(&self.signing_message(), &self.signature) {
            return Err(ProtocolError::InvalidMessage { field: "signature", reason: "payout address: Ed25519 signature does not verify".into() });
        }
        Ok(self.node_id)
    }
}

/// Control plane -> node: the address is recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutAddressAck {
    /// The recorded payout account.
    pub address: EthAddress,
}

/// What an address can claim: one entry per posted epoch that pays it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountPayouts {
    /// The account.
    pub account: EthAddress,
    /// Chain id of the settlement contract.
    pub chain_id: u64,
    /// The `Settlement` contract.
    pub settlement: EthAddress,
    /// Posted epochs paying this account, oldest first.
    pub epochs: Vec<EpochPayout>,
}

/// One posted epoch's leaf for an account, with its proof.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochPayout {
    /// Epoch id.
    pub epoch_id: u64,
    /// Block timestamp of the post, seconds (claims open `challengeWindow` seconds later).
    pub posted_at: u64,
    /// The leaf (index, account, amount in token base units).
    #[serde(flatten)]
    pub entry: PayoutEntry,
    /// Sibling hashes from the leaf up.
    pub proof: Vec<Hash32>,
}
