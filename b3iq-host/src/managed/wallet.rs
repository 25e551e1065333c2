//! The node's payout wallet (`b3iqd wallet`): where its host share of each settlement epoch is
//! paid, what it earned, and claiming it on chain.
//!
//! * [`create`]: a new key made on this machine (`wallet.key` in the home, `0x` + 64 hex, mode
//!   0600, never overwritten); its address becomes the payout address.
//! * [`set_address`]: an address only (claims are then sent from elsewhere, or from here with a
//!   key file of another wallet: a claim pays the leaf's account whoever sends it).
//! * Both record the wallet in state.db ([`META_WALLET`]) and, when the node is enrolled, send
//!   the address to the control plane (`POST /v1/node/payout-address`, signed by the node key)
//!   so the next epochs pay it.
//! * [`earnings`]: the control plane's leaves and proofs for the address
//!   (`GET /v1/payouts/{address}`), each marked claimed or not from the chain (`isClaimed`).
//! * [`claim`]: claims every posted epoch not yet claimed (`Settlement.claim`), skips claimed
//!   ones, and reports epochs still in their challenge window.

use std::path::PathBuf;

use b3iq_chain::key_file::{create_key_file, load_key_file};
use b3iq_chain::{ChainClient, ChainError, Deployment, RetryPolicy};
pub use b3iq_core::payout::EthAddress;
use b3iq_protocol::payout_api::{AccountPayouts, PayoutAddressAck, PayoutAddressRequest};

use super::{client, enrollment, post};
use crate::context::{unix_now_ms, Context};
use crate::error::{HostError, Result};

/// state.db meta key of the wallet (JSON [`Wallet`]).
pub const META_WALLET: &str = "payout_wallet";
/// The key file [`create`] makes, in the home.
pub const WALLET_KEY_FILE: &str = "wallet.key";

/// The recorded wallet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wallet {
    /// Payout address.
    pub address: EthAddress,
    /// Key file of the address, when made here.
    pub key_file: Option<PathBuf>,
    /// Whether the control plane acknowledged the address.
    pub sent_to_control_plane: bool,
}

/// The recorded wallet, if any.
///
/// # Errors
/// `Db`; `Config` for a stored value that does not parse.
pub fn wallet(ctx: &Context) -> Result<Option<Wallet>> {
    match ctx.db.meta_get(META_WALLET)?.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => serde_json::from_str(&s).map(Some).map_err(|e| HostError::Config(format!("stored wallet: {e}"))),
    }
}

fn save(ctx: &Context, w: &Wallet) -> Result<()> {
    let text = serde_json::to_string(w).map_err(|e| HostError::Internal(e.to_string()))?;
    ctx.db.meta_set(META_WALLET, &text)
}

fn chain_err(e: ChainError) -> HostError {
    HostError::InvalidParameter(e.to_string())
}

/// Makes a new key in the home (refused when `wallet.key` exists) and records its address.
///
/// # Errors
/// `InvalidParameter` when the key file exists; `Db`; `ControlPlane` when enrolled and the
/// control plane refuses the address (it stays recorded here; run `set-address` again).
pub async fn create(ctx: &Context) -> Result<Wallet> {
    let path = ctx.home.root().join(WALLET_KEY_FILE);
    let address = create_key_file(&path).map_err(chain_err)?;
    record(ctx, EthAddress(address.0 .0), Some(path)).await
}

/// Records `address` as the payout address (no key here).
///
/// # Errors
/// As [`create`].
pub async fn set_address(ctx: &Context, address: EthAddress) -> Result<Wallet> {
    let key_file = wallet(ctx)?.filter(|w| w.address == address).and_then(|w| w.key_file);
    record(ctx, address, key_file).await
}

