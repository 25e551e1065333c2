//! The backend-neutral engine: request queue, admission, slots, continuous batching,
//! cancellation, the sampler stage and the text stage, over any [`Backend`].
//!
//! One [`Engine`] per loaded model owns one thread, which owns the backend's [`Decoder`].
//! Requests are validated, tokenized and given their sampler on the caller's thread
//! ([`Engine::submit`]), then handed over through a bounded queue: a full queue is
//! [`RuntimeError::QueueFull`] at once. The engine takes a request from the queue only when it
//! has a free slot, so the queue *is* the waiting line.
//!
//! Each step ([`scheduler`]): drop cancelled sequences; build one [`DecodeBatch`] in slot order
//! holding the last token of every generating sequence plus prompt chunks of joining ones; one
//! [`Decoder::decode`]; the sampler stage (one [`Decoder::sample`] per output row, and the
//! row's token log probabilities when the request asks, see [`logprobs`]); the text
//! stage (UTF-8-safe deltas, stop sequences, limits, see [`text`]); finished sequences leave
//! and their KV cells are cleared, or kept for the prompt cache. Free slots are handed out
//! lowest first (unless a slot's cached tokens share a prefix with the new prompt), so active
//! slots stay contiguous and ascending: with one KV stream per sequence llama.cpp cuts a batch
//! into ubatches of consecutive, ascending sequence ids, and an out-of-order batch costs
//! several graph computations.
//!
//! A full KV cache ([`DecodeError::KvCacheFull`]) is answered by dropping cached prompts, then
//! retrying with fewer prompt tokens, then ending the sequence holding the most cells with
//! [`RuntimeError::KvCacheFull`]; the others are untouched (see `docs/runtime.md`).

pub mod decoder;
pub mod logprobs;
mod scheduler;
pub mod text;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self as std_mpsc, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc;

pub use decoder::{
    Backend, BatchToken, DecodeBatch, DecodeError, Decoder, DecoderShape, SampleSite, SeqId,
    TokenId,
};
pub use text::{take_utf8, StopMatcher, TextStage, TextStep};

use crate::error::RuntimeError;
use crate::runtime::{GenerateRequest, GenerationEvent, GenerationStream, Prompt, RuntimeMetrics};

/// How an [`Engine`] is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// The decoder's context.
    pub shape: DecoderShape,
    /// Most requests waiting for a slot before [`RuntimeError::QueueFull`].
    pub queue_capacity: u32,
    /// Keep each slot's KV cells when its request ends and reuse the longest cached prefix
    /// of a new prompt (the prompt cache; needs [`Decoder::truncate_sequence`]).
    pub prompt_cache: bool,
}

/// Counters shared by the engines of one runtime (for `/metrics` and health).
#[derive(Debug, Default)]
pub struct EngineCounters {
    queue_depth: AtomicU32,
    active: AtomicU32,
    requests_total: AtomicU64,
    rejected_total: AtomicU64,
    prompt_tokens_total: AtomicU64,
    generated_tokens_total: AtomicU64,
    decode_steps_total: AtomicU64,
    prompt_tokens_cached_total: AtomicU64,
    kv_cache_full_retries_total: AtomicU64,
    kv_cache_full_evictions_total: AtomicU64,
    /// Exponential moving average of request duration, ms.
    avg_request_ms: AtomicU64,
    engine_dead: AtomicBool,
}

