//! Usage receipts: what a node signs for every completed request.
//!
//! Two versions are decoded side by side (`docs/formats.md` §3.1):
//!
//! * **Version 2** (what [`Receipt::new_v2`] writes): the v1 fields plus a
//!   [`CommitmentBasis`] and an optional attestation digest. The commitments cover canonical
//!   bytes of the prompt and completion **token ids** (or their UTF-8 text, for backends that
//!   cannot report token ids), keyed with a per-receipt salt that [`NodeSalt::receipt_salt`]
//!   derives from the node's secret salt and the request id, so revealing one receipt's salt
//!   to open it lets nobody check any other receipt's commitments.
//! * **Version 1** (older exports): commitments over bytes chosen by the host, salted with a
//!   salt the node stored per receipt. Still decoded and verified, with the same receipt id.
//!
//! The price is [`PriceSchedule::price`] of the token counts (integer micro-credits, rounded
//! up, overflow-checked).
//!
//! ```
//! use b3iq_core::{identity::NodeKey, receipt::*, digest::Sha256Digest, mode::OperatingMode};
//! use b3iq_core::metering::PriceSchedule;
//! let key = NodeKey::from_seed([1; 32]);
//! let node_salt = NodeSalt::from_bytes([2; 32]);
//! let prompt = [1u32, 15043, 3186];
//! let completion = [22557, 29991, 2];
//! let receipt = Receipt::new_v2(
//!     ServedRequest {
//!         node_id: key.node_id(),
//!         request_id: RequestId([3; 16]),
//!         model_id: "smollm2-135m-instruct:q4_1".into(),
//!         artifact_digest: Sha256Digest::of(b"model bytes"),
//!         backend: "llama.cpp".into(),
//!         mode: OperatingMode::Managed,
//!         started_at_ms: 1_700_000_000_000,
//!         ttft_ms: 50,
//!         duration_ms: 900,
//!         content: ServedContent::TokenIds { prompt: &prompt, completion: &completion },
//!         attestation_digest: None,
//!     },
//!     &PriceSchedule { prompt_per_1m_tokens: 100, completion_per_1m_tokens: 300, per_request: 5 },
//!     &node_salt,
//! )
//! .unwrap();
//! assert_eq!(receipt.price_micro_credits, 6); // 5 + ceil((3 * 100 + 3 * 300) / 1e6)
//! let signed = receipt.sign(&key).unwrap();
//! let back = SignedReceipt::decode(&signed.encode()).unwrap();
//! back.verify(&key.public()).unwrap();
//! assert_eq!((back.version(), back.receipt_id()), (2, signed.receipt_id()));
//! // Opening: reveal this receipt's salt (never the node salt) and the token ids.
//! let salt = node_salt.receipt_salt(&RequestId([3; 16]));
//! assert!(back.body().opens_token_ids(&salt, &prompt, &completion));
//! ```

use rand_core::CryptoRngCore;
use zeroize::Zeroize;

use crate::bytes::{fixed_bytes, Hash32};
use crate::codec::{check_identifier, read_identifier, Canonical, Reader, Writer};
use crate::digest::Sha256Digest;
use crate::error::{CoreError, Result};
use crate::identity::{NodeId, NodeKey};
use crate::metering::PriceSchedule;
use crate::mode::OperatingMode;
use crate::signed::{Kind, Signed, SignedKind};

/// Maximum length of `model_id` in bytes.
pub const MAX_MODEL_ID_LEN: u32 = 128;
/// Maximum length of `backend` in bytes.
pub const MAX_BACKEND_LEN: u32 = 64;

/// Version-1 commitment role tag for prompts.
pub const PROMPT_COMMITMENT_TAG: &[u8] = b"b3iq/commit/prompt/v1";
/// Version-1 commitment role tag for outputs.
pub const OUTPUT_COMMITMENT_TAG: &[u8] = b"b3iq/commit/output/v1";

/// Version-2 commitment tag: prompt token ids.
pub const PROMPT_TOKEN_IDS_TAG: &[u8] = b"b3iq/commit/v2/prompt/token-ids";
/// Version-2 commitment tag: completion token ids.
pub const COMPLETION_TOKEN_IDS_TAG: &[u8] = b"b3iq/commit/v2/completion/token-ids";
/// Version-2 commitment tag: prompt UTF-8 text.
pub const PROMPT_TEXT_TAG: &[u8] = b"b3iq/commit/v2/prompt/utf8";
/// Version-2 commitment tag: completion UTF-8 text.
pub const COMPLETION_TEXT_TAG: &[u8] = b"b3iq/commit/v2/completion/utf8";

/// Domain tag of the per-receipt salt derivation (see [`NodeSalt::receipt_salt`]).
pub const RECEIPT_SALT_TAG: &[u8] = b"b3iq/receipt-salt/v1";

