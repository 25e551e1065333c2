//! `/api/*`, `/healthz` and `/metrics` handlers (owner and setup routes).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use b3iq_core::mode::OperatingMode;
use b3iq_runtime::runtime::{ChatMessage, Prompt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    bearer, clear_cookie, empty, json as js, same_origin, session_cookie, ClientAddr, JsonBody,
    Owner, Scheme,
};
use crate::context::NodeState;
use crate::error::{HostError, Result};
use crate::inference::receipts;
use crate::inference::{self, Caller, InferenceRequest};
use crate::owner::{self, auth, Via};

/// Run a blocking owner operation (argon2id, SQLite) off the async threads.
async fn blocking<T: Send + 'static>(
    st: &Arc<NodeState>,
    f: impl FnOnce(&NodeState) -> Result<T> + Send + 'static,
) -> Result<T> {
    let st = st.clone();
    tokio::task::spawn_blocking(move || f(&st))
        .await
        .map_err(|e| HostError::Internal(e.to_string()))?
}

type St = State<Arc<NodeState>>;

/// `GET /healthz`.
pub async fn healthz() -> Response {
    js(StatusCode::OK, json!({"status": "ok"}))
}

/// `GET /api/setup/status`.
pub async fn setup_status(State(st): St) -> Result<Response> {
    let claimed = st.claimed()?;
    let exp = if claimed {
        None
    } else {
        auth::setup_token_expiry(&st.db)?
    };
    let hardware = crate::models::hardware_json(st.hardware());
    Ok(js(
        StatusCode::OK,
        json!({
            "claimed": claimed,
            "node_id": st.node_id.to_text(),
            "node_code": st.node_code(),
            "version": env!("CARGO_PKG_VERSION"),
            "setup_token_expires_at": exp,
            "hardware": hardware,
            "transport": transport_json(&st),
        }),
    ))
}

/// How clients reach this node: the bound address, whether it is reachable beyond this
/// machine, and TLS (mode and certificate fingerprint, to pin) or `null` for plain HTTP. The
/// wizard warns when `lan` is true and `tls` is null: passwords, cookies and keys then cross the
/// network in clear text.
fn transport_json(st: &NodeState) -> Value {
    let listen = st.listen.get();
    json!({
        "listen": listen.map(|a| a.to_string()),
        "scheme": Scheme::of(st).as_str(),
        "lan": listen.is_some_and(|a| !a.ip().is_loopback()),
        "tls": st.tls.get(),
    })
}

#[derive(Deserialize)]
pub struct ClaimBody {
    setup_token: String,
    username: String,
    password: String,
}

/// `POST /api/setup/claim`.
pub async fn setup_claim(
    State(st): St,
    headers: HeaderMap,
    JsonBody(b): JsonBody<ClaimBody>,
) -> Result<Response> {
    same_origin(&headers, Scheme::of(&st))?;
    let g = blocking(&st, move |st| {
        owner::claim(st, &b.setup_token, &b.username, &b.password, Via::Http)
    })
    .await?;
    tracing::info!(owner = %g.username, "node claimed");
    let mut r = js(
        StatusCode::CREATED,
        json!({"username": g.username, "node_id": st.node_id.to_text(), "expires_at": g.expires_at}),
    );
    r.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&g.session_secret, st.config.session_ttl_s, Scheme::of(&st)),
    );
    Ok(r)
}

#[derive(Deserialize)]
pub struct LoginBody {
    username: String,
    password: String,
}

/// `POST /api/session/login`.
pub async fn login(
    State(st): St,
    client: ClientAddr,
    headers: HeaderMap,
    JsonBody(b): JsonBody<LoginBody>,
) -> Result<Response> {
    same_origin(&headers, Scheme::of(&st))?;
    let source = client.source();
    let g = blocking(&st, move |st| {
        owner::login(st, &source, &b.username, &b.password, Via::Http)
    })
    .await?;
    let mut r = js(
        StatusCode::OK,
        json!({"username": g.username, "expires_at": g.expires_at}),
    );
    r.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&g.session_secret, st.config.session_ttl_s, Scheme::of(&st)),
    );
    Ok(r)
}

