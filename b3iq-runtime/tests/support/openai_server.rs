//! A small OpenAI-compatible HTTP server over any [`Runtime`] (axum), used by the upstream
//! tests and by the `serve_openai` example for peer comparisons. Not the product server (that
//! is b3iq-host); it exists so the upstream client is tested against real HTTP and SSE.

#![allow(dead_code)]

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use b3iq_openai::response::{CHAT_COMPLETION, CHAT_COMPLETION_CHUNK, TEXT_COMPLETION};
use b3iq_openai::{
    sse, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, CommonParams,
    CompletionRequest, ErrorBody, ErrorCode, ErrorDetail, Model, ModelList, PromptInput, TextChoice, TextCompletion,
};
use b3iq_runtime::*;
use futures::StreamExt;
use serde_json::{json, Value};

#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<dyn Runtime>,
    pub key: Option<String>,
}

/// An error answer with a numeric `code`, as vLLM and llama.cpp's server send them.
fn err(status: StatusCode, message: &str, kind: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            message: message.to_string(),
            kind: Some(kind.to_string()),
            code: Some(ErrorCode::Number(i64::from(status.as_u16()))),
            param: None,
        },
    };
    (status, Json(body)).into_response()
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
        Ok(ms) => {
            let data = ms
                .iter()
                .map(|m| {
                    // vLLM's extension field, which the upstream client reads.
                    let mut model = Model::new(&m.id, 0, "b3iq");
                    model.extra.insert("max_model_len".into(), json!(m.context_length));
                    model
                })
                .collect();
            Json(ModelList::new(data)).into_response()
        }
        Err(e) => map_err(e),
    }
}

fn parse_request(p: &CommonParams, prompt: Prompt) -> Result<(GenerateRequest, bool, bool), RuntimeError> {
    let bad = |m: &str| RuntimeError::InvalidRequest(m.to_string());
    let model = p.model.as_deref().ok_or_else(|| bad("model is required"))?;
    let mut s = SamplingParams::default();
    let f = |v: Option<f64>| v.map(|v| v as f32);
    if let Some(v) = f(p.temperature) {
        s.temperature = v;
    }
    if let Some(v) = f(p.top_p) {
        s.top_p = v;
    }
    if let Some(v) = f(p.extension_f64("min_p")) {
        s.min_p = v;
    }
    if let Some(v) = p.extension_i64("top_k") {
        s.top_k = v as i32;
    }
    if let Some(v) = f(p.presence_penalty) {
        s.presence_penalty = v;
    }
    if let Some(v) = f(p.frequency_penalty) {
        s.frequency_penalty = v;
    }
    if let Some(v) = f(p.extension_f64("repetition_penalty")) {
        s.repeat_penalty = v;
    }
    s.seed = p.seed;
    let response_format = match p.response_format().ok().flatten() {
        Some(b3iq_openai::ResponseFormat::JsonObject) => ResponseFormat::JsonObject,
        Some(b3iq_openai::ResponseFormat::JsonSchema { json_schema }) => ResponseFormat::JsonSchema {
            name: Some(json_schema.name).filter(|n| !n.is_empty()),
            schema: json_schema.schema,
        },
        _ => ResponseFormat::Text,
    };
    let req = GenerateRequest {
        model: model.to_string(),
        prompt,
        sampling: s,
        max_tokens: p.max_completion_tokens.or(p.max_tokens).and_then(|v| u32::try_from(v).ok()),
        stop: p.stop.clone().map(|s| s.into_vec()).unwrap_or_default(),
        response_format,
        logprobs: None,
    };
    Ok((req, p.stream.unwrap_or(false), p.include_usage()))
}

fn chat_prompt(body: ChatCompletionRequest) -> Result<Prompt, RuntimeError> {
    let bad = |m: &str| RuntimeError::InvalidRequest(m.to_string());
    let mut out = Vec::new();
    for m in body.messages.ok_or_else(|| bad("messages is required"))? {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => return Err(bad("bad role")),
        };
        let content = match m.content {
            None => String::new(),
            Some(c) => c.into_text().map_err(|_| bad("only text content is supported"))?,
        };
        out.push(ChatMessage::new(role, content));
    }
    Ok(Prompt::Chat(out))
}

