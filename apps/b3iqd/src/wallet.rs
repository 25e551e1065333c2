//! `b3iqd wallet create | earnings | claim | register | stake | unbond | stake-status`: the
//! chain side of the payout wallet and of the operator wallet. It lives in
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
use b3iq_protocol::registration_api::NetworkContracts;

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

// ---- on-chain registration and stake (`b3iqd wallet register | stake | unbond | stake-status`)

/// The operator key: `key_file`, else the wallet's own (`b3iqd wallet create`).
fn operator_key(ctx: &Context, key_file: Option<PathBuf>) -> Result<b3iq_chain::PrivateKeySigner> {
    let key = match key_file {
        Some(k) => k,
        None => wallet::wallet(ctx)?.and_then(|w| w.key_file).ok_or_else(|| {
            HostError::InvalidParameter("no operator key: the operator wallet sends the registration and the stake; make one with `b3iqd wallet create` (wallet.key, mode 0600) or pass --key-file".into())
        })?,
    };
    load_key_file(&key).map_err(chain_err)
}

/// The control plane's contracts, and a client on `rpc` for `signer` checked to be on their chain.
async fn network_chain(ctx: &Context, rpc: &str, signer: b3iq_chain::PrivateKeySigner) -> Result<(ChainClient, Deployment, NetworkContracts)> {
    let n = wallet::network_contracts(ctx).await?;
    let c = ChainClient::connect(rpc, signer, RetryPolicy::default()).await.map_err(chain_err)?;
    // Unreachable: b3iq-chain's message names the URL and the attempts.
    let id = c.chain_id().await.map_err(chain_err)?;
    if id != n.chain_id {
        return Err(HostError::InvalidParameter(format!("--rpc is chain {id}, the control plane's network is on chain {}", n.chain_id)));
    }
    let a = |x: &EthAddress| b3iq_chain::Address::from(x.0);
    let d = Deployment { token: a(&n.stake_token), node_registry: a(&n.node_registry), stake_vault: a(&n.stake_vault), settlement: a(&n.settlement), disputes: b3iq_chain::Address::ZERO, model_registry: b3iq_chain::Address::ZERO };
    Ok((c, d, n))
}

fn eth(a: b3iq_chain::Address) -> EthAddress {
    EthAddress(a.0 .0)
}

/// Parses an amount of token base units (a whole number).
///
/// # Errors
/// `InvalidParameter` for anything but digits, zero, or more than 2^128 - 1.
pub fn parse_amount(s: &str) -> Result<u128> {
    let bad = || HostError::InvalidParameter(format!("amount {s:?}: a whole number of token base units above zero (with 18 decimals, 1 token is 1000000000000000000)"));
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    s.parse::<u128>().ok().filter(|a| *a > 0).ok_or_else(bad)
}

/// What `b3iqd wallet register` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RegisterStatus {
    /// Registered now.
    Registered {
        /// The node.
        node_id: String,
        /// The operator wallet that sent it.
        operator: EthAddress,
        /// Device class attested (sizes the minimum stake).
        device_class: u8,
        /// Transaction hash.
        tx_hash: String,
        /// Gas used.
        gas_used: u64,
    },
    /// Registered before with this key and operator; nothing sent.
    AlreadyRegistered {
        /// The node.
        node_id: String,
        /// The operator wallet.
        operator: EthAddress,
        /// Device class on chain.
        device_class: u8,
    },
}

