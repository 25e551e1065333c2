//! The OpenAI-compatible upstream backend: [`UpstreamRuntime`] serves models of any server that
//! speaks the OpenAI HTTP API (vLLM, llama.cpp's server, llama-cpp-python, ...).
//!
//! Models are discovered with `GET {base}/models`; generation streams `POST {base}/chat/completions`
//! or `{base}/completions` with `stream: true` and passes the SSE deltas through as
//! [`GenerationEvent`]s; usage comes from the upstream's final usage chunk
//! (`stream_options.include_usage`), timings are measured here. The API key is read from a file
//! or an environment variable (never from argv) and sent as a bearer token.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use b3iq_openai::sse::{SseEvent, SseParser};
use b3iq_openai::{
    ChatCompletionChunk, ChatCompletionRequest, ChatMessage as WireMessage, CommonParams, CompletionRequest, ErrorBody,
    JsonSchemaFormat, Model, PromptInput, ResponseFormat as WireResponseFormat, Stop, StreamItem, StreamOptions,
    TextCompletion,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::RuntimeError;
use crate::runtime::*;

/// Where the API key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeySource {
    /// No key.
    #[default]
    None,
    /// A file holding the key (surrounding whitespace trimmed).
    File(PathBuf),
    /// An environment variable holding the key.
    Env(String),
}

/// Configuration of an [`UpstreamRuntime`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamConfig {
    /// Base URL including the API prefix, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// API key source.
    #[serde(default)]
    pub api_key: ApiKeySource,
    /// TCP connect timeout.
    #[serde(default = "default_connect_ms")]
    pub connect_timeout_ms: u64,
    /// Longest wait for the response headers and between two streamed chunks.
    #[serde(default = "default_idle_ms")]
    pub idle_timeout_ms: u64,
    /// Most requests in flight before `QueueFull`.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
}

fn default_connect_ms() -> u64 {
    5_000
}
fn default_idle_ms() -> u64 {
    120_000
}
fn default_max_in_flight() -> u32 {
    64
}

impl UpstreamConfig {
    /// A config for `base_url` with defaults.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: ApiKeySource::None,
            connect_timeout_ms: default_connect_ms(),
            idle_timeout_ms: default_idle_ms(),
            max_in_flight: default_max_in_flight(),
        }
    }
}

#[derive(Default)]
struct Counters {
    in_flight: AtomicU32,
    requests_total: AtomicU64,
    rejected_total: AtomicU64,
    prompt_tokens_total: AtomicU64,
    generated_tokens_total: AtomicU64,
}

/// The upstream backend. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
    idle: Duration,
    max_in_flight: u32,
    models: Mutex<HashMap<ModelId, ModelInfo>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for UpstreamRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("UpstreamRuntime").field("base_url", &self.inner.base).finish()
    }
}

fn unavailable(url: &str, e: &reqwest::Error) -> RuntimeError {
    let reason = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection refused or host unreachable".to_string()
    } else {
        e.to_string()
    };
    RuntimeError::UpstreamUnavailable { url: url.to_string(), reason }
}

