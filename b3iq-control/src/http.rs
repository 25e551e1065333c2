//! The control plane's HTTP API (axum). JSON bodies of at most [`MAX_BODY_BYTES`]; every
//! message type refuses unknown fields; errors are `{"error": {"message", "type", "code"}}`.
//!
//! Node routes (signed bodies, no session):
//! * `POST /v1/node/enroll/challenge` -> `EnrollmentChallenge`
//! * `POST /v1/node/enroll` with `Authorization: Bearer b3iq_enroll_...` and an
//!   `EnrollmentRequest` -> `EnrollmentAccepted`
//! * `POST /v1/node/enroll/renew` with an `EnrollmentRequest` over a fresh challenge ->
//!   `EnrollmentAccepted` with the new expiry (no token: the node key is the credential)
//! * `POST /v1/node/heartbeat` with a `HeartbeatRequest` -> `HeartbeatAck`
//! * `POST /v1/node/jobs/poll` with a signed `JobPoll` -> `JobPollResponse` (long-poll, up to
//!   the poll's `wait_ms`)
//! * `POST /v1/node/receipts` with a signed `ReceiptUpload` -> `ReceiptUploadAck` (each
//!   receipt stored once; body up to [`MAX_RECEIPTS_BODY_BYTES`])
//! * `POST /v1/node/jobs/result` with a signed `JobResultReport` -> `JobResultAck` (body up to
//!   [`MAX_RESULT_BODY_BYTES`])
//!
//! Operator routes (`Authorization: Bearer <session>` from `POST /v1/admin/session`):
//! * `POST /v1/admin/session` `{"username", "password"}` -> `{"session", "expires_at_ms"}`;
//!   `DELETE /v1/admin/session`
//! * `GET /v1/admin/nodes`, `GET /v1/admin/nodes/{node_id}`
//! * `POST /v1/admin/nodes/{node_id}/status` `{"status": "active"|"suspended"|"revoked", "reason"}`
//! * `POST /v1/admin/nodes/{node_id}/jobs` `{"kind": {"type": "run_benchmark", ...}, "ttl_s"}`
//!   -> the queued job; `GET` lists the node's jobs with their results
//! * `GET /v1/admin/nodes/{node_id}/usage` -> receipts stored and usage per model and day
//! * `POST /v1/admin/enrollment-tokens` `{"ttl_s"}` -> `{"id", "token", "expires_at_ms"}` (the
//!   token is shown once)
//! * `POST /v1/admin/gateway-keys` `{"name", "rate_per_min", "spend_limit_per_day"}` ->
//!   `{"key", "token"}` (the token is shown once); `GET` lists the organisation's keys;
//!   `DELETE /v1/admin/gateway-keys/{id}` revokes one
//! * `GET /v1/admin/credits` -> the organisation's balance and latest ledger transactions
//!   (top-ups are not an HTTP action: `b3iq-control admin add-credits` on the control plane's
//!   machine)
//!
//! Public: `GET /healthz`, `GET /v1/info` (audience, job key, heartbeat interval), `GET /metrics`.
//! The public read-only API (`/v1/public/...`) and the explorer are in [`crate::public`].

use std::sync::Arc;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use b3iq_core::job::JobKind;
use b3iq_core::NodeId;
use b3iq_host::context::unix_now_ms;
use b3iq_protocol::messages::{
    EnrollmentRequest, HeartbeatRequest, JobPoll, JobResultReport, ReceiptUpload,
};
use serde_json::{json, Value};

use crate::error::{ControlError, Result};
use crate::plane::ControlPlane;
use crate::store::{NodeStatus, Operator};

/// Largest request body accepted (64 KiB: a heartbeat with 256 digests is about 20 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest receipt upload (256 signed receipts of about 1.2 KiB as JSON each).
pub const MAX_RECEIPTS_BODY_BYTES: usize = 1024 * 1024;
/// Largest job result (a 4 MiB support bundle as hex, plus the report).
pub const MAX_RESULT_BODY_BYTES: usize = 2 * b3iq_protocol::messages::MAX_BUNDLE_BYTES + 64 * 1024;

