//! The gateway's HTTP handlers: the node's tunnel (challenge, upgrade) and the public
//! OpenAI-compatible API.
//!
//! A public request goes: `b3iq_gateway_` key → its body (at most 1 MiB, JSON object) → a hold
//! for the worst case (`price(body bytes, max_tokens)`: a prompt token is at least one byte of
//! the body) → a node (power of two choices on in-flight / share among the fresh tunnels serving
//! the model, a node that refused by its policy in the last 10 s only when no other has room; waiting at most [`super::GatewayConfig::queue_wait`] in a bounded queue, else 429)
//! → a signed ticket and the body, with `model` set to the node's own id, on the node's tunnel →
//! the answer. Before the first byte a failure (tunnel error; 429, 503, or a node's refusal of the
//! ticket by its policy, 401/403) moves the request to another node; after it, a failure ends the stream with an SSE error event and no
//! `[DONE]`. The node's receipt (header, or an SSE comment before `[DONE]`, taken out of the
//! stream) is checked against the ticket and settles the hold; the rest is released. A request
//! with no valid receipt is not charged, and the node is not paid. Dropping the client's
//! connection drops the tunnel stream (`RST_STREAM`), which cancels the generation on the node.
//!
//! Nothing of a prompt or an output is stored or logged here.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use b3iq_core::receipt::{RequestId, SignedReceipt};
use b3iq_core::TrustTier;
use b3iq_host::context::unix_now_ms;
use b3iq_protocol::gateway::{
    RequestTicket, TicketFields, TunnelHello, HELLO_HEADER, RECEIPT_HEADER, RECEIPT_SSE_PREFIX,
    TICKET_HEADER, TUNNEL_PROTOCOL,
};
use b3iq_protocol::verification::{ATTESTATION_HEADER, ATTESTATION_SSE_PREFIX};
use http_body_util::BodyExt;
use serde_json::Value;

use super::credits::GatewayKey;
use super::tunnel::{OfferedModel, Tunnel};
use super::Gateway;
use crate::error::{ControlError, Result};

type Gw = State<Arc<Gateway>>;

/// Largest answer read whole from a node (a non-streamed completion).
pub const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Largest value of `max_tokens` accepted (the node's own bound).
pub const MAX_MAX_TOKENS: u64 = 4096;

/// `POST /v1/node/tunnel/challenge`.
pub async fn tunnel_challenge(State(gw): Gw) -> Result<Response> {
    Ok(axum::Json(gw.tunnel_challenge(unix_now_ms()).await?).into_response())
}

/// `POST /v1/node/tunnel` (HTTP/1.1 upgrade to `b3iq-tunnel/1`).
pub async fn open_tunnel(State(gw): Gw, mut req: Request) -> Result<Response> {
    let now = unix_now_ms();
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(TUNNEL_PROTOCOL));
    if !wants || req.version() != axum::http::Version::HTTP_11 {
        return Err(ControlError::Invalid { field: "upgrade", reason: format!("open a tunnel over HTTP/1.1 with `Connection: upgrade` and `Upgrade: {TUNNEL_PROTOCOL}`") });
    }
    let raw = req
        .headers()
        .get(HELLO_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(ControlError::Invalid {
            field: "tunnel_hello",
            reason: format!("send the signed hello in {HELLO_HEADER}"),
        })?;
    let hello = TunnelHello::from_header(raw)?;
    gw.check_hello(&hello, now).await?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let gw2 = gw.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(up) => gw2.serve_tunnel(up, hello, now).await,
            Err(e) => tracing::warn!(error = %e, "tunnel: the upgrade did not complete"),
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, TUNNEL_PROTOCOL)
        .body(Body::empty())
        .unwrap_or_default())
}

/// `GET /v1/network/models`: public route readiness per model (no key needed).
pub async fn readiness(State(gw): Gw) -> Response {
    axum::Json(gw.readiness(unix_now_ms()).await).into_response()
}

/// `POST /v1/internal/relay/{node_id}/v1/chat/completions` (another replica's request).
pub async fn relay_chat(
    State(gw): Gw,
    axum::extract::Path(node): axum::extract::Path<String>,
    req: Request,
) -> Result<Response> {
    gw.clone().relay(&node, "/v1/chat/completions", req).await
}

/// `POST /v1/internal/relay/{node_id}/v1/completions` (another replica's request).
pub async fn relay_completions(
    State(gw): Gw,
    axum::extract::Path(node): axum::extract::Path<String>,
    req: Request,
) -> Result<Response> {
    gw.clone().relay(&node, "/v1/completions", req).await
}

/// `POST /v1/internal/relay/{node_id}/v1/responses` (another replica's request).
pub async fn relay_responses(
    State(gw): Gw,
    axum::extract::Path(node): axum::extract::Path<String>,
    req: Request,
) -> Result<Response> {
    gw.clone().relay(&node, "/v1/responses", req).await
}

/// `POST /v1/internal/relay/{node_id}/v1/embeddings` (another replica's request).
pub async fn relay_embeddings(
    State(gw): Gw,
    axum::extract::Path(node): axum::extract::Path<String>,
    req: Request,
) -> Result<Response> {
    gw.clone().relay(&node, "/v1/embeddings", req).await
}