impl UpstreamRuntime {
    /// Builds the client; reads the key now so a missing key file fails early.
    pub fn new(config: UpstreamConfig) -> Result<Self, RuntimeError> {
        let base = config.base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RuntimeError::Config(format!("upstream base URL must start with http:// or https://, got `{base}`")));
        }
        let key = match &config.api_key {
            ApiKeySource::None => None,
            ApiKeySource::File(p) => {
                let k = std::fs::read_to_string(p).map_err(|e| {
                    RuntimeError::Config(format!("cannot read the upstream API key file {}: {e}", p.display()))
                })?;
                Some(k.trim().to_string())
            }
            ApiKeySource::Env(v) => Some(
                std::env::var(v)
                    .map_err(|_| RuntimeError::Config(format!("environment variable {v} (upstream API key) is not set")))?
                    .trim()
                    .to_string(),
            ),
        };
        if key.as_deref().is_some_and(|k| k.is_empty() || k.chars().any(|c| c.is_control())) {
            return Err(RuntimeError::Config("the upstream API key is empty or contains control characters".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .read_timeout(Duration::from_millis(config.idle_timeout_ms))
            .build()
            .map_err(|e| RuntimeError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                base,
                key,
                http,
                idle: Duration::from_millis(config.idle_timeout_ms),
                max_in_flight: config.max_in_flight.max(1),
                models: Mutex::new(HashMap::new()),
                counters: Arc::new(Counters::default()),
            }),
        })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.inner.http.request(method, format!("{}{path}", self.inner.base));
        if let Some(k) = &self.inner.key {
            r = r.bearer_auth(k);
        }
        r
    }

    async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response, RuntimeError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let message = ErrorBody::from_slice(body.as_bytes())
            .map(|e| e.message)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| body.chars().take(500).collect());
        Err(match status.as_u16() {
            401 | 403 => RuntimeError::UpstreamAuth { status: status.as_u16() },
            404 if message.contains("model") => RuntimeError::ModelNotFound { model: message },
            429 => RuntimeError::QueueFull { retry_after_ms: 1000 },
            s => RuntimeError::Upstream { status: s, message },
        })
    }

    /// Asks the upstream for its models (`GET {base}/models`) and remembers them.
    pub async fn discover_models(&self) -> Result<Vec<ModelInfo>, RuntimeError> {
        let resp = self
            .req(reqwest::Method::GET, "/models")
            .timeout(self.inner.idle.min(Duration::from_secs(30)))
            .send()
            .await
            .map_err(|e| unavailable(&self.inner.base, &e))?;
        let resp = self.check(resp).await?;
        let v: Value = resp.json().await.map_err(|e| RuntimeError::Upstream {
            status: 200,
            message: format!("GET /models did not return JSON: {e}"),
        })?;
        let data = v.get("data").and_then(|d| d.as_array()).ok_or_else(|| RuntimeError::Upstream {
            status: 200,
            message: "GET /models: no `data` array in the answer".into(),
        })?;
        let mut out = Vec::new();
        for m in data {
            // Entries without an id (or otherwise not a model) are skipped, not fatal.
            let Ok(m) = Model::deserialize(m) else { continue };
            let ctx = m.context_length().unwrap_or(0) as u32;
            out.push(ModelInfo {
                id: m.id.clone(),
                backend: BackendKind::OpenAiUpstream,
                sha256: String::new(),
                size_bytes: 0,
                context_length: ctx,
                train_context_length: ctx,
                architecture: String::new(),
                parameters: m.parameter_count().unwrap_or(0),
                quantization: String::new(),
                has_chat_template: true,
                path: PathBuf::new(),
                embedding_length: 0,
            });
        }
        let mut map = self.inner.models.lock().unwrap_or_else(|p| p.into_inner());
        map.clear();
        for m in &out {
            map.insert(m.id.clone(), m.clone());
        }
        Ok(out)
    }

    fn request_body(&self, request: &GenerateRequest) -> UpstreamRequest {
        let s = &request.sampling;
        let mut params = CommonParams {
            model: Some(request.model.clone()),
            stream: Some(true),
            stream_options: Some(StreamOptions { include_usage: true, ..Default::default() }),
            temperature: Some(decimal(s.temperature)),
            top_p: Some(decimal(s.top_p)),
            presence_penalty: Some(decimal(s.presence_penalty)),
            frequency_penalty: Some(decimal(s.frequency_penalty)),
            seed: s.seed,
            max_tokens: request.max_tokens.map(i64::from),
            stop: (!request.stop.is_empty()).then(|| Stop::Many(request.stop.clone())),
            ..Default::default()
        };
        // Extensions understood by vLLM and llama.cpp's server; ignored by others.
        if s.top_k > 0 {
            params.extra.insert("top_k".into(), json!(s.top_k));
        }
        if s.min_p > 0.0 {
            params.extra.insert("min_p".into(), json!(decimal(s.min_p)));
        }
        if s.repeat_penalty != 1.0 {
            params.extra.insert("repetition_penalty".into(), json!(decimal(s.repeat_penalty)));
        }
        if !s.logit_bias.is_empty() {
            // OpenAI's shape: token id (as a string) -> bias; the ids are the upstream model's.
            let bias: serde_json::Map<String, serde_json::Value> =
                s.logit_bias.iter().map(|(t, b)| (t.to_string(), json!(decimal(*b)))).collect();
            params.extra.insert("logit_bias".into(), serde_json::Value::Object(bias));
        }
        let format = match &request.response_format {
            // Refused in `generate` before a body is built.
            ResponseFormat::Text | ResponseFormat::ToolCall { .. } => None,
            ResponseFormat::JsonObject => Some(WireResponseFormat::JsonObject),
            ResponseFormat::JsonSchema { name, schema } => Some(WireResponseFormat::JsonSchema {
                json_schema: JsonSchemaFormat {
                    name: name.clone().unwrap_or_else(|| "output".into()),
                    schema: schema.clone(),
                    strict: None,
                },
            }),
        };
        params.set_response_format(format.as_ref());
        match &request.prompt {
            Prompt::Chat(msgs) => {
                UpstreamRequest::Chat(ChatCompletionRequest { messages: Some(wire_messages(msgs)), params })
            }
            Prompt::Text(t) => UpstreamRequest::Text(CompletionRequest { prompt: Some(PromptInput::One(t.clone())), params }),
        }
    }
}

