//! The public API (`/v1/public/...`): unauthenticated, read-only, and the explorer web app at
//! `/explorer/` that reads only it.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/public/status` | [`NetworkStatus`] |
//! | `GET /v1/public/nodes` | [`NodeList`] |
//! | `GET /v1/public/nodes/{node_id}` | [`PublicNode`] (404 for an unknown id) |
//! | `GET /v1/public/epochs` | [`EpochList`] (newest first, at most [`MAX_EPOCHS_LISTED`]) |
//! | `GET /v1/public/epochs/{epoch_id}` | [`PublicEpoch`] (404 for an unknown id) |
//! | `GET /v1/public/receipts/{receipt_id}` | [`ReceiptInclusion`] (404 for a receipt id not stored here) |
//!
//! Errors are the control plane's `{"error": {"message", "type", "code"}}`: 400 for a malformed
//! id, 404 for an unknown one.
//!
//! **What these types may hold.** Only what anyone may see: public node ids, presence, tiers,
//! scores, counts, rates, timestamps, model ids, epoch roots, totals and transaction hashes.
//! They cannot hold prompts, outputs, keys or their hashes, organisation or customer identity,
//! node addresses (network or payout), local URLs, paths or tunnel details. The test
//! `public_types_hold_only_allowlisted_fields` serialises a fully populated value of every type
//! and fails on any field name outside its allowlist, so a new field is reviewed before it
//! ships.
//!
//! The receipt inclusion proof is against the epoch's `receipt_root` as posted on chain: the
//! b3iq-core blake3 tree (RFC 6962 shape, leaf `blake3(0x00 || receipt_id)`, node
//! `blake3(0x01 || left || right)`) over the epoch's accepted receipt ids in ascending order.
//! The explorer verifies it in the browser.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use b3iq_core::receipt::ReceiptId;
use b3iq_core::reputation::ReputationParams;
use b3iq_core::{Hash32, NodeId};
use b3iq_host::context::unix_now_ms;
use b3iq_protocol::messages::JobResultData;
use b3iq_protocol::settlement::ClaimFile;
use rust_embed::RustEmbed;
use serde::Serialize;

use crate::error::{ControlError, Result};
use crate::gateway::Gateway;
use crate::plane::ControlPlane;
use crate::store::{EpochRow, NodeRow, Refusal};

/// Most nodes listed by `GET /v1/public/nodes`.
pub const MAX_NODES_LISTED: u32 = 1000;
/// Most epochs listed by `GET /v1/public/epochs` (and summed into [`EpochTotals`]).
pub const MAX_EPOCHS_LISTED: u32 = 1000;
/// The window of [`PublicNode::availability_24h_bps`], ms.
pub const AVAILABILITY_WINDOW_MS: u64 = 86_400_000;

/// `GET /v1/public/status`: the network at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkStatus {
    /// When this answer was made, unix ms.
    pub generated_at_ms: u64,
    /// Nodes by presence.
    pub nodes: PresenceCounts,
    /// Models offered by nodes with an open tunnel now, with route readiness.
    pub models: Vec<PublicModel>,
    /// Epochs summed.
    pub epochs: EpochTotals,
}

/// Node counts by presence (`online`: a fresh heartbeat; `offline`: heartbeats stopped;
/// `never_seen`: enrolled, no heartbeat yet; `expired`: enrollment not renewed; `suspended`,
/// `revoked`: by an operator).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PresenceCounts {
    /// Every node.
    pub total: u64,
    /// Online.
    pub online: u64,
    /// Offline.
    pub offline: u64,
    /// Never seen.
    pub never_seen: u64,
    /// Expired.
    pub expired: u64,
    /// Suspended.
    pub suspended: u64,
    /// Revoked.
    pub revoked: u64,
}

/// One model's route readiness (the gateway's `GET /v1/network/models`, this replica's view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicModel {
    /// Public model id (catalog profile id).
    pub model: String,
    /// Nodes ready to serve it now (tunnel open, heartbeat fresh).
    pub nodes_ready: u32,
    /// Ready nodes per trust tier.
    pub tiers: Vec<PublicTierCount>,
    /// Requests the ready nodes take at once, summed.
    pub capacity: u32,
    /// Requests in flight now.
    pub in_flight: u32,
    /// Requests waiting in the gateway's queue.
    pub waiting: u32,
    /// The medians' window, seconds.
    pub window_s: u32,
    /// Settled receipts in the window.
    pub samples: u32,
    /// Median time to first token in the window, ms.
    pub median_ttft_ms: Option<u64>,
    /// Median generation rate in the window, tokens per second x 1000.
    pub median_tokens_per_s_milli: Option<u64>,
}

