//! SQL for signed receipts, their private commitment salts (v1 receipts only; v2 salts are
//! derived from the node salt) and the usage rows written with them.

use rusqlite::{params, OptionalExtension};

use super::Db;
use crate::error::Result;

/// A receipt row as stored (the signed bytes plus the columns the API lists).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiptRow {
    /// Insertion order.
    pub seq: i64,
    /// Receipt id (hex).
    pub id: String,
    /// Request id (hex).
    pub request_id: String,
    /// Key that paid (`owner` for the owner's own requests).
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
    /// The signed receipt bytes.
    pub signed: Vec<u8>,
    /// `completed`, or `cancelled` (the client went away after tokens were produced).
    pub outcome: String,
}

const COLS: &str = "seq, id, request_id, key_id, model, prompt_tokens, completion_tokens, created_at, ttft_ms, duration_ms, signed, outcome";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReceiptRow> {
    Ok(ReceiptRow {
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
        signed: r.get(10)?,
        outcome: r.get(11)?,
    })
}

/// Store a receipt and its usage row in one transaction (`seq` of `r` is ignored). Durable
/// (`synchronous=FULL`) when it returns.
pub fn insert(db: &Db, r: &ReceiptRow) -> Result<()> {
    insert_attested(db, r, None)
}

/// As [`insert`], with the receipt's signed inference attestation (b3iq-core encoding) stored
/// beside it in the same transaction.
///
/// # Errors
/// `Db`.
pub fn insert_attested(db: &Db, r: &ReceiptRow, attestation: Option<&[u8]>) -> Result<()> {
    db.tx(|tx| {
        tx.execute(
            "INSERT INTO receipts(id, request_id, key_id, model, prompt_tokens, completion_tokens, created_at, ttft_ms, duration_ms, signed, outcome)
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
            params![
                r.id,
                r.request_id,
                r.key_id,
                r.model,
                r.prompt_tokens,
                r.completion_tokens,
                r.created_at as i64,
                r.ttft_ms as i64,
                r.duration_ms as i64,
                r.signed,
                r.outcome
            ],
        )?;
        tx.execute(
            "INSERT INTO usage(at, key_id, model, prompt_tokens, completion_tokens, receipt_id) VALUES (?1,?2,?3,?4,?5,?6)",
            params![r.created_at as i64, r.key_id, r.model, r.prompt_tokens, r.completion_tokens, r.id],
        )?;
        if let Some(a) = attestation {
            tx.execute(
                "INSERT INTO attestations(receipt_id, signed) VALUES (?1, ?2)",
                params![r.id, a],
            )?;
        }
        Ok(())
    })
}

/// The signed attestation stored beside receipt `id` (hex), if any.
///
/// # Errors
/// `Db`.
pub fn attestation(db: &Db, id: &str) -> Result<Option<Vec<u8>>> {
    let conn = db.lock();
    let v = conn
        .query_row(
            "SELECT signed FROM attestations WHERE receipt_id = ?1",
            params![id],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .optional()?;
    Ok(v)
}

/// Newest first, at most `limit` (1 to 500), with `seq` below `before`.
pub fn list(db: &Db, limit: u32, before: Option<i64>) -> Result<Vec<ReceiptRow>> {
    let conn = db.lock();
    let mut st = conn.prepare(&format!(
        "SELECT {COLS} FROM receipts WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2"
    ))?;
    let rows = st
        .query_map(
            params![before.unwrap_or(i64::MAX), limit.clamp(1, 500)],
            row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// All receipts, oldest first (for export).
pub fn all(db: &Db) -> Result<Vec<ReceiptRow>> {
    let conn = db.lock();
    let mut st = conn.prepare(&format!("SELECT {COLS} FROM receipts ORDER BY seq"))?;
    let rows = st
        .query_map([], row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// One receipt by id.
pub fn get(db: &Db, id: &str) -> Result<Option<ReceiptRow>> {
    Ok(db
        .lock()
        .query_row(
            &format!("SELECT {COLS} FROM receipts WHERE id = ?1"),
            [id],
            row,
        )
        .optional()?)
}

/// The key id network requests are filed under.
pub const NETWORK_KEY_ID: &str = "network";

/// Network receipts started at or after `since_s` (unix seconds): their token counts and signed
/// bytes (for the price), oldest first, at most `limit`.
///
/// # Errors
/// `Db`.
pub fn network_since(db: &Db, since_s: u64, limit: u32) -> Result<Vec<(u32, u32, Vec<u8>)>> {
    let conn = db.lock();
    let mut st = conn.prepare("SELECT prompt_tokens, completion_tokens, signed FROM receipts WHERE key_id = ?1 AND created_at >= ?2 ORDER BY seq LIMIT ?3")?;
    let rows = st.query_map(params![NETWORK_KEY_ID, since_s as i64, limit], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Prompt + completion tokens of the network receipts started at or after `since_s` (one SQL
/// SUM, without decoding the signed receipts; the admission check of the daily budget).
///
/// # Errors
/// `Db`.
pub fn network_tokens_since(db: &Db, since_s: u64) -> Result<u64> {
    let n: i64 = db.lock().query_row(
        "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM receipts WHERE key_id = ?1 AND created_at >= ?2",
        params![NETWORK_KEY_ID, since_s as i64],
        |r| r.get(0),
    )?;
    Ok(n.max(0) as u64)
}

/// Whether a receipt with this request id (hex) exists (a ticket's request id is used once).
///
/// # Errors
/// `Db`.
pub fn request_id_used(db: &Db, request_id_hex: &str) -> Result<bool> {
    Ok(db
        .lock()
        .query_row(
            "SELECT 1 FROM receipts WHERE request_id = ?1",
            [request_id_hex],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Receipts not yet uploaded to the control plane, written at or after `created_from` (unix
/// seconds), oldest first, at most `limit`: `(seq, signed bytes)`.
pub fn not_uploaded(db: &Db, created_from: u64, limit: u32) -> Result<Vec<(i64, Vec<u8>)>> {
    let conn = db.lock();
    let mut st = conn.prepare("SELECT seq, signed FROM receipts WHERE uploaded_at IS NULL AND created_at >= ?1 ORDER BY seq LIMIT ?2")?;
    let rows = st
        .query_map(params![created_from as i64, limit], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Marks receipts as uploaded (one transaction).
pub fn mark_uploaded(db: &Db, seqs: &[i64], now: u64) -> Result<()> {
    db.tx(|tx| {
        for s in seqs {
            tx.execute(
                "UPDATE receipts SET uploaded_at = ?2 WHERE seq = ?1",
                params![s, now as i64],
            )?;
        }
        Ok(())
    })
}

/// The stored salt of a v1 receipt (v2 salts are derived, never stored).
pub fn v1_salt(db: &Db, receipt_id: &str) -> Result<Option<Vec<u8>>> {
    Ok(db
        .lock()
        .query_row(
            "SELECT salt FROM receipt_salts WHERE receipt_id = ?1",
            [receipt_id],
            |r| r.get(0),
        )
        .optional()?)
}
