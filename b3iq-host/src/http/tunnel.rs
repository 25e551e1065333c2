//! The node's side of the gateway tunnel (network mode): the node dials its control plane,
//! opens the tunnel with a signed hello, then serves HTTP/2 on that connection with the
//! inference routes only, the gateway being the client (cloudflared's http2 design). No port is
//! opened on the node.
//!
//! 1. `POST {control}/v1/node/tunnel/challenge` → a [`TunnelChallenge`] (gateway id, single-use
//!    nonce, the key that signs tickets).
//! 2. `POST {control}/v1/node/tunnel` over HTTP/1.1 with `Upgrade: b3iq-tunnel/1` and the signed
//!    [`TunnelHello`] in `x-b3iq-tunnel-hello`; the control plane checks it (signature, nonce,
//!    enrollment, status) and answers `101 Switching Protocols`.
//! 3. On the upgraded connection the node runs hyper's HTTP/2 server with
//!    `max_concurrent_streams` = its network share and PING keep-alive (a dead tunnel is found
//!    within 20 s); each request carries [`TunnelContext`] as an extension, so the handlers
//!    authorise it by its ticket alone. A stream reset by the gateway (the client went away)
//!    drops the handler, which cancels the generation.
//! 4. When the node leaves network mode the connection is shut down gracefully (GOAWAY: requests
//!    in flight finish); when it drops, the node reconnects with exponential backoff and jitter
//!    (1 s to 60 s).

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use b3iq_core::OperatingMode;
use b3iq_protocol::gateway::{TunnelChallenge, TunnelHello, HELLO_HEADER, TUNNEL_PROTOCOL};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use super::openai;
use crate::context::{unix_now_ms, NodeState};
use crate::error::{HostError, Result};
use crate::network::{self, TunnelContext, TunnelStatus};

/// PING interval and timeout on the tunnel.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// Longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The routes served on the tunnel: inference only, each request carrying `ctx`.
pub fn router(st: Arc<NodeState>, ctx: TunnelContext) -> Router {
    Router::new()
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/responses", post(super::responses::responses))
        .route("/v1/embeddings", post(super::embeddings::embeddings))
        .route(b3iq_protocol::verification::VERIFY_PATH, post(verify))
        .fallback(|| async {
            HostError::NotFound(
                "route (the tunnel serves /v1/models, /v1/chat/completions, /v1/completions, /v1/responses, /v1/embeddings and /v1/node/verify)"
                    .into(),
            )
        })
        .layer(axum::Extension(ctx))
        .layer(axum::extract::DefaultBodyLimit::max(super::MAX_BODY_BYTES))
        .with_state(st)
}

/// `POST /v1/node/verify` (tunnel only): a verifier job from the gateway, authorised by its
/// verifier ticket; the answer is the signed verdict ([`network::verify`]).
async fn verify(
    axum::extract::State(st): axum::extract::State<Arc<NodeState>>,
    axum::Extension(ctx): axum::Extension<TunnelContext>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<b3iq_protocol::verification::VerifyAnswer>> {
    let h = headers
        .get(b3iq_protocol::gateway::TICKET_HEADER)
        .and_then(|v| v.to_str().ok());
    let ticket = network::verify::admit(&st, &ctx, h).inspect_err(
        |e| tracing::info!(code = e.code(), reason = %e, "network mode: a verifier job was refused"),
    )?;
    let job: b3iq_protocol::verification::VerifyJob = serde_json::from_slice(&body)
        .map_err(|e| HostError::InvalidParameter(format!("verifier job: {e}")))?;
    let v = network::verify::run(&st, &ticket, job).await?;
    Ok(axum::Json(b3iq_protocol::verification::VerifyAnswer::new(&v)))
}

/// A client for the tunnel: HTTP/1.1 only (the upgrade), the enrollment's pinned certificate,
/// no overall timeout (the upgraded connection lives on).
fn tunnel_client(ca_pem: Option<&str>) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .http1_only()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("b3iqd/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem {
        b = b.tls_built_in_root_certs(false);
        for c in reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| HostError::InvalidParameter(format!("--ca-file: {e}")))?
        {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| HostError::Internal(format!("http client: {e}")))
}

fn in_network(st: &NodeState) -> bool {
    st.mode() == OperatingMode::Network && network::not_ready(st).is_none()
}

