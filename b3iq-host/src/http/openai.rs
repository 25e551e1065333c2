//! OpenAI-compatible routes: `/v1/models`, `/v1/chat/completions`, `/v1/completions`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use b3iq_runtime::runtime::{ChatMessage, Prompt, ResponseFormat, Role, SamplingParams};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{bearer, JsonBody, RawBody};
use crate::context::{NodeState, ServedModel};
use crate::error::{HostError, Result};
use crate::inference::{self, Caller, Inference, InferenceEvent, InferenceRequest};
use crate::owner::auth;

/// Default `max_tokens` when the client sends none.
pub const DEFAULT_MAX_TOKENS: u32 = 256;
/// Largest accepted `max_tokens`.
pub const MAX_MAX_TOKENS: u32 = 4096;

/// Authenticate a `/v1` caller: 503 before claim, then a key with the inference scope.
fn authenticate(st: &NodeState, headers: &HeaderMap) -> Result<Caller> {
    if !st.claimed()? {
        return Err(HostError::NotClaimed);
    }
    let tok = bearer(headers).ok_or(HostError::MissingCredentials)?;
    Ok(Caller::LocalKey(auth::authenticate_key(&st.db, tok, auth::SCOPE_INFERENCE, st.now())?.id))
}

/// `GET /v1/models`.
pub async fn models(State(st): State<Arc<NodeState>>, headers: HeaderMap) -> Result<Response> {
    authenticate(&st, &headers)?;
    let created = st.now();
    let data: Vec<Value> = st
        .served_models()
        .iter()
        .map(|m| json!({"id": m.id, "object": "model", "created": created, "owned_by": "b3iq"}))
        .collect();
    Ok(axum::Json(json!({"object": "list", "data": data})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
    Null(()),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StopParam {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PromptParam {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The request fields both endpoints share.
#[derive(Debug, Deserialize)]
struct Common {
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stop: Option<StopParam>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<i64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct ChatBody {
    #[serde(flatten)]
    common: Common,
    messages: Option<Vec<Message>>,
}

#[derive(Debug, Deserialize)]
struct CompletionBody {
    #[serde(flatten)]
    common: Common,
    prompt: Option<PromptParam>,
}

fn bad(msg: impl Into<String>) -> HostError {
    HostError::InvalidParameter(msg.into())
}

/// Parsed, validated common parameters.
struct Params {
    model: ServedModel,
    sampling: SamplingParams,
    max_tokens: u32,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
}

fn parse_common(st: &NodeState, c: &Common) -> Result<Params> {
    parse_common_with(c, &|id| st.served_model(id))
}

/// Validate the parameters, then resolve the model (last, so every parameter error is found
/// without a node; the fuzz target relies on this).
fn parse_common_with(c: &Common, resolve: &dyn Fn(&str) -> Option<ServedModel>) -> Result<Params> {
    let model_id = c.model.as_deref().filter(|m| !m.is_empty()).ok_or_else(|| bad("`model` is required; GET /v1/models lists them"))?;
    let max_tokens = match c.max_completion_tokens.or(c.max_tokens) {
        None => DEFAULT_MAX_TOKENS,
        Some(n) if (1..=MAX_MAX_TOKENS as i64).contains(&n) => n as u32,
        Some(n) => return Err(bad(format!("max_tokens must be between 1 and {MAX_MAX_TOKENS}, got {n}"))),
    };
    let mut sampling = SamplingParams::default();
    if let Some(t) = c.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(bad(format!("temperature must be between 0 and 2, got {t}")));
        }
        sampling.temperature = t as f32;
    }
    if let Some(p) = c.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(bad(format!("top_p must be in (0, 1], got {p}")));
        }
        sampling.top_p = p as f32;
    }
    for (name, v, slot) in [
        ("presence_penalty", c.presence_penalty, &mut sampling.presence_penalty),
        ("frequency_penalty", c.frequency_penalty, &mut sampling.frequency_penalty),
    ] {
        if let Some(v) = v {
            if !(-2.0..=2.0).contains(&v) {
                return Err(bad(format!("{name} must be between -2 and 2, got {v}")));
            }
            *slot = v as f32;
        }
    }
    sampling.seed = c.seed.map(|s| s as u64);
    if let Some(n) = c.n {
        if n != 1 {
            return Err(bad("only n = 1 is supported"));
        }
    }
    let stop = match &c.stop {
        None => Vec::new(),
        Some(StopParam::One(s)) => vec![s.clone()],
        Some(StopParam::Many(v)) => v.clone(),
    };
    if stop.len() > 4 || stop.iter().any(|s| s.is_empty()) {
        return Err(bad("stop must be a non-empty string or up to 4 non-empty strings"));
    }
    let stream = c.stream.unwrap_or(false);
    let include_usage = c.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let model = resolve(model_id).ok_or_else(|| HostError::ModelNotFound(model_id.chars().take(128).collect()))?;
    Ok(Params { model, sampling, max_tokens, stop, stream, include_usage })
}

fn parse_messages(msgs: Option<Vec<Message>>) -> Result<Vec<ChatMessage>> {
    let msgs = msgs.ok_or_else(|| bad("`messages` is required"))?;
    if msgs.is_empty() {
        return Err(bad("`messages` must not be empty"));
    }
    msgs.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "tool" => Role::Tool,
                other => return Err(bad(format!("messages[{i}].role {other:?} is not one of system, user, assistant, tool"))),
            };
            let content = match m.content {
                None | Some(Content::Null(())) => String::new(),
                Some(Content::Text(s)) => s,
                Some(Content::Parts(parts)) => {
                    let mut s = String::new();
                    for p in parts {
                        if p.kind != "text" {
                            return Err(bad(format!("messages[{i}]: content part type {:?} is not supported (only text)", p.kind)));
                        }
                        s.push_str(p.text.as_deref().unwrap_or(""));
                    }
                    s
                }
            };
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

/// Which endpoint is being served (response shapes differ).
#[derive(Clone, Copy, PartialEq)]
enum Flavor {
    Chat,
    Text,
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(State(st): State<Arc<NodeState>>, headers: HeaderMap, RawBody(body): RawBody) -> Result<Response> {
    let caller = authenticate(&st, &headers)?;
    let JsonBody(b) = parse_json::<ChatBody>(&body)?;
    let p = parse_common(&st, &b.common)?;
    let messages = parse_messages(b.messages)?;
    let prompt = Prompt::Chat(messages);
    run(st, caller, p, prompt, Flavor::Chat).await
}

/// `POST /v1/completions`.
pub async fn completions(State(st): State<Arc<NodeState>>, headers: HeaderMap, RawBody(body): RawBody) -> Result<Response> {
    let caller = authenticate(&st, &headers)?;
    let JsonBody(b) = parse_json::<CompletionBody>(&body)?;
    let p = parse_common(&st, &b.common)?;
    let text = match b.prompt {
        None => return Err(bad("`prompt` is required")),
        Some(PromptParam::One(s)) => s,
        Some(PromptParam::Many(mut v)) if v.len() == 1 => v.remove(0),
        Some(PromptParam::Many(_)) => return Err(bad("`prompt` must be a string or an array of exactly one string")),
    };
    if text.is_empty() {
        return Err(bad("`prompt` must not be empty"));
    }
    run(st, caller, p, Prompt::Text(text), Flavor::Text).await
}

/// Parse and validate a `/v1/chat/completions` or `/v1/completions` body from outside bytes
/// without a running node (no model is served, so a valid body ends in `ModelNotFound`). For the
/// fuzz target: it must return a typed error for any input, never panic.
pub fn validate_request_body(chat: bool, body: &[u8]) -> Result<()> {
    let none = |_: &str| None;
    if chat {
        let JsonBody(b) = parse_json::<ChatBody>(body)?;
        parse_messages(b.messages)?;
        parse_common_with(&b.common, &none).map(|_| ())
    } else {
        let JsonBody(b) = parse_json::<CompletionBody>(body)?;
        if b.prompt.is_none() {
            return Err(bad("`prompt` is required"));
        }
        parse_common_with(&b.common, &none).map(|_| ())
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<JsonBody<T>> {
    if body.is_empty() {
        return Err(HostError::InvalidJson("the body is empty; send a JSON object".into()));
    }
    serde_json::from_slice(body).map(JsonBody).map_err(|e| HostError::InvalidJson(e.to_string()))
}

async fn run(st: Arc<NodeState>, caller: Caller, p: Params, prompt: Prompt, flavor: Flavor) -> Result<Response> {
    let req = InferenceRequest {
        caller,
        model: p.model.clone(),
        prompt,
        sampling: p.sampling,
        max_tokens: p.max_tokens,
        stop: p.stop,
        response_format: ResponseFormat::default(),
    };
    let mut inf = inference::start(&st, req).await?;
    let created = inf.created();
    let id = match flavor {
        Flavor::Chat => format!("chatcmpl-{}", inf.request_id().to_hex()),
        Flavor::Text => format!("cmpl-{}", inf.request_id().to_hex()),
    };

    if !p.stream {
        let mut text = String::new();
        while let Some(ev) = inf.next().await {
            match ev? {
                InferenceEvent::Delta(t) => text.push_str(&t),
                InferenceEvent::Done(inference::Finished { finish_reason, usage, receipt_id, .. }) => {
                    let choice = match flavor {
                        Flavor::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": finish_reason.as_str()}),
                        Flavor::Text => json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason.as_str()}),
                    };
                    let object = if flavor == Flavor::Chat { "chat.completion" } else { "text_completion" };
                    return Ok(axum::Json(json!({
                        "id": id, "object": object, "created": created, "model": p.model.id,
                        "choices": [choice],
                        "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "total_tokens": usage.total_tokens},
                        "system_fingerprint": concat!("b3iq-", env!("CARGO_PKG_VERSION")),
                        "b3iq_receipt_id": receipt_id,
                    }))
                    .into_response());
                }
            }
        }
        return Err(HostError::Internal("generation ended without a final event".into()));
    }

    // Streaming: an unfold over the generation stream. Dropping the body (client gone) drops the
    // generation stream, which cancels the sequence.
    let object = if flavor == Flavor::Chat { "chat.completion.chunk" } else { "text_completion" };
    let model_id = p.model.id.clone();
    let chunk = move |choices: Value, usage: Option<Value>| -> Bytes {
        let mut v = json!({"id": id, "object": object, "created": created, "model": model_id,
            "system_fingerprint": concat!("b3iq-", env!("CARGO_PKG_VERSION")), "choices": choices});
        if let Some(u) = usage {
            v["usage"] = u;
        }
        Bytes::from(format!("data: {v}\n\n"))
    };
    struct S<C> {
        inf: Option<Inference>,
        chunk: C,
        flavor: Flavor,
        include_usage: bool,
        started: bool,
        pending: std::collections::VecDeque<Bytes>,
    }
    let init = S { inf: Some(inf), chunk, flavor, include_usage: p.include_usage, started: false, pending: Default::default() };
    let body_stream = futures_util::stream::unfold(init, |mut s| async move {
        loop {
            if let Some(b) = s.pending.pop_front() {
                return Some((Ok::<Bytes, std::io::Error>(b), s));
            }
            if !s.started {
                s.started = true;
                if s.flavor == Flavor::Chat {
                    let c = (s.chunk)(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]), None);
                    return Some((Ok(c), s));
                }
                continue;
            }
            let inf = s.inf.as_mut()?;
            match inf.next().await {
                None => {
                    s.inf = None;
                    let e = HostError::Internal("generation ended without a final event".into());
                    return Some((Ok(Bytes::from(format!("data: {}\n\n", e.body()))), s));
                }
                Some(Err(e)) => {
                    // A runtime failure mid-stream, or the receipt could not be stored: an error
                    // event and no [DONE] (the response did not complete).
                    s.inf = None;
                    tracing::warn!(error = %e, "stream failed after it started");
                    return Some((Ok(Bytes::from(format!("data: {}\n\n", e.body()))), s));
                }
                Some(Ok(InferenceEvent::Delta(text))) => {
                    let choices = match s.flavor {
                        Flavor::Chat => json!([{"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": null}]),
                        Flavor::Text => json!([{"index": 0, "text": text, "logprobs": null, "finish_reason": null}]),
                    };
                    return Some((Ok((s.chunk)(choices, None)), s));
                }
                Some(Ok(InferenceEvent::Done(f))) => {
                    // The receipt is already durable: finish, usage, [DONE].
                    s.inf = None;
                    let choices = match s.flavor {
                        Flavor::Chat => json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": f.finish_reason.as_str()}]),
                        Flavor::Text => json!([{"index": 0, "text": "", "logprobs": null, "finish_reason": f.finish_reason.as_str()}]),
                    };
                    s.pending.push_back((s.chunk)(choices, None));
                    if s.include_usage {
                        let u = json!({"prompt_tokens": f.usage.prompt_tokens, "completion_tokens": f.usage.completion_tokens, "total_tokens": f.usage.total_tokens});
                        s.pending.push_back((s.chunk)(json!([]), Some(u)));
                    }
                    s.pending.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
                }
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(body_stream));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_and_refuse_bad_roles() {
        let m: Vec<Message> = serde_json::from_str(r#"[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":null}]"#).unwrap();
        let out = parse_messages(Some(m)).unwrap();
        assert_eq!(out[1].content, "ab");
        assert_eq!(out[2].content, "");
        let m: Vec<Message> = serde_json::from_str(r#"[{"role":"wizard","content":"x"}]"#).unwrap();
        assert!(parse_messages(Some(m)).unwrap_err().to_string().contains("wizard"));
        assert!(parse_messages(Some(vec![])).is_err());
        assert!(parse_messages(None).is_err());
        let m: Vec<Message> = serde_json::from_str(r#"[{"role":"user","content":[{"type":"image_url"}]}]"#).unwrap();
        assert!(parse_messages(Some(m)).is_err());
    }

    #[test]
    fn request_bodies_get_typed_errors() {
        assert!(matches!(validate_request_body(true, b""), Err(HostError::InvalidJson(_))));
        assert!(matches!(validate_request_body(true, b"[1,2"), Err(HostError::InvalidJson(_))));
        let ok = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stop":["x"]}"#;
        assert!(matches!(validate_request_body(true, ok), Err(HostError::ModelNotFound(_))));
        let bad_tokens = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":0}"#;
        assert!(matches!(validate_request_body(true, bad_tokens), Err(HostError::InvalidParameter(_))));
        let bad_n = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":3}"#;
        assert!(matches!(validate_request_body(true, bad_n), Err(HostError::InvalidParameter(_))));
        let many_stops = br#"{"model":"m","prompt":"x","stop":["a","b","c","d","e"]}"#;
        assert!(matches!(validate_request_body(false, many_stops), Err(HostError::InvalidParameter(_))));
        assert!(matches!(validate_request_body(false, br#"{"model":"m"}"#), Err(HostError::InvalidParameter(_))));
    }

    #[test]
    fn queue_full_maps_to_429_with_whole_seconds() {
        use b3iq_runtime::RuntimeError;
        use inference::map_runtime;
        let e = map_runtime(RuntimeError::QueueFull { retry_after_ms: 1500 });
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(matches!(e, HostError::QueueFull(2)));
        let e = map_runtime(RuntimeError::QueueFull { retry_after_ms: 0 });
        assert!(matches!(e, HostError::QueueFull(1)));
        let r = HostError::QueueFull(2).into_response();
        assert_eq!(r.headers().get(header::RETRY_AFTER).unwrap(), "2");
    }
}
