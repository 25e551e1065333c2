//! The [`Runtime`] trait and the types that cross it.
//!
//! Every backend (llama.cpp in process, an OpenAI-compatible upstream such as vLLM) implements
//! [`Runtime`]. Generation returns a [`GenerationStream`]: dropping it cancels the sequence at the
//! next engine step.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::RuntimeError;

/// A model id as the host names it (`/v1/models`), e.g. `smollm2-135m-instruct-q4_1`.
pub type ModelId = String;

/// Who said a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// System prompt.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

impl Role {
    /// The role name as chat templates expect it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// What was said (plain text).
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and text.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into() }
    }
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// What to generate from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Prompt {
    /// Chat messages; the model's own chat template is applied by llama.cpp
    /// (`llama_chat_apply_template`) and an assistant turn is opened.
    Chat(Vec<ChatMessage>),
    /// A raw completion prompt, tokenized as is (with the model's BOS token when it wants one).
    Text(String),
}

/// Structured output constraint (OpenAI `response_format`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text.
    #[default]
    Text,
    /// Any syntactically valid JSON object (a fixed JSON GBNF grammar).
    JsonObject,
    /// JSON matching a JSON Schema (converted to a grammar by llama.cpp's
    /// json-schema-to-grammar; no template or code is executed).
    JsonSchema {
        /// Schema name (informational).
        #[serde(default)]
        name: Option<String>,
        /// The JSON Schema.
        schema: serde_json::Value,
    },
    /// Exactly one tool call, `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, to
    /// one of `tools` (the grammar of [`crate::tools::tool_call_grammar`]): how a required or
    /// named `tool_choice` is enforced.
    ToolCall {
        /// The functions the call may name (one for a named `tool_choice`).
        tools: Vec<crate::tools::ToolFunction>,
    },
}

/// Per-request sampling parameters. `temperature == 0` means greedy decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; `0.0` is greedy (argmax).
    pub temperature: f32,
    /// Nucleus sampling mass in (0, 1]; `1.0` disables it.
    pub top_p: f32,
    /// Keep only the k most likely tokens; `0` disables it.
    pub top_k: i32,
    /// Drop tokens below `min_p * p(best)`; `0.0` disables it.
    pub min_p: f32,
    /// Repetition penalty (llama.cpp `penalty_repeat`); `1.0` disables it.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at (`-1` = the whole context).
    pub repeat_last_n: i32,
    /// OpenAI presence penalty in [-2, 2].
    pub presence_penalty: f32,
    /// OpenAI frequency penalty in [-2, 2].
    pub frequency_penalty: f32,
    /// RNG seed. Same seed + same prompt + same params = same output, whatever else is in the
    /// batch. `None` picks a random seed.
    pub seed: Option<u64>,
    /// The 32-byte key of the replayable final draw ([`b3iq_core::sampling::SeedKey`]): set from
    /// the gateway's ticket for network requests (the node cannot choose it). `None` derives it
    /// from `seed` (`SeedKey::from_request_seed`), picking a random seed first when that is
    /// `None` too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_key: Option<[u8; 32]>,
    /// OpenAI `logit_bias`: `(token id, bias)` pairs added to the raw logits before every
    /// other sampling step (llama.cpp's `logit_bias` sampler, first in the chain), so a bias of
    /// -100 bans a token and +100 all but forces it. At most [`MAX_LOGIT_BIAS`] entries, each
    /// bias in [-100, 100]; a token id outside the model's vocabulary is refused when the
    /// sampler is built. Part of what a verifier replays ([`crate::verify`] builds the same
    /// chain); an attestation cannot carry it yet, so biased requests are not attestable
    /// (`docs/verification.md`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logit_bias: Vec<(u32, f32)>,
}

/// Most `logit_bias` entries one request may carry (OpenAI's limit).
pub const MAX_LOGIT_BIAS: usize = 300;