/// Nodes of one trust tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicTierCount {
    /// Trust tier, 0 (best effort) to 3.
    pub tier: u8,
    /// Nodes.
    pub nodes: u32,
}

/// Settlement epochs summed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EpochTotals {
    /// Epochs closed.
    pub epochs: u64,
    /// Epochs posted on chain.
    pub posted: u64,
    /// Receipts committed by the posted epochs.
    pub receipt_count: u64,
    /// Paid out by the posted epochs, token base units (decimal string).
    pub total_payout: String,
    /// The newest epoch's id.
    pub latest_epoch_id: Option<u64>,
}

/// `GET /v1/public/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeList {
    /// Nodes, oldest enrollment first (at most [`MAX_NODES_LISTED`]).
    pub nodes: Vec<PublicNode>,
}

/// A node as anyone may see it, by its public id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicNode {
    /// Public node id (`b3n_...`).
    pub node_id: String,
    /// Trust tier, 0 (best effort) to 3. Every node is tier 0 until verification assigns
    /// higher tiers.
    pub tier: u8,
    /// Reputation score, basis points (0..=10,000; b3iq-core's decaying score; a new node
    /// starts at 0).
    pub reputation_bps: u32,
    /// Presence: `online`, `offline`, `never_seen`, `expired`, `suspended` or `revoked`.
    pub presence: String,
    /// The node process's uptime at its last heartbeat, seconds.
    pub uptime_s: Option<u64>,
    /// Heartbeats received over the last 24 h (or since enrollment, if later) against those
    /// expected at the heartbeat interval, basis points (capped at 10,000).
    pub availability_24h_bps: u32,
    /// First enrollment, unix ms.
    pub enrolled_at_ms: u64,
    /// Last heartbeat received, unix ms.
    pub last_seen_ms: Option<u64>,
    /// The `b3iqd` version of its last heartbeat.
    pub software_version: Option<String>,
    /// Public model ids it offers on the network now (empty without an open tunnel).
    pub models: Vec<String>,
    /// Receipts it uploaded.
    pub receipt_count: u64,
    /// Its latest successful benchmark, if any.
    pub benchmark: Option<BenchmarkSummary>,
}

/// A `run_benchmark` job's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BenchmarkSummary {
    /// Generated tokens per second x 1000.
    pub generated_tokens_per_s_milli: u64,
    /// Prompt tokens per second x 1000.
    pub prompt_tokens_per_s_milli: u64,
    /// Time to first token, ms.
    pub ttft_ms: u64,
    /// When the node reported it, unix ms.
    pub measured_at_ms: u64,
}

/// `GET /v1/public/epochs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EpochList {
    /// Epochs, newest first.
    pub epochs: Vec<PublicEpoch>,
}

/// A settlement epoch. The roots and totals appear once it is built; `tx_hash` and `posted_at`
/// once it is on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicEpoch {
    /// Epoch id (the on-chain key), from 1.
    pub epoch_id: u64,
    /// `closed` (receipts assigned, not built), `built` (claim file stored, not yet posted),
    /// `posted` (on chain), or `empty` (nothing to pay; never posted).
    pub status: String,
    /// Earliest receipt start time, unix ms (inclusive).
    pub start_ms: u64,
    /// End, unix ms (exclusive).
    pub end_ms: u64,
    /// When it closed, unix ms.
    pub closed_at_ms: u64,
    /// Receipts assigned to it when it closed.
    pub receipts_assigned: u64,
    /// Receipts committed by its receipt root (assigned ones of a node without a payout
    /// address are left out).
    pub receipt_count: Option<u64>,
    /// blake3 receipt root, hex.
    pub receipt_root: Option<Hash32>,
    /// keccak256 payout root, hex.
    pub payout_root: Option<Hash32>,
    /// Sum of its payouts, token base units (decimal string).
    pub total_payout: Option<String>,
    /// Payout leaves.
    pub leaf_count: Option<u64>,
    /// The post transaction's hash (`0x...`), when this control plane sent it.
    pub tx_hash: Option<String>,
    /// Block timestamp of the post, seconds.
    pub posted_at: Option<u64>,
}