/// `POST /api/session/logout`.
pub async fn logout(State(st): St, owner: Owner) -> Result<Response> {
    owner::logout(&st, &owner.secret, &owner.session.username)?;
    let mut r = empty(StatusCode::NO_CONTENT);
    r.headers_mut()
        .insert(header::SET_COOKIE, clear_cookie(Scheme::of(&st)));
    Ok(r)
}

/// `POST /api/session/logout-all`: end every session (sign out everywhere).
pub async fn logout_all(State(st): St, owner: Owner) -> Result<Response> {
    let n = owner::logout_all(&st, &owner.session.username, Via::Http)?;
    let mut r = js(StatusCode::OK, json!({"sessions_ended": n}));
    r.headers_mut()
        .insert(header::SET_COOKIE, clear_cookie(Scheme::of(&st)));
    Ok(r)
}

/// `GET /api/session`.
pub async fn session_info(owner: Owner) -> Response {
    js(
        StatusCode::OK,
        json!({"username": owner.session.username, "expires_at": owner.session.expires_at, "grace_expires_at": owner.session.grace_expires_at}),
    )
}

fn models_json(st: &NodeState) -> Vec<Value> {
    st.served_models()
        .iter()
        .map(|m| {
            json!({
                "id": m.id, "loaded": true, "profile": m.profile,
                "path_name": m.info.path.file_name().map(|n| n.to_string_lossy().to_string()),
                "size_bytes": m.info.size_bytes, "sha256": m.info.sha256,
                "architecture": m.info.architecture, "quantization": m.info.quantization,
                "context_length": m.info.context_length,
            })
        })
        .collect()
}

/// `GET /api/node`.
pub async fn node_info(State(st): St, _o: Owner) -> Result<Response> {
    let rt = st.runtime.as_ref().map(|r| (r.backend_info(), r.metrics()));
    let runtime = match rt {
        Some((b, m)) => {
            json!({"backend": b.name, "kind": b.kind.as_str(), "threads": b.threads, "queue_depth": m.queue_depth, "active_sequences": m.active_sequences, "max_queue": m.queue_capacity, "parallel": m.max_sequences})
        }
        None => Value::Null,
    };
    Ok(js(
        StatusCode::OK,
        json!({
            "node_id": st.node_id.to_text(), "node_code": st.node_code(), "version": env!("CARGO_PKG_VERSION"),
            "mode": st.mode().as_str(), "listen": st.listen.get().map(|a| a.to_string()),
            "uptime_s": st.started.elapsed().as_secs(), "hardware": crate::models::hardware_json(st.hardware()), "runtime": runtime,
            "models": models_json(&st), "receipts_stored": st.db.count("receipts")?,
            "transport": transport_json(&st),
            "managed": managed_json(&st)?,
        }),
    ))
}

/// Managed mode for the wizard: the control plane's id and organisation, the enrollment's
/// expiry and the last heartbeat's outcome; `null` in local mode. No URL or key material beyond
/// the pinned public key (this answer is for the signed-in owner only).
fn managed_json(st: &NodeState) -> Result<Value> {
    Ok(match crate::managed::enrollment(&st.db)? {
        None => Value::Null,
        Some(e) => json!({
            "audience": e.audience, "org_id": e.org_id, "job_key": e.job_key.to_hex(),
            "enrolled_at_ms": e.enrolled_at_ms, "expires_at_ms": e.expires_at_ms,
            "heartbeat_interval_ms": e.heartbeat_interval_ms,
            "last_heartbeat": crate::managed::last_heartbeat(&st.db)?,
        }),
    })
}

/// `GET /api/hardware`.
pub async fn hardware(State(st): St, _o: Owner) -> Result<Response> {
    let installed = crate::models::installed(&st);
    Ok(js(
        StatusCode::OK,
        crate::models::hardware_view(st.hardware(), &installed),
    ))
}

/// `GET /api/models`.
pub async fn models(State(st): St, _o: Owner) -> Result<Response> {
    Ok(js(StatusCode::OK, crate::models::catalog_json(&st)))
}

