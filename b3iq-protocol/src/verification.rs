//! Gateway <-> node messages of verification in the network (`docs/verification.md`, "In the
//! network").
//!
//! * **Opening.** With its receipt, a node that attested a generation returns an
//!   [`OpenedGeneration`]: its signed inference attestation and the prompt and completion token
//!   ids that open the attestation's commitments. Header [`ATTESTATION_HEADER`] on a
//!   non-streamed answer, or the SSE comment [`ATTESTATION_SSE_PREFIX`] before the receipt's;
//!   the gateway takes both out: the client never sees them.
//! * **Verifier job.** The gateway sends a sampled request's receipt and opening to another
//!   node serving the same artifact: `POST` [`VERIFY_PATH`] on that node's tunnel, with a
//!   [`crate::gateway::RequestTicket`] for the verifier (its own single-use request id and
//!   expiry, signed by the gateway's ticket key, price zero, `seed_key` = the verified request's)
//!   and a [`VerifyJob`] body. The node answers a [`VerifyAnswer`]: its signed
//!   [`b3iq_core::attestation::VerificationVerdict`].
//!
//! Unlike [`crate::messages`], an opening carries token ids: it goes between the gateway and
//! nodes only, is held in the gateway's memory only, and is never stored or public.

use b3iq_core::attestation::{SignedAttestation, SignedVerdict};
use b3iq_core::receipt::SignedReceipt;

use crate::error::{ProtocolError, Result};

/// HTTP header carrying a node's [`OpenedGeneration`] (hex) on a non-streamed answer.
pub const ATTESTATION_HEADER: &str = "x-b3iq-attestation";
/// Prefix of the SSE comment line carrying the [`OpenedGeneration`] (hex), sent before the
/// receipt's comment.
pub const ATTESTATION_SSE_PREFIX: &str = ": b3iq-attestation ";
/// The tunnel route of verifier jobs.
pub const VERIFY_PATH: &str = "/v1/node/verify";
/// Most token ids in a prompt or a completion of an opening.
pub const MAX_OPENED_TOKENS: usize = 1 << 16;
/// Largest encoded attestation in an opening (4096 proofs of 262 bytes and the fixed fields).
pub const MAX_ATTESTATION_BYTES: usize = 1 << 21;
/// Version byte of [`OpenedGeneration::encode`].
pub const OPENED_VERSION: u8 = 1;

fn invalid(field: &'static str, reason: impl Into<String>) -> ProtocolError {
    ProtocolError::InvalidMessage { field, reason: reason.into() }
}

/// A node's opening of one attested generation.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedGeneration {
    /// The node's signed inference attestation (its object hash is the receipt's
    /// `attestation_digest`).
    pub attestation: SignedAttestation,
    /// The prompt token ids as the model read them.
    pub prompt: Vec<u32>,
    /// The completion token ids (end of generation excluded).
    pub completion: Vec<u32>,
}

impl OpenedGeneration {
    /// Bytes: `version (1) || attestation length (u32 BE) || attestation (b3iq-core encoding)
    /// || prompt count (u32 BE) || prompt ids (u32 BE each) || completion count (u32 BE) ||
    /// completion ids (u32 BE each)`.
    pub fn encode(&self) -> Vec<u8> {
        let a = self.attestation.encode();
        let mut v = Vec::with_capacity(13 + a.len() + 4 * (self.prompt.len() + self.completion.len()));
        v.push(OPENED_VERSION);
        v.extend_from_slice(&(a.len() as u32).to_be_bytes());
        v.extend_from_slice(&a);
        for ids in [&self.prompt, &self.completion] {
            v.extend_from_slice(&(ids.len() as u32).to_be_bytes());
            for t in ids.iter() {
                v.extend_from_slice(&t.to_be_bytes());
            }
        }
        v
    }

    /// Decodes [`OpenedGeneration::encode`]'s bytes (the attestation's signature is not checked
    /// here: the verifier does).
    ///
    /// # Errors
    /// `InvalidMessage` for another version, a length past its bound or the end, trailing
    /// bytes; `Core` for a malformed attestation.
    pub fn decode(b: &[u8]) -> Result<Self> {
        fn take<'a>(b: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8]> {
            if b.len() < n {
                return Err(invalid("opened_generation", format!("{what}: {n} bytes needed, {} left", b.len())));
            }
            let (h, t) = b.split_at(n);
            *b = t;
            Ok(h)
        }
        fn u32_at(b: &mut &[u8], what: &'static str) -> Result<u32> {
            let s = take(b, 4, what)?;
            Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        }
        let mut b = b;
        let v = take(&mut b, 1, "version")?[0];
        if v != OPENED_VERSION {
            return Err(invalid("opened_generation", format!("version {v}, expected {OPENED_VERSION}")));
        }
        let n = u32_at(&mut b, "attestation length")? as usize;
        if n > MAX_ATTESTATION_BYTES {
            return Err(invalid("opened_generation", format!("attestation of {n} bytes, at most {MAX_ATTESTATION_BYTES}")));
        }
        let attestation = SignedAttestation::decode(take(&mut b, n, "attestation")?)?;
        let mut ids = [Vec::new(), Vec::new()];
        for (i, what) in ["prompt", "completion"].into_iter().enumerate() {
            let n = u32_at(&mut b, what)? as usize;
            if n > MAX_OPENED_TOKENS {
                return Err(invalid("opened_generation", format!("{what}: {n} token ids, at most {MAX_OPENED_TOKENS}")));
            }
            let raw = take(&mut b, 4 * n, what)?;
            ids[i] = raw.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect();
        }
        if !b.is_empty() {
            return Err(invalid("opened_generation", format!("{} trailing bytes", b.len())));
        }
        let [prompt, completion] = ids;
        Ok(OpenedGeneration { attestation, prompt, completion })
    }

    /// Hex of [`OpenedGeneration::encode`] (header and SSE comment form).
    pub fn to_hex(&self) -> String {
        hex::encode(self.encode())
    }

    /// Parses [`OpenedGeneration::to_hex`].
    ///
    /// # Errors
    /// `InvalidMessage` for non-hex text; as [`OpenedGeneration::decode`].
    pub fn from_hex(s: &str) -> Result<Self> {
        let b = hex::decode(s.trim()).map_err(|e| invalid("opened_generation", format!("not hex: {e}")))?;
        Self::decode(&b)
    }

    /// Approximate bytes held in memory for it (the gateway's bound on held items).
    pub fn held_bytes(&self) -> usize {
        self.attestation.body_bytes().len() + 4 * (self.prompt.len() + self.completion.len()) + 128
    }
}