fixed_bytes!(
    /// A request id (16 bytes, hex in JSON), chosen by the host per request. Unique per
    /// receipt: it also keys the receipt's commitment salt.
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

/// The 32-byte key of one receipt's commitments. Revealing it opens that receipt only.
///
/// Version 2 derives it with [`NodeSalt::receipt_salt`]; version-1 receipts used a random one
/// stored per receipt. Never put it in a receipt or a public payload unless you mean to open
/// the receipt; `Debug` redacts it and it is zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct CommitmentSalt([u8; 32]);

impl CommitmentSalt {
    /// A fresh random salt (version-1 style; version 2 derives salts from a [`NodeSalt`]).
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        Self(s)
    }
    /// Wraps stored or revealed bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The secret bytes (to store privately, or to reveal when opening this one receipt).
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

/// The node's long-lived 32-byte secret from which every version-2 receipt salt is derived.
///
/// Never leaves the node (not even to open a receipt: reveal [`NodeSalt::receipt_salt`]
/// instead). `Debug` redacts it and it is zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeSalt([u8; 32]);

impl NodeSalt {
    /// A fresh random node salt (generate once, store with the node key).
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        Self(s)
    }
    /// Wraps stored bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The secret bytes (for the node's private storage only).
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// The commitment salt of the receipt for `request_id`:
    /// `blake3_keyed(key = node salt, "b3iq/receipt-salt/v1" || request_id)`.
    ///
    /// It is keyed by the request id, not the receipt id, because the receipt id hashes the
    /// signed body, which contains the commitments made with this salt. Request ids are unique
    /// per receipt. Without the node salt no receipt salt can be computed, and one receipt salt
    /// tells nothing about another (blake3's keyed mode is a PRF).
    pub fn receipt_salt(&self, request_id: &RequestId) -> CommitmentSalt {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(RECEIPT_SALT_TAG);
        h.update(&request_id.0);
        CommitmentSalt(*h.finalize().as_bytes())
    }
}

impl Drop for NodeSalt {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for NodeSalt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSalt(<redacted>)")
    }
}

/// What a version-2 receipt's commitments are computed over. Wire: one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitmentBasis {
    /// The prompt's and the completion's token ids (`u32`), as the backend tokenized and
    /// sampled them. Wire tag 0. The token counts are the lengths of the two lists.
    TokenIds,
    /// The prompt's and the completion's UTF-8 text, for backends that cannot report token
    /// ids (an OpenAI-compatible upstream). Wire tag 1.
    Utf8Text,
}

impl CommitmentBasis {
    /// Both bases in wire-tag order.
    pub const ALL: [CommitmentBasis; 2] = [CommitmentBasis::TokenIds, CommitmentBasis::Utf8Text];

    /// Wire tag.
    pub const fn tag(self) -> u8 {
        match self {
            CommitmentBasis::TokenIds => 0,
            CommitmentBasis::Utf8Text => 1,
        }
    }

    /// The domain tags of the (prompt, completion) commitments on this basis.
    pub const fn role_tags(self) -> (&'static [u8], &'static [u8]) {
        match self {
            CommitmentBasis::TokenIds => (PROMPT_TOKEN_IDS_TAG, COMPLETION_TOKEN_IDS_TAG),
            CommitmentBasis::Utf8Text => (PROMPT_TEXT_TAG, COMPLETION_TEXT_TAG),
        }
    }

    /// Lowercase name, as in JSON (`token_ids`, `utf8_text`).
    pub const fn as_str(self) -> &'static str {
        match self {
            CommitmentBasis::TokenIds => "token_ids",
            CommitmentBasis::Utf8Text => "utf8_text",
        }
    }
}

impl Canonical for CommitmentBasis {
    const NAME: &'static str = "commitment basis";
    fn encode_to(&self, w: &mut Writer) {
        w.u8(self.tag());
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        let tag = r.u8("commitment_basis")?;
        CommitmentBasis::ALL
            .into_iter()
            .find(|b| b.tag() == tag)
            .ok_or(CoreError::InvalidTag { field: "commitment_basis", tag })
    }
}

fn u32_len(field: &'static str, len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| CoreError::LengthTooLarge {
        field,
        len: len as u64,
        max: u64::from(u32::MAX),
    })
}

/// The canonical bytes a token-id commitment covers: `u32` LE count, then each id as `u32` LE
/// (the codec's list of `u32`).
///
/// # Errors
///
/// [`CoreError::LengthTooLarge`] for more than `u32::MAX` ids.
pub fn token_ids_bytes(token_ids: &[u32]) -> Result<Vec<u8>> {
    let n = u32_len("token_ids", token_ids.len())?;
    let mut w = Writer::with_capacity(4 + 4 * token_ids.len());
    w.u32(n);
    for id in token_ids {
        w.u32(*id);
    }
    Ok(w.into_bytes())
}

