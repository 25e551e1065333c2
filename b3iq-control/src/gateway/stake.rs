//! Stake in routing: with `settlement.require_stake` in `control.json`, the gateway sends
//! network requests only to nodes that are registered and active in NodeRegistry with bonded
//! stake at least their device class's minimum (`StakeVault.isStaked`). Tokens being unbonded
//! do not count, so a node that starts unbonding below the minimum leaves routing.
//!
//! Answers are cached per node for `stake_cache_s` (10 s by default): a new stake is routed to
//! within that time, and the chain is read at most once per node per period. When the chain
//! cannot be read, the last answer stands (a node never seen staked stays out): an RPC outage
//! neither opens routing to unstaked nodes nor takes staked ones out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use b3iq_chain::{ChainClient, Deployment, PrivateKeySigner, RetryPolicy};
use b3iq_core::NodeId;
use tokio::sync::OnceCell;

/// Where and how often the gateway reads stakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StakeCheck {
    /// JSON-RPC URL of the chain.
    pub rpc_url: String,
    /// The contracts (`stake_vault` is read).
    pub deployment: Deployment,
    /// How long one node's answer is kept.
    pub cache_for: Duration,
}

/// The cached stake answers of one gateway.
#[derive(Debug)]
pub(crate) struct StakeGate {
    check: StakeCheck,
    client: OnceCell<ChainClient>,
    answers: Mutex<HashMap<NodeId, (Instant, bool)>>,
}

impl StakeGate {
    pub(crate) fn new(check: StakeCheck) -> StakeGate {
        StakeGate { check, client: OnceCell::new(), answers: Mutex::new(HashMap::new()) }
    }

    /// Whether `node` is staked (cached; see the module docs for what an outage does).
    pub(crate) async fn staked(&self, node: &NodeId) -> bool {
        let last = self.answers.lock().unwrap_or_else(|p| p.into_inner()).get(node).copied();
        if let Some((at, ok)) = last {
            if at.elapsed() < self.check.cache_for {
                return ok;
            }
        }
        let read = async {
            let client = self
                .client
                .get_or_try_init(|| async {
                    // Reads only: the wallet is a throwaway key that never sends.
                    let retry = RetryPolicy { attempts: 1, request_timeout: Duration::from_secs(5), ..RetryPolicy::default() };
                    ChainClient::connect(&self.check.rpc_url, PrivateKeySigner::random(), retry).await
                })
                .await?;
            client.is_staked(&self.check.deployment, node).await
        };
        match read.await {
            Ok(ok) => {
                self.answers.lock().unwrap_or_else(|p| p.into_inner()).insert(*node, (Instant::now(), ok));
                ok
            }
            Err(e) => {
                let keep = last.is_some_and(|(_, ok)| ok);
                tracing::warn!(node = %node, error = %e, kept = keep, "gateway: cannot read the node's stake; keeping the last answer");
                // Try again after a short pause, not on every request.
                let back = self.check.cache_for.saturating_sub(Duration::from_secs(1));
                let retry_at = Instant::now().checked_sub(back).unwrap_or_else(Instant::now);
                self.answers.lock().unwrap_or_else(|p| p.into_inner()).insert(*node, (retry_at, keep));
                keep
            }
        }
    }
}