/// Body of `POST /api/models/load` and `/api/models/unload`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelBody {
    /// A served or installed model id (`GET /api/models`, `served` and `installed`).
    pub model: String,
}

/// `POST /api/models/load`: loads an installed model next to the others (unloading the least
/// recently used idle ones when `max_loaded_models` or `model_memory_mb` is reached), so the
/// first request to it does not wait. 200 with `/api/models`; 404 `model_not_found` for a model
/// not installed (`b3iqd model pull` or `b3iqd model import`); 503 `model_memory_budget` when
/// the models in use leave no room.
pub async fn model_load(State(st): St, _o: Owner, JsonBody(b): JsonBody<ModelBody>) -> Result<Response> {
    let id: String = b.model.chars().take(128).collect();
    let r = st.load_model(&id).await;
    st.db.audit(st.now(), "owner", "model.load", &id, if r.is_ok() { "ok" } else { "refused" }, "");
    r?;
    Ok(js(StatusCode::OK, crate::models::catalog_json(&st)))
}

/// `POST /api/models/unload`: unloads a loaded model (it stays installed; a later request
/// loads it again). 200 with `/api/models`; 404 when not loaded; 409 `model_busy` while it
/// serves requests.
pub async fn model_unload(State(st): St, _o: Owner, JsonBody(b): JsonBody<ModelBody>) -> Result<Response> {
    let id: String = b.model.chars().take(128).collect();
    let r = st.unload_model(&id).await;
    st.db.audit(st.now(), "owner", "model.unload", &id, if r.is_ok() { "ok" } else { "refused" }, "");
    r?;
    Ok(js(StatusCode::OK, crate::models::catalog_json(&st)))
}

/// `GET /api/mode`.
pub async fn mode_get(State(st): St, _o: Owner) -> Result<Response> {
    Ok(js(StatusCode::OK, mode_json(&st)?))
}

fn mode_json(st: &NodeState) -> Result<Value> {
    let managed = managed_json(st)?;
    let managed_choice = if managed.is_null() {
        json!({"mode": "managed", "selectable": false, "reason": "enroll on the node with an operator's token: b3iqd enroll --control https://... --token-file FILE"})
    } else {
        json!({"mode": "managed", "selectable": true})
    };
    let network_choice = match crate::network::not_ready(st) {
        Some(reason) => json!({"mode": "network", "selectable": false, "reason": reason}),
        None => json!({"mode": "network", "selectable": true}),
    };
    Ok(
        json!({"mode": st.reload_mode()?.as_str(), "managed": managed, "network": network_json(st)?, "modes": [
        {"mode": "local", "selectable": true},
        managed_choice,
        network_choice]}),
    )
}

fn network_json(st: &NodeState) -> Result<Value> {
    let p = crate::network::policy(st)?;
    Ok(json!({
        "policy": p,
        "offered_concurrency": crate::network::offered_concurrency(st, &p),
        "models": crate::network::tunnel_models(st, &p).into_iter().map(|m| m.model_id).collect::<Vec<_>>(),
        "tunnel": crate::network::tunnel_status(st),
        "today": crate::network::today(st)?,
    }))
}

/// `GET /api/network`: the network policy, what the tunnel offers, its state, and today's
/// network requests, tokens and earnings.
pub async fn network_get(State(st): St, _o: Owner) -> Result<Response> {
    Ok(js(StatusCode::OK, network_json(&st)?))
}

/// `PUT /api/network`: replace the network policy (schedule, daily tokens, share, models,
/// price floor). The tunnel announces the new share and models when it reconnects.
pub async fn network_put(
    State(st): St,
    _o: Owner,
    JsonBody(p): JsonBody<crate::network::NetworkPolicy>,
) -> Result<Response> {
    crate::network::set_policy(&st, &p)?;
    Ok(js(StatusCode::OK, network_json(&st)?))
}

#[derive(Deserialize)]
pub struct ModeBody {
    mode: String,
}

