//! `NodeRegistry`: register, update and deregister nodes with attester-signed EIP-712
//! attestations (see [`crate::attestation`]), read node records and attestation nonces.

use alloy::primitives::{Bytes, U256};
use alloy::providers::DynProvider;
use b3iq_core::NodeId;

use super::{ChainClient, Deployment, TxOutcome};
use crate::bindings::{node_registry, NodeRegistry};
use crate::convert::node_b256;
use crate::error::Result;

impl ChainClient {
    /// NodeRegistry handle.
    pub fn node_registry(&self, d: &Deployment) -> NodeRegistry::NodeRegistryInstance<DynProvider> {
        NodeRegistry::new(d.node_registry, self.provider.clone())
    }

    /// Registers a node with an attester-signed attestation (sent by the operator wallet).
    pub async fn register_node(
        &self,
        d: &Deployment,
        attestation: node_registry::NodeRegistry::Attestation,
        signature: Bytes,
    ) -> Result<TxOutcome> {
        self.send(
            "NodeRegistry.register",
            self.node_registry(d).register(attestation, signature),
        )
        .await
    }

    /// Updates a node with a fresh attestation.
    pub async fn update_node(
        &self,
        d: &Deployment,
        attestation: node_registry::NodeRegistry::Attestation,
        signature: Bytes,
    ) -> Result<TxOutcome> {
        self.send(
            "NodeRegistry.update",
            self.node_registry(d).update(attestation, signature),
        )
        .await
    }

    /// Deregisters a node (operator only).
    pub async fn deregister_node(&self, d: &Deployment, node: &NodeId) -> Result<TxOutcome> {
        self.send(
            "NodeRegistry.deregister",
            self.node_registry(d).deregister(node_b256(node)),
        )
        .await
    }

    /// The registry record of a node.
    pub async fn node(
        &self,
        d: &Deployment,
        node: &NodeId,
    ) -> Result<node_registry::NodeRegistry::Node> {
        self.call(
            "NodeRegistry.getNode",
            self.node_registry(d).getNode(node_b256(node)),
        )
        .await
    }

    /// The next attestation nonce of a node.
    pub async fn attestation_nonce(&self, d: &Deployment, node: &NodeId) -> Result<U256> {
        self.call(
            "NodeRegistry.nonces",
            self.node_registry(d).nonces(node_b256(node)),
        )
        .await
    }

    /// Names the attester whose signature registrations need (`NodeRegistry.setAttester`;
    /// the registry owner's wallet).
    pub async fn set_attester(&self, d: &Deployment, attester: alloy::primitives::Address) -> Result<TxOutcome> {
        self.send("NodeRegistry.setAttester", self.node_registry(d).setAttester(attester)).await
    }

    /// The attester whose EIP-712 signature registrations need (`NodeRegistry.attester`).
    pub async fn registry_attester(&self, d: &Deployment) -> Result<alloy::primitives::Address> {
        self.call("NodeRegistry.attester", self.node_registry(d).attester()).await
    }
}