/// The body of an upstream generation request.
#[derive(Serialize)]
#[serde(untagged)]
enum UpstreamRequest {
    Chat(ChatCompletionRequest),
    Text(CompletionRequest),
}

fn wire_messages(msgs: &[ChatMessage]) -> Vec<WireMessage> {
    msgs.iter().map(|m| WireMessage::new(m.role.as_str(), m.content.clone())).collect()
}

/// An `f32` parameter as the decimal it was written as (`0.7f32` is sent as `0.7`, not as
/// `0.699999988079071`, the exact value of the nearest `f32`).
fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// What one upstream stream event contributes.
#[derive(Debug)]
enum Piece {
    /// `[DONE]`.
    Done,
    /// A chunk: text of its first choice, that choice's finish reason, the chunk's usage.
    Chunk { text: Option<String>, finish: Option<String>, usage: Option<b3iq_openai::Usage> },
}

/// Reads one event of a chat (`chat`) or text completion stream; an error event is an error.
fn read_event(ev: &SseEvent, chat: bool) -> Result<Piece, RuntimeError> {
    let bad = |e: b3iq_openai::OpenAiError| RuntimeError::Upstream { status: 200, message: format!("bad SSE chunk from upstream: {e}") };
    let failed = |e: b3iq_openai::ErrorDetail| RuntimeError::Upstream {
        status: 200,
        message: if e.message.is_empty() { "error".into() } else { e.message },
    };
    if chat {
        match StreamItem::<ChatCompletionChunk>::from_event(ev).map_err(bad)? {
            StreamItem::Done => Ok(Piece::Done),
            StreamItem::Error(e) => Err(failed(e)),
            StreamItem::Chunk(c) => {
                let choice = c.choices.into_iter().next();
                Ok(Piece::Chunk {
                    finish: choice.as_ref().and_then(|ch| ch.finish_reason.clone()),
                    text: choice.and_then(|ch| ch.delta.content),
                    usage: c.usage,
                })
            }
        }
    } else {
        match StreamItem::<TextCompletion>::from_event(ev).map_err(bad)? {
            StreamItem::Done => Ok(Piece::Done),
            StreamItem::Error(e) => Err(failed(e)),
            StreamItem::Chunk(c) => {
                let choice = c.choices.into_iter().next();
                Ok(Piece::Chunk {
                    finish: choice.as_ref().and_then(|ch| ch.finish_reason.clone()),
                    text: choice.map(|ch| ch.text),
                    usage: c.usage,
                })
            }
        }
    }
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        _ => FinishReason::Stop,
    }
}

#[async_trait]
impl Runtime for UpstreamRuntime {
    fn backend_info(&self) -> BackendInfo {
        BackendInfo {
            kind: BackendKind::OpenAiUpstream,
            name: format!("OpenAI-compatible upstream at {}", self.inner.base),
            threads: 0,
            system_info: String::new(),
        }
    }

