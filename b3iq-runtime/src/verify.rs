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

/// What [`verify_attestation`] checks beside the model run: the receipt, the attestation and
/// the opened tokens.
#[derive(Debug, Clone, Copy)]
pub struct AttestationInput<'a> {
    /// The host's signed receipt (version 2, with an `attestation_digest`).
    pub receipt: &'a b3iq_core::Signed<b3iq_core::receipt::Receipt>,
    /// The host's signed attestation.
    pub attestation: &'a b3iq_core::Signed<b3iq_core::attestation::InferenceAttestation>,
    /// The opened prompt token ids.
    pub prompt: &'a [u32],
    /// The opened completion token ids.
    pub completion: &'a [u32],
    /// The job's 32-byte seed key (from the gateway's ticket); `None` for greedy requests.
    pub seed_key: Option<[u8; 32]>,
}

/// The verdict of [`verify_attestation`]: the outcome in the signed verdict's terms and the
/// run's report (absent when the checks before the model run already decided).
#[derive(Debug, Clone, PartialEq)]
pub struct AttestationVerdict {
    /// Pass, fail (where) or inconclusive.
    pub outcome: b3iq_core::attestation::VerdictOutcome,
    /// What was measured at the failure, or why inconclusive; empty on pass.
    pub metric: String,
    /// The model run, when it happened.
    pub report: Option<VerifyReport>,
}

impl AttestationVerdict {
    fn decided(outcome: b3iq_core::attestation::VerdictOutcome, metric: impl Into<String>) -> Self {
        Self {
            outcome,
            metric: metric.into(),
            report: None,
        }
    }

    /// The verdict body a verifier signs (`verifier` is its node id; `runtime` its own runtime
    /// fingerprint; `now_ms` unix ms).
    pub fn to_verdict(
        &self,
        input: &AttestationInput<'_>,
        verifier: b3iq_core::NodeId,
        runtime: b3iq_core::attestation::RuntimeFingerprint,
        now_ms: u64,
    ) -> b3iq_core::attestation::VerificationVerdict {
        let a = input.attestation.body();
        let r = self.report.as_ref();
        let mut metric = self.metric.clone();
        metric.truncate(b3iq_core::attestation::MAX_METRIC);
        b3iq_core::attestation::VerificationVerdict {
            verifier,
            subject: a.node_id,
            request_id: a.request_id,
            attestation_digest: b3iq_core::Hash32(input.attestation.object_hash()),
            tolerance_profile: a.tolerance_profile.clone(),
            outcome: self.outcome,
            metric,
            positions: r.map_or(0, |r| r.positions),
            boundary_events: r.map_or(0, |r| r.boundary_events),
            max_exp_mismatches: r
                .and_then(|r| r.chunks.iter().map(|c| c.exp_mismatches).max())
                .unwrap_or(0),
            runtime,
            verified_at_ms: now_ms,
        }
    }
}