/// Opens one tunnel and serves it until it ends or the node leaves network mode.
async fn serve_once(
    st: &Arc<NodeState>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let e = crate::managed::enrollment(&st.db)?
        .ok_or_else(|| HostError::ControlPlane("not enrolled".into()))?;
    let c = tunnel_client(e.ca_pem.as_deref())?;
    let ch: TunnelChallenge = {
        let r = c
            .post(format!("{}/v1/node/tunnel/challenge", e.control_url))
            .timeout(crate::managed::CONTROL_TIMEOUT)
            .json(&serde_json::json!({}))
            .send()
            .await
            .map_err(|x| HostError::ControlPlane(format!("tunnel challenge: {x}")))?;
        if !r.status().is_success() {
            return Err(HostError::ControlPlane(format!(
                "tunnel challenge: HTTP {}: {}",
                r.status(),
                r.text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect::<String>()
            )));
        }
        r.json()
            .await
            .map_err(|x| HostError::ControlPlane(format!("tunnel challenge: {x}")))?
    };
    let policy = network::policy(st)?;
    let share = network::offered_concurrency(st, &policy);
    let hello = TunnelHello::sign(
        &st.key,
        &ch,
        st.mode(),
        share,
        network::tunnel_models(st, &policy),
        unix_now_ms(),
    )
    .map_err(|x| HostError::InvalidParameter(x.to_string()))?;
    let resp = c
        .post(format!("{}/v1/node/tunnel", e.control_url))
        .timeout(crate::managed::CONTROL_TIMEOUT)
        .header(reqwest::header::CONNECTION, "upgrade")
        .header(reqwest::header::UPGRADE, TUNNEL_PROTOCOL)
        .header(HELLO_HEADER, hello.to_header())
        .send()
        .await
        .map_err(|x| HostError::ControlPlane(format!("tunnel: {x}")))?;
    if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let msg = body["error"]["message"]
            .as_str()
            .unwrap_or("no reason given");
        return Err(HostError::ControlPlane(format!(
            "tunnel refused (HTTP {status}): {msg}"
        )));
    }
    let upgraded = resp
        .upgrade()
        .await
        .map_err(|x| HostError::ControlPlane(format!("tunnel upgrade: {x}")))?;
    let ctx = TunnelContext::new(ch.gateway_id.clone(), ch.ticket_key);
    let svc = TowerToHyperService::new(router(st.clone(), ctx));
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(KEEPALIVE))
        .keep_alive_timeout(KEEPALIVE)
        .max_concurrent_streams(share);
    let conn = builder.serve_connection(TokioIo::new(upgraded), svc);
    tokio::pin!(conn);
    network::set_tunnel_status(
        st,
        &TunnelStatus {
            state: "connected".into(),
            gateway_id: Some(ch.gateway_id.as_str().to_string()),
            since_ms: unix_now_ms(),
            error: None,
        },
    );
    st.db.audit(
        st.now(),
        "system",
        "network.tunnel",
        ch.gateway_id.as_str(),
        "ok",
        &format!("share={share}"),
    );
    tracing::info!(
        gateway = ch.gateway_id.as_str(),
        share,
        "network mode: tunnel open"
    );
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => return r.map_err(|x| HostError::ControlPlane(format!("tunnel closed: {x}"))),
            _ = check.tick(), if !draining => {
                let _ = st.reload_mode();
                if !in_network(st) || *stop.borrow() {
                    // GOAWAY: the gateway sends nothing new; requests in flight finish.
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
            _ = stop.changed(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// While the node is in network mode (and ready for it): keep a tunnel open, reconnecting with
/// exponential backoff and jitter. Returns when `stop` resolves.
pub async fn run(st: Arc<NodeState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut backoff = Duration::from_secs(1);
    let mut was_on = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let _ = st.reload_mode();
        let wait = if in_network(&st) {
            was_on = true;
            network::set_tunnel_status(
                &st,
                &TunnelStatus {
                    state: "connecting".into(),
                    gateway_id: None,
                    since_ms: unix_now_ms(),
                    error: None,
                },
            );
            let started = std::time::Instant::now();
            let r = serve_once(&st, &mut stop).await;
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_secs(1);
            }
            match r {
                Ok(()) if !in_network(&st) => Duration::from_millis(100),
                outcome => {
                    let error = match outcome {
                        Ok(()) => "the gateway closed the tunnel".to_string(),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "network mode: tunnel down");
                    network::set_tunnel_status(
                        &st,
                        &TunnelStatus {
                            state: "down".into(),
                            gateway_id: None,
                            since_ms: unix_now_ms(),
                            error: Some(error),
                        },
                    );
                    let jitter = Duration::from_millis(rand::Rng::gen_range(
                        &mut rand::thread_rng(),
                        0..=backoff.as_millis() as u64 / 2,
                    ));
                    let w = backoff + jitter;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    w
                }
            }
        } else {
            if was_on {
                was_on = false;
                network::set_tunnel_status(
                    &st,
                    &TunnelStatus {
                        state: "off".into(),
                        gateway_id: None,
                        since_ms: unix_now_ms(),
                        error: None,
                    },
                );
            }
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}
