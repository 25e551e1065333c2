//! Verifiable inference: the signed [`InferenceAttestation`] a host issues beside a receipt
//! (the receipt's `attestation_digest` is its [`crate::signed::Signed::object_hash`]), and the
//! signed [`VerificationVerdict`] a verifier issues after replaying it (usable as dispute
//! evidence). Byte formats in `docs/formats.md` ("Inference attestation", "Verification
//! verdict"); scheme in [`crate::fingerprint`] and [`crate::sampling`].

use crate::codec::{read_identifier, read_text, Canonical, Reader, Writer};
use crate::error::{CoreError, Result};
use crate::identity::NodeId;
use crate::receipt::RequestId;
use crate::signed::{Kind, Signed, SignedKind};
use crate::Hash32;

/// Most fingerprint proofs in one attestation (32 tokens each: 131,072 generated tokens; the
/// kind's body limit is 1,152 KiB).
pub const MAX_PROOFS: u32 = 4096;
/// Most bytes of one proof (`2 + 2 × 128`).
pub const MAX_PROOF_BYTES: u32 = 258;
/// Longest identifier (scheme, profile) and runtime-fingerprint field.
pub const MAX_NAME: usize = 64;
/// Longest verdict metric text.
pub const MAX_METRIC: usize = 512;

/// The blake3 `derive_key` context of token commitments.
pub const TOKEN_COMMITMENT_CONTEXT: &str = "b3iq 2026 attestation token-id commitment v1";

/// The execution environment a host ran (what a verifier matches its own against to pick a
/// tolerance profile).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFingerprint {
    /// Backend and version, e.g. `llama.cpp/llama-cpp-sys-2 0.1.161`.
    pub backend: String,
    /// ggml build flags that change numerics, e.g. `llamafile=on,fa=auto,kv_unified=off`.
    pub ggml_flags: String,
    /// CPU ISA baseline or device, e.g. `x86-64-v3`.
    pub isa: String,
    /// CPU threads.
    pub threads: u32,
}

/// The sampler chain, canonically (the deterministic llama.cpp part, then the B3IQ final
/// draw keyed by the job's seed key). Floats are IEEE-754 binary32, encoded as their bits.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerSpec {
    /// Temperature; 0 is greedy.
    pub temperature: f32,
    /// Top-p (1 disables).
    pub top_p: f32,
    /// Top-k (0 disables).
    pub top_k: u32,
    /// Min-p (0 disables).
    pub min_p: f32,
    /// Repetition penalty (1 disables).
    pub repeat_penalty: f32,
    /// Penalty window (`-1` = whole context).
    pub repeat_last_n: i32,
    /// Presence penalty.
    pub presence_penalty: f32,
    /// Frequency penalty.
    pub frequency_penalty: f32,
    /// blake3 of the output grammar (GBNF text), if any.
    pub grammar_digest: Option<Hash32>,
    /// blake3 of the 32-byte seed key (the key itself comes from the gateway's ticket or,
    /// local, from the request seed); `None` for greedy decoding.
    pub seed_key_digest: Option<Hash32>,
}

/// A host's attestation of one generation (the signed body).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceAttestation {
    /// The serving node.
    pub node_id: NodeId,
    /// The receipt's request id.
    pub request_id: RequestId,
    /// Fingerprint scheme ([`crate::fingerprint::SCHEME`]).
    pub scheme: String,
    /// Tolerance profile name ([`crate::fingerprint::Profile`]).
    pub tolerance_profile: String,
    /// What ran.
    pub runtime: RuntimeFingerprint,
    /// How tokens were sampled.
    pub sampler: SamplerSpec,
    /// Per-attestation salt of the token commitments.
    pub commitment_salt: Hash32,
    /// [`token_commitment`] of the prompt's token ids.
    pub prompt_token_commitment: Hash32,
    /// [`token_commitment`] of the completion's token ids.
    pub output_token_commitment: Hash32,
    /// Generated tokens the proofs cover.
    pub completion_tokens: u32,
    /// One encoded [`crate::fingerprint::ChunkProof`] per 32 generated tokens.
    #[serde(with = "hex_list")]
    pub proofs: Vec<Vec<u8>>,
}

/// A signed attestation.
pub type SignedAttestation = Signed<InferenceAttestation>;

