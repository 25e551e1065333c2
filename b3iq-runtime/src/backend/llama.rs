//! The llama.cpp backend (through `llama-cpp-2`): [`LlamaCppBackend`] implements the engine's
//! [`Backend`] and [`LlamaDecoder`] its [`Decoder`]; [`LlamaRuntime`] serves loaded GGUF
//! models, one [`Engine`] (one thread owning one `llama_context`) per model.
//!
//! Requests are tokenized (chat template applied by `llama_chat_apply_template`) and their
//! sampler chains built on the caller's side; the engine does continuous batching (see
//! [`crate::engine`]). Each request owns its sampler chain and RNG, and each sequence its KV
//! stream (unless [`LlamaConfig::kv_unified`]), so seeded output does not depend on the batch
//! neighbours.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

use b3iq_core::sampling::{self, Candidate, SeedKey};

use tokio::sync::oneshot;

use crate::backend::llama_embeddings::{EmbedReply, Embedder, EmbedderShape, EMBED_BATCH_TOKENS};
use crate::digest::{parse_sha256, sha256_file};
use crate::engine::{
    Backend, DecodeBatch, DecodeError, Decoder, DecoderShape, Engine, EngineConfig, EngineCounters,
    SampleSite, SeqId, TokenId,
};
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
    /// Total KV cells of the shared buffer (llama.cpp's `n_ctx`, rounded up to a multiple of
    /// 256 by llama.cpp), with [`LlamaConfig::kv_unified`] only. `None` (the default) gives
    /// `max_sequences × context_per_sequence`: room for every sequence's whole context. Fewer
    /// cells overcommit the cache, as llama-server's `--ctx-size` with `--parallel` and
    /// `--kv-unified` does: each sequence may still grow to `context_per_sequence`, and when
    /// the sequences together need more cells than there are, the engine retries with smaller
    /// batches and then ends the sequence holding the most cells with
    /// [`RuntimeError::KvCacheFull`] (see `docs/runtime.md`). Must be at least
    /// `context_per_sequence`.
    pub kv_cells: Option<u32>,
    /// The prompt (prefix) cache, on by default: a slot keeps the KV cells of the request it
    /// served, and a new request goes to the free slot whose cached tokens share the longest
    /// prefix with its prompt and reads only the rest (see `docs/runtime.md`, "Prompt
    /// cache"). Off: every request reads its whole prompt.
    pub prompt_cache: bool,
    /// Serve verifiable work: contexts keep the final-norm hidden state of every output
    /// (llama.cpp embeddings on, pooling none) and every request's [`TokenIds::fingerprints`]
    /// carries its hidden-state commitments ([`b3iq_core::fingerprint`]). Costs the lm_head on
    /// every prompt token (llama.cpp outputs all tokens when embeddings are on), so only
    /// contexts serving verifiable work turn it on.
    pub fingerprints: bool,
}

impl Default for LlamaConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(4);
        Self {
            threads: cores.clamp(1, 16),
            max_sequences: 8,
            queue_capacity: 64,
            context_per_sequence: 2048,
            batch_tokens: 512,
            gpu_layers: 0,
            kv_unified: false,
            kv_cells: None,
            prompt_cache: true,
            fingerprints: false,
        }
    }
}

/// Initialises llama.cpp once per process (logs go to `tracing`).
///
/// # Errors
/// [`RuntimeError::Backend`] when llama.cpp cannot start.
pub fn init_backend() -> Result<(), RuntimeError> {
    backend().map(|_| ())
}