/// Most alternatives per token a request may ask for in its log probabilities (OpenAI's
/// `top_logprobs` limit).
pub const MAX_TOP_LOGPROBS: u8 = 20;

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            seed_key: None,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (temperature 0): fully deterministic.
    pub fn greedy() -> Self {
        Self { temperature: 0.0, ..Self::default() }
    }

    /// Checks the ranges; the error says which field is wrong.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let bad = |m: String| Err(RuntimeError::InvalidRequest(m));
        if !self.temperature.is_finite() || !(0.0..=100.0).contains(&self.temperature) {
            return bad(format!("temperature must be in [0, 100], got {}", self.temperature));
        }
        if !(self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if self.top_k < 0 {
            return bad(format!("top_k must be >= 0, got {}", self.top_k));
        }
        if !self.min_p.is_finite() || !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !self.repeat_penalty.is_finite() || self.repeat_penalty <= 0.0 {
            return bad(format!("repeat_penalty must be > 0, got {}", self.repeat_penalty));
        }
        if self.repeat_last_n < -1 {
            return bad(format!("repeat_last_n must be >= -1, got {}", self.repeat_last_n));
        }
        for (name, v) in [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)] {
            if !v.is_finite() || !(-2.0..=2.0).contains(&v) {
                return bad(format!("{name} must be in [-2, 2], got {v}"));
            }
        }
        if self.logit_bias.len() > MAX_LOGIT_BIAS {
            return bad(format!(
                "logit_bias may hold at most {MAX_LOGIT_BIAS} entries, got {}",
                self.logit_bias.len()
            ));
        }
        if let Some((t, b)) =
            self.logit_bias.iter().find(|(_, b)| !b.is_finite() || !(-100.0..=100.0).contains(b))
        {
            return bad(format!("logit_bias for token {t} must be between -100 and 100, got {b}"));
        }
        Ok(())
    }
}

/// One generation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// The loaded model to use.
    pub model: ModelId,
    /// Chat messages or a raw prompt.
    pub prompt: Prompt,
    /// Sampling parameters.
    #[serde(default)]
    pub sampling: SamplingParams,
    /// Most tokens to generate; `None` means until end of generation or the context is full.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Stop sequences (up to 16, each non-empty). The matched text is not returned.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Structured output constraint.
    #[serde(default)]
    pub response_format: ResponseFormat,
    /// Report token log probabilities: `None` (the default) reports none; `Some(k)` reports,
    /// for every delivered token, its log probability and the `k` most likely alternatives
    /// (`k` at most [`MAX_TOP_LOGPROBS`]) in [`GenerationEvent::Delta::logprobs`]. They are
    /// the model's own distribution: log-softmax of the raw logits, before `logit_bias`,
    /// penalties, grammar, truncation and temperature (what OpenAI reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u8>,
}

impl GenerateRequest {
    /// A chat request with default sampling.
    pub fn chat(model: impl Into<ModelId>, messages: Vec<ChatMessage>) -> Self {
        Self {
            model: model.into(),
            prompt: Prompt::Chat(messages),
            sampling: SamplingParams::default(),
            max_tokens: None,
            stop: Vec::new(),
            response_format: ResponseFormat::Text,
            logprobs: None,
        }
    }

    /// A raw completion request with default sampling.
    pub fn completion(model: impl Into<ModelId>, prompt: impl Into<String>) -> Self {
        Self { prompt: Prompt::Text(prompt.into()), ..Self::chat(model, Vec::new()) }
    }

    /// Sets the sampling parameters.
    pub fn with_sampling(mut self, sampling: SamplingParams) -> Self {
        self.sampling = sampling;
        self
    }

    /// Sets `max_tokens`.
    pub fn with_max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// Sets the stop sequences.
    pub fn with_stop(mut self, stop: Vec<String>) -> Self {
        self.stop = stop;
        self
    }

    /// Sets the response format.
    pub fn with_response_format(mut self, f: ResponseFormat) -> Self {
        self.response_format = f;
        self
    }

    /// Asks for token log probabilities with `top` alternatives per token (see
    /// [`GenerateRequest::logprobs`]).
    pub fn with_logprobs(mut self, top: u8) -> Self {
        self.logprobs = Some(top);
        self
    }

