//! OpenAI-compatible routes: `/v1/models`, `/v1/chat/completions`, `/v1/completions`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use b3iq_openai::response::{CHAT_COMPLETION, CHAT_COMPLETION_CHUNK, TEXT_COMPLETION};
use b3iq_openai::{self as wire, sse, ChatChunkChoice, ChatCompletionRequest, CommonParams, CompletionRequest, PromptInput, TextChoice};
use b3iq_runtime::runtime::{ChatMessage, Prompt, ResponseFormat, Role, SamplingParams};

use super::{bearer, JsonBody, RawBody};
use crate::context::{NodeState, ServedModel};
use crate::error::{HostError, Result};
use crate::inference::{self, Caller, Inference, InferenceEvent, InferenceRequest};
use crate::network::{self, TunnelContext};
use crate::owner::auth;

/// Default `max_tokens` when the client sends none.
pub const DEFAULT_MAX_TOKENS: u32 = 256;
/// Largest accepted `max_tokens`.
pub const MAX_MAX_TOKENS: u32 = 4096;

/// `system_fingerprint` of every answer: this build.
const FINGERPRINT: &str = concat!("b3iq-", env!("CARGO_PKG_VERSION"));

/// Authenticate a `/v1` caller: 503 before claim, then a key with the inference scope.
fn authenticate(st: &NodeState, headers: &HeaderMap) -> Result<Caller> {
    if !st.claimed()? {
        return Err(HostError::NotClaimed);
    }
    let tok = bearer(headers).ok_or(HostError::MissingCredentials)?;
    Ok(Caller::LocalKey(auth::authenticate_key(&st.db, tok, auth::SCOPE_INFERENCE, st.now())?.id))
}

/// The caller of an inference request: on the gateway's tunnel (the request carries the
/// tunnel's context, which only the tunnel inserts) its ticket alone, never a local key;
/// otherwise a local key.
fn caller(st: &Arc<NodeState>, req: &Request) -> Result<Caller> {
    match req.extensions().get::<TunnelContext>() {
        Some(t) => {
            let h = req.headers().get(b3iq_protocol::gateway::TICKET_HEADER).and_then(|v| v.to_str().ok());
            network::admit(st, t, h).map(Caller::Network).inspect_err(|e| tracing::info!(code = e.code(), reason = %e, "network mode: a tunnelled request was refused"))
        }
        None => authenticate(st, req.headers()),
    }
}

/// A network request must ask for the model its ticket is for.
fn check_ticket_model(caller: &Caller, model: &str) -> Result<()> {
    match caller {
        Caller::Network(g) if g.ticket.model_id != model => Err(HostError::InvalidTicket(format!("the ticket is for model {}, the request asks for {model:?}", g.ticket.model_id))),
        _ => Ok(()),
    }
}

