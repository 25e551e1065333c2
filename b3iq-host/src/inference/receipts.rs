//! Signed usage receipts, built by b3iq-core's rules and stored in state.db (with the usage row)
//! in one transaction before the response that they account for completes.
//!
//! - **Version**: receipts are written as v2 (`docs/formats.md`); v1 receipts already stored or
//!   exported still verify.
//! - **Price**: b3iq-core's [`PriceSchedule`] from `config.json`'s `price_micros_per_1k_tokens`
//!   (its checked arithmetic and rounding: up to the next micro-credit).
//! - **Mode**: the node's real operating mode at the end of the request; a request from the
//!   gateway's tunnel is signed in `network` mode, priced by its ticket's schedule.
//! - **Commitments**: over the prompt and completion token ids (canonical bytes), or over the UTF-8
//!   text when the backend cannot report token ids, keyed with a salt derived from the node salt
//!   and the request id, so opening one receipt exposes no other.

use b3iq_core::identity::NodePublicKey;
use b3iq_core::metering::PriceSchedule;
use b3iq_core::receipt::{Receipt, RequestId, ServedContent, ServedRequest, SignedReceipt};
use b3iq_runtime::runtime::{Prompt, TokenIds};
use serde::Serialize;

use crate::context::{Context, NodeState, ServedModel};
use crate::error::{HostError, Result};
use crate::store::receipts::{self as sql, ReceiptRow};

/// What a finished request reports for its receipt.
#[derive(Debug, Clone)]
pub struct Served {
    /// Random per request; also in the OpenAI response id.
    pub request_id: RequestId,
    /// The key that paid for it (`owner` for the owner's own requests, `network` for the
    /// gateway's).
    pub key_id: String,
    /// A network request's price schedule (from its ticket): the receipt is then signed in
    /// `network` mode with it. `None`: the local schedule and the node's mode.
    pub network_price: Option<PriceSchedule>,
    /// The model.
    pub model: ServedModel,
    /// The prompt (committed, never stored).
    pub prompt: Prompt,
    /// The output text (committed, never stored).
    pub output: String,
    /// Token ids from the backend, when it reports them (committed, never stored).
    pub token_ids: Option<TokenIds>,
    /// Tokens.
    pub prompt_tokens: u32,
    /// Tokens.
    pub completion_tokens: u32,
    /// Unix ms when the request was admitted.
    pub started_at_ms: u64,
    /// Time to first token, ms.
    pub ttft_ms: u64,
    /// Total duration, ms.
    pub duration_ms: u64,
    /// The client went away before the end: the tokens produced until then are receipted.
    pub cancelled: bool,
    /// The signed inference attestation of a verifiable network request: the receipt names
    /// its object hash (`attestation_digest`) and it is stored beside the receipt.
    pub attestation: Option<b3iq_core::attestation::SignedAttestation>,
}

/// A receipt as the API lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StoredReceipt {
    /// Receipt id (hex of the blake3 object hash).
    pub id: String,
    /// Insertion order.
    pub seq: i64,
    /// Request id (hex).
    pub request_id: String,
    /// Key that made the request.
    pub key_id: String,
    /// Model id.
    pub model: String,
    /// Tokens.
    pub prompt_tokens: u32,
    /// Tokens.
    pub completion_tokens: u32,
    /// Unix seconds.
    pub created_at: u64,
    /// ms.
    pub ttft_ms: u64,
    /// ms.
    pub duration_ms: u64,
    /// The backend that served it (`llama_cpp`, `wgpu`, ...), from the signed bytes (empty when
    /// they do not decode).
    pub backend: String,
    /// Signer public key (hex).
    pub node_public_key: String,
    /// The receipt format version (1 or 2; 0 when the stored bytes do not decode).
    pub version: u8,
    /// The signed receipt bytes (hex).
    pub signed: String,
    /// Whether the signature verifies against this node's key.
    pub valid: bool,
    /// `completed`, or `cancelled` when the client went away after tokens were produced.
    pub outcome: String,
}

/// A new random request id.
pub fn new_request_id() -> RequestId {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    RequestId(b)
}

/// The price schedule of local requests (`config.json`).
///
/// # Errors
/// `Core(Overflow)` for a price too large to represent.
pub fn local_price_schedule(ctx: &Context) -> Result<PriceSchedule> {
    let p = ctx.config.price_micros_per_1k_tokens;
    Ok(PriceSchedule::per_1k(p, p)?)
}

/// Build and sign the v2 receipt of a finished request (no I/O): b3iq-core's
/// [`Receipt::new_v2`] with the local price schedule, the node's mode and its node salt.
///
/// # Errors
/// `Core` when the price overflows or a field is out of range (model id, backend name).
pub fn sign(st: &NodeState, s: &Served) -> Result<SignedReceipt> {
    // Without token ids from the backend, commit to the prompt as sent (its canonical JSON) and
    // to the output text, with the token counts the backend reported.
    let prompt_json;
    let content = match &s.token_ids {
        Some(t) => ServedContent::TokenIds {
            prompt: &t.prompt,
            completion: &t.completion,
        },
        None => {
            prompt_json =
                serde_json::to_string(&s.prompt).map_err(|e| HostError::Internal(e.to_string()))?;
            ServedContent::Utf8Text {
                prompt: &prompt_json,
                completion: &s.output,
                prompt_tokens: s.prompt_tokens,
                completion_tokens: s.completion_tokens,
            }
        }
    };
    let served = ServedRequest {
        node_id: st.node_id,
        request_id: s.request_id,
        model_id: s.model.id.clone(),
        artifact_digest: s.model.digest,
        backend: s.model.info.backend.as_str().to_string(),
        mode: if s.network_price.is_some() {
            b3iq_core::OperatingMode::Network
        } else {
            st.mode()
        },
        started_at_ms: s.started_at_ms,
        ttft_ms: s.ttft_ms,
        duration_ms: s.duration_ms,
        content,
        attestation_digest: s
            .attestation
            .as_ref()
            .map(|a| b3iq_core::Hash32(a.object_hash())),
    };
    let price = match s.network_price {
        Some(p) => p,
        None => local_price_schedule(st)?,
    };
    let receipt = Receipt::new_v2(served, &price, &st.node_salt)?;
    Ok(receipt.sign(&st.key)?)
}

