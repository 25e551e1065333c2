//! `ModelRegistry`: register models (publisher wallet) and delist them (governance).

use alloy::primitives::{Address, FixedBytes, U256};
use alloy::providers::DynProvider;
use b3iq_core::Hash32;

use super::{ChainClient, Deployment, TxOutcome};
use crate::bindings::ModelRegistry;
use crate::convert::b256;
use crate::error::Result;

impl ChainClient {
    /// ModelRegistry handle.
    pub fn model_registry(
        &self,
        d: &Deployment,
    ) -> ModelRegistry::ModelRegistryInstance<DynProvider> {
        ModelRegistry::new(d.model_registry, self.provider.clone())
    }

    /// Registers a model (approve ModelRegistry for the stake first).
    pub async fn register_model(
        &self,
        d: &Deployment,
        model_id: &Hash32,
        manifest_hash: &Hash32,
        publisher_key: &[u8; 32],
        royalty_recipient: Address,
        stake: U256,
    ) -> Result<TxOutcome> {
        self.send(
            "ModelRegistry.register",
            self.model_registry(d).register(
                b256(model_id),
                b256(manifest_hash),
                FixedBytes::from(*publisher_key),
                royalty_recipient,
                stake,
            ),
        )
        .await
    }

    /// Governance delists a model.
    pub async fn delist_model(
        &self,
        d: &Deployment,
        model_id: &Hash32,
        reason_hash: &Hash32,
    ) -> Result<TxOutcome> {
        self.send(
            "ModelRegistry.delist",
            self.model_registry(d)
                .delist(b256(model_id), b256(reason_hash)),
        )
        .await
    }
}
