//! Verifiable inference with the real default model (feature `verify`): honest generations
//! (threads 1 and 2, alone and beside batch neighbours, greedy and seeded) verify as `Pass`,
//! and every attack class of the reduced detection matrix is caught: requantized copies
//! (Q8_0, Q4_0) served in place of the Q4_1 model, an edited prompt, a tampered output token,
//! a non-drawn token at one position and a different seed key.
//!
//! The copies are made once with llama.cpp's quantize API and cached beside the default model
//! (`~/.cache/b3iq/models/`), never in git. Set `B3IQ_VERIFY_LOG=1` to print every metric as
//! JSON lines (what `scripts/calibrate-verification` collects).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use b3iq_core::fingerprint::{ChunkProof, Profile};
use b3iq_runtime::llama::{load_llama_model, LlamaConfig, LlamaRuntime};
use b3iq_runtime::quantize::{quantize_model, QuantType};
use b3iq_runtime::store::default_model_path;
use b3iq_runtime::verify::{verify_tokens, FailPoint, Verdict, VerifyReport, VerifyRequest};
use b3iq_runtime::*;
use llama_cpp_2::model::LlamaModel;

const PROMPTS: &[&str] = &[
    "Write a short poem about the sea.",
    "Explain what a hash function is in two sentences.",
    "List three fruits and their colours.",
    "What is the capital of France? Answer briefly, then tell a fact about it.",
    "Give me a recipe for pancakes.",
    "Describe a cat to someone who has never seen one.",
    "Why is the sky blue?",
    "Count from one to ten in words.",
];

const TOKENS: u32 = 64;

/// `B3IQ_VERIFY_MEASURE=1`: log every case and skip the assertions (calibration runs only).
fn measuring() -> bool {
    std::env::var("B3IQ_VERIFY_MEASURE").is_ok_and(|v| v == "1")
}

macro_rules! expect {
    ($cond:expr, $($fmt:tt)+) => {
        if !measuring() {
            assert!($cond, $($fmt)+);
        }
    };
}

fn log(line: String) {
    if measuring() || std::env::var("B3IQ_VERIFY_LOG").is_ok_and(|v| v == "1") {
        println!("{line}");
    }
}

/// A requantized copy of the default model, made once and cached beside it.
fn model_copy(ty: QuantType) -> PathBuf {
    let src = default_model_path().expect("the default model is required");
    let name = format!("SmolLM2-135M-Instruct.{ty:?}.gguf");
    let dst = src.parent().unwrap().join(name);
    if !dst.exists() {
        let tmp = dst.with_extension("tmp");
        quantize_model(&src, &tmp, ty, 2).expect("quantize");
        std::fs::rename(&tmp, &dst).unwrap();
    }
    dst
}

fn runtime(path: &Path, threads: u32, slots: u32) -> LlamaRuntime {
    let cfg = LlamaConfig {
        threads,
        max_sequences: slots,
        queue_capacity: 16,
        context_per_sequence: 512,
        batch_tokens: 512,
        fingerprints: true,
        ..LlamaConfig::default()
    };
    let rt = LlamaRuntime::new(cfg).unwrap();
    rt.load_model_blocking(LoadModelSpec::from_path(path.to_path_buf()).with_id("m"))
        .unwrap();
    rt
}

fn sampling(seeded: bool, seed: u64) -> SamplingParams {
    if seeded {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[31] = 0x5a;
        SamplingParams {
            temperature: 0.9,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.0,
            seed_key: Some(key),
            ..SamplingParams::default()
        }
    } else {
        SamplingParams::greedy()
    }
}

struct Run {
    prompt: Vec<u32>,
    completion: Vec<u32>,
    proofs: Vec<ChunkProof>,
    sampling: SamplingParams,
    gen_us: u64,
}