/// Whether this llama.cpp build can offload layers to a GPU (CUDA, Metal, Vulkan, ...):
/// llama.cpp's `llama_supports_gpu_offload`. False for the CPU-only build, or when llama.cpp
/// cannot start.
pub fn supports_gpu_offload() -> bool {
    backend().map(|b| b.supports_gpu_offload()).unwrap_or(false)
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
pub fn load_llama_model(
    path: &std::path::Path,
    gpu_layers: u32,
) -> Result<LlamaModel, RuntimeError> {
    let backend = backend()?;
    let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
    LlamaModel::load_from_file(backend, path, &params).map_err(|e| RuntimeError::ModelLoad {
        path: path.to_path_buf(),
        reason: format!("{e}; check that the file is a complete GGUF model llama.cpp supports"),
    })
}

/// Loads only a GGUF model's vocabulary with llama.cpp (`vocab_only`): tokenizer, chat template
/// and samplers for a backend that computes elsewhere (the wgpu backend).
///
/// # Errors
/// [`RuntimeError::ModelLoad`] when llama.cpp cannot read the file.
pub fn load_vocab_only(path: &std::path::Path) -> Result<LlamaModel, RuntimeError> {
    let backend = backend()?;
    let params = LlamaModelParams::default().with_vocab_only(true);
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
    new_llama_context_with(
        model,
        n_seq,
        ctx_per_seq,
        batch_tokens,
        threads,
        kv_unified,
        false,
    )
}

/// [`new_llama_context`], with `embeddings` on: every output row also keeps its final-norm
/// hidden state (pooling none), read by `embeddings_ith` (see [`LlamaConfig::fingerprints`]).
pub fn new_llama_context_with<'m>(
    model: &'m LlamaModel,
    n_seq: u32,
    ctx_per_seq: u32,
    batch_tokens: u32,
    threads: u32,
    kv_unified: bool,
    embeddings: bool,
) -> Result<LlamaContext<'m>, RuntimeError> {
    new_llama_context_sized(
        model,
        ctx_per_seq.saturating_mul(n_seq),
        n_seq,
        batch_tokens,
        threads,
        kv_unified,
        embeddings,
    )
}

/// [`new_llama_context_with`] with the total KV cells (`n_ctx`) given instead of derived.
fn new_llama_context_sized<'m>(
    model: &'m LlamaModel,
    n_ctx: u32,
    n_seq: u32,
    batch_tokens: u32,
    threads: u32,
    kv_unified: bool,
    embeddings: bool,
) -> Result<LlamaContext<'m>, RuntimeError> {
    let backend = backend()?;
    let n_ctx = n_ctx.max(1);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(batch_tokens)
        .with_n_ubatch(batch_tokens)
        .with_n_seq_max(n_seq)
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32)
        .with_kv_unified(kv_unified)
        .with_embeddings(embeddings)
        .with_pooling_type(if embeddings {
            llama_cpp_2::context::params::LlamaPoolingType::None
        } else {
            llama_cpp_2::context::params::LlamaPoolingType::Unspecified
        });
    model
        .new_context(backend, params)
        .map_err(|e| RuntimeError::Backend(format!("could not create a llama.cpp context ({n_ctx} tokens): {e}; lower the context size or max_sequences")))
}

/// The text of a chat after the model's own template (llama.cpp `llama_chat_apply_template`,
/// which recognises known template families; no template language is executed). Models
/// without a template fall back to the built-in `chatml` format.
pub fn apply_chat_template(
    model: &LlamaModel,
    messages: &[ChatMessage],
) -> Result<String, RuntimeError> {
    let tmpl = match model.chat_template(None) {
        Ok(t) => t,
        Err(_) => {
            LlamaChatTemplate::new("chatml").map_err(|e| RuntimeError::Backend(e.to_string()))?
        }
    };
    let msgs = messages
        .iter()
        .map(|m| LlamaChatMessage::new(m.role.as_str().to_string(), m.content.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            RuntimeError::InvalidRequest(format!(
                "message content must not contain NUL bytes ({e})"
            ))
        })?;
    model.apply_chat_template(&tmpl, &msgs, true).map_err(|e| {
        RuntimeError::Unsupported(format!(
            "llama.cpp does not recognise this model's chat template ({e}); use a raw completion prompt"
        ))
    })
}

/// Tokenizes a prompt the way generation does.
pub fn tokenize_prompt(
    model: &LlamaModel,
    prompt: &Prompt,
) -> Result<Vec<LlamaToken>, RuntimeError> {
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

/// The sampling state of one request: llama.cpp's deterministic chain (logit bias, grammar,
/// penalties, top-k, top-p, min-p, temperature; greedy at temperature 0) and, for sampled
/// requests, the key of B3IQ's replayable final draw ([`b3iq_core::sampling`]), which replaces
/// llama.cpp's `dist` step.
///
/// The chain is held in three parts applied in order (`head`: the logit bias; `grammar`; `tail`:
/// the rest), so a greedy request with a grammar can take llama-server's shortcut: the argmax
/// of the chain without the grammar, kept when the grammar allows it (the grammar only masks
/// tokens, so the argmax over the allowed tokens is then the same token, first index on ties);
/// only a refused token costs the grammar pass over the whole vocabulary. Sampled requests and
/// the verifier's [`RequestSampler::survivors`] always apply all three parts.
pub struct RequestSampler {
    head: Option<LlamaSampler>,
    grammar: Option<LlamaSampler>,
    tail: LlamaSampler,
    final_draw: Option<SeedKey>,
}

impl std::fmt::Debug for RequestSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSampler")
            .field("greedy", &self.final_draw.is_none())
            .field("grammar", &self.grammar.is_some())
            .finish()
    }
}

