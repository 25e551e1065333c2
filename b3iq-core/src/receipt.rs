//! Usage receipts: what a node signs for every completed request.
//!
//! A receipt commits to the prompt and the output with salted blake3 ([`Commitment`]); the
//! salt ([`CommitmentSalt`]) stays with the node, so the receipt reveals nothing about the text
//! but the node can later open the commitment to a verifier.
//!
//! ```
//! use b3iq_core::{identity::NodeKey, receipt::*, digest::Sha256Digest, mode::OperatingMode};
//! let key = NodeKey::from_seed([1; 32]);
//! let salt = CommitmentSalt::from_bytes([2; 32]);
//! let receipt = Receipt {
//!     node_id: key.node_id(),
//!     request_id: RequestId([3; 16]),
//!     model_id: "smollm2-135m-instruct:q4_1".into(),
//!     artifact_digest: Sha256Digest::of(b"model bytes"),
//!     backend: "llama.cpp".into(),
//!     mode: OperatingMode::Local,
//!     prompt_tokens: 12,
//!     completion_tokens: 34,
//!     started_at_ms: 1_700_000_000_000,
//!     ttft_ms: 50,
//!     duration_ms: 900,
//!     price_micro_credits: 0,
//!     prompt_commitment: Commitment::prompt(&salt, b"hello"),
//!     output_commitment: Commitment::output(&salt, b"hi there"),
//! };
//! let signed = receipt.sign(&key).unwrap();
//! let bytes = signed.encode();
//! let back = SignedReceipt::decode(&bytes).unwrap();
//! back.verify(&key.public()).unwrap();
//! assert_eq!(back.receipt_id(), signed.receipt_id());
//! ```

use rand_core::CryptoRngCore;
use zeroize::Zeroize;

use crate::bytes::fixed_bytes;
use crate::codec::{check_identifier, read_identifier, Canonical, Reader, Writer};
use crate::digest::Sha256Digest;
use crate::error::Result;
use crate::identity::{NodeId, NodeKey};
use crate::mode::OperatingMode;
use crate::signed::{Kind, Signed, SignedKind};

/// Maximum length of `model_id` in bytes.
pub const MAX_MODEL_ID_LEN: u32 = 128;
/// Maximum length of `backend` in bytes.
pub const MAX_BACKEND_LEN: u32 = 64;

/// Commitment role tag for prompts.
pub const PROMPT_COMMITMENT_TAG: &[u8] = b"b3iq/commit/prompt/v1";
/// Commitment role tag for outputs.
pub const OUTPUT_COMMITMENT_TAG: &[u8] = b"b3iq/commit/output/v1";

fixed_bytes!(
    /// A request id (16 bytes, hex in JSON), chosen by the host per request.
    RequestId,
    16,
    "request id"
);

fixed_bytes!(
    /// A salted blake3 commitment (32 bytes, hex in JSON).
    Commitment,
    32,
    "commitment"
);

fixed_bytes!(
    /// The stable id of a signed receipt: blake3 of `domain_tag || version || body`. It is also
    /// the leaf data for Merkle batching (see [`crate::merkle`]).
    ReceiptId,
    32,
    "receipt id"
);

/// The node's private 32-byte salt for commitments. Never put it in a receipt or a public
/// payload; `Debug` redacts it and it is zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct CommitmentSalt([u8; 32]);

impl CommitmentSalt {
    /// A fresh random salt.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        Self(s)
    }
    /// Wraps stored bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The secret bytes (for the host's private storage only).
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for CommitmentSalt {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for CommitmentSalt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitmentSalt(<redacted>)")
    }
}

impl Commitment {
    /// `blake3_keyed(key = salt, role_tag || data)`.
    pub fn commit(salt: &CommitmentSalt, role_tag: &[u8], data: &[u8]) -> Self {
        let mut h = blake3::Hasher::new_keyed(&salt.0);
        h.update(role_tag);
        h.update(data);
        Self(*h.finalize().as_bytes())
    }
    /// Commitment to prompt bytes.
    pub fn prompt(salt: &CommitmentSalt, prompt: &[u8]) -> Self {
        Self::commit(salt, PROMPT_COMMITMENT_TAG, prompt)
    }
    /// Commitment to output bytes.
    pub fn output(salt: &CommitmentSalt, output: &[u8]) -> Self {
        Self::commit(salt, OUTPUT_COMMITMENT_TAG, output)
    }
    /// Checks an opening (constant time).
    pub fn opens_to(&self, salt: &CommitmentSalt, role_tag: &[u8], data: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        Self::commit(salt, role_tag, data).0.ct_eq(&self.0).into()
    }
}