impl EngineCounters {
    /// A snapshot, with the capacities of the runtime (queue and sequences over all models).
    pub fn metrics(&self, queue_capacity: u32, max_sequences: u32) -> RuntimeMetrics {
        RuntimeMetrics {
            queue_depth: self.queue_depth.load(Ordering::Relaxed),
            queue_capacity,
            active_sequences: self.active.load(Ordering::Relaxed),
            max_sequences,
            requests_total: self.requests_total.load(Ordering::Relaxed),
            requests_rejected_total: self.rejected_total.load(Ordering::Relaxed),
            prompt_tokens_total: self.prompt_tokens_total.load(Ordering::Relaxed),
            generated_tokens_total: self.generated_tokens_total.load(Ordering::Relaxed),
            decode_steps_total: self.decode_steps_total.load(Ordering::Relaxed),
            prompt_tokens_cached_total: self.prompt_tokens_cached_total.load(Ordering::Relaxed),
            kv_cache_full_retries_total: self.kv_cache_full_retries_total.load(Ordering::Relaxed),
            kv_cache_full_evictions_total: self
                .kv_cache_full_evictions_total
                .load(Ordering::Relaxed),
        }
    }

    /// Whether an engine thread stopped on its own (the model must be reloaded).
    pub fn engine_dead(&self) -> bool {
        self.engine_dead.load(Ordering::Acquire)
    }
}

type EventTx = mpsc::UnboundedSender<Result<GenerationEvent, RuntimeError>>;

/// A request on its way to the engine thread.
struct Job<S> {
    tokens: Vec<TokenId>,
    sampler: S,
    max_tokens: u32,
    stop: Vec<String>,
    /// Alternatives per token to report with log probabilities; `None`: no log probabilities.
    logprobs: Option<u8>,
    tx: EventTx,
    cancel: Arc<AtomicBool>,
    submitted: Instant,
}

