//! Building a host's [`InferenceAttestation`] from a finished generation (what a fingerprinting
//! runtime reports in [`TokenIds`]): the sampler spec, the salted token commitments and the
//! proofs. The host signs it and puts its object hash in the receipt's `attestation_digest`.

use b3iq_core::attestation::{
    seed_key_digest, token_commitment, InferenceAttestation, RuntimeFingerprint, SamplerSpec,
};
use b3iq_core::fingerprint::{Profile, SCHEME};
use b3iq_core::receipt::RequestId;
use b3iq_core::{Hash32, NodeId};

use crate::error::RuntimeError;
use crate::runtime::{ResponseFormat, SamplingParams, TokenIds};

/// The runtime fingerprint of this build's llama.cpp backend with `threads` CPU threads:
/// the llama-cpp-sys-2 version the workspace pins, the ggml defaults it builds with (llamafile
/// sgemm on, flash attention auto, one KV stream per sequence) and the x86-64-v3 baseline of
/// `.cargo/config.toml` (the target architecture elsewhere).
pub fn llama_runtime_fingerprint(threads: u32) -> RuntimeFingerprint {
    RuntimeFingerprint {
        backend: "llama.cpp/llama-cpp-sys-2 0.1.161".into(),
        ggml_flags: "llamafile=on,fa=auto,kv_unified=off".into(),
        isa: if cfg!(target_arch = "x86_64") {
            "x86-64-v3".into()
        } else {
            std::env::consts::ARCH.into()
        },
        threads,
    }
}

/// The attestation of one generation. `salt` must be fresh per attestation (32 random bytes);
/// `sampling.seed_key` must be set for sampled requests (the key the draws used).
///
/// # Errors
/// [`RuntimeError::InvalidRequest`] for a request with a grammar (`response_format` other than
/// text: not replayed yet) or a `logit_bias` (the sampler spec cannot carry it yet), a sampled request without a seed key, or token ids without
/// fingerprints (the runtime did not fingerprint).
#[allow(clippy::too_many_arguments)]
pub fn build_attestation(
    node_id: NodeId,
    request_id: RequestId,
    ids: &TokenIds,
    sampling: &SamplingParams,
    format: &ResponseFormat,
    runtime: RuntimeFingerprint,
    profile: Profile,
    salt: Hash32,
) -> Result<InferenceAttestation, RuntimeError> {
    if !matches!(format, ResponseFormat::Text) {
        return Err(RuntimeError::InvalidRequest(
            "constrained output (a grammar) cannot be attested yet".into(),
        ));
    }
    if !sampling.logit_bias.is_empty() {
        // `SamplerSpec` has no field for it, so a verifier could not rebuild the chain.
        return Err(RuntimeError::InvalidRequest(
            "a request with logit_bias cannot be attested yet".into(),
        ));
    }
    let greedy = sampling.temperature <= 0.0;
    let seed_key_digest = match (greedy, sampling.seed_key) {
        (true, _) => None,
        (false, Some(k)) => Some(seed_key_digest(&k)),
        (false, None) => {
            return Err(RuntimeError::InvalidRequest(
                "a sampled verifiable request needs a seed key".into(),
            ))
        }
    };
    let expected = ids
        .completion
        .len()
        .div_ceil(b3iq_core::fingerprint::CHUNK_TOKENS);
    if ids.fingerprints.len() != expected {
        return Err(RuntimeError::InvalidRequest(format!(
            "{} fingerprints for {} completion tokens (expected {expected}); serve verifiable work with LlamaConfig::fingerprints",
            ids.fingerprints.len(),
            ids.completion.len()
        )));
    }
    Ok(InferenceAttestation {
        node_id,
        request_id,
        scheme: SCHEME.into(),
        tolerance_profile: profile.name.into(),
        runtime,
        sampler: SamplerSpec {
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            top_k: sampling.top_k.max(0) as u32,
            min_p: sampling.min_p,
            repeat_penalty: sampling.repeat_penalty,
            repeat_last_n: sampling.repeat_last_n,
            presence_penalty: sampling.presence_penalty,
            frequency_penalty: sampling.frequency_penalty,
            grammar_digest: None,
            seed_key_digest,
        },
        commitment_salt: salt,
        prompt_token_commitment: token_commitment(&salt, &ids.prompt),
        output_token_commitment: token_commitment(&salt, &ids.completion),
        completion_tokens: ids.completion.len() as u32,
        proofs: ids.fingerprints.clone(),
    })
}
