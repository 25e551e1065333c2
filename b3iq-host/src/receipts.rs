//! Signed usage receipts: built with b3iq-core, stored in state.db (with usage) in one
//! transaction before the response that they account for completes.

use b3iq_core::identity::{NodeKey, NodePublicKey};
use b3iq_core::receipt::{Commitment, CommitmentSalt, Receipt, RequestId, SignedReceipt};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::db::Db;
use crate::error::{HostError, Result};
use crate::state::{NodeState, ServedModel};

/// What a finished request reports for its receipt.
#[derive(Debug, Clone)]
pub struct CompletedRequest {
    /// Random per request; also in the OpenAI response id.
    pub request_id: RequestId,
    /// The key that paid for it (`owner` for the playground).
    pub key_id: String,
    /// The model.
    pub model: ServedModel,
    /// Canonical bytes of the prompt (committed, never stored).
    pub prompt_bytes: Vec<u8>,
    /// The output text (committed, never stored).
    pub output: String,
    /// Tokens.
    pub prompt_tokens: u32,
    /// Tokens.
    pub completion_tokens: u32,
    /// Unix ms when the request arrived.
    pub started_at_ms: u64,
    /// Time to first token, ms.
    pub ttft_ms: u64,
    /// Total duration, ms.
    pub duration_ms: u64,
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
    /// Signer public key (hex).
    pub node_public_key: String,
    /// The signed receipt bytes (hex).
    pub signed: String,
    /// Whether the signature verifies against this node's key.
    pub valid: bool,
}

/// A new random request id.
pub fn new_request_id() -> RequestId {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    RequestId(b)
}

/// Sign and store a receipt (and its usage row and private salt) in one transaction.
/// Returns the receipt id. Blocking: call from `spawn_blocking` on async paths.
pub fn record(db: &Db, key: &NodeKey, price_micros_per_1k: u64, c: &CompletedRequest) -> Result<String> {
    let salt = CommitmentSalt::generate(&mut rand::rngs::OsRng);
    let total = c.prompt_tokens as u64 + c.completion_tokens as u64;
    let receipt = Receipt {
        node_id: key.node_id(),
        request_id: c.request_id,
        model_id: c.model.id.clone(),
        artifact_digest: c.model.digest,
        backend: c.model.info.backend.as_str().to_string(),
        mode: b3iq_core::mode::OperatingMode::Local,
        prompt_tokens: c.prompt_tokens,
        completion_tokens: c.completion_tokens,
        started_at_ms: c.started_at_ms,
        ttft_ms: c.ttft_ms,
        duration_ms: c.duration_ms,
        price_micro_credits: total.saturating_mul(price_micros_per_1k) / 1000,
        prompt_commitment: Commitment::prompt(&salt, &c.prompt_bytes),
        output_commitment: Commitment::output(&salt, c.output.as_bytes()),
        commitment_basis: None,
        attestation_digest: None,
    };
    let signed = receipt.sign(key).map_err(|e| HostError::Core(e.to_string()))?;
    let id = signed.receipt_id().to_hex();
    let bytes = signed.encode();
    let created = c.started_at_ms / 1000;
    db.tx(|tx| {
        tx.execute(
            "INSERT INTO receipts(id, request_id, key_id, model, prompt_tokens, completion_tokens, created_at, ttft_ms, duration_ms, signed)
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
            params![
                id,
                c.request_id.to_hex(),
                c.key_id,
                c.model.id,
                c.prompt_tokens,
                c.completion_tokens,
                created as i64,
                c.ttft_ms as i64,
                c.duration_ms as i64,
                bytes
            ],
        )?;
        tx.execute("INSERT INTO receipt_salts(receipt_id, salt) VALUES (?1, ?2)", params![id, salt.expose_secret().to_vec()])?;
        tx.execute(
            "INSERT INTO usage(at, key_id, model, prompt_tokens, completion_tokens, receipt_id) VALUES (?1,?2,?3,?4,?5,?6)",
            params![created as i64, c.key_id, c.model.id, c.prompt_tokens, c.completion_tokens, id],
        )?;
        Ok(())
    })?;
    Ok(id)
}

/// Record on the blocking pool, and count tokens in the metrics.
pub async fn record_async(st: &std::sync::Arc<NodeState>, c: CompletedRequest) -> Result<String> {
    let st2 = st.clone();
    let model = c.model.id.clone();
    let (p, o) = (c.prompt_tokens as u64, c.completion_tokens as u64);
    let id = tokio::task::spawn_blocking(move || record(&st2.db, &st2.key, st2.config.price_micros_per_1k_tokens, &c))
        .await
        .map_err(|e| HostError::Internal(format!("receipt task: {e}")))??;
    st.metrics.tokens(&model, p, o);
    Ok(id)
}

fn row(r: &rusqlite::Row<'_>, node_pk: &NodePublicKey) -> rusqlite::Result<StoredReceipt> {
    let signed: Vec<u8> = r.get(10)?;
    let (valid, pk) = match SignedReceipt::decode(&signed) {
        Ok(s) => (s.verify(node_pk).is_ok(), s.signer().to_hex()),
        Err(_) => (false, String::new()),
    };
    Ok(StoredReceipt {
        seq: r.get(0)?,
        id: r.get(1)?,
        request_id: r.get(2)?,
        key_id: r.get(3)?,
        model: r.get(4)?,
        prompt_tokens: r.get(5)?,
        completion_tokens: r.get(6)?,
        created_at: r.get::<_, i64>(7)? as u64,
        ttft_ms: r.get::<_, i64>(8)? as u64,
        duration_ms: r.get::<_, i64>(9)? as u64,
        node_public_key: pk,
        signed: hex::encode(&signed),
        valid,
    })
}

const COLS: &str = "seq, id, request_id, key_id, model, prompt_tokens, completion_tokens, created_at, ttft_ms, duration_ms, signed";

/// Newest first, `limit` at most 500, before sequence number `before`.
pub fn list(db: &Db, node_pk: &NodePublicKey, limit: u32, before: Option<i64>) -> Result<Vec<StoredReceipt>> {
    let conn = db.lock();
    let mut st = conn.prepare(&format!("SELECT {COLS} FROM receipts WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2"))?;
    let rows = st
        .query_map(params![before.unwrap_or(i64::MAX), limit.clamp(1, 500)], |r| row(r, node_pk))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// All receipts, oldest first (for export).
pub fn all(db: &Db, node_pk: &NodePublicKey) -> Result<Vec<StoredReceipt>> {
    let conn = db.lock();
    let mut st = conn.prepare(&format!("SELECT {COLS} FROM receipts ORDER BY seq"))?;
    let rows = st.query_map([], |r| row(r, node_pk))?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// One receipt by id.
pub fn get(db: &Db, node_pk: &NodePublicKey, id: &str) -> Result<Option<StoredReceipt>> {
    Ok(db
        .lock()
        .query_row(&format!("SELECT {COLS} FROM receipts WHERE id = ?1"), [id], |r| row(r, node_pk))
        .optional()?)
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
pub fn verify_all<'a>(node_pk: &NodePublicKey, items: impl IntoIterator<Item = (&'a str, &'a str)>) -> VerifyReport {
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
