//! The node's payout wallet (`b3iqd wallet`): where its host share of each settlement epoch is
//! paid, what it earned, and claiming it on chain.
//!
//! * `b3iqd wallet create` (in the app, which holds the chain code): a new key made on this machine (`wallet.key` in the home, `0x` + 64 hex, mode
//!   0600, never overwritten); its address becomes the payout address.
//! * [`set_address`]: an address only (claims are then sent from elsewhere, or from here with a
//!   key file of another wallet: a claim pays the leaf's account whoever sends it).
//! * Both record the wallet in state.db ([`META_WALLET`]) and, when the node is enrolled, send
//!   the address to the control plane (`POST /v1/node/payout-address`, signed by the node key)
//!   so the next epochs pay it; an address recorded before enrolling (or whose send failed) is
//!   sent by the managed loop on its next heartbeat ([`send_pending`]).
//! * `b3iqd wallet earnings` (the app): the control plane's leaves and proofs for the address
//!   (`GET /v1/payouts/{address}`), each marked claimed or not from the chain (`isClaimed`).
//! * `b3iqd wallet claim` (the app): claims every posted epoch not yet claimed (`Settlement.claim`), skips claimed
//!   ones, and reports epochs still in their challenge window.
//! * `b3iqd wallet register | stake | unbond | stake-status` (the app): on-chain registration
//!   and stake; the control plane's side is [`request_registration`] (its attestation) and
//!   [`network_contracts`] (the contract addresses).

use std::path::PathBuf;

pub use b3iq_core::payout::EthAddress;
use b3iq_protocol::messages::Audience;
use b3iq_protocol::payout_api::{AccountPayouts, PayoutAddressAck, PayoutAddressRequest};
use b3iq_protocol::registration_api::{NetworkContracts, RegistrationGrant, RegistrationRequest};

use super::{client, enrollment, post};
use crate::context::{unix_now_ms, Context};
use crate::error::{HostError, Result};

/// state.db meta key of the wallet (JSON [`Wallet`]).
pub const META_WALLET: &str = "payout_wallet";
/// The key file `b3iqd wallet create` makes, in the home.
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


/// Records `address` as the payout address (no key here).
///
/// # Errors
/// As [`record`].
pub async fn set_address(ctx: &Context, address: EthAddress) -> Result<Wallet> {
    let key_file = wallet(ctx)?.filter(|w| w.address == address).and_then(|w| w.key_file);
    record(ctx, address, key_file).await
}

/// Records `address` (with the key file that holds its key, when made here) as the payout
/// address and, when enrolled, sends it to the control plane.
///
/// # Errors
/// `Db`; `ControlPlane` when enrolled and the control plane refuses the address (it stays
/// recorded here and is sent again on the next heartbeat).
pub async fn record(ctx: &Context, address: EthAddress, key_file: Option<PathBuf>) -> Result<Wallet> {
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

/// Sends the recorded payout address when the control plane has not acknowledged it (set
/// before `b3iqd enroll`, or its send failed); the managed loop calls it on the heartbeat's
/// cadence, so an address set before enrolling reaches the control plane without a second
/// `set-address`. Returns whether it was sent and acknowledged now.
///
/// # Errors
/// `Db`; `ControlPlane` when unreachable or refused (retried on the next beat).
pub async fn send_pending(ctx: &Context, e: &super::Enrollment, c: &reqwest::Client) -> Result<bool> {
    let Some(mut w) = wallet(ctx)?.filter(|w| !w.sent_to_control_plane) else {
        return Ok(false);
    };
    let req = PayoutAddressRequest::sign(&ctx.key, w.address, unix_now_ms());
    let ack: PayoutAddressAck = post(c, &format!("{}/v1/node/payout-address", e.control_url), None, &req, None).await?;
    w.sent_to_control_plane = ack.address == w.address;
    save(ctx, &w)?;
    if w.sent_to_control_plane {
        tracing::info!(address = %w.address, "managed mode: payout address sent to the control plane");
    }
    Ok(w.sent_to_control_plane)
}

/// The control plane's payouts for the wallet's address.
///
/// # Errors
/// `InvalidParameter` when not enrolled; `ControlPlane`.
pub async fn payouts(ctx: &Context, w: &Wallet) -> Result<AccountPayouts> {
    get_json(ctx, "earnings", &format!("/v1/payouts/{}", w.address)).await
}

/// The enrollment, or a clear error naming what needs it.
///
/// # Errors
/// `InvalidParameter` when not enrolled; `Db`.
pub fn enrolled(ctx: &Context, what: &str) -> Result<super::Enrollment> {
    enrollment(&ctx.db)?.ok_or_else(|| HostError::InvalidParameter(format!("not enrolled: {what} goes through the control plane; enroll first (`b3iqd enroll`)")))
}

/// `GET` a JSON answer from the enrolled control plane.
async fn get_json<T: serde::de::DeserializeOwned>(ctx: &Context, what: &str, path: &str) -> Result<T> {
    let e = enrolled(ctx, what)?;
    let c = client(e.ca_pem.as_deref())?;
    let url = format!("{}{path}", e.control_url);
    let resp = c.get(&url).send().await.map_err(|x| HostError::ControlPlane(format!("unreachable: {x}")))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|x| HostError::ControlPlane(format!("unreachable: {x}")))?;
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        return Err(HostError::ControlPlane(format!("refused (HTTP {status}): {}", v["error"]["message"].as_str().unwrap_or(""))));
    }
    serde_json::from_slice(&body).map_err(|x| HostError::ControlPlane(format!("{path} answer does not parse: {x}")))
}

/// The chain and contracts of the control plane's network (`GET /v1/network/contracts`).
///
/// # Errors
/// `InvalidParameter` when not enrolled; `ControlPlane` (unreachable, or no chain configured
/// there).
pub async fn network_contracts(ctx: &Context) -> Result<NetworkContracts> {
    get_json(ctx, "staking", "/v1/network/contracts").await
}

/// Asks the control plane to attest this node for `NodeRegistry.register`, sent by `operator`
/// (`POST /v1/node/registration`, signed by the node key; b3iq-protocol's `registration_api`).
/// The answer is not checked here: the caller checks it against the chain before sending.
///
/// # Errors
/// `InvalidParameter` when not enrolled; `ControlPlane` when unreachable or refused (not in
/// network mode, suspended, ...).
pub async fn request_registration(ctx: &Context, operator: EthAddress) -> Result<RegistrationGrant> {
    let e = enrolled(ctx, "registration")?;
    let audience = Audience::new(&e.audience).map_err(|x| HostError::Config(format!("stored enrollment audience: {x}")))?;
    let c = client(e.ca_pem.as_deref())?;
    let req = RegistrationRequest::sign(&ctx.key, audience, operator, unix_now_ms());
    Ok(post(&c, &format!("{}/v1/node/registration", e.control_url), None, &req, None).await?)
}

/// The recorded wallet, or a clear error when there is none.
///
/// # Errors
/// `InvalidParameter` without a wallet; `Db`.
pub fn the_wallet(ctx: &Context) -> Result<Wallet> {
    wallet(ctx)?.ok_or_else(|| HostError::InvalidParameter("no payout wallet: run `b3iqd wallet create` or `b3iqd wallet set-address 0x...`".into()))
}

