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
    /// `queued`, `running`, `succeeded`, `failed`; for remote jobs also `awaiting_approval`
    /// (the owner must approve or reject it), `rejected`, `expired` and `refused`.
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
    /// Who issued it: `owner_local` (the owner on this node) or `remote` (the control plane).
    pub issuer: String,
    /// The signed expiry, unix ms (a remote job awaiting approval expires then).
    pub expires_at_ms: Option<u64>,
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
        issuer: r.get(10)?,
        expires_at_ms: r.get::<_, Option<i64>>(11)?.map(|v| v as u64),
    })
}

const COLS: &str = "id, kind, profile, state, bytes_done, bytes_total, created_at, updated_at, error, result, issuer_class, expires_at_ms";
/// Number of columns in [`COLS`].
const COLS_N: usize = 12;

/// States a remote job ends in (reported to the control plane once).
pub const FINAL_STATES: &[&str] = &["succeeded", "failed", "refused", "rejected", "expired"];

fn class_of(s: &str) -> IssuerClass {
    if s == "remote" {
        IssuerClass::Remote
    } else {
        IssuerClass::OwnerLocal
    }
}

/// Record an accepted job in `state` (`queued`, or `awaiting_approval` for a remote job the
/// owner must approve) with its signed envelope, issuer class and expiry, inside the
/// transaction that recorded its id in the seen-set ([`TxSeenSet`]).
#[allow(clippy::too_many_arguments)]
pub fn insert_as(tx: &rusqlite::Transaction<'_>, id: &str, kind: &str, profile: Option<&str>, bytes_total: Option<u64>, now: u64, envelope: &[u8], state: &str, class: IssuerClass, expires_at_ms: u64) -> Result<()> {
    tx.execute(
        "INSERT INTO jobs(id, kind, profile, state, bytes_done, bytes_total, created_at, updated_at, envelope, issuer_class, expires_at_ms) VALUES (?1,?2,?3,?4,?5,?6,?7,?7,?8,?9,?10)",
        params![id, kind, profile, state, bytes_total.map(|_| 0i64), bytes_total.map(|t| t as i64), now as i64, envelope, class_name(class), expires_at_ms as i64],
    )?;
    Ok(())
}

/// Record a remote job the node refused (state `refused`, with the error and its code) so its
/// outcome is reported; `false` when a job with this id is already recorded.
#[allow(clippy::too_many_arguments)]
pub fn insert_refused(db: &Db, id: &str, kind: &str, now: u64, envelope: &[u8], expires_at_ms: u64, error: &str, code: &str) -> Result<bool> {
    let n = db.lock().execute(
        "INSERT OR IGNORE INTO jobs(id, kind, state, created_at, updated_at, envelope, issuer_class, expires_at_ms, error, code) VALUES (?1,?2,'refused',?3,?3,?4,'remote',?5,?6,?7)",
        params![id, kind, now as i64, envelope, expires_at_ms as i64, error, code],
    )?;
    Ok(n == 1)
}

/// Move a job from state `from` to `to` (one statement: of concurrent callers, one wins).
pub fn transition(db: &Db, id: &str, from: &str, to: &str, now: u64) -> Result<bool> {
    Ok(db.lock().execute("UPDATE jobs SET state = ?3, updated_at = ?4 WHERE id = ?1 AND state = ?2", params![id, from, to, now as i64])? == 1)
}

/// Record a failed job's error code (the node's `HostError::code`).
pub fn set_code(db: &Db, id: &str, code: &str) -> Result<()> {
    db.lock().execute("UPDATE jobs SET code = ?2 WHERE id = ?1", params![id, code])?;
    Ok(())
}

/// Jobs awaiting the owner's approval past their expiry become `expired`; returns their ids.
pub fn expire_awaiting(db: &Db, now_ms: u64, now: u64) -> Result<Vec<String>> {
    db.tx(|tx| {
        let ids = {
            let mut st = tx.prepare("SELECT id FROM jobs WHERE state = 'awaiting_approval' AND expires_at_ms IS NOT NULL AND expires_at_ms < ?1")?;
            let ids = st.query_map([now_ms as i64], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
            ids
        };
        tx.execute(
            "UPDATE jobs SET state = 'expired', error = 'the owner did not approve it before it expired', code = 'expired', updated_at = ?2 WHERE state = 'awaiting_approval' AND expires_at_ms IS NOT NULL AND expires_at_ms < ?1",
            params![now_ms as i64, now as i64],
        )?;
        Ok(ids)
    })
}

/// A job's signed envelope and issuer class.
pub fn envelope(db: &Db, id: &str) -> Result<Option<(Vec<u8>, IssuerClass)>> {
    Ok(db
        .lock()
        .query_row("SELECT envelope, issuer_class FROM jobs WHERE id = ?1 AND envelope IS NOT NULL", [id], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?)))
        .optional()?
        .map(|(e, c)| (e, class_of(&c))))
}

/// A remote job whose outcome has not reached the control plane yet.
#[derive(Debug, Clone)]
pub struct Unreported {
    /// The record.
    pub job: JobRecord,
    /// Its signed envelope.
    pub envelope: Vec<u8>,
    /// The error code of a failure or refusal.
    pub code: Option<String>,
}

/// Remote jobs in a final state not yet reported, oldest first, at most `limit`.
pub fn unreported_remote(db: &Db, limit: u32) -> Result<Vec<Unreported>> {
    let conn = db.lock();
    let mut st = conn.prepare(&format!(
        "SELECT {COLS}, envelope, code FROM jobs WHERE issuer_class = 'remote' AND reported_at IS NULL AND envelope IS NOT NULL
         AND state IN ('succeeded', 'failed', 'refused', 'rejected', 'expired') ORDER BY updated_at, rowid LIMIT ?1"
    ))?;
    let rows = st
        .query_map([limit], |r| Ok(Unreported { job: job_row(r)?, envelope: r.get(COLS_N)?, code: r.get(COLS_N + 1)? }))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Whether remote jobs are still queued or running (the poll loop reports sooner then).
pub fn remote_in_flight(db: &Db) -> Result<bool> {
    Ok(db.lock().query_row("SELECT EXISTS(SELECT 1 FROM jobs WHERE issuer_class = 'remote' AND state IN ('queued', 'running'))", [], |r| r.get::<_, bool>(0))?)
}

/// Mark a remote job's outcome as delivered to the control plane.
pub fn mark_reported(db: &Db, id: &str, now: u64) -> Result<()> {
    db.lock().execute("UPDATE jobs SET reported_at = ?2 WHERE id = ?1", params![id, now as i64])?;
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

/// Inside `tx`: set a job's result (its state was set when it was recorded).
pub fn set_result_in(tx: &rusqlite::Transaction<'_>, id: &str, result: &Value, now: u64) -> Result<()> {
    tx.execute("UPDATE jobs SET result = ?2, updated_at = ?3 WHERE id = ?1", params![id, result.to_string(), now as i64])?;
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