/// A usage receipt (the signed body). Integers only; money in micro-credits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The node that served the request.
    pub node_id: NodeId,
    /// Request id chosen by the host.
    pub request_id: RequestId,
    /// Model id (identifier, at most 128 bytes).
    pub model_id: String,
    /// sha256 of the model artifact that served the request.
    pub artifact_digest: Sha256Digest,
    /// Backend name (identifier, at most 64 bytes), e.g. `llama.cpp`.
    pub backend: String,
    /// Operating mode the request was served in.
    pub mode: OperatingMode,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
    /// Start time, unix milliseconds.
    pub started_at_ms: u64,
    /// Time to first token, milliseconds.
    pub ttft_ms: u64,
    /// Total duration, milliseconds.
    pub duration_ms: u64,
    /// Price charged, micro-credits.
    pub price_micro_credits: u64,
    /// Salted blake3 commitment to the prompt.
    pub prompt_commitment: Commitment,
    /// Salted blake3 commitment to the output.
    pub output_commitment: Commitment,
}

/// A signed receipt.
pub type SignedReceipt = Signed<Receipt>;

impl Receipt {
    /// Signs the receipt with the node key (its node id must be `key`'s).
    pub fn sign(self, key: &NodeKey) -> Result<SignedReceipt> {
        Signed::sign(self, key)
    }

    /// Total tokens (prompt + completion).
    pub fn total_tokens(&self) -> u64 {
        u64::from(self.prompt_tokens) + u64::from(self.completion_tokens)
    }
}

impl Canonical for Receipt {
    const NAME: &'static str = "receipt";
    fn encode_to(&self, w: &mut Writer) {
        w.put(&self.node_id);
        w.put(&self.request_id);
        w.str(&self.model_id);
        w.put(&self.artifact_digest);
        w.str(&self.backend);
        w.put(&self.mode);
        w.u32(self.prompt_tokens);
        w.u32(self.completion_tokens);
        w.u64(self.started_at_ms);
        w.u64(self.ttft_ms);
        w.u64(self.duration_ms);
        w.u64(self.price_micro_credits);
        w.put(&self.prompt_commitment);
        w.put(&self.output_commitment);
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            node_id: r.get()?,
            request_id: r.get()?,
            model_id: read_identifier(r, MAX_MODEL_ID_LEN, "model_id")?,
            artifact_digest: r.get()?,
            backend: read_identifier(r, MAX_BACKEND_LEN, "backend")?,
            mode: r.get()?,
            prompt_tokens: r.u32("prompt_tokens")?,
            completion_tokens: r.u32("completion_tokens")?,
            started_at_ms: r.u64("started_at_ms")?,
            ttft_ms: r.u64("ttft_ms")?,
            duration_ms: r.u64("duration_ms")?,
            price_micro_credits: r.u64("price_micro_credits")?,
            prompt_commitment: r.get()?,
            output_commitment: r.get()?,
        })
    }
}

impl SignedKind for Receipt {
    const KIND: Kind = Kind::Receipt;
    fn claimed_node_id(&self) -> Option<NodeId> {
        Some(self.node_id)
    }
}

/// Validates `model_id` / `backend` up front (the same checks `sign` applies).
pub fn check_receipt_fields(model_id: &str, backend: &str) -> Result<()> {
    check_identifier("model_id", model_id, MAX_MODEL_ID_LEN as usize)?;
    check_identifier("backend", backend, MAX_BACKEND_LEN as usize)
}

impl Signed<Receipt> {
    /// The receipt's stable id (see [`ReceiptId`]).
    pub fn receipt_id(&self) -> ReceiptId {
        ReceiptId(self.object_hash())
    }

    /// The public summary (no commitments, no request id, nothing private).
    pub fn summary(&self) -> ReceiptSummary {
        let b = self.body();
        ReceiptSummary {
            receipt_id: self.receipt_id(),
            node_id: b.node_id,
            model_id: b.model_id.clone(),
            artifact_digest: b.artifact_digest,
            backend: b.backend.clone(),
            mode: b.mode,
            prompt_tokens: b.prompt_tokens,
            completion_tokens: b.completion_tokens,
            started_at_ms: b.started_at_ms,
            ttft_ms: b.ttft_ms,
            duration_ms: b.duration_ms,
            price_micro_credits: b.price_micro_credits,
        }
    }
}