/// The canonical bytes a text commitment covers: `u32` LE byte length, then the UTF-8 bytes
/// (the codec's string).
///
/// # Errors
///
/// [`CoreError::LengthTooLarge`] for text longer than `u32::MAX` bytes.
pub fn text_bytes(text: &str) -> Result<Vec<u8>> {
    u32_len("text", text.len())?;
    let mut w = Writer::with_capacity(4 + text.len());
    w.str(text);
    Ok(w.into_bytes())
}

impl Commitment {
    /// `blake3_keyed(key = salt, role_tag || data)`.
    pub fn commit(salt: &CommitmentSalt, role_tag: &[u8], data: &[u8]) -> Self {
        let mut h = blake3::Hasher::new_keyed(&salt.0);
        h.update(role_tag);
        h.update(data);
        Self(*h.finalize().as_bytes())
    }
    /// Version 1: commitment to prompt bytes.
    pub fn prompt(salt: &CommitmentSalt, prompt: &[u8]) -> Self {
        Self::commit(salt, PROMPT_COMMITMENT_TAG, prompt)
    }
    /// Version 1: commitment to output bytes.
    pub fn output(salt: &CommitmentSalt, output: &[u8]) -> Self {
        Self::commit(salt, OUTPUT_COMMITMENT_TAG, output)
    }

    fn commit_token_ids(salt: &CommitmentSalt, role_tag: &[u8], field: &'static str, ids: &[u32]) -> Result<Self> {
        let n = u32_len(field, ids.len())?;
        // Streams exactly `role_tag || token_ids_bytes(ids)` without building it.
        let mut h = blake3::Hasher::new_keyed(&salt.0);
        h.update(role_tag);
        h.update(&n.to_le_bytes());
        let mut buf = [0u8; 4 * 256];
        for chunk in ids.chunks(256) {
            for (dst, id) in buf.chunks_exact_mut(4).zip(chunk) {
                dst.copy_from_slice(&id.to_le_bytes());
            }
            h.update(&buf[..4 * chunk.len()]);
        }
        Ok(Self(*h.finalize().as_bytes()))
    }

    fn commit_text(salt: &CommitmentSalt, role_tag: &[u8], field: &'static str, text: &str) -> Result<Self> {
        let n = u32_len(field, text.len())?;
        let mut h = blake3::Hasher::new_keyed(&salt.0);
        h.update(role_tag);
        h.update(&n.to_le_bytes());
        h.update(text.as_bytes());
        Ok(Self(*h.finalize().as_bytes()))
    }

    /// Version 2: commitment to the prompt's token ids,
    /// `blake3_keyed(salt, PROMPT_TOKEN_IDS_TAG || token_ids_bytes(ids))`.
    ///
    /// # Errors
    ///
    /// [`CoreError::LengthTooLarge`] for more than `u32::MAX` ids.
    pub fn prompt_token_ids(salt: &CommitmentSalt, ids: &[u32]) -> Result<Self> {
        Self::commit_token_ids(salt, PROMPT_TOKEN_IDS_TAG, "prompt_token_ids", ids)
    }

    /// Version 2: commitment to the completion's token ids (see [`Self::prompt_token_ids`]).
    ///
    /// # Errors
    ///
    /// [`CoreError::LengthTooLarge`] for more than `u32::MAX` ids.
    pub fn completion_token_ids(salt: &CommitmentSalt, ids: &[u32]) -> Result<Self> {
        Self::commit_token_ids(salt, COMPLETION_TOKEN_IDS_TAG, "completion_token_ids", ids)
    }

    /// Version 2: commitment to the prompt's UTF-8 text,
    /// `blake3_keyed(salt, PROMPT_TEXT_TAG || text_bytes(text))`.
    ///
    /// # Errors
    ///
    /// [`CoreError::LengthTooLarge`] for text longer than `u32::MAX` bytes.
    pub fn prompt_text(salt: &CommitmentSalt, text: &str) -> Result<Self> {
        Self::commit_text(salt, PROMPT_TEXT_TAG, "prompt_text", text)
    }

    /// Version 2: commitment to the completion's UTF-8 text (see [`Self::prompt_text`]).
    ///
    /// # Errors
    ///
    /// [`CoreError::LengthTooLarge`] for text longer than `u32::MAX` bytes.
    pub fn completion_text(salt: &CommitmentSalt, text: &str) -> Result<Self> {
        Self::commit_text(salt, COMPLETION_TEXT_TAG, "completion_text", text)
    }

    /// Checks an opening (constant time).
    pub fn opens_to(&self, salt: &CommitmentSalt, role_tag: &[u8], data: &[u8]) -> bool {
        self.ct_eq(&Self::commit(salt, role_tag, data))
    }

    fn ct_eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(&other.0).into()
    }
}

