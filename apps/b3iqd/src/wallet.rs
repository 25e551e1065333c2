//! `b3iqd wallet create | earnings | claim`: the chain side of the payout wallet. It lives in
//! the app, not in b3iq-host, so the host library and the bindings build without alloy
//! (xtask/tests/structure.rs); the recorded wallet and the control plane's payouts are
//! `b3iq_host::managed::wallet`.

use std::path::PathBuf;

use b3iq_chain::key_file::{create_key_file, load_key_file};
use b3iq_chain::{ChainClient, ChainError, Deployment, RetryPolicy};
use b3iq_host::context::Context;
use b3iq_host::error::{HostError, Result};
use b3iq_host::managed::wallet::{self, EthAddress, Wallet, WALLET_KEY_FILE};
use b3iq_protocol::payout_api::AccountPayouts;

fn chain_err(e: ChainError) -> HostError {
    HostError::InvalidParameter(e.to_string())
}

/// Makes a new key in the home (refused when `wallet.key` exists) and records its address.
///
/// # Errors
/// `InvalidParameter` when the key file exists; `Db`; `ControlPlane` when enrolled and the
/// control plane refuses the address (it stays recorded here and is sent on the next heartbeat).
pub async fn create(ctx: &Context) -> Result<Wallet> {
    let path = ctx.home.root().join(WALLET_KEY_FILE);
    if path.exists() {
        return Err(HostError::InvalidParameter(format!(
            "a wallet key already exists at {} (back it up; `b3iqd wallet show` prints its address); it is never overwritten",
            path.display()
        )));
    }
    let address = create_key_file(&path).map_err(chain_err)?;
    wallet::record(ctx, EthAddress(address.0 .0), Some(path)).await
}

fn deployment(p: &AccountPayouts) -> Deployment {
    let settlement = b3iq_chain::Address::from(p.settlement.0);
    Deployment {
        token: b3iq_chain::Address::ZERO,
        node_registry: b3iq_chain::Address::ZERO,
        stake_vault: b3iq_chain::Address::ZERO,
        settlement,
        disputes: b3iq_chain::Address::ZERO,
        model_registry: b3iq_chain::Address::ZERO,
    }
}

async fn check_chain(c: &ChainClient, p: &AccountPayouts) -> Result<()> {
    let id = c.chain_id().await.map_err(chain_err)?;
    if id != p.chain_id {
        return Err(HostError::InvalidParameter(format!(
            "--rpc is chain {id}, the control plane settles on chain {}",
            p.chain_id
        )));
    }
    Ok(())
}

/// Earnings per posted epoch: `{address, chain_id, settlement, total, claimed, unclaimed,
/// epochs: [{epoch_id, posted_at, index, amount, claimed}]}` (amounts: decimal strings of token
/// base units). With `rpc` the claimed flags come from the chain; without, they are `null`.
///
/// # Errors
/// `InvalidParameter` without a wallet or enrollment, or for the wrong chain; `ControlPlane`.
pub async fn earnings(ctx: &Context, rpc: Option<&str>) -> Result<serde_json::Value> {
    let w = wallet::the_wallet(ctx)?;
    let p = wallet::payouts(ctx, &w).await?;
    let chain = match rpc {
        Some(r) => {
            let c = ChainClient::connect(r, b3iq_chain::PrivateKeySigner::random(), RetryPolicy::default())
                .await
                .map_err(chain_err)?;
            check_chain(&c, &p).await?;
            Some(c)
        }
        None => None,
    };
    let d = deployment(&p);
    let (mut total, mut claimed_sum, mut epochs) = (0u128, 0u128, Vec::new());
    for e in &p.epochs {
        let claimed = match &chain {
            Some(c) => Some(c.is_claimed(&d, e.epoch_id, e.entry.index).await.map_err(chain_err)?),
            None => None,
        };
        total += e.entry.amount;
        if claimed == Some(true) {
            claimed_sum += e.entry.amount;
        }
        epochs.push(serde_json::json!({"epoch_id": e.epoch_id, "posted_at": e.posted_at, "index": e.entry.index, "amount": e.entry.amount.to_string(), "claimed": claimed}));
    }
    Ok(serde_json::json!({
        "address": w.address,
        "chain_id": p.chain_id,
        "settlement": p.settlement,
        "total": total.to_string(),
        "claimed": chain.as_ref().map(|_| claimed_sum.to_string()),
        "unclaimed": chain.as_ref().map(|_| (total - claimed_sum).to_string()),
        "epochs": epochs,
    }))
}

/// What [`claim`] did per epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ClaimStatus {
    /// Claimed now.
    Claimed {
        /// Epoch.
        epoch_id: u64,
        /// Amount, token base units (decimal).
        amount: String,
        /// Transaction hash.
        tx_hash: String,
        /// Gas used.
        gas_used: u64,
    },
    /// Claimed before; skipped.
    AlreadyClaimed {
        /// Epoch.
        epoch_id: u64,
    },
    /// Still in its challenge window; claim later.
    NotYetClaimable {
        /// Epoch.
        epoch_id: u64,
        /// The chain's reason.
        reason: String,
    },
}

/// Claims every posted epoch paying the wallet that is not claimed yet, from the wallet's key
/// file (or `key_file`, any funded wallet: the tokens go to the payout address either way).
///
/// # Errors
/// `InvalidParameter` without a wallet, key, enrollment, or for the wrong chain; `ControlPlane`;
/// a claim the chain refuses for another reason than the challenge window.
pub async fn claim(ctx: &Context, rpc: &str, key_file: Option<PathBuf>) -> Result<Vec<ClaimStatus>> {
    let w = wallet::the_wallet(ctx)?;
    let key = key_file.or_else(|| w.key_file.clone()).ok_or_else(|| {
        HostError::InvalidParameter("this wallet is an address only: claim with --key-file of any funded wallet, or from the wallet that holds the key".into())
    })?;
    let signer = load_key_file(&key).map_err(chain_err)?;
    let p = wallet::payouts(ctx, &w).await?;
    let c = ChainClient::connect(rpc, signer, RetryPolicy::default()).await.map_err(chain_err)?;
    check_chain(&c, &p).await?;
    let d = deployment(&p);
    let mut out = Vec::new();
    for e in &p.epochs {
        if c.is_claimed(&d, e.epoch_id, e.entry.index).await.map_err(chain_err)? {
            out.push(ClaimStatus::AlreadyClaimed { epoch_id: e.epoch_id });
            continue;
        }
        match c.claim(&d, e.epoch_id, &e.entry, &e.proof).await {
            Ok(t) => out.push(ClaimStatus::Claimed { epoch_id: e.epoch_id, amount: e.entry.amount.to_string(), tx_hash: t.tx_hash.to_string(), gas_used: t.gas_used }),
            Err(ChainError::Reverted { error, .. }) if error.starts_with("ChallengeWindowOpen") => out.push(ClaimStatus::NotYetClaimable { epoch_id: e.epoch_id, reason: error }),
            Err(ChainError::Reverted { error, .. }) if error.starts_with("AlreadyClaimed") => out.push(ClaimStatus::AlreadyClaimed { epoch_id: e.epoch_id }),
            Err(x) => return Err(chain_err(x)),
        }
    }
    Ok(out)
}
