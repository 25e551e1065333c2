//! Chain client: deploy the B3IQ contracts, register nodes, stake, post epochs, claim, and run
//! disputes, over JSON-RPC (alloy, HTTP via reqwest + rustls).
//!
//! Reliability: every request has a timeout. Reads are retried on any transport failure
//! (connection refused, reset, timeout, HTTP 429/5xx) with exponential backoff up to
//! [`RetryPolicy::attempts`], then reported as [`ProtocolError::ChainUnreachable`]. Transaction
//! sends are retried only when the request provably did not reach the node (connect failure,
//! HTTP 429/503), so a retry can never duplicate a transaction; a send whose answer was lost is
//! reported as [`ProtocolError::Chain`] telling the caller to check before resending. JSON-RPC error answers are not retried:
//! a revert becomes [`ProtocolError::Reverted`] with the decoded Solidity custom error, any other
//! rejection [`ProtocolError::Rejected`]. Nonces are fetched from the node for every transaction
//! (no local nonce cache), so a failed or retried send never leaves a nonce gap.

use std::collections::BTreeMap;
use std::time::Duration;

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, Bytes, FixedBytes, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolEvent, SolInterface};
use alloy::transports::{RpcError, TransportErrorKind};
use b3iq_core::payout::{EthAddress, PayoutEntry};
use b3iq_core::{Hash32, NodeId};

use crate::bindings::{
    disputes, model_registry, node_registry, settlement, stake_vault, token, B3TestToken, Disputes,
    ModelRegistry, NodeRegistry, Settlement, StakeVault,
};
use crate::error::{ProtocolError, Result};
use crate::settlement::EpochSettlement;

/// Retry and timeout policy for RPC calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts per request (at least 1).
    pub attempts: u32,
    /// Backoff before the second attempt; doubled each time up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// How long to wait for a sent transaction to be mined.
    pub receipt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            receipt_timeout: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Addresses of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// The B3 token (or the test token).
    pub token: Address,
    /// NodeRegistry.
    pub node_registry: Address,
    /// StakeVault.
    pub stake_vault: Address,
    /// Settlement.
    pub settlement: Address,
    /// Disputes.
    pub disputes: Address,
    /// ModelRegistry.
    pub model_registry: Address,
}

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

/// A mined, successful transaction.
#[derive(Debug, Clone)]
pub struct TxOutcome {
    /// Transaction hash.
    pub tx_hash: B256,
    /// Gas used, including the 21,000 base cost.
    pub gas_used: u64,
    /// Block number.
    pub block_number: u64,
    /// The full receipt (logs).
    pub receipt: TransactionReceipt,
}

/// A posted epoch.
#[derive(Debug, Clone)]
pub struct PostedEpoch {
    /// The post transaction.
    pub outcome: TxOutcome,
    /// Block timestamp of the post (claims open `challengeWindow` seconds later).
    pub posted_at: u64,
}

/// Converts a core hash to a `bytes32`.
pub fn b256(h: &Hash32) -> B256 {
    B256::from(h.0)
}

/// Converts a core node id to a `bytes32`.
pub fn node_b256(id: &NodeId) -> B256 {
    B256::from(id.0)
}

/// Converts a core address to an alloy address.
pub fn to_address(a: &EthAddress) -> Address {
    Address::from(a.0)
}

/// Converts an alloy address to a core address.
pub fn from_address(a: &Address) -> EthAddress {
    EthAddress(a.0 .0)
}

/// Decodes revert data against the errors of every B3IQ contract (and `Error(string)` /
/// `Panic(uint256)`); falls back to hex.
pub fn decode_revert(data: &[u8]) -> String {
    macro_rules! try_decode {
        ($($t:ty),* $(,)?) => {
            $(
                if let Ok(e) = <$t as SolInterface>::abi_decode(data) {
                    return format!("{e:?}");
                }
            )*
        };
    }
    try_decode!(
        settlement::Settlement::SettlementErrors,
        disputes::Disputes::DisputesErrors,
        stake_vault::StakeVault::StakeVaultErrors,
        node_registry::NodeRegistry::NodeRegistryErrors,
        model_registry::ModelRegistry::ModelRegistryErrors,
        token::B3TestToken::B3TestTokenErrors,
        alloy::sol_types::GenericContractError,
    );
    format!("0x{}", hex::encode(data))
}