/// A usage receipt (the signed body). Integers only; money in micro-credits.
///
/// The version is decided by `commitment_basis`: `None` is a version-1 receipt (which cannot
/// carry an attestation digest), `Some` a version-2 one. Build new receipts with
/// [`Receipt::new_v2`].
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
    /// Price charged, micro-credits (version 2: [`PriceSchedule::price`] of the token counts).
    pub price_micro_credits: u64,
    /// Salted blake3 commitment to the prompt (version 2: to its token ids or text).
    pub prompt_commitment: Commitment,
    /// Salted blake3 commitment to the output (version 2: to the completion's token ids or
    /// text).
    pub output_commitment: Commitment,
    /// Version 2: what the commitments cover. `None` (absent in JSON) for version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment_basis: Option<CommitmentBasis>,
    /// Version 2 only: digest of an attestation bound to this receipt, for later
    /// verification. `None` (absent in JSON) when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation_digest: Option<Hash32>,
}

/// What was served, for the commitments of a version-2 receipt. Borrowed; `Debug` shows only
/// the basis and the lengths, never the token ids or the text.
#[derive(Clone, Copy)]
pub enum ServedContent<'a> {
    /// Token ids ([`CommitmentBasis::TokenIds`]); the receipt's token counts are the lengths.
    TokenIds {
        /// The prompt's token ids, as the backend tokenized the (templated) prompt.
        prompt: &'a [u32],
        /// The completion's token ids, as sampled.
        completion: &'a [u32],
    },
    /// UTF-8 text ([`CommitmentBasis::Utf8Text`]) with the token counts the backend reported.
    Utf8Text {
        /// The prompt text the backend received.
        prompt: &'a str,
        /// The completion text it returned.
        completion: &'a str,
        /// Prompt tokens, as the backend reported them.
        prompt_tokens: u32,
        /// Completion tokens, as the backend reported them.
        completion_tokens: u32,
    },
}

impl ServedContent<'_> {
    /// The commitment basis this content is committed on.
    pub fn basis(&self) -> CommitmentBasis {
        match self {
            ServedContent::TokenIds { .. } => CommitmentBasis::TokenIds,
            ServedContent::Utf8Text { .. } => CommitmentBasis::Utf8Text,
        }
    }

    /// (prompt, completion) token counts.
    ///
    /// # Errors
    ///
    /// [`CoreError::LengthTooLarge`] for more than `u32::MAX` token ids.
    pub fn token_counts(&self) -> Result<(u32, u32)> {
        match *self {
            ServedContent::TokenIds { prompt, completion } => {
                Ok((u32_len("prompt_token_ids", prompt.len())?, u32_len("completion_token_ids", completion.len())?))
            }
            ServedContent::Utf8Text { prompt_tokens, completion_tokens, .. } => Ok((prompt_tokens, completion_tokens)),
        }
    }

    /// The (prompt, completion) commitments under `salt`.
    ///
    /// # Errors
    ///
    /// [`CoreError::LengthTooLarge`] for inputs longer than `u32::MAX` ids or bytes.
    pub fn commitments(&self, salt: &CommitmentSalt) -> Result<(Commitment, Commitment)> {
        match *self {
            ServedContent::TokenIds { prompt, completion } => {
                Ok((Commitment::prompt_token_ids(salt, prompt)?, Commitment::completion_token_ids(salt, completion)?))
            }
            ServedContent::Utf8Text { prompt, completion, .. } => {
                Ok((Commitment::prompt_text(salt, prompt)?, Commitment::completion_text(salt, completion)?))
            }
        }
    }
}

impl std::fmt::Debug for ServedContent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServedContent::TokenIds { prompt, completion } => f
                .debug_struct("TokenIds")
                .field("prompt_len", &prompt.len())
                .field("completion_len", &completion.len())
                .finish(),
            ServedContent::Utf8Text { prompt, completion, prompt_tokens, completion_tokens } => f
                .debug_struct("Utf8Text")
                .field("prompt_bytes", &prompt.len())
                .field("completion_bytes", &completion.len())
                .field("prompt_tokens", prompt_tokens)
                .field("completion_tokens", completion_tokens)
                .finish(),
        }
    }
}

/// One served request, as [`Receipt::new_v2`] turns it into a version-2 receipt.
#[derive(Debug, Clone)]
pub struct ServedRequest<'a> {
    /// The serving node (the key that will sign).
    pub node_id: NodeId,
    /// The request id: unique per receipt, it keys the receipt's commitment salt.
    pub request_id: RequestId,
    /// Model id (identifier, at most 128 bytes).
    pub model_id: String,
    /// sha256 of the model artifact that served the request.
    pub artifact_digest: Sha256Digest,
    /// Backend name (identifier, at most 64 bytes).
    pub backend: String,
    /// The node's operating mode when it served the request.
    pub mode: OperatingMode,
    /// Start time, unix milliseconds.
    pub started_at_ms: u64,
    /// Time to first token, milliseconds.
    pub ttft_ms: u64,
    /// Total duration, milliseconds.
    pub duration_ms: u64,
    /// The prompt and completion to commit to (token ids, or text).
    pub content: ServedContent<'a>,
    /// Digest of an attestation bound to the receipt, if there is one.
    pub attestation_digest: Option<Hash32>,
}