/// Registers this node in `NodeRegistry`: the control plane attests it (`POST
/// /v1/node/registration`), the operator key sends `register` and waits for the receipt.
/// Idempotent: a node already registered with this key and operator is left alone.
///
/// # Errors
/// `InvalidParameter` when not enrolled, without an operator key, for the wrong chain, when
/// the chain is unreachable or the node is registered to another operator, or when the control
/// plane's attester is not the registry's; `ControlPlane` when it refuses (not in network
/// mode, ...); a transaction the chain refuses.
pub async fn register(ctx: &Context, rpc: &str, key_file: Option<PathBuf>) -> Result<RegisterStatus> {
    wallet::enrolled(ctx, "registration")?;
    let signer = operator_key(ctx, key_file)?;
    let operator = eth(signer.address());
    let (c, d, n) = network_chain(ctx, rpc, signer).await?;
    let id = ctx.key.node_id();
    let on_chain = c.node(&d, &id).await.map_err(chain_err)?;
    if on_chain.active {
        if on_chain.publicKey.0 != ctx.key.public().to_bytes() || on_chain.operator.0 .0 != operator.0 {
            return Err(HostError::InvalidParameter(format!("node {id} is registered to operator {} (this key: {operator}); that operator deregisters it first (NodeRegistry.deregister)", eth(on_chain.operator))));
        }
        return Ok(RegisterStatus::AlreadyRegistered { node_id: id.to_text(), operator, device_class: on_chain.deviceClass });
    }
    let g = wallet::request_registration(ctx, operator).await?;
    let a = &g.attestation;
    if a.node_id != id || a.public_key != ctx.key.public() || a.operator != operator || g.chain_id != n.chain_id || g.node_registry != n.node_registry {
        return Err(HostError::ControlPlane("the control plane attested another node, operator or registry than asked; not sent".into()));
    }
    let att = b3iq_chain::attestation::NodeAttestation {
        public_key: a.public_key,
        operator: signer_address(&operator),
        hardware_hash: a.hardware_hash,
        software_version: a.software_version,
        mode: a.mode,
        device_class: a.device_class,
        nonce: b3iq_chain::U256::from(a.nonce),
        deadline: a.deadline,
    };
    let sol = att.to_sol();
    let domain = b3iq_chain::attestation::registry_domain(g.chain_id, d.node_registry);
    let signed_by = b3iq_chain::attestation::recover_attester(&domain, &sol, &g.signature.0).map_err(chain_err)?;
    let registry_attester = c.registry_attester(&d).await.map_err(chain_err)?;
    if signed_by != registry_attester {
        return Err(HostError::InvalidParameter(format!(
            "the control plane signed with {} but NodeRegistry's attester is {}: the registry owner names the control plane's key with NodeRegistry.setAttester (`b3iq-control attester-address` prints it); nothing sent",
            eth(signed_by),
            eth(registry_attester)
        )));
    }
    let t = c.register_node(&d, sol, b3iq_chain::Bytes::from(g.signature.0.to_vec())).await.map_err(chain_err)?;
    Ok(RegisterStatus::Registered { node_id: id.to_text(), operator, device_class: a.device_class, tx_hash: t.tx_hash.to_string(), gas_used: t.gas_used })
}

fn signer_address(a: &EthAddress) -> b3iq_chain::Address {
    b3iq_chain::Address::from(a.0)
}

/// This node's registration and stake on chain: `{node_id, registered, operator, device_class,
/// bonded, unbonding, withdrawable_at, min_stake, is_staked}` (amounts: decimal strings of token
/// base units; `withdrawable_at`: unix seconds, 0 when nothing unbonds). Read only: no key needed.
///
/// # Errors
/// `InvalidParameter` when not enrolled, for the wrong chain, or when the chain is unreachable;
/// `ControlPlane`.
pub async fn stake_status(ctx: &Context, rpc: &str) -> Result<serde_json::Value> {
    let (c, d, _) = network_chain(ctx, rpc, b3iq_chain::PrivateKeySigner::random()).await?;
    status_json(ctx, &c, &d).await
}

async fn status_json(ctx: &Context, c: &ChainClient, d: &Deployment) -> Result<serde_json::Value> {
    let id = ctx.key.node_id();
    let n = c.node(d, &id).await.map_err(chain_err)?;
    let s = c.stake_of(d, &id).await.map_err(chain_err)?;
    let min = c.min_stake(d, n.deviceClass).await.map_err(chain_err)?;
    let staked = c.is_staked(d, &id).await.map_err(chain_err)?;
    Ok(serde_json::json!({
        "node_id": id.to_text(),
        "registered": n.active,
        "operator": (n.operator != b3iq_chain::Address::ZERO).then(|| eth(n.operator)),
        "device_class": n.deviceClass,
        "bonded": s.bonded.to_string(),
        "unbonding": s.unbonding.to_string(),
        "withdrawable_at": s.unbondingReleaseAt,
        "min_stake": min.to_string(),
        "is_staked": staked,
    }))
}

