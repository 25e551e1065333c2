//! The llama.cpp backend: [`LlamaRuntime`].
//!
//! Each loaded model gets one engine thread that owns its `llama_context`. Requests are
//! tokenized and their samplers built on the caller's side, then handed to the engine through
//! a bounded queue (`std::sync::mpsc::sync_channel`); a full queue is
//! [`RuntimeError::QueueFull`] at once. The engine does continuous batching: every step builds
//! one `llama_batch` holding one token for each generating sequence plus prompt chunks of
//! joining sequences, decodes it, samples every sequence with its own sampler chain (so seeded
//! sampling does not depend on the neighbours), streams UTF-8-safe text deltas, and removes
//! finished or cancelled sequences (clearing their KV cells) between steps.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self as std_mpsc, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;

use crate::digest::{parse_sha256, sha256_file};
use crate::error::RuntimeError;
use crate::gguf::GgufInfo;
use crate::runtime::*;

/// A JSON grammar (GBNF) for `response_format: json_object`: one JSON object, any content.
pub const JSON_OBJECT_GBNF: &str = r#"root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws ::= | " " | "\n" [ \t]{0,20}
"#;

/// Configuration of a [`LlamaRuntime`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LlamaConfig {
    /// CPU threads for decoding (and for prompt processing).
    pub threads: u32,
    /// Most sequences decoded together (parallel slots per model).
    pub max_sequences: u32,
    /// Most requests waiting for a slot before `QueueFull`.
    pub queue_capacity: u32,
    /// Default context window per sequence (capped at the model's training context).
    pub context_per_sequence: u32,
    /// Most tokens in one decode step (`n_batch`): prompt chunks are cut to fit.
    pub batch_tokens: u32,
    /// Layers to offload to a GPU (0 on CPU-only builds).
    pub gpu_layers: u32,
    /// One KV buffer shared by all sequences (llama.cpp `kv_unified`) instead of one per
    /// sequence (the default). Per-sequence buffers keep every sequence's numbers independent
    /// of its batch neighbours, so the same seed and prompt give the same text alone or in a
    /// full batch (what re-execution checks rely on); a unified buffer lets attention sums vary
    /// with the batch. Throughput is the same once batches are laid out in slot order (see the
    /// engine step). Each sequence stays within `context_per_sequence` either way.
    pub kv_unified: bool,
}

impl Default for LlamaConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(4);
        Self {
            threads: cores.clamp(1, 16),
            max_sequences: 8,
            queue_capacity: 64,
            context_per_sequence: 2048,
            batch_tokens: 512,
            gpu_layers: 0,
            kv_unified: false,
        }
    }
}

fn backend() -> Result<&'static LlamaBackend, RuntimeError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| RuntimeError::Backend(format!("llama.cpp backend init failed: {e}")))
}

/// Loads a GGUF model with llama.cpp (shared by the runtime and the benchmarks).
pub fn load_llama_model(path: &std::path::Path, gpu_layers: u32) -> Result<LlamaModel, RuntimeError> {
    let backend = backend()?;
    let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
    LlamaModel::load_from_file(backend, path, &params).map_err(|e| RuntimeError::ModelLoad {
        path: path.to_path_buf(),
        reason: format!("{e}; check that the file is a complete GGUF model llama.cpp supports"),
    })
}

/// Creates a llama.cpp context for `n_seq` parallel sequences of `ctx_per_seq` tokens each,
/// with one shared KV buffer or one per sequence (see [`LlamaConfig::kv_unified`]).
pub fn new_llama_context<'m>(
    model: &'m LlamaModel,
    n_seq: u32,
    ctx_per_seq: u32,
    batch_tokens: u32,
    threads: u32,
    kv_unified: bool,
) -> Result<LlamaContext<'m>, RuntimeError> {
    let backend = backend()?;
    let n_ctx = ctx_per_seq.saturating_mul(n_seq).max(1);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(batch_tokens)
        .with_n_ubatch(batch_tokens)
        .with_n_seq_max(n_seq)
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32)
        .with_kv_unified(kv_unified);
    model
        .new_context(backend, params)
        .map_err(|e| RuntimeError::Backend(format!("could not create a llama.cpp context ({n_ctx} tokens): {e}; lower the context size or max_sequences")))
}

