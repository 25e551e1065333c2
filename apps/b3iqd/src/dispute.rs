//! `b3iqd dispute list | appeal`: the disputes opened on chain against this node, and the
//! operator's appeal of an upheld one within its appeal window (`docs/verification.md`,
//! "Disputes"). Read from the chain's `Disputes` contract (its `DisputeOpened` events for this
//! node id); the appeal is sent from the operator's wallet (the payout wallet's key file, or
//! `--key-file`), the address that registered the node in `NodeRegistry`.

use std::path::PathBuf;
use std::process::ExitCode;

use b3iq_chain::key_file::load_key_file;
use b3iq_chain::{Address, ChainClient, ChainError, Deployment, PrivateKeySigner, RetryPolicy, U256};
use b3iq_host::context::Context;
use b3iq_host::error::{HostError, Result};
use b3iq_host::managed::wallet::WALLET_KEY_FILE;
use clap::Subcommand;

/// `b3iqd dispute ...`.
#[derive(Subcommand)]
pub enum DisputeCmd {
    /// The disputes opened on chain against this node, oldest first (JSON): id, epoch,
    /// evidence hash, status, appeal deadline, slash asked.
    List {
        /// JSON-RPC URL of the chain.
        #[arg(long)]
        rpc: String,
        /// The `Disputes` contract's address (`0x` + 40 hex); by default the one the control
        /// plane names (`GET /v1/network/contracts`).
        #[arg(long)]
        disputes: Option<String>,
    },
    /// Appeal an upheld dispute before its appeal deadline; an arbiter decides it (no slash
    /// runs meanwhile). Sent from the node operator's wallet.
    Appeal {
        /// The dispute id (as `dispute list` shows it).
        id: String,
        /// JSON-RPC URL of the chain.
        #[arg(long)]
        rpc: String,
        /// The `Disputes` contract's address; by default the one the control plane names.
        #[arg(long)]
        disputes: Option<String>,
        /// The operator's key file, if not the payout wallet's (`wallet.key` in the home).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
}

fn chain_err(e: ChainError) -> HostError {
    HostError::InvalidParameter(e.to_string())
}

fn deployment(disputes: &str) -> Result<Deployment> {
    let disputes: Address = disputes
        .parse()
        .map_err(|e| HostError::InvalidParameter(format!("--disputes {disputes:?}: expected the Disputes contract's address, 0x followed by 40 hex characters ({e})")))?;
    Ok(Deployment {
        token: Address::ZERO,
        node_registry: Address::ZERO,
        stake_vault: Address::ZERO,
        settlement: Address::ZERO,
        disputes,
        model_registry: Address::ZERO,
    })
}

/// The contract's status names, by its `Status` enum.
fn status_name(s: u8) -> &'static str {
    match s {
        1 => "open",
        2 => "upheld",
        3 => "rejected",
        4 => "appealed",
        5 => "overturned",
        6 => "executed",
        _ => "none",
    }
}

/// The disputes against `ctx`'s node, as JSON.
///
/// # Errors
/// `InvalidParameter` for a bad address or when the chain cannot be read.
pub async fn list(ctx: &Context, rpc: &str, disputes: &str) -> Result<serde_json::Value> {
    let d = deployment(disputes)?;
    let c = ChainClient::connect(rpc, PrivateKeySigner::random(), RetryPolicy::default()).await.map_err(chain_err)?;
    let mut out = Vec::new();
    for e in c.disputes_opened(&d, Some(&ctx.node_id)).await.map_err(chain_err)? {
        let r = c.dispute(&d, e.disputeId).await.map_err(chain_err)?;
        out.push(serde_json::json!({
            "dispute_id": e.disputeId.to_string(),
            "epoch_id": r.epochId,
            "evidence_hash": format!("0x{}", hex::encode(r.evidenceHash.0)),
            "status": status_name(r.status),
            "appeal_deadline": (r.appealDeadline > 0).then_some(r.appealDeadline),
            "slash_amount": r.slashAmount.to_string(),
            "challenger": r.challenger.to_string(),
        }));
    }
    Ok(serde_json::json!({"node_id": ctx.node_id.to_text(), "disputes": out}))
}

/// Appeals dispute `id` against `ctx`'s node.
///
/// # Errors
/// `InvalidParameter` for a bad id or address, a dispute about another node, no key, or a
/// refusal by the chain (not upheld, window closed, not the operator).
pub async fn appeal(ctx: &Context, id: &str, rpc: &str, disputes: &str, key_file: Option<PathBuf>) -> Result<serde_json::Value> {
    let d = deployment(disputes)?;
    let id: U256 = id.parse().map_err(|_| HostError::InvalidParameter(format!("dispute id {id:?}: a whole number")))?;
    let key = key_file.unwrap_or_else(|| ctx.home.root().join(WALLET_KEY_FILE));
    let signer = load_key_file(&key).map_err(|e| HostError::InvalidParameter(format!("the operator's key {}: {e} (pass --key-file, or make the wallet with `b3iqd wallet create`)", key.display())))?;
    let c = ChainClient::connect(rpc, signer, RetryPolicy::default()).await.map_err(chain_err)?;
    let r = c.dispute(&d, id).await.map_err(chain_err)?;
    if r.nodeId.0 != ctx.node_id.0 {
        return Err(HostError::InvalidParameter(format!("dispute {id} is not against this node ({})", ctx.node_id)));
    }
    let t = c.appeal_dispute(&d, id).await.map_err(chain_err)?;
    Ok(serde_json::json!({"dispute_id": id.to_string(), "status": "appealed", "tx_hash": t.tx_hash.to_string()}))
}

/// `--disputes`, else the `Disputes` address the node's control plane names.
async fn disputes_address(ctx: &Context, given: Option<String>) -> Result<String> {
    match given {
        Some(a) => Ok(a),
        None => Ok(b3iq_host::managed::wallet::network_contracts(ctx).await?.disputes.to_string()),
    }
}

/// Runs a `dispute` subcommand on the home's node.
///
/// # Errors
/// As [`list`] and [`appeal`].
pub async fn run(ctx: &Context, cmd: DisputeCmd) -> Result<ExitCode> {
    let v = match cmd {
        DisputeCmd::List { rpc, disputes } => list(ctx, &rpc, &disputes_address(ctx, disputes).await?).await?,
        DisputeCmd::Appeal { id, rpc, disputes, key_file } => appeal(ctx, &id, &rpc, &disputes_address(ctx, disputes).await?, key_file).await?,
    };
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}