/// Stakes `amount` (token base units) for this node from the operator key: approves the vault
/// for `amount`, then `StakeVault.stake`. Returns the transaction and the new status.
///
/// # Errors
/// `InvalidParameter` when not enrolled, without an operator key, for the wrong chain or an
/// unreachable one, when the node is not registered to this operator, or when the token
/// balance is short; a transaction the chain refuses (below the class minimum, ...).
pub async fn stake(ctx: &Context, rpc: &str, amount: u128, key_file: Option<PathBuf>) -> Result<serde_json::Value> {
    let signer = operator_key(ctx, key_file)?;
    let operator = signer.address();
    let (c, d, _) = network_chain(ctx, rpc, signer).await?;
    let id = ctx.key.node_id();
    check_operator(&c, &d, &id, operator).await?;
    let balance = c.balance_of(&d, operator).await.map_err(chain_err)?;
    let amount = b3iq_chain::U256::from(amount);
    if balance < amount {
        return Err(HostError::InvalidParameter(format!("insufficient token balance: operator {} holds {balance} base units, staking needs {amount}", eth(operator))));
    }
    c.approve(&d, d.stake_vault, amount).await.map_err(chain_err)?;
    let t = c.stake(&d, &id, amount).await.map_err(chain_err)?;
    let mut v = status_json(ctx, &c, &d).await?;
    v["tx_hash"] = t.tx_hash.to_string().into();
    Ok(v)
}

/// Starts unbonding `amount` (token base units) of this node's bonded stake: it stops counting
/// at once (a node below its class minimum leaves network routing) and can be withdrawn after
/// the vault's unbonding delay. Returns the transaction and the new status.
///
/// # Errors
/// As [`stake`]; the chain refuses more than the bonded stake (`InsufficientBonded`).
pub async fn unbond(ctx: &Context, rpc: &str, amount: u128, key_file: Option<PathBuf>) -> Result<serde_json::Value> {
    let signer = operator_key(ctx, key_file)?;
    let operator = signer.address();
    let (c, d, _) = network_chain(ctx, rpc, signer).await?;
    check_operator(&c, &d, &ctx.key.node_id(), operator).await?;
    let t = c.request_unbond(&d, &ctx.key.node_id(), b3iq_chain::U256::from(amount)).await.map_err(chain_err)?;
    let mut v = status_json(ctx, &c, &d).await?;
    v["tx_hash"] = t.tx_hash.to_string().into();
    Ok(v)
}

/// Withdraws this node's unbonded stake to the operator wallet (`StakeVault.withdraw`), once
/// the vault's unbonding delay has passed. Returns the transaction, the amount and the new status.
///
/// # Errors
/// As [`stake`]; the chain refuses with `NothingUnbonding`, `UnbondingNotElapsed(releaseAt, now)`
/// or `FrozenByDispute`.
pub async fn withdraw(ctx: &Context, rpc: &str, key_file: Option<PathBuf>) -> Result<serde_json::Value> {
    let signer = operator_key(ctx, key_file)?;
    let operator = signer.address();
    let (c, d, _) = network_chain(ctx, rpc, signer).await?;
    let id = ctx.key.node_id();
    check_operator(&c, &d, &id, operator).await?;
    let amount = c.stake_of(&d, &id).await.map_err(chain_err)?.unbonding;
    let t = c.withdraw_stake(&d, &id).await.map_err(chain_err)?;
    let mut v = status_json(ctx, &c, &d).await?;
    v["tx_hash"] = t.tx_hash.to_string().into();
    v["withdrawn"] = amount.to_string().into();
    Ok(v)
}

/// Refuses a node that is not registered, or registered to another operator.
async fn check_operator(c: &ChainClient, d: &Deployment, id: &b3iq_core::NodeId, operator: b3iq_chain::Address) -> Result<()> {
    let n = c.node(d, id).await.map_err(chain_err)?;
    if !n.active {
        return Err(HostError::InvalidParameter(format!("node {id} is not registered on chain: run `b3iqd wallet register --rpc ...` first")));
    }
    if n.operator != operator {
        return Err(HostError::InvalidParameter(format!("node {id} is registered to operator {}, not {}: stake from that wallet (--key-file)", eth(n.operator), eth(operator))));
    }
    Ok(())
}
