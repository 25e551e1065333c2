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
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str()).map(str::to_string))
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
            let Some(id) = m.get("id").and_then(|i| i.as_str()) else { continue };
            let ctx = m
                .get("max_model_len")
                .or_else(|| m.pointer("/meta/n_ctx_train"))
                .and_then(|c| c.as_u64())
                .unwrap_or(0) as u32;
            out.push(ModelInfo {
                id: id.to_string(),
                backend: BackendKind::OpenAiUpstream,
                sha256: String::new(),
                size_bytes: 0,
                context_length: ctx,
                train_context_length: ctx,
                architecture: String::new(),
                parameters: m.pointer("/meta/n_params").and_then(|c| c.as_u64()).unwrap_or(0),
                quantization: String::new(),
                has_chat_template: true,
                path: PathBuf::new(),
            });
        }
        let mut map = self.inner.models.lock().unwrap_or_else(|p| p.into_inner());
        map.clear();
        for m in &out {
            map.insert(m.id.clone(), m.clone());
        }
        Ok(out)
    }

    fn request_body(&self, request: &GenerateRequest) -> Value {
        let s = &request.sampling;
        let mut body = json!({
            "model": request.model,
            "stream": true,
            "stream_options": {"include_usage": true},
            "temperature": s.temperature,
            "top_p": s.top_p,
            "presence_penalty": s.presence_penalty,
            "frequency_penalty": s.frequency_penalty,
        });
        let o = body.as_object_mut().expect("object");
        // Extensions understood by vLLM and llama.cpp's server; ignored by others.
        if s.top_k > 0 {
            o.insert("top_k".into(), json!(s.top_k));
        }
        if s.min_p > 0.0 {
            o.insert("min_p".into(), json!(s.min_p));
        }
        if s.repeat_penalty != 1.0 {
            o.insert("repetition_penalty".into(), json!(s.repeat_penalty));
        }
        if let Some(seed) = s.seed {
            o.insert("seed".into(), json!(seed));
        }
        if let Some(m) = request.max_tokens {
            o.insert("max_tokens".into(), json!(m));
        }
        if !request.stop.is_empty() {
            o.insert("stop".into(), json!(request.stop));
        }
        match &request.response_format {
            ResponseFormat::Text => {}
            ResponseFormat::JsonObject => {
                o.insert("response_format".into(), json!({"type": "json_object"}));
            }
            ResponseFormat::JsonSchema { name, schema } => {
                o.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": {"name": name.clone().unwrap_or_else(|| "output".into()), "schema": schema}}),
                );
            }
        }
        match &request.prompt {
            Prompt::Chat(msgs) => {
                o.insert("messages".into(), json!(msgs.iter().map(|m| json!({"role": m.role.as_str(), "content": m.content})).collect::<Vec<_>>()));
            }
            Prompt::Text(t) => {
                o.insert("prompt".into(), json!(t));
            }
        }
        body
    }
}

/// Incremental parser of a `text/event-stream` body: feed bytes, get the `data:` payloads of
/// complete events. Lines may end in `\n` or `\r\n`; comments and other fields are ignored.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    data: Vec<String>,
}

impl SseParser {
    /// Most bytes of one pending line before the stream is refused.
    pub const MAX_LINE: usize = 8 << 20;

    /// Feeds bytes; returns the data of every event completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, RuntimeError> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let mut line = &self.buf[start..start + nl];
            start += nl + 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(self.data.join("\n"));
                    self.data.clear();
                }
                continue;
            }
            let line = String::from_utf8_lossy(line);
            if let Some(rest) = line.strip_prefix("data:") {
                self.data.push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
            }
        }
        self.buf.drain(..start);
        if self.buf.len() > Self::MAX_LINE {
            return Err(RuntimeError::Upstream { status: 200, message: "an SSE line exceeds 8 MiB".into() });
        }
        Ok(events)
    }

    /// Data of a last event not followed by a blank line.
    pub fn finish(&mut self) -> Option<String> {
        let mut events = self.feed(b"\n\n").unwrap_or_default();
        events.pop()
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
                    let Some(next) = body.next().await else { break };
                    let bytes = next.map_err(|e| unavailable(&base, &e))?;
                    for data in sse.feed(&bytes)? {
                        if data.trim() == "[DONE]" {
                            done = true;
                            break;
                        }
                        let v: Value = serde_json::from_str(&data).map_err(|e| RuntimeError::Upstream {
                            status: 200,
                            message: format!("bad SSE chunk from upstream: {e}"),
                        })?;
                        if let Some(err) = v.get("error") {
                            return Err(RuntimeError::Upstream {
                                status: 200,
                                message: err.get("message").and_then(|m| m.as_str()).unwrap_or("error").to_string(),
                            });
                        }
                        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                            let p = u.get("prompt_tokens").and_then(|x| x.as_u64()).unwrap_or(0) as u32;
                            let k = u.get("completion_tokens").and_then(|x| x.as_u64()).unwrap_or(0) as u32;
                            usage = Some(Usage::new(p, k));
                        }
                        if let Some(choice) = v.get("choices").and_then(|c| c.get(0)) {
                            let text = if chat {
                                choice.pointer("/delta/content").and_then(|t| t.as_str())
                            } else {
                                choice.get("text").and_then(|t| t.as_str())
                            };
                            if let Some(t) = text.filter(|t| !t.is_empty()) {
                                first.get_or_insert_with(Instant::now);
                                chunks += 1;
                                if tx.send(Ok(GenerationEvent::Delta { text: t.to_string() })).is_err() {
                                    return Err(RuntimeError::Cancelled);
                                }
                            }
                            if let Some(r) = choice.get("finish_reason").and_then(|r| r.as_str()) {
                                reason = Some(finish_reason(r));
                            }
                        }
                    }
                }
                if let Some(data) = sse.finish() {
                    if data.trim() == "[DONE]" {
                        done = true;
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
            Prompt::Chat(m) => json!({"model": model, "messages": m.iter().map(|m| json!({"role": m.role.as_str(), "content": m.content})).collect::<Vec<_>>()}),
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
            decode_steps_total: 0,
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
    fn sse_parser_handles_split_events_and_crlf() {
        let mut p = SseParser::default();
        assert!(p.feed(b"data: {\"a\"").unwrap().is_empty());
        assert_eq!(p.feed(b":1}\r\n\r\n: comment\n\ndata: [DONE]\n").unwrap(), vec!["{\"a\":1}".to_string()]);
        assert_eq!(p.finish().as_deref(), Some("[DONE]"));
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