/// `POST /api/mode`: `local` (leaving managed mode unenrolls: the control plane's trust root is
/// forgotten), or `managed` when the node is enrolled; the choice is persisted.
pub async fn mode_set(
    State(st): St,
    _o: Owner,
    JsonBody(b): JsonBody<ModeBody>,
) -> Result<Response> {
    let shown: String = b.mode.chars().take(32).collect();
    let enrolled = crate::managed::enrollment(&st.db)?.is_some();
    match b.mode.parse::<OperatingMode>() {
        Ok(OperatingMode::Local) => {
            if enrolled {
                crate::managed::unenroll(&st.db)?;
            }
            if st.mode() != OperatingMode::Local {
                st.set_mode(OperatingMode::Local)?;
                st.db
                    .audit(st.now(), "owner", "mode.change", "local", "ok", "");
            }
        }
        Ok(m @ OperatingMode::Managed) if enrolled => {
            if st.mode() != m {
                st.set_mode(m)?;
                st.db
                    .audit(st.now(), "owner", "mode.change", m.as_str(), "ok", "");
            }
        }
        Ok(OperatingMode::Network) => {
            if let Some(reason) = crate::network::not_ready(&st) {
                st.db.audit(
                    st.now(),
                    "owner",
                    "mode.change",
                    "network",
                    "refused",
                    &reason,
                );
                return Err(HostError::InvalidParameter(format!(
                    "network mode cannot be selected: {reason}"
                )));
            }
            if st.mode() != OperatingMode::Network {
                st.set_mode(OperatingMode::Network)?;
                st.db
                    .audit(st.now(), "owner", "mode.change", "network", "ok", "");
            }
        }
        _ => {
            st.db.audit(
                st.now(),
                "owner",
                "mode.change",
                &shown,
                "refused",
                "mode_not_available",
            );
            return Err(HostError::ModeNotAvailable(shown));
        }
    }
    Ok(js(StatusCode::OK, mode_json(&st)?))
}

/// `POST /api/jobs/{id}/approve`: the owner approves a remote job waiting for approval.
pub async fn job_approve(State(st): St, _o: Owner, Path(id): Path<String>) -> Result<Response> {
    Ok(js(
        StatusCode::OK,
        serde_json::to_value(crate::jobs::approve(&st, &id)?).unwrap_or_default(),
    ))
}

/// `POST /api/jobs/{id}/reject`: the owner rejects a remote job waiting for approval.
pub async fn job_reject(State(st): St, _o: Owner, Path(id): Path<String>) -> Result<Response> {
    Ok(js(
        StatusCode::OK,
        serde_json::to_value(crate::jobs::reject(&st, &id)?).unwrap_or_default(),
    ))
}

/// `GET /api/keys`.
pub async fn keys_list(State(st): St, _o: Owner) -> Result<Response> {
    Ok(js(StatusCode::OK, json!({"keys": owner::list_keys(&st)?})))
}

#[derive(Deserialize)]
pub struct KeyBody {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    expires_in_s: Option<u64>,
}

/// `POST /api/keys`.
pub async fn keys_create(
    State(st): St,
    _o: Owner,
    JsonBody(b): JsonBody<KeyBody>,
) -> Result<Response> {
    let (info, secret) = owner::create_key(&st, &b.name, &b.scopes, b.expires_in_s, Via::Http)?;
    Ok(js(
        StatusCode::CREATED,
        json!({"key": info, "secret": secret}),
    ))
}

/// `DELETE /api/keys/{id}`.
pub async fn keys_revoke(State(st): St, _o: Owner, Path(id): Path<String>) -> Result<Response> {
    owner::revoke_key(&st, &id, Via::Http)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<u32>,
    before: Option<i64>,
}

/// `GET /api/receipts`.
pub async fn receipts_list(
    State(st): St,
    _o: Owner,
    Query(q): Query<ListQuery>,
) -> Result<Response> {
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let list = receipts::list(&st, limit, q.before)?;
    let next = if list.len() as u32 == limit {
        list.last().map(|r| r.seq)
    } else {
        None
    };
    Ok(js(
        StatusCode::OK,
        json!({"receipts": list, "next_before": next}),
    ))
}

