//! The engine thread: continuous batching over a [`Decoder`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self as std_mpsc, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::decoder::{
    Backend, BatchToken, DecodeBatch, DecodeError, Decoder, SampleSite, SeqId, TokenId,
};
use super::text::TextStage;
use super::{EngineConfig, EngineCounters, Job};
use crate::error::RuntimeError;
use crate::runtime::{
    FinishReason, GenerationEvent, Timings, TokenIds, TokenLogprob, TokenProb, Usage,
};

/// One active sequence.
struct Seq<S> {
    slot: SeqId,
    job: Job<S>,
    /// Prompt tokens already in the KV cache (or in the batch being decoded).
    fed: usize,
    /// Position of the next token fed.
    pos: u32,
    /// The last sampled token, to feed next (after the prompt).
    next: Option<TokenId>,
    /// This sequence's output row in the current batch.
    row: Option<usize>,
    /// Tokens generated and counted (end of generation excluded).
    generated: u32,
    text: TextStage,
    /// Set by the text stage when the sequence is done.
    finished: Option<FinishReason>,
    /// Set by the sampler stage when the sequence failed.
    failed: Option<RuntimeError>,
    /// Hidden states at this sequence's sampled rows (`rows × hidden_dim`), when the decoder
    /// keeps them: committed into fingerprints when it finishes.
    hidden: Vec<f32>,
    hidden_dim: usize,
    /// With log probabilities on: the entry of the token sampled in this step, then (text
    /// stage) one entry per token fed to the text, of which the first `logprobs_sent` went out.
    step_logprob: Option<TokenLogprob>,
    logprobs: Vec<TokenLogprob>,
    logprobs_sent: usize,
    admitted: Instant,
    prompt_done: Option<Instant>,
    first_token: Option<Instant>,
}

impl<S> Seq<S> {
    /// The log-probability entries of tokens whose text is now delivered and not yet sent
    /// (the same tokens [`TextStage::delivered_tokens`] names).
    fn take_delivered_logprobs(&mut self) -> Vec<TokenLogprob> {
        let n = self.text.delivered_tokens().len().min(self.logprobs.len());
        if n <= self.logprobs_sent {
            return Vec::new();
        }
        let out = self.logprobs[self.logprobs_sent..n].to_vec();
        self.logprobs_sent = n;
        out
    }
}

struct Scheduler<'b, B: Backend> {
    backend: &'b B,
    decoder: B::Decoder<'b>,
    counters: Arc<EngineCounters>,
    batch: DecodeBatch,
    /// Free slots, lowest first, so active slots stay contiguous (see the batch layout).
    free: BTreeSet<SeqId>,
    active: Vec<Seq<B::Sampler>>,
    /// Tokens picked by the sampler stage in this step: (index in `active`, token).
    sampled: Vec<(usize, TokenId)>,
    piece: Vec<u8>,
}

