//! SQL for jobs: the job records the API lists, the durable seen-set of job ids
//! ([`b3iq_core::job::SeenSet`]) and the persisted trust roots (job issuer keys and their class).

use b3iq_core::identity::NodePublicKey;
use b3iq_core::job::{IssuerClass, JobId, SeenSet, SeenSetError};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use serde_json::{json, Value};

use super::Db;
use crate::error::{HostError, Result};

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobRecord {
    /// `job_<hex job id>`.
    pub id: String,
    /// The core job kind's wire name (`install_model_profile`, `run_benchmark`, ...).
    pub kind: String,
    /// Profile for model jobs.
    pub profile: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed`.
    pub state: String,
    /// Byte progress for installs: `{"bytes_done", "bytes_total"}`.
    pub progress: Option<Value>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub updated_at: u64,
    /// What went wrong.
    pub error: Option<String>,
    /// Kind-specific result.
    pub result: Option<Value>,
}

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
    let done: Option<i64> = r.get(4)?;
    let total: Option<i64> = r.get(5)?;
    let result: Option<String> = r.get(9)?;
    Ok(JobRecord {
        id: r.get(0)?,
        kind: r.get(1)?,
        profile: r.get(2)?,
        state: r.get(3)?,
        progress: total.map(|t| json!({"bytes_done": done.unwrap_or(0), "bytes_total": t})),
        created_at: r.get::<_, i64>(6)? as u64,
        updated_at: r.get::<_, i64>(7)? as u64,
        error: r.get(8)?,
        result: result.and_then(|s| serde_json::from_str(&s).ok()),
    })
}

const COLS: &str = "id, kind, profile, state, bytes_done, bytes_total, created_at, updated_at, error, result";

/// Record an accepted job (state `queued`) with its signed envelope, inside the transaction that
/// recorded its id in the seen-set ([`TxSeenSet`]).
pub fn insert(tx: &rusqlite::Transaction<'_>, id: &str, kind: &str, profile: Option<&str>, bytes_total: Option<u64>, now: u64, envelope: &[u8]) -> Result<()> {
    tx.execute(
        "INSERT INTO jobs(id, kind, profile, state, bytes_done, bytes_total, created_at, updated_at, envelope) VALUES (?1,?2,?3,'queued',?4,?5,?6,?6,?7)",
        params![id, kind, profile, bytes_total.map(|_| 0i64), bytes_total.map(|t| t as i64), now as i64, envelope],
    )?;
    Ok(())
}

/// Newest first.
pub fn list(db: &Db, limit: u32) -> Result<Vec<JobRecord>> {
    let conn = db.lock();
    let mut st = conn.prepare(&format!("SELECT {COLS} FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT ?1"))?;
    let rows = st.query_map([limit], job_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// One job.
pub fn get(db: &Db, id: &str) -> Result<Option<JobRecord>> {
    Ok(db.lock().query_row(&format!("SELECT {COLS} FROM jobs WHERE id = ?1"), [id], job_row).optional()?)
}

/// Set a job's state, error and result.
pub fn set_state(db: &Db, id: &str, state: &str, error: Option<&str>, result: Option<&Value>, now: u64) -> Result<()> {
    db.lock().execute(
        "UPDATE jobs SET state = ?2, error = ?3, result = ?4, updated_at = ?5 WHERE id = ?1",
        params![id, state, error, result.map(|r| r.to_string()), now as i64],
    )?;
    Ok(())
}

/// Set an install job's byte progress.
pub fn set_progress(db: &Db, id: &str, done: u64, total: u64) -> Result<()> {
    db.lock().execute("UPDATE jobs SET bytes_done = ?2, bytes_total = ?3 WHERE id = ?1", params![id, done as i64, total as i64])?;
    Ok(())
}

/// The seen-set in `state.db` (`job_seen`), inside one transaction: a job's id and sequence are
/// checked and recorded in the same transaction that records the job ([`insert`]), and a unique
/// index on (issuer, sequence) refuses a second job with the same sequence whatever the
/// concurrency. Durable when the transaction commits (`synchronous=FULL`), before the job runs.
#[derive(Debug)]
pub struct TxSeenSet<'a, 'c>(pub &'a rusqlite::Transaction<'c>);

impl SeenSet for TxSeenSet<'_, '_> {
    fn contains(&self, job_id: &JobId) -> std::result::Result<bool, SeenSetError> {
        self.0
            .query_row("SELECT 1 FROM job_seen WHERE job_id = ?1", [job_id.to_hex()], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| SeenSetError(e.to_string()))
    }

    fn last_sequence(&self, issuer: &NodePublicKey) -> std::result::Result<Option<u64>, SeenSetError> {
        self.0
            .query_row("SELECT MAX(sequence) FROM job_seen WHERE issuer = ?1", [issuer.to_hex()], |r| r.get::<_, Option<i64>>(0))
            .map(|v| v.map(|v| v as u64))
            .map_err(|e| SeenSetError(e.to_string()))
    }

    fn record(&mut self, issuer: &NodePublicKey, job_id: &JobId, sequence: u64, expires_at_ms: u64) -> std::result::Result<(), SeenSetError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.0
            .execute(
                "INSERT INTO job_seen(job_id, issuer, sequence, expires_at_ms, seen_at) VALUES (?1,?2,?3,?4,?5)",
                params![job_id.to_hex(), issuer.to_hex(), sequence as i64, expires_at_ms as i64, now as i64],
            )
            .map(|_| ())
            .map_err(|e| SeenSetError(e.to_string()))
    }
}

/// Mark every job still `queued` or `running` as `failed` with `reason` (the process that ran
/// them is gone); returns their ids. Run at start, before anything new is accepted.
pub fn fail_unfinished(db: &Db, reason: &str, now: u64) -> Result<Vec<String>> {
    db.tx(|tx| {
        let ids = {
            let mut st = tx.prepare("SELECT id FROM jobs WHERE state IN ('queued', 'running') ORDER BY created_at")?;
            let ids = st.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
            ids
        };
        tx.execute(
            "UPDATE jobs SET state = 'failed', error = ?1, updated_at = ?2 WHERE state IN ('queued', 'running')",
            params![reason, now as i64],
        )?;
        Ok(ids)
    })
}

/// A persisted trust root: a key whose signed jobs this node opens, and its issuer class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustRoot {
    /// The issuer's public key.
    pub key: NodePublicKey,
    /// `OwnerLocal` for the owner's own key, `Remote` for a control plane.
    pub class: IssuerClass,
    /// Unix seconds.
    pub added_at: u64,
    /// Non-secret label (`owner`, a control plane id).
    pub label: String,
}

fn class_name(c: IssuerClass) -> &'static str {
    match c {
        IssuerClass::OwnerLocal => "owner_local",
        IssuerClass::Remote => "remote",
    }
}

/// Add (or re-label) a trust root.
pub fn put_trust_root(db: &Db, root: &TrustRoot) -> Result<()> {
    db.lock().execute(
        "INSERT INTO trust_roots(public_key, class, added_at, label) VALUES (?1,?2,?3,?4)
         ON CONFLICT(public_key) DO UPDATE SET class = excluded.class, label = excluded.label",
        params![root.key.to_hex(), class_name(root.class), root.added_at as i64, root.label],
    )?;
    Ok(())
}

/// Replace the trust root `old` by `new` in one transaction (a key rotation): from the commit
/// on, jobs signed by `old` are refused as from an untrusted issuer.
pub fn replace_trust_root(db: &Db, old: &NodePublicKey, new: &TrustRoot) -> Result<()> {
    db.tx(|tx| {
        tx.execute("DELETE FROM trust_roots WHERE public_key = ?1", [old.to_hex()])?;
        tx.execute(
            "INSERT INTO trust_roots(public_key, class, added_at, label) VALUES (?1,?2,?3,?4)
             ON CONFLICT(public_key) DO UPDATE SET class = excluded.class, label = excluded.label",
            params![new.key.to_hex(), class_name(new.class), new.added_at as i64, new.label],
        )?;
        Ok(())
    })
}

/// Every trust root, oldest first. A row that does not parse is an error (the file was edited
/// by hand or is corrupt), never silently skipped.
pub fn trust_roots(db: &Db) -> Result<Vec<TrustRoot>> {
    let conn = db.lock();
    let mut st = conn.prepare("SELECT public_key, class, added_at, label FROM trust_roots ORDER BY added_at, public_key")?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(k, c, at, label)| {
            let key = NodePublicKey::from_hex(&k).map_err(|e| HostError::Config(format!("state.db trust_roots has a bad key ({e})")))?;
            let class = match c.as_str() {
                "owner_local" => IssuerClass::OwnerLocal,
                "remote" => IssuerClass::Remote,
                other => return Err(HostError::Config(format!("state.db trust_roots has an unknown class {other:?}"))),
            };
            Ok(TrustRoot { key, class, added_at: at as u64, label })
        })
        .collect()
}
