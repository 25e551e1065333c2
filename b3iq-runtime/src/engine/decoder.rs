//! The seam between the engine and a backend: [`Backend`] (the model's text side and the
//! factories, shared by callers and the engine thread) and [`Decoder`] (the compute side, one
//! per engine thread).
//!
//! The engine never sees a backend's own types: it hands a [`DecodeBatch`] of
//! `(token, position, sequence, wants output)` entries to [`Decoder::decode`], asks
//! [`Decoder::sample`] for one token per output row, and clears a finished sequence's KV cells
//! with [`Decoder::clear_sequence`]. Everything backend-specific (llama.cpp's `llama_batch`, a
//! wgpu command encoder, how logits are read) stays behind these two traits.

use crate::error::RuntimeError;
use crate::runtime::{ChatMessage, Prompt, ResponseFormat, SamplingParams};

/// A token id in the model's vocabulary (what receipts commit to, see [`crate::TokenIds`]).
pub type TokenId = u32;

/// A sequence slot, `0..max_sequences`. It is also the sequence's KV stream id: slot `n` always
/// uses KV stream `n`, and the engine hands out the lowest free slot first.
pub type SeqId = u32;

/// The size of a decoder's context, fixed when the engine starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderShape {
    /// Most sequences decoded together (parallel slots).
    pub max_sequences: u32,
    /// KV cells per sequence, in tokens: a sequence's prompt plus everything it generates.
    pub context_per_sequence: u32,
    /// Most tokens in one [`DecodeBatch`].
    pub batch_tokens: u32,
}

/// One entry of a [`DecodeBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchToken {
    /// The token to feed.
    pub token: TokenId,
    /// Its position in its sequence (0 = first prompt token).
    pub pos: u32,
    /// The sequence (and KV stream) it belongs to.
    pub seq: SeqId,
    /// Whether the decoder must keep this entry's output (logits, hidden state) for sampling.
    pub wants_output: bool,
}

/// The tokens of one engine step, laid out in slot order (generating sequences' single tokens
/// and prompt chunks of joining ones). An entry's *row* is its index in the batch; the rows of
/// entries with `wants_output` are what [`Decoder::sample`] and [`Decoder::logits`] take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeBatch {
    tokens: Vec<BatchToken>,
    capacity: usize,
}

impl DecodeBatch {
    /// An empty batch holding at most `capacity` tokens.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            tokens: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// Empties the batch (keeps its allocation).
    pub fn clear(&mut self) {
        self.tokens.clear();
    }

    /// Appends a token; returns its row, or `None` when the batch is full.
    pub fn push(&mut self, token: BatchToken) -> Option<usize> {
        if self.tokens.len() >= self.capacity {
            return None;
        }
        self.tokens.push(token);
        Some(self.tokens.len() - 1)
    }

    /// The entries, row by row.
    pub fn tokens(&self) -> &[BatchToken] {
        &self.tokens
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Most entries it may hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Where a sampled token lands: what a position-addressed sampling stage (a verifiable final
/// draw `u_t = H(seed_key, t)`) and verification hooks (the hidden state at a generated
/// position) need to know, without the engine knowing about either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleSite {
    /// The sequence.
    pub seq: SeqId,
    /// The output row in the batch just decoded.
    pub row: usize,
    /// The position the sampled token will take in its sequence (prompt length + `index`).
    pub position: u32,
    /// How many tokens this sequence generated before this one (0 for the first).
    pub index: u32,
}

/// Why a decode step failed. The engine reacts to each kind differently (see
/// `docs/runtime.md`, "Engine").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The KV cache has no room for this batch (llama.cpp `llama_decode` returning 1). Nothing
    /// of the batch was kept, so the engine can retry after making room.
    #[error("the KV cache has no room for this batch")]
    KvCacheFull,
    /// The backend failed; the message says how.
    #[error("{0}")]
    Failed(String),
}

/// A model as the engine sees it: text handling and the factories for per-request samplers and
/// the per-engine decoder. Shared between the callers' threads (tokenizing, building samplers,
/// so bad requests fail in `generate`) and the engine thread (pieces, end of generation).
pub trait Backend: Send + Sync + 'static {
    /// A request's sampling state (for llama.cpp, its sampler chain with its own RNG), built on
    /// the caller's thread and moved to the engine thread.
    type Sampler: Send + 'static;

    /// The compute side, created on the engine thread by [`Backend::new_decoder`] and used only
    /// there; it may borrow the backend (llama.cpp's context borrows its model).
    type Decoder<'a>: Decoder<Sampler = Self::Sampler>
    where
        Self: 'a;