/// The text of a chat after the model's own template (llama.cpp `llama_chat_apply_template`,
/// which recognises known template families; no template language is executed). Models
/// without a template fall back to the built-in `chatml` format.
pub fn apply_chat_template(model: &LlamaModel, messages: &[ChatMessage]) -> Result<String, RuntimeError> {
    let tmpl = match model.chat_template(None) {
        Ok(t) => t,
        Err(_) => LlamaChatTemplate::new("chatml").map_err(|e| RuntimeError::Backend(e.to_string()))?,
    };
    let msgs = messages
        .iter()
        .map(|m| LlamaChatMessage::new(m.role.as_str().to_string(), m.content.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RuntimeError::InvalidRequest(format!("message content must not contain NUL bytes ({e})")))?;
    model.apply_chat_template(&tmpl, &msgs, true).map_err(|e| {
        RuntimeError::Unsupported(format!(
            "llama.cpp does not recognise this model's chat template ({e}); use a raw completion prompt"
        ))
    })
}

/// Tokenizes a prompt the way generation does.
pub fn tokenize_prompt(model: &LlamaModel, prompt: &Prompt) -> Result<Vec<LlamaToken>, RuntimeError> {
    let vocab = model.vocab();
    Ok(match prompt {
        Prompt::Text(t) => vocab.tokenize(t.as_bytes(), true, false),
        Prompt::Chat(m) => {
            let text = apply_chat_template(model, m)?;
            // The template already contains the special tokens in text form.
            vocab.tokenize(text.as_bytes(), true, true)
        }
    })
}

/// Builds the sampler chain of a request (grammar, penalties, top-k, top-p, min-p, temperature,
/// then seeded distribution sampling; greedy when temperature is 0).
pub fn build_sampler(
    model: &LlamaModel,
    sampling: &SamplingParams,
    format: &ResponseFormat,
) -> Result<LlamaSampler, RuntimeError> {
    let mut chain = Vec::new();
    let grammar = match format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(JSON_OBJECT_GBNF.to_string()),
        ResponseFormat::JsonSchema { schema, .. } => {
            if !schema.is_object() {
                return Err(RuntimeError::InvalidRequest("response_format.json_schema.schema must be a JSON object".into()));
            }
            Some(llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|e| {
                RuntimeError::InvalidRequest(format!("unsupported JSON schema for constrained output: {e}"))
            })?)
        }
    };
    if let Some(g) = grammar {
        chain.push(LlamaSampler::grammar(model, &g, "root").map_err(|e| {
            RuntimeError::InvalidRequest(format!("the output grammar could not be compiled: {e}"))
        })?);
    }
    if sampling.repeat_penalty != 1.0 || sampling.presence_penalty != 0.0 || sampling.frequency_penalty != 0.0 {
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            sampling.repeat_last_n,
            sampling.repeat_penalty,
            sampling.frequency_penalty,
            sampling.presence_penalty,
        ));
    }
    if sampling.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if sampling.top_k > 0 {
            chain.push(LlamaSampler::top_k(sampling.top_k));
        }
        if sampling.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(sampling.top_p, 1));
        }
        if sampling.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(sampling.min_p, 1));
        }
        chain.push(LlamaSampler::temp(sampling.temperature));
        let seed = sampling.seed.unwrap_or_else(random_seed);
        // Fold 64-bit seeds into llama.cpp's 32-bit seed (0xFFFFFFFF means "random" there).
        let mut s32 = (seed ^ (seed >> 32)) as u32;
        if s32 == u32::MAX {
            s32 = 0;
        }
        chain.push(LlamaSampler::dist(s32));
    }
    Ok(LlamaSampler::chain(chain, true))
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// Splits a byte buffer into the longest valid UTF-8 prefix (returned) and keeps an incomplete
/// trailing character in `buf`. Invalid bytes become U+FFFD.
pub fn take_utf8(buf: &mut Vec<u8>) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(buf) {
            Ok(s) => {
                out.push_str(s);
                buf.clear();
                return out;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.push_str(std::str::from_utf8(&buf[..valid]).unwrap_or_default());
                match e.error_len() {
                    None => {
                        // Incomplete character at the end: keep it for the next token.
                        buf.drain(..valid);
                        return out;
                    }
                    Some(bad) => {
                        out.push('\u{FFFD}');
                        buf.drain(..valid + bad);
                    }
                }
            }
        }
    }
}