/// `GET /api/receipts/{id}`.
pub async fn receipt_get(State(st): St, _o: Owner, Path(id): Path<String>) -> Result<Response> {
    let r = receipts::get(&st, &id)?.ok_or_else(|| {
        HostError::NotFound(format!(
            "receipt {}",
            id.chars().take(80).collect::<String>()
        ))
    })?;
    Ok(js(StatusCode::OK, json!(r)))
}

/// `GET /api/audit`.
pub async fn audit(State(st): St, _o: Owner, Query(q): Query<ListQuery>) -> Result<Response> {
    let events = crate::store::audit::recent(&st.db, q.limit.unwrap_or(100).clamp(1, 1000))?;
    Ok(js(StatusCode::OK, json!({"events": events})))
}

/// `GET /api/update`: the running version and, when a release repository is configured, a
/// fresh signed check of it (`crate::update::status`; at most 15 s).
pub async fn update_status(State(st): St, _o: Owner) -> Result<Response> {
    let s = crate::update::status(
        st.home.root(),
        st.config.update_ca_file.as_deref(),
        std::time::Duration::from_secs(15),
    )
    .await;
    Ok(js(StatusCode::OK, serde_json::to_value(s).unwrap_or_default()))
}

#[derive(Deserialize)]
pub struct UsageQuery {
    bucket: Option<String>,
    since: Option<u64>,
}

/// `GET /api/usage`.
pub async fn usage(State(st): St, _o: Owner, Query(q): Query<UsageQuery>) -> Result<Response> {
    let (bucket, width, default_span) = match q.bucket.as_deref().unwrap_or("hour") {
        "hour" => ("hour", 3600i64, 24 * 3600u64),
        "day" => ("day", 86400i64, 30 * 86400u64),
        other => {
            return Err(HostError::InvalidParameter(format!(
                "bucket must be \"hour\" or \"day\", got {:?}",
                other.chars().take(16).collect::<String>()
            )))
        }
    };
    let since = q
        .since
        .unwrap_or_else(|| st.now().saturating_sub(default_span)) as i64;
    let (series, by_key, by_model) = crate::store::usage::summary(&st.db, width, since)?;
    Ok(js(
        StatusCode::OK,
        json!({"bucket": bucket, "series": series, "by_key": by_key, "by_model": by_model}),
    ))
}

/// `GET /api/jobs`.
pub async fn jobs_list(State(st): St, _o: Owner) -> Result<Response> {
    Ok(js(
        StatusCode::OK,
        json!({"jobs": crate::jobs::list(&st, 100)?}),
    ))
}

/// `GET /api/jobs/{id}`.
pub async fn job_get(State(st): St, _o: Owner, Path(id): Path<String>) -> Result<Response> {
    let j = crate::jobs::get(&st, &id)?.ok_or_else(|| {
        HostError::NotFound(format!("job {}", id.chars().take(80).collect::<String>()))
    })?;
    Ok(js(StatusCode::OK, json!(j)))
}

/// `POST /api/jobs`.
pub async fn jobs_create(
    State(st): St,
    _o: Owner,
    JsonBody(b): JsonBody<Value>,
) -> Result<Response> {
    let kind = crate::jobs::kind_from_api(&b)?;
    let job = crate::jobs::submit_owner(&st, kind).await?;
    Ok(js(StatusCode::ACCEPTED, json!({"job": job})))
}