/// JSON extractor with our error shape and the body limit.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ControlError;
    async fn from_request(req: Request, state: &S) -> Result<Self> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/json")
        {
            return Err(ControlError::Invalid {
                field: "content-type",
                reason: "send the body as application/json".into(),
            });
        }
        // The connection loop's body timeout (a slow body is cut, not waited on forever).
        let limit = req
            .extensions()
            .get::<b3iq_host::http::serve::BodyTimeout>()
            .map(|t| t.0)
            .unwrap_or(std::time::Duration::from_secs(30));
        let bytes = tokio::time::timeout(limit, axum::body::Bytes::from_request(req, state))
            .await
            .map_err(|_| ControlError::Invalid {
                field: "body",
                reason: "the body did not arrive in time".into(),
            })?
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ControlError::TooLarge(MAX_BODY_BYTES)
                } else {
                    ControlError::Invalid {
                        field: "body",
                        reason: e.body_text(),
                    }
                }
            })?;
        serde_json::from_slice(&bytes)
            .map(Json)
            .map_err(|e| ControlError::Invalid {
                field: "body",
                reason: e.to_string(),
            })
    }
}

fn bearer(h: &HeaderMap) -> Option<&str> {
    h.get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

async fn operator(cp: &ControlPlane, h: &HeaderMap) -> Result<Operator> {
    let s = bearer(h).ok_or_else(|| {
        ControlError::Unauthorized(
            "sign in first: POST /v1/admin/session, then send Authorization: Bearer <session>"
                .into(),
        )
    })?;
    cp.operator(s, unix_now_ms()).await
}

/// The router.
pub fn router(cp: Arc<ControlPlane>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/metrics", get(metrics))
        .route("/v1/info", get(info))
        .route("/v1/node/enroll/challenge", post(challenge))
        .route("/v1/node/enroll", post(enroll))
        .route("/v1/node/enroll/renew", post(renew))
        .route("/v1/node/heartbeat", post(heartbeat))
        .route("/v1/node/jobs/poll", post(poll))
        .route(
            "/v1/node/receipts",
            post(upload_receipts).layer(axum::extract::DefaultBodyLimit::max(
                MAX_RECEIPTS_BODY_BYTES,
            )),
        )
        // A result may carry a support bundle: the only route with a larger body limit.
        .route("/v1/node/jobs/result", post(job_result).layer(axum::extract::DefaultBodyLimit::max(MAX_RESULT_BODY_BYTES)))
        .route("/v1/node/payout-address", post(payout_address))
        .route("/v1/payouts/{address}", get(payouts))
        // On-chain registration (crate::registration).
        .route("/v1/node/registration", post(node_registration))
        .route("/v1/network/contracts", get(network_contracts))
        .route("/v1/epochs/{epoch_id}/claim-file", get(claim_file))
        .route("/v1/admin/session", post(login).delete(logout))
        .route("/v1/admin/nodes", get(list_nodes))
        .route("/v1/admin/nodes/{node_id}", get(get_node))
        .route("/v1/admin/nodes/{node_id}/status", post(set_status))
        .route(
            "/v1/admin/nodes/{node_id}/jobs",
            post(queue_job).get(list_jobs),
        )
        .route("/v1/admin/nodes/{node_id}/usage", get(usage))
        .route("/v1/admin/enrollment-tokens", post(create_token))
        .route(
            "/v1/admin/gateway-keys",
            post(create_gateway_key).get(list_gateway_keys),
        )
        .route(
            "/v1/admin/gateway-keys/{key_id}",
            axum::routing::delete(revoke_gateway_key),
        )
        .route("/v1/admin/credits", get(credits))
        .fallback(|| async {
            ControlError::Refused(crate::store::Refusal::NotFound("route".into()))
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(cp)
}

async fn metrics(State(cp): State<Arc<ControlPlane>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        cp.metrics.render(),
    )
        .into_response()
}

async fn info(State(cp): State<Arc<ControlPlane>>) -> Result<axum::Json<Value>> {
    let c = cp.config();
    Ok(axum::Json(json!({
        "audience": c.audience,
        "job_key": cp.job_public_key().await?,
        "heartbeat_interval_ms": c.heartbeat_interval_ms,
        "store": cp.store().backend(),
    })))
}

async fn challenge(State(cp): State<Arc<ControlPlane>>) -> Result<Response> {
    Ok(axum::Json(cp.challenge(unix_now_ms()).await?).into_response())
}

async fn enroll(
    State(cp): State<Arc<ControlPlane>>,
    h: HeaderMap,
    Json(req): Json<EnrollmentRequest>,
) -> Result<Response> {
    let token = bearer(&h).ok_or_else(|| {
        ControlError::Unauthorized(
            "send the enrollment token as Authorization: Bearer b3iq_enroll_...".into(),
        )
    })?;
    Ok(axum::Json(cp.enroll(token, &req, unix_now_ms()).await?).into_response())
}

async fn heartbeat(
    State(cp): State<Arc<ControlPlane>>,
    Json(req): Json<HeartbeatRequest>,
) -> Result<Response> {
    Ok(axum::Json(cp.heartbeat(&req, unix_now_ms()).await?).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    username: String,
    password: String,
}

async fn login(State(cp): State<Arc<ControlPlane>>, Json(l): Json<Login>) -> Result<Response> {
    let (session, expires_at_ms) = cp.login(&l.username, &l.password, unix_now_ms()).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"session": session, "expires_at_ms": expires_at_ms})),
    )
        .into_response())
}