/// `GET /v1/models`: the served models (on the tunnel: those offered to the network).
pub async fn models(State(st): State<Arc<NodeState>>, req: Request) -> Result<Response> {
    let created = st.now();
    let ids: Vec<String> = if req.extensions().get::<TunnelContext>().is_some() {
        network::tunnel_models(&st, &network::policy(&st)?).into_iter().map(|m| m.model_id).collect()
    } else {
        authenticate(&st, req.headers())?;
        st.served_models().into_iter().map(|m| m.id).collect()
    };
    let data = ids.iter().map(|id| wire::Model::new(id, created, "b3iq")).collect();
    Ok(axum::Json(wire::ModelList::new(data)).into_response())
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

fn parse_common(st: &NodeState, c: &CommonParams) -> Result<Params> {
    parse_common_with(c, &|id| st.served_model(id))
}

/// Validate the parameters, then resolve the model (last, so every parameter error is found
/// without a node; the fuzz target relies on this).
fn parse_common_with(c: &CommonParams, resolve: &dyn Fn(&str) -> Option<ServedModel>) -> Result<Params> {
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
    sampling.seed = c.seed;
    if let Some(n) = c.n {
        if n != 1 {
            return Err(bad("only n = 1 is supported"));
        }
    }
    let stop = c.stop.clone().map(wire::Stop::into_vec).unwrap_or_default();
    if stop.len() > 4 || stop.iter().any(|s| s.is_empty()) {
        return Err(bad("stop must be a non-empty string or up to 4 non-empty strings"));
    }
    let stream = c.stream.unwrap_or(false);
    let include_usage = c.include_usage();
    let model = resolve(model_id).ok_or_else(|| HostError::ModelNotFound(model_id.chars().take(128).collect()))?;
    Ok(Params { model, sampling, max_tokens, stop, stream, include_usage })
}

fn parse_messages(msgs: Option<Vec<wire::ChatMessage>>) -> Result<Vec<ChatMessage>> {
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
                None => String::new(),
                Some(c) => c.into_text().map_err(|p| bad(format!("messages[{i}]: content part type {:?} is not supported (only text)", p.kind)))?,
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

/// One SSE event carrying `value` as JSON.
fn event<T: serde::Serialize>(value: &T) -> Bytes {
    Bytes::from(sse::encode_json(value))
}

fn wire_usage(u: &b3iq_runtime::runtime::Usage) -> wire::Usage {
    wire::Usage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.total_tokens }
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(State(st): State<Arc<NodeState>>, req: Request) -> Result<Response> {
    // The key is checked before the body is read: a stranger's 2 MiB body gets 401, not 413.
    let caller = caller(&st, &req)?;
    let RawBody(body) = RawBody::from_request(req, &()).await?;
    let JsonBody(b) = parse_json::<ChatCompletionRequest>(&body)?;
    let p = parse_common(&st, &b.params)?;
    check_ticket_model(&caller, &p.model.id)?;
    let messages = parse_messages(b.messages)?;
    let prompt = Prompt::Chat(messages);
    run(st, caller, p, prompt, Flavor::Chat).await
}

/// `POST /v1/completions`.
pub async fn completions(State(st): State<Arc<NodeState>>, req: Request) -> Result<Response> {
    let caller = caller(&st, &req)?;
    let RawBody(body) = RawBody::from_request(req, &()).await?;
    let JsonBody(b) = parse_json::<CompletionRequest>(&body)?;
    let p = parse_common(&st, &b.params)?;
    check_ticket_model(&caller, &p.model.id)?;
    let text = match b.prompt {
        None => return Err(bad("`prompt` is required")),
        Some(PromptInput::One(s)) => s,
        Some(PromptInput::Many(mut v)) if v.len() == 1 => v.remove(0),
        Some(PromptInput::Many(_)) => return Err(bad("`prompt` must be a string or an array of exactly one string")),
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
        let JsonBody(b) = parse_json::<ChatCompletionRequest>(body)?;
        parse_messages(b.messages)?;
        parse_common_with(&b.params, &none).map(|_| ())
    } else {
        let JsonBody(b) = parse_json::<CompletionRequest>(body)?;
        if b.prompt.is_none() {
            return Err(bad("`prompt` is required"));
        }
        parse_common_with(&b.params, &none).map(|_| ())
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<JsonBody<T>> {
    if body.is_empty() {
        return Err(HostError::InvalidJson("the body is empty; send a JSON object".into()));
    }
    serde_json::from_slice(body).map(JsonBody).map_err(|e| HostError::InvalidJson(e.to_string()))
}

async fn run(st: Arc<NodeState>, caller: Caller, p: Params, prompt: Prompt, flavor: Flavor) -> Result<Response> {
    // A network answer carries the node's signed receipt for the gateway to settle with.
    let network = matches!(caller, Caller::Network(_));
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
                InferenceEvent::Done(inference::Finished { finish_reason, usage, receipt_id, receipt, .. }) => {
                    let object = if flavor == Flavor::Chat { CHAT_COMPLETION } else { TEXT_COMPLETION };
                    let head = wire::Completion::<()>::new(id, object, created, p.model.id.clone()).with_fingerprint(FINGERPRINT);
                    let (usage, reason) = (wire_usage(&usage), finish_reason.as_str());
                    let mut resp = match flavor {
                        Flavor::Chat => {
                            let choice = wire::ChatChoice::assistant(text, reason);
                            axum::Json(head.with_choices(vec![choice]).with_usage(usage).with_receipt(receipt_id)).into_response()
                        }
                        Flavor::Text => {
                            let choice = TextChoice::finished(text, reason);
                            axum::Json(head.with_choices(vec![choice]).with_usage(usage).with_receipt(receipt_id)).into_response()
                        }
                    };
                    if network {
                        if let Ok(v) = HeaderValue::from_str(&hex::encode(&receipt)) {
                            resp.headers_mut().insert(b3iq_protocol::gateway::RECEIPT_HEADER, v);
                        }
                    }
                    return Ok(resp);
                }
            }
        }
        return Err(HostError::Internal("generation ended without a final event".into()));
    }

    // Streaming: an unfold over the generation stream. Dropping the body (client gone) drops the
    // generation stream, which cancels the sequence.
    let object = if flavor == Flavor::Chat { CHAT_COMPLETION_CHUNK } else { TEXT_COMPLETION };
    // Every chunk repeats this header (id, object, created, model, fingerprint).
    let head = wire::Completion::<()>::new(id, object, created, p.model.id.clone()).with_fingerprint(FINGERPRINT);
    struct S {
        inf: Option<Inference>,
        head: wire::Completion<()>,
        flavor: Flavor,
        include_usage: bool,
        network: bool,
        started: bool,
        pending: std::collections::VecDeque<Bytes>,
    }
    let init = S { inf: Some(inf), head, flavor, include_usage: p.include_usage, network, started: false, pending: Default::default() };
    let body_stream = futures_util::stream::unfold(init, |mut s| async move {
        loop {
            if let Some(b) = s.pending.pop_front() {
                return Some((Ok::<Bytes, std::io::Error>(b), s));
            }
            if !s.started {
                s.started = true;
                if s.flavor == Flavor::Chat {
                    let c = event(&s.head.with_choices(vec![ChatChunkChoice::role("assistant")]));
                    return Some((Ok(c), s));
                }
                continue;
            }
            let inf = s.inf.as_mut()?;
            match inf.next().await {
                None => {
                    s.inf = None;
                    let e = HostError::Internal("generation ended without a final event".into());
                    return Some((Ok(event(&e.body())), s));
                }
                Some(Err(e)) => {
                    // A runtime failure mid-stream, or the receipt could not be stored: an error
                    // event and no [DONE] (the response did not complete).
                    s.inf = None;
                    tracing::warn!(error = %e, "stream failed after it started");
                    return Some((Ok(event(&e.body())), s));
                }
                Some(Ok(InferenceEvent::Delta(text))) => {
                    let c = match s.flavor {
                        Flavor::Chat => event(&s.head.with_choices(vec![ChatChunkChoice::content(text)])),
                        Flavor::Text => event(&s.head.with_choices(vec![TextChoice::partial(text)])),
                    };
                    return Some((Ok(c), s));
                }
                Some(Ok(InferenceEvent::Done(f))) => {
                    // The receipt is already durable: finish, usage, [DONE].
                    s.inf = None;
                    let c = match s.flavor {
                        Flavor::Chat => event(&s.head.with_choices(vec![ChatChunkChoice::finish(f.finish_reason.as_str())])),
                        Flavor::Text => event(&s.head.with_choices(vec![TextChoice::finished("", f.finish_reason.as_str())])),
                    };
                    s.pending.push_back(c);
                    if s.include_usage {
                        let u = wire_usage(&f.usage);
                        s.pending.push_back(event(&s.head.with_choices(Vec::<ChatChunkChoice>::new()).with_usage(u)));
                    }
                    if s.network {
                        // An SSE comment (clients ignore it); the gateway takes it out.
                        s.pending.push_back(Bytes::from(format!("{}{}\n\n", b3iq_protocol::gateway::RECEIPT_SSE_PREFIX, hex::encode(&f.receipt))));
                    }
                    s.pending.push_back(Bytes::from_static(sse::DONE_EVENT));
                }
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(body_stream));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(sse::CONTENT_TYPE));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_and_refuse_bad_roles() {
        let m: Vec<wire::ChatMessage> = serde_json::from_str(r#"[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":null}]"#).unwrap();
        let out = parse_messages(Some(m)).unwrap();
        assert_eq!(out[1].content, "ab");
        assert_eq!(out[2].content, "");
        let m: Vec<wire::ChatMessage> = serde_json::from_str(r#"[{"role":"wizard","content":"x"}]"#).unwrap();
        assert!(parse_messages(Some(m)).unwrap_err().to_string().contains("wizard"));
        assert!(parse_messages(Some(vec![])).is_err());
        assert!(parse_messages(None).is_err());
        let m: Vec<wire::ChatMessage> = serde_json::from_str(r#"[{"role":"user","content":[{"type":"image_url"}]}]"#).unwrap();
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