/// `GET /metrics/gateway` (Prometheus text).
pub async fn metrics(State(gw): Gw) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gw.metrics.render(gw.tunnels.all().len()),
    )
        .into_response()
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The gateway key of a request's bearer token (copied out of the request first: a request body
/// is not `Sync`, so no reference to the request may live across an await).
async fn payer(gw: &Gateway, token: Option<String>, now: u64) -> Result<GatewayKey> {
    let tok = token.ok_or_else(|| {
        ControlError::Unauthorized(
            "send your gateway key as `Authorization: Bearer b3iq_gateway_...`".into(),
        )
    })?;
    gw.cp.authenticate_gateway_key(&tok, now).await
}

/// `GET /v1/models`: the models with at least one ready node now.
pub async fn models(State(gw): Gw, req: Request) -> Result<Response> {
    let now = unix_now_ms();
    payer(&gw, bearer(&req).map(str::to_string), now).await?;
    let mut ids: Vec<String> = Vec::new();
    for t in gw.tunnels.all() {
        if gw.is_fresh(&t).await {
            ids.extend(t.models.iter().map(|m| m.public_id.clone()));
        }
    }
    ids.sort();
    ids.dedup();
    let data: Vec<Value> = ids.iter().map(|id| serde_json::json!({"id": id, "object": "model", "created": now / 1000, "owned_by": "b3iq-network"})).collect();
    Ok(axum::Json(serde_json::json!({"object": "list", "data": data})).into_response())
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(State(gw): Gw, req: Request) -> Response {
    gw.clone()
        .forward(req, "/v1/chat/completions")
        .await
        .unwrap_or_else(|e| e.into_response())
}

/// `POST /v1/completions`.
pub async fn completions(State(gw): Gw, req: Request) -> Response {
    gw.clone()
        .forward(req, "/v1/completions")
        .await
        .unwrap_or_else(|e| e.into_response())
}

/// `POST /v1/responses` (OpenAI's Responses API, stateless on the node; its token limit is
/// `max_output_tokens`).
pub async fn responses(State(gw): Gw, req: Request) -> Response {
    gw.clone()
        .forward(req, "/v1/responses")
        .await
        .unwrap_or_else(|e| e.into_response())
}

/// `POST /v1/embeddings`: priced by its input tokens alone (the hold covers one token per
/// body byte, an upper bound for strings and token arrays alike).
pub async fn embeddings(State(gw): Gw, req: Request) -> Response {
    gw.clone()
        .forward(req, "/v1/embeddings")
        .await
        .unwrap_or_else(|e| e.into_response())
}

/// The request field that limits the answer's tokens on `path` (none for embeddings, which
/// generate no tokens).
fn token_limit_fields(path: &str) -> &'static [&'static str] {
    match path {
        "/v1/responses" => &["max_output_tokens"],
        "/v1/embeddings" => &[],
        _ => &["max_completion_tokens", "max_tokens"],
    }
}

/// A held amount: released when dropped unless settled, or, when the client went away
/// mid-stream (`awaiting`), kept for the node's receipt by upload
/// ([`crate::ControlPlane::await_receipt`]).
struct Hold {
    gw: Arc<Gateway>,
    id: [u8; 16],
    done: bool,
    awaiting: Option<RequestTicket>,
    /// A canary's tag ([`super::canary`]): always verified; told when its receipt checks.
    canary: Option<Arc<super::canary::Tag>>,
}

impl Hold {
    async fn settle(
        &mut self,
        charge: u64,
        node: &b3iq_core::NodeId,
        receipt_id: &[u8; 32],
    ) -> Result<()> {
        self.gw
            .cp
            .settle_hold(&self.id, charge, node, receipt_id, unix_now_ms())
            .await?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (gw, id) = (self.gw.clone(), self.id);
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            if let Some(ticket) = self.awaiting.take() {
                h.spawn(async move {
                    if let Err(e) = gw.cp.await_receipt(&id, &ticket, unix_now_ms()).await {
                        tracing::error!(error = %e, "could not keep a hold for its uploaded receipt; the stale-hold sweep will look for it");
                    }
                });
                return;
            }
            h.spawn(async move {
                if let Err(e) = gw.cp.release_hold(&id, unix_now_ms()).await {
                    tracing::error!(error = %e, "could not release a hold; the stale-hold sweep will");
                }
            });
        }
    }
}

/// A request's place on a tunnel: freed (and waiting requests woken) when dropped.
pub(super) struct Slot {
    gw: Arc<Gateway>,
    tunnel: Arc<Tunnel>,
}

impl Slot {
    /// Wraps a place already taken (`in_flight` incremented) on `tunnel`.
    pub(super) fn new(gw: Arc<Gateway>, tunnel: Arc<Tunnel>) -> Slot {
        Slot { gw, tunnel }
    }

    /// The tunnel.
    pub(super) fn tunnel(&self) -> &Arc<Tunnel> {
        &self.tunnel
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.tunnel.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.gw.capacity.notify_waiters();
    }
}

/// The node a request goes to, as far as settling its receipt needs.
#[derive(Debug, Clone)]
struct NodeRef {
    node_id: b3iq_core::NodeId,
    public_key: b3iq_core::NodePublicKey,
    models: Vec<OfferedModel>,
}