/// A signed receipt.
pub type SignedReceipt = Signed<Receipt>;

impl Receipt {
    /// A version-2 receipt for `served`: the token counts come from the content, the price is
    /// `prices.price(prompt_tokens, completion_tokens)`, and both commitments are keyed with
    /// `node_salt.receipt_salt(&served.request_id)`.
    ///
    /// # Errors
    ///
    /// [`CoreError::Overflow`] if the price does not fit in `u64`; [`CoreError::InvalidField`]
    /// or [`CoreError::LengthTooLarge`] for a bad model id or backend, or more than `u32::MAX`
    /// tokens or text bytes.
    pub fn new_v2(served: ServedRequest<'_>, prices: &PriceSchedule, node_salt: &NodeSalt) -> Result<Receipt> {
        check_receipt_fields(&served.model_id, &served.backend)?;
        let (prompt_tokens, completion_tokens) = served.content.token_counts()?;
        let price_micro_credits = prices.price(u64::from(prompt_tokens), u64::from(completion_tokens))?;
        let salt = node_salt.receipt_salt(&served.request_id);
        let (prompt_commitment, output_commitment) = served.content.commitments(&salt)?;
        Ok(Receipt {
            node_id: served.node_id,
            request_id: served.request_id,
            model_id: served.model_id,
            artifact_digest: served.artifact_digest,
            backend: served.backend,
            mode: served.mode,
            prompt_tokens,
            completion_tokens,
            started_at_ms: served.started_at_ms,
            ttft_ms: served.ttft_ms,
            duration_ms: served.duration_ms,
            price_micro_credits,
            prompt_commitment,
            output_commitment,
            commitment_basis: Some(served.content.basis()),
            attestation_digest: served.attestation_digest,
        })
    }

    /// The receipt's version: 2 when it has a commitment basis, else 1.
    pub fn version(&self) -> u8 {
        if self.commitment_basis.is_some() {
            2
        } else {
            1
        }
    }

    /// Signs the receipt with the node key (its node id must be `key`'s).
    ///
    /// # Errors
    ///
    /// See [`Signed::sign`]; also a version-1 receipt with an attestation digest.
    pub fn sign(self, key: &NodeKey) -> Result<SignedReceipt> {
        Signed::sign(self, key)
    }

    /// Total tokens (prompt + completion).
    pub fn total_tokens(&self) -> u64 {
        u64::from(self.prompt_tokens) + u64::from(self.completion_tokens)
    }

    /// Whether `content`, with this receipt's revealed `salt`, opens it: the receipt is
    /// version 2 on `content`'s basis, both commitments match (compared in constant time), and
    /// for token ids the token counts are the lengths of the lists.
    pub fn opens(&self, salt: &CommitmentSalt, content: &ServedContent<'_>) -> bool {
        if self.commitment_basis != Some(content.basis()) {
            return false;
        }
        if let ServedContent::TokenIds { .. } = content {
            if content.token_counts().ok() != Some((self.prompt_tokens, self.completion_tokens)) {
                return false;
            }
        }
        match content.commitments(salt) {
            // Both are compared, so the time does not depend on which one differs.
            Ok((p, c)) => p.ct_eq(&self.prompt_commitment) & c.ct_eq(&self.output_commitment),
            Err(_) => false,
        }
    }

    /// [`Self::opens`] for the token-ids basis.
    pub fn opens_token_ids(&self, salt: &CommitmentSalt, prompt: &[u32], completion: &[u32]) -> bool {
        self.opens(salt, &ServedContent::TokenIds { prompt, completion })
    }

    /// [`Self::opens`] for the UTF-8 text basis (the token counts are not checked: the text
    /// does not determine them).
    pub fn opens_text(&self, salt: &CommitmentSalt, prompt: &str, completion: &str) -> bool {
        self.opens(
            salt,
            &ServedContent::Utf8Text { prompt, completion, prompt_tokens: self.prompt_tokens, completion_tokens: self.completion_tokens },
        )
    }
}

impl SignedKind for Receipt {
    const KIND: Kind = Kind::Receipt;

    fn version(&self) -> u8 {
        Receipt::version(self)
    }

    fn encode_body(&self, w: &mut Writer) {
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
        if let Some(basis) = &self.commitment_basis {
            w.put(basis);
            w.option(self.attestation_digest.as_ref(), |w, d| w.put(d));
        }
    }

    fn decode_body(version: u8, r: &mut Reader<'_>) -> Result<Self> {
        let mut receipt = Self {
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
            commitment_basis: None,
            attestation_digest: None,
        };
        if version >= 2 {
            receipt.commitment_basis = Some(r.get()?);
            receipt.attestation_digest = r.option("attestation_digest", |r| r.get())?;
        }
        Ok(receipt)
    }

    fn check(&self) -> Result<()> {
        if self.commitment_basis.is_none() && self.attestation_digest.is_some() {
            return Err(CoreError::field(
                "attestation_digest",
                "only a version-2 receipt carries an attestation digest; set commitment_basis (build it with Receipt::new_v2)",
            ));
        }
        Ok(())
    }

