//! Deploying the B3IQ contracts from the committed artifacts, behind the `deploy` feature.

use std::collections::BTreeMap;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::Provider;

use super::errors::{ambiguous_send, is_safe_to_resend, is_transient, map_transport};
use super::{ChainClient, Deployment};
use crate::bindings::{
    disputes, model_registry, node_registry, settlement, stake_vault, token, B3TestToken, Disputes,
    ModelRegistry, NodeRegistry, Settlement, StakeVault,
};
use crate::error::{ChainError, Result};

/// Deployment parameters (seconds for every window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployParams {
    /// Existing token; `None` deploys the test token (owned by the deployer).
    pub token: Option<Address>,
    /// Enrollment attester (signs EIP-712 node attestations).
    pub attester: Address,
    /// StakeVault unbonding delay.
    pub unbonding_delay_s: u64,
    /// Settlement challenge window.
    pub challenge_window_s: u64,
    /// Disputes evidence window (must be shorter than the unbonding delay).
    pub evidence_window_s: u64,
    /// Disputes appeal window.
    pub appeal_window_s: u64,
    /// Dispute bond (token base units).
    pub dispute_bond: U256,
    /// Committee votes needed to decide a dispute.
    pub quorum: u16,
    /// ModelRegistry stake withdrawal delay.
    pub model_withdraw_delay_s: u64,
    /// ModelRegistry minimum publisher stake.
    pub min_publisher_stake: U256,
}

impl DeployParams {
    /// Production-like defaults: 14-day unbonding, 1-day challenge window, 7-day evidence window,
    /// 30-day appeal window, quorum 2.
    pub fn defaults(attester: Address) -> Self {
        const DAY: u64 = 86_400;
        Self {
            token: None,
            attester,
            unbonding_delay_s: 14 * DAY,
            challenge_window_s: DAY,
            evidence_window_s: 7 * DAY,
            appeal_window_s: 30 * DAY,
            dispute_bond: U256::from(100u64) * U256::from(10u64).pow(U256::from(18u64)),
            quorum: 2,
            model_withdraw_delay_s: 14 * DAY,
            min_publisher_stake: U256::from(1_000u64) * U256::from(10u64).pow(U256::from(18u64)),
        }
    }
}

impl ChainClient {
    /// Deploys `bytecode ++ constructor args`, recording the deployment's gas under `name`.
    async fn deploy_contract(
        &self,
        name: &'static str,
        bytecode: &[u8],
        args: &[u8],
        gas: &mut BTreeMap<&'static str, u64>,
    ) -> Result<Address> {
        let code = [bytecode, args].concat().into();
        let (address, used) = self.deploy_code(&format!("deploy {name}"), code).await?;
        gas.insert(name, used);
        Ok(address)
    }

    async fn deploy_code(&self, action: &str, code: Bytes) -> Result<(Address, u64)> {
        let tx = alloy::rpc::types::TransactionRequest::default()
            .from(self.address)
            .with_deploy_code(code);
        let mut attempt = 0;
        let pending = loop {
            attempt += 1;
            match self.provider.send_transaction(tx.clone()).await {
                Ok(p) => break p,
                Err(t) if is_safe_to_resend(&t) && attempt < self.retry.attempts => {
                    tokio::time::sleep(self.retry.backoff(attempt - 1)).await;
                }
                Err(t) if is_safe_to_resend(&t) => {
                    return Err(ChainError::ChainUnreachable {
                        url: self.url.clone(),
                        attempts: attempt,
                        last_error: t.to_string(),
                    })
                }
                Err(t) if is_transient(&t) => return Err(ambiguous_send(action, &t)),
                Err(t) => return Err(map_transport(action, t)),
            }
        };
        let receipt = pending
            .with_timeout(Some(self.retry.receipt_timeout))
            .get_receipt()
            .await
            .map_err(|e| ChainError::Transport {
                action: action.to_string(),
                message: e.to_string(),
            })?;
        match (receipt.status(), receipt.contract_address) {
            (true, Some(a)) => Ok((a, receipt.gas_used)),
            _ => Err(ChainError::TransactionFailed {
                action: action.to_string(),
                tx_hash: receipt.transaction_hash.to_string(),
            }),
        }
    }

    /// Deploys (optionally the test token and) the five contracts, wires StakeVault to Disputes,
    /// and returns the addresses plus the gas of each deployment. The sender becomes owner/admin
    /// of everything; grant roles afterwards (`grant_settler`, `grant_verifier`, ...).
    pub async fn deploy(
        &self,
        p: &DeployParams,
    ) -> Result<(Deployment, BTreeMap<&'static str, u64>)> {
        use alloy::sol_types::SolConstructor;
        let mut gas = BTreeMap::new();
        let me = self.address;
        let token = match p.token {
            Some(t) => t,
            None => {
                let args = token::B3TestToken::constructorCall { initialOwner: me }.abi_encode();
                self.deploy_contract("B3TestToken", &B3TestToken::BYTECODE, &args, &mut gas)
                    .await?
            }
        };
        let args = node_registry::NodeRegistry::constructorCall {
            initialOwner: me,
            attester_: p.attester,
        }
        .abi_encode();
        let registry = self
            .deploy_contract("NodeRegistry", &NodeRegistry::BYTECODE, &args, &mut gas)
            .await?;
        let args = stake_vault::StakeVault::constructorCall {
            initialOwner: me,
            token_: token,
            registry_: registry,
            unbondingDelay_: p.unbonding_delay_s,
        }
        .abi_encode();
        let vault = self
            .deploy_contract("StakeVault", &StakeVault::BYTECODE, &args, &mut gas)
            .await?;
        let args = settlement::Settlement::constructorCall {
            admin: me,
            token_: token,
            challengeWindow_: p.challenge_window_s,
        }
        .abi_encode();
        let settle = self
            .deploy_contract("Settlement", &Settlement::BYTECODE, &args, &mut gas)
            .await?;
        let args = disputes::Disputes::constructorCall {
            admin: me,
            token_: token,
            registry_: registry,
            vault_: vault,
            settlement_: settle,
            evidenceWindow_: p.evidence_window_s,
            appealWindow_: p.appeal_window_s,
            bondAmount_: p.dispute_bond,
            quorum_: p.quorum,
        }
        .abi_encode();
        let disp = self
            .deploy_contract("Disputes", &Disputes::BYTECODE, &args, &mut gas)
            .await?;
        let args = model_registry::ModelRegistry::constructorCall {
            initialOwner: me,
            token_: token,
            withdrawDelay_: p.model_withdraw_delay_s,
            minPublisherStake_: p.min_publisher_stake,
        }
        .abi_encode();
        let models = self
            .deploy_contract("ModelRegistry", &ModelRegistry::BYTECODE, &args, &mut gas)
            .await?;
        let d = Deployment {
            token,
            node_registry: registry,
            stake_vault: vault,
            settlement: settle,
            disputes: disp,
            model_registry: models,
        };
        self.send(
            "StakeVault.setDisputes",
            self.stake_vault(&d).setDisputes(disp),
        )
        .await?;
        Ok((d, gas))
    }
}