    /// Checks that the upstream serves `spec.id` (or the file stem of `spec.path`).
    async fn load_model(&self, spec: LoadModelSpec) -> Result<ModelInfo, RuntimeError> {
        let id = spec
            .id
            .clone()
            .or_else(|| spec.path.file_stem().and_then(|s| s.to_str()).map(str::to_string))
            .ok_or_else(|| RuntimeError::InvalidRequest("give the upstream model id".into()))?;
        let models = self.discover_models().await?;
        models.into_iter().find(|m| m.id == id).ok_or(RuntimeError::ModelNotFound { model: id })
    }

    async fn unload_model(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner
            .models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .map(|_| ())
            .ok_or_else(|| RuntimeError::ModelNotFound { model: id.to_string() })
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, RuntimeError> {
        let mut v = self.discover_models().await?;
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    async fn generate(&self, request: GenerateRequest) -> Result<GenerationStream, RuntimeError> {
        request.validate()?;
        if matches!(request.response_format, ResponseFormat::ToolCall { .. }) {
            return Err(RuntimeError::Unsupported(
                "a forced tool call is not relayed to an upstream server yet; use tool_choice \"auto\"".into(),
            ));
        }
        if request.logprobs.is_some() {
            return Err(RuntimeError::Unsupported(
                "token log probabilities are not relayed from an upstream server yet".into(),
            ));
        }
        let c = self.inner.counters.clone();
        if c.in_flight.fetch_add(1, Ordering::AcqRel) >= self.inner.max_in_flight {
            c.in_flight.fetch_sub(1, Ordering::AcqRel);
            c.rejected_total.fetch_add(1, Ordering::Relaxed);
            return Err(RuntimeError::QueueFull { retry_after_ms: 1000 });
        }
        let guard = InFlight(c.clone());
        let submitted = Instant::now();
        let path = match request.prompt {
            Prompt::Chat(_) => "/chat/completions",
            Prompt::Text(_) => "/completions",
        };
        let chat = matches!(request.prompt, Prompt::Chat(_));
        let resp = self
            .req(reqwest::Method::POST, path)
            .json(&self.request_body(&request))
            .send()
            .await
            .map_err(|e| unavailable(&self.inner.base, &e))?;
        let resp = self.check(resp).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let cancel2 = cancel.clone();
        let base = self.inner.base.clone();
        tokio::spawn(async move {
            let guard = guard;
            let mut body = resp.bytes_stream();
            let mut sse = SseParser::default();
            let mut first: Option<Instant> = None;
            let mut usage: Option<Usage> = None;
            let mut reason: Option<FinishReason> = None;
            let mut chunks: u32 = 0;
            let mut done = false;
            let result: Result<(), RuntimeError> = async {
                while !done {
                    if cancel2.load(Ordering::Acquire) || tx.is_closed() {
                        return Err(RuntimeError::Cancelled);
                    }
                    let bad_stream = |e: b3iq_openai::OpenAiError| RuntimeError::Upstream { status: 200, message: e.to_string() };
                    let (events, ended) = match body.next().await {
                        Some(next) => {
                            let bytes = next.map_err(|e| unavailable(&base, &e))?;
                            (sse.feed(&bytes).map_err(bad_stream)?, false)
                        }
                        // A last event without its blank line still counts.
                        None => (sse.finish().map_err(bad_stream)?.into_iter().collect(), true),
                    };
                    for ev in events {
                        let (text, finish, u) = match read_event(&ev, chat)? {
                            Piece::Done => {
                                done = true;
                                break;
                            }
                            Piece::Chunk { text, finish, usage } => (text, finish, usage),
                        };
                        if let Some(u) = u {
                            // OpenAI's `prompt_tokens_details.cached_tokens` when the upstream says.
                            let cached = u.prompt_tokens_details.map_or(0, |d| d.cached_tokens);
                            usage = Some(Usage::new(u.prompt_tokens, u.completion_tokens).with_cached_prompt_tokens(cached));
                        }
                        if let Some(t) = text.filter(|t| !t.is_empty()) {
                            first.get_or_insert_with(Instant::now);
                            chunks += 1;
                            if tx.send(Ok(GenerationEvent::delta(t))).is_err() {
                                return Err(RuntimeError::Cancelled);
                            }
                        }
                        if let Some(r) = finish {
                            reason = Some(finish_reason(&r));
                        }
                    }
                    if ended {
                        break;
                    }
                }
                if !done && reason.is_none() {
                    return Err(RuntimeError::UpstreamUnavailable {
                        url: base.clone(),
                        reason: "the stream ended before the upstream finished the answer".into(),
                    });
                }
                Ok(())
            }
            .await;
            let last = match result {
                Ok(()) => {
                    let end = Instant::now();
                    let first = first.unwrap_or(end);
                    // Without an upstream usage chunk, count streamed chunks (about one token each).
                    let usage = usage.unwrap_or_else(|| Usage::new(0, chunks));
                    c.prompt_tokens_total.fetch_add(usage.prompt_tokens as u64, Ordering::Relaxed);
                    c.generated_tokens_total.fetch_add(usage.completion_tokens as u64, Ordering::Relaxed);
                    let us = |a: Instant, b: Instant| b.saturating_duration_since(a).as_micros() as u64;
                    let timings = Timings {
                        queue_us: 0,
                        prompt_us: us(submitted, first),
                        time_to_first_token_us: us(submitted, first),
                        generation_us: us(first, end),
                        total_us: us(submitted, end),
                    };
                    Ok(GenerationEvent::Done {
                        finish_reason: reason.unwrap_or(FinishReason::Stop),
                        usage,
                        timings,
                        token_ids: None,
                    })
                }
                Err(e) => Err(e),
            };
            // Count the request and leave the in-flight set before the caller sees the end, so
            // metrics read after the final event already include this request.
            c.requests_total.fetch_add(1, Ordering::Relaxed);
            drop(guard);
            let _ = tx.send(last);
        });
        Ok(GenerationStream::new(rx, cancel, 0))
    }

    /// Uses the `/tokenize` endpoint vLLM and llama.cpp's server offer next to `/v1`.
    async fn count_tokens(&self, model: &str, prompt: &Prompt) -> Result<u32, RuntimeError> {
        let root = self.inner.base.trim_end_matches("/v1").to_string();
        let body = match prompt {
            Prompt::Text(t) => json!({"model": model, "prompt": t, "content": t}),
            Prompt::Chat(m) => json!({"model": model, "messages": wire_messages(m)}),
        };
        let mut r = self.inner.http.post(format!("{root}/tokenize")).json(&body);
        if let Some(k) = &self.inner.key {
            r = r.bearer_auth(k);
        }
        let resp = r.send().await.map_err(|e| unavailable(&self.inner.base, &e))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(RuntimeError::Unsupported("the upstream has no /tokenize endpoint".into()));
        }
        let v: Value = self.check(resp).await?.json().await.map_err(|e| RuntimeError::Upstream {
            status: 200,
            message: format!("bad /tokenize answer: {e}"),
        })?;
        v.get("count")
            .and_then(|c| c.as_u64())
            .or_else(|| v.get("tokens").and_then(|t| t.as_array()).map(|a| a.len() as u64))
            .map(|n| n as u32)
            .ok_or_else(|| RuntimeError::Upstream { status: 200, message: "/tokenize answer has no count".into() })
    }

    async fn health(&self) -> Health {
        match self.discover_models().await {
            Ok(m) => Health {
                status: HealthStatus::Ok,
                backend: BackendKind::OpenAiUpstream,
                models_loaded: m.len() as u32,
                message: String::new(),
            },
            Err(e) => Health {
                status: HealthStatus::Down,
                backend: BackendKind::OpenAiUpstream,
                models_loaded: 0,
                message: e.to_string(),
            },
        }
    }

    fn metrics(&self) -> RuntimeMetrics {
        let c = &self.inner.counters;
        RuntimeMetrics {
            queue_depth: 0,
            queue_capacity: self.inner.max_in_flight,
            active_sequences: c.in_flight.load(Ordering::Relaxed),
            max_sequences: self.inner.max_in_flight,
            requests_total: c.requests_total.load(Ordering::Relaxed),
            requests_rejected_total: c.rejected_total.load(Ordering::Relaxed),
            prompt_tokens_total: c.prompt_tokens_total.load(Ordering::Relaxed),
            generated_tokens_total: c.generated_tokens_total.load(Ordering::Relaxed),
            ..RuntimeMetrics::default()
        }
    }
}

struct InFlight(Arc<Counters>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_carry_every_parameter() {
        let up = UpstreamRuntime::new(UpstreamConfig::new("http://127.0.0.1:9/v1")).unwrap();
        let mut req = GenerateRequest::chat("m", vec![ChatMessage::system("s"), ChatMessage::user("hi")]).with_max_tokens(5);
        req.sampling = SamplingParams { temperature: 0.7, top_k: 40, min_p: 0.05, repeat_penalty: 1.1, seed: Some(u64::MAX), ..SamplingParams::default() };
        req.stop = vec!["END".into()];
        req.response_format = ResponseFormat::JsonSchema { name: None, schema: json!({"type": "object"}) };
        let v = serde_json::to_value(up.request_body(&req)).unwrap();
        assert_eq!(v["model"], "m");
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"], json!({"include_usage": true}));
        assert_eq!(v["temperature"], json!(0.7), "f32 parameters go out as the decimal written");
        assert_eq!((v["top_k"].clone(), v["min_p"].clone(), v["repetition_penalty"].clone()), (json!(40), json!(0.05), json!(1.1)));
        assert_eq!(v["seed"], json!(u64::MAX));
        assert_eq!(v["max_tokens"], 5);
        assert_eq!(v["stop"], json!(["END"]));
        assert_eq!(v["response_format"], json!({"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "object"}}}));
        assert_eq!(v["messages"], json!([{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]));
        assert!(v.get("prompt").is_none());
        let v = serde_json::to_value(up.request_body(&GenerateRequest::completion("m", "Once"))).unwrap();
        assert_eq!(v["prompt"], "Once");
        assert!(v.get("messages").is_none() && v.get("response_format").is_none() && v.get("stop").is_none() && v.get("seed").is_none());
    }

    #[test]
    fn stream_events_of_other_servers_are_read() {
        let ev = |data: &str| SseEvent { event: None, data: data.into() };
        // llama.cpp's role chunk (content null), vLLM's finish chunk, a usage chunk, errors.
        let p = read_event(&ev(r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"role":"assistant","content":null}}],"created":1,"id":"c","model":"m","object":"chat.completion.chunk"}"#), true).unwrap();
        assert!(matches!(p, Piece::Chunk { text: None, finish: None, usage: None }));
        let p = read_event(&ev(r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"length","stop_reason":null}]}"#), true).unwrap();
        assert!(matches!(p, Piece::Chunk { finish: Some(ref f), .. } if f == "length"));
        let p = read_event(&ev(r#"{"id":"c","object":"text_completion","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#), false).unwrap();
        assert!(matches!(p, Piece::Chunk { text: None, usage: Some(u), .. } if u.prompt_tokens == 3 && u.completion_tokens == 2));
        let p = read_event(&ev(r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10,"prompt_tokens_details":{"cached_tokens":8}}}"#), true).unwrap();
        assert!(matches!(p, Piece::Chunk { usage: Some(u), .. } if u.prompt_tokens_details.map(|d| d.cached_tokens) == Some(8)));
        assert!(matches!(read_event(&ev("[DONE]"), false).unwrap(), Piece::Done));
        let e = read_event(&ev(r#"{"error":{"message":"boom","code":500}}"#), true).unwrap_err();
        assert!(matches!(e, RuntimeError::Upstream { status: 200, ref message } if message == "boom"), "{e}");
        let llama_error = SseEvent { event: Some("error".into()), data: r#"{"code":400,"message":"context exceeded"}"#.into() };
        assert!(read_event(&llama_error, true).unwrap_err().to_string().contains("context exceeded"));
        let e = read_event(&ev("{oops"), true).unwrap_err();
        assert!(e.to_string().contains("bad SSE chunk"), "{e}");
    }

    #[test]
    fn missing_key_file_is_a_clear_config_error() {
        let mut c = UpstreamConfig::new("http://127.0.0.1:9/v1");
        c.api_key = ApiKeySource::File("/nonexistent/key".into());
        let e = UpstreamRuntime::new(c).unwrap_err();
        assert!(e.to_string().contains("API key file"), "{e}");
        assert!(UpstreamRuntime::new(UpstreamConfig::new("ftp://x")).is_err());
    }
}