/// Holds back text that may be the start of a stop sequence.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    /// A matcher for these stop sequences.
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops, pending: String::new() }
    }
    /// Feeds text; returns (text safe to emit, whether a stop sequence was hit).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        if self.stops.is_empty() {
            return (text.to_string(), false);
        }
        self.pending.push_str(text);
        let hit = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min();
        if let Some(at) = hit {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Keep the longest suffix that is a prefix of some stop sequence.
        let mut keep_from = self.pending.len();
        for (i, _) in self.pending.char_indices() {
            let suffix = &self.pending[i..];
            if self.stops.iter().any(|s| s.starts_with(suffix)) {
                keep_from = i;
                break;
            }
        }
        let out = self.pending[..keep_from].to_string();
        self.pending.drain(..keep_from);
        (out, false)
    }
    /// Text still held back (emitted when generation ends without a stop).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

type EventTx = mpsc::UnboundedSender<Result<GenerationEvent, RuntimeError>>;

/// A request on its way to the engine.
struct Job {
    tokens: Vec<LlamaToken>,
    sampler: LlamaSampler,
    max_tokens: u32,
    stop: Vec<String>,
    tx: EventTx,
    cancel: Arc<AtomicBool>,
    submitted: Instant,
}

#[derive(Default)]
struct Counters {
    queue_depth: AtomicU32,
    active: AtomicU32,
    requests_total: AtomicU64,
    rejected_total: AtomicU64,
    prompt_tokens_total: AtomicU64,
    generated_tokens_total: AtomicU64,
    decode_steps_total: AtomicU64,
    /// Exponential moving average of request duration, ms.
    avg_request_ms: AtomicU64,
    engine_dead: AtomicBool,
}

struct LoadedModel {
    info: ModelInfo,
    model: Arc<LlamaModel>,
    queue: SyncSender<Job>,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    ctx_per_seq: u32,
}

impl Drop for LoadedModel {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The llama.cpp backend. Cheap to clone (clones share the same engines); all methods take
/// `&self`.
#[derive(Clone)]
pub struct LlamaRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    config: LlamaConfig,
    models: Mutex<HashMap<ModelId, Arc<LoadedModel>>>,
    counters: Arc<Counters>,
}


impl std::fmt::Debug for LlamaRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaRuntime").field("config", &self.inner.config).finish()
    }
}