    /// Checks the request shape (not the model); the error says what to fix.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        self.sampling.validate()?;
        if let Some(k) = self.logprobs.filter(|&k| k > MAX_TOP_LOGPROBS) {
            return Err(RuntimeError::InvalidRequest(format!(
                "top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {k}"
            )));
        }
        if self.stop.len() > 16 {
            return Err(RuntimeError::InvalidRequest(format!(
                "at most 16 stop sequences are allowed, got {}",
                self.stop.len()
            )));
        }
        if self.stop.iter().any(|s| s.is_empty()) {
            return Err(RuntimeError::InvalidRequest("stop sequences must not be empty".into()));
        }
        if self.max_tokens == Some(0) {
            return Err(RuntimeError::InvalidRequest("max_tokens must be at least 1".into()));
        }
        match &self.prompt {
            Prompt::Chat(m) if m.is_empty() => {
                Err(RuntimeError::InvalidRequest("messages must not be empty".into()))
            }
            _ => Ok(()),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End of generation token or a stop sequence.
    Stop,
    /// `max_tokens` reached or the context window is full.
    Length,
}

impl FinishReason {
    /// The OpenAI `finish_reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the (templated) prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Sum of both.
    pub total_tokens: u32,
    /// Prompt tokens not read again because the slot's KV cells already held them (the prompt
    /// cache); part of `prompt_tokens`. OpenAI's `usage.prompt_tokens_details.cached_tokens`.
    #[serde(default)]
    pub cached_prompt_tokens: u32,
}

impl Usage {
    /// Builds a usage record with nothing cached; `total_tokens` is the sum.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            cached_prompt_tokens: 0,
        }
    }

    /// The same counts with `cached` of the prompt tokens read from the prompt cache (at most
    /// `prompt_tokens`).
    pub fn with_cached_prompt_tokens(mut self, cached: u32) -> Self {
        self.cached_prompt_tokens = cached.min(self.prompt_tokens);
        self
    }
}

/// Timings of one request, in microseconds (integers, so receipts can carry them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timings {
    /// From submission until the engine admitted the request.
    pub queue_us: u64,
    /// Prompt processing (prefill) time.
    pub prompt_us: u64,
    /// From submission until the first generated token was produced.
    pub time_to_first_token_us: u64,
    /// From the first generated token to the last.
    pub generation_us: u64,
    /// From submission until the end.
    pub total_us: u64,
}

impl Timings {
    /// Prompt tokens per second (0 when unmeasurable).
    pub fn prompt_tokens_per_second(&self, usage: &Usage) -> f64 {
        per_second(usage.prompt_tokens, self.prompt_us)
    }
    /// Generated tokens per second after the first token (0 when unmeasurable).
    pub fn generation_tokens_per_second(&self, usage: &Usage) -> f64 {
        per_second(usage.completion_tokens.saturating_sub(1), self.generation_us)
    }
}

fn per_second(n: u32, us: u64) -> f64 {
    if us == 0 {
        0.0
    } else {
        n as f64 * 1e6 / us as f64
    }
}

/// The token ids of a finished request, for receipts and re-execution checks: a verifier feeds
/// `prompt` then `completion` to the same model instead of re-templating text.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenIds {
    /// The prompt as the model read it (chat template applied, BOS included when the model
    /// adds one).
    pub prompt: Vec<u32>,
    /// The sampled tokens whose text was delivered, in order: every generated token except the
    /// end-of-generation token, so detokenizing them gives exactly the delivered text. When a
    /// stop sequence cut the output, the token whose text straddles the cut is included and the
    /// tokens after it are not: detokenizing then gives the delivered text followed by the rest
    /// of that token, which begins with the stop sequence (all of it, or its start when the
    /// stop runs into later tokens). There can then be fewer ids than
    /// `usage.completion_tokens`, which counts every token computed.
    pub completion: Vec<u32>,
    /// Hidden-state fingerprints of the completion ([`b3iq_core::fingerprint`], one encoded
    /// [`b3iq_core::fingerprint::ChunkProof`] per 32 completion tokens, covering the positions
    /// that sampled `completion`); empty unless the runtime serves verifiable work
    /// ([`crate::llama::LlamaConfig::fingerprints`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fingerprints: Vec<Vec<u8>>,
}

/// The log probability of one token (natural log, `<= 0`) and its bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenProb {
    /// The token id.
    pub token: u32,
    /// The token's text as bytes (may be part of a UTF-8 character; empty for special tokens).
    pub bytes: Vec<u8>,
    /// `ln p(token)` under the model's distribution at that position.
    pub logprob: f32,
}

/// The log probabilities at one generated position: the sampled token and the most likely
/// alternatives (see [`GenerateRequest::logprobs`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The sampled token.
    pub sampled: TokenProb,
    /// The `k` most likely tokens, most likely first (ties by token id), which may include the
    /// sampled one.
    pub top: Vec<TokenProb>,
}