/// What may leave the node publicly about a receipt (control plane, explorer, chain).
///
/// By construction it has no field that could hold a prompt, an output, a salt, a key, a key
/// id, a customer identity, a URL or a path: only ids, hashes, counts, times and totals.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptSummary {
    /// Receipt id.
    pub receipt_id: ReceiptId,
    /// Serving node.
    pub node_id: NodeId,
    /// Model id.
    pub model_id: String,
    /// Model artifact digest.
    pub artifact_digest: Sha256Digest,
    /// Backend name.
    pub backend: String,
    /// Operating mode.
    pub mode: OperatingMode,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
    /// Start time, unix ms.
    pub started_at_ms: u64,
    /// Time to first token, ms.
    pub ttft_ms: u64,
    /// Duration, ms.
    pub duration_ms: u64,
    /// Price, micro-credits.
    pub price_micro_credits: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CoreError;

    fn sample(key: &NodeKey) -> Receipt {
        let salt = CommitmentSalt::from_bytes([5; 32]);
        Receipt {
            node_id: key.node_id(),
            request_id: RequestId([1; 16]),
            model_id: "smollm2".into(),
            artifact_digest: Sha256Digest::of(b"x"),
            backend: "llama.cpp".into(),
            mode: OperatingMode::Local,
            prompt_tokens: 1,
            completion_tokens: 2,
            started_at_ms: 3,
            ttft_ms: 4,
            duration_ms: 5,
            price_micro_credits: 6,
            prompt_commitment: Commitment::prompt(&salt, b"p"),
            output_commitment: Commitment::output(&salt, b"o"),
        }
    }

    #[test]
    fn sign_encode_decode_verify() {
        let key = NodeKey::from_seed([1; 32]);
        let s = sample(&key).sign(&key).unwrap();
        let b = s.encode();
        let d = SignedReceipt::decode(&b).unwrap();
        assert_eq!(d, s);
        d.verify(&key.public()).unwrap();
        assert_eq!(d.verify_self_certified().unwrap(), key.node_id());
        let other = NodeKey::from_seed([2; 32]);
        assert!(matches!(d.verify(&other.public()), Err(CoreError::SignerMismatch { .. })));
    }

    #[test]
    fn signing_with_another_nodes_key_is_refused() {
        let key = NodeKey::from_seed([1; 32]);
        let other = NodeKey::from_seed([2; 32]);
        assert!(matches!(sample(&key).sign(&other), Err(CoreError::NodeIdMismatch { .. })));
    }

    #[test]
    fn bad_fields_are_refused_at_sign_time() {
        let key = NodeKey::from_seed([1; 32]);
        let mut r = sample(&key);
        r.model_id = "../../etc/passwd".into();
        assert!(r.sign(&key).is_err());
        let mut r = sample(&key);
        r.backend = "x".repeat(65);
        assert!(matches!(r.sign(&key), Err(CoreError::LengthTooLarge { .. })));
    }

    #[test]
    fn commitments_hide_and_open() {
        let salt = CommitmentSalt::from_bytes([7; 32]);
        let c = Commitment::prompt(&salt, b"secret prompt");
        assert!(c.opens_to(&salt, PROMPT_COMMITMENT_TAG, b"secret prompt"));
        assert!(!c.opens_to(&salt, PROMPT_COMMITMENT_TAG, b"secret prompT"));
        assert!(!c.opens_to(&salt, OUTPUT_COMMITMENT_TAG, b"secret prompt"));
        assert_ne!(c, Commitment::prompt(&CommitmentSalt::from_bytes([8; 32]), b"secret prompt"));
        assert_eq!(format!("{salt:?}"), "CommitmentSalt(<redacted>)");
    }

    #[test]
    fn summary_has_exactly_the_public_keys() {
        let key = NodeKey::from_seed([1; 32]);
        let s = sample(&key).sign(&key).unwrap();
        let v = serde_json::to_value(s.summary()).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "artifact_digest",
                "backend",
                "completion_tokens",
                "duration_ms",
                "mode",
                "model_id",
                "node_id",
                "price_micro_credits",
                "prompt_tokens",
                "receipt_id",
                "started_at_ms",
                "ttft_ms"
            ]
        );
    }

    #[test]
    fn json_round_trip_validates() {
        let key = NodeKey::from_seed([1; 32]);
        let s = sample(&key).sign(&key).unwrap();
        let j = serde_json::to_string(&s).unwrap();
        let back: SignedReceipt = serde_json::from_str(&j).unwrap();
        back.verify(&key.public()).unwrap();
        assert_eq!(back.encode(), s.encode());
        let tampered = j.replace("\"prompt_tokens\":1", "\"prompt_tokens\":9");
        let t: SignedReceipt = serde_json::from_str(&tampered).unwrap();
        assert!(matches!(t.verify(&key.public()), Err(CoreError::InvalidSignature { .. })));
        let bad_id = j.replace("smollm2", "../x");
        assert!(serde_json::from_str::<SignedReceipt>(&bad_id).is_err());
    }
}