/// Gateway -> verifier node: the body of `POST` [`VERIFY_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyJob {
    /// The serving node's signed receipt (hex of its b3iq-core encoding).
    pub receipt: String,
    /// The serving node's [`OpenedGeneration`] (hex).
    pub opened: String,
}

impl VerifyJob {
    /// A job for `receipt` and `opened`.
    pub fn new(receipt: &SignedReceipt, opened: &OpenedGeneration) -> Self {
        VerifyJob { receipt: hex::encode(receipt.encode()), opened: opened.to_hex() }
    }

    /// The decoded receipt and opening.
    ///
    /// # Errors
    /// `InvalidMessage` or `Core` for malformed fields.
    pub fn open(&self) -> Result<(SignedReceipt, OpenedGeneration)> {
        let r = hex::decode(self.receipt.trim()).map_err(|e| invalid("receipt", format!("not hex: {e}")))?;
        Ok((SignedReceipt::decode(&r)?, OpenedGeneration::from_hex(&self.opened)?))
    }
}

/// Verifier node -> gateway: the answer of `POST` [`VERIFY_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyAnswer {
    /// The signed verdict (hex of its b3iq-core encoding).
    pub verdict: String,
}

impl VerifyAnswer {
    /// The answer carrying `v`.
    pub fn new(v: &SignedVerdict) -> Self {
        VerifyAnswer { verdict: hex::encode(v.encode()) }
    }

    /// The decoded verdict (its signature is not checked here).
    ///
    /// # Errors
    /// `InvalidMessage` or `Core` for a malformed value.
    pub fn verdict(&self) -> Result<SignedVerdict> {
        let b = hex::decode(self.verdict.trim()).map_err(|e| invalid("verdict", format!("not hex: {e}")))?;
        Ok(SignedVerdict::decode(&b)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use b3iq_core::attestation::{token_commitment, InferenceAttestation, RuntimeFingerprint, SamplerSpec};
    use b3iq_core::receipt::RequestId;
    use b3iq_core::{Hash32, NodeKey, Signed};

    fn opened() -> OpenedGeneration {
        let key = NodeKey::from_seed([9; 32]);
        let salt = Hash32([1; 32]);
        let (prompt, completion) = (vec![1u32, 2, 70_000], vec![5u32, 6]);
        let a = InferenceAttestation {
            node_id: key.node_id(),
            request_id: RequestId([2; 16]),
            scheme: "b3iq-toploc-v1".into(),
            tolerance_profile: "cpu-same-isa-v1".into(),
            runtime: RuntimeFingerprint { backend: "llama.cpp".into(), ggml_flags: "fa=auto".into(), isa: "x86-64-v3".into(), threads: 2 },
            sampler: SamplerSpec {
                temperature: 0.0,
                top_p: 1.0,
                top_k: 0,
                min_p: 0.0,
                repeat_penalty: 1.0,
                repeat_last_n: 64,
                presence_penalty: 0.0,
                frequency_penalty: 0.0,
                grammar_digest: None,
                seed_key_digest: None,
            },
            commitment_salt: salt,
            prompt_token_commitment: token_commitment(&salt, &prompt),
            output_token_commitment: token_commitment(&salt, &completion),
            completion_tokens: 2,
            proofs: vec![vec![7; 258]],
        };
        OpenedGeneration { attestation: Signed::sign(a, &key).unwrap(), prompt, completion }
    }

    #[test]
    fn an_opening_round_trips_and_refuses_damage() {
        let o = opened();
        let bytes = o.encode();
        assert_eq!(OpenedGeneration::decode(&bytes).unwrap(), o);
        assert_eq!(OpenedGeneration::from_hex(&o.to_hex()).unwrap(), o);
        assert!(o.attestation.body().opens(&o.prompt, &o.completion));
        // Every truncation and a trailing byte are refused, never a panic.
        for n in 0..bytes.len() {
            assert!(OpenedGeneration::decode(&bytes[..n]).is_err(), "truncated at {n}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(OpenedGeneration::decode(&long).is_err());
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(OpenedGeneration::decode(&v2).is_err());
        // A count past the bound is refused before allocating.
        let a_len = o.attestation.encode().len();
        let mut huge = bytes[..5 + a_len].to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(OpenedGeneration::decode(&huge), Err(ProtocolError::InvalidMessage { .. })));
        assert!(OpenedGeneration::from_hex("zz").is_err());
        let job = VerifyJob { receipt: "00".into(), opened: o.to_hex() };
        assert!(job.open().is_err(), "a malformed receipt");
        assert!(VerifyAnswer { verdict: "0102".into() }.verdict().is_err());
    }
}