/// Sign and store a receipt with its usage row in one transaction. Returns the receipt id and
/// the signed receipt's encoding.
/// Blocking: call from `spawn_blocking` on async paths.
///
/// # Errors
/// As [`sign`]; `Db` when it cannot be stored (then the response must not complete).
pub fn record(st: &NodeState, s: &Served) -> Result<(String, Vec<u8>)> {
    let signed = sign(st, s)?;
    let id = signed.receipt_id().to_hex();
    // The usage row counts what the receipt says (with token ids, their lengths).
    let (prompt_tokens, completion_tokens) =
        (signed.body().prompt_tokens, signed.body().completion_tokens);
    let attestation = s.attestation.as_ref().map(|a| a.encode());
    sql::insert_attested(
        &st.db,
        &ReceiptRow {
            seq: 0,
            id: id.clone(),
            request_id: s.request_id.to_hex(),
            key_id: s.key_id.clone(),
            model: s.model.id.clone(),
            prompt_tokens,
            completion_tokens,
            created_at: s.started_at_ms / 1000,
            ttft_ms: s.ttft_ms,
            duration_ms: s.duration_ms,
            signed: signed.encode(),
            outcome: if s.cancelled {
                "cancelled"
            } else {
                "completed"
            }
            .to_string(),
        },
        attestation.as_deref(),
    )?;
    Ok((id, signed.encode()))
}

fn stored(r: ReceiptRow, node_pk: &NodePublicKey) -> StoredReceipt {
    let (valid, pk, version, backend) = match SignedReceipt::decode(&r.signed) {
        Ok(s) => (
            s.verify(node_pk).is_ok(),
            s.signer().to_hex(),
            s.version(),
            s.body().backend.clone(),
        ),
        Err(_) => (false, String::new(), 0, String::new()),
    };
    StoredReceipt {
        seq: r.seq,
        id: r.id,
        request_id: r.request_id,
        key_id: r.key_id,
        model: r.model,
        prompt_tokens: r.prompt_tokens,
        completion_tokens: r.completion_tokens,
        created_at: r.created_at,
        ttft_ms: r.ttft_ms,
        duration_ms: r.duration_ms,
        backend,
        node_public_key: pk,
        version,
        signed: hex::encode(&r.signed),
        valid,
        outcome: r.outcome,
    }
}

/// Newest first, `limit` at most 500, before sequence number `before`.
///
/// # Errors
/// `Db`.
pub fn list(ctx: &Context, limit: u32, before: Option<i64>) -> Result<Vec<StoredReceipt>> {
    let pk = ctx.key.public();
    Ok(sql::list(&ctx.db, limit, before)?
        .into_iter()
        .map(|r| stored(r, &pk))
        .collect())
}

/// All receipts, oldest first (for export).
///
/// # Errors
/// `Db`.
pub fn all(ctx: &Context) -> Result<Vec<StoredReceipt>> {
    let pk = ctx.key.public();
    Ok(sql::all(&ctx.db)?
        .into_iter()
        .map(|r| stored(r, &pk))
        .collect())
}

/// One receipt by id.
///
/// # Errors
/// `Db`.
pub fn get(ctx: &Context, id: &str) -> Result<Option<StoredReceipt>> {
    let pk = ctx.key.public();
    Ok(sql::get(&ctx.db, id)?.map(|r| stored(r, &pk)))
}

/// Result of an offline verification of exported receipts.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct VerifyReport {
    /// Receipts checked.
    pub checked: usize,
    /// Valid signatures by the expected node whose id matches the stored id.
    pub valid: usize,
    /// Ids of invalid ones, with the reason.
    pub invalid: Vec<(String, String)>,
    /// Duplicate request ids.
    pub duplicate_request_ids: usize,
}

/// Verify signed receipts (hex) offline against a node public key.
pub fn verify_all<'a>(
    node_pk: &NodePublicKey,
    items: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> VerifyReport {
    let mut rep = VerifyReport::default();
    let mut seen = std::collections::HashSet::new();
    for (id, signed_hex) in items {
        rep.checked += 1;
        let res = hex::decode(signed_hex)
            .map_err(|e| format!("not hex: {e}"))
            .and_then(|b| SignedReceipt::decode(&b).map_err(|e| e.to_string()))
            .and_then(|s| {
                s.verify(node_pk).map_err(|e| e.to_string())?;
                if s.receipt_id().to_hex() != id {
                    return Err("receipt id does not match its content".to_string());
                }
                if s.body().node_id != node_pk.node_id() {
                    return Err("receipt names another node".to_string());
                }
                Ok(s.body().request_id)
            });
        match res {
            Ok(rid) => {
                if !seen.insert(rid) {
                    rep.duplicate_request_ids += 1;
                }
                rep.valid += 1;
            }
            Err(e) => rep.invalid.push((id.to_string(), e)),
        }
    }
    rep
}