impl RequestSampler {
    /// The seed key of the final draw; `None` for greedy decoding.
    pub fn seed_key(&self) -> Option<SeedKey> {
        self.final_draw
    }

    /// Applies the whole deterministic chain (head, grammar, tail) to `arr`.
    fn apply_chain(&mut self, arr: &mut LlamaTokenDataArray) {
        if let Some(h) = self.head.as_mut() {
            arr.apply_sampler(h);
        }
        if let Some(g) = self.grammar.as_mut() {
            arr.apply_sampler(g);
        }
        arr.apply_sampler(&mut self.tail);
    }

    /// Picks the token of generated position `index` from a candidate array (the row's logits)
    /// and records it in the chain's history.
    pub fn sample_array(&mut self, mut arr: LlamaTokenDataArray, index: u32) -> TokenId {
        let tok = match self.final_draw {
            None if self.grammar.is_some() => {
                // Greedy with a grammar: the unconstrained argmax first.
                let mut free = arr.clone();
                if let Some(h) = self.head.as_mut() {
                    free.apply_sampler(h);
                }
                free.apply_sampler(&mut self.tail);
                match free.selected_token().filter(|&t| self.grammar_allows(t)) {
                    Some(t) => Some(t.0 as TokenId),
                    None => {
                        self.apply_chain(&mut arr);
                        arr.selected_token().map(|t| t.0 as TokenId)
                    }
                }
            }
            None => {
                self.apply_chain(&mut arr);
                arr.selected_token().map(|t| t.0 as TokenId)
            }
            Some(key) => {
                let mut c = self.survivors(arr);
                sampling::draw(&mut c, key.uniform(u64::from(index)))
            }
        };
        // A chain that leaves nothing (cannot happen with min_keep >= 1) falls back to token 0.
        let tok = tok.unwrap_or(0);
        self.accept(tok);
        tok
    }

    /// Whether the grammar (in its current state) allows `token` next.
    fn grammar_allows(&mut self, token: LlamaToken) -> bool {
        let Some(g) = self.grammar.as_mut() else {
            return true;
        };
        let mut one = LlamaTokenDataArray::new(
            vec![llama_cpp_2::token::data::LlamaTokenData::new(token, 0.0, 0.0)],
            false,
        );
        one.apply_sampler(g);
        one.data.first().is_some_and(|d| d.logit().is_finite())
    }

    /// Records a token in the chain's history without sampling (replay of claimed tokens).
    pub fn accept(&mut self, token: TokenId) {
        let t = llama_token(token);
        if let Some(h) = self.head.as_mut() {
            h.accept(t);
        }
        if let Some(g) = self.grammar.as_mut() {
            g.accept(t);
        }
        self.tail.accept(t);
    }

    /// Applies the deterministic chain to a row's candidates and returns the survivors (the
    /// verifier's input to [`sampling::check_draw`]). Does not touch the history.
    pub fn survivors(&mut self, mut arr: LlamaTokenDataArray) -> Vec<Candidate> {
        self.apply_chain(&mut arr);
        arr.data
            .iter()
            .map(|d| Candidate {
                token: d.id().0 as u32,
                logit: d.logit(),
            })
            .collect()
    }
}