/// The commitment to token ids: keyed blake3 (key = `derive_key(TOKEN_COMMITMENT_CONTEXT,
/// salt)`) over the count as u32 LE then each id as u32 LE.
pub fn token_commitment(salt: &Hash32, tokens: &[u32]) -> Hash32 {
    let key = blake3::derive_key(TOKEN_COMMITMENT_CONTEXT, &salt.0);
    let mut h = blake3::Hasher::new_keyed(&key);
    h.update(&(tokens.len() as u32).to_le_bytes());
    for t in tokens {
        h.update(&t.to_le_bytes());
    }
    Hash32(*h.finalize().as_bytes())
}

/// The digest of a seed key an attestation carries (`SamplerSpec::seed_key_digest`): blake3 of
/// the 32 bytes.
pub fn seed_key_digest(seed_key: &[u8; 32]) -> Hash32 {
    Hash32(*blake3::hash(seed_key).as_bytes())
}

impl InferenceAttestation {
    /// Whether opened token ids match the commitments.
    pub fn opens(&self, prompt: &[u32], completion: &[u32]) -> bool {
        token_commitment(&self.commitment_salt, prompt) == self.prompt_token_commitment
            && token_commitment(&self.commitment_salt, completion) == self.output_token_commitment
    }

    /// Bytes per generated token of the encoded body (what the issue bounds at 10).
    pub fn bytes_per_token(&self) -> f64 {
        self.to_canonical_bytes().len() as f64 / f64::from(self.completion_tokens.max(1))
    }
}

mod hex_list {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| hex::decode(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

fn f32_put(w: &mut Writer, v: f32) {
    w.u32(v.to_bits());
}

fn f32_get(r: &mut Reader<'_>, field: &'static str) -> Result<f32> {
    let v = f32::from_bits(r.u32(field)?);
    if !v.is_finite() {
        return Err(CoreError::field(field, "must be a finite number"));
    }
    Ok(v)
}

impl Canonical for RuntimeFingerprint {
    const NAME: &'static str = "runtime fingerprint";
    fn encode_to(&self, w: &mut Writer) {
        w.str(&self.backend);
        w.str(&self.ggml_flags);
        w.str(&self.isa);
        w.u32(self.threads);
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            backend: read_text(r, MAX_NAME as u32, "runtime.backend")?,
            ggml_flags: read_text(r, MAX_NAME as u32, "runtime.ggml_flags")?,
            isa: read_text(r, MAX_NAME as u32, "runtime.isa")?,
            threads: r.u32("runtime.threads")?,
        })
    }
}

impl Canonical for SamplerSpec {
    const NAME: &'static str = "sampler spec";
    fn encode_to(&self, w: &mut Writer) {
        f32_put(w, self.temperature);
        f32_put(w, self.top_p);
        w.u32(self.top_k);
        f32_put(w, self.min_p);
        f32_put(w, self.repeat_penalty);
        w.u32(self.repeat_last_n as u32);
        f32_put(w, self.presence_penalty);
        f32_put(w, self.frequency_penalty);
        w.option(self.grammar_digest.as_ref(), |w, d| w.put(d));
        w.option(self.seed_key_digest.as_ref(), |w, d| w.put(d));
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            temperature: f32_get(r, "sampler.temperature")?,
            top_p: f32_get(r, "sampler.top_p")?,
            top_k: r.u32("sampler.top_k")?,
            min_p: f32_get(r, "sampler.min_p")?,
            repeat_penalty: f32_get(r, "sampler.repeat_penalty")?,
            repeat_last_n: r.u32("sampler.repeat_last_n")? as i32,
            presence_penalty: f32_get(r, "sampler.presence_penalty")?,
            frequency_penalty: f32_get(r, "sampler.frequency_penalty")?,
            grammar_digest: r.option("sampler.grammar_digest", |r| r.get())?,
            seed_key_digest: r.option("sampler.seed_key_digest", |r| r.get())?,
        })
    }
}