/// One event of a generation stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum GenerationEvent {
    /// New text. Always whole UTF-8 characters; never contains a stop sequence.
    Delta {
        /// The text.
        text: String,
        /// With [`GenerateRequest::logprobs`]: one entry per token whose text this delta
        /// completes (the tokens backing the delivered text, as [`TokenIds::completion`]);
        /// otherwise empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        logprobs: Vec<TokenLogprob>,
    },
    /// The last event of a successful stream.
    Done {
        /// Why it ended.
        finish_reason: FinishReason,
        /// Token counts.
        usage: Usage,
        /// Timings.
        timings: Timings,
        /// Prompt and completion token ids; `None` from backends that cannot report them
        /// (an OpenAI-compatible upstream).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_ids: Option<TokenIds>,
    },
}

/// A finished generation collected from a stream (see [`GenerationStream::collect_completion`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// All text.
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// Timings.
    pub timings: Timings,
    /// Prompt and completion token ids (see [`TokenIds`]); `None` from backends that cannot
    /// report them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<TokenIds>,
    /// Token log probabilities, one per delivered token, when the request asked for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<TokenLogprob>,
}

impl GenerationEvent {
    /// A text delta without log probabilities.
    pub fn delta(text: impl Into<String>) -> Self {
        GenerationEvent::Delta { text: text.into(), logprobs: Vec::new() }
    }
}

/// The stream of a running generation. Yields `Result<GenerationEvent, RuntimeError>`; the last
/// item is either `Ok(Done{..})` or an error. Dropping it (or calling [`GenerationStream::cancel`])
/// cancels the sequence at the next engine step and frees its KV cells.
pub struct GenerationStream {
    rx: mpsc::UnboundedReceiver<Result<GenerationEvent, RuntimeError>>,
    cancel: Arc<AtomicBool>,
    prompt_tokens: u32,
}

impl std::fmt::Debug for GenerationStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerationStream").field("prompt_tokens", &self.prompt_tokens).finish()
    }
}

impl GenerationStream {
    /// Wraps a channel and a cancellation flag (for backend implementors).
    pub fn new(
        rx: mpsc::UnboundedReceiver<Result<GenerationEvent, RuntimeError>>,
        cancel: Arc<AtomicBool>,
        prompt_tokens: u32,
    ) -> Self {
        Self { rx, cancel, prompt_tokens }
    }

    /// Prompt tokens, known when the request was accepted (0 if the backend cannot tell early).
    pub fn prompt_tokens(&self) -> u32 {
        self.prompt_tokens
    }

    /// The next event, or `None` after the last one.
    pub async fn next_event(&mut self) -> Option<Result<GenerationEvent, RuntimeError>> {
        self.rx.recv().await
    }

    /// Requests cancellation; the stream then ends with `Err(RuntimeError::Cancelled)` or closes.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    /// Reads the stream to the end and returns all text with usage and timings.
    pub async fn collect_completion(mut self) -> Result<Completion, RuntimeError> {
        let mut text = String::new();
        let mut logprobs = Vec::new();
        while let Some(ev) = self.next_event().await {
            match ev? {
                GenerationEvent::Delta { text: t, logprobs: l } => {
                    text.push_str(&t);
                    logprobs.extend(l);
                }
                GenerationEvent::Done { finish_reason, usage, timings, token_ids } => {
                    return Ok(Completion { text, finish_reason, usage, timings, token_ids, logprobs })
                }
            }
        }
        Err(RuntimeError::Backend("generation stream ended without a final event".into()))
    }
}

impl futures::Stream for GenerationStream {
    type Item = Result<GenerationEvent, RuntimeError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for GenerationStream {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Release);
    }
}

/// Which kind of backend serves a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// llama.cpp in process (llama-cpp-2).
    LlamaCpp,
    /// An OpenAI-compatible HTTP server (vLLM, llama.cpp server, ...).
    OpenAiUpstream,
    /// The wgpu fallback backend (WGSL kernels on any Vulkan/Metal/DX12 GPU).
    Wgpu,
}

impl BackendKind {
    /// Stable lower-case name (`llama_cpp`, `openai_upstream`, `wgpu`).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::LlamaCpp => "llama_cpp",
            BackendKind::OpenAiUpstream => "openai_upstream",
            BackendKind::Wgpu => "wgpu",
        }
    }
}