/// Builds the sampling state of a request: the deterministic chain (logit bias, grammar,
/// penalties, top-k, top-p, min-p, temperature; greedy when temperature is 0) and the seed key of the final draw
/// (`sampling.seed_key`, else derived from `sampling.seed`, else from a random seed).
pub fn build_sampler(
    model: &LlamaModel,
    sampling: &SamplingParams,
    format: &ResponseFormat,
) -> Result<RequestSampler, RuntimeError> {
    let mut head = None;
    if !sampling.logit_bias.is_empty() {
        let n_vocab = model.n_vocab().max(0) as u32;
        if let Some((t, _)) = sampling.logit_bias.iter().find(|(t, _)| *t >= n_vocab) {
            return Err(RuntimeError::InvalidRequest(format!(
                "logit_bias names token id {t}, outside this model's vocabulary (0..{n_vocab})"
            )));
        }
        let biases: Vec<LlamaLogitBias> = sampling
            .logit_bias
            .iter()
            .map(|&(t, b)| LlamaLogitBias::new(llama_token(t), b))
            .collect();
        // First in the chain: OpenAI adds the bias to the logits before anything else.
        head = Some(LlamaSampler::logit_bias(model.n_vocab(), &biases));
    }
    let grammar = match format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(JSON_OBJECT_GBNF.to_string()),
        ResponseFormat::JsonSchema { schema, .. } => {
            if !schema.is_object() {
                return Err(RuntimeError::InvalidRequest(
                    "response_format.json_schema.schema must be a JSON object".into(),
                ));
            }
            Some(
                llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|e| {
                    RuntimeError::InvalidRequest(format!(
                        "unsupported JSON schema for constrained output: {e}"
                    ))
                })?,
            )
        }
        ResponseFormat::ToolCall { tools } => {
            crate::tools::tool_call_grammar(tools, &crate::tools::ToolChoice::Required)?
        }
    };
    let grammar = match grammar {
        Some(g) => Some(LlamaSampler::grammar(model, &g, "root").map_err(|e| {
            RuntimeError::InvalidRequest(format!("the output grammar could not be compiled: {e}"))
        })?),
        None => None,
    };
    let mut chain = Vec::new();
    if sampling.repeat_penalty != 1.0
        || sampling.presence_penalty != 0.0
        || sampling.frequency_penalty != 0.0
    {
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            sampling.repeat_last_n,
            sampling.repeat_penalty,
            sampling.frequency_penalty,
            sampling.presence_penalty,
        ));
    }
    let final_draw = if sampling.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
        None
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
        Some(match sampling.seed_key {
            Some(k) => SeedKey(k),
            None => SeedKey::from_request_seed(sampling.seed.unwrap_or_else(random_seed)),
        })
    };
    Ok(RequestSampler {
        head,
        grammar,
        tail: LlamaSampler::chain(chain, true),
        final_draw,
    })
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

fn llama_token(t: TokenId) -> LlamaToken {
    LlamaToken::new(t as i32)
}

/// A GGUF model loaded by llama.cpp, as an engine [`Backend`]: tokenizer, chat template and
/// sampler chains from the model; [`LlamaDecoder`]s over new contexts.
pub struct LlamaCppBackend {
    model: Arc<LlamaModel>,
    threads: u32,
    kv_unified: bool,
    kv_cells: Option<u32>,
    fingerprints: bool,
}

impl std::fmt::Debug for LlamaCppBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaCppBackend")
            .field("threads", &self.threads)
            .field("kv_unified", &self.kv_unified)
            .finish()
    }
}

impl LlamaCppBackend {
    /// Wraps a loaded model. Its decoders use `threads` CPU threads and one KV stream per
    /// sequence, or one shared buffer with `kv_unified` (see [`LlamaConfig::kv_unified`]).
    pub fn new(model: Arc<LlamaModel>, threads: u32, kv_unified: bool) -> Self {
        Self {
            model,
            threads: threads.max(1),
            kv_unified,
            kv_cells: None,
            fingerprints: false,
        }
    }

    /// Decoders get one shared KV buffer of `cells` cells in all (llama.cpp `n_ctx`), whatever
    /// the engine's shape asks for (see [`LlamaConfig::kv_cells`]); `None` keeps the shape's
    /// `max_sequences × context_per_sequence` and the backend's KV layout.
    pub fn with_kv_cells(mut self, cells: Option<u32>) -> Self {
        self.kv_cells = cells;
        self
    }

    /// Decoders keep hidden states for fingerprints (see [`LlamaConfig::fingerprints`]).
    pub fn with_fingerprints(mut self, on: bool) -> Self {
        self.fingerprints = on;
        self
    }

    /// The llama.cpp model.
    pub fn model(&self) -> &Arc<LlamaModel> {
        &self.model
    }
}

impl Backend for LlamaCppBackend {
    type Sampler = RequestSampler;
    type Decoder<'a> = LlamaDecoder<'a>;

    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String, RuntimeError> {
        apply_chat_template(&self.model, messages)
    }

