//! `StakeVault`: stake, unbond, withdraw, stake records, and the per-device-class minimum
//! (admin wallet).

use alloy::primitives::U256;
use alloy::providers::DynProvider;
use b3iq_core::NodeId;

use super::{ChainClient, Deployment, TxOutcome};
use crate::bindings::{stake_vault, StakeVault};
use crate::convert::node_b256;
use crate::error::Result;

impl ChainClient {
    /// StakeVault handle.
    pub fn stake_vault(&self, d: &Deployment) -> StakeVault::StakeVaultInstance<DynProvider> {
        StakeVault::new(d.stake_vault, self.provider.clone())
    }

    /// Sets the minimum stake of a device class.
    pub async fn set_min_stake(
        &self,
        d: &Deployment,
        device_class: u8,
        amount: U256,
    ) -> Result<TxOutcome> {
        self.send(
            "StakeVault.setMinStake",
            self.stake_vault(d).setMinStake(device_class, amount),
        )
        .await
    }

    /// Stakes `amount` for `node` (operator wallet; approve the vault first).
    pub async fn stake(&self, d: &Deployment, node: &NodeId, amount: U256) -> Result<TxOutcome> {
        self.send(
            "StakeVault.stake",
            self.stake_vault(d).stake(node_b256(node), amount),
        )
        .await
    }

    /// Starts unbonding.
    pub async fn request_unbond(
        &self,
        d: &Deployment,
        node: &NodeId,
        amount: U256,
    ) -> Result<TxOutcome> {
        self.send(
            "StakeVault.requestUnbond",
            self.stake_vault(d).requestUnbond(node_b256(node), amount),
        )
        .await
    }

    /// Withdraws unbonded stake.
    pub async fn withdraw_stake(&self, d: &Deployment, node: &NodeId) -> Result<TxOutcome> {
        self.send(
            "StakeVault.withdraw",
            self.stake_vault(d).withdraw(node_b256(node)),
        )
        .await
    }

    /// Whether `node` may serve network work: registered and active in NodeRegistry, with bonded
    /// stake at least its device class's minimum (`StakeVault.isStaked`; tokens unbonding do
    /// not count).
    pub async fn is_staked(&self, d: &Deployment, node: &NodeId) -> Result<bool> {
        self.call(
            "StakeVault.isStaked",
            self.stake_vault(d).isStaked(node_b256(node)),
        )
        .await
    }

    /// A node's stake record.
    pub async fn stake_of(
        &self,
        d: &Deployment,
        node: &NodeId,
    ) -> Result<stake_vault::StakeVault::Stake> {
        self.call(
            "StakeVault.stakeOf",
            self.stake_vault(d).stakeOf(node_b256(node)),
        )
        .await
    }

    /// The minimum bonded stake of a device class (`StakeVault.minStake`), token base units.
    pub async fn min_stake(&self, d: &Deployment, device_class: u8) -> Result<U256> {
        self.call("StakeVault.minStake", self.stake_vault(d).minStake(device_class)).await
    }
}