impl LlamaRuntime {
    /// A runtime with no model loaded.
    pub fn new(config: LlamaConfig) -> Result<Self, RuntimeError> {
        if config.max_sequences == 0 || config.max_sequences > 64 {
            return Err(RuntimeError::Config(format!("max_sequences must be in 1..=64, got {}", config.max_sequences)));
        }
        if config.threads == 0 || config.batch_tokens < config.max_sequences.max(8) || config.context_per_sequence < 64 {
            return Err(RuntimeError::Config(
                "threads must be >= 1, batch_tokens >= max(8, max_sequences) and context_per_sequence >= 64".into(),
            ));
        }
        backend()?;
        Ok(Self {
            inner: Arc::new(Inner { config, models: Mutex::new(HashMap::new()), counters: Arc::new(Counters::default()) }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.inner.config
    }

    /// Loads a model without an async runtime (blocks the calling thread).
    pub fn load_model_blocking(&self, spec: LoadModelSpec) -> Result<ModelInfo, RuntimeError> {
        self.inner.load_blocking(spec)
    }

    /// The llama.cpp model behind a loaded id (for benchmarks and embedders that need the raw
    /// model, e.g. to tokenize).
    pub fn llama_model(&self, id: &str) -> Result<Arc<LlamaModel>, RuntimeError> {
        Ok(self.inner.get(id)?.model.clone())
    }
}

impl Inner {
    fn get(&self, id: &str) -> Result<Arc<LoadedModel>, RuntimeError> {
        self.models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::ModelNotFound { model: id.to_string() })
    }

    fn retry_after_ms(&self) -> u64 {
        let avg = self.counters.avg_request_ms.load(Ordering::Relaxed).max(100);
        let depth = self.counters.queue_depth.load(Ordering::Relaxed) as u64 + 1;
        (avg * depth / self.config.max_sequences as u64).clamp(100, 30_000)
    }

    fn load_blocking(&self, spec: LoadModelSpec) -> Result<ModelInfo, RuntimeError> {
        let path = spec.path.clone();
        let id = match &spec.id {
            Some(id) => id.clone(),
            None => path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
                .ok_or_else(|| RuntimeError::InvalidRequest(format!("cannot derive a model id from {}", path.display())))?,
        };
        if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()) {
            return Err(RuntimeError::InvalidRequest("model id must be 1..=128 printable characters".into()));
        }
        if self.models.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&id) {
            return Err(RuntimeError::InvalidRequest(format!("model `{id}` is already loaded; unload it first")));
        }
        let gguf = GgufInfo::read_path(&path).map_err(|e| match e {
            crate::gguf::GgufError::Io(m) => RuntimeError::ModelLoad { path: path.clone(), reason: m },
            other => RuntimeError::InvalidGguf(other),
        })?;
        let (sha256, size) = sha256_file(&path)?;
        if let Some(exp) = &spec.expected_sha256 {
            let exp = parse_sha256(exp)?;
            if exp != sha256 {
                return Err(RuntimeError::DigestMismatch { what: path.display().to_string(), expected: exp, actual: sha256 });
            }
        }
        let model = Arc::new(load_llama_model(&path, self.config.gpu_layers)?);
        let train_ctx = model.n_ctx_train();
        let mut ctx_per_seq = spec.context_length.unwrap_or(self.config.context_per_sequence);
        if train_ctx > 0 {
            ctx_per_seq = ctx_per_seq.min(train_ctx);
        }
        ctx_per_seq = ctx_per_seq.max(64);
        let info = ModelInfo {
            id: id.clone(),
            backend: BackendKind::LlamaCpp,
            sha256,
            size_bytes: size,
            context_length: ctx_per_seq,
            train_context_length: train_ctx,
            architecture: gguf.architecture.clone(),
            parameters: model.n_params(),
            quantization: gguf.quantization.clone(),
            has_chat_template: model.chat_template(None).is_ok(),
            path: path.clone(),
        };

        let (qtx, qrx) = std_mpsc::sync_channel::<Job>(self.config.queue_capacity as usize);
        let shutdown = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), RuntimeError>>();
        let engine = Engine {
            model: model.clone(),
            n_seq: self.config.max_sequences,
            ctx_per_seq,
            batch_tokens: self.config.batch_tokens,
            threads: self.config.threads,
            kv_unified: self.config.kv_unified,
            counters: self.counters.clone(),
            shutdown: shutdown.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("b3iq-llama-{id}"))
            .spawn(move || engine.run(qrx, ready_tx))
            .map_err(|e| RuntimeError::Backend(format!("could not start the engine thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(RuntimeError::Backend("the engine thread died while starting".into()));
            }
        }
        let loaded = Arc::new(LoadedModel { info: info.clone(), model, queue: qtx, shutdown, thread: Some(thread), ctx_per_seq });
        self.models.lock().unwrap_or_else(|p| p.into_inner()).insert(id, loaded);
        Ok(info)
    }