    fn tokenize(&self, text: &str, parse_special: bool) -> Vec<TokenId> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), true, parse_special)
            .into_iter()
            .map(|t| t.0 as TokenId)
            .collect()
    }

    fn token_piece(&self, token: TokenId, out: &mut Vec<u8>) {
        self.model
            .vocab()
            .token_to_piece_into(llama_token(token), out, false, None);
    }

    fn is_end_of_generation(&self, token: TokenId) -> bool {
        self.model.vocab().is_eog(llama_token(token))
    }

    fn new_sampler(
        &self,
        sampling: &SamplingParams,
        format: &ResponseFormat,
    ) -> Result<RequestSampler, RuntimeError> {
        build_sampler(&self.model, sampling, format)
    }

    fn new_decoder(&self, shape: DecoderShape) -> Result<LlamaDecoder<'_>, RuntimeError> {
        if let Some(cells) = self.kv_cells {
            return LlamaDecoder::with_kv_cells(
                &self.model,
                shape,
                cells,
                self.threads,
                self.fingerprints,
            );
        }
        LlamaDecoder::new(
            &self.model,
            shape,
            self.threads,
            self.kv_unified,
            self.fingerprints,
        )
    }
}

/// A llama.cpp context as an engine [`Decoder`]: `max_sequences` KV streams of
/// `context_per_sequence` cells (or one shared buffer), a `llama_batch` of `batch_tokens`, and
/// which rows of the last batch kept their logits.
pub struct LlamaDecoder<'m> {
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    /// Per row of the last successful decode: whether its logits were kept.
    outputs: Vec<bool>,
    /// Whether the context keeps hidden states (embeddings on).
    embeddings: bool,
}

impl std::fmt::Debug for LlamaDecoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaDecoder")
            .field("n_ctx", &self.ctx.n_ctx())
            .field("rows", &self.outputs.len())
            .finish()
    }
}

impl<'m> LlamaDecoder<'m> {
    /// A decoder over a new context for `shape` (see [`new_llama_context_with`]); with
    /// `embeddings` it keeps hidden states ([`Decoder::hidden_state`]).
    ///
    /// # Errors
    /// [`RuntimeError::Backend`] when llama.cpp cannot create the context (memory).
    pub fn new(
        model: &'m LlamaModel,
        shape: DecoderShape,
        threads: u32,
        kv_unified: bool,
        embeddings: bool,
    ) -> Result<Self, RuntimeError> {
        let ctx = new_llama_context_with(
            model,
            shape.max_sequences,
            shape.context_per_sequence,
            shape.batch_tokens,
            threads,
            kv_unified,
            embeddings,
        )?;
        Ok(Self {
            ctx,
            batch: LlamaBatch::new(shape.batch_tokens as usize, 1),
            outputs: Vec::new(),
            embeddings,
        })
    }

    /// A decoder whose context has one KV buffer of `kv_cells` cells shared by all
    /// `shape.max_sequences` sequences (llama.cpp `kv_unified`, `n_ctx = kv_cells`), so the
    /// sequences together may need more cells than there are (see [`LlamaConfig::kv_cells`]).
    ///
    /// # Errors
    /// [`RuntimeError::Backend`] when llama.cpp cannot create the context (memory).
    pub fn with_kv_cells(
        model: &'m LlamaModel,
        shape: DecoderShape,
        kv_cells: u32,
        threads: u32,
        embeddings: bool,
    ) -> Result<Self, RuntimeError> {
        let ctx = new_llama_context_sized(
            model,
            kv_cells,
            shape.max_sequences,
            shape.batch_tokens,
            threads,
            true,
            embeddings,
        )?;
        Ok(Self {
            ctx,
            batch: LlamaBatch::new(shape.batch_tokens as usize, 1),
            outputs: Vec::new(),
            embeddings,
        })
    }

    fn has_output(&self, row: usize) -> bool {
        self.outputs.get(row).copied().unwrap_or(false)
    }
}

