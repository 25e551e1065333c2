//! Embeddings on llama.cpp ([`crate::Runtime::embed`] of [`super::llama::LlamaRuntime`]).
//!
//! One [`Embedder`] per loaded model, started by the model's first embeddings request and
//! kept until the model is unloaded: its own thread owning its own llama.cpp context, so an
//! embeddings request never waits for the generation engine's thread nor touches its KV cache.
//! Jobs reach the thread through a bounded queue (full: [`RuntimeError::QueueFull`] at once),
//! one job at a time.
//!
//! The context: embeddings on, pooling none (llama.cpp keeps every token's final hidden
//! state, after the output norm), one KV buffer shared by up to `max_sequences` sequences
//! (`kv_unified`) of `context` cells in all, `n_batch = n_ubatch = batch_tokens`. A job's
//! inputs are packed into rounds, each as many whole inputs (one sequence each) as fit the
//! cells and the sequence count; a round's tokens go through `llama_decode` in batches of
//! `batch_tokens`, several inputs per batch and one input across batches when it is long (its
//! KV cells carry it over). Every token's hidden state is added to its input's sum (f64); at
//! the end of the round each sum is divided by the input's length (mean pooling) and scaled to
//! unit L2 norm, and the cells are cleared.
//!
//! Pooling is done here rather than by llama.cpp's `LLAMA_POOLING_TYPE_MEAN` because llama.cpp
//! pools per ubatch: a sequence split over two ubatches (or two decodes) would be pooled over
//! its last part only, which caps an input at one ubatch. Pooling per token lifts that cap to
//! the context window.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self as std_mpsc, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::oneshot;

use crate::backend::llama::new_llama_context_with;
use crate::error::RuntimeError;

/// Most tokens per `llama_decode` of an embeddings context. Below llama.cpp's
/// `GGML_FA_TILE_Q` (64 query rows), so the CPU flash-attention kernel is the per-row one for
/// every batch, whatever its size: a vector then does not depend on which other inputs share
/// its batch (measured with 128-token batches, the tiled kernel moved a short input's vector by
/// 4e-3 between alone and batched). It also keeps the logits llama.cpp computes for every token
/// of an embeddings batch (`n_vocab` floats each) small.
pub const EMBED_BATCH_TOKENS: u32 = 32;

/// How an [`Embedder`] is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedderShape {
    /// KV cells of the context, all sequences of a round together; also the longest input.
    pub context: u32,
    /// Most tokens per `llama_decode` (`n_batch` and `n_ubatch`).
    pub batch_tokens: u32,
    /// Most inputs (sequences) per round.
    pub max_sequences: u32,
    /// CPU threads for llama.cpp.
    pub threads: u32,
    /// Most jobs waiting before [`RuntimeError::QueueFull`].
    pub queue_capacity: u32,
}

/// A job's answer: one unit vector per input.
pub type EmbedReply = Result<Vec<Vec<f32>>, RuntimeError>;

struct Job {
    inputs: Vec<Vec<u32>>,
    reply: oneshot::Sender<EmbedReply>,
}

/// One model's embeddings thread and its queue (see the module docs). Dropping it stops the
/// thread after the job it is computing (waiting jobs end with [`RuntimeError::Cancelled`])
/// and joins it.
pub struct Embedder {
    queue: Option<SyncSender<Job>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    shape: EmbedderShape,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// Starts the thread (named `name`), which creates the context, and waits until it is
    /// ready.
    ///
    /// # Errors
    /// [`RuntimeError::Config`] for a zero size; [`RuntimeError::Backend`] when llama.cpp cannot
    /// create the context (memory) or the thread cannot start.
    pub fn start(
        name: &str,
        model: Arc<LlamaModel>,
        shape: EmbedderShape,
    ) -> Result<Self, RuntimeError> {
        if shape.context == 0 || shape.batch_tokens == 0 || shape.max_sequences == 0 {
            return Err(RuntimeError::Config(format!(
                "an embeddings context needs cells, a batch and sequences; got {shape:?}"
            )));
        }
        let (qtx, qrx) = std_mpsc::sync_channel::<Job>(shape.queue_capacity.max(1) as usize);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            crate::engine::spawn_when_ready(name, "embeddings", move |ready_tx| {
                run(&model, shape, &stop, &qrx, ready_tx)
            })?
        };
        Ok(Self {
            queue: Some(qtx),
            stop,
            thread: Some(thread),
            shape,
        })
    }

    /// The shape it was started with.
    pub fn shape(&self) -> EmbedderShape {
        self.shape
    }

    /// Whether its thread has ended (only a panic ends it while the embedder lives): the owner
    /// then starts a new one rather than answering `ShuttingDown` until the model is reloaded.
    pub fn is_dead(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Queues a job: `inputs` are token ids, each non-empty, inside the vocabulary and at most
    /// [`EmbedderShape::context`] long (the caller checks; a longer one fails the whole job).
    ///
    /// # Errors
    /// [`RuntimeError::QueueFull`]; [`RuntimeError::ShuttingDown`] when the thread stopped.
    pub fn submit(
        &self,
        inputs: Vec<Vec<u32>>,
    ) -> Result<oneshot::Receiver<EmbedReply>, RuntimeError> {
        let (tx, rx) = oneshot::channel();
        let queue = self.queue.as_ref().ok_or(RuntimeError::ShuttingDown)?;
        match queue.try_send(Job { inputs, reply: tx }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(RuntimeError::QueueFull {
                retry_after_ms: 1000,
            }),
            Err(TrySendError::Disconnected(_)) => Err(RuntimeError::ShuttingDown),
        }
    }
}