/// How the request reaches the node.
enum Via {
    /// Its tunnel is here.
    Local(Slot),
    /// Another replica holds its tunnel: relay there (base URL).
    Remote(String),
}

/// A picked node.
struct Target {
    node: NodeRef,
    via: Via,
}

/// A place in a model's wait queue; leaving it (with a node, or by timing out) wakes the
/// others, so the next in line looks at once.
struct Waiting<'a> {
    gw: &'a Gateway,
    model: String,
    ticket: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.gw.waiting.leave(&self.model, self.ticket);
        self.gw.capacity.notify_waiters();
    }
}

/// How often a waiting request looks again without being woken (a node's policy cooldown
/// ending or its heartbeat turning fresh wakes nobody).
const QUEUE_RECHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// What a request asks for, read from its body (nothing else of it is looked at).
struct Ask {
    model: String,
    max_tokens: u64,
    stream: bool,
}

fn ask(v: &Value, path: &str, default_max_tokens: u32) -> Result<Ask> {
    let bad = |field: &'static str, reason: &str| ControlError::InvalidParameter {
        field,
        reason: reason.to_string(),
    };
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            bad(
                "model",
                "`model` is required; GET /v1/models lists the models served now",
            )
        })?;
    let fields = token_limit_fields(path);
    let named = fields
        .iter()
        .find_map(|f| v.get(*f).filter(|x| !x.is_null()).map(|x| (*f, x)));
    let max_tokens = match named {
        None if fields.is_empty() => 0,
        None => u64::from(default_max_tokens),
        Some((f, n)) => match n.as_u64() {
            Some(n) if (1..=MAX_MAX_TOKENS).contains(&n) => n,
            Some(_) => return Err(bad(f, &format!("{f} must be between 1 and {MAX_MAX_TOKENS}, got {n} (leave it out for the gateway's default)"))),
            None => return Err(bad(f, &format!("`{f}`: expected a whole number between 1 and {MAX_MAX_TOKENS}, got {n}"))),
        },
    };
    let stream = match v.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("stream", "`stream` must be a boolean")),
    };
    Ok(Ask {
        model: model.to_string(),
        max_tokens,
        // Embeddings answer in one piece (the node refuses a `stream` field there).
        stream: stream && !fields.is_empty(),
    })
}

impl Gateway {
    /// Whether a tunnel's node may get requests: active, unexpired, a recent healthy heartbeat
    /// (within three intervals), and staked on chain when the gateway checks stake
    /// ([`super::stake`]). Cached for one second per node (the stake answer for longer).
    pub(crate) async fn is_fresh(&self, t: &Tunnel) -> bool {
        self.node_fresh(&t.node_id).await
    }