async fn record(ctx: &Context, address: EthAddress, key_file: Option<PathBuf>) -> Result<Wallet> {
    let mut w = Wallet { address, key_file, sent_to_control_plane: false };
    save(ctx, &w)?;
    if let Some(e) = enrollment(&ctx.db)? {
        let c = client(e.ca_pem.as_deref())?;
        let req = PayoutAddressRequest::sign(&ctx.key, address, unix_now_ms());
        let ack: PayoutAddressAck = post(&c, &format!("{}/v1/node/payout-address", e.control_url), None, &req, None).await?;
        w.sent_to_control_plane = ack.address == address;
        save(ctx, &w)?;
    }
    Ok(w)
}

/// The control plane's payouts for the wallet's address.
async fn payouts(ctx: &Context, w: &Wallet) -> Result<AccountPayouts> {
    let e = enrollment(&ctx.db)?.ok_or_else(|| HostError::InvalidParameter("not enrolled: earnings come from the control plane (`b3iqd enroll`)".into()))?;
    let c = client(e.ca_pem.as_deref())?;
    let url = format!("{}/v1/payouts/{}", e.control_url, w.address);
    let resp = c.get(&url).send().await.map_err(|x| HostError::ControlPlane(format!("unreachable: {x}")))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|x| HostError::ControlPlane(format!("unreachable: {x}")))?;
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        return Err(HostError::ControlPlane(format!("refused (HTTP {status}): {}", v["error"]["message"].as_str().unwrap_or(""))));
    }
    serde_json::from_slice(&body).map_err(|x| HostError::ControlPlane(format!("payouts answer does not parse: {x}")))
}

fn deployment(p: &AccountPayouts) -> Deployment {
    let settlement = b3iq_chain::Address::from(p.settlement.0);
    Deployment { token: b3iq_chain::Address::ZERO, node_registry: b3iq_chain::Address::ZERO, stake_vault: b3iq_chain::Address::ZERO, settlement, disputes: b3iq_chain::Address::ZERO, model_registry: b3iq_chain::Address::ZERO }
}

async fn reader(rpc: &str, p: &AccountPayouts) -> Result<ChainClient> {
    let c = ChainClient::connect(rpc, b3iq_chain::PrivateKeySigner::random(), RetryPolicy::default()).await.map_err(chain_err)?;
    check_chain(&c, p).await?;
    Ok(c)
}

async fn check_chain(c: &ChainClient, p: &AccountPayouts) -> Result<()> {
    let id = c.chain_id().await.map_err(chain_err)?;
    if id != p.chain_id {
        return Err(HostError::InvalidParameter(format!("--rpc is chain {id}, the control plane settles on chain {}", p.chain_id)));
    }
    Ok(())
}

fn the_wallet(ctx: &Context) -> Result<Wallet> {
    wallet(ctx)?.ok_or_else(|| HostError::InvalidParameter("no payout wallet: run `b3iqd wallet create` or `b3iqd wallet set-address 0x...`".into()))
}

/// Earnings per posted epoch: `{address, chain_id, settlement, total, claimed, unclaimed,
/// epochs: [{epoch_id, posted_at, index, amount, claimed}]}` (amounts: decimal strings of token
/// base units). With `rpc` the claimed flags come from the chain; without, they are `null`.
///
/// # Errors
/// `InvalidParameter` without a wallet or enrollment, or for the wrong chain; `ControlPlane`.
pub async fn earnings(ctx: &Context, rpc: Option<&str>) -> Result<serde_json::Value> {
    let w = the_wallet(ctx)?;
    let p = payouts(ctx, &w).await?;
    let chain = match rpc {
        Some(r) => Some(reader(r, &p).await?),
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
    let w = the_wallet(ctx)?;
    let key = key_file.or_else(|| w.key_file.clone()).ok_or_else(|| {
        HostError::InvalidParameter("this wallet is an address only: claim with --key-file of any funded wallet, or from the wallet that holds the key".into())
    })?;
    let signer = load_key_file(&key).map_err(chain_err)?;
    let p = payouts(ctx, &w).await?;
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