/// `verify(receipt, attestation, prompt and output tokens) -> verdict`: checks the signatures
/// (both self-certified by the same node), that the receipt names this attestation
/// (`attestation_digest`, request id), that the tokens open the attestation's commitments and
/// match the receipt's counts, that the seed key is the committed one, then runs
/// [`verify_tokens`] with `model` (which must be the receipt's artifact: the caller loads it by
/// `artifact_digest`) under the attestation's profile.
///
/// # Errors
/// As [`verify_tokens`] (the model could not run); every finding about the host's objects is a
/// verdict, not an error.
pub fn verify_attestation(
    model: &LlamaModel,
    threads: u32,
    input: &AttestationInput<'_>,
) -> Result<AttestationVerdict, RuntimeError> {
    use b3iq_core::attestation::VerdictOutcome as O;
    let (receipt, att) = (input.receipt.body(), input.attestation.body());
    let r_node = match input.receipt.verify_self_certified() {
        Ok(n) => n,
        Err(e) => {
            return Ok(AttestationVerdict::decided(
                O::FailProofs,
                format!("receipt signature: {e}"),
            ))
        }
    };
    let a_node = match input.attestation.verify_self_certified() {
        Ok(n) => n,
        Err(e) => {
            return Ok(AttestationVerdict::decided(
                O::FailProofs,
                format!("attestation signature: {e}"),
            ))
        }
    };
    if r_node != a_node {
        return Ok(AttestationVerdict::decided(
            O::FailProofs,
            "receipt and attestation are signed by different nodes",
        ));
    }
    if receipt.attestation_digest != Some(b3iq_core::Hash32(input.attestation.object_hash()))
        || receipt.request_id != att.request_id
    {
        return Ok(AttestationVerdict::decided(
            O::FailProofs,
            "the receipt does not name this attestation",
        ));
    }
    if !att.opens(input.prompt, input.completion) {
        return Ok(AttestationVerdict::decided(
            O::FailProofs,
            "the tokens do not open the attestation's commitments",
        ));
    }
    if receipt.prompt_tokens as usize != input.prompt.len()
        || att.completion_tokens as usize != input.completion.len()
    {
        return Ok(AttestationVerdict::decided(
            O::FailProofs,
            "token counts differ from the receipt or attestation",
        ));
    }
    if att.scheme != fingerprint::SCHEME {
        return Ok(AttestationVerdict::decided(
            O::Inconclusive,
            format!("unknown scheme {}", att.scheme),
        ));
    }
    let Some(profile) = Profile::by_name(&att.tolerance_profile) else {
        return Ok(AttestationVerdict::decided(
            O::Inconclusive,
            format!("unknown tolerance profile {}", att.tolerance_profile),
        ));
    };
    let s = &att.sampler;
    let greedy = s.temperature <= 0.0;
    match (greedy, input.seed_key, s.seed_key_digest) {
        (true, _, _) => {}
        (false, Some(k), Some(d)) if b3iq_core::attestation::seed_key_digest(&k) == d => {}
        (false, Some(_), _) => {
            return Ok(AttestationVerdict::decided(
                O::FailProofs,
                "the seed key is not the one the attestation commits to",
            ))
        }
        (false, None, _) => {
            return Ok(AttestationVerdict::decided(
                O::Inconclusive,
                "a sampled request needs its seed key",
            ))
        }
    }
    if s.grammar_digest.is_some() {
        return Ok(AttestationVerdict::decided(
            O::Inconclusive,
            "constrained (grammar) requests are not replayed yet",
        ));
    }
    let sampling = SamplingParams {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k.min(i32::MAX as u32) as i32,
        min_p: s.min_p,
        repeat_penalty: s.repeat_penalty,
        repeat_last_n: s.repeat_last_n,
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        seed: None,
        seed_key: input.seed_key,
        // An attestation has no field for a bias: `build_attestation` refuses biased requests.
        logit_bias: Vec::new(),
    };
    let proofs = match att
        .proofs
        .iter()
        .map(|p| ChunkProof::decode(p))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(p) => p,
        Err(e) => {
            return Ok(AttestationVerdict::decided(
                O::FailProofs,
                format!("proof: {e}"),
            ))
        }
    };
    let report = verify_tokens(
        model,
        threads,
        &VerifyRequest {
            prompt: input.prompt,
            completion: input.completion,
            sampling: &sampling,
            format: &ResponseFormat::Text,
            fingerprints: &proofs,
            profile,
        },
    )?;
    let (outcome, metric) = match &report.verdict {
        Verdict::Pass => (O::Pass, String::new()),
        Verdict::Fail { at, metric } => (
            match at {
                FailPoint::Chunk(c) => O::FailChunk(*c),
                FailPoint::Position(p) => O::FailPosition(*p),
                FailPoint::Proofs => O::FailProofs,
            },
            metric.clone(),
        ),
        Verdict::Inconclusive { reason } => (O::Inconclusive, reason.clone()),
    };
    Ok(AttestationVerdict {
        outcome,
        metric,
        report: Some(report),
    })
}