impl Drop for Embedder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.queue.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    model: &LlamaModel,
    shape: EmbedderShape,
    stop: &AtomicBool,
    jobs: &Receiver<Job>,
    ready: std_mpsc::Sender<Result<(), RuntimeError>>,
) {
    let n_seq = shape.max_sequences;
    let mut ctx = match new_llama_context_with(
        model,
        n_seq,
        shape.context.div_ceil(n_seq),
        shape.batch_tokens,
        shape.threads,
        true,
        true,
    ) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut batch = LlamaBatch::new(shape.batch_tokens as usize, 1);
    let _ = ready.send(Ok(()));
    drop(ready);
    let cells = (ctx.n_ctx() as usize).max(shape.context as usize);
    while let Ok(job) = jobs.recv() {
        if stop.load(Ordering::Acquire) {
            let _ = job.reply.send(Err(RuntimeError::Cancelled));
            continue;
        }
        if job.reply.is_closed() {
            continue; // the caller went away while it waited
        }
        let out = embed_job(&mut ctx, &mut batch, cells, &shape, &job.inputs);
        let _ = job.reply.send(out);
    }
}

/// Every input of a job, in rounds of whole inputs (see the module docs).
fn embed_job(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    cells: usize,
    shape: &EmbedderShape,
    inputs: &[Vec<u32>],
) -> EmbedReply {
    let per_batch = shape.batch_tokens as usize;
    let mut out = Vec::with_capacity(inputs.len());
    let mut start = 0;
    while start < inputs.len() {
        let (mut end, mut used) = (start, 0usize);
        while end < inputs.len()
            && end - start < shape.max_sequences as usize
            && used + inputs[end].len() <= cells
        {
            used += inputs[end].len();
            end += 1;
        }
        if end == start {
            return Err(RuntimeError::ContextOverflow {
                prompt_tokens: inputs[start].len() as u32,
                context_length: cells as u32,
            });
        }
        let round = &inputs[start..end];
        ctx.clear_kv_cache();
        let mut sums: Vec<Vec<f64>> = vec![Vec::new(); round.len()];
        let mut rows: Vec<usize> = Vec::with_capacity(per_batch);
        batch.clear();
        for (seq, tokens) in round.iter().enumerate() {
            for (pos, &t) in tokens.iter().enumerate() {
                if rows.len() == per_batch {
                    decode_and_sum(ctx, batch, &rows, &mut sums)?;
                    batch.clear();
                    rows.clear();
                }
                batch
                    .add(LlamaToken::new(t as i32), pos as i32, &[seq as i32], true)
                    .map_err(|e| RuntimeError::Backend(format!("embeddings batch: {e}")))?;
                rows.push(seq);
            }
        }
        if !rows.is_empty() {
            decode_and_sum(ctx, batch, &rows, &mut sums)?;
        }
        for (sum, tokens) in sums.iter().zip(round) {
            out.push(mean_unit_vector(sum, tokens.len()));
        }
        start = end;
    }
    ctx.clear_kv_cache();
    Ok(out)
}

/// One `llama_decode`, then each row's hidden state added to its sequence's sum (`rows[i]` is
/// the sequence of batch row `i`).
fn decode_and_sum(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    rows: &[usize],
    sums: &mut [Vec<f64>],
) -> Result<(), RuntimeError> {
    ctx.decode(batch).map_err(|e| match e {
        llama_cpp_2::DecodeError::NoKvCacheSlot => RuntimeError::KvCacheFull,
        e => RuntimeError::Backend(format!("embeddings llama_decode: {e}")),
    })?;
    for (row, &seq) in rows.iter().enumerate() {
        let h = ctx.embeddings_ith(row as i32).map_err(|_| {
            RuntimeError::Backend("the embeddings context kept no hidden state".into())
        })?;
        let sum = &mut sums[seq];
        if sum.is_empty() {
            sum.resize(h.len(), 0.0);
        }
        for (acc, &x) in sum.iter_mut().zip(h) {
            *acc += f64::from(x);
        }
    }
    Ok(())
}

/// The mean of `n` summed vectors (`sum / n`), scaled to unit L2 norm (llama.cpp's
/// `common_embd_normalize` with `embd_normalize = 2`, llama-server's default); a zero vector
/// stays zero.
pub fn mean_unit_vector(sum: &[f64], n: usize) -> Vec<f32> {
    let n = n.max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let norm = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    mean.iter().map(|x| (x * scale) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_unit_vector_is_the_normalised_mean() {
        // Sum of two tokens' states [3, 0] + [1, 4] = [4, 4]: mean [2, 2], unit [0.7071, 0.7071].
        let v = mean_unit_vector(&[4.0, 4.0], 2);
        assert!(
            (v[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7 && (v[1] - v[0]).abs() < 1e-7,
            "{v:?}"
        );
        let v = mean_unit_vector(&[3.0, -4.0], 1);
        assert_eq!(v, vec![0.6, -0.8]);
        assert_eq!(mean_unit_vector(&[0.0, 0.0], 3), vec![0.0, 0.0]);
    }
}