/// One model's engine: its thread, its queue and its backend. Dropping it stops the thread
/// (running and waiting requests end with [`RuntimeError::Cancelled`]) and joins it.
pub struct Engine<B: Backend> {
    backend: Arc<B>,
    config: EngineConfig,
    counters: Arc<EngineCounters>,
    queue: SyncSender<Job<B::Sampler>>,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl<B: Backend> std::fmt::Debug for Engine<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Engine<B> {
    /// Starts the engine thread (named `name`), which creates the decoder, and waits until it
    /// is ready.
    ///
    /// # Errors
    /// [`RuntimeError::Config`] for a shape the engine cannot run (no slots, a batch smaller
    /// than the slots); the decoder's own error when it cannot be created;
    /// [`RuntimeError::Backend`] when the thread cannot start.
    pub fn start(
        name: &str,
        backend: Arc<B>,
        config: EngineConfig,
        counters: Arc<EngineCounters>,
    ) -> Result<Self, RuntimeError> {
        let shape = config.shape;
        if shape.max_sequences == 0
            || shape.batch_tokens < shape.max_sequences
            || shape.context_per_sequence < 2
        {
            return Err(RuntimeError::Config(format!(
                "an engine needs max_sequences >= 1, batch_tokens >= max_sequences and context_per_sequence >= 2; got {shape:?}"
            )));
        }
        let (qtx, qrx) = std_mpsc::sync_channel::<Job<B::Sampler>>(config.queue_capacity as usize);
        let shutdown = Arc::new(AtomicBool::new(false));
        let thread = {
            let backend = backend.clone();
            let counters = counters.clone();
            let shutdown = shutdown.clone();
            spawn_when_ready(name, "engine", move |ready_tx| {
                scheduler::run(&*backend, config, counters, shutdown, qrx, ready_tx)
            })?
        };
        Ok(Self {
            backend,
            config,
            counters,
            queue: qtx,
            shutdown,
            thread: Some(thread),
        })
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// The configuration.
    pub fn config(&self) -> EngineConfig {
        self.config
    }

    /// Asks the engine thread to stop at its next step (without waiting for it).
    pub fn stop(&self) {
        self.shutdown.store(true, Ordering::Release);
    }

    /// Tokens of a prompt, as [`Engine::submit`] counts them.
    ///
    /// # Errors
    /// As [`Backend::tokenize_prompt`].
    pub fn count_tokens(&self, prompt: &Prompt) -> Result<u32, RuntimeError> {
        Ok(self.backend.tokenize_prompt(prompt)?.len() as u32)
    }

    /// Queues a request. Validates it, tokenizes the prompt, caps `max_tokens` to the room left
    /// in the sequence's context and builds its sampler here, so those errors come back at once.
    ///
    /// # Errors
    /// [`RuntimeError::InvalidRequest`] (bad parameters, empty prompt, bad schema),
    /// [`RuntimeError::ContextOverflow`] (the prompt fills the context),
    /// [`RuntimeError::QueueFull`] (retry after the suggested delay),
    /// [`RuntimeError::ShuttingDown`] (the engine stopped).
    pub fn submit(&self, request: &GenerateRequest) -> Result<GenerationStream, RuntimeError> {
        request.validate()?;
        let tokens = self.backend.tokenize_prompt(&request.prompt)?;
        if tokens.is_empty() {
            return Err(RuntimeError::InvalidRequest(
                "the prompt is empty after tokenization".into(),
            ));
        }
        let n_prompt = tokens.len() as u32;
        let ctx = self.config.shape.context_per_sequence;
        if n_prompt >= ctx {
            return Err(RuntimeError::ContextOverflow {
                prompt_tokens: n_prompt,
                context_length: ctx,
            });
        }
        let room = ctx - n_prompt;
        let max_tokens = request.max_tokens.map_or(room, |m| m.min(room));
        let sampler = self
            .backend
            .new_sampler(&request.sampling, &request.response_format)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job {
            tokens,
            sampler,
            max_tokens,
            stop: request.stop.clone(),
            logprobs: request.logprobs,
            tx,
            cancel: cancel.clone(),
            submitted: Instant::now(),
        };
        let c = &self.counters;
        c.queue_depth.fetch_add(1, Ordering::AcqRel);
        match self.queue.try_send(job) {
            Ok(()) => Ok(GenerationStream::new(rx, cancel, n_prompt)),
            Err(TrySendError::Full(_)) => {
                c.queue_depth.fetch_sub(1, Ordering::AcqRel);
                c.rejected_total.fetch_add(1, Ordering::Relaxed);
                Err(RuntimeError::QueueFull {
                    retry_after_ms: self.retry_after_ms(),
                })
            }
            Err(TrySendError::Disconnected(_)) => {
                c.queue_depth.fetch_sub(1, Ordering::AcqRel);
                Err(RuntimeError::ShuttingDown)
            }
        }
    }

    /// A retry delay for a refused request: the average request time times the waiting line
    /// over the slots, between 100 ms and 30 s.
    fn retry_after_ms(&self) -> u64 {
        let avg = self
            .counters
            .avg_request_ms
            .load(Ordering::Relaxed)
            .max(100);
        let depth = self.counters.queue_depth.load(Ordering::Relaxed) as u64 + 1;
        (avg * depth / u64::from(self.config.shape.max_sequences)).clamp(100, 30_000)
    }
}

impl<B: Backend> Drop for Engine<B> {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a named thread running `run`, which reports on the sender it is given whether it
/// could start (its context made, say), and waits for that report: the thread's handle, or the
/// error it reported (the thread joined). Shared by the engine and the embeddings worker.
///
/// # Errors
/// The thread's own error; [`RuntimeError::Backend`] when the thread cannot be spawned or ends
/// before reporting. `what` names it in those messages ("engine", "embeddings").
pub(crate) fn spawn_when_ready<F>(
    name: &str,
    what: &str,
    run: F,
) -> Result<JoinHandle<()>, RuntimeError>
where
    F: FnOnce(std_mpsc::Sender<Result<(), RuntimeError>>) + Send + 'static,
{
    let (ready_tx, ready_rx) = std_mpsc::channel::<Result<(), RuntimeError>>();
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || run(ready_tx))
        .map_err(|e| RuntimeError::Backend(format!("could not start the {what} thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(RuntimeError::Backend(format!(
                "the {what} thread died while starting"
            )))
        }
    }
}