/// Generates `prompts` at once on `rt` (each beside the others as batch neighbours).
async fn generate(rt: &LlamaRuntime, prompts: &[(usize, bool)]) -> Vec<Run> {
    let mut handles = Vec::new();
    for &(i, seeded) in prompts {
        let s = sampling(seeded, i as u64 + 1);
        let req = GenerateRequest::chat("m", vec![ChatMessage::user(PROMPTS[i % PROMPTS.len()])])
            .with_sampling(s.clone())
            .with_max_tokens(TOKENS);
        let stream = rt.generate(req).await.unwrap();
        handles.push(tokio::spawn(async move {
            (s, stream.collect_completion().await.unwrap())
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        let (s, c) = h.await.unwrap();
        let ids = c.token_ids.unwrap();
        let proofs: Vec<ChunkProof> = ids
            .fingerprints
            .iter()
            .map(|b| ChunkProof::decode(b).unwrap())
            .collect();
        out.push(Run {
            prompt: ids.prompt,
            completion: ids.completion,
            proofs,
            sampling: s,
            gen_us: c.timings.total_us,
        });
    }
    out
}

fn check(
    model: &LlamaModel,
    run: &Run,
    prompt: &[u32],
    completion: &[u32],
    sampling: &SamplingParams,
    label: &str,
) -> VerifyReport {
    let req = VerifyRequest {
        prompt,
        completion,
        sampling,
        format: &ResponseFormat::Text,
        fingerprints: &run.proofs,
        profile: Profile::CPU_SAME_ISA_V1,
    };
    let r = verify_tokens(model, 2, &req).unwrap();
    let worst = r.chunks.iter().map(|m| m.exp_mismatches).max().unwrap_or(0);
    let worst_mean = r.chunks.iter().map(|m| m.mantissa_mean).fold(0.0, f64::max);
    let best = r.chunks.iter().map(|m| m.exp_mismatches).min().unwrap_or(0);
    log(format!(
        "{{\"case\":\"{label}\",\"verdict\":{},\"max_exp_mismatches\":{worst},\"min_exp_mismatches\":{best},\"max_mantissa_mean\":{worst_mean:.3},\"boundary\":{},\"worst_boundary\":{:.6},\"positions\":{},\"verify_us\":{},\"prefill_us\":{},\"gen_us\":{}}}",
        serde_json::to_string(&r.verdict).unwrap(),
        r.boundary_events,
        r.worst_boundary,
        r.positions,
        r.elapsed_us,
        r.prefill_us,
        run.gen_us
    ));
    r
}

fn honest(model: &LlamaModel, run: &Run, label: &str) -> VerifyReport {
    check(
        model,
        run,
        &run.prompt,
        &run.completion,
        &run.sampling,
        label,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_matrix() {
    let path = default_model_path().expect("the default model is required");
    let verifier = Arc::new(load_llama_model(&path, 0).unwrap());
    let cases: Vec<(usize, bool)> = (0..PROMPTS.len())
        .flat_map(|i| [(i, false), (i, true)])
        .collect();

    // Honest: threads 2 one at a time; threads 1 with 3 neighbours (4 at once).
    let mut honest_runs = Vec::new();
    let t0 = Instant::now();
    {
        let rt = runtime(&path, 2, 4);
        for c in &cases {
            honest_runs.extend(
                generate(&rt, &[*c])
                    .await
                    .into_iter()
                    .map(|r| ("t2-alone", r)),
            );
        }
    }
    {
        let rt = runtime(&path, 1, 4);
        for group in cases.chunks(4) {
            honest_runs.extend(
                generate(&rt, group)
                    .await
                    .into_iter()
                    .map(|r| ("t1-batch4", r)),
            );
        }
    }
    let gen_time = t0.elapsed();
    let mut honest_pass = 0;
    let (mut verify_us, mut gen_us, mut tokens, mut proof_bytes) = (0u64, 0u64, 0usize, 0usize);
    for (label, run) in &honest_runs {
        let r = honest(&verifier, run, label);
        expect!(
            r.verdict == Verdict::Pass,
            "honest run {label} accused: {r:?}"
        );
        honest_pass += 1;
        verify_us += r.elapsed_us;
        gen_us += run.gen_us;
        tokens += run.completion.len();
        proof_bytes += run.proofs.len() * 258;
    }
    log(format!(
        "{{\"honest_runs\":{honest_pass},\"generation_s\":{:.1},\"verify_over_generation\":{:.3},\"proof_bytes_per_token\":{:.2}}}",
        gen_time.as_secs_f64(),
        verify_us as f64 / gen_us as f64,
        proof_bytes as f64 / tokens as f64
    ));

    // Requantized copies served in place of Q4_1: caught by fingerprints.
    for ty in [QuantType::Q8_0, QuantType::Q4_0] {
        let rt = runtime(&model_copy(ty), 2, 4);
        let runs = generate(&rt, &cases[..4]).await;
        for run in &runs {
            let r = check(
                &verifier,
                run,
                &run.prompt,
                &run.completion,
                &run.sampling,
                &format!("{ty:?}"),
            );
            expect!(
                matches!(r.verdict, Verdict::Fail { .. }),
                "{ty:?} copy not caught: {r:?}"
            );
        }
    }

    let long = |greedy: bool| {
        &honest_runs
            .iter()
            .find(|(_, r)| (r.sampling.temperature == 0.0) == greedy && r.completion.len() >= 40)
            .expect("a run of 40 tokens or more")
            .1
    };
    let (seeded_run, greedy_run) = (long(false), long(true));
    for run in [seeded_run, greedy_run] {
        // Prompt edited: one token replaced; and the system prompt dropped (first tokens cut).
        let mut p = run.prompt.clone();
        let k = p.len() / 2;
        p[k] = (p[k] + 1) % 49_152;
        let r = check(
            &verifier,
            run,
            &p,
            &run.completion,
            &run.sampling,
            "prompt-1-token",
        );
        expect!(
            matches!(r.verdict, Verdict::Fail { .. }),
            "prompt edit not caught: {r:?}"
        );
        let r = check(
            &verifier,
            run,
            &run.prompt[run.prompt.len() / 3..],
            &run.completion,
            &run.sampling,
            "prompt-cut",
        );
        expect!(
            matches!(r.verdict, Verdict::Fail { .. }),
            "prompt cut not caught: {r:?}"
        );
        // Output tampered: one token replaced by an unlikely one (position 5).
        let mut c = run.completion.clone();
        c[5] = 12_345;
        let r = check(
            &verifier,
            run,
            &run.prompt,
            &c,
            &run.sampling,
            "output-1-token",
        );
        expect!(
            matches!(r.verdict, Verdict::Fail { .. }),
            "output tamper not caught: {r:?}"
        );
    }
    // Sampling cheats: a different seed key; a non-drawn (second most likely) token.
    // A non-drawn token at the last position: the hidden states (all upstream of it) are
    // unchanged, so only the sampling replay can catch it.
    for run in [seeded_run, greedy_run] {
        let mut c = run.completion.clone();
        let last = c.len() - 1;
        c[last] = if c[last] == 12_345 { 12_346 } else { 12_345 };
        let r = check(&verifier, run, &run.prompt, &c, &run.sampling, "last-token");
        expect!(
            matches!(r.verdict, Verdict::Fail { at: FailPoint::Position(p), .. } if p == last as u32),
            "a non-drawn last token not caught by the replay: {r:?}"
        );
    }
    let mut other = seeded_run.sampling.clone();
    other.seed_key = Some([7u8; 32]);
    let r = check(
        &verifier,
        seeded_run,
        &seeded_run.prompt,
        &seeded_run.completion,
        &other,
        "seed-key",
    );
    expect!(
        matches!(
            r.verdict,
            Verdict::Fail {
                at: FailPoint::Position(_),
                ..
            }
        ),
        "other seed key not caught: {r:?}"
    );
}

/// Fingerprints change nothing of the output (greedy tokens are identical with embeddings on and
/// off) and only fingerprinting runtimes report them; logs the tokens/s of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprints_do_not_change_the_output() {
    let path = default_model_path().expect("the default model is required");
    let cases: Vec<(usize, bool)> = (0..4).map(|i| (i, false)).collect();
    let mut outputs = Vec::new();
    for on in [false, true] {
        let cfg = LlamaConfig {
            threads: 2,
            max_sequences: 4,
            queue_capacity: 16,
            context_per_sequence: 512,
            fingerprints: on,
            ..LlamaConfig::default()
        };
        let rt = LlamaRuntime::new(cfg).unwrap();
        rt.load_model_blocking(LoadModelSpec::from_path(path.clone()).with_id("m"))
            .unwrap();
        let t = Instant::now();
        let mut runs = Vec::new();
        for c in &cases {
            runs.extend(generate(&rt, &[*c]).await);
        }
        let secs = t.elapsed().as_secs_f64();
        let tokens: usize = runs.iter().map(|r| r.completion.len()).sum();
        log(format!(
            "{{\"fingerprints\":{on},\"tokens\":{tokens},\"tokens_per_s\":{:.1}}}",
            tokens as f64 / secs
        ));
        assert!(
            runs.iter().all(|r| r.proofs.is_empty() != on),
            "fingerprints {on}"
        );
        outputs.push(runs.into_iter().map(|r| r.completion).collect::<Vec<_>>());
    }
    assert_eq!(
        outputs[0], outputs[1],
        "embeddings on changed the greedy output"
    );
}

/// `verify(receipt, attestation, tokens)`: an honest receipt + attestation pass; a tampered
/// completion fails its commitments; a Q8_0 copy serving as the receipt's model fails a chunk;
/// a wrong seed key is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_attestation_and_verdict() {
    use b3iq_core::attestation::{SignedVerdict, VerdictOutcome};
    use b3iq_core::identity::NodeKey;
    use b3iq_core::metering::PriceSchedule;
    use b3iq_core::receipt::{NodeSalt, Receipt, RequestId, ServedContent, ServedRequest};
    use b3iq_core::{Hash32, Signed};
    use b3iq_runtime::attest::{build_attestation, llama_runtime_fingerprint};
    use b3iq_runtime::verify::{verify_attestation, AttestationInput};

    let path = default_model_path().expect("the default model is required");
    let verifier_model = load_llama_model(&path, 0).unwrap();
    let host = NodeKey::from_seed([0x42; 32]);
    let verifier = NodeKey::from_seed([0x43; 32]);
    let node_salt = NodeSalt::from_bytes([2; 32]);
    let served = |model: &Path| {
        let rt = runtime(model, 2, 2);
        async move { generate(&rt, &[(1, true)]).await.remove(0) }
    };
    for (label, model, expect_pass) in [
        ("honest", path.clone(), true),
        ("q8_0", model_copy(QuantType::Q8_0), false),
    ] {
        let run = served(&model).await;
        let ids = TokenIds {
            prompt: run.prompt.clone(),
            completion: run.completion.clone(),
            fingerprints: run
                .proofs
                .iter()
                .map(|p| {
                    let mut b = Vec::new();
                    p.encode(&mut b);
                    b
                })
                .collect(),
        };
        let request_id = RequestId([7; 16]);
        let att = build_attestation(
            host.node_id(),
            request_id,
            &ids,
            &run.sampling,
            &ResponseFormat::Text,
            llama_runtime_fingerprint(2),
            Profile::CPU_SAME_ISA_V1,
            Hash32([9; 32]),
        )
        .unwrap();
        let att = Signed::sign(att, &host).unwrap();
        // Size: 258 bytes per 32-token chunk plus fixed fields under 400 bytes (so under 10 bytes per
        // token from 256 generated tokens on; these 64-token answers pay the fixed part).
        let size = b3iq_core::codec::Canonical::to_canonical_bytes(att.body()).len();
        assert!(size <= 258 * run.completion.len().div_ceil(32) + 400, "attestation of {size} bytes");
        log(format!("{{\"attestation_bytes\":{size},\"tokens\":{}}}", run.completion.len()));
        let receipt = Receipt::new_v2(
            ServedRequest {
                node_id: host.node_id(),
                request_id,
                model_id: "smollm2".into(),
                artifact_digest: b3iq_core::digest::Sha256Digest::of(b"model"),
                backend: "llama.cpp".into(),
                mode: b3iq_core::OperatingMode::Network,
                started_at_ms: 1,
                ttft_ms: 1,
                duration_ms: 1,
                content: ServedContent::TokenIds {
                    prompt: &run.prompt,
                    completion: &run.completion,
                },
                attestation_digest: Some(Hash32(att.object_hash())),
            },
            &PriceSchedule {
                prompt_per_1m_tokens: 0,
                completion_per_1m_tokens: 0,
                per_request: 0,
            },
            &node_salt,
        )
        .unwrap()
        .sign(&host)
        .unwrap();
        let input = AttestationInput {
            receipt: &receipt,
            attestation: &att,
            prompt: &run.prompt,
            completion: &run.completion,
            seed_key: run.sampling.seed_key,
        };
        let v = verify_attestation(&verifier_model, 2, &input).unwrap();
        log(format!(
            "{{\"case\":\"attestation-{label}\",\"outcome\":{},\"metric\":{:?}}}",
            serde_json::to_string(&v.outcome).unwrap(),
            v.metric
        ));
        if expect_pass {
            assert_eq!(v.outcome, VerdictOutcome::Pass, "{v:?}");
            // Tampered tokens do not open the commitments; another seed key is not the committed one.
            let mut c = run.completion.clone();
            c[0] ^= 1;
            let bad = AttestationInput {
                completion: &c,
                ..input
            };
            assert_eq!(
                verify_attestation(&verifier_model, 2, &bad)
                    .unwrap()
                    .outcome,
                VerdictOutcome::FailProofs
            );
            let bad = AttestationInput {
                seed_key: Some([1; 32]),
                ..input
            };
            assert_eq!(
                verify_attestation(&verifier_model, 2, &bad)
                    .unwrap()
                    .outcome,
                VerdictOutcome::FailProofs
            );
        } else {
            assert!(
                matches!(v.outcome, VerdictOutcome::FailChunk(_)),
                "Q8_0 not caught: {v:?}"
            );
        }
        // The signed verdict is evidence: it verifies and names the attestation.
        let verdict = Signed::sign(
            v.to_verdict(&input, verifier.node_id(), llama_runtime_fingerprint(2), 2),
            &verifier,
        )
        .unwrap();
        let back = SignedVerdict::decode(&verdict.encode()).unwrap();
        back.verify(&verifier.public()).unwrap();
        assert_eq!(back.body().attestation_digest, Hash32(att.object_hash()));
        assert_eq!(back.body().subject, host.node_id());
    }
}

/// Issue 17: `logit_bias` is part of the replayed chain. A greedy generation whose first token
/// was banned by a bias verifies with the bias and fails at position 0 without it; a biased
/// request is refused by the attestation (its sampler spec cannot carry a bias).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_biased_request_replays_and_the_bias_is_part_of_the_replay() {
    use b3iq_runtime::attest::{build_attestation, llama_runtime_fingerprint};
    let path = default_model_path().expect("the default model is required");
    let verifier = load_llama_model(&path, 0).unwrap();
    let rt = runtime(&path, 2, 1);
    let msgs = vec![ChatMessage::user(PROMPTS[3])];
    let go = |s: SamplingParams| {
        let req = GenerateRequest::chat("m", msgs.clone()).with_sampling(s).with_max_tokens(16);
        let rt = rt.clone();
        async move { rt.generate(req).await.unwrap().collect_completion().await.unwrap() }
    };
    let plain = go(SamplingParams::greedy()).await;
    let first = plain.token_ids.unwrap().completion[0];
    let biased_sampling = SamplingParams { logit_bias: vec![(first, -100.0)], ..SamplingParams::greedy() };
    let biased = go(biased_sampling.clone()).await;
    let ids = biased.token_ids.unwrap();
    assert_ne!(ids.completion[0], first);
    let proofs: Vec<ChunkProof> = ids.fingerprints.iter().map(|b| ChunkProof::decode(b).unwrap()).collect();
    let verify = |s: &SamplingParams| {
        let req = VerifyRequest {
            prompt: &ids.prompt,
            completion: &ids.completion,
            sampling: s,
            format: &ResponseFormat::Text,
            fingerprints: &proofs,
            profile: Profile::CPU_SAME_ISA_V1,
        };
        verify_tokens(&verifier, 2, &req).unwrap().verdict
    };
    assert_eq!(verify(&biased_sampling), Verdict::Pass);
    assert!(
        matches!(verify(&SamplingParams::greedy()), Verdict::Fail { at: FailPoint::Position(0), .. }),
        "without the bias the first token is not the greedy one"
    );
    let e = build_attestation(
        b3iq_core::identity::NodeKey::from_seed([1; 32]).node_id(),
        b3iq_core::receipt::RequestId([1; 16]),
        &ids,
        &biased_sampling,
        &ResponseFormat::Text,
        llama_runtime_fingerprint(2),
        Profile::CPU_SAME_ISA_V1,
        b3iq_core::Hash32([3; 32]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("logit_bias"), "{e}");
}

/// The greedy grammar shortcut (unconstrained argmax kept when the grammar allows it) picks the
/// same tokens as the whole chain: greedy JSON and forced-tool-call generations replay as
/// `Pass` through the verifier, which always applies the whole chain (grammar first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_grammar_generations_replay_through_the_whole_chain() {
    use b3iq_runtime::tools::{tools_system_prompt, ToolFunction};
    let path = default_model_path().expect("the default model is required");
    let verifier = load_llama_model(&path, 0).unwrap();
    // Prompts in 32-token batches, as the verifier prefills: the tools prompt is past 64 tokens,
    // where one big prompt batch takes another flash-attention kernel (docs/verification.md).
    let rt = LlamaRuntime::new(LlamaConfig {
        threads: 2,
        max_sequences: 1,
        queue_capacity: 4,
        context_per_sequence: 512,
        batch_tokens: 32,
        fingerprints: true,
        ..LlamaConfig::default()
    })
    .unwrap();
    rt.load_model_blocking(LoadModelSpec::from_path(path.clone()).with_id("m")).unwrap();
    let weather = ToolFunction {
        name: "get_weather".into(),
        description: None,
        parameters: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    };
    let cases = [
        (vec![ChatMessage::user("Describe a cat as JSON with name and age.")], ResponseFormat::JsonObject),
        (
            vec![ChatMessage::system(tools_system_prompt(std::slice::from_ref(&weather))), ChatMessage::user("Weather in Oslo?")],
            ResponseFormat::ToolCall { tools: vec![weather.clone()] },
        ),
    ];
    for (msgs, format) in cases {
        let req = GenerateRequest::chat("m", msgs)
            .with_sampling(SamplingParams::greedy())
            .with_max_tokens(48)
            .with_response_format(format.clone());
        let c = rt.generate(req).await.unwrap().collect_completion().await.unwrap();
        let ids = c.token_ids.unwrap();
        let proofs: Vec<ChunkProof> = ids.fingerprints.iter().map(|b| ChunkProof::decode(b).unwrap()).collect();
        let report = verify_tokens(
            &verifier,
            2,
            &VerifyRequest {
                prompt: &ids.prompt,
                completion: &ids.completion,
                sampling: &SamplingParams::greedy(),
                format: &format,
                fingerprints: &proofs,
                profile: Profile::CPU_SAME_ISA_V1,
            },
        )
        .unwrap();
        assert_eq!(report.verdict, Verdict::Pass, "{format:?}: {:?}", c.text);
        assert_eq!(report.boundary_events, 0, "{format:?}");
    }
}
