//! A small OpenAI-compatible HTTP server over any [`Runtime`] (axum), used by the upstream
//! tests and by the `serve_openai` example for peer comparisons. Not the product server (that
//! is b3iq-host); it exists so the upstream client is tested against real HTTP and SSE.

#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use b3iq_runtime::*;
use futures::StreamExt;
use serde_json::{json, Value};

#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<dyn Runtime>,
    pub key: Option<String>,
}

fn err(status: StatusCode, message: &str, kind: &str) -> Response {
    (status, Json(json!({"error": {"message": message, "type": kind, "code": status.as_u16()}}))).into_response()
}

fn map_err(e: RuntimeError) -> Response {
    let status = match &e {
        RuntimeError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
        RuntimeError::ModelNotFound { .. } => StatusCode::NOT_FOUND,
        RuntimeError::InvalidRequest(_) | RuntimeError::ContextOverflow { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    err(status, &e.to_string(), "runtime_error")
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    match &state.key {
        None => true,
        Some(k) => headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|v| v == k),
    }
}

async fn models(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return err(StatusCode::UNAUTHORIZED, "bad key", "auth");
    }
    match s.runtime.list_models().await {
        Ok(ms) => Json(json!({"object": "list", "data": ms.iter().map(|m| json!({
            "id": m.id, "object": "model", "owned_by": "b3iq", "max_model_len": m.context_length
        })).collect::<Vec<_>>()}))
        .into_response(),
        Err(e) => map_err(e),
    }
}