#[derive(Deserialize)]
pub struct PlaygroundBody {
    messages: Vec<PlayMsg>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
pub struct PlayMsg {
    role: String,
    content: String,
}

/// `POST /api/playground/chat`.
pub async fn playground_chat(
    State(st): St,
    _o: Owner,
    JsonBody(b): JsonBody<PlaygroundBody>,
) -> Result<Response> {
    let max_tokens = b.max_tokens.unwrap_or(64);
    if !(1..=512).contains(&max_tokens) {
        return Err(HostError::InvalidParameter(
            "max_tokens must be between 1 and 512".into(),
        ));
    }
    if b.messages.is_empty() {
        return Err(HostError::InvalidParameter(
            "messages must not be empty".into(),
        ));
    }
    let mut msgs = Vec::new();
    for m in b.messages {
        msgs.push(match m.role.as_str() {
            "system" => ChatMessage::system(m.content),
            "user" => ChatMessage::user(m.content),
            "assistant" => ChatMessage::assistant(m.content),
            _ => {
                return Err(HostError::InvalidParameter(
                    "role must be system, user or assistant".into(),
                ))
            }
        });
    }
    let model = match b.model {
        Some(id) => st.served_model(&id).ok_or(HostError::ModelNotFound(id))?,
        None => st
            .served_models()
            .into_iter()
            .next()
            .ok_or(HostError::ModelNotLoaded)?,
    };
    let done = inference::start(
        &st,
        InferenceRequest::new(Caller::Owner, model.clone(), Prompt::Chat(msgs), max_tokens),
    )
    .await?
    .collect()
    .await?;
    let f = &done.finished;
    let duration_ms = f.timings.total_us / 1000;
    Ok(js(
        StatusCode::OK,
        json!({
            "model": model.id, "content": done.text, "finish_reason": f.finish_reason.as_str(),
            "usage": f.usage, "ttft_ms": f.ttft_ms, "duration_ms": duration_ms,
            "tokens_per_second": f.timings.generation_tokens_per_second(&f.usage), "receipt_id": f.receipt_id,
        }),
    ))
}

/// `GET /api/support/grants`.
pub async fn grants_list(State(st): St, _o: Owner) -> Result<Response> {
    Ok(js(
        StatusCode::OK,
        json!({"grants": owner::list_grants(&st)?}),
    ))
}

#[derive(Deserialize)]
pub struct GrantBody {
    #[serde(default)]
    ttl_s: Option<u64>,
    #[serde(default)]
    note: Option<String>,
}

/// `POST /api/support/grants`.
pub async fn grants_create(
    State(st): St,
    _o: Owner,
    JsonBody(b): JsonBody<GrantBody>,
) -> Result<Response> {
    let (g, secret) = owner::create_grant(
        &st,
        b.ttl_s.unwrap_or(3600),
        b.note.as_deref().unwrap_or(""),
        Via::Http,
    )?;
    Ok(js(
        StatusCode::CREATED,
        json!({"grant": g, "secret": secret}),
    ))
}

/// `DELETE /api/support/grants/{id}`.
pub async fn grants_revoke(State(st): St, _o: Owner, Path(id): Path<String>) -> Result<Response> {
    owner::revoke_grant(&st, &id, Via::Http)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `GET /api/support/bundle` (owner or support grant).
pub async fn support_bundle(
    State(st): St,
    owner: Option<Owner>,
    headers: HeaderMap,
) -> Result<Response> {
    let actor = match owner {
        Some(_) => "owner".to_string(),
        None => {
            let tok = bearer(&headers).ok_or(HostError::SessionRequired)?;
            let g = auth::authenticate_grant(&st.db, tok, st.now())?;
            format!("support:{}", g.id)
        }
    };
    let st2 = st.clone();
    let bytes = tokio::task::spawn_blocking(move || crate::support::build_bundle(&st2))
        .await
        .map_err(|e| HostError::Internal(e.to_string()))??;
    st.db.audit(
        st.now(),
        &actor,
        "support.bundle",
        "",
        "ok",
        &format!("bytes={}", bytes.len()),
    );
    let mut r = (StatusCode::OK, bytes).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"b3iq-support.tar.gz\""),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `GET /metrics` (owner or key with the metrics scope).
pub async fn metrics(State(st): St, owner: Option<Owner>, headers: HeaderMap) -> Result<Response> {
    if owner.is_none() {
        let tok = bearer(&headers).ok_or(HostError::MissingCredentials)?;
        auth::authenticate_key(&st.db, tok, auth::SCOPE_METRICS, st.now())?;
    }
    let text = st.metrics.render(
        st.runtime.as_ref().map(|r| r.metrics()),
        st.db.count("receipts")?,
    );
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}
