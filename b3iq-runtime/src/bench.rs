//! Benchmarks.
//!
//! - [`QuickBenchmark`]: the quick benchmark the host runs (`b3iqd bench`, the wizard, the
//!   `run_benchmark` job): its request, a [`QuickBenchMeter`] fed with the stream's events, and
//!   [`run_quick`] for direct use.
//! - The suite: prompt processing and generation speed (as llama-bench's pp512 / tg128), and
//!   aggregate serving throughput through the [`Runtime`] API at several concurrency levels,
//!   plus the bare llama-cpp-2 loops the runtime is compared with. Results are compared with
//!   the SKU bands in `data/sku_bands.json`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;
use crate::hardware::HardwareReport;
use crate::llama::{new_llama_context, LlamaRuntime};
use crate::runtime::*;

const SKU_BANDS_JSON: &str = include_str!("../data/sku_bands.json");

/// The quick benchmark: one chat prompt, greedy, at most 64 tokens, measured from just before
/// the request is submitted. Its definition and measurement live here so every caller
/// measures the same thing: the host runs [`QuickBenchmark::request`] through its own
/// inference path and feeds each event to a [`QuickBenchmark::meter`]; [`run_quick`] does it
/// all on a [`Runtime`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuickBenchmark;

impl QuickBenchmark {
    /// The prompt (one user message).
    pub const PROMPT: &'static str = "Write a short story about a robot who learns to paint. Use simple words.";
    /// Most tokens generated.
    pub const MAX_TOKENS: u32 = 64;

    /// The request: [`Self::PROMPT`] as a chat, greedy sampling, [`Self::MAX_TOKENS`], no stop
    /// sequences, plain text.
    pub fn request(model_id: &str) -> GenerateRequest {
        GenerateRequest::chat(model_id, vec![ChatMessage::user(Self::PROMPT)])
            .with_sampling(SamplingParams::greedy())
            .with_max_tokens(Self::MAX_TOKENS)
    }

    /// A meter whose clock starts now: create it right before submitting the request.
    pub fn meter(model_id: &str) -> QuickBenchMeter {
        QuickBenchMeter::new(model_id)
    }
}

/// Measures one quick benchmark run from the events of its stream.
#[derive(Debug, Clone)]
pub struct QuickBenchMeter {
    model: String,
    started: Instant,
    first_delta: Option<Duration>,
    done: Option<(Usage, Timings, Duration)>,
}

impl QuickBenchMeter {
    /// A meter for `model_id` whose clock starts now.
    pub fn new(model_id: &str) -> Self {
        Self { model: model_id.to_string(), started: Instant::now(), first_delta: None, done: None }
    }

    /// Feeds one event of the run's stream (in order).
    pub fn on_event(&mut self, event: &GenerationEvent) {
        match event {
            GenerationEvent::Delta { .. } => {
                self.first_delta.get_or_insert_with(|| self.started.elapsed());
            }
            GenerationEvent::Done { usage, timings, .. } => {
                self.done = Some((*usage, *timings, self.started.elapsed()));
            }
        }
    }

    /// The result.
    ///
    /// # Errors
    /// [`RuntimeError::Backend`] when no final event was fed (the stream ended early).
    pub fn finish(self) -> Result<QuickBenchResult, RuntimeError> {
        let (usage, timings, total) =
            self.done.ok_or_else(|| RuntimeError::Backend("the benchmark stream ended without a final event".into()))?;
        Ok(QuickBenchResult {
            model: self.model,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            tokens_per_second: timings.generation_tokens_per_second(&usage),
            prompt_tokens_per_second: timings.prompt_tokens_per_second(&usage),
            ttft_ms: self.first_delta.map_or(0, |d| d.as_millis() as u64),
            total_ms: total.as_millis() as u64,
        })
    }
}

/// The result of a quick benchmark, serialized with exactly these field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuickBenchResult {
    /// The model id.
    pub model: String,
    /// Prompt tokens (chat template applied).
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Generation speed after the first token (`Timings::generation_tokens_per_second`).
    pub tokens_per_second: f64,
    /// Prompt processing speed (`Timings::prompt_tokens_per_second`).
    pub prompt_tokens_per_second: f64,
    /// From the meter's start to the first text delta, ms (0 when no text came).
    pub ttft_ms: u64,
    /// From the meter's start to the final event, ms.
    pub total_ms: u64,
}