/// The engine thread's body: creates the decoder, reports readiness, then runs steps until
/// shutdown or until the queue is closed and every sequence is done.
pub(super) fn run<B: Backend>(
    backend: &B,
    config: EngineConfig,
    counters: Arc<EngineCounters>,
    shutdown: Arc<AtomicBool>,
    rx: std_mpsc::Receiver<Job<B::Sampler>>,
    ready: std_mpsc::Sender<Result<(), RuntimeError>>,
) {
    let decoder = match backend.new_decoder(config.shape) {
        Ok(d) => d,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let n_seq = config.shape.max_sequences;
    let mut s = Scheduler {
        backend,
        decoder,
        counters,
        batch: DecodeBatch::with_capacity(config.shape.batch_tokens as usize),
        free: (0..n_seq).collect(),
        active: Vec::with_capacity(n_seq as usize),
        sampled: Vec::with_capacity(n_seq as usize),
        piece: Vec::with_capacity(32),
    };
    let mut disconnected = false;
    loop {
        if shutdown.load(Ordering::Acquire) {
            for q in s.active.drain(..) {
                let _ = q.job.tx.send(Err(RuntimeError::Cancelled));
            }
            while let Ok(job) = rx.try_recv() {
                s.counters.queue_depth.fetch_sub(1, Ordering::AcqRel);
                let _ = job.tx.send(Err(RuntimeError::Cancelled));
            }
            break;
        }
        s.admit(&rx, &mut disconnected);
        if s.active.is_empty() {
            if disconnected {
                break;
            }
            continue;
        }
        s.set_active();
        s.drop_cancelled();
        if s.active.is_empty() {
            s.set_active();
            continue;
        }
        if !s.build_batch() {
            continue;
        }
        if let Err(e) = s.decoder.decode(&s.batch) {
            s.decode_failed(e);
            s.set_active();
            continue;
        }
        s.counters
            .decode_steps_total
            .fetch_add(1, Ordering::Relaxed);
        s.sample_stage();
        s.text_stage();
        s.retire_finished();
        s.set_active();
    }
    s.counters.active.store(0, Ordering::Relaxed);
}

impl<'b, B: Backend> Scheduler<'b, B> {
    fn set_active(&self) {
        self.counters
            .active
            .store(self.active.len() as u32, Ordering::Relaxed);
    }

    /// Takes waiting requests into free slots (blocking briefly when idle).
    fn admit(&mut self, rx: &std_mpsc::Receiver<Job<B::Sampler>>, disconnected: &mut bool) {
        while !self.free.is_empty() && !*disconnected {
            let job = if self.active.is_empty() {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(j) => j,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        *disconnected = true;
                        break;
                    }
                }
            } else {
                match rx.try_recv() {
                    Ok(j) => j,
                    Err(std_mpsc::TryRecvError::Empty) => break,
                    Err(std_mpsc::TryRecvError::Disconnected) => {
                        *disconnected = true;
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
            let Some(slot) = self.free.pop_first() else {
                break;
            };
            self.active.push(Seq {
                slot,
                text: TextStage::new(job.stop.clone()),
                job,
                fed: 0,
                pos: 0,
                next: None,
                row: None,
                generated: 0,
                finished: None,
                failed: None,
                admitted: Instant::now(),
                prompt_done: None,
                first_token: None,
                hidden: Vec::new(),
                hidden_dim: 0,
                step_logprob: None,
                logprobs: Vec::new(),
                logprobs_sent: 0,
            });
        }
    }

    /// Drops cancelled sequences (stream dropped or `cancel()`) before spending compute on them.
    fn drop_cancelled(&mut self) {
        let mut i = 0;
        while i < self.active.len() {
            let job = &self.active[i].job;
            if job.cancel.load(Ordering::Acquire) || job.tx.is_closed() {
                let s = self.active.swap_remove(i);
                let _ = s.job.tx.send(Err(RuntimeError::Cancelled));
                self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
                self.release(s.slot);
            } else {
                i += 1;
            }
        }
    }

    /// Builds one batch: a token for every generating sequence, then prompt chunks of joining
    /// ones up to the cap, all in slot order. Returns whether there is anything to decode.
    fn build_batch(&mut self) -> bool {
        // With one KV stream per sequence llama.cpp cuts a batch into ubatches of
        // *consecutive, ascending* sequence ids (`split_equal(sequential)`), so the batch is
        // laid out in slot order (and slots are handed out lowest first): out of order, one
        // step became several graph runs.
        self.active.sort_unstable_by_key(|s| s.slot);
        self.batch.clear();
        let cap = self.batch.capacity();
        // Generating sequences first claim their token; prompts share what is left, in slot
        // order. Decode tokens beyond the cap are refused by the batch itself.
        let decoding = self
            .active
            .iter()
            .filter(|s| s.next.is_some())
            .count()
            .min(cap);
        let mut room = cap - decoding;
        for s in self.active.iter_mut() {
            s.row = None;
            if let Some(t) = s.next {
                s.row = self.batch.push(BatchToken {
                    token: t,
                    pos: s.pos,
                    seq: s.slot,
                    wants_output: true,
                });
                continue;
            }
            let take = (s.job.tokens.len() - s.fed).min(room);
            room -= take;
            for j in 0..take {
                let last = s.fed + j + 1 == s.job.tokens.len();
                let row = self.batch.push(BatchToken {
                    token: s.job.tokens[s.fed + j],
                    pos: s.pos + j as u32,
                    seq: s.slot,
                    wants_output: last,
                });
                if last {
                    s.row = row;
                }
            }
            s.fed += take;
            s.pos += take as u32;
        }
        !self.batch.is_empty()
    }

    /// Reacts to a failed decode.
    ///
    /// - [`DecodeError::KvCacheFull`]: nothing of the batch was kept. Sequences that were
    ///   reading their prompt in this batch leave with [`RuntimeError::KvCacheFull`] (retryable;
    ///   their partial prompt is cleared). If there were none, the generating sequence holding
    ///   the most cells ends with `length` (its output so far is whole: the context is full).
    ///   The others keep their state and are decoded again at the next step.
    /// - [`DecodeError::Failed`]: every sequence in the batch fails with
    ///   [`RuntimeError::Backend`].
    fn decode_failed(&mut self, e: DecodeError) {
        match e {
            DecodeError::KvCacheFull => {
                tracing::warn!(active = self.active.len(), "decode: the KV cache is full");
                let mut evicted = false;
                let mut i = 0;
                while i < self.active.len() {
                    // Still reading its prompt, some of it already fed (in this batch or before).
                    if self.active[i].next.is_none() && self.active[i].fed > 0 {
                        let s = self.active.swap_remove(i);
                        let _ = s.job.tx.send(Err(RuntimeError::KvCacheFull));
                        self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
                        self.release(s.slot);
                        evicted = true;
                        continue;
                    }
                    i += 1;
                }
                if !evicted {
                    if let Some(i) = (0..self.active.len()).max_by_key(|&i| self.active[i].pos) {
                        let s = self.active.swap_remove(i);
                        self.release(s.slot);
                        self.finish(s, FinishReason::Length);
                    }
                }
            }
            DecodeError::Failed(m) => {
                tracing::error!("decode failed: {m}");
                for s in std::mem::take(&mut self.active) {
                    let _ = s.job.tx.send(Err(RuntimeError::Backend(format!(
                        "decoding failed ({m}); retry with a shorter prompt or fewer parallel requests"
                    ))));
                    self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
                    self.release(s.slot);
                }
            }
        }
    }

    /// The sampler stage: one token for every sequence with an output row in this batch.
    fn sample_stage(&mut self) {
        self.sampled.clear();
        for (i, s) in self.active.iter_mut().enumerate() {
            let Some(row) = s.row else { continue };
            if s.next.is_some() {
                s.pos += 1;
            } else {
                s.prompt_done = Some(Instant::now());
                self.counters
                    .prompt_tokens_total
                    .fetch_add(s.job.tokens.len() as u64, Ordering::Relaxed);
            }
            if let Some(h) = self.decoder.hidden_state(row) {
                s.hidden_dim = h.len();
                s.hidden.extend_from_slice(h);
            }
            let site = SampleSite {
                seq: s.slot,
                row,
                position: s.pos,
                index: s.generated,
            };
            match self.decoder.sample(&mut s.job.sampler, site) {
                Ok(t) => {
                    // Read-only on the row's raw logits: never changes what was sampled.
                    s.step_logprob = match (s.job.logprobs, self.decoder.logits(row)) {
                        (Some(k), Some(logits)) => {
                            let (lp, top) = super::logprobs::token_logprobs(logits, t, k.into());
                            let prob = |token: TokenId, logprob: f32| {
                                let mut bytes = Vec::new();
                                self.backend.token_piece(token, &mut bytes);
                                TokenProb { token, bytes, logprob }
                            };
                            Some(TokenLogprob {
                                sampled: prob(t, lp),
                                top: top.into_iter().map(|(id, l)| prob(id, l)).collect(),
                            })
                        }
                        _ => None,
                    };
                    self.sampled.push((i, t))
                }
                Err(e) => s.failed = Some(RuntimeError::Backend(format!("sampling failed: {e}"))),
            }
        }
    }

    /// The text stage: end of generation, text deltas, stop sequences, limits.
    fn text_stage(&mut self) {
        let now = Instant::now();
        for k in 0..self.sampled.len() {
            let (i, tok) = self.sampled[k];
            let s = &mut self.active[i];
            s.first_token.get_or_insert(now);
            if self.backend.is_end_of_generation(tok) {
                s.finished = Some(FinishReason::Stop);
                continue;
            }
            s.generated += 1;
            self.counters
                .generated_tokens_total
                .fetch_add(1, Ordering::Relaxed);
            self.piece.clear();
            self.backend.token_piece(tok, &mut self.piece);
            let step = s.text.push(tok, &self.piece);
            if let Some(lp) = s.step_logprob.take() {
                s.logprobs.push(lp);
            }
            let logprobs = if step.delta.is_empty() {
                Vec::new()
            } else {
                s.take_delivered_logprobs()
            };
            if !step.delta.is_empty()
                && s.job
                    .tx
                    .send(Ok(GenerationEvent::Delta {
                        text: step.delta,
                        logprobs,
                    }))
                    .is_err()
            {
                // The consumer went away: the next step drops it through the cancel check.
                s.job.cancel.store(true, Ordering::Release);
            }
            if step.stopped {
                s.finished = Some(FinishReason::Stop);
            } else if s.generated >= s.job.max_tokens {
                s.finished = Some(FinishReason::Length);
            } else {
                s.next = Some(tok);
            }
        }
    }

    /// Ends the sequences the sampler or text stage finished and frees their slots.
    fn retire_finished(&mut self) {
        let mut i = 0;
        while i < self.active.len() {
            let s = &mut self.active[i];
            if let Some(e) = s.failed.take() {
                let _ = s.job.tx.send(Err(e));
                self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
                let s = self.active.swap_remove(i);
                self.release(s.slot);
            } else if let Some(reason) = s.finished {
                let s = self.active.swap_remove(i);
                self.release(s.slot);
                self.finish(s, reason);
            } else {
                i += 1;
            }
        }
    }

    fn release(&mut self, slot: SeqId) {
        self.decoder.clear_sequence(slot);
        self.free.insert(slot);
    }

    /// Sends the held-back text and the final event.
    fn finish(&self, mut s: Seq<B::Sampler>, reason: FinishReason) {
        let end = Instant::now();
        let tail = s.text.finish();
        if !tail.is_empty() {
            let logprobs = s.take_delivered_logprobs();
            let _ = s.job.tx.send(Ok(GenerationEvent::Delta { text: tail, logprobs }));
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
        let completion = s.text.delivered_tokens().to_vec();
        let fingerprints = match s.hidden.len().checked_div(s.hidden_dim) {
            None => Vec::new(),
            Some(kept) => {
                let rows = completion.len().min(kept);
                b3iq_core::fingerprint::commit_positions(
                    &s.hidden[..rows * s.hidden_dim],
                    s.hidden_dim,
                )
                .iter()
                .map(|p| {
                    let mut b = Vec::with_capacity(258);
                    p.encode(&mut b);
                    b
                })
                .collect()
            }
        };
        let token_ids = TokenIds {
            completion,
            prompt: std::mem::take(&mut s.job.tokens),
            fingerprints,
        };
        let _ = s.job.tx.send(Ok(GenerationEvent::Done {
            finish_reason: reason,
            usage,
            timings,
            token_ids: Some(token_ids),
        }));
        self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
        let ms = timings.total_us / 1000;
        let old = self.counters.avg_request_ms.load(Ordering::Relaxed);
        let new = if old == 0 { ms } else { (old * 7 + ms) / 8 };
        self.counters.avg_request_ms.store(new, Ordering::Relaxed);
    }
}