fn text_prompt(body: CompletionRequest) -> Result<Prompt, RuntimeError> {
    match body.prompt {
        Some(PromptInput::One(s)) => Ok(Prompt::Text(s)),
        Some(PromptInput::Many(mut v)) if v.len() == 1 => Ok(Prompt::Text(v.remove(0))),
        _ => Err(RuntimeError::InvalidRequest("prompt is required (one string)".into())),
    }
}

fn event_stream(events: impl futures::Stream<Item = Vec<u8>> + Send + 'static) -> Response {
    let mut resp = Response::new(Body::from_stream(events.map(Ok::<_, Infallible>)));
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(sse::CONTENT_TYPE));
    resp.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    resp
}

async fn complete(s: AppState, headers: HeaderMap, params: CommonParams, prompt: Result<Prompt, RuntimeError>) -> Response {
    if !authorized(&s, &headers) {
        return err(StatusCode::UNAUTHORIZED, "bad key", "auth");
    }
    let chat = matches!(prompt, Ok(Prompt::Chat(_)));
    let (req, stream, include_usage) = match prompt.and_then(|p| parse_request(&params, p)) {
        Ok(x) => x,
        Err(e) => return map_err(e),
    };
    let model = req.model.clone();
    let gen = match s.runtime.generate(req).await {
        Ok(g) => g,
        Err(e) => return map_err(e),
    };
    let id = "cmpl-test";
    if !stream {
        return match gen.collect_completion().await {
            Ok(c) => {
                let usage = b3iq_openai::Usage::new(c.usage.prompt_tokens, c.usage.completion_tokens)
                    .with_cached_tokens(c.usage.cached_prompt_tokens);
                if chat {
                    let mut a = ChatCompletion::new(id, CHAT_COMPLETION, 0, model).with_usage(usage);
                    a.choices.push(ChatChoice::assistant(c.text, c.finish_reason.as_str()));
                    Json(a).into_response()
                } else {
                    let mut a = TextCompletion::new(id, TEXT_COMPLETION, 0, model).with_usage(usage);
                    a.choices.push(TextChoice::finished(c.text, c.finish_reason.as_str()));
                    Json(a).into_response()
                }
            }
            Err(e) => map_err(e),
        };
    }
    let chat_head = ChatCompletionChunk::new(id, CHAT_COMPLETION_CHUNK, 0, model.clone());
    let text_head = TextCompletion::new(id, TEXT_COMPLETION, 0, model);
    let events = gen.flat_map(move |ev| {
        let out: Vec<Vec<u8>> = match ev {
            Ok(GenerationEvent::Delta { text, .. }) => vec![if chat {
                sse::encode_json(&chat_head.with_choices(vec![ChatChunkChoice::content(text)]))
            } else {
                sse::encode_json(&text_head.with_choices(vec![TextChoice::partial(text)]))
            }],
            Ok(GenerationEvent::Done { finish_reason, usage, .. }) => {
                let reason = finish_reason.as_str();
                let mut v = vec![if chat {
                    sse::encode_json(&chat_head.with_choices(vec![ChatChunkChoice::finish(reason)]))
                } else {
                    sse::encode_json(&text_head.with_choices(vec![TextChoice::finished("", reason)]))
                }];
                if include_usage {
                    let u = b3iq_openai::Usage::new(usage.prompt_tokens, usage.completion_tokens)
                        .with_cached_tokens(usage.cached_prompt_tokens);
                    v.push(if chat {
                        sse::encode_json(&chat_head.with_choices(Vec::<ChatChunkChoice>::new()).with_usage(u))
                    } else {
                        sse::encode_json(&text_head.with_choices(Vec::<TextChoice>::new()).with_usage(u))
                    });
                }
                v
            }
            Err(e) => vec![sse::encode_json(&ErrorBody {
                error: ErrorDetail { message: e.to_string(), kind: None, code: None, param: None },
            })],
        };
        futures::stream::iter(out)
    });
    let done = futures::stream::once(async { sse::DONE_EVENT.to_vec() });
    event_stream(events.chain(done))
}

async fn chat_completions(State(s): State<AppState>, headers: HeaderMap, Json(body): Json<ChatCompletionRequest>) -> Response {
    let params = body.params.clone();
    complete(s, headers, params, chat_prompt(body)).await
}

async fn completions(State(s): State<AppState>, headers: HeaderMap, Json(body): Json<CompletionRequest>) -> Response {
    let params = body.params.clone();
    complete(s, headers, params, text_prompt(body)).await
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