/// Runs the quick benchmark on `runtime` (the model must be loaded).
///
/// # Errors
/// What `generate` or the stream returns.
pub async fn run_quick(runtime: &dyn Runtime, model_id: &str) -> Result<QuickBenchResult, RuntimeError> {
    let mut meter = QuickBenchmark::meter(model_id);
    let mut stream = runtime.generate(QuickBenchmark::request(model_id)).await?;
    while let Some(event) = stream.next_event().await {
        meter.on_event(&event?);
    }
    meter.finish()
}

/// The prompt the throughput benchmarks use.
pub const BENCH_PROMPT: &str = "Write a long story about a lighthouse keeper who finds a message in a bottle.";

/// Result of a bare llama-cpp-2 run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoopResult {
    /// Tokens generated (over all sequences).
    pub tokens: u64,
    /// Wall time.
    pub seconds: f64,
}

impl LoopResult {
    /// Tokens per second.
    pub fn tokens_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.tokens as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Prompt processing speed (llama-bench `pp<n>`): decodes `n_prompt` tokens in one batch.
pub fn bare_prompt_processing(model: &LlamaModel, n_prompt: u32, threads: u32) -> Result<LoopResult, RuntimeError> {
    let mut ctx = new_llama_context(model, 1, n_prompt.max(64) + 16, n_prompt.max(64), threads, true)?;
    let vocab = model.vocab();
    let seed = vocab.tokenize(BENCH_PROMPT.as_bytes(), true, false);
    let mut batch = LlamaBatch::new(n_prompt as usize, 1);
    for i in 0..n_prompt as usize {
        batch
            .add(seed[i % seed.len()], i as i32, &[0], i + 1 == n_prompt as usize)
            .map_err(|e| RuntimeError::Backend(e.to_string()))?;
    }
    let t = Instant::now();
    ctx.decode(&mut batch).map_err(|e| RuntimeError::Backend(e.to_string()))?;
    Ok(LoopResult { tokens: n_prompt as u64, seconds: t.elapsed().as_secs_f64() })
}

/// Generation speed (llama-bench `tg<n>`): `n_gen` single-token decodes after a short prompt,
/// greedy sampling, not stopping at end of generation.
pub fn bare_text_generation(model: &LlamaModel, n_gen: u32, threads: u32) -> Result<LoopResult, RuntimeError> {
    let vocab = model.vocab();
    let prompt = vocab.tokenize(BENCH_PROMPT.as_bytes(), true, false);
    let mut ctx = new_llama_context(model, 1, prompt.len() as u32 + n_gen + 16, 512, threads, true)?;
    let mut batch = LlamaBatch::new(512, 1);
    for (i, t) in prompt.iter().enumerate() {
        batch.add(*t, i as i32, &[0], i + 1 == prompt.len()).map_err(|e| RuntimeError::Backend(e.to_string()))?;
    }
    ctx.decode(&mut batch).map_err(|e| RuntimeError::Backend(e.to_string()))?;
    let mut sampler = LlamaSampler::greedy();
    let mut tok = sampler.sample(&ctx, batch.n_tokens() - 1);
    let t = Instant::now();
    for pos in (prompt.len() as i32..).take(n_gen as usize) {
        batch.clear();
        batch.add(tok, pos, &[0], true).map_err(|e| RuntimeError::Backend(e.to_string()))?;
        ctx.decode(&mut batch).map_err(|e| RuntimeError::Backend(e.to_string()))?;
        tok = sampler.sample(&ctx, 0);
    }
    Ok(LoopResult { tokens: n_gen as u64, seconds: t.elapsed().as_secs_f64() })
}

/// The bare loop the runtime's serving throughput is compared with: `n_seq` copies of a chat
/// prompt prefilled in one batch, then decoded together, one token per sequence per step,
/// greedy, each sequence stopping at end of generation or after `max_tokens`. Time includes
/// the prefill, as the runtime's does. Uses the same context shape as a [`LlamaRuntime`] with
/// `ctx_seqs` slots of `ctx_per_seq` tokens.
pub fn bare_batched_generation(
    model: &LlamaModel,
    n_seq: u32,
    max_tokens: u32,
    threads: u32,
    ctx_seqs: u32,
    ctx_per_seq: u32,
) -> Result<LoopResult, RuntimeError> {
    let batch_cap = 512u32.max(n_seq);
    let mut ctx = new_llama_context(model, ctx_seqs.max(n_seq), ctx_per_seq, batch_cap, threads, true)?;
    bare_batched_generation_in(&mut ctx, model, n_seq, max_tokens)
}

/// [`bare_batched_generation`] on a context the caller keeps warm between runs (its KV cache
/// is cleared first), as the runtime's engine keeps its context. Needs `n_batch >= 512`.
pub fn bare_batched_generation_in(
    ctx: &mut llama_cpp_2::context::LlamaContext<'_>,
    model: &LlamaModel,
    n_seq: u32,
    max_tokens: u32,
) -> Result<LoopResult, RuntimeError> {
    ctx.clear_kv_cache();
    let prompt = crate::llama::tokenize_prompt(model, &Prompt::Chat(vec![ChatMessage::user(BENCH_PROMPT)]))?;
    let vocab = model.vocab();
    let batch_cap = 512usize.max(n_seq as usize);
    let mut batch = LlamaBatch::new(batch_cap, 1);
    let mut samplers: Vec<LlamaSampler> = (0..n_seq).map(|_| LlamaSampler::chain([LlamaSampler::greedy()], true)).collect();
    let start = Instant::now();
    // Prefill, packing as many prompts per batch as fit; sample right after each decode.
    let mut next: Vec<Option<LlamaToken>> = vec![None; n_seq as usize];
    let mut s = 0usize;
    while s < n_seq as usize {
        batch.clear();
        let first = s;
        let mut logits_idx = Vec::new();
        while s < n_seq as usize && batch.n_tokens() as usize + prompt.len() <= batch_cap {
            for (i, t) in prompt.iter().enumerate() {
                let last = i + 1 == prompt.len();
                if last {
                    logits_idx.push(batch.n_tokens());
                }
                batch.add(*t, i as i32, &[s as i32], last).map_err(|e| RuntimeError::Backend(e.to_string()))?;
            }
            s += 1;
        }
        if s == first {
            return Err(RuntimeError::Unsupported("bench prompt longer than one batch".into()));
        }
        ctx.decode(&mut batch).map_err(|e| RuntimeError::Backend(e.to_string()))?;
        for (k, idx) in (first..s).zip(logits_idx) {
            let t = samplers[k].sample(ctx, idx);
            next[k] = if vocab.is_eog(t) { None } else { Some(t) };
        }
    }
    let mut generated: u64 = next.iter().filter(|t| t.is_some()).count() as u64;
    let mut counts = vec![1u32; n_seq as usize];
    let mut pos = prompt.len() as i32;
    loop {
        batch.clear();
        let mut idx = vec![-1i32; n_seq as usize];
        for k in 0..n_seq as usize {
            if let Some(t) = next[k] {
                if counts[k] >= max_tokens {
                    next[k] = None;
                    continue;
                }
                idx[k] = batch.n_tokens();
                batch.add(t, pos, &[k as i32], true).map_err(|e| RuntimeError::Backend(e.to_string()))?;
            }
        }
        if batch.n_tokens() == 0 {
            break;
        }
        ctx.decode(&mut batch).map_err(|e| RuntimeError::Backend(e.to_string()))?;
        for k in 0..n_seq as usize {
            if idx[k] >= 0 {
                let t = samplers[k].sample(ctx, idx[k]);
                counts[k] += 1;
                if vocab.is_eog(t) {
                    next[k] = None;
                } else {
                    generated += 1;
                    next[k] = Some(t);
                }
            }
        }
        pos += 1;
    }
    Ok(LoopResult { tokens: generated, seconds: start.elapsed().as_secs_f64() })
}

/// One serving measurement through the [`Runtime`] API.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServingResult {
    /// Concurrent streams.
    pub concurrency: u32,
    /// Completion tokens over all streams.
    pub tokens: u64,
    /// Wall time from the first submission to the last stream's end.
    pub seconds: f64,
    /// Median time to first token, ms.
    pub median_ttft_ms: f64,
}

