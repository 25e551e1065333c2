//! The gateway's end of the node-dialed tunnels: the challenge, the upgrade that opens a tunnel
//! after checking the node's signed hello, and the registry of live tunnels the router picks
//! from.
//!
//! A node opens a tunnel with `POST /v1/node/tunnel` (HTTP/1.1 `Upgrade: b3iq-tunnel/1`, the
//! signed `TunnelHello` in `x-b3iq-tunnel-hello`). The gateway checks, before answering 101: the
//! hello's signature and key, that it answers a live challenge of this gateway (used up here,
//! once), the node's clock, network mode in the hello, and that the node is enrolled, active and
//! unexpired in the store. It then runs hyper's HTTP/2 *client* on the upgraded connection with
//! PING keep-alive, and registers the tunnel with the models the hello names whose digest is a
//! catalog artifact (a verified manifest). The tunnel leaves the registry when its connection
//! ends (node gone, PING timeout, GOAWAY); a second tunnel from the same node replaces the first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use b3iq_core::digest::Sha256Digest;
use b3iq_core::{NodeId, NodePublicKey};
use b3iq_protocol::gateway::{TunnelChallenge, TunnelHello, TUNNEL_PROTOCOL};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::{ControlError, Result};
use crate::store::{ChallengeRow, NodeStatus, Refusal};

/// PING interval and timeout on tunnels.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// How long a node that refused a ticket by its policy is tried only after every other node
/// with spare capacity (not excluded: its schedule may open, its owner may lower the floor).
/// The policy itself stays on the node; this only spares most requests a round trip to it.
pub const POLICY_COOLDOWN_MS: u64 = 10_000;

/// How often a replica refreshes its tunnel sessions in the store.
pub const SESSION_REFRESH: Duration = Duration::from_secs(5);
/// A session not refreshed for this long is ignored by other replicas.
pub const SESSION_STALE_MS: u64 = 15_000;
/// How long a tunnel challenge stays valid.
pub const CHALLENGE_TTL_MS: u64 = 60_000;

/// A model as a tunnel offers it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OfferedModel {
    /// The public model id (the catalog profile id of its artifact).
    pub public_id: String,
    /// The id the node serves it under (what its ticket and body must name).
    pub node_model_id: String,
    /// The artifact.
    pub digest: Sha256Digest,
}

/// A live tunnel.
#[derive(Debug)]
pub struct Tunnel {
    /// The node.
    pub node_id: NodeId,
    /// Its key (receipts must verify with it).
    pub public_key: NodePublicKey,
    /// Models offered (only catalog artifacts).
    pub models: Vec<OfferedModel>,
    /// The node's network share: most requests at once.
    pub max_concurrent: u32,
    /// Requests in flight on it.
    pub in_flight: AtomicU32,
    /// Until when (unix ms) the gateway prefers other nodes: the node refused a ticket by its
    /// owner's network policy (price floor, schedule, daily budget) or refused the ticket
    /// itself. See [`POLICY_COOLDOWN_MS`].
    pub refused_until_ms: AtomicU64,
    /// Distinguishes tunnels of one node over time.
    pub epoch: u64,
    /// When it opened, unix ms.
    pub opened_at_ms: u64,
    send: tokio::sync::Mutex<SendRequest<Body>>,
}

impl Tunnel {
    /// A sender for one request (HTTP/2 senders are cheap clones sharing the connection).
    pub async fn sender(&self) -> SendRequest<Body> {
        self.send.lock().await.clone()
    }

    /// Whether the connection still takes requests.
    pub async fn is_open(&self) -> bool {
        !self.send.lock().await.is_closed()
    }
}

/// Live tunnels by node.
#[derive(Debug, Default)]
pub struct Registry {
    tunnels: RwLock<HashMap<NodeId, Arc<Tunnel>>>,
    epochs: AtomicU64,
}