impl Canonical for InferenceAttestation {
    const NAME: &'static str = "inference attestation";
    fn encode_to(&self, w: &mut Writer) {
        w.put(&self.node_id);
        w.put(&self.request_id);
        w.str(&self.scheme);
        w.str(&self.tolerance_profile);
        w.put(&self.runtime);
        w.put(&self.sampler);
        w.put(&self.commitment_salt);
        w.put(&self.prompt_token_commitment);
        w.put(&self.output_token_commitment);
        w.u32(self.completion_tokens);
        w.list(&self.proofs, |w, p| w.bytes(p));
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        let a = Self {
            node_id: r.get()?,
            request_id: r.get()?,
            scheme: read_identifier(r, MAX_NAME as u32, "scheme")?,
            tolerance_profile: read_identifier(r, MAX_NAME as u32, "tolerance_profile")?,
            runtime: r.get()?,
            sampler: r.get()?,
            commitment_salt: r.get()?,
            prompt_token_commitment: r.get()?,
            output_token_commitment: r.get()?,
            completion_tokens: r.u32("completion_tokens")?,
            proofs: r.list(MAX_PROOFS, "proofs", |r| {
                Ok(r.bytes(MAX_PROOF_BYTES, "proof")?.to_vec())
            })?,
        };
        let expected = a
            .completion_tokens
            .div_ceil(crate::fingerprint::CHUNK_TOKENS as u32);
        if a.proofs.len() as u32 != expected {
            return Err(CoreError::field(
                "proofs",
                format!(
                    "{} proofs for {} tokens, expected {expected}",
                    a.proofs.len(),
                    a.completion_tokens
                ),
            ));
        }
        for p in &a.proofs {
            crate::fingerprint::ChunkProof::decode(p)?;
        }
        Ok(a)
    }
}

impl SignedKind for InferenceAttestation {
    const KIND: Kind = Kind::InferenceAttestation;
    crate::canonical_body!();
    fn claimed_node_id(&self) -> Option<NodeId> {
        Some(self.node_id)
    }
}

/// Where a verification failed, or why it could not decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "index")]
pub enum VerdictOutcome {
    /// Every chunk within the profile, every position replayed. Tag 0.
    Pass,
    /// A fingerprint chunk exceeded the profile. Tag 1.
    FailChunk(u32),
    /// A generated position could not have been sampled. Tag 2.
    FailPosition(u32),
    /// The proofs are malformed or missing (wrong count, bad commitments). Tag 3.
    FailProofs,
    /// No decision (reason in the metric). Tag 4.
    Inconclusive,
}

impl Canonical for VerdictOutcome {
    const NAME: &'static str = "verdict outcome";
    fn encode_to(&self, w: &mut Writer) {
        match *self {
            VerdictOutcome::Pass => w.u8(0),
            VerdictOutcome::FailChunk(i) => {
                w.u8(1);
                w.u32(i);
            }
            VerdictOutcome::FailPosition(i) => {
                w.u8(2);
                w.u32(i);
            }
            VerdictOutcome::FailProofs => w.u8(3),
            VerdictOutcome::Inconclusive => w.u8(4),
        }
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        Ok(match r.u8("outcome")? {
            0 => VerdictOutcome::Pass,
            1 => VerdictOutcome::FailChunk(r.u32("outcome.index")?),
            2 => VerdictOutcome::FailPosition(r.u32("outcome.index")?),
            3 => VerdictOutcome::FailProofs,
            4 => VerdictOutcome::Inconclusive,
            tag => {
                return Err(CoreError::InvalidTag {
                    field: "outcome",
                    tag,
                })
            }
        })
    }
}

/// A verifier's signed verdict on one attestation (the signed body): dispute evidence.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationVerdict {
    /// The verifying node.
    pub verifier: NodeId,
    /// The node whose attestation was checked.
    pub subject: NodeId,
    /// The receipt's request id.
    pub request_id: RequestId,
    /// The attestation's object hash (the receipt's `attestation_digest`).
    pub attestation_digest: Hash32,
    /// The profile applied.
    pub tolerance_profile: String,
    /// Pass, fail (where) or inconclusive.
    pub outcome: VerdictOutcome,
    /// What was measured at the failure, or why inconclusive; empty on pass.
    pub metric: String,
    /// Positions replayed.
    pub positions: u32,
    /// Positions within the tolerance of an interval edge.
    pub boundary_events: u32,
    /// Largest exponent mismatches over the chunks.
    pub max_exp_mismatches: u32,
    /// The verifier's own runtime.
    pub runtime: RuntimeFingerprint,
    /// When, unix ms.
    pub verified_at_ms: u64,
}

/// A signed verdict.
pub type SignedVerdict = Signed<VerificationVerdict>;

impl Canonical for VerificationVerdict {
    const NAME: &'static str = "verification verdict";
    fn encode_to(&self, w: &mut Writer) {
        w.put(&self.verifier);
        w.put(&self.subject);
        w.put(&self.request_id);
        w.put(&self.attestation_digest);
        w.str(&self.tolerance_profile);
        w.put(&self.outcome);
        w.str(&self.metric);
        w.u32(self.positions);
        w.u32(self.boundary_events);
        w.u32(self.max_exp_mismatches);
        w.put(&self.runtime);
        w.u64(self.verified_at_ms);
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            verifier: r.get()?,
            subject: r.get()?,
            request_id: r.get()?,
            attestation_digest: r.get()?,
            tolerance_profile: read_identifier(r, MAX_NAME as u32, "tolerance_profile")?,
            outcome: r.get()?,
            metric: read_text(r, MAX_METRIC as u32, "metric")?,
            positions: r.u32("positions")?,
            boundary_events: r.u32("boundary_events")?,
            max_exp_mismatches: r.u32("max_exp_mismatches")?,
            runtime: r.get()?,
            verified_at_ms: r.u64("verified_at_ms")?,
        })
    }
}