fn parse_request(body: &Value, chat: bool) -> Result<(GenerateRequest, bool, bool), RuntimeError> {
    let bad = |m: &str| RuntimeError::InvalidRequest(m.to_string());
    let model = body.get("model").and_then(|m| m.as_str()).ok_or_else(|| bad("model is required"))?;
    let prompt = if chat {
        let msgs = body.get("messages").and_then(|m| m.as_array()).ok_or_else(|| bad("messages is required"))?;
        let mut out = Vec::new();
        for m in msgs {
            let role = match m.get("role").and_then(|r| r.as_str()) {
                Some("system") | Some("developer") => Role::System,
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                Some("tool") => Role::Tool,
                _ => return Err(bad("bad role")),
            };
            let content = m.get("content").and_then(|c| c.as_str()).unwrap_or_default();
            out.push(ChatMessage::new(role, content));
        }
        Prompt::Chat(out)
    } else {
        Prompt::Text(body.get("prompt").and_then(|p| p.as_str()).ok_or_else(|| bad("prompt is required"))?.to_string())
    };
    let mut s = SamplingParams::default();
    let f = |k: &str| body.get(k).and_then(|v| v.as_f64()).map(|v| v as f32);
    if let Some(v) = f("temperature") {
        s.temperature = v;
    }
    if let Some(v) = f("top_p") {
        s.top_p = v;
    }
    if let Some(v) = f("min_p") {
        s.min_p = v;
    }
    if let Some(v) = body.get("top_k").and_then(|v| v.as_i64()) {
        s.top_k = v as i32;
    }
    if let Some(v) = f("presence_penalty") {
        s.presence_penalty = v;
    }
    if let Some(v) = f("frequency_penalty") {
        s.frequency_penalty = v;
    }
    if let Some(v) = f("repetition_penalty") {
        s.repeat_penalty = v;
    }
    s.seed = body.get("seed").and_then(|v| v.as_u64());
    let stop = match body.get("stop") {
        Some(Value::String(x)) => vec![x.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        _ => vec![],
    };
    let response_format = match body.pointer("/response_format/type").and_then(|t| t.as_str()) {
        Some("json_object") => ResponseFormat::JsonObject,
        Some("json_schema") => ResponseFormat::JsonSchema {
            name: body.pointer("/response_format/json_schema/name").and_then(|n| n.as_str()).map(str::to_string),
            schema: body.pointer("/response_format/json_schema/schema").cloned().unwrap_or(Value::Null),
        },
        _ => ResponseFormat::Text,
    };
    let req = GenerateRequest {
        model: model.to_string(),
        prompt,
        sampling: s,
        max_tokens: body.get("max_tokens").and_then(|v| v.as_u64()).map(|v| v as u32),
        stop,
        response_format,
    };
    let stream = body.get("stream").and_then(|v| v.as_bool()).unwrap_or(false);
    let usage = body.pointer("/stream_options/include_usage").and_then(|v| v.as_bool()).unwrap_or(false);
    Ok((req, stream, usage))
}

async fn complete(s: AppState, headers: HeaderMap, body: Value, chat: bool) -> Response {
    if !authorized(&s, &headers) {
        return err(StatusCode::UNAUTHORIZED, "bad key", "auth");
    }
    let (req, stream, include_usage) = match parse_request(&body, chat) {
        Ok(x) => x,
        Err(e) => return map_err(e),
    };
    let model = req.model.clone();
    let gen = match s.runtime.generate(req).await {
        Ok(g) => g,
        Err(e) => return map_err(e),
    };
    let id = "cmpl-test";
    let object = if chat { "chat.completion.chunk" } else { "text_completion" };
    if !stream {
        return match gen.collect_completion().await {
            Ok(c) => {
                let choice = if chat {
                    json!({"index": 0, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason.as_str()})
                } else {
                    json!({"index": 0, "text": c.text, "finish_reason": c.finish_reason.as_str()})
                };
                Json(json!({"id": id, "object": if chat {"chat.completion"} else {"text_completion"}, "model": model, "choices": [choice],
                    "usage": {"prompt_tokens": c.usage.prompt_tokens, "completion_tokens": c.usage.completion_tokens, "total_tokens": c.usage.total_tokens}}))
                .into_response()
            }
            Err(e) => map_err(e),
        };
    }
    let events = gen.flat_map(move |ev| {
        let model = model.clone();
        let out: Vec<Value> = match ev {
            Ok(GenerationEvent::Delta { text }) => {
                let choice = if chat { json!({"index": 0, "delta": {"content": text}, "finish_reason": null}) } else { json!({"index": 0, "text": text, "finish_reason": null}) };
                vec![json!({"id": id, "object": object, "model": model, "choices": [choice]})]
            }
            Ok(GenerationEvent::Done { finish_reason, usage, .. }) => {
                let choice = if chat { json!({"index": 0, "delta": {}, "finish_reason": finish_reason.as_str()}) } else { json!({"index": 0, "text": "", "finish_reason": finish_reason.as_str()}) };
                let mut v = vec![json!({"id": id, "object": object, "model": model, "choices": [choice]})];
                if include_usage {
                    v.push(json!({"id": id, "object": object, "model": model, "choices": [],
                        "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "total_tokens": usage.total_tokens}}));
                }
                v
            }
            Err(e) => vec![json!({"error": {"message": e.to_string()}})],
        };
        futures::stream::iter(out.into_iter().map(|v| Ok::<_, Infallible>(Event::default().data(v.to_string()))))
    });
    let done = futures::stream::once(async { Ok::<_, Infallible>(Event::default().data("[DONE]")) });
    Sse::new(events.chain(done)).into_response()
}

async fn chat_completions(State(s): State<AppState>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    complete(s, headers, body, true).await
}

async fn completions(State(s): State<AppState>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    complete(s, headers, body, false).await
}

async fn tokenize(State(s): State<AppState>, Json(body): Json<Value>) -> Response {
    let model = body.get("model").and_then(|m| m.as_str()).unwrap_or_default().to_string();
    let prompt = Prompt::Text(body.get("prompt").and_then(|p| p.as_str()).unwrap_or_default().to_string());
    match s.runtime.count_tokens(&model, &prompt).await {
        Ok(n) => Json(json!({"count": n})).into_response(),
        Err(e) => map_err(e),
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/tokenize", post(tokenize))
        .with_state(state)
}

/// Serves on 127.0.0.1 at `port` (0 = any); returns the base URL (`http://127.0.0.1:N/v1`).
pub async fn serve(state: AppState, port: u16) -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    format!("http://{addr}/v1")
}