async fn logout(State(cp): State<Arc<ControlPlane>>, h: HeaderMap) -> Result<Response> {
    operator(&cp, &h).await?;
    if let Some(s) = bearer(&h) {
        cp.logout(s).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_nodes(State(cp): State<Arc<ControlPlane>>, h: HeaderMap) -> Result<Response> {
    let op = operator(&cp, &h).await?;
    Ok(axum::Json(json!({"nodes": cp.nodes(&op.org_id, unix_now_ms()).await?})).into_response())
}

fn node_id(s: &str) -> Result<NodeId> {
    NodeId::parse(s).map_err(|e| ControlError::Invalid {
        field: "node_id",
        reason: e.to_string(),
    })
}

async fn get_node(
    State(cp): State<Arc<ControlPlane>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let op = operator(&cp, &h).await?;
    Ok(axum::Json(cp.node(&op.org_id, &node_id(&id)?, unix_now_ms()).await?).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    status: NodeStatus,
    #[serde(default)]
    reason: String,
}

async fn set_status(
    State(cp): State<Arc<ControlPlane>>,
    h: HeaderMap,
    Path(id): Path<String>,
    Json(s): Json<StatusChange>,
) -> Result<Response> {
    let op = operator(&cp, &h).await?;
    let id = node_id(&id)?;
    cp.set_node_status(&op.org_id, &id, s.status, &s.reason)
        .await?;
    Ok(axum::Json(cp.node(&op.org_id, &id, unix_now_ms()).await?).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    #[serde(default)]
    ttl_s: Option<u64>,
}

async fn create_token(
    State(cp): State<Arc<ControlPlane>>,
    h: HeaderMap,
    Json(t): Json<NewToken>,
) -> Result<Response> {
    let op = operator(&cp, &h).await?;
    let ttl_ms = match t.ttl_s {
        None => crate::plane::DEFAULT_TOKEN_TTL_MS,
        Some(s) => s.checked_mul(1000).ok_or(ControlError::Invalid {
            field: "ttl_s",
            reason: "too large".into(),
        })?,
    };
    let (row, token) = cp
        .create_enrollment_token(&op.org_id, ttl_ms, unix_now_ms())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"id": row.id, "token": token, "org_id": row.org_id, "expires_at_ms": row.expires_at_ms}))).into_response())
}