    fn claimed_node_id(&self) -> Option<NodeId> {
        Some(self.node_id)
    }
}

/// Validates `model_id` / `backend` up front (the same checks `sign` applies).
///
/// # Errors
///
/// [`CoreError::InvalidField`] or [`CoreError::LengthTooLarge`] naming the field.
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
            commitment_basis: None,
            attestation_digest: None,
        }
    }

    const PROMPT: [u32; 4] = [1, 15043, 3186, 29889];
    const COMPLETION: [u32; 3] = [22557, 29991, 2];

    fn served<'a>(key: &NodeKey, request: u8, content: ServedContent<'a>) -> ServedRequest<'a> {
        ServedRequest {
            node_id: key.node_id(),
            request_id: RequestId([request; 16]),
            model_id: "smollm2".into(),
            artifact_digest: Sha256Digest::of(b"x"),
            backend: "llama.cpp".into(),
            mode: OperatingMode::Managed,
            started_at_ms: 3,
            ttft_ms: 4,
            duration_ms: 5,
            content,
            attestation_digest: None,
        }
    }

    fn v2(key: &NodeKey, salt: &NodeSalt, request: u8) -> Receipt {
        let content = ServedContent::TokenIds { prompt: &PROMPT, completion: &COMPLETION };
        Receipt::new_v2(served(key, request, content), &PriceSchedule::FREE, salt).unwrap()
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

    #[test]
    fn v2_signs_decodes_and_verifies_with_its_own_version() {
        let key = NodeKey::from_seed([1; 32]);
        let salt = NodeSalt::from_bytes([9; 32]);
        let r = v2(&key, &salt, 1);
        assert_eq!((r.version(), r.commitment_basis), (2, Some(CommitmentBasis::TokenIds)));
        assert_eq!((r.prompt_tokens, r.completion_tokens), (4, 3));
        let s = r.clone().sign(&key).unwrap();
        assert_eq!(s.version(), 2);
        let enc = s.encode();
        assert_eq!(enc[0], 2, "envelope version byte");
        let d = SignedReceipt::decode(&enc).unwrap();
        assert_eq!(d, s);
        d.verify(&key.public()).unwrap();
        // v1 fields, then basis (1 byte) and the attestation flag (1 byte)
        let v1_len = {
            let mut one = r.clone();
            one.commitment_basis = None;
            one.sign(&key).unwrap().body_bytes().len()
        };
        assert_eq!(s.body_bytes().len(), v1_len + 2);
        // the receipt id covers the version byte
        let mut h = blake3::Hasher::new();
        h.update(b"b3iq/receipt/v1");
        h.update(&[2]);
        h.update(s.body_bytes());
        assert_eq!(s.receipt_id().0, *h.finalize().as_bytes());
        // with an attestation digest: 32 more bytes, and it round-trips
        let mut a = r;
        a.attestation_digest = Some(Hash32([0xab; 32]));
        let sa = a.sign(&key).unwrap();
        assert_eq!(sa.body_bytes().len(), v1_len + 2 + 32);
        assert_eq!(SignedReceipt::decode(&sa.encode()).unwrap().body().attestation_digest, Some(Hash32([0xab; 32])));
    }

    #[test]
    fn versions_decode_side_by_side_and_do_not_mix() {
        let key = NodeKey::from_seed([1; 32]);
        let one = sample(&key).sign(&key).unwrap();
        let two = v2(&key, &NodeSalt::from_bytes([9; 32]), 1).sign(&key).unwrap();
        assert_eq!(SignedReceipt::decode(&one.encode()).unwrap().version(), 1);
        assert_eq!(SignedReceipt::decode(&two.encode()).unwrap().version(), 2);
        // a v1 body under version byte 2 is short; a v2 body under byte 1 has trailing bytes
        let mut e = one.encode();
        e[0] = 2;
        assert!(matches!(SignedReceipt::decode(&e), Err(CoreError::Truncated { .. })));
        let mut e = two.encode();
        e[0] = 1;
        assert!(matches!(SignedReceipt::decode(&e), Err(CoreError::TrailingBytes { .. })));
        for v in [0u8, 3, 255] {
            let mut e = two.encode();
            e[0] = v;
            assert!(matches!(SignedReceipt::decode(&e), Err(CoreError::UnsupportedVersion { found, supported: 2, .. }) if found == v));
        }
        // an unknown basis tag is refused
        let mut body = two.body_bytes().to_vec();
        let at = body.len() - 2;
        body[at] = 7;
        assert!(matches!(Receipt::from_body_bytes(2, &body), Err(CoreError::InvalidTag { field: "commitment_basis", tag: 7 })));
        // JSON: the envelope version must match the body's fields
        let j = serde_json::to_value(&two).unwrap();
        assert_eq!(j["version"], 2);
        assert_eq!(j["body"]["commitment_basis"], "token_ids");
        assert!(j["body"].get("attestation_digest").is_none());
        let mut wrong = j.clone();
        wrong["version"] = 1.into();
        assert!(serde_json::from_value::<SignedReceipt>(wrong).is_err());
        let mut wrong = serde_json::to_value(&one).unwrap();
        wrong["version"] = 2.into();
        assert!(serde_json::from_value::<SignedReceipt>(wrong).is_err());
        let mut future = j;
        future["version"] = 3.into();
        let e = serde_json::from_value::<SignedReceipt>(future).unwrap_err().to_string();
        assert!(e.contains("unsupported receipt version 3"), "{e}");
    }

    #[test]
    fn a_v1_receipt_cannot_carry_an_attestation() {
        let key = NodeKey::from_seed([1; 32]);
        let mut r = sample(&key);
        r.attestation_digest = Some(Hash32([1; 32]));
        assert!(matches!(r.sign(&key), Err(CoreError::InvalidField { field: "attestation_digest", .. })));
    }

    #[test]
    fn v2_commitments_cover_the_canonical_bytes_with_one_tag_per_basis_and_role() {
        let salt = CommitmentSalt::from_bytes([7; 32]);
        let ids = [0u32, 1, 0xdead_beef, u32::MAX];
        let bytes = token_ids_bytes(&ids).unwrap();
        assert_eq!(&bytes[..4], &[4, 0, 0, 0]);
        assert_eq!(&bytes[12..16], &[0xef, 0xbe, 0xad, 0xde]);
        assert_eq!(bytes.len(), 4 + 16);
        assert_eq!(Commitment::prompt_token_ids(&salt, &ids).unwrap(), Commitment::commit(&salt, PROMPT_TOKEN_IDS_TAG, &bytes));
        assert_eq!(Commitment::completion_token_ids(&salt, &ids).unwrap(), Commitment::commit(&salt, COMPLETION_TOKEN_IDS_TAG, &bytes));
        // more than one hashing chunk (256 ids) streams the same bytes
        let many: Vec<u32> = (0..1000).collect();
        assert_eq!(
            Commitment::prompt_token_ids(&salt, &many).unwrap(),
            Commitment::commit(&salt, PROMPT_TOKEN_IDS_TAG, &token_ids_bytes(&many).unwrap())
        );
        let text = "héllo";
        let tb = text_bytes(text).unwrap();
        assert_eq!(tb, [&[6u8, 0, 0, 0][..], text.as_bytes()].concat());
        assert_eq!(Commitment::prompt_text(&salt, text).unwrap(), Commitment::commit(&salt, PROMPT_TEXT_TAG, &tb));
        assert_eq!(Commitment::completion_text(&salt, text).unwrap(), Commitment::commit(&salt, COMPLETION_TEXT_TAG, &tb));
        // tags are distinct and none is a prefix of another (so tag || data is unambiguous)
        let tags = [PROMPT_COMMITMENT_TAG, OUTPUT_COMMITMENT_TAG, PROMPT_TOKEN_IDS_TAG, COMPLETION_TOKEN_IDS_TAG, PROMPT_TEXT_TAG, COMPLETION_TEXT_TAG];
        for (i, a) in tags.iter().enumerate() {
            for (j, b) in tags.iter().enumerate() {
                if i != j {
                    assert!(!a.starts_with(b), "{:?} starts with {:?}", String::from_utf8_lossy(a), String::from_utf8_lossy(b));
                }
            }
        }
        // roles and bases never collide on the same data
        let empty_ids = Commitment::prompt_token_ids(&salt, &[]).unwrap();
        assert_ne!(empty_ids, Commitment::completion_token_ids(&salt, &[]).unwrap());
        assert_ne!(empty_ids, Commitment::prompt_text(&salt, "").unwrap());
        assert_eq!(CommitmentBasis::TokenIds.role_tags(), (PROMPT_TOKEN_IDS_TAG, COMPLETION_TOKEN_IDS_TAG));
        assert_eq!(CommitmentBasis::Utf8Text.role_tags(), (PROMPT_TEXT_TAG, COMPLETION_TEXT_TAG));
    }

    #[test]
    fn receipt_salts_are_keyed_by_the_node_salt_and_unique_per_request() {
        let node = NodeSalt::from_bytes([9; 32]);
        let rid = RequestId([1; 16]);
        let s = node.receipt_salt(&rid);
        let mut by_hand = blake3::Hasher::new_keyed(&[9; 32]);
        by_hand.update(b"b3iq/receipt-salt/v1");
        by_hand.update(&[1; 16]);
        assert_eq!(s.expose_secret(), by_hand.finalize().as_bytes());
        // keyed: without the node salt (unkeyed hash, or another node's salt) it differs
        let mut unkeyed = blake3::Hasher::new();
        unkeyed.update(b"b3iq/receipt-salt/v1");
        unkeyed.update(&[1; 16]);
        assert_ne!(s.expose_secret(), unkeyed.finalize().as_bytes());
        assert_ne!(&s, &NodeSalt::from_bytes([8; 32]).receipt_salt(&rid));
        assert_ne!(s.expose_secret(), node.expose_secret());
        assert_ne!(&s, &node.receipt_salt(&RequestId([2; 16])));
        assert_eq!(format!("{node:?}"), "NodeSalt(<redacted>)");
        assert_eq!(format!("{s:?}"), "CommitmentSalt(<redacted>)");
    }

    #[test]
    fn opening_one_receipt_does_not_open_another() {
        let key = NodeKey::from_seed([1; 32]);
        let node = NodeSalt::from_bytes([9; 32]);
        // A and B served the very same tokens; only their request ids differ.
        let a = v2(&key, &node, 0xa);
        let b = v2(&key, &node, 0xb);
        let salt_a = node.receipt_salt(&a.request_id);
        let salt_b = node.receipt_salt(&b.request_id);
        assert!(a.opens_token_ids(&salt_a, &PROMPT, &COMPLETION));
        assert!(b.opens_token_ids(&salt_b, &PROMPT, &COMPLETION));
        // A's revealed salt does not check B's commitments, even against B's true token ids.
        assert!(!b.opens_token_ids(&salt_a, &PROMPT, &COMPLETION));
        assert_ne!(Commitment::prompt_token_ids(&salt_a, &PROMPT).unwrap(), b.prompt_commitment);
        assert_ne!(Commitment::completion_token_ids(&salt_a, &COMPLETION).unwrap(), b.output_commitment);
        assert_ne!(a.prompt_commitment, b.prompt_commitment);
        // wrong data, wrong basis, wrong counts and version-1 receipts do not open
        assert!(!a.opens_token_ids(&salt_a, &PROMPT[..3], &COMPLETION));
        assert!(!a.opens_token_ids(&salt_a, &COMPLETION, &PROMPT));
        assert!(!a.opens_text(&salt_a, "", ""));
        let mut miscounted = a.clone();
        miscounted.prompt_tokens += 1;
        assert!(!miscounted.opens_token_ids(&salt_a, &PROMPT, &COMPLETION));
        assert!(!sample(&key).opens_token_ids(&salt_a, &PROMPT, &COMPLETION));
    }

    #[test]
    fn new_v2_prices_with_the_schedule_and_commits_text_for_upstreams() {
        let key = NodeKey::from_seed([1; 32]);
        let node = NodeSalt::from_bytes([9; 32]);
        let content = ServedContent::Utf8Text { prompt: "Hi", completion: "Hello!", prompt_tokens: 31, completion_tokens: 9 };
        let mut req = served(&key, 3, content);
        req.mode = OperatingMode::Network;
        req.attestation_digest = Some(Hash32([5; 32]));
        let prices = PriceSchedule { prompt_per_1m_tokens: 100, completion_per_1m_tokens: 300, per_request: 250 };
        let r = Receipt::new_v2(req.clone(), &prices, &node).unwrap();
        assert_eq!(r.price_micro_credits, prices.price(31, 9).unwrap());
        assert_eq!(r.price_micro_credits, 251, "250 + ceil((31*100 + 9*300) / 1e6)");
        assert_eq!((r.prompt_tokens, r.completion_tokens, r.mode), (31, 9, OperatingMode::Network));
        assert_eq!(r.commitment_basis, Some(CommitmentBasis::Utf8Text));
        let salt = node.receipt_salt(&r.request_id);
        assert!(r.opens_text(&salt, "Hi", "Hello!"));
        assert!(!r.opens_text(&salt, "Hello!", "Hi"));
        assert!(!r.opens_token_ids(&salt, &[], &[]));
        r.sign(&key).unwrap().verify(&key.public()).unwrap();
        // one token at a price that rounds up is never free
        let one = ServedContent::TokenIds { prompt: &[42], completion: &[] };
        let p1 = PriceSchedule { prompt_per_1m_tokens: 1, completion_per_1m_tokens: 0, per_request: 0 };
        assert_eq!(Receipt::new_v2(served(&key, 4, one), &p1, &node).unwrap().price_micro_credits, 1);
        // overflow and bad identifiers are typed errors
        let big = PriceSchedule { prompt_per_1m_tokens: u64::MAX, completion_per_1m_tokens: u64::MAX, per_request: u64::MAX };
        assert!(matches!(Receipt::new_v2(req.clone(), &big, &node), Err(CoreError::Overflow { .. })));
        let mut bad = req;
        bad.model_id = "../x".into();
        assert!(matches!(Receipt::new_v2(bad, &prices, &node), Err(CoreError::InvalidField { field: "model_id", .. })));
        // Debug never shows the content
        let dbg = format!("{:?}", served(&key, 5, content));
        assert!(!dbg.contains("Hello!") && dbg.contains("completion_bytes: 6"), "{dbg}");
    }
}