    /// The prompt text of a chat after the model's chat template, with an assistant turn opened.
    ///
    /// # Errors
    /// [`RuntimeError::InvalidRequest`] for content the template cannot take,
    /// [`RuntimeError::Unsupported`] for a template the backend does not know.
    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String, RuntimeError>;

    /// Tokenizes text, adding the model's BOS token when it wants one. `parse_special` reads
    /// special tokens written as text (chat templates write them); raw prompts keep it off.
    fn tokenize(&self, text: &str, parse_special: bool) -> Vec<TokenId>;

    /// Appends the bytes of one token's text to `out` (special tokens render as nothing). A
    /// token may end inside a UTF-8 character; the engine joins bytes across tokens.
    fn token_piece(&self, token: TokenId, out: &mut Vec<u8>);

    /// Whether the token ends generation (EOS, EOT, ...). It is neither delivered nor counted.
    fn is_end_of_generation(&self, token: TokenId) -> bool;

    /// Builds the sampling state of one request.
    ///
    /// # Errors
    /// [`RuntimeError::InvalidRequest`] for a schema or grammar that cannot be compiled.
    fn new_sampler(
        &self,
        sampling: &SamplingParams,
        format: &ResponseFormat,
    ) -> Result<Self::Sampler, RuntimeError>;

    /// Creates the decoder (KV cache for `shape.max_sequences` streams of
    /// `shape.context_per_sequence` cells each). Called on the engine thread.
    ///
    /// # Errors
    /// [`RuntimeError::Backend`] when the context cannot be created (usually: not enough memory).
    fn new_decoder(&self, shape: DecoderShape) -> Result<Self::Decoder<'_>, RuntimeError>;

    /// The tokens of a prompt: a chat goes through [`Backend::chat_prompt`] and is tokenized
    /// with special tokens parsed; raw text is tokenized as is.
    ///
    /// # Errors
    /// As [`Backend::chat_prompt`].
    fn tokenize_prompt(&self, prompt: &Prompt) -> Result<Vec<TokenId>, RuntimeError> {
        Ok(match prompt {
            Prompt::Text(t) => self.tokenize(t, false),
            Prompt::Chat(m) => self.tokenize(&self.chat_prompt(m)?, true),
        })
    }

    /// The text of a token sequence, as the engine delivers it (bytes joined, invalid UTF-8 as
    /// U+FFFD): detokenizing a request's completion ids gives its delivered text.
    fn detokenize(&self, tokens: &[TokenId]) -> String {
        let mut bytes = Vec::new();
        for &t in tokens {
            self.token_piece(t, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// The compute side of a backend: one per engine thread, never shared.
pub trait Decoder {
    /// The per-request sampling state ([`Backend::Sampler`]).
    type Sampler;

    /// Runs the model over a batch. Entries with `wants_output` keep their output (logits and,
    /// where the backend has them, hidden states) until the next call.
    ///
    /// # Errors
    /// [`DecodeError::KvCacheFull`] when a sequence's KV stream has no room (nothing of the batch
    /// was kept), [`DecodeError::Failed`] for anything else.
    fn decode(&mut self, batch: &DecodeBatch) -> Result<(), DecodeError>;

    /// Picks the next token of one sequence from the output at `site.row` of the last decode,
    /// with the request's sampling state, and records it in that state's history (penalties,
    /// grammar). A verifiable final draw plugs in here, keyed by `site.position`.
    ///
    /// # Errors
    /// [`DecodeError::Failed`] when the row has no output.
    fn sample(
        &mut self,
        sampler: &mut Self::Sampler,
        site: SampleSite,
    ) -> Result<TokenId, DecodeError>;

    /// The logits (one per vocabulary entry) at an output row of the last decode; `None` for a
    /// row that asked for no output.
    fn logits(&self, row: usize) -> Option<&[f32]>;

    /// The final-norm hidden state at an output row of the last decode, for verification
    /// commitments; `None` when the backend does not keep hidden states (the default, and
    /// llama.cpp unless its context was created with embeddings on).
    fn hidden_state(&self, row: usize) -> Option<&[f32]> {
        let _ = row;
        None
    }

    /// Frees every KV cell of a sequence (it finished or was cancelled); its slot is reused.
    fn clear_sequence(&mut self, seq: SeqId);

    /// Frees the KV cells of `seq` at positions `from` and after, keeping positions
    /// `0..from` (llama.cpp `llama_memory_seq_rm(seq, from, -1)`): the prompt cache keeps a
    /// finished request's cells and the next request in that slot reads only the part of its
    /// prompt after the shared prefix. Returns `false` when the backend cannot cut a sequence
    /// (the engine then clears it whole and reads the prompt from the start); the default
    /// cannot, which turns the prompt cache off for that backend.
    fn truncate_sequence(&mut self, seq: SeqId, from: u32) -> bool {
        let _ = (seq, from);
        false
    }
}