impl SignedKind for VerificationVerdict {
    const KIND: Kind = Kind::VerificationVerdict;
    crate::canonical_body!();
    fn claimed_node_id(&self) -> Option<NodeId> {
        Some(self.verifier)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::NodeKey;

    pub(crate) fn sample() -> InferenceAttestation {
        let k = NodeKey::from_seed([1; 32]);
        let salt = Hash32([4; 32]);
        let values: Vec<f32> = (0..40 * 8).map(|i| (i as f32 * 0.37).sin()).collect();
        let proofs = crate::fingerprint::commit_positions(&values, 8)
            .iter()
            .map(|p| {
                let mut b = Vec::new();
                p.encode(&mut b);
                b
            })
            .collect();
        InferenceAttestation {
            node_id: k.node_id(),
            request_id: RequestId([3; 16]),
            scheme: crate::fingerprint::SCHEME.into(),
            tolerance_profile: "cpu-same-isa-v1".into(),
            runtime: RuntimeFingerprint {
                backend: "llama.cpp/llama-cpp-sys-2 0.1.161".into(),
                ggml_flags: "llamafile=on,fa=auto,kv_unified=off".into(),
                isa: "x86-64-v3".into(),
                threads: 2,
            },
            sampler: SamplerSpec {
                temperature: 0.9,
                top_p: 0.95,
                top_k: 40,
                min_p: 0.0,
                repeat_penalty: 1.0,
                repeat_last_n: 64,
                presence_penalty: 0.0,
                frequency_penalty: 0.0,
                grammar_digest: None,
                seed_key_digest: Some(Hash32([5; 32])),
            },
            commitment_salt: salt,
            prompt_token_commitment: token_commitment(&salt, &[1, 2, 3]),
            output_token_commitment: token_commitment(&salt, &(0..40).collect::<Vec<_>>()),
            completion_tokens: 40,
            proofs,
        }
    }

    #[test]
    fn roundtrips_signed_and_opens() {
        let k = NodeKey::from_seed([1; 32]);
        let a = sample();
        let s = Signed::sign(a.clone(), &k).unwrap();
        let back = SignedAttestation::decode(&s.encode()).unwrap();
        back.verify(&k.public()).unwrap();
        assert_eq!(back.body(), &a);
        assert!(a.opens(&[1, 2, 3], &(0..40).collect::<Vec<_>>()));
        assert!(!a.opens(&[1, 2, 4], &(0..40).collect::<Vec<_>>()));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            serde_json::from_str::<InferenceAttestation>(&json).unwrap(),
            a
        );
        assert!(a.bytes_per_token() < 20.0, "{}", a.bytes_per_token());
    }

    #[test]
    fn wrong_proof_count_is_refused() {
        let mut a = sample();
        a.completion_tokens = 70;
        let err = InferenceAttestation::from_canonical_bytes(&a.to_canonical_bytes()).unwrap_err();
        assert!(err.to_string().contains("proofs"), "{err}");
    }

    #[test]
    fn verdict_roundtrips() {
        let k = NodeKey::from_seed([2; 32]);
        let v = VerificationVerdict {
            verifier: k.node_id(),
            subject: NodeKey::from_seed([1; 32]).node_id(),
            request_id: RequestId([3; 16]),
            attestation_digest: Hash32([6; 32]),
            tolerance_profile: "cpu-same-isa-v1".into(),
            outcome: VerdictOutcome::FailChunk(1),
            metric: "exp_mismatches=97 > 0".into(),
            positions: 40,
            boundary_events: 0,
            max_exp_mismatches: 97,
            runtime: sample().runtime,
            verified_at_ms: 1_763_780_460_000,
        };
        let s = Signed::sign(v.clone(), &k).unwrap();
        let back = SignedVerdict::decode(&s.encode()).unwrap();
        back.verify(&k.public()).unwrap();
        assert_eq!(back.body(), &v);
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["outcome"]["outcome"], "fail_chunk");
        assert!(VerdictOutcome::from_canonical_bytes(&[9]).is_err());
    }
}