/// `GET /v1/public/receipts/{receipt_id}`: where a receipt is, and its inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceiptInclusion {
    /// The receipt id asked about, hex.
    pub receipt_id: Hash32,
    /// `included` (in a posted epoch's receipt tree: `proof` is set), `pending` (stored, in no
    /// epoch yet), `not_posted` (in an epoch not on chain yet), or `left_out` (in an epoch,
    /// but not committed by its root: its node had no payout address).
    pub status: String,
    /// Its epoch.
    pub epoch_id: Option<u64>,
    /// The proof, when included.
    pub proof: Option<InclusionProof>,
}

/// A blake3 Merkle inclusion proof (RFC 9162 §2.1.3.2 verification) of a receipt id in an
/// epoch's posted receipt root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InclusionProof {
    /// The leaf's index (the receipt's position among the epoch's ids, ascending).
    pub leaf_index: u64,
    /// Leaves in the tree.
    pub leaf_count: u64,
    /// Sibling hashes from the leaf up, hex.
    pub siblings: Vec<Hash32>,
    /// The root the proof ends at: the epoch's posted `receipt_root`, hex.
    pub receipt_root: Hash32,
    /// The post transaction's hash (`0x...`), when known.
    pub tx_hash: Option<String>,
    /// Block timestamp of the post, seconds.
    pub posted_at: u64,
}

// ---- building the answers ------------------------------------------------------------------

/// How long `GET /v1/public/status` and `GET /v1/public/nodes` answers are reused, ms: both
/// read every node (and the status every epoch's claim file), so an unauthenticated caller
/// cannot make the store do that more often than this.
pub const CACHE_MS: u64 = 2_000;

/// Answers the public API from the control plane (and its gateway, for readiness and offered
/// models, when this process runs one).
#[derive(Debug, Clone)]
pub struct PublicApi {
    cp: Arc<ControlPlane>,
    gateway: Option<Arc<Gateway>>,
    /// The last status and node list with their times; locked while one is made, so callers
    /// arriving meanwhile get it instead of making another.
    status_cache: Arc<tokio::sync::Mutex<Option<(u64, NetworkStatus)>>>,
    nodes_cache: Arc<tokio::sync::Mutex<Option<(u64, NodeList)>>>,
}

impl PublicApi {
    /// The API over `cp` and, when given, its gateway.
    pub fn new(cp: Arc<ControlPlane>, gateway: Option<Arc<Gateway>>) -> Self {
        Self { cp, gateway, status_cache: Default::default(), nodes_cache: Default::default() }
    }

    /// [`Self::status`], reused for [`CACHE_MS`].
    ///
    /// # Errors
    /// `Store`.
    pub async fn status_cached(&self, now_ms: u64) -> Result<NetworkStatus> {
        let mut c = self.status_cache.lock().await;
        match c.as_ref() {
            Some((at, v)) if now_ms < at.saturating_add(CACHE_MS) => Ok(v.clone()),
            _ => {
                let v = self.status(now_ms).await?;
                *c = Some((now_ms, v.clone()));
                Ok(v)
            }
        }
    }

    /// [`Self::nodes`], reused for [`CACHE_MS`].
    ///
    /// # Errors
    /// `Store`.
    pub async fn nodes_cached(&self, now_ms: u64) -> Result<NodeList> {
        let mut c = self.nodes_cache.lock().await;
        match c.as_ref() {
            Some((at, v)) if now_ms < at.saturating_add(CACHE_MS) => Ok(v.clone()),
            _ => {
                let v = self.nodes(now_ms).await?;
                *c = Some((now_ms, v.clone()));
                Ok(v)
            }
        }
    }