impl ServingResult {
    /// Aggregate completion tokens per second.
    pub fn tokens_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.tokens as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Runs `concurrency` identical greedy chat requests at once through `runtime` and measures
/// the aggregate completion tokens per second.
pub async fn serving_throughput<R: Runtime + ?Sized>(
    runtime: &R,
    model: &str,
    concurrency: u32,
    max_tokens: u32,
) -> Result<ServingResult, RuntimeError> {
    let start = Instant::now();
    let mut streams = Vec::new();
    for _ in 0..concurrency {
        let req = GenerateRequest::chat(model, vec![ChatMessage::user(BENCH_PROMPT)])
            .with_sampling(SamplingParams::greedy())
            .with_max_tokens(max_tokens);
        streams.push(runtime.generate(req).await?);
    }
    let handles: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(async move { s.collect_completion().await }))
        .collect();
    let mut tokens = 0u64;
    let mut ttfts = Vec::new();
    for h in handles {
        let c = h.await.map_err(|e| RuntimeError::Backend(e.to_string()))??;
        tokens += c.usage.completion_tokens as u64;
        ttfts.push(c.timings.time_to_first_token_us as f64 / 1000.0);
    }
    let seconds = start.elapsed().as_secs_f64();
    ttfts.sort_by(|a, b| a.total_cmp(b));
    Ok(ServingResult { concurrency, tokens, seconds, median_ttft_ms: ttfts.get(ttfts.len() / 2).copied().unwrap_or(0.0) })
}