    fn submit(&self, request: GenerateRequest) -> Result<GenerationStream, RuntimeError> {
        request.validate()?;
        let loaded = self.get(&request.model)?;
        let tokens = tokenize_prompt(&loaded.model, &request.prompt)?;
        if tokens.is_empty() {
            return Err(RuntimeError::InvalidRequest("the prompt is empty after tokenization".into()));
        }
        let n_prompt = tokens.len() as u32;
        if n_prompt >= loaded.ctx_per_seq {
            return Err(RuntimeError::ContextOverflow { prompt_tokens: n_prompt, context_length: loaded.ctx_per_seq });
        }
        let room = loaded.ctx_per_seq - n_prompt;
        let max_tokens = request.max_tokens.map_or(room, |m| m.min(room));
        let sampler = build_sampler(&loaded.model, &request.sampling, &request.response_format)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job {
            tokens,
            sampler,
            max_tokens,
            stop: request.stop.clone(),
            tx,
            cancel: cancel.clone(),
            submitted: Instant::now(),
        };
        self.counters.queue_depth.fetch_add(1, Ordering::AcqRel);
        match loaded.queue.try_send(job) {
            Ok(()) => Ok(GenerationStream::new(rx, cancel, n_prompt)),
            Err(TrySendError::Full(_)) => {
                self.counters.queue_depth.fetch_sub(1, Ordering::AcqRel);
                self.counters.rejected_total.fetch_add(1, Ordering::Relaxed);
                Err(RuntimeError::QueueFull { retry_after_ms: self.retry_after_ms() })
            }
            Err(TrySendError::Disconnected(_)) => {
                self.counters.queue_depth.fetch_sub(1, Ordering::AcqRel);
                Err(RuntimeError::ShuttingDown)
            }
        }
    }
}

#[async_trait]
impl Runtime for LlamaRuntime {
    fn backend_info(&self) -> BackendInfo {
        BackendInfo {
            kind: BackendKind::LlamaCpp,
            name: "llama.cpp (llama-cpp-2)".to_string(),
            threads: self.inner.config.threads,
            system_info: llama_cpp_2::list_llama_ggml_backend_devices()
                .iter()
                .map(|d| format!("{} ({})", d.name, d.description))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    async fn load_model(&self, spec: LoadModelSpec) -> Result<ModelInfo, RuntimeError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.load_blocking(spec))
            .await
            .map_err(|e| RuntimeError::Backend(format!("model loading panicked: {e}")))?
    }

