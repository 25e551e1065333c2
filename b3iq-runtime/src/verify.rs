//! The verifier of verifiable inference (feature `verify`): replays a claimed generation with
//! one prefill of prompt + completion and checks the host's hidden-state fingerprints
//! ([`b3iq_core::fingerprint`]) and its sampling ([`b3iq_core::sampling`]) at every generated
//! position, under a named tolerance [`Profile`].
//!
//! At generated position `t` (0-based) the host sampled `completion[t]` from the output of
//! sequence position `P - 1 + t` (`P` prompt tokens); the prefill outputs exactly those rows,
//! so the verifier sees the same hidden states and logits up to numeric drift (other batch
//! shapes, threads). Sampled positions pass when `u_t` lies in the claimed token's CDF
//! interval under the verifier's distribution (widened by the profile's `draw_eps`: a draw
//! inside the widening is a *boundary event*, counted, not a failure); greedy positions pass
//! when the claimed logit is within `greedy_delta` of the best.

use std::time::Instant;

use b3iq_core::fingerprint::{self, ChunkMetrics, ChunkProof, Profile, CHUNK_TOKENS};
use b3iq_core::sampling::{self, ReplayOutcome, SeedKey};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::error::RuntimeError;
use crate::llama::{build_sampler, new_llama_context_with};
use crate::runtime::{ResponseFormat, SamplingParams};

/// Most tokens per prefill batch (llama.cpp `n_batch` and `n_ubatch`). Below llama.cpp's
/// `GGML_FA_TILE_Q` (64 query rows, ggml-cpu ops.cpp), so the CPU flash-attention kernel is the
/// per-row `one_chunk` kernel the host's decode steps and short prompt chunks use, not the
/// tiled one: measured, a 512-token prefill put 1-7 of 128 exponents off per chunk on honest
/// runs, 32-token chunks none (see `docs/verification.md`).
const PREFILL_BATCH: usize = 32;

/// What a verifier checks: the opened tokens, how they were sampled and the host's proofs.
#[derive(Debug, Clone)]
pub struct VerifyRequest<'a> {
    /// Prompt token ids as the model read them.
    pub prompt: &'a [u32],
    /// The completion token ids the host claims it sampled (end-of-generation excluded).
    pub completion: &'a [u32],
    /// The request's sampling parameters; sampled requests need `seed_key` (or `seed`).
    pub sampling: &'a SamplingParams,
    /// The request's response format (its grammar is part of the chain).
    pub format: &'a ResponseFormat,
    /// The host's fingerprints, one per [`CHUNK_TOKENS`] completion tokens.
    pub fingerprints: &'a [ChunkProof],
    /// The tolerance profile named by the attestation.
    pub profile: Profile,
}

/// Where a verification failed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailPoint {
    /// A fingerprint chunk (index).
    Chunk(u32),
    /// A generated position (index into the completion).
    Position(u32),
    /// The proofs themselves (wrong count).
    Proofs,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum Verdict {
    /// Every chunk within the profile and every position replayed.
    Pass,
    /// Caught: where, and the metric that exceeded the profile.
    Fail {
        /// The chunk or position.
        at: FailPoint,
        /// What was measured (e.g. `exp_mismatches=97 > 8`).
        metric: String,
    },
    /// Could not decide (missing seed key, a model that cannot run the tokens).
    Inconclusive {
        /// Why.
        reason: String,
    },
}

/// A verdict with the measurements behind it (what a signed verdict carries as evidence).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    /// The verdict.
    pub verdict: Verdict,
    /// Per fingerprint chunk, the comparison against the verifier's hidden states.
    pub chunks: Vec<ChunkMetrics>,
    /// Positions whose draw lay within the profile's tolerance of the claimed interval (or,
    /// greedy, within `greedy_delta` of the best logit) without being inside it.
    pub boundary_events: u32,
    /// Positions replayed.
    pub positions: u32,
    /// Largest distance outside the claimed interval among the boundary events.
    pub worst_boundary: f64,
    /// Wall time of the prefill and checks, microseconds.
    pub elapsed_us: u64,
    /// Of which inside llama.cpp's decode (the prefill itself), microseconds.
    pub prefill_us: u64,
}