/// A performance band from the SKU data file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkuBand {
    /// Id (`b3iq-studio`, `consumer-cpu-8c`, ...).
    pub id: String,
    /// Display name.
    pub name: String,
    /// `appliance`, `consumer_cpu` or `consumer_gpu`.
    pub class: String,
    /// Expected single-stream generation tokens/s on the default profile (lower bound).
    pub tg_min: f64,
    /// Upper bound (exclusive).
    pub tg_max: f64,
    /// Expected aggregate tokens/s at 8 streams (lower bound).
    pub serving8_min: f64,
}

/// The SKU bands file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkuBands {
    /// Profile the numbers are for.
    pub profile: String,
    /// Note on how the numbers were set.
    pub note: String,
    /// Bands.
    pub bands: Vec<SkuBand>,
}

impl SkuBands {
    /// The built-in bands.
    pub fn builtin() -> Result<SkuBands, RuntimeError> {
        serde_json::from_str(SKU_BANDS_JSON).map_err(|e| RuntimeError::Config(format!("sku_bands.json: {e}")))
    }

    /// Bands whose generation range contains `tg` (most demanding first).
    pub fn classify(&self, tg: f64) -> Vec<&SkuBand> {
        let mut v: Vec<&SkuBand> = self.bands.iter().filter(|b| tg >= b.tg_min && tg < b.tg_max).collect();
        v.sort_by(|a, b| b.tg_min.total_cmp(&a.tg_min));
        v
    }
}

/// Options of [`run_suite`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteOptions {
    /// Prompt tokens for the pp test (llama-bench default 512).
    pub prompt_tokens: u32,
    /// Generated tokens for the tg test (llama-bench default 128).
    pub gen_tokens: u32,
    /// Repetitions (the median is reported).
    pub repetitions: u32,
    /// Concurrency levels for serving throughput.
    pub concurrency: Vec<u32>,
    /// max_tokens per stream in the serving test.
    pub serving_max_tokens: u32,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        Self { prompt_tokens: 512, gen_tokens: 128, repetitions: 3, concurrency: vec![1, 4, 8], serving_max_tokens: 64 }
    }
}