/// True when a transaction send can be retried without risking a duplicate: the request
/// provably did not reach the node (connection refused or failed to connect), or the node said
/// "try again later" (HTTP 429/503, rate-limit codes). A timeout after the request was written is
/// NOT safe: the node may have accepted the transaction.
fn is_safe_to_resend(e: &RpcError<TransportErrorKind>) -> bool {
    match e {
        RpcError::Transport(TransportErrorKind::HttpError(h)) => h.status == 429 || h.status == 503,
        RpcError::Transport(TransportErrorKind::Custom(inner)) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
            while let Some(err) = source {
                if let Some(r) = err.downcast_ref::<alloy::transports::http::reqwest::Error>() {
                    return r.is_connect();
                }
                source = err.source();
            }
            false
        }
        RpcError::ErrorResp(p) => p.code == 429 || p.code == -32005,
        _ => false,
    }
}

/// True for failures worth retrying for reads: the request never got a JSON-RPC answer.
fn is_transient(e: &RpcError<TransportErrorKind>) -> bool {
    match e {
        RpcError::Transport(kind) => match kind {
            TransportErrorKind::HttpError(h) => h.status == 429 || h.status >= 500,
            _ => true,
        },
        RpcError::ErrorResp(p) => p.code == 429 || p.code == -32005,
        _ => false,
    }
}

fn ambiguous_send(action: &str, e: &RpcError<TransportErrorKind>) -> ProtocolError {
    ProtocolError::Chain {
        action: action.to_string(),
        message: format!(
            "the node did not answer after the transaction was sent ({e}); it may or may not have been \
             accepted: check the account's nonce or the expected state before sending it again"
        ),
    }
}

fn map_transport(action: &str, e: RpcError<TransportErrorKind>) -> ProtocolError {
    match e {
        RpcError::ErrorResp(p) => match p.as_revert_data() {
            Some(data) => ProtocolError::Reverted {
                action: action.to_string(),
                error: decode_revert(&data),
            },
            None => ProtocolError::Rejected {
                action: action.to_string(),
                message: p.message.to_string(),
            },
        },
        other => ProtocolError::Chain {
            action: action.to_string(),
            message: other.to_string(),
        },
    }
}

fn map_contract(action: &str, e: alloy::contract::Error) -> ProtocolError {
    if let Some(data) = e.as_revert_data() {
        return ProtocolError::Reverted {
            action: action.to_string(),
            error: decode_revert(&data),
        };
    }
    match e {
        alloy::contract::Error::TransportError(t) => map_transport(action, t),
        other => ProtocolError::Chain {
            action: action.to_string(),
            message: other.to_string(),
        },
    }
}

/// A client bound to one wallet on one chain.
#[derive(Debug, Clone)]
pub struct ChainClient {
    provider: DynProvider,
    address: Address,
    url: String,
    retry: RetryPolicy,
}