impl Registry {
    /// Every live tunnel.
    pub fn all(&self) -> Vec<Arc<Tunnel>> {
        self.tunnels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// One node's tunnel.
    pub fn get(&self, node: &NodeId) -> Option<Arc<Tunnel>> {
        self.tunnels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned()
    }

    /// Removes `node`'s tunnel if it is still the one of `epoch`.
    fn remove(&self, node: &NodeId, epoch: u64) {
        let mut t = self.tunnels.write().unwrap_or_else(|p| p.into_inner());
        if t.get(node).is_some_and(|x| x.epoch == epoch) {
            t.remove(node);
        }
    }

    fn insert(&self, t: Arc<Tunnel>) {
        self.tunnels
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(t.node_id, t);
    }
}

/// The catalog profile id of an artifact digest: the models the network routes (the built-in
/// catalog is the verified manifest list).
pub fn catalog_id(digest: &Sha256Digest) -> Option<String> {
    let hex = digest.to_hex();
    b3iq_runtime::catalog::Catalog::builtin()
        .profiles
        .iter()
        .find(|p| p.sha256 == hex)
        .map(|p| p.id.clone())
}

impl super::Gateway {
    /// A fresh tunnel challenge (stored as a single-use challenge; the id is the nonce's first
    /// 16 bytes).
    ///
    /// # Errors
    /// `Refused` (429-like) when too many challenges are live; `Store`.
    pub async fn tunnel_challenge(&self, now_ms: u64) -> Result<TunnelChallenge> {
        let nonce: [u8; 32] = rand::random();
        let mut id = [0u8; 16];
        id.copy_from_slice(&nonce[..16]);
        let row = ChallengeRow {
            id,
            nonce,
            issued_at_ms: now_ms,
            expires_at_ms: now_ms + CHALLENGE_TTL_MS,
        };
        if !self.cp.store().create_challenge(&row, now_ms).await? {
            return Err(ControlError::TooMany(
                "too many tunnel challenges are live; retry in a few seconds".into(),
            ));
        }
        Ok(TunnelChallenge {
            gateway_id: self.id.clone(),
            nonce: b3iq_core::enrollment::Nonce(nonce),
            issued_at_ms: now_ms,
            expires_at_ms: row.expires_at_ms,
            ticket_key: self.ticket_key.public(),
        })
    }

    /// Checks a hello (see the module docs) and uses up its challenge. Returns the node's
    /// public key.
    ///
    /// # Errors
    /// `Invalid` for a hello that does not verify; `Refused` for a used challenge or a node that
    /// is not enrolled, active and unexpired.
    pub async fn check_hello(&self, hello: &TunnelHello, now_ms: u64) -> Result<()> {
        let mut id = [0u8; 16];
        id.copy_from_slice(&hello.nonce.0[..16]);
        let ch = self
            .cp
            .store()
            .live_challenge(&id, now_ms)
            .await?
            .filter(|c| c.nonce == hello.nonce.0)
            .ok_or(Refusal::ChallengeUsed)?;
        let challenge = TunnelChallenge {
            gateway_id: self.id.clone(),
            nonce: hello.nonce,
            issued_at_ms: ch.issued_at_ms,
            expires_at_ms: ch.expires_at_ms,
            ticket_key: self.ticket_key.public(),
        };
        let node = hello
            .verify(&challenge, now_ms, self.cp.config().max_clock_skew_ms)
            .map_err(|e| ControlError::Invalid {
                field: "tunnel_hello",
                reason: e.to_string(),
            })?;
        if !self.cp.store().use_challenge(&id, now_ms).await? {
            return Err(Refusal::ChallengeUsed.into());
        }
        let n = self
            .cp
            .store()
            .node(&node)
            .await?
            .ok_or(Refusal::UnknownNode)?;
        if n.public_key != hello.public_key {
            return Err(Refusal::UnknownNode.into());
        }
        match n.status {
            NodeStatus::Revoked => Err(Refusal::Revoked(n.status_reason).into()),
            NodeStatus::Suspended => Err(Refusal::Suspended(n.status_reason).into()),
            NodeStatus::Active if n.expires_at_ms <= now_ms => {
                Err(Refusal::EnrollmentExpired.into())
            }
            NodeStatus::Active => Ok(()),
        }
    }