    async fn unload_model(&self, id: &str) -> Result<(), RuntimeError> {
        let loaded = self
            .inner
            .models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .ok_or_else(|| RuntimeError::ModelNotFound { model: id.to_string() })?;
        loaded.shutdown.store(true, Ordering::Release);
        // The engine thread is joined when the last reference goes (off the async threads).
        let _ = tokio::task::spawn_blocking(move || drop(loaded)).await;
        Ok(())
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, RuntimeError> {
        let mut v: Vec<ModelInfo> =
            self.inner.models.lock().unwrap_or_else(|p| p.into_inner()).values().map(|m| m.info.clone()).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    async fn generate(&self, request: GenerateRequest) -> Result<GenerationStream, RuntimeError> {
        self.inner.submit(request)
    }

    async fn count_tokens(&self, model: &str, prompt: &Prompt) -> Result<u32, RuntimeError> {
        let loaded = self.inner.get(model)?;
        Ok(tokenize_prompt(&loaded.model, prompt)?.len() as u32)
    }

    async fn health(&self) -> Health {
        let n = self.inner.models.lock().unwrap_or_else(|p| p.into_inner()).len() as u32;
        let m = self.metrics();
        let (status, message) = if self.inner.counters.engine_dead.load(Ordering::Acquire) {
            (HealthStatus::Down, "an engine thread stopped after a llama.cpp error; reload the model".to_string())
        } else if m.queue_depth >= m.queue_capacity && m.queue_capacity > 0 {
            (HealthStatus::Degraded, format!("request queue is full ({} waiting)", m.queue_depth))
        } else {
            (HealthStatus::Ok, String::new())
        };
        Health { status, backend: BackendKind::LlamaCpp, models_loaded: n, message }
    }

    fn metrics(&self) -> RuntimeMetrics {
        let c = &self.inner.counters;
        let n_models = self.inner.models.lock().unwrap_or_else(|p| p.into_inner()).len().max(1) as u32;
        RuntimeMetrics {
            queue_depth: c.queue_depth.load(Ordering::Relaxed),
            queue_capacity: self.inner.config.queue_capacity * n_models,
            active_sequences: c.active.load(Ordering::Relaxed),
            max_sequences: self.inner.config.max_sequences * n_models,
            requests_total: c.requests_total.load(Ordering::Relaxed),
            requests_rejected_total: c.rejected_total.load(Ordering::Relaxed),
            prompt_tokens_total: c.prompt_tokens_total.load(Ordering::Relaxed),
            generated_tokens_total: c.generated_tokens_total.load(Ordering::Relaxed),
            decode_steps_total: c.decode_steps_total.load(Ordering::Relaxed),
        }
    }
}

struct Engine {
    model: Arc<LlamaModel>,
    n_seq: u32,
    ctx_per_seq: u32,
    batch_tokens: u32,
    threads: u32,
    kv_unified: bool,
    counters: Arc<Counters>,
    shutdown: Arc<AtomicBool>,
}

/// One active sequence in the engine.
struct Seq {
    slot: i32,
    job: Job,
    /// Prompt tokens already in the KV cache.
    fed: usize,
    /// Position of the next token.
    pos: i32,
    /// Token to feed next (after the prompt).
    next: Option<LlamaToken>,
    /// Index of this sequence's logits in the current batch.
    logits_at: Option<i32>,
    generated: u32,
    utf8: Vec<u8>,
    stop: StopMatcher,
    admitted: Instant,
    prompt_done: Option<Instant>,
    first_token: Option<Instant>,
}

enum Outcome {
    Continue,
    Done(FinishReason),
}

impl Engine {
    fn run(self, rx: std_mpsc::Receiver<Job>, ready: std_mpsc::Sender<Result<(), RuntimeError>>) {
        let model = self.model.clone();
        let mut ctx = match new_llama_context(&model, self.n_seq, self.ctx_per_seq, self.batch_tokens, self.threads, self.kv_unified) {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let mut batch = LlamaBatch::new(self.batch_tokens as usize, 1);
        // Free slots, lowest first, so active slots stay contiguous (see the batch layout).
        let mut free: BTreeSet<i32> = (0..self.n_seq as i32).collect();
        let mut active: Vec<Seq> = Vec::new();
        let mut disconnected = false;
        let mut piece = Vec::with_capacity(32);

        loop {
            if self.shutdown.load(Ordering::Acquire) {
                for s in active.drain(..) {
                    let _ = s.job.tx.send(Err(RuntimeError::Cancelled));
                }
                self.drain_queue(&rx);
                break;
            }
            // Admit waiting requests into free slots.
            while !free.is_empty() && !disconnected {
                let job = if active.is_empty() {
                    match rx.recv_timeout(Duration::from_millis(50)) {
                        Ok(j) => j,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            disconnected = true;
                            break;
                        }
                    }
                } else {
                    match rx.try_recv() {
                        Ok(j) => j,
                        Err(std_mpsc::TryRecvError::Empty) => break,
                        Err(std_mpsc::TryRecvError::Disconnected) => {
                            disconnected = true;
                            break;
                        }
                    }
                };
                self.counters.queue_depth.fetch_sub(1, Ordering::AcqRel);
                if job.cancel.load(Ordering::Acquire) || job.tx.is_closed() {
                    let _ = job.tx.send(Err(RuntimeError::Cancelled));
                    self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let slot = free.pop_first().unwrap_or_default();
                active.push(Seq {
                    slot,
                    stop: StopMatcher::new(job.stop.clone()),
                    job,
                    fed: 0,
                    pos: 0,
                    next: None,
                    logits_at: None,
                    generated: 0,
                    utf8: Vec::new(),
                    admitted: Instant::now(),
                    prompt_done: None,
                    first_token: None,
                });
            }
            if active.is_empty() {
                if disconnected {
                    break;
                }
                continue;
            }
            self.counters.active.store(active.len() as u32, Ordering::Relaxed);

            // Drop cancelled sequences before spending compute on them.
            let mut i = 0;
            while i < active.len() {
                if active[i].job.cancel.load(Ordering::Acquire) || active[i].job.tx.is_closed() {
                    let s = active.swap_remove(i);
                    let _ = s.job.tx.send(Err(RuntimeError::Cancelled));
                    self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
                    self.release(&mut ctx, &mut free, s.slot);
                } else {
                    i += 1;
                }
            }
            if active.is_empty() {
                self.counters.active.store(0, Ordering::Relaxed);
                continue;
            }

            // Build one batch: a token for every generating sequence, then prompt chunks of
            // joining ones up to the cap. With one KV stream per sequence, llama.cpp cuts a
            // batch into ubatches of *consecutive, ascending* sequence ids
            // (`split_equal(sequential)`), so the batch is laid out in slot order (and slots
            // are handed out lowest first): out of order, one step became several graph runs.
            active.sort_unstable_by_key(|s| s.slot);
            batch.clear();
            let cap = self.batch_tokens as usize;
            // Generating sequences first claim their token; prompts share what is left, in
            // slot order. Decode tokens beyond the cap are refused by `batch.add` itself.
            let decoding = active.iter().filter(|s| s.next.is_some()).count().min(cap);
            let mut room = cap - decoding;
            let mut used = 0usize;
            for s in active.iter_mut() {
                s.logits_at = None;
                if let Some(t) = s.next {
                    if batch.add(t, s.pos, &[s.slot], true).is_ok() {
                        s.logits_at = Some(used as i32);
                        used += 1;
                    }
                    continue;
                }
                let take = (s.job.tokens.len() - s.fed).min(room);
                room -= take;
                for j in 0..take {
                    let last = s.fed + j + 1 == s.job.tokens.len();
                    let _ = batch.add(s.job.tokens[s.fed + j], s.pos + j as i32, &[s.slot], last);
                    if last {
                        s.logits_at = Some(used as i32);
                    }
                    used += 1;
                }
                s.fed += take;
                s.pos += take as i32;
            }
            if used == 0 {
                continue;
            }
            if let Err(e) = ctx.decode(&mut batch) {
                tracing::error!("llama_decode failed: {e}");
                // KV cache full or internal error: fail the sequences in this batch.
                for s in active.drain(..) {
                    let _ = s.job.tx.send(Err(RuntimeError::Backend(format!(
                        "llama.cpp decode failed ({e}); retry with a shorter prompt or fewer parallel requests"
                    ))));
                    self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
                    let _ = ctx.clear_kv_cache_seq(Some(s.slot as u32), None, None);
                    free.insert(s.slot);
                }
                continue;
            }
            self.counters.decode_steps_total.fetch_add(1, Ordering::Relaxed);

            // Sample every sequence that has logits in this batch.
            let mut i = 0;
            while i < active.len() {
                let outcome = {
                    let s = &mut active[i];
                    match s.logits_at {
                        None => Outcome::Continue,
                        Some(idx) => {
                            if s.next.is_some() {
                                s.pos += 1;
                            } else {
                                s.prompt_done = Some(Instant::now());
                                self.counters
                                    .prompt_tokens_total
                                    .fetch_add(s.job.tokens.len() as u64, Ordering::Relaxed);
                            }
                            let tok = s.job.sampler.sample(&ctx, idx);
                            self.step_token(s, tok, &mut piece)
                        }
                    }
                };
                match outcome {
                    Outcome::Continue => i += 1,
                    Outcome::Done(reason) => {
                        let s = active.swap_remove(i);
                        self.finish(s, reason);
                    }
                }
            }
            // Release slots of finished sequences (those no longer active).
            let in_use: Vec<i32> = active.iter().map(|s| s.slot).collect();
            for slot in 0..self.n_seq as i32 {
                if !in_use.contains(&slot) && !free.contains(&slot) {
                    self.release(&mut ctx, &mut free, slot);
                }
            }
            self.counters.active.store(active.len() as u32, Ordering::Relaxed);
        }
        self.counters.active.store(0, Ordering::Relaxed);
    }

    fn drain_queue(&self, rx: &std_mpsc::Receiver<Job>) {
        while let Ok(job) = rx.try_recv() {
            self.counters.queue_depth.fetch_sub(1, Ordering::AcqRel);
            let _ = job.tx.send(Err(RuntimeError::Cancelled));
        }
    }

    fn release(&self, ctx: &mut LlamaContext<'_>, free: &mut BTreeSet<i32>, slot: i32) {
        let _ = ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
        free.insert(slot);
    }

    /// Handles one sampled token: end of generation, text, stop sequences, limits.
    fn step_token(&self, s: &mut Seq, tok: LlamaToken, piece: &mut Vec<u8>) -> Outcome {
        let now = Instant::now();
        if s.first_token.is_none() {
            s.first_token = Some(now);
        }
        let vocab = self.model.vocab();
        if vocab.is_eog(tok) {
            return Outcome::Done(FinishReason::Stop);
        }
        s.generated += 1;
        self.counters.generated_tokens_total.fetch_add(1, Ordering::Relaxed);
        piece.clear();
        vocab.token_to_piece_into(tok, piece, false, None);
        s.utf8.extend_from_slice(piece);
        let text = take_utf8(&mut s.utf8);
        let (emit, stopped) = if text.is_empty() { (String::new(), false) } else { s.stop.push(&text) };
        if !emit.is_empty() && s.job.tx.send(Ok(GenerationEvent::Delta { text: emit })).is_err() {
            // Consumer went away: the next step removes it via the cancel check.
            s.job.cancel.store(true, Ordering::Release);
        }
        if stopped {
            s.utf8.clear();
            return Outcome::Done(FinishReason::Stop);
        }
        if s.generated >= s.job.max_tokens {
            return Outcome::Done(FinishReason::Length);
        }
        s.next = Some(tok);
        Outcome::Continue
    }

    fn finish(&self, mut s: Seq, reason: FinishReason) {
        let end = Instant::now();
        // Flush held-back text (an incomplete character at the end becomes U+FFFD).
        let mut tail = String::new();
        let mut stopped = false;
        if !s.utf8.is_empty() {
            let mut rest = take_utf8(&mut s.utf8);
            if !s.utf8.is_empty() {
                rest.push('\u{FFFD}');
            }
            let (e, hit) = s.stop.push(&rest);
            tail.push_str(&e);
            stopped = hit;
        }
        if !stopped {
            tail.push_str(&s.stop.flush());
        }
        if !tail.is_empty() {
            let _ = s.job.tx.send(Ok(GenerationEvent::Delta { text: tail }));
        }
        let us = |a: Instant, b: Instant| b.saturating_duration_since(a).as_micros() as u64;
        let submitted = s.job.submitted;
        let prompt_done = s.prompt_done.unwrap_or(end);
        let first = s.first_token.unwrap_or(end);
        let timings = Timings {
            queue_us: us(submitted, s.admitted),
            prompt_us: us(s.admitted, prompt_done),
            time_to_first_token_us: us(submitted, first),
            generation_us: us(first, end),
            total_us: us(submitted, end),
        };
        let usage = Usage::new(s.job.tokens.len() as u32, s.generated);
        let _ = s.job.tx.send(Ok(GenerationEvent::Done { finish_reason: reason, usage, timings }));
        self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
        let ms = timings.total_us / 1000;
        let old = self.counters.avg_request_ms.load(Ordering::Relaxed);
        let new = if old == 0 { ms } else { (old * 7 + ms) / 8 };
        self.counters.avg_request_ms.store(new, Ordering::Relaxed);
    }
}

/// Resolves the path of a model file for tests and examples: `$B3IQ_TEST_MODEL`, else the
/// output of `scripts/fetch-model` (which fetches and verifies the default model).
pub fn default_model_path() -> Result<PathBuf, RuntimeError> {
    crate::store::default_model_path()
}
