//! SQL for the usage series the wizard charts (`GET /api/usage`).

use rusqlite::params;
use serde::Serialize;

use super::Db;
use crate::error::Result;

/// Requests and tokens in one time bucket.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bucket {
    /// Unix seconds at the bucket's start.
    pub start: i64,
    /// Requests.
    pub requests: i64,
    /// Tokens.
    pub prompt_tokens: i64,
    /// Tokens.
    pub completion_tokens: i64,
}

/// Usage by key.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ByKey {
    /// Key id (`owner` for the owner's requests).
    pub key_id: String,
    /// Key name (the id when the key is gone).
    pub name: String,
    /// Requests.
    pub requests: i64,
    /// Tokens.
    pub prompt_tokens: i64,
    /// Tokens.
    pub completion_tokens: i64,
}

/// Usage by model.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ByModel {
    /// Model id.
    pub model: String,
    /// Requests.
    pub requests: i64,
    /// Tokens.
    pub prompt_tokens: i64,
    /// Tokens.
    pub completion_tokens: i64,
}

/// Usage since `since` (unix seconds): a series in buckets of `width_s` seconds, and totals by
/// key and by model.
pub fn summary(db: &Db, width_s: i64, since: i64) -> Result<(Vec<Bucket>, Vec<ByKey>, Vec<ByModel>)> {
    let conn = db.lock();
    let mut s = conn.prepare(
        "SELECT (at / ?1) * ?1 AS b, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM usage WHERE at >= ?2 GROUP BY b ORDER BY b",
    )?;
    let series = s
        .query_map(params![width_s, since], |r| {
            Ok(Bucket { start: r.get(0)?, requests: r.get(1)?, prompt_tokens: r.get(2)?, completion_tokens: r.get(3)? })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut s = conn.prepare(
        "SELECT u.key_id, COALESCE(k.name, u.key_id), COUNT(*), SUM(u.prompt_tokens), SUM(u.completion_tokens)
         FROM usage u LEFT JOIN api_keys k ON k.id = u.key_id WHERE u.at >= ?1 GROUP BY u.key_id ORDER BY 3 DESC",
    )?;
    let by_key = s
        .query_map(params![since], |r| {
            Ok(ByKey { key_id: r.get(0)?, name: r.get(1)?, requests: r.get(2)?, prompt_tokens: r.get(3)?, completion_tokens: r.get(4)? })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut s = conn.prepare(
        "SELECT model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM usage WHERE at >= ?1 GROUP BY model ORDER BY 2 DESC",
    )?;
    let by_model = s
        .query_map(params![since], |r| {
            Ok(ByModel { model: r.get(0)?, requests: r.get(1)?, prompt_tokens: r.get(2)?, completion_tokens: r.get(3)? })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok((series, by_key, by_model))
}