/// What to load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadModelSpec {
    /// The id to serve it under; defaults to the file stem.
    #[serde(default)]
    pub id: Option<ModelId>,
    /// Path of the GGUF file (for the upstream backend: ignored, the id names the upstream model).
    pub path: PathBuf,
    /// Context window per sequence, in tokens; defaults to the backend's configured default
    /// (capped at the model's training context).
    #[serde(default)]
    pub context_length: Option<u32>,
    /// If set, the file's sha256 must match (lower-case hex) or loading fails.
    #[serde(default)]
    pub expected_sha256: Option<String>,
}

impl LoadModelSpec {
    /// Load `path` under its default id.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        Self { id: None, path: path.into(), context_length: None, expected_sha256: None }
    }
    /// Sets the id.
    pub fn with_id(mut self, id: impl Into<ModelId>) -> Self {
        self.id = Some(id.into());
        self
    }
}

/// A loaded model as listed by [`Runtime::list_models`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The id requests use.
    pub id: ModelId,
    /// Backend serving it.
    pub backend: BackendKind,
    /// sha256 of the GGUF file, lower-case hex (empty for an upstream model).
    pub sha256: String,
    /// File size in bytes (0 for an upstream model).
    pub size_bytes: u64,
    /// Context window per sequence, in tokens.
    pub context_length: u32,
    /// Context length the model was trained with (from GGUF metadata; 0 if unknown).
    pub train_context_length: u32,
    /// Architecture (`llama`, `qwen2`, ...), empty if unknown.
    pub architecture: String,
    /// Parameter count (0 if unknown).
    pub parameters: u64,
    /// Quantization (`Q4_1`, ...), empty if unknown.
    pub quantization: String,
    /// Whether the model carries a chat template.
    pub has_chat_template: bool,
    /// Path of the file (empty for an upstream model).
    pub path: PathBuf,
    /// Length of the model's hidden state, the size of its [`Runtime::embed`] vectors
    /// (`<arch>.embedding_length`; 0 if unknown).
    #[serde(default)]
    pub embedding_length: u32,
}

/// Overall state of a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Ready to serve.
    Ok,
    /// Serving, but something is wrong (e.g. the queue is full).
    Degraded,
    /// Cannot serve (engine thread died, upstream unreachable).
    Down,
}

/// Health report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Overall state.
    pub status: HealthStatus,
    /// Backend.
    pub backend: BackendKind,
    /// Models loaded.
    pub models_loaded: u32,
    /// Human-readable detail (empty when all is well).
    pub message: String,
}

/// Scheduler counters for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RuntimeMetrics {
    /// Requests waiting for a slot.
    pub queue_depth: u32,
    /// Most requests that may wait before `QueueFull`.
    pub queue_capacity: u32,
    /// Sequences decoding now.
    pub active_sequences: u32,
    /// Most sequences decoded together.
    pub max_sequences: u32,
    /// Requests finished (any outcome) since start.
    pub requests_total: u64,
    /// Requests refused with `QueueFull` since start.
    pub requests_rejected_total: u64,
    /// Prompt tokens processed since start.
    pub prompt_tokens_total: u64,
    /// Tokens generated since start.
    pub generated_tokens_total: u64,
    /// Engine steps (batched decodes) since start.
    pub decode_steps_total: u64,
    /// Prompt tokens not read again because their KV cells were cached from an earlier request
    /// in the same slot (the prompt cache; OpenAI's `cached_tokens`). Part of
    /// `prompt_tokens_total`.
    #[serde(default)]
    pub prompt_tokens_cached_total: u64,
    /// Decodes refused because the KV cache had no room for the batch (llama.cpp's "could not
    /// find a KV slot"); each was retried with a smaller batch or after ending a sequence.
    #[serde(default)]
    pub kv_cache_full_retries_total: u64,
    /// Sequences ended to make room in a full KV cache (with `kv_cache_full`, or `length` when
    /// a sequence's own context filled the cache).
    #[serde(default)]
    pub kv_cache_full_evictions_total: u64,
}

/// Description of a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// Kind.
    pub kind: BackendKind,
    /// Human-readable name and version (`llama.cpp (llama-cpp-2 0.1.160)`, `upstream http://...`).
    pub name: String,
    /// CPU threads used for decoding (0 for an upstream).
    pub threads: u32,
    /// Compute devices / system info string.
    pub system_info: String,
}

/// Most inputs one [`EmbedRequest`] may carry (OpenAI's limit for `/v1/embeddings`).
pub const MAX_EMBED_INPUTS: usize = 2048;