impl ChainClient {
    /// Connects to `url` with `signer` as the sending wallet and checks that the node answers
    /// (retrying per `retry`).
    pub async fn connect(url: &str, signer: PrivateKeySigner, retry: RetryPolicy) -> Result<Self> {
        let parsed = alloy::transports::http::reqwest::Url::parse(url).map_err(|e| {
            ProtocolError::InvalidRpcUrl {
                url: url.to_string(),
                reason: e.to_string(),
            }
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ProtocolError::InvalidRpcUrl {
                url: url.to_string(),
                reason: format!("unsupported scheme {:?}", parsed.scheme()),
            });
        }
        let http = alloy::transports::http::reqwest::Client::builder()
            .timeout(retry.request_timeout)
            .connect_timeout(retry.request_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| ProtocolError::Chain {
                action: "build HTTP client".into(),
                message: e.to_string(),
            })?;
        let address = signer.address();
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(signer))
            .connect_reqwest(http, parsed)
            .erased();
        let client = Self {
            provider,
            address,
            url: url.to_string(),
            retry: RetryPolicy {
                attempts: retry.attempts.max(1),
                ..retry
            },
        };
        client.chain_id().await?;
        Ok(client)
    }

    /// The same chain and policy with another sending wallet.
    pub async fn with_signer(&self, signer: PrivateKeySigner) -> Result<Self> {
        Self::connect(&self.url, signer, self.retry).await
    }

    /// The sending wallet.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The underlying provider (for reads not wrapped here).
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The RPC URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn with_retries<T, F, Fut>(&self, action: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, RpcError<TransportErrorKind>>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if is_transient(&e) => {
                    if attempt >= self.retry.attempts {
                        return Err(ProtocolError::ChainUnreachable {
                            url: self.url.clone(),
                            attempts: attempt,
                            last_error: e.to_string(),
                        });
                    }
                    tracing::warn!(action, attempt, error = %e, "chain node request failed; retrying");
                    tokio::time::sleep(self.retry.backoff(attempt - 1)).await;
                }
                Err(e) => return Err(map_transport(action, e)),
            }
        }
    }

    /// The chain id (retried).
    pub async fn chain_id(&self) -> Result<u64> {
        self.with_retries("eth_chainId", || async {
            self.provider.get_chain_id().await
        })
        .await
    }

    /// Latest block timestamp (retried).
    pub async fn block_timestamp(&self) -> Result<u64> {
        let block = self
            .with_retries("eth_getBlockByNumber", || async {
                self.provider
                    .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
                    .await
            })
            .await?;
        block
            .map(|b| b.header.timestamp)
            .ok_or_else(|| ProtocolError::Chain {
                action: "eth_getBlockByNumber".into(),
                message: "node returned no latest block".into(),
            })
    }

    /// Sends a contract call as a transaction and waits for it to be mined.
    pub async fn send<P, D>(&self, action: &str, call: CallBuilder<P, D>) -> Result<TxOutcome>
    where
        P: Provider,
        D: CallDecoder,
    {
        let mut attempt = 0;
        let pending = loop {
            attempt += 1;
            match call.send().await {
                Ok(p) => break p,
                Err(alloy::contract::Error::TransportError(t))
                    if is_safe_to_resend(&t) && attempt < self.retry.attempts =>
                {
                    tracing::warn!(action, attempt, error = %t, "sending transaction failed; retrying");
                    tokio::time::sleep(self.retry.backoff(attempt - 1)).await;
                }
                Err(alloy::contract::Error::TransportError(t)) if is_safe_to_resend(&t) => {
                    return Err(ProtocolError::ChainUnreachable {
                        url: self.url.clone(),
                        attempts: attempt,
                        last_error: t.to_string(),
                    })
                }
                Err(alloy::contract::Error::TransportError(t)) if is_transient(&t) => {
                    return Err(ambiguous_send(action, &t))
                }
                Err(e) => return Err(map_contract(action, e)),
            }
        };
        let tx_hash = *pending.tx_hash();
        let receipt = pending
            .with_timeout(Some(self.retry.receipt_timeout))
            .get_receipt()
            .await
            .map_err(|e| ProtocolError::Chain {
                action: action.to_string(),
                message: format!("waiting for transaction {tx_hash}: {e}"),
            })?;
        if !receipt.status() {
            return Err(ProtocolError::TransactionFailed {
                action: action.to_string(),
                tx_hash: tx_hash.to_string(),
            });
        }
        Ok(TxOutcome {
            tx_hash,
            gas_used: receipt.gas_used,
            block_number: receipt.block_number.unwrap_or_default(),
            receipt,
        })
    }

    /// Runs a read-only contract call (retried on transport errors).
    pub async fn call<P, D>(&self, action: &str, call: CallBuilder<P, D>) -> Result<D::CallOutput>
    where
        P: Provider,
        D: CallDecoder,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match call.call().await {
                Ok(v) => return Ok(v),
                Err(alloy::contract::Error::TransportError(t))
                    if is_transient(&t) && attempt < self.retry.attempts =>
                {
                    tokio::time::sleep(self.retry.backoff(attempt - 1)).await;
                }
                Err(alloy::contract::Error::TransportError(t)) if is_transient(&t) => {
                    return Err(ProtocolError::ChainUnreachable {
                        url: self.url.clone(),
                        attempts: attempt,
                        last_error: t.to_string(),
                    })
                }
                Err(e) => return Err(map_contract(action, e)),
            }
        }
    }

    // ---- contract handles ----

    /// `B3TestToken` (or any ERC-20 with the same ABI subset) at `d.token`.
    pub fn token(&self, d: &Deployment) -> B3TestToken::B3TestTokenInstance<DynProvider> {
        B3TestToken::new(d.token, self.provider.clone())
    }
    /// NodeRegistry handle.
    pub fn node_registry(&self, d: &Deployment) -> NodeRegistry::NodeRegistryInstance<DynProvider> {
        NodeRegistry::new(d.node_registry, self.provider.clone())
    }
    /// StakeVault handle.
    pub fn stake_vault(&self, d: &Deployment) -> StakeVault::StakeVaultInstance<DynProvider> {
        StakeVault::new(d.stake_vault, self.provider.clone())
    }
    /// Settlement handle.
    pub fn settlement(&self, d: &Deployment) -> Settlement::SettlementInstance<DynProvider> {
        Settlement::new(d.settlement, self.provider.clone())
    }
    /// Disputes handle.
    pub fn disputes(&self, d: &Deployment) -> Disputes::DisputesInstance<DynProvider> {
        Disputes::new(d.disputes, self.provider.clone())
    }
    /// ModelRegistry handle.
    pub fn model_registry(
        &self,
        d: &Deployment,
    ) -> ModelRegistry::ModelRegistryInstance<DynProvider> {
        ModelRegistry::new(d.model_registry, self.provider.clone())
    }

    // ---- deploy ----

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
                    return Err(ProtocolError::ChainUnreachable {
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
            .map_err(|e| ProtocolError::Chain {
                action: action.to_string(),
                message: e.to_string(),
            })?;
        match (receipt.status(), receipt.contract_address) {
            (true, Some(a)) => Ok((a, receipt.gas_used)),
            _ => Err(ProtocolError::TransactionFailed {
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

    // ---- roles and configuration (admin wallet) ----

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

    // ---- token ----

    /// Mints test tokens (test token owner only).
    pub async fn mint(&self, d: &Deployment, to: Address, amount: U256) -> Result<TxOutcome> {
        self.send("B3TestToken.mint", self.token(d).mint(to, amount))
            .await
    }

    /// ERC-20 approve.
    pub async fn approve(
        &self,
        d: &Deployment,
        spender: Address,
        amount: U256,
    ) -> Result<TxOutcome> {
        self.send("ERC20.approve", self.token(d).approve(spender, amount))
            .await
    }

    /// ERC-20 balance.
    pub async fn balance_of(&self, d: &Deployment, who: Address) -> Result<U256> {
        self.call("ERC20.balanceOf", self.token(d).balanceOf(who))
            .await
    }

    // ---- node registry ----

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

    // ---- stake ----

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

    // ---- settlement ----

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
            .ok_or_else(|| ProtocolError::MissingEvent {
                action: "Settlement.postEpoch".into(),
                tx_hash: outcome.tx_hash.to_string(),
                event: "EpochPosted",
            })?;
        if event.payoutRoot != b256(payout_root) || event.epochId != epoch_id {
            return Err(ProtocolError::Chain {
                action: "Settlement.postEpoch".into(),
                message: format!("EpochPosted event does not match the posted epoch {epoch_id}"),
            });
        }
        Ok(PostedEpoch {
            posted_at: event.postedAt,
            outcome,
        })
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

    // ---- disputes ----

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
            .ok_or_else(|| ProtocolError::MissingEvent {
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

    // ---- models ----

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

    // ---- development chains (hardhat / anvil) ----

    /// Moves the chain clock forward by `seconds` and mines a block (`evm_increaseTime` +
    /// `evm_mine`; development nodes only).
    pub async fn increase_time(&self, seconds: u64) -> Result<()> {
        self.with_retries("evm_increaseTime", || async {
            self.provider
                .raw_request::<_, serde_json::Value>("evm_increaseTime".into(), (seconds,))
                .await
        })
        .await?;
        self.with_retries("evm_mine", || async {
            self.provider
                .raw_request::<_, serde_json::Value>("evm_mine".into(), Vec::<u64>::new())
                .await
        })
        .await?;
        Ok(())
    }
}
