//! The chain client: one wallet on one chain over JSON-RPC (alloy, HTTP via reqwest + rustls).
//!
//! This module is the client core: connecting (provider, wallet, timeouts), retries, sending
//! transactions without ever sending one twice, read-only calls, and decoding errors. The
//! operations are grouped by contract, one submodule each, all as methods of [`ChainClient`]:
//! `token` (B3TestToken / ERC-20), `node_registry`, `stake_vault`, `settlement`, `disputes`,
//! `model_registry`; `deploy` (feature `deploy`) deploys the contracts, `devnet` (feature
//! `devnet`) drives a development chain's clock.
//!
//! Reliability: every request has a timeout. Reads are retried on any transport failure
//! (connection refused, reset, timeout, HTTP 429/5xx) with exponential backoff up to
//! [`RetryPolicy::attempts`], then reported as [`ChainError::ChainUnreachable`]. Transaction
//! sends are retried only when the request provably did not reach the node (connect failure,
//! HTTP 429/503), so a retry can never duplicate a transaction; a send whose answer was lost is
//! reported as [`ChainError::SendOutcomeUnknown`] telling the caller to check before resending.
//! JSON-RPC error answers are not retried: a revert becomes [`ChainError::Reverted`] with the
//! decoded Solidity custom error, any other rejection [`ChainError::Rejected`]. Nonces are
//! fetched from the node for every transaction (no local nonce cache), so a failed or retried
//! send never leaves a nonce gap.

use std::time::Duration;

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::{RpcError, TransportErrorKind};

use crate::error::{ChainError, Result};
use errors::{ambiguous_send, is_safe_to_resend, is_transient, map_contract, map_transport};

#[cfg(feature = "deploy")]
mod deploy;
#[cfg(feature = "devnet")]
mod devnet;
mod disputes;
mod errors;
mod model_registry;
mod node_registry;
mod settlement;
mod stake_vault;
mod token;

#[cfg(feature = "deploy")]
pub use deploy::DeployParams;
pub use errors::decode_revert;
pub use settlement::{EpochCommit, EpochPost, PostedEpoch};

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
            ChainError::InvalidRpcUrl {
                url: url.to_string(),
                reason: e.to_string(),
            }
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ChainError::InvalidRpcUrl {
                url: url.to_string(),
                reason: format!("unsupported scheme {:?}", parsed.scheme()),
            });
        }
        // reqwest takes the process-wide rustls provider; this workspace builds rustls with ring
        // only (no aws-lc-rs): install it, unless the embedding application installed one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = alloy::transports::http::reqwest::Client::builder()
            .timeout(retry.request_timeout)
            .connect_timeout(retry.request_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| ChainError::HttpClient {
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
                        return Err(ChainError::ChainUnreachable {
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
            .ok_or_else(|| ChainError::Unexpected {
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
                    return Err(ChainError::ChainUnreachable {
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
            .map_err(|e| ChainError::Transport {
                action: action.to_string(),
                message: format!("waiting for transaction {tx_hash}: {e}"),
            })?;
        if !receipt.status() {
            return Err(ChainError::TransactionFailed {
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
                    return Err(ChainError::ChainUnreachable {
                        url: self.url.clone(),
                        attempts: attempt,
                        last_error: t.to_string(),
                    })
                }
                Err(e) => return Err(map_contract(action, e)),
            }
        }
    }
}