/// One input of an [`EmbedRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum EmbedInput {
    /// Text, tokenized as a raw completion prompt is (the model's BOS token when it adds one;
    /// special-token text is not parsed, so `<|im_start|>` is plain text here).
    Text(String),
    /// Token ids, used as given (no BOS added).
    Tokens(Vec<u32>),
}

/// A request for embedding vectors (see [`Runtime::embed`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbedRequest {
    /// The loaded model to use.
    pub model: ModelId,
    /// What to embed, one vector each: 1 to [`MAX_EMBED_INPUTS`] inputs, none empty, each at
    /// most the model's context window in tokens.
    pub inputs: Vec<EmbedInput>,
}

impl EmbedRequest {
    /// Checks the shape (count, no empty input); the error says which input is wrong. Token
    /// counts are checked by the backend, which tokenizes.
    ///
    /// # Errors
    /// [`RuntimeError::InvalidRequest`].
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let n = self.inputs.len();
        if n == 0 {
            return Err(RuntimeError::InvalidRequest("input must not be empty".into()));
        }
        if n > MAX_EMBED_INPUTS {
            return Err(RuntimeError::InvalidRequest(format!(
                "input may hold at most {MAX_EMBED_INPUTS} items, got {n}"
            )));
        }
        for (i, input) in self.inputs.iter().enumerate() {
            let empty = match input {
                EmbedInput::Text(t) => t.is_empty(),
                EmbedInput::Tokens(t) => t.is_empty(),
            };
            if empty {
                return Err(RuntimeError::InvalidRequest(format!(
                    "input[{i}] is empty; every input needs at least one token"
                )));
            }
        }
        Ok(())
    }
}

/// The answer to an [`EmbedRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    /// One vector per input, in input order, each [`ModelInfo::embedding_length`] long: the
    /// mean over the input's tokens of the model's final hidden state (after the output norm),
    /// scaled to unit L2 norm.
    pub vectors: Vec<Vec<f32>>,
    /// The token ids each input was read as (what the receipt commits to).
    pub token_ids: Vec<Vec<u32>>,
    /// Tokens read, all inputs together.
    pub prompt_tokens: u32,
    /// Time inside the backend (queue wait and compute), microseconds.
    pub elapsed_us: u64,
}

/// An inference backend. Implemented by [`crate::llama::LlamaRuntime`] (over the
/// backend-neutral [`crate::engine`]) and [`crate::upstream::UpstreamRuntime`].
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Describes the backend.
    fn backend_info(&self) -> BackendInfo;

    /// Loads a model and returns its description. Loading an id that is already loaded is an
    /// `InvalidRequest` error.
    async fn load_model(&self, spec: LoadModelSpec) -> Result<ModelInfo, RuntimeError>;

    /// Unloads a model; running requests on it end with `Cancelled`.
    async fn unload_model(&self, id: &str) -> Result<(), RuntimeError>;

    /// Lists loaded models.
    async fn list_models(&self) -> Result<Vec<ModelInfo>, RuntimeError>;

    /// Starts a generation. Errors that can be known up front (unknown model, bad parameters,
    /// prompt too long, queue full) are returned here, not in the stream.
    async fn generate(&self, request: GenerateRequest) -> Result<GenerationStream, RuntimeError>;

    /// Counts the tokens of a prompt (chat prompts after the template is applied).
    async fn count_tokens(&self, model: &str, prompt: &Prompt) -> Result<u32, RuntimeError>;

    /// Embedding vectors of the inputs (see [`Embeddings::vectors`]), computed in batches
    /// beside generation, never inside the generation engine's own context. The default says
    /// the backend cannot.
    ///
    /// # Errors
    /// [`RuntimeError::Unsupported`] from a backend without embeddings;
    /// [`RuntimeError::ModelNotFound`]; [`RuntimeError::InvalidRequest`] for a bad input
    /// (empty, too many, a token id outside the vocabulary); [`RuntimeError::ContextOverflow`]
    /// for an input longer than the context window; [`RuntimeError::QueueFull`].
    async fn embed(&self, request: EmbedRequest) -> Result<Embeddings, RuntimeError> {
        Err(RuntimeError::Unsupported(format!(
            "the {} backend does not compute embeddings (model `{}`); serve the model with the llama.cpp backend",
            self.backend_info().kind.as_str(),
            request.model
        )))
    }

    /// Health.
    async fn health(&self) -> Health;

    /// Scheduler counters (cheap; no await).
    fn metrics(&self) -> RuntimeMetrics;
}