async fn poll(State(cp): State<Arc<ControlPlane>>, Json(p): Json<JobPoll>) -> Result<Response> {
    Ok(axum::Json(cp.poll(&p, unix_now_ms()).await?).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewJob {
    kind: JobKind,
    #[serde(default)]
    ttl_s: Option<u64>,
}

async fn queue_job(
    State(cp): State<Arc<ControlPlane>>,
    h: HeaderMap,
    Path(id): Path<String>,
    Json(j): Json<NewJob>,
) -> Result<Response> {
    let op = operator(&cp, &h).await?;
    let ttl_ms = j
        .ttl_s
        .map(|s| {
            s.checked_mul(1000).ok_or(ControlError::Invalid {
                field: "ttl_s",
                reason: "too large".into(),
            })
        })
        .transpose()?;
    let v = cp
        .queue_job(&op, &node_id(&id)?, j.kind, ttl_ms, unix_now_ms())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

async fn list_jobs(
    State(cp): State<Arc<ControlPlane>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let op = operator(&cp, &h).await?;
    Ok(axum::Json(json!({"jobs": cp.jobs(&op.org_id, &node_id(&id)?).await?})).into_response())
}

async fn job_result(
    State(cp): State<Arc<ControlPlane>>,
    Json(r): Json<JobResultReport>,
) -> Result<Response> {
    Ok(axum::Json(cp.job_result(&r, unix_now_ms()).await?).into_response())
}

async fn upload_receipts(
    State(cp): State<Arc<ControlPlane>>,
    Json(u): Json<ReceiptUpload>,
) -> Result<Response> {
    Ok(axum::Json(cp.upload_receipts(&u, unix_now_ms()).await?).into_response())
}

async fn payout_address(State(cp): State<Arc<ControlPlane>>, Json(r): Json<b3iq_protocol::payout_api::PayoutAddressRequest>) -> Result<Response> {
    Ok(axum::Json(cp.set_payout_address(&r, unix_now_ms()).await?).into_response())
}

/// The NodeRegistry attestation for a node (signed request; crate::registration).
async fn node_registration(State(cp): State<Arc<ControlPlane>>, Json(r): Json<b3iq_protocol::registration_api::RegistrationRequest>) -> Result<Response> {
    Ok(axum::Json(cp.attest_registration(&r, unix_now_ms()).await?).into_response())
}

/// Public: the chain id and contract addresses nodes register and stake in.
async fn network_contracts(State(cp): State<Arc<ControlPlane>>) -> Result<Response> {
    Ok(axum::Json(cp.registrar()?.contracts()).into_response())
}

/// Public: an address's leaves and proofs in the posted epochs.
async fn payouts(State(cp): State<Arc<ControlPlane>>, Path(address): Path<String>) -> Result<Response> {
    let a = b3iq_core::payout::EthAddress::parse(&address).map_err(|e| ControlError::Invalid { field: "address", reason: e.to_string() })?;
    Ok(axum::Json(cp.settler()?.payouts(&a).await?).into_response())
}

/// Public: the claim file of a posted epoch (every leaf and proof).
async fn claim_file(State(cp): State<Arc<ControlPlane>>, Path(epoch_id): Path<u64>) -> Result<Response> {
    match cp.store().epoch(epoch_id).await? {
        Some(e) if e.posted_at.is_some_and(|t| t > 0) && e.claim_file.is_some() => {
            let v: serde_json::Value = serde_json::from_str(e.claim_file.as_deref().unwrap_or("{}")).map_err(|x| ControlError::Store(x.to_string()))?;
            Ok(axum::Json(v).into_response())
        }
        _ => Err(crate::store::Refusal::NotFound(format!("posted epoch {epoch_id}")).into()),
    }
}

async fn usage(State(cp): State<Arc<ControlPlane>>, h: HeaderMap, Path(id): Path<String>) -> Result<Response> {
    let op = operator(&cp, &h).await?;
    Ok(axum::Json(cp.usage(&op.org_id, &node_id(&id)?).await?).into_response())
}

async fn renew(
    State(cp): State<Arc<ControlPlane>>,
    Json(req): Json<EnrollmentRequest>,
) -> Result<Response> {
    Ok(axum::Json(cp.renew(&req, unix_now_ms()).await?).into_response())
}

// ---- gateway keys and credits (operator, own organisation) ---------------------------------

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGatewayKey {
    name: String,
    #[serde(default)]
    rate_per_min: Option<u32>,
    #[serde(default)]
    spend_limit_per_day: Option<u64>,
}

async fn create_gateway_key(
    State(cp): State<Arc<ControlPlane>>,
    h: HeaderMap,
    Json(k): Json<NewGatewayKey>,
) -> Result<Response> {
    let op = operator(&cp, &h).await?;
    let rate = k
        .rate_per_min
        .unwrap_or(crate::gateway::credits::DEFAULT_RATE_PER_MIN);
    let (key, token) = cp
        .create_gateway_key(
            &op.org_id,
            &k.name,
            rate,
            k.spend_limit_per_day,
            unix_now_ms(),
        )
        .await?;
    tracing::info!(key = %key.id, by = %op.username, "gateway key created over the admin API");
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"key": key, "token": token})),
    )
        .into_response())
}

async fn list_gateway_keys(State(cp): State<Arc<ControlPlane>>, h: HeaderMap) -> Result<Response> {
    let op = operator(&cp, &h).await?;
    Ok(axum::Json(json!({"gateway_keys": cp.gateway_keys(&op.org_id).await?})).into_response())
}

async fn revoke_gateway_key(
    State(cp): State<Arc<ControlPlane>>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let op = operator(&cp, &h).await?;
    cp.revoke_gateway_key(&op.org_id, &id, unix_now_ms())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn credits(State(cp): State<Arc<ControlPlane>>, h: HeaderMap) -> Result<Response> {
    let op = operator(&cp, &h).await?;
    Ok(axum::Json(json!({
        "org_id": op.org_id,
        "balance": cp.credit_balance(&op.org_id).await?,
        "ledger": cp.credit_ledger(&op.org_id, 100).await?,
    }))
    .into_response())
}