impl Decoder for LlamaDecoder<'_> {
    type Sampler = RequestSampler;

    fn decode(&mut self, batch: &DecodeBatch) -> Result<(), DecodeError> {
        self.batch.clear();
        self.outputs.clear();
        for t in batch.tokens() {
            self.batch
                .add(
                    llama_token(t.token),
                    t.pos as i32,
                    &[t.seq as i32],
                    t.wants_output,
                )
                .map_err(|e| {
                    DecodeError::Failed(format!("the batch does not fit the llama_batch ({e})"))
                })?;
        }
        match self.ctx.decode(&mut self.batch) {
            Ok(()) => {
                self.outputs
                    .extend(batch.tokens().iter().map(|t| t.wants_output));
                Ok(())
            }
            Err(llama_cpp_2::DecodeError::NoKvCacheSlot) => Err(DecodeError::KvCacheFull),
            Err(e) => Err(DecodeError::Failed(format!("llama_decode: {e}"))),
        }
    }

    fn sample(
        &mut self,
        sampler: &mut RequestSampler,
        site: SampleSite,
    ) -> Result<TokenId, DecodeError> {
        if !self.has_output(site.row) {
            return Err(DecodeError::Failed(format!(
                "row {} of the last batch kept no logits",
                site.row
            )));
        }
        Ok(sampler.sample_array(self.ctx.token_data_array_ith(site.row as i32), site.index))
    }

    fn logits(&self, row: usize) -> Option<&[f32]> {
        self.has_output(row)
            .then(|| self.ctx.get_logits_ith(row as i32))
    }

    fn hidden_state(&self, row: usize) -> Option<&[f32]> {
        if !self.embeddings || !self.has_output(row) {
            return None;
        }
        self.ctx.embeddings_ith(row as i32).ok()
    }

    fn clear_sequence(&mut self, seq: SeqId) {
        let _ = self.ctx.clear_kv_cache_seq(Some(seq), None, None);
    }

    fn truncate_sequence(&mut self, seq: SeqId, from: u32) -> bool {
        // llama.cpp refuses a partial removal where it cannot do one (recurrent models).
        self.ctx
            .clear_kv_cache_seq(Some(seq), Some(from), None)
            .unwrap_or(false)
    }
}

struct LoadedModel {
    info: ModelInfo,
    engine: Engine<LlamaCppBackend>,
    /// The embeddings thread and context, started by the first embeddings request (see
    /// [`crate::backend::llama_embeddings`]); the lock also serialises its start.
    embedder: Mutex<Option<Embedder>>,
}

impl LoadedModel {
    /// Tokenizes and checks the inputs of an embeddings request, starts the embedder if this is
    /// the first, and queues the job. Blocking (tokenizing, maybe creating a context).
    fn submit_embeddings(
        &self,
        config: &LlamaConfig,
        inputs: Vec<EmbedInput>,
    ) -> Result<(oneshot::Receiver<EmbedReply>, Vec<Vec<u32>>), RuntimeError> {
        let backend = self.engine.backend();
        let n_vocab = backend.model().n_vocab().max(0) as u32;
        let ctx = self.info.context_length;
        let mut ids = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.into_iter().enumerate() {
            let t = match input {
                EmbedInput::Text(text) => backend.tokenize(&text, false),
                EmbedInput::Tokens(t) => {
                    if let Some(bad) = t.iter().find(|&&x| x >= n_vocab) {
                        return Err(RuntimeError::InvalidRequest(format!(
                            "input[{i}] holds token id {bad}, outside the vocabulary of `{}` (0..{n_vocab})",
                            self.info.id
                        )));
                    }
                    t
                }
            };
            if t.is_empty() {
                return Err(RuntimeError::InvalidRequest(format!(
                    "input[{i}] has no tokens after tokenization"
                )));
            }
            if t.len() as u64 > u64::from(ctx) {
                return Err(RuntimeError::ContextOverflow {
                    prompt_tokens: t.len().min(u32::MAX as usize) as u32,
                    context_length: ctx,
                });
            }
            ids.push(t);
        }
        let mut slot = self.embedder.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(Embedder::is_dead) {
            *slot = None;
        }
        if slot.is_none() {
            let shape = EmbedderShape {
                context: ctx,
                batch_tokens: config.batch_tokens.min(EMBED_BATCH_TOKENS),
                max_sequences: config.max_sequences,
                threads: config.threads,
                queue_capacity: config.queue_capacity,
            };
            let name = format!("b3iq-embed-{}", self.info.id);
            *slot = Some(Embedder::start(&name, backend.model().clone(), shape)?);
        }
        let rx = slot.as_ref().map(|e| e.submit(ids.clone())).ok_or(RuntimeError::ShuttingDown)??;
        Ok((rx, ids))
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
    counters: Arc<EngineCounters>,
}

impl std::fmt::Debug for LlamaRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaRuntime")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl LlamaRuntime {
    /// A runtime with no model loaded.
    ///
    /// # Errors
    /// [`RuntimeError::Config`] for sizes out of range; [`RuntimeError::Backend`] when
    /// llama.cpp cannot start.
    pub fn new(config: LlamaConfig) -> Result<Self, RuntimeError> {
        if config.max_sequences == 0 || config.max_sequences > 64 {
            return Err(RuntimeError::Config(format!(
                "max_sequences must be in 1..=64, got {}",
                config.max_sequences
            )));
        }
        if config.threads == 0
            || config.batch_tokens < config.max_sequences.max(8)
            || config.context_per_sequence < 64
        {
            return Err(RuntimeError::Config(
                "threads must be >= 1, batch_tokens >= max(8, max_sequences) and context_per_sequence >= 64".into(),
            ));
        }
        if let Some(cells) = config.kv_cells {
            if !config.kv_unified {
                return Err(RuntimeError::Config(
                    "kv_cells sizes the shared KV buffer: turn kv_unified on with it (with one KV buffer per sequence the cache holds max_sequences × context_per_sequence cells)".into(),
                ));
            }
            if cells < config.context_per_sequence {
                return Err(RuntimeError::Config(format!(
                    "kv_cells ({cells}) must be at least context_per_sequence ({}), so one sequence can use its whole context",
                    config.context_per_sequence
                )));
            }
        }
        backend()?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                models: Mutex::new(HashMap::new()),
                counters: Arc::new(EngineCounters::default()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.inner.config
    }

    /// Loads a model without an async runtime (blocks the calling thread).
    ///
    /// # Errors
    /// As [`Runtime::load_model`].
    pub fn load_model_blocking(&self, spec: LoadModelSpec) -> Result<ModelInfo, RuntimeError> {
        self.inner.load_blocking(spec)
    }

    /// The llama.cpp model behind a loaded id (for benchmarks and embedders that need the raw
    /// model, e.g. to tokenize).
    ///
    /// # Errors
    /// [`RuntimeError::ModelNotFound`].
    pub fn llama_model(&self, id: &str) -> Result<Arc<LlamaModel>, RuntimeError> {
        Ok(self.inner.get(id)?.engine.backend().model().clone())
    }

    /// The token ids of a prompt for a loaded model, as generation feeds them (what
    /// [`TokenIds::prompt`] holds).
    ///
    /// # Errors
    /// [`RuntimeError::ModelNotFound`]; template errors as in `generate`.
    pub fn tokenize(&self, model: &str, prompt: &Prompt) -> Result<Vec<u32>, RuntimeError> {
        self.inner
            .get(model)?
            .engine
            .backend()
            .tokenize_prompt(prompt)
    }

    /// The text of token ids for a loaded model, joined as generation delivers it (bytes across
    /// tokens, invalid UTF-8 as U+FFFD, special tokens as nothing).
    ///
    /// # Errors
    /// [`RuntimeError::ModelNotFound`]; [`RuntimeError::InvalidRequest`] for an id outside the
    /// vocabulary.
    pub fn detokenize(&self, model: &str, tokens: &[u32]) -> Result<String, RuntimeError> {
        let loaded = self.inner.get(model)?;
        let backend = loaded.engine.backend();
        let n_vocab = backend.model().n_vocab().max(0) as u32;
        if let Some(bad) = tokens.iter().find(|&&t| t >= n_vocab) {
            return Err(RuntimeError::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of `{model}` ({n_vocab} tokens)"
            )));
        }
        Ok(backend.detokenize(tokens))
    }
}