    /// `GET /v1/public/status`.
    ///
    /// # Errors
    /// `Store`.
    pub async fn status(&self, now_ms: u64) -> Result<NetworkStatus> {
        let mut nodes = PresenceCounts::default();
        for n in self.cp.store().all_nodes(MAX_NODES_LISTED).await? {
            nodes.total += 1;
            match self.cp.presence(&n, now_ms) {
                "online" => nodes.online += 1,
                "offline" => nodes.offline += 1,
                "never_seen" => nodes.never_seen += 1,
                "expired" => nodes.expired += 1,
                "suspended" => nodes.suspended += 1,
                _ => nodes.revoked += 1,
            }
        }
        let models = match &self.gateway {
            Some(gw) => gw
                .readiness(now_ms)
                .await
                .models
                .into_iter()
                .map(|r| PublicModel {
                    model: r.model,
                    nodes_ready: r.nodes_ready,
                    tiers: r.tiers.iter().map(|t| PublicTierCount { tier: t.tier as u8, nodes: t.nodes }).collect(),
                    capacity: r.capacity,
                    in_flight: r.in_flight,
                    waiting: r.waiting,
                    window_s: r.window_s,
                    samples: r.samples,
                    median_ttft_ms: r.median_ttft_ms,
                    median_tokens_per_s_milli: r.median_tokens_per_s_milli,
                })
                .collect(),
            None => Vec::new(),
        };
        let mut epochs = EpochTotals::default();
        let mut paid: u128 = 0;
        for e in self.cp.store().epochs(MAX_EPOCHS_LISTED).await? {
            epochs.epochs += 1;
            epochs.latest_epoch_id = Some(epochs.latest_epoch_id.unwrap_or(0).max(e.epoch_id));
            let p = epoch(&e)?;
            if p.status == "posted" {
                epochs.posted += 1;
                epochs.receipt_count += p.receipt_count.unwrap_or(0);
                paid = paid.saturating_add(p.total_payout.as_deref().and_then(|t| t.parse().ok()).unwrap_or(0));
            }
        }
        epochs.total_payout = paid.to_string();
        Ok(NetworkStatus { generated_at_ms: now_ms, nodes, models, epochs })
    }

    /// `GET /v1/public/nodes`.
    ///
    /// # Errors
    /// `Store`.
    pub async fn nodes(&self, now_ms: u64) -> Result<NodeList> {
        let reputations = self.cp.store().reputations().await?;
        let mut nodes = Vec::new();
        for n in self.cp.store().all_nodes(MAX_NODES_LISTED).await? {
            nodes.push(self.node_view(n, &reputations, now_ms).await?);
        }
        Ok(NodeList { nodes })
    }

    /// `GET /v1/public/nodes/{node_id}`.
    ///
    /// # Errors
    /// `Refused(NotFound)` for an unknown node; `Store`.
    pub async fn node(&self, id: &NodeId, now_ms: u64) -> Result<PublicNode> {
        let n = self.cp.store().node(id).await?.ok_or_else(|| Refusal::NotFound(format!("node {id}")))?;
        let reputations = self.cp.store().reputations().await?;
        self.node_view(n, &reputations, now_ms).await
    }

    async fn node_view(&self, n: NodeRow, reputations: &[b3iq_core::reputation::Reputation], now_ms: u64) -> Result<PublicNode> {
        let store = self.cp.store();
        let reputation_bps = reputations
            .iter()
            .find(|r| r.node_id() == n.node_id)
            .map(|r| r.score_bps(now_ms, &ReputationParams::default()))
            .unwrap_or(0);
        let since = now_ms.saturating_sub(AVAILABILITY_WINDOW_MS).max(n.enrolled_at_ms);
        let interval = self.cp.config().heartbeat_interval_ms.max(1);
        let expected = now_ms.saturating_sub(since) / interval;
        let availability_24h_bps = if expected == 0 {
            0
        } else {
            let got = store.heartbeat_count(&n.node_id, since).await?;
            (u128::from(got) * 10_000 / u128::from(expected)).min(10_000) as u32
        };
        let mut models: Vec<String> = match &self.gateway {
            Some(gw) => gw.tunnels().all().iter().filter(|t| t.node_id == n.node_id).flat_map(|t| t.models.iter().map(|m| m.public_id.clone())).collect(),
            None => Vec::new(),
        };
        models.sort();
        models.dedup();
        let benchmark = store.last_job(&n.node_id, "run_benchmark", "succeeded").await?.and_then(|j| {
            let at = j.finished_at_ms?;
            match serde_json::from_value::<JobResultData>(j.result?).ok()? {
                JobResultData::Benchmark { generated_tokens_per_s_milli, prompt_tokens_per_s_milli, ttft_ms } => {
                    Some(BenchmarkSummary { generated_tokens_per_s_milli, prompt_tokens_per_s_milli, ttft_ms, measured_at_ms: at })
                }
                _ => None,
            }
        });
        Ok(PublicNode {
            node_id: n.node_id.to_text(),
            tier: b3iq_core::TrustTier::BestEffort as u8,
            reputation_bps,
            presence: self.cp.presence(&n, now_ms).to_string(),
            uptime_s: n.last_heartbeat.as_ref().and_then(|h| h.body["counts"]["uptime_s"].as_u64()),
            availability_24h_bps,
            enrolled_at_ms: n.enrolled_at_ms,
            last_seen_ms: n.last_heartbeat.as_ref().map(|h| h.received_at_ms),
            software_version: n.last_heartbeat.as_ref().and_then(|h| h.body["software_version"].as_str()).map(str::to_string),
            models,
            receipt_count: store.receipt_count(&n.node_id).await?,
            benchmark,
        })
    }