/// Verifies a claimed generation against `model` (the artifact the receipt names) with
/// `threads` CPU threads: one prefill of prompt + completion in a fresh embeddings-on
/// context, then fingerprint comparison per chunk and sampling replay per position.
///
/// # Errors
/// [`RuntimeError::InvalidRequest`] for an empty prompt or token ids outside the vocabulary;
/// [`RuntimeError::Backend`] when llama.cpp cannot create the context or decode.
pub fn verify_tokens(
    model: &LlamaModel,
    threads: u32,
    req: &VerifyRequest<'_>,
) -> Result<VerifyReport, RuntimeError> {
    let start = Instant::now();
    let (p, g) = (req.prompt.len(), req.completion.len());
    if p == 0 {
        return Err(RuntimeError::InvalidRequest("the prompt is empty".into()));
    }
    let n_vocab = model.n_vocab().max(0) as u32;
    if let Some(bad) = req
        .prompt
        .iter()
        .chain(req.completion)
        .find(|&&t| t >= n_vocab)
    {
        return Err(RuntimeError::InvalidRequest(format!(
            "token id {bad} is outside the vocabulary ({n_vocab} tokens)"
        )));
    }
    let mut report = VerifyReport {
        verdict: Verdict::Pass,
        chunks: Vec::new(),
        boundary_events: 0,
        positions: 0,
        worst_boundary: 0.0,
        elapsed_us: 0,
        prefill_us: 0,
    };
    let expected_chunks = g.div_ceil(CHUNK_TOKENS);
    if req.fingerprints.len() != expected_chunks {
        report.verdict = Verdict::Fail {
            at: FailPoint::Proofs,
            metric: format!(
                "{} fingerprints for {g} tokens, expected {expected_chunks}",
                req.fingerprints.len()
            ),
        };
        return Ok(report);
    }
    let greedy = req.sampling.temperature <= 0.0;
    let key = match (req.sampling.seed_key, req.sampling.seed) {
        (Some(k), _) => Some(SeedKey(k)),
        (None, Some(s)) => Some(SeedKey::from_request_seed(s)),
        (None, None) => None,
    };
    if !greedy && key.is_none() {
        report.verdict = Verdict::Inconclusive {
            reason: "a sampled request without seed_key or seed cannot be replayed".into(),
        };
        return Ok(report);
    }
    let mut sampler = build_sampler(model, req.sampling, req.format)?;
    let total = p + g;
    let n_ctx = (total as u32 + 1).max(64);
    let batch_tokens = PREFILL_BATCH.min(total.max(1)) as u32;
    let mut ctx = new_llama_context_with(model, 1, n_ctx, batch_tokens, threads, false, true)?;
    let mut batch = LlamaBatch::new(batch_tokens as usize, 1);
    let tokens: Vec<u32> = req.prompt.iter().chain(req.completion).copied().collect();
    let mut hidden: Vec<f32> = Vec::new();
    let mut dim = 0usize;
    let mut first_fail: Option<(FailPoint, String)> = None;
    // The verifier only needs outputs from position P-1 on; the last token's output is unused.
    let first_out = p - 1;
    let last_out = total - 1; // exclusive
    for (chunk_start, chunk) in tokens.chunks(batch_tokens as usize).enumerate() {
        let base = chunk_start * batch_tokens as usize;
        batch.clear();
        for (i, &t) in chunk.iter().enumerate() {
            let pos = base + i;
            let out = pos >= first_out && pos < last_out;
            batch
                .add(LlamaToken::new(t as i32), pos as i32, &[0], out)
                .map_err(|e| RuntimeError::Backend(format!("verifier batch: {e}")))?;
        }
        let t = Instant::now();
        ctx.decode(&mut batch)
            .map_err(|e| RuntimeError::Backend(format!("verifier prefill: {e}")))?;
        report.prefill_us += t.elapsed().as_micros() as u64;
        for (i, _) in chunk.iter().enumerate() {
            let pos = base + i;
            if pos < first_out || pos >= last_out {
                continue;
            }
            let t = pos - first_out;
            let claimed = req.completion[t];
            let h = ctx.embeddings_ith(i as i32).map_err(|_| {
                RuntimeError::Backend("the verifier context kept no hidden state".into())
            })?;
            dim = h.len();
            hidden.extend_from_slice(h);
            let mut cands = sampler.survivors(ctx.token_data_array_ith(i as i32));
            let outcome = match key {
                Some(k) if !greedy => sampling::check_draw(
                    &mut cands,
                    claimed,
                    k.uniform(t as u64),
                    req.profile.draw_eps,
                ),
                _ => sampling::check_greedy(&cands, claimed, req.profile.greedy_delta),
            };
            report.positions += 1;
            match outcome {
                ReplayOutcome::Pass => {}
                ReplayOutcome::Boundary { distance } => {
                    report.boundary_events += 1;
                    report.worst_boundary = report.worst_boundary.max(distance);
                }
                ReplayOutcome::Fail { distance } => {
                    first_fail.get_or_insert((
                        FailPoint::Position(t as u32),
                        if greedy {
                            format!("logit gap {distance:.4} > {}", req.profile.greedy_delta)
                        } else {
                            format!(
                                "draw {distance:.6} outside the claimed token's interval (eps {})",
                                req.profile.draw_eps
                            )
                        },
                    ));
                }
            }
            sampler.accept(claimed);
        }
    }
    if dim > 0 {
        for (c, (proof, values)) in req
            .fingerprints
            .iter()
            .zip(hidden.chunks(CHUNK_TOKENS * dim))
            .enumerate()
        {
            let m = fingerprint::compare(proof, values);
            if !req.profile.accepts(&m) {
                // A fingerprint failure is reported before a sampling failure: it says the
                // model or the tokens differ, of which a sampling failure is a consequence.
                let at = (
                    FailPoint::Chunk(c as u32),
                    format!(
                        "exp_mismatches={} mantissa_mean={:.2} mantissa_median={:.1} (profile {}: <= {}, {}, {})",
                        m.exp_mismatches,
                        m.mantissa_mean,
                        m.mantissa_median,
                        req.profile.name,
                        req.profile.max_exp_mismatches,
                        req.profile.max_mantissa_mean,
                        req.profile.max_mantissa_median
                    ),
                );
                if !matches!(first_fail, Some((FailPoint::Chunk(_), _))) {
                    first_fail = Some(at);
                }
            }
            report.chunks.push(m);
        }
    }
    if let Some((at, metric)) = first_fail {
        report.verdict = Verdict::Fail { at, metric };
    }
    report.elapsed_us = start.elapsed().as_micros() as u64;
    Ok(report)
}