/// Results of [`run_suite`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteResult {
    /// Model id.
    pub model: String,
    /// Model sha256.
    pub model_sha256: String,
    /// Threads.
    pub threads: u32,
    /// Prompt processing tokens/s (median).
    pub pp_tokens_per_second: f64,
    /// Generation tokens/s (median).
    pub tg_tokens_per_second: f64,
    /// Serving throughput per concurrency level.
    pub serving: Vec<ServingResult>,
    /// Hardware fingerprint.
    pub hardware_fingerprint: String,
    /// Matching SKU band ids.
    pub sku_bands: Vec<String>,
    /// Total wall time of the suite.
    pub duration_ms: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the whole suite against a model loaded in `runtime`.
pub async fn run_suite(
    runtime: &LlamaRuntime,
    model: &str,
    hw: &HardwareReport,
    opts: &SuiteOptions,
) -> Result<SuiteResult, RuntimeError> {
    let start = Instant::now();
    let info = runtime
        .list_models()
        .await?
        .into_iter()
        .find(|m| m.id == model)
        .ok_or_else(|| RuntimeError::ModelNotFound { model: model.to_string() })?;
    let llama: Arc<LlamaModel> = runtime.llama_model(model)?;
    let threads = runtime.config().threads;
    let (pp, tg, llama) = {
        let opts = opts.clone();
        tokio::task::spawn_blocking(move || -> Result<(f64, f64, Arc<LlamaModel>), RuntimeError> {
            let mut pp = Vec::new();
            let mut tg = Vec::new();
            for _ in 0..opts.repetitions.max(1) {
                pp.push(bare_prompt_processing(&llama, opts.prompt_tokens, threads)?.tokens_per_second());
                tg.push(bare_text_generation(&llama, opts.gen_tokens, threads)?.tokens_per_second());
            }
            Ok((median(pp), median(tg), llama))
        })
        .await
        .map_err(|e| RuntimeError::Backend(e.to_string()))??
    };
    drop(llama);
    let mut serving = Vec::new();
    for &c in &opts.concurrency {
        serving.push(serving_throughput(runtime, model, c, opts.serving_max_tokens).await?);
    }
    let bands = SkuBands::builtin()?;
    Ok(SuiteResult {
        model: model.to_string(),
        model_sha256: info.sha256,
        threads,
        pp_tokens_per_second: pp,
        tg_tokens_per_second: tg,
        serving,
        hardware_fingerprint: hw.fingerprint(),
        sku_bands: bands.classify(tg).iter().map(|b| b.id.clone()).collect(),
        duration_ms: start.elapsed().as_millis() as u64,
    })
}

/// Sleeps between interleaved runs so a noisy neighbour's burst hits both sides alike.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}

/// Turns a suite result into b3iq-core's benchmark record (integer milli-tokens/s, no
/// floats), signed with the node key. `now_ms` is the creation time (unix ms).
pub fn sign_record(
    result: &SuiteResult,
    key: &b3iq_core::NodeKey,
    now_ms: u64,
) -> Result<b3iq_core::benchmark::SignedBenchmarkRecord, RuntimeError> {
    let milli = |tps: f64| (tps.max(0.0) * 1000.0).round() as u64;
    let mut points: Vec<b3iq_core::benchmark::ConcurrencyPoint> = result
        .serving
        .iter()
        .map(|s| b3iq_core::benchmark::ConcurrencyPoint {
            concurrency: s.concurrency,
            aggregate_milli_tokens_per_s: milli(s.tokens_per_second()),
        })
        .collect();
    points.sort_by_key(|p| p.concurrency);
    points.dedup_by_key(|p| p.concurrency);
    let fp = hex::decode(&result.hardware_fingerprint)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| RuntimeError::InvalidRequest("hardware fingerprint must be 64 hex characters".into()))?;
    let record = b3iq_core::benchmark::BenchmarkRecord {
        node_id: key.node_id(),
        hardware_fingerprint: b3iq_core::Hash32::from_bytes(fp),
        backend: BackendKind::LlamaCpp.as_str().to_string(),
        model_digest: crate::digest::parse_digest(&result.model_sha256)?,
        prompt_milli_tokens_per_s: milli(result.pp_tokens_per_second),
        generation_milli_tokens_per_s: milli(result.tg_tokens_per_second),
        concurrency: points,
        created_at_ms: now_ms,
    };
    Ok(b3iq_core::Signed::sign(record, key)?)
}
