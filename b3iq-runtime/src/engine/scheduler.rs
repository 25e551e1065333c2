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
    /// Prompt tokens in the KV cache.
    fed: usize,
    /// Prompt tokens the slot's cache already held at admission (not read again).
    cached_prompt: u32,
    /// Position of the next token fed: the KV cells this sequence holds.
    pos: u32,
    /// Tokens of this sequence in the batch being decoded (a prompt chunk, or 1 when
    /// generating); committed to `fed` / `pos` only when the decode succeeds.
    chunk: u32,
    /// Generated tokens in the KV cache (fed back after being sampled), for the prompt cache:
    /// the cells hold `job.tokens` then these.
    fed_generated: Vec<TokenId>,
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
    /// Whether finished requests leave their KV cells for the next request in their slot.
    prompt_cache: bool,
    /// Per slot: the tokens whose KV cells a free slot still holds (empty: none).
    cached: Vec<Vec<TokenId>>,
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
        prompt_cache: config.prompt_cache,
        cached: vec![Vec::new(); n_seq as usize],
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
        if !s.decode_step() {
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
                // Counted before the answer goes out: a client that has its answer sees it counted.
                self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
                let _ = job.tx.send(Err(RuntimeError::Cancelled));
                continue;
            }
            let Some((slot, reused)) = self.take_slot(&job.tokens) else {
                break;
            };
            self.active.push(Seq {
                slot,
                text: TextStage::new(job.stop.clone()),
                job,
                fed: reused as usize,
                cached_prompt: reused,
                pos: reused,
                chunk: 0,
                fed_generated: Vec::new(),
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

    /// Takes a free slot for a prompt; returns it and the prompt tokens whose KV cells it
    /// already holds (the prompt cache), which the sequence does not read again.
    ///
    /// With the cache on: the free slot whose cached tokens share the longest prefix with the
    /// prompt (more than one token); when none does, the lowest slot holding nothing, else the
    /// lowest slot.
    /// The cells after the shared prefix are removed ([`Decoder::truncate_sequence`]), and at
    /// least the last prompt token is always read again, so its output (logits, hidden state)
    /// exists. Off, or when nothing is shared: the lowest free slot, cleared.
    fn take_slot(&mut self, prompt: &[TokenId]) -> Option<(SeqId, u32)> {
        let shared = |cached: &[TokenId]| {
            cached
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count()
        };
        let (slot, prefix) = if self.prompt_cache {
            let best = self
                .free
                .iter()
                .map(|&s| (s, shared(&self.cached[s as usize])))
                .max_by_key(|&(s, n)| (n, std::cmp::Reverse(s)));
            match best {
                // A shared BOS alone saves nothing: keep such a slot's cache for its chat.
                Some((s, n)) if n > 1 => (s, n),
                _ => {
                    let empty = self
                        .free
                        .iter()
                        .copied()
                        .find(|&s| self.cached[s as usize].is_empty());
                    (empty.or_else(|| self.free.first().copied())?, 0)
                }
            }
        } else {
            (self.free.first().copied()?, 0)
        };
        self.free.remove(&slot);
        let cached = std::mem::take(&mut self.cached[slot as usize]);
        let reuse = prefix.min(prompt.len().saturating_sub(1));
        if cached.is_empty() {
            return Some((slot, 0));
        }
        if reuse > 0 && self.decoder.truncate_sequence(slot, reuse as u32) {
            self.counters
                .prompt_tokens_cached_total
                .fetch_add(reuse as u64, Ordering::Relaxed);
            return Some((slot, reuse as u32));
        }
        self.decoder.clear_sequence(slot);
        Some((slot, 0))
    }

    /// Frees the cells a free slot keeps for the prompt cache (the slot caching the most
    /// tokens); returns whether there was one. A full KV cache is answered with this first.
    fn drop_cached_cells(&mut self) -> bool {
        let Some(slot) = self
            .free
            .iter()
            .copied()
            .filter(|&s| !self.cached[s as usize].is_empty())
            .max_by_key(|&s| self.cached[s as usize].len())
        else {
            return false;
        };
        self.cached[slot as usize].clear();
        self.decoder.clear_sequence(slot);
        true
    }

    /// Drops cancelled sequences (stream dropped or `cancel()`) before spending compute on them.
    fn drop_cancelled(&mut self) {
        let mut i = 0;
        while i < self.active.len() {
            let job = &self.active[i].job;
            if job.cancel.load(Ordering::Acquire) || job.tx.is_closed() {
                let s = self.active.swap_remove(i);
                // Counted before the answer goes out: a client that has its answer sees it counted.
                self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
                let _ = s.job.tx.send(Err(RuntimeError::Cancelled));
                self.release(s.slot);
            } else {
                i += 1;
            }
        }
    }

    /// Builds and decodes this step's batch; returns whether a batch was decoded (its outputs
    /// are then ready for the sampler stage).
    ///
    /// A full KV cache ([`DecodeError::KvCacheFull`]: nothing of the batch was kept) is
    /// answered as llama-server answers it, by retrying with a smaller batch, and only then by
    /// ending a sequence:
    ///
    /// 1. While the failed batch held prompt tokens (and was not a single prompt token alone),
    ///    retry with half as many prompt tokens; the token of every generating sequence stays.
    /// 2. A prompt chunk that fails while its sequence is alone in the cache (no decode tokens,
    ///    no other sequence holding cells) can never fit: that sequence ends at once with
    ///    [`RuntimeError::KvCacheFull`], without halving.
    /// 3. When even the smallest batch fails, the sequence holding the most KV cells (the most
    ///    context; on a tie the newest) ends, freeing the most room, and the step retries.
    ///    It ends with [`RuntimeError::KvCacheFull`] (retryable), except a generating sequence
    ///    that is the only one holding cells: the cache is then its own context, full, and it
    ///    ends with `length` like one reaching `context_per_sequence` (its output is whole).
    ///
    /// Every retry halves the prompt tokens or ends a sequence, so the loop stops after at
    /// most `log2(batch_tokens) + 1` halvings per ended sequence. Positions and prompt
    /// progress are committed only after a successful decode, and samplers only run then, so
    /// the sequences that stay produce exactly the tokens they would have produced.
    ///
    /// Any other failure ([`DecodeError::Failed`]) fails every active sequence with
    /// [`RuntimeError::Backend`].
    fn decode_step(&mut self) -> bool {
        let mut prompt_budget = self.batch.capacity();
        loop {
            let prompt_tokens = self.build_batch(prompt_budget);
            if self.batch.is_empty() {
                return false;
            }
            match self.decoder.decode(&self.batch) {
                Ok(()) => {
                    self.commit_batch();
                    return true;
                }
                Err(DecodeError::KvCacheFull) => {
                    self.counters
                        .kv_cache_full_retries_total
                        .fetch_add(1, Ordering::Relaxed);
                    if self.drop_cached_cells() {
                        tracing::debug!("decode: the KV cache is full; dropped a cached prompt");
                        continue;
                    }
                    let decode_tokens = self.batch.len() - prompt_tokens;
                    if let Some(i) = self.prompt_that_cannot_fit(decode_tokens) {
                        tracing::warn!(
                            prompt_tokens = self.active[i].job.tokens.len(),
                            cells = self.active[i].pos,
                            "decode: a prompt does not fit the KV cache even alone"
                        );
                        let s = self.active.swap_remove(i);
                        self.end_for_room(s, false);
                        continue;
                    }
                    if prompt_tokens > 1 || (prompt_tokens == 1 && decode_tokens > 0) {
                        prompt_budget = prompt_tokens / 2;
                        tracing::debug!(
                            prompt_budget,
                            decode_tokens,
                            "decode: the KV cache is full; retrying with fewer prompt tokens"
                        );
                        continue;
                    }
                    let Some(i) = (0..self.active.len())
                        .max_by_key(|&i| (self.active[i].pos, self.active[i].admitted))
                    else {
                        return false;
                    };
                    let alone = self
                        .active
                        .iter()
                        .enumerate()
                        .all(|(j, s)| j == i || s.pos == 0);
                    tracing::warn!(
                        active = self.active.len(),
                        cells = self.active[i].pos,
                        alone,
                        "decode: the KV cache is full even for the smallest batch; ending the sequence holding the most cells"
                    );
                    let s = self.active.swap_remove(i);
                    self.end_for_room(s, alone);
                }
                Err(DecodeError::Failed(m)) => {
                    tracing::error!("decode failed: {m}");
                    for s in std::mem::take(&mut self.active) {
                        let _ = s.job.tx.send(Err(RuntimeError::Backend(format!(
                            "decoding failed ({m}); retry with a shorter prompt or fewer parallel requests"
                        ))));
                        self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
                        self.release(s.slot);
                    }
                    return false;
                }
            }
        }
    }

    /// After a full-cache failure of a batch with `decode_tokens` generating tokens: the
    /// sequence whose prompt chunk failed while it was alone in the cache (the only sequence
    /// in the batch, no other sequence holding cells), which no smaller batch can help.
    fn prompt_that_cannot_fit(&self, decode_tokens: usize) -> Option<usize> {
        if decode_tokens > 0 {
            return None;
        }
        let mut in_batch = self.active.iter().enumerate().filter(|(_, s)| s.chunk > 0);
        let (i, _) = in_batch.next()?;
        if in_batch.next().is_some() {
            return None;
        }
        let others_hold_cells = self
            .active
            .iter()
            .enumerate()
            .any(|(j, s)| j != i && s.pos > 0);
        (!others_hold_cells).then_some(i)
    }

    /// Ends a sequence removed from `active` to make room in the KV cache (see
    /// [`Scheduler::decode_step`]): with `length` when it was generating alone in the cache,
    /// else with [`RuntimeError::KvCacheFull`]. Frees its cells.
    fn end_for_room(&mut self, s: Seq<B::Sampler>, alone: bool) {
        self.counters
            .kv_cache_full_evictions_total
            .fetch_add(1, Ordering::Relaxed);
        self.release(s.slot);
        if alone && s.next.is_some() {
            self.finish(s, FinishReason::Length);
        } else {
            // Counted before the answer goes out: a client that has its answer sees it counted.
            self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
            let _ = s.job.tx.send(Err(RuntimeError::KvCacheFull));
        }
    }

    /// Builds one batch: a token for every generating sequence, then prompt chunks of joining
    /// ones, at most `prompt_budget` prompt tokens in all and within the batch's capacity, all
    /// in slot order. Records each sequence's share in `chunk` (committed by
    /// [`Scheduler::commit_batch`]); returns the number of prompt tokens in the batch.
    fn build_batch(&mut self, prompt_budget: usize) -> usize {
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
        let mut room = (cap - decoding).min(prompt_budget);
        let mut prompt_tokens = 0;
        for s in self.active.iter_mut() {
            s.row = None;
            s.chunk = 0;
            if let Some(t) = s.next {
                s.row = self.batch.push(BatchToken {
                    token: t,
                    pos: s.pos,
                    seq: s.slot,
                    wants_output: true,
                });
                s.chunk = u32::from(s.row.is_some());
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
            s.chunk = take as u32;
            prompt_tokens += take;
        }
        prompt_tokens
    }

    /// After a successful decode: the batch's tokens are in the KV cache.
    fn commit_batch(&mut self) {
        for s in self.active.iter_mut() {
            match s.next {
                None => s.fed += s.chunk as usize,
                Some(t) if s.chunk > 0 && self.prompt_cache => s.fed_generated.push(t),
                Some(_) => {}
            }
            s.pos += s.chunk;
            s.chunk = 0;
        }
    }

    /// The sampler stage: one token for every sequence with an output row in this batch.
    fn sample_stage(&mut self) {
        self.sampled.clear();
        for (i, s) in self.active.iter_mut().enumerate() {
            let Some(row) = s.row else { continue };
            if s.next.is_none() {
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
                // Counted before the answer goes out: a client that has its answer sees it counted.
                self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
                let _ = s.job.tx.send(Err(e));
                let s = self.active.swap_remove(i);
                self.release(s.slot);
            } else if let Some(reason) = s.finished {
                let mut s = self.active.swap_remove(i);
                self.release_cached(&mut s);
                self.finish(s, reason);
            } else {
                i += 1;
            }
        }
    }

    fn release(&mut self, slot: SeqId) {
        self.decoder.clear_sequence(slot);
        self.cached[slot as usize].clear();
        self.free.insert(slot);
    }

    /// Frees the slot of a sequence that finished; with the prompt cache on its KV cells stay,
    /// recorded as the tokens they hold (the prompt, then the generated tokens fed back).
    fn release_cached(&mut self, s: &mut Seq<B::Sampler>) {
        if !self.prompt_cache || s.fed < s.job.tokens.len() {
            self.release(s.slot);
            return;
        }
        let cached = &mut self.cached[s.slot as usize];
        cached.clear();
        cached.extend_from_slice(&s.job.tokens);
        cached.extend_from_slice(&s.fed_generated);
        debug_assert_eq!(cached.len(), s.pos as usize);
        self.free.insert(s.slot);
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
        let usage = Usage::new(s.job.tokens.len() as u32, s.generated)
            .with_cached_prompt_tokens(s.cached_prompt);
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
        // Counted before the answer goes out: a client that has its answer sees it counted.
        self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
        let _ = s.job.tx.send(Ok(GenerationEvent::Done {
            finish_reason: reason,
            usage,
            timings,
            token_ids: Some(token_ids),
        }));
        let ms = timings.total_us / 1000;
        let old = self.counters.avg_request_ms.load(Ordering::Relaxed);
        let new = if old == 0 { ms } else { (old * 7 + ms) / 8 };
        self.counters.avg_request_ms.store(new, Ordering::Relaxed);
    }
}