    /// Runs the HTTP/2 client on an upgraded tunnel connection and registers it until it ends.
    pub(crate) async fn serve_tunnel(
        self: Arc<Self>,
        upgraded: hyper::upgrade::Upgraded,
        hello: TunnelHello,
        now_ms: u64,
    ) {
        let mut b = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .keep_alive_while_idle(true)
            // A verifiable answer's headers carry its attestation opening (token ids and
            // proofs): hex of about 8 bytes per token plus 262 per 32 tokens.
            .max_header_list_size(4 << 20);
        let (send, conn) = match b.handshake::<_, Body>(upgraded).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(node = %hello.node_id, error = %e, "tunnel: HTTP/2 handshake failed");
                return;
            }
        };
        let models: Vec<OfferedModel> = hello
            .models
            .iter()
            .filter_map(|m| match catalog_id(&m.digest) {
                Some(public_id) => Some(OfferedModel { public_id, node_model_id: m.model_id.clone(), digest: m.digest }),
                None => {
                    tracing::warn!(node = %hello.node_id, model = %m.model_id, digest = %m.digest.to_hex(), "tunnel: a model whose artifact is not in the catalog is not routed");
                    None
                }
            })
            .collect();
        let epoch = self.tunnels.epochs.fetch_add(1, Ordering::Relaxed) + 1;
        let tunnel = Arc::new(Tunnel {
            node_id: hello.node_id,
            public_key: hello.public_key,
            models,
            max_concurrent: hello.max_concurrent,
            in_flight: AtomicU32::new(0),
            refused_until_ms: AtomicU64::new(0),
            epoch,
            opened_at_ms: now_ms,
            send: tokio::sync::Mutex::new(send),
        });
        tracing::info!(node = %hello.node_id, models = tunnel.models.len(), share = hello.max_concurrent, epoch, "tunnel open");
        let session = self
            .config
            .replica_url
            .as_ref()
            .map(|url| crate::store::TunnelSession {
                node_id: hello.node_id,
                replica_url: url.clone(),
                epoch,
                max_concurrent: hello.max_concurrent,
                models: serde_json::to_value(&tunnel.models).unwrap_or_default(),
                updated_at_ms: now_ms,
            });
        self.tunnels.insert(tunnel);
        self.capacity.notify_waiters();
        // With replicas: say in the store that this replica holds the tunnel, refreshed while it
        // lives, so requests landing elsewhere are relayed here.
        tokio::pin!(conn);
        let mut refresh = tokio::time::interval(SESSION_REFRESH);
        let r = loop {
            tokio::select! {
                r = &mut conn => break r,
                _ = refresh.tick(), if session.is_some() => {
                    if let Some(s) = &session {
                        let s = crate::store::TunnelSession { updated_at_ms: b3iq_host::context::unix_now_ms(), ..s.clone() };
                        if let Err(e) = self.cp.store().put_tunnel_session(&s).await {
                            tracing::warn!(error = %e, "gateway: cannot record a tunnel session");
                        }
                    }
                }
            }
        };
        match r {
            Err(e) => tracing::info!(node = %hello.node_id, error = %e, "tunnel closed"),
            Ok(()) => tracing::info!(node = %hello.node_id, "tunnel closed"),
        }
        self.tunnels.remove(&hello.node_id, epoch);
        if let Some(s) = &session {
            let _ = self
                .cp
                .store()
                .drop_tunnel_session(&s.node_id, &s.replica_url, s.epoch)
                .await;
        }
    }
}

/// `Upgrade` header value of the tunnel.
pub fn protocol() -> &'static str {
    TUNNEL_PROTOCOL
}