    /// `GET /v1/public/epochs`.
    ///
    /// # Errors
    /// `Store`.
    pub async fn epochs(&self) -> Result<EpochList> {
        let epochs = self.cp.store().epochs(MAX_EPOCHS_LISTED).await?.iter().map(epoch).collect::<Result<_>>()?;
        Ok(EpochList { epochs })
    }

    /// `GET /v1/public/epochs/{epoch_id}`.
    ///
    /// # Errors
    /// `Refused(NotFound)` for an unknown epoch; `Store`.
    pub async fn epoch(&self, epoch_id: u64) -> Result<PublicEpoch> {
        let e = self.cp.store().epoch(epoch_id).await?.ok_or_else(|| Refusal::NotFound(format!("epoch {epoch_id}")))?;
        epoch(&e)
    }

    /// `GET /v1/public/receipts/{receipt_id}`.
    ///
    /// # Errors
    /// `Refused(NotFound)` for a receipt id not stored here, or (for a receipt in a posted
    /// epoch) when settlement is not configured; `Store`.
    pub async fn receipt(&self, receipt_id: &ReceiptId) -> Result<ReceiptInclusion> {
        let store = self.cp.store();
        let place = store.receipt_epoch(&receipt_id.0).await?.ok_or_else(|| Refusal::NotFound(format!("receipt {receipt_id}")))?;
        let answer = |status: &str, epoch_id: Option<u64>, proof: Option<InclusionProof>| ReceiptInclusion { receipt_id: Hash32(receipt_id.0), status: status.into(), epoch_id, proof };
        let Some(epoch_id) = place else { return Ok(answer("pending", None, None)) };
        let e = store.epoch(epoch_id).await?.ok_or_else(|| Refusal::NotFound(format!("epoch {epoch_id}")))?;
        let Some(posted_at) = e.posted_at.filter(|t| *t > 0) else {
            // Posted with nothing to pay (`posted_at` 0): nothing was committed.
            let status = if e.posted_at == Some(0) { "left_out" } else { "not_posted" };
            return Ok(answer(status, Some(epoch_id), None));
        };
        let tree = self.cp.settler()?.receipt_tree(&e).await?;
        Ok(match tree.prove(receipt_id) {
            Some((leaf_index, p)) => answer(
                "included",
                Some(epoch_id),
                Some(InclusionProof { leaf_index, leaf_count: p.leaf_count, siblings: p.siblings, receipt_root: tree.tree.root(), tx_hash: e.tx_hash.clone(), posted_at }),
            ),
            None => answer("left_out", Some(epoch_id), None),
        })
    }
}

/// The public view of an epoch row.
fn epoch(e: &EpochRow) -> Result<PublicEpoch> {
    let file: Option<ClaimFile> = e
        .claim_file
        .as_deref()
        .map(|f| serde_json::from_str(f).map_err(|x| ControlError::Store(format!("epoch {} claim file: {x}", e.epoch_id))))
        .transpose()?;
    let status = match (e.posted_at, &file) {
        (Some(0), _) => "empty",
        (Some(_), _) => "posted",
        (None, Some(_)) => "built",
        (None, None) => "closed",
    };
    Ok(PublicEpoch {
        epoch_id: e.epoch_id,
        status: status.into(),
        start_ms: e.start_ms,
        end_ms: e.end_ms,
        closed_at_ms: e.closed_at_ms,
        receipts_assigned: e.receipt_count,
        receipt_count: file.as_ref().map(|f| f.receipt_count),
        receipt_root: file.as_ref().map(|f| f.receipt_root),
        payout_root: file.as_ref().map(|f| f.payout_root),
        total_payout: file.as_ref().map(|f| f.total_payout.clone()),
        leaf_count: file.as_ref().map(|f| f.leaf_count),
        tx_hash: e.tx_hash.clone(),
        posted_at: e.posted_at.filter(|t| *t > 0),
    })
}