impl Inner {
    fn get(&self, id: &str) -> Result<Arc<LoadedModel>, RuntimeError> {
        self.models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::ModelNotFound {
                model: id.to_string(),
            })
    }

    fn load_blocking(&self, spec: LoadModelSpec) -> Result<ModelInfo, RuntimeError> {
        let path = spec.path.clone();
        let id = match &spec.id {
            Some(id) => id.clone(),
            None => path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    RuntimeError::InvalidRequest(format!(
                        "cannot derive a model id from {}",
                        path.display()
                    ))
                })?,
        };
        if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()) {
            return Err(RuntimeError::InvalidRequest(
                "model id must be 1..=128 printable characters".into(),
            ));
        }
        if self
            .models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
        {
            return Err(RuntimeError::InvalidRequest(format!(
                "model `{id}` is already loaded; unload it first"
            )));
        }
        let gguf = GgufInfo::read_path(&path).map_err(|e| match e {
            crate::gguf::GgufError::Io(m) => RuntimeError::ModelLoad {
                path: path.clone(),
                reason: m,
            },
            other => RuntimeError::InvalidGguf(other),
        })?;
        let (sha256, size) = sha256_file(&path)?;
        if let Some(exp) = &spec.expected_sha256 {
            let exp = parse_sha256(exp)?;
            if exp != sha256 {
                return Err(RuntimeError::DigestMismatch {
                    what: path.display().to_string(),
                    expected: exp,
                    actual: sha256,
                });
            }
        }
        let model = Arc::new(load_llama_model(&path, self.config.gpu_layers)?);
        let train_ctx = model.n_ctx_train();
        let mut ctx_per_seq = spec
            .context_length
            .unwrap_or(self.config.context_per_sequence);
        if train_ctx > 0 {
            ctx_per_seq = ctx_per_seq.min(train_ctx);
        }
        ctx_per_seq = ctx_per_seq.max(64);
        if let Some(cells) = self.config.kv_cells {
            // One sequence can never hold more than the whole shared buffer.
            ctx_per_seq = ctx_per_seq.min(cells);
        }
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
            embedding_length: model.n_embd_out().max(0) as u32,
        };
        let backend = Arc::new(
            LlamaCppBackend::new(model, self.config.threads, self.config.kv_unified)
                .with_kv_cells(self.config.kv_cells)
                .with_fingerprints(self.config.fingerprints),
        );
        let config = EngineConfig {
            shape: DecoderShape {
                max_sequences: self.config.max_sequences,
                context_per_sequence: ctx_per_seq,
                batch_tokens: self.config.batch_tokens,
            },
            queue_capacity: self.config.queue_capacity,
            prompt_cache: self.config.prompt_cache,
        };
        let engine = Engine::start(
            &format!("b3iq-llama-{id}"),
            backend,
            config,
            self.counters.clone(),
        )?;
        let loaded = Arc::new(LoadedModel {
            info: info.clone(),
            engine,
            embedder: Mutex::new(None),
        });
        self.models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, loaded);
        Ok(info)
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
            .ok_or_else(|| RuntimeError::ModelNotFound {
                model: id.to_string(),
            })?;
        loaded.engine.stop();
        // The engine thread is joined when the last reference goes (off the async threads).
        let _ = tokio::task::spawn_blocking(move || drop(loaded)).await;
        Ok(())
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, RuntimeError> {
        let mut v: Vec<ModelInfo> = self
            .inner
            .models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|m| m.info.clone())
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    async fn generate(&self, request: GenerateRequest) -> Result<GenerationStream, RuntimeError> {
        request.validate()?;
        self.inner.get(&request.model)?.engine.submit(&request)
    }

    async fn count_tokens(&self, model: &str, prompt: &Prompt) -> Result<u32, RuntimeError> {
        self.inner.get(model)?.engine.count_tokens(prompt)
    }

    async fn embed(&self, request: EmbedRequest) -> Result<Embeddings, RuntimeError> {
        request.validate()?;
        let t0 = Instant::now();
        let loaded = self.inner.get(&request.model)?;
        let config = self.inner.config.clone();
        let (rx, token_ids) =
            tokio::task::spawn_blocking(move || loaded.submit_embeddings(&config, request.inputs))
                .await
                .map_err(|e| RuntimeError::Backend(format!("embeddings task panicked: {e}")))??;
        let vectors = rx
            .await
            .map_err(|_| RuntimeError::Backend("the embeddings thread stopped".into()))??;
        let prompt_tokens = token_ids.iter().map(Vec::len).sum::<usize>().min(u32::MAX as usize) as u32;
        Ok(Embeddings {
            vectors,
            token_ids,
            prompt_tokens,
            elapsed_us: t0.elapsed().as_micros() as u64,
        })
    }

    async fn health(&self) -> Health {
        let n = self
            .inner
            .models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len() as u32;
        let m = self.metrics();
        let (status, message) = if self.inner.counters.engine_dead() {
            (
                HealthStatus::Down,
                "an engine thread stopped after a llama.cpp error; reload the model".to_string(),
            )
        } else if m.queue_depth >= m.queue_capacity && m.queue_capacity > 0 {
            (
                HealthStatus::Degraded,
                format!("request queue is full ({} waiting)", m.queue_depth),
            )
        } else {
            (HealthStatus::Ok, String::new())
        };
        Health {
            status,
            backend: BackendKind::LlamaCpp,
            models_loaded: n,
            message,
        }
    }

    fn metrics(&self) -> RuntimeMetrics {
        let n_models = self
            .inner
            .models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
            .max(1) as u32;
        let cfg = &self.inner.config;
        self.inner
            .counters
            .metrics(cfg.queue_capacity * n_models, cfg.max_sequences * n_models)
    }
}

/// Resolves the path of a model file for tests and examples: `$B3IQ_TEST_MODEL`, else the
/// output of `scripts/fetch-model` (which fetches and verifies the default model).
pub fn default_model_path() -> Result<PathBuf, RuntimeError> {
    crate::store::default_model_path()
}