    /// As [`Gateway::is_fresh`], by node id.
    pub(crate) async fn node_fresh(&self, node: &b3iq_core::NodeId) -> bool {
        if let Some((at, ok)) = self
            .fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
        {
            if at.elapsed() < std::time::Duration::from_secs(1) {
                return *ok;
            }
        }
        let now = unix_now_ms();
        let window = self.cp.config().heartbeat_interval_ms.saturating_mul(3);
        let ok = match self.cp.store().node(node).await {
            Ok(Some(n)) => {
                n.status == crate::store::NodeStatus::Active
                    && n.expires_at_ms > now
                    && n.last_heartbeat.as_ref().is_some_and(|h| {
                        now.saturating_sub(h.received_at_ms) <= window
                            && h.health != b3iq_core::heartbeat::HealthStatus::Unhealthy
                    })
            }
            _ => false,
        };
        // Routing also needs stake on chain, when the gateway checks it (cached per node).
        let ok = ok && match &self.stake {
            Some(s) => s.staked(node).await,
            None => true,
        };
        self.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*node, (std::time::Instant::now(), ok));
        ok
    }

    /// Other replicas' fresh tunnel sessions (re-read at most once a second).
    async fn remote_sessions(&self) -> Vec<crate::store::TunnelSession> {
        let Some(own) = &self.config.replica_url else {
            return Vec::new();
        };
        {
            let r = self.remote.lock().unwrap_or_else(|p| p.into_inner());
            if r.0
                .is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(1))
            {
                return r.1.clone();
            }
        }
        let since = unix_now_ms().saturating_sub(super::tunnel::SESSION_STALE_MS);
        let list: Vec<_> = match self.cp.store().tunnel_sessions(since).await {
            Ok(v) => v.into_iter().filter(|s| &s.replica_url != own).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "gateway: cannot read the tunnel sessions of other replicas");
                Vec::new()
            }
        };
        *self.remote.lock().unwrap_or_else(|p| p.into_inner()) =
            (Some(std::time::Instant::now()), list.clone());
        list
    }

    /// Picks a node for `model` (not in `tried`): a tunnel of this replica with spare capacity
    /// (power of two choices on the load), else one another replica holds (its relay answers
    /// 429 when it is busy), else waits in the model's bounded queue.
    ///
    /// `busy` are nodes that answered this request 429 (their own count of network requests
    /// was full when the gateway's showed room: the two counts meet only after a request's last
    /// byte): they stay candidates, after the others, so a request that met two busy nodes does
    /// not wait for the third alone while the first two free up.
    async fn pick(
        self: &Arc<Self>,
        model: &str,
        tried: &[b3iq_core::NodeId],
        busy: &[b3iq_core::NodeId],
    ) -> Result<Target> {
        let deadline = tokio::time::Instant::now() + self.config.queue_wait;
        let mut queued: Option<Waiting<'_>> = None;
        loop {
            let notified = self.capacity.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut serving = Vec::new();
            for t in self.tunnels.all() {
                if t.models.iter().any(|m| m.public_id == model)
                    && !tried.contains(&t.node_id)
                    && t.is_open().await
                    && self.is_fresh(&t).await
                {
                    serving.push(t);
                }
            }
            let mut remote = Vec::new();
            for sess in self.remote_sessions().await {
                let models: Vec<OfferedModel> =
                    serde_json::from_value(sess.models.clone()).unwrap_or_default();
                if models.iter().any(|m| m.public_id == model)
                    && !tried.contains(&sess.node_id)
                    && self.tunnels.get(&sess.node_id).is_none()
                    && self.node_fresh(&sess.node_id).await
                {
                    remote.push((sess, models));
                }
            }
            if serving.is_empty() && remote.is_empty() {
                return Err(ControlError::ModelNotFound(model.to_string()));
            }
            let mut spare: Vec<Arc<Tunnel>> = serving
                .into_iter()
                .filter(|t| t.in_flight.load(Ordering::Acquire) < t.max_concurrent)
                .collect();
            // Nodes that refused by policy a moment ago come last: only when no other has room.
            let now = unix_now_ms();
            if spare
                .iter()
                .any(|t| t.refused_until_ms.load(Ordering::Relaxed) <= now)
            {
                spare.retain(|t| t.refused_until_ms.load(Ordering::Relaxed) <= now);
            }
            // Nodes that said busy to this request come after the others too.
            if spare.iter().any(|t| !busy.contains(&t.node_id)) {
                spare.retain(|t| !busy.contains(&t.node_id));
            }
            // First come, first served: a node an older waiter can use is that waiter's (a new
            // request does not overtake the queue, and a woken waiter does not overtake an
            // older one); only nodes every older waiter already tried are left to this one.
            self.waiting.keep_mine(
                model,
                queued.as_ref().map(|q| q.ticket),
                &mut spare,
                |t| t.node_id,
            );
            while !spare.is_empty() {
                // Power of two choices on the load (in flight / share), drawn by reputation.
                let cands: Vec<(f64, u32)> = spare
                    .iter()
                    .map(|t| {
                        let load = t.in_flight.load(Ordering::Acquire) as f64
                            / f64::from(t.max_concurrent.max(1));
                        (load, self.reputation.score(&t.node_id))
                    })
                    .collect();
                let i = super::reputation::two_choices(&cands, rand::random(), rand::random());
                let t = spare.swap_remove(i);
                let prev = t.in_flight.fetch_add(1, Ordering::AcqRel);
                if prev < t.max_concurrent {
                    let node = NodeRef {
                        node_id: t.node_id,
                        public_key: t.public_key,
                        models: t.models.clone(),
                    };
                    return Ok(Target {
                        node,
                        via: Via::Local(Slot {
                            gw: self.clone(),
                            tunnel: t,
                        }),
                    });
                }
                t.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            if !remote.is_empty() {
                let (sess, models) = remote.swap_remove(rand::random::<usize>() % remote.len());
                if let Ok(Some(n)) = self.cp.store().node(&sess.node_id).await {
                    return Ok(Target {
                        node: NodeRef {
                            node_id: sess.node_id,
                            public_key: n.public_key,
                            models,
                        },
                        via: Via::Remote(sess.replica_url),
                    });
                }
            }
            if queued.is_none() {
                let Some(ticket) =
                    self.waiting.join(model, tried, self.config.max_queue_per_model)
                else {
                    return Err(ControlError::Busy { message: format!("every node serving {model} is busy and its queue is full; retry shortly"), retry_after_s: 1 });
                };
                queued = Some(Waiting {
                    gw: self,
                    model: model.to_string(),
                    ticket,
                });
            }
            let wake = deadline.min(tokio::time::Instant::now() + QUEUE_RECHECK);
            if tokio::time::timeout_at(wake, notified).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                // What the wait saw, for the log (node ids are not for the client).
                let mut seen = Vec::new();
                for t in self.tunnels.all() {
                    if t.models.iter().any(|m| m.public_id == model) {
                        seen.push(format!(
                            "{} {}/{} in flight{}{}",
                            t.node_id,
                            t.in_flight.load(Ordering::Acquire),
                            t.max_concurrent,
                            if tried.contains(&t.node_id) {
                                ", tried"
                            } else {
                                ""
                            },
                            if busy.contains(&t.node_id) {
                                ", busy"
                            } else {
                                ""
                            },
                        ));
                    }
                }
                tracing::warn!(model, nodes = %seen.join("; "), "gateway: a request waited its whole queue time");
                return Err(ControlError::Busy {
                    message: format!(
                        "every node serving {model} stayed busy for {} s; retry shortly",
                        self.config.queue_wait.as_secs()
                    ),
                    retry_after_s: 1,
                });
            }
        }
    }

    async fn forward(self: Arc<Self>, req: Request, path: &'static str) -> Result<Response> {
        let key = payer(&self, bearer(&req).map(str::to_string), unix_now_ms()).await?;
        let limit = self.config.max_body_bytes;
        let body = tokio::time::timeout(
            b3iq_host::http::serve::BODY_TIMEOUT,
            axum::body::to_bytes(req.into_body(), limit),
        )
        .await
        .map_err(|_| ControlError::Invalid {
            field: "body",
            reason: "the request body did not arrive in time".into(),
        })?
        .map_err(|_| ControlError::TooLarge(limit))?;
        self.forward_body(key, body, path, None).await
    }

    /// A request's way from its body on, paid by `key`: the hold, the node, the ticket, the
    /// answer and its settlement (see the module docs). A canary ([`super::canary`]) enters
    /// here with its node (`canary`: the tunnel, a slot taken on it only if it leaves room for
    /// customers, one attempt) and its tag (the request is always verified).
    pub(super) async fn forward_body(
        self: Arc<Self>,
        key: GatewayKey,
        body: Bytes,
        path: &'static str,
        canary: Option<(Arc<Tunnel>, Arc<super::canary::Tag>)>,
    ) -> Result<Response> {
        let now = unix_now_ms();
        let mut v: Value = serde_json::from_slice(&body).map_err(|e| ControlError::Invalid {
            field: "body",
            reason: format!("invalid JSON: {e}"),
        })?;
        if !v.is_object() {
            return Err(ControlError::Invalid {
                field: "body",
                reason: "send a JSON object".into(),
            });
        }
        let a = ask(&v, path, self.config.default_max_tokens)?;
        let worst = self
            .config
            .price
            .price(body.len() as u64, a.max_tokens)
            .map_err(|e| ControlError::Invalid {
                field: "body",
                reason: e.to_string(),
            })?;
        let hold = self.cp.place_hold(&key, worst, now).await?;
        let mut hold = Hold {
            gw: self.clone(),
            id: hold.id,
            done: false,
            awaiting: None,
            canary: canary.as_ref().map(|(_, tag)| tag.clone()),
        };
        // Nodes that failed or refused by policy (not tried again), and nodes that were busy.
        let (mut tried, mut busy) = (Vec::new(), Vec::new());
        let mut refused_by_policy = false;
        // Every node tried answered 429: the client's answer is 429 too, not a failure.
        let mut only_busy = true;
        let mut last_error = String::from("no node took the request");
        let attempts = if canary.is_some() { 1 } else { self.config.max_attempts };
        for attempt in 0..attempts {
            let picked = match &canary {
                Some((t, _)) => self.canary_slot(t),
                None => self.pick(&a.model, &tried, &busy).await,
            };
            let target = match picked {
                Ok(s) => s,
                Err(e) if attempt > 0 && matches!(e, ControlError::ModelNotFound(_)) => break,
                Err(e) => {
                    self.metrics
                        .count(if matches!(e, ControlError::Busy { .. }) {
                            "busy"
                        } else {
                            "no_model"
                        });
                    return Err(e);
                }
            };
            let node = target.node.clone();
            tried.push(node.node_id);
            let Some(offered) = node.models.iter().find(|m| m.public_id == a.model).cloned() else {
                continue;
            };
            let now = unix_now_ms();
            let ticket = RequestTicket::sign(
                &self.ticket_key,
                TicketFields {
                    request_id: RequestId(rand::random()),
                    gateway_id: self.id.clone(),
                    node_id: node.node_id,
                    model_id: offered.node_model_id.clone(),
                    price: self.config.price,
                    max_price_micro_credits: worst,
                    tier: TrustTier::BestEffort,
                    seed_key: rand::random(),
                    billing_ref: hold.id,
                    issued_at_ms: now,
                    expires_at_ms: now + self.config.ticket_ttl_ms,
                },
            )
            .map_err(|e| ControlError::Invalid {
                field: "model",
                reason: e.to_string(),
            })?;
            v["model"] = Value::String(offered.node_model_id.clone());
            // The hold covers `a.max_tokens`: a request that names none is sent with the default
            // written in, since a node generates until the context is full without one.
            let fields = token_limit_fields(path);
            if !fields.is_empty() && fields.iter().all(|f| v.get(*f).is_none_or(Value::is_null)) {
                v[fields[fields.len() - 1]] = Value::from(a.max_tokens);
            }
            let payload = serde_json::to_vec(&v).unwrap_or_default();
            let (resp, slot) = match self.send(&target.via, &node, path, &ticket, payload).await {
                Ok(r) => (
                    r,
                    match target.via {
                        Via::Local(s) => Some(s),
                        Via::Remote(_) => None,
                    },
                ),
                Err(e) => {
                    only_busy = false;
                    self.reputation.record(
                        node.node_id,
                        unix_now_ms(),
                        b3iq_core::reputation::ReputationEventKind::Failure,
                    );
                    last_error = format!("node {} failed before answering: {e}", node.node_id);
                    tracing::warn!(node = %node.node_id, error = %e, "gateway: request to the node failed; trying another node");
                    self.metrics.failovers.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            let status = resp.status();
            // The node is busy, unavailable, or refuses the ticket (outside its schedule, past
            // its daily budget, below its price floor): another node may take it.
            if matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::UNAUTHORIZED
                    | StatusCode::FORBIDDEN
            ) {
                let policy = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
                refused_by_policy |= policy;
                if status == StatusCode::TOO_MANY_REQUESTS {
                    // Busy now, maybe free in a moment: a candidate again, after the others.
                    tried.retain(|n| n != &node.node_id);
                    busy.push(node.node_id);
                } else {
                    only_busy = false;
                }
                if let (true, Some(s)) = (policy, &slot) {
                    s.tunnel.refused_until_ms.store(
                        unix_now_ms() + super::tunnel::POLICY_COOLDOWN_MS,
                        Ordering::Relaxed,
                    );
                }
                let why = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let why: Value = serde_json::from_slice(&why).unwrap_or_default();
                tracing::info!(node = %node.node_id, %status, code = why["error"]["code"].as_str().unwrap_or(""), "gateway: the node did not take the request; trying another node");
                last_error = format!("node {} answered {status}", node.node_id);
                self.metrics.failovers.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if !status.is_success() {
                // The node refused the request itself (a bad parameter): the client's answer.
                self.metrics.count("refused_by_node");
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let mut out = Response::new(Body::from(bytes.slice(..bytes.len().min(64 * 1024))));
                *out.status_mut() = status;
                out.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return Ok(out);
            }
            if a.stream {
                self.metrics.count("streamed");
                return Ok(self.clone().stream_back(resp, slot, node, hold, ticket));
            }
            let receipt = resp
                .headers()
                .get(RECEIPT_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let opened = resp
                .headers()
                .get(ATTESTATION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = match tokio::time::timeout(
                std::time::Duration::from_secs(600),
                resp.into_body().collect(),
            )
            .await
            {
                Ok(Ok(c)) => c.to_bytes(),
                _ => {
                    last_error = format!("node {} failed while answering", node.node_id);
                    continue;
                }
            };
            if bytes.len() > MAX_ANSWER_BYTES {
                return Err(ControlError::Upstream(
                    "the node's answer is too large".into(),
                ));
            }
            let mut out = Response::new(Body::from(bytes));
            out.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(v) = HeaderValue::from_str(&node.node_id.to_text()) {
                out.headers_mut().insert("x-b3iq-node", v);
            }
            drop(slot);
            match self
                .settle_from(
                    receipt.as_deref(),
                    opened.as_deref(),
                    &ticket,
                    &node,
                    &mut hold,
                )
                .await
            {
                Some(id) => {
                    if let Ok(v) = HeaderValue::from_str(&id) {
                        out.headers_mut().insert("x-b3iq-receipt-id", v);
                    }
                    self.metrics.count("ok");
                }
                None => self.metrics.count("no_receipt"),
            }
            return Ok(out);
        }
        if only_busy && !busy.is_empty() {
            self.metrics.count("busy");
            return Err(ControlError::Busy {
                message: format!("every node serving {} was busy; retry shortly", a.model),
                retry_after_s: 1,
            });
        }
        if refused_by_policy {
            self.metrics.count("refused_by_policy");
            return Err(ControlError::NoEligibleNode(format!(
                "no node serving {} accepts this request now: their owners' network policies (price floor, schedule, daily token budget) refused it",
                a.model
            )));
        }
        self.metrics.count("upstream_failed");
        Err(ControlError::Upstream(format!("{last_error}; retry")))
    }

    /// A canary's place on its node's tunnel, taken only if it leaves room for customers
    /// ([`super::canary::leaves_room`]); `Busy` otherwise.
    fn canary_slot(self: &Arc<Self>, t: &Arc<Tunnel>) -> Result<Target> {
        let prev = t.in_flight.fetch_add(1, Ordering::AcqRel);
        if !super::canary::leaves_room(prev, t.max_concurrent) {
            t.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(ControlError::Busy { message: "the canary's node is busy".into(), retry_after_s: 1 });
        }
        Ok(Target {
            node: NodeRef { node_id: t.node_id, public_key: t.public_key, models: t.models.clone() },
            via: Via::Local(Slot { gw: self.clone(), tunnel: t.clone() }),
        })
    }

    /// Sends a ticketed request to the node: over its tunnel here, or through the replica that
    /// holds it. The answer's body streams.
    async fn send(
        &self,
        via: &Via,
        node: &NodeRef,
        path: &str,
        ticket: &RequestTicket,
        payload: Vec<u8>,
    ) -> std::result::Result<axum::http::Response<Body>, String> {
        match via {
            Via::Local(slot) => {
                let upstream = axum::http::Request::builder()
                    .method("POST")
                    .uri(path)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(TICKET_HEADER, ticket.to_header())
                    .body(Body::from(payload))
                    .map_err(|e| e.to_string())?;
                let mut sender = slot.tunnel.sender().await;
                sender
                    .send_request(upstream)
                    .await
                    .map(|r| r.map(Body::new))
                    .map_err(|e| e.to_string())
            }
            Via::Remote(url) => {
                let c = self.relay_client.as_ref().ok_or("no replica client")?;
                let r = c
                    .post(format!(
                        "{url}/v1/internal/relay/{}{path}",
                        node.node_id.to_text()
                    ))
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(TICKET_HEADER, ticket.to_header())
                    .body(payload)
                    .send()
                    .await
                    .map_err(|e| format!("relay to {url}: {e}"))?;
                let mut b = axum::http::Response::builder().status(r.status().as_u16());
                for (k, v) in r.headers() {
                    if [header::CONTENT_TYPE.as_str(), RECEIPT_HEADER, ATTESTATION_HEADER]
                        .contains(&k.as_str())
                    {
                        b = b.header(k.as_str(), v.as_bytes());
                    }
                }
                b.body(Body::from_stream(r.bytes_stream()))
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// The relay of another replica's request to a tunnel held here: the ticket (signed with
    /// the shared ticket key, for this node) is the authority; the answer streams back as the
    /// node sent it (receipt included), and the requesting replica settles.
    async fn relay(
        self: Arc<Self>,
        node: &str,
        path: &'static str,
        req: Request,
    ) -> Result<Response> {
        let now = unix_now_ms();
        let node_id = b3iq_core::NodeId::parse(node).map_err(|e| ControlError::Invalid {
            field: "node_id",
            reason: e.to_string(),
        })?;
        let raw = req
            .headers()
            .get(TICKET_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let ticket = RequestTicket::from_header(raw.as_deref().unwrap_or(""))
            .map_err(|e| ControlError::Unauthorized(format!("relay: {e}")))?;
        ticket
            .verify_for(&self.ticket_key.public(), &self.id, &node_id, now, 30_000)
            .map_err(|e| ControlError::Unauthorized(format!("relay: {e}")))?;
        let t = self
            .tunnels
            .get(&node_id)
            .ok_or_else(|| ControlError::Busy {
                message: "the node's tunnel is no longer here".into(),
                retry_after_s: 1,
            })?;
        if t.in_flight.fetch_add(1, Ordering::AcqRel) >= t.max_concurrent {
            t.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(ControlError::Busy {
                message: "the node's network share is busy".into(),
                retry_after_s: 1,
            });
        }
        // The place taken above is held until the answer has streamed back.
        let via = Via::Local(Slot {
            gw: self.clone(),
            tunnel: t.clone(),
        });
        let body = axum::body::to_bytes(req.into_body(), self.config.max_body_bytes)
            .await
            .map_err(|_| ControlError::TooLarge(self.config.max_body_bytes))?;
        let nref = NodeRef {
            node_id,
            public_key: t.public_key,
            models: t.models.clone(),
        };
        let resp = self
            .send(&via, &nref, path, &ticket, body.to_vec())
            .await
            .map_err(ControlError::Upstream)?;
        let (parts, body) = resp.into_parts();
        let stream =
            futures_util::stream::unfold((body, Some(via)), |(mut body, held)| async move {
                match body.frame().await {
                    Some(Ok(f)) => match f.into_data() {
                        Ok(d) => Some((Ok::<Bytes, std::io::Error>(d), (body, held))),
                        Err(_) => Some((Ok(Bytes::new()), (body, held))),
                    },
                    Some(Err(e)) => Some((Err(std::io::Error::other(e.to_string())), (body, None))),
                    None => None,
                }
            });
        let mut out = Response::new(Body::from_stream(stream));
        *out.status_mut() = parts.status;
        for k in [header::CONTENT_TYPE.as_str(), RECEIPT_HEADER, ATTESTATION_HEADER] {
            if let Some(v) = parts.headers.get(k) {
                out.headers_mut()
                    .insert(axum::http::HeaderName::from_static(k), v.clone());
            }
        }
        Ok(out)
    }

    /// Checks a node's receipt (hex of its encoding) against the ticket and settles the hold
    /// with its price, then considers the request for verification with the node's opening
    /// (`opened`, hex), if it sent one. Returns the receipt id, or `None` (the node is not
    /// paid; the hold is released when dropped).
    async fn settle_from(
        self: &Arc<Self>,
        hex_receipt: Option<&str>,
        opened: Option<&str>,
        ticket: &RequestTicket,
        t: &NodeRef,
        hold: &mut Hold,
    ) -> Option<String> {
        let checked = hex_receipt
            .ok_or_else(|| "no receipt".to_string())
            .and_then(|h| hex::decode(h.trim()).map_err(|e| e.to_string()))
            .and_then(|b| SignedReceipt::decode(&b).map_err(|e| e.to_string()))
            .and_then(|r| {
                ticket
                    .check_receipt(&r, &t.public_key)
                    .map(|price| (r, price))
                    .map_err(|e| e.to_string())
            });
        match checked {
            Ok((r, price)) => {
                let id = r.receipt_id();
                let now = unix_now_ms();
                if let Some(m) = t.models.iter().find(|m| m.node_model_id == ticket.model_id) {
                    self.record_sample(&m.public_id, r.body(), now);
                }
                use b3iq_core::reputation::ReputationEventKind as K;
                let b = r.body();
                self.reputation.record(
                    t.node_id,
                    now,
                    K::Latency {
                        ttft_ms: b.ttft_ms,
                        target_ms: super::reputation::TTFT_TARGET_MS,
                    },
                );
                self.reputation.record(
                    t.node_id,
                    now,
                    K::DeliveredTokens {
                        tokens: u64::from(b.completion_tokens),
                    },
                );
                let settled = hold.settle(price, &t.node_id, &id.0).await;
                // After the answer and its receipt: the node cannot tell whether it is checked.
                if let Some(tag) = &hold.canary {
                    tag.settled.store(true, Ordering::Release);
                }
                self.consider_verification(&r, opened, ticket, hold.canary.is_some());
                match settled {
                    Ok(()) => Some(id.to_hex()),
                    Err(e) => {
                        tracing::error!(error = %e, "gateway: settling a hold failed");
                        None
                    }
                }
            }
            Err(why) => {
                self.metrics.bad_receipts.fetch_add(1, Ordering::Relaxed);
                self.reputation.record(
                    t.node_id,
                    unix_now_ms(),
                    b3iq_core::reputation::ReputationEventKind::Failure,
                );
                tracing::warn!(node = %t.node_id, reason = %why, "gateway: the node's receipt is missing or does not check; not paid");
                None
            }
        }
    }

    /// Streams a node's SSE answer to the client, taking the receipt comment out and settling
    /// with it; a failure after the first byte ends the stream with an error event.
    fn stream_back(
        self: Arc<Self>,
        resp: axum::http::Response<Body>,
        slot: Option<Slot>,
        target: NodeRef,
        hold: Hold,
        ticket: RequestTicket,
    ) -> Response {
        struct S {
            gw: Arc<Gateway>,
            body: Body,
            buf: Vec<u8>,
            out: VecDeque<Bytes>,
            _slot: Option<Slot>,
            target: NodeRef,
            hold: Hold,
            ticket: RequestTicket,
            ended: bool,
            /// The node's attestation opening (hex), taken out of the stream.
            opened: Option<String>,
        }
        let node = target.node_id;
        let mut hold = hold;
        // Until the stream ends, a client that goes away leaves the hold for the receipt the
        // node writes for the tokens it produced (its outcome `cancelled`).
        hold.awaiting = Some(ticket.clone());
        let init = S {
            gw: self,
            body: resp.into_body(),
            buf: Vec::new(),
            out: VecDeque::new(),
            _slot: slot,
            target,
            hold,
            ticket,
            ended: false,
            opened: None,
        };
        let stream = futures_util::stream::unfold(init, |mut s| async move {
            loop {
                if let Some(b) = s.out.pop_front() {
                    return Some((Ok::<Bytes, std::io::Error>(b), s));
                }
                if s.ended {
                    return None;
                }
                match s.body.frame().await {
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data() {
                            s.buf.extend_from_slice(&data);
                        }
                        // Complete events (blank-line separated) go out; the receipt stays here.
                        while let Some(end) = s.buf.windows(2).position(|w| w == b"\n\n") {
                            let event: Vec<u8> = s.buf.drain(..end + 2).collect();
                            if event.starts_with(ATTESTATION_SSE_PREFIX.as_bytes()) {
                                s.opened = Some(
                                    String::from_utf8_lossy(
                                        &event[ATTESTATION_SSE_PREFIX.len()..],
                                    )
                                    .trim()
                                    .to_string(),
                                );
                            } else if event.starts_with(RECEIPT_SSE_PREFIX.as_bytes()) {
                                let hex_receipt =
                                    String::from_utf8_lossy(&event[RECEIPT_SSE_PREFIX.len()..])
                                        .trim()
                                        .to_string();
                                let (gw, ticket, target) =
                                    (s.gw.clone(), s.ticket.clone(), s.target.clone());
                                let opened = s.opened.take();
                                if gw
                                    .settle_from(
                                        Some(&hex_receipt),
                                        opened.as_deref(),
                                        &ticket,
                                        &target,
                                        &mut s.hold,
                                    )
                                    .await
                                    .is_none()
                                {
                                    gw.metrics.count("no_receipt");
                                }
                            } else {
                                s.out.push_back(Bytes::from(event));
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(node = %s.target.node_id, error = %e, "gateway: the node failed mid-stream");
                        s.gw.reputation.record(
                            s.target.node_id,
                            unix_now_ms(),
                            b3iq_core::reputation::ReputationEventKind::Failure,
                        );
                        s.hold.awaiting = None;
                        s.out.push_back(Bytes::from_static(b"data: {\"error\":{\"message\":\"the serving node failed mid-stream; the request was not charged past its receipt\",\"type\":\"server_error\",\"code\":\"upstream_failed\"}}\n\n"));
                        s.ended = true;
                    }
                    None => {
                        // Ended without a receipt comment: the node is not paid.
                        s.hold.awaiting = None;
                        if !s.buf.is_empty() {
                            let rest = std::mem::take(&mut s.buf);
                            s.out.push_back(Bytes::from(rest));
                        }
                        s.ended = true;
                    }
                }
            }
        });
        let mut out = Response::new(Body::from_stream(stream));
        let h = out.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        if let Ok(v) = HeaderValue::from_str(&node.to_text()) {
            h.insert("x-b3iq-node", v);
        }
        out
    }
}