// ---- HTTP ----------------------------------------------------------------------------------

/// The public routes and the explorer, to merge with the control plane's.
pub fn router(cp: Arc<ControlPlane>, gateway: Option<Arc<Gateway>>) -> Router {
    Router::new()
        .route("/v1/public/status", get(status))
        .route("/v1/public/nodes", get(nodes))
        .route("/v1/public/nodes/{node_id}", get(node))
        .route("/v1/public/epochs", get(epochs))
        .route("/v1/public/epochs/{epoch_id}", get(one_epoch))
        .route("/v1/public/receipts/{receipt_id}", get(receipt))
        .route("/explorer", get(|| async { Redirect::to("/explorer/") }))
        .route("/explorer/", get(explorer_index))
        .route("/explorer/{*path}", get(explorer_asset))
        .with_state(Arc::new(PublicApi::new(cp, gateway)))
}

type Api = State<Arc<PublicApi>>;

fn json<T: Serialize>(v: T) -> Response {
    let mut r = axum::Json(v).into_response();
    // Public, read-only and free of credentials: any origin may read it.
    r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn status(State(api): Api) -> Result<Response> {
    Ok(json(api.status_cached(unix_now_ms()).await?))
}

async fn nodes(State(api): Api) -> Result<Response> {
    Ok(json(api.nodes_cached(unix_now_ms()).await?))
}

async fn node(State(api): Api, Path(id): Path<String>) -> Result<Response> {
    let id = NodeId::parse(&id).map_err(|e| ControlError::Invalid { field: "node_id", reason: e.to_string() })?;
    Ok(json(api.node(&id, unix_now_ms()).await?))
}

async fn epochs(State(api): Api) -> Result<Response> {
    Ok(json(api.epochs().await?))
}

async fn one_epoch(State(api): Api, Path(id): Path<String>) -> Result<Response> {
    let id = id.parse::<u64>().map_err(|_| ControlError::Invalid { field: "epoch_id", reason: format!("{id:?} is not an epoch id (a whole number from 1)") })?;
    Ok(json(api.epoch(id).await?))
}

async fn receipt(State(api): Api, Path(id): Path<String>) -> Result<Response> {
    let id = ReceiptId::from_hex(&id).map_err(|_| ControlError::Invalid { field: "receipt_id", reason: "a receipt id is 64 lowercase hex characters".into() })?;
    Ok(json(api.receipt(&id).await?))
}

// ---- the explorer --------------------------------------------------------------------------

#[derive(RustEmbed)]
#[folder = "../apps/explorer/dist/"]
struct Explorer;

/// The Content-Security-Policy sent with every explorer file (the wizard's).
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

async fn explorer_index() -> Response {
    serve("index.html")
}

/// A file, or `index.html` for extension-less client routes.
async fn explorer_asset(Path(path): Path<String>) -> Response {
    if path.is_empty() || Explorer::get(&path).is_some() {
        return serve(if path.is_empty() { "index.html" } else { &path });
    }
    if !path.rsplit('/').next().unwrap_or("").contains('.') {
        return serve("index.html");
    }
    ControlError::from(Refusal::NotFound("file".into())).into_response()
}

fn serve(path: &str) -> Response {
    let Some(file) = Explorer::get(path) else {
        return ControlError::from(Refusal::NotFound("file".into())).into_response();
    };
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let mut r = Response::new(Body::from(file.data.into_owned()));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    let cache = if path == "index.html" {
        "no-store"
    } else if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Field names each public type may carry, reviewed against the module's rule (no prompts,
    /// outputs, keys or their hashes, org or customer identity, node addresses, local URLs,
    /// paths, tunnel details). Adding a field to a type fails the test until it is added here.
    const ALLOWED: &[(&str, &[&str])] = &[
        ("NetworkStatus", &["generated_at_ms", "nodes", "models", "epochs"]),
        ("PresenceCounts", &["total", "online", "offline", "never_seen", "expired", "suspended", "revoked"]),
        ("PublicModel", &["model", "nodes_ready", "tiers", "capacity", "in_flight", "waiting", "window_s", "samples", "median_ttft_ms", "median_tokens_per_s_milli"]),
        ("PublicTierCount", &["tier", "nodes"]),
        ("EpochTotals", &["epochs", "posted", "receipt_count", "total_payout", "latest_epoch_id"]),
        ("NodeList", &["nodes"]),
        ("PublicNode", &["node_id", "tier", "reputation_bps", "presence", "uptime_s", "availability_24h_bps", "enrolled_at_ms", "last_seen_ms", "software_version", "models", "receipt_count", "benchmark"]),
        ("BenchmarkSummary", &["generated_tokens_per_s_milli", "prompt_tokens_per_s_milli", "ttft_ms", "measured_at_ms"]),
        ("EpochList", &["epochs"]),
        ("PublicEpoch", &["epoch_id", "status", "start_ms", "end_ms", "closed_at_ms", "receipts_assigned", "receipt_count", "receipt_root", "payout_root", "total_payout", "leaf_count", "tx_hash", "posted_at"]),
        ("ReceiptInclusion", &["receipt_id", "status", "epoch_id", "proof"]),
        ("InclusionProof", &["leaf_index", "leaf_count", "siblings", "receipt_root", "tx_hash", "posted_at"]),
    ];

    /// Names no public field may have, whatever the allowlist says (a second net).
    const FORBIDDEN_PARTS: &[&str] = &["prompt", "output", "content", "message", "key", "secret", "token_hash", "org", "customer", "address", "url", "path", "host", "ip", "tunnel", "replica", "email", "user", "password", "session", "request_id", "signed", "account"];

    /// Fields whose names contain a forbidden part but hold no private value (reviewed).
    const REVIEWED: &[(&str, &str)] = &[("BenchmarkSummary", "prompt_tokens_per_s_milli")];

    fn node() -> PublicNode {
        PublicNode {
            node_id: "b3n_x".into(),
            tier: 0,
            reputation_bps: 1,
            presence: "online".into(),
            uptime_s: Some(1),
            availability_24h_bps: 1,
            enrolled_at_ms: 1,
            last_seen_ms: Some(1),
            software_version: Some("0.1.0".into()),
            models: vec!["m".into()],
            receipt_count: 1,
            benchmark: Some(BenchmarkSummary { generated_tokens_per_s_milli: 1, prompt_tokens_per_s_milli: 1, ttft_ms: 1, measured_at_ms: 1 }),
        }
    }

    fn epoch() -> PublicEpoch {
        PublicEpoch {
            epoch_id: 1,
            status: "posted".into(),
            start_ms: 1,
            end_ms: 2,
            closed_at_ms: 2,
            receipts_assigned: 1,
            receipt_count: Some(1),
            receipt_root: Some(Hash32([1; 32])),
            payout_root: Some(Hash32([2; 32])),
            total_payout: Some("1".into()),
            leaf_count: Some(1),
            tx_hash: Some("0x01".into()),
            posted_at: Some(1),
        }
    }

    /// Every public type, fully populated (every `Option` set, every list non-empty), with its
    /// name.
    fn samples() -> Vec<(&'static str, Value)> {
        let model = PublicModel { model: "m".into(), nodes_ready: 1, tiers: vec![PublicTierCount { tier: 0, nodes: 1 }], capacity: 1, in_flight: 0, waiting: 0, window_s: 3600, samples: 1, median_ttft_ms: Some(1), median_tokens_per_s_milli: Some(1) };
        let totals = EpochTotals { epochs: 1, posted: 1, receipt_count: 1, total_payout: "1".into(), latest_epoch_id: Some(1) };
        let status = NetworkStatus { generated_at_ms: 1, nodes: PresenceCounts { total: 1, online: 1, ..Default::default() }, models: vec![model], epochs: totals };
        let proof = InclusionProof { leaf_index: 0, leaf_count: 2, siblings: vec![Hash32([3; 32])], receipt_root: Hash32([1; 32]), tx_hash: Some("0x01".into()), posted_at: 1 };
        let inclusion = ReceiptInclusion { receipt_id: Hash32([4; 32]), status: "included".into(), epoch_id: Some(1), proof: Some(proof) };
        let v = |x: &dyn erased::Ser| x.value();
        vec![
            ("NetworkStatus", v(&status)),
            ("NodeList", v(&NodeList { nodes: vec![node()] })),
            ("PublicNode", v(&node())),
            ("EpochList", v(&EpochList { epochs: vec![epoch()] })),
            ("PublicEpoch", v(&epoch())),
            ("ReceiptInclusion", v(&inclusion)),
        ]
    }

    mod erased {
        pub trait Ser {
            fn value(&self) -> serde_json::Value;
        }
        impl<T: serde::Serialize> Ser for T {
            fn value(&self) -> serde_json::Value {
                serde_json::to_value(self).unwrap()
            }
        }
    }

    /// The type of each object-valued field, so the walk knows which allowlist applies.
    fn child_type(parent: &str, field: &str) -> Option<&'static str> {
        Some(match (parent, field) {
            ("NetworkStatus", "nodes") => "PresenceCounts",
            ("NetworkStatus", "models") => "PublicModel",
            ("NetworkStatus", "epochs") => "EpochTotals",
            ("PublicModel", "tiers") => "PublicTierCount",
            ("NodeList", "nodes") => "PublicNode",
            ("PublicNode", "benchmark") => "BenchmarkSummary",
            ("EpochList", "epochs") => "PublicEpoch",
            ("ReceiptInclusion", "proof") => "InclusionProof",
            _ => return None,
        })
    }

    fn walk(ty: &str, v: &Value, seen: &mut std::collections::BTreeSet<String>) {
        let allowed = ALLOWED.iter().find(|(t, _)| *t == ty).unwrap_or_else(|| panic!("{ty} has no allowlist")).1;
        let obj = v.as_object().unwrap_or_else(|| panic!("{ty} is not an object: {v}"));
        seen.insert(ty.to_string());
        for want in allowed {
            assert!(obj.contains_key(*want), "{ty}.{want} is allowlisted but missing: remove it from the list");
        }
        for (k, child) in obj {
            assert!(allowed.contains(&k.as_str()), "{ty}.{k} is not on the public allowlist: review it against the rule in public.rs, then add it");
            for bad in FORBIDDEN_PARTS.iter().filter(|_| !REVIEWED.contains(&(ty, k.as_str()))) {
                assert!(!k.split('_').any(|p| p == *bad), "{ty}.{k} names a private kind of value ({bad})");
            }
            assert!(!child.is_null(), "{ty}.{k} is null in the fully populated sample: set it");
            let items: Vec<&Value> = match child {
                Value::Array(a) => {
                    assert!(!a.is_empty(), "{ty}.{k} is empty in the fully populated sample");
                    a.iter().collect()
                }
                other => vec![other],
            };
            for item in items {
                match (item, child_type(ty, k)) {
                    (Value::Object(_), Some(t)) => walk(t, item, seen),
                    (Value::Object(_), None) => panic!("{ty}.{k} is an object with no allowlisted type: add it to child_type and ALLOWED"),
                    (_, Some(t)) => panic!("{ty}.{k} should be a {t} object, got {item}"),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn public_types_hold_only_allowlisted_fields() {
        let mut seen = std::collections::BTreeSet::new();
        for (ty, v) in samples() {
            walk(ty, &v, &mut seen);
        }
        let listed: std::collections::BTreeSet<String> = ALLOWED.iter().map(|(t, _)| t.to_string()).collect();
        assert_eq!(seen, listed, "every allowlisted type is walked, and every walked type is listed");
    }

    /// The explorer's browser check (apps/explorer/src/merkle.test.ts) pins the same vector:
    /// five receipt ids `[i; 32]` (i = 1..=5), the root, and leaf 3's proof.
    #[test]
    fn receipt_tree_vector_shared_with_the_explorer() {
        let ids: Vec<[u8; 32]> = (1..=5u8).map(|i| [i; 32]).collect();
        let tree = b3iq_core::merkle::MerkleTree::from_leaves(&ids);
        let p = tree.prove(3).unwrap();
        let got = (tree.root().to_string(), p.siblings.iter().map(|h| h.to_string()).collect::<Vec<_>>());
        assert_eq!(got, (String::from("3eb572819de9fac6c5216ce8989fa2bd3cfb8965188aa3281ac7ad175a0e3e19"), vec![String::from("7e14f3d3c9ad356fc347f27541758e9af6fa7b71480d1933065abd0b649f3f8d"), String::from("e1aab36881d426fc59ec5a0a32475c0560eee0b621aad00ef8706f56963d2d4b"), String::from("cd05c3b84386766b0c620fdfdae01cb82142211737f768434303dcace44fd6b9")]), "{got:?}");
    }

    #[test]
    fn a_new_field_fails_the_walk() {
        let mut v = serde_json::to_value(node()).unwrap();
        v["payout_address"] = Value::String("0x00".into());
        let r = std::panic::catch_unwind(|| walk("PublicNode", &v, &mut Default::default()));
        assert!(r.is_err(), "an unlisted field must fail");
    }
}
