//! The job executor: owner actions (install/remove a model profile, run a benchmark, build a
//! support bundle) run as signed jobs with the owner's issuer key (created at claim).
//!
//! Every job goes through the same path a remote job will: an envelope is signed by the issuer,
//! opened against the trusted issuer keys (signature, audience, expiry), checked against the
//! policy of the current mode, and its id is written to the durable seen-set in the same
//! transaction that records the job, before it runs. Every decision is an audit event.

use std::sync::Arc;

use b3iq_core::identity::NodeKey;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use serde_json::{json, Value};

use crate::db::Db;
use crate::error::{HostError, Result};
use crate::home::{write_atomic, Home};
use crate::state::NodeState;

/// Seconds a job envelope stays valid after issue.
pub const JOB_TTL_S: u64 = 300;

/// Shared executor state.
#[derive(Debug, Default)]
pub struct Jobs {
    // One job at a time: installs and benchmarks compete for disk and CPU.
    run_lock: tokio::sync::Mutex<()>,
}

/// A job the owner asked for (the closed set of kinds; no free-form command exists).
#[derive(Debug, Clone, PartialEq)]
pub enum JobRequest {
    /// Install a catalog profile into the model store.
    InstallModel(String),
    /// Remove a catalog profile from the model store.
    RemoveModel(String),
    /// Run the benchmark on the loaded model.
    RunBenchmark,
    /// Build a support bundle.
    SupportBundle,
}

impl JobRequest {
    /// Parse `{"kind": ..., "profile": ...}`.
    pub fn from_json(v: &Value) -> Result<JobRequest> {
        let kind = v["kind"].as_str().ok_or_else(|| HostError::InvalidParameter("`kind` is required".into()))?;
        let profile = || -> Result<String> {
            let p = v["profile"].as_str().ok_or_else(|| HostError::InvalidParameter("`profile` is required for this job kind".into()))?;
            b3iq_runtime::catalog::Catalog::builtin().get(p).map_err(|_| HostError::UnknownProfile(p.chars().take(100).collect()))?;
            Ok(p.to_string())
        };
        match kind {
            "install_model" => Ok(JobRequest::InstallModel(profile()?)),
            "remove_model" => Ok(JobRequest::RemoveModel(profile()?)),
            "run_benchmark" => Ok(JobRequest::RunBenchmark),
            "support_bundle" => Ok(JobRequest::SupportBundle),
            other => Err(HostError::UnknownJobKind(other.chars().take(40).collect())),
        }
    }

    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            JobRequest::InstallModel(_) => "install_model",
            JobRequest::RemoveModel(_) => "remove_model",
            JobRequest::RunBenchmark => "run_benchmark",
            JobRequest::SupportBundle => "support_bundle",
        }
    }

    fn profile(&self) -> Option<&str> {
        match self {
            JobRequest::InstallModel(p) | JobRequest::RemoveModel(p) => Some(p),
            _ => None,
        }
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Job {
    /// `job_...`.
    pub id: String,
    /// Kind name.
    pub kind: String,
    /// Profile for model jobs.
    pub profile: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed`, `rejected`.
    pub state: String,
    /// Byte progress for installs.
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

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    let done: Option<i64> = r.get(4)?;
    let total: Option<i64> = r.get(5)?;
    let result: Option<String> = r.get(9)?;
    Ok(Job {
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

/// Newest first.
pub fn list(db: &Db, limit: u32) -> Result<Vec<Job>> {
    let conn = db.lock();
    let mut st = conn.prepare(&format!("SELECT {COLS} FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT ?1"))?;
    let rows = st.query_map([limit], job_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// One job.
pub fn get(db: &Db, id: &str) -> Result<Option<Job>> {
    Ok(db.lock().query_row(&format!("SELECT {COLS} FROM jobs WHERE id = ?1"), [id], job_row).optional()?)
}

/// Create the owner's job-issuer key (0600) if it does not exist yet.
pub fn ensure_owner_issuer(home: &Home) -> Result<NodeKey> {
    let path = home.owner_key_path();
    match std::fs::read(&path) {
        Ok(b) => NodeKey::from_key_file(&b).map_err(|e| HostError::Config(format!("owner.key is not valid ({e})"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = NodeKey::generate(&mut rand::rngs::OsRng);
            write_atomic(&path, &k.to_key_file(), 0o600)?;
            Ok(k)
        }
        Err(e) => Err(HostError::home("read owner.key", e)),
    }
}

fn set_state(db: &Db, id: &str, state: &str, error: Option<&str>, result: Option<&Value>, now: u64) -> Result<()> {
    db.lock().execute(
        "UPDATE jobs SET state = ?2, error = ?3, result = ?4, updated_at = ?5 WHERE id = ?1",
        params![id, state, error, result.map(|r| r.to_string()), now as i64],
    )?;
    Ok(())
}

fn set_progress(db: &Db, id: &str, done: u64, total: u64) {
    let _ = db.lock().execute(
        "UPDATE jobs SET bytes_done = ?2, bytes_total = ?3 WHERE id = ?1",
        params![id, done as i64, total as i64],
    );
}

/// Sign, open (signature, audience, expiry, replay, sequence; durable seen-set entry before it
/// runs), decide by policy, record and start a job. Returns it queued, or the refusal.
pub async fn submit(st: &Arc<NodeState>, req: JobRequest) -> Result<Job> {
    let now = st.now();
    let now_ms = crate::state::unix_now_ms();
    let issuer = ensure_owner_issuer(&st.home)?;
    let signed = crate::signed_jobs::issue(st, &issuer, &req, now_ms)?;
    let id = format!("job_{}", signed.body().job_id.to_hex());
    let opened = crate::signed_jobs::open(st, &issuer.public(), &signed, now_ms);
    let note = match opened {
        Ok((_, note)) => note,
        Err(e) => {
            st.db.audit(now, "owner", "job.reject", &id, "refused", &format!("{}: {e}", req.kind()));
            return Err(e);
        }
    };
    let total = match &req {
        JobRequest::InstallModel(p) => b3iq_runtime::catalog::Catalog::builtin().get(p).ok().map(|p| p.size_bytes as i64),
        _ => None,
    };
    st.db.lock().execute(
        "INSERT INTO jobs(id, kind, profile, state, bytes_done, bytes_total, created_at, updated_at, envelope) VALUES (?1,?2,?3,'queued',?4,?5,?6,?6,?7)",
        params![id, req.kind(), req.profile(), total.map(|_| 0i64), total, now as i64, signed.encode()],
    )?;
    st.db.audit(now, "owner", "job.accept", &id, "ok", &format!("{}; {note}", req.kind()));
    let st2 = st.clone();
    let id2 = id.clone();
    tokio::spawn(async move {
        let _g = st2.jobs.run_lock.lock().await;
        let _ = set_state(&st2.db, &id2, "running", None, None, st2.now());
        let r = execute(&st2, &id2, &req).await;
        let now = st2.now();
        match r {
            // Audit first, so a client that sees the final state also sees its audit event.
            Ok(v) => {
                st2.db.audit(now, "system", "job.execute", &id2, "ok", req.kind());
                let _ = set_state(&st2.db, &id2, "succeeded", None, Some(&v), now);
            }
            Err(e) => {
                st2.db.audit(now, "system", "job.execute", &id2, "failed", &format!("{}: {}", req.kind(), e.code()));
                let _ = set_state(&st2.db, &id2, "failed", Some(&e.to_string()), None, now);
            }
        }
    });
    get(&st.db, &id)?.ok_or_else(|| HostError::Internal("job vanished".into()))
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => n += dir_size(&e.path()),
                Ok(m) => n += m.len(),
                Err(_) => {}
            }
        }
    }
    n
}

async fn execute(st: &Arc<NodeState>, id: &str, req: &JobRequest) -> Result<Value> {
    match req {
        JobRequest::InstallModel(p) => {
            let total = b3iq_runtime::catalog::Catalog::builtin().get(p).map(|p| p.size_bytes).unwrap_or(0);
            let tmp = st.home.models_dir().join("tmp");
            let (db_st, id2) = (st.clone(), id.to_string());
            let watcher = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    set_progress(&db_st.db, &id2, dir_size(&tmp).min(total), total);
                }
            });
            let r = crate::models::ensure_profile(&st.home, p, false).await;
            watcher.abort();
            let m = r?;
            set_progress(&st.db, id, m.size_bytes, m.size_bytes.max(total));
            Ok(json!({"sha256": m.sha256, "size_bytes": m.size_bytes, "profile": m.profile}))
        }
        JobRequest::RemoveModel(p) => {
            let store = crate::models::store(&st.home)?;
            let m = store
                .find_profile(p)
                .map_err(|e| HostError::Runtime(e.to_string()))?
                .ok_or_else(|| HostError::NotFound(format!("installed profile {p}")))?;
            if st.served_models().iter().any(|s| s.info.sha256 == m.sha256) {
                return Err(HostError::InvalidParameter(format!("profile {p} is loaded; restart b3iqd with another --model first")));
            }
            store.remove(&m.sha256).map_err(|e| HostError::Runtime(e.to_string()))?;
            Ok(json!({"removed": m.sha256}))
        }
        JobRequest::RunBenchmark => {
            let model = st.served_models().into_iter().next().ok_or(HostError::ModelNotLoaded)?;
            crate::bench::quick_benchmark(st, &model).await
        }
        JobRequest::SupportBundle => {
            let st2 = st.clone();
            let bytes = tokio::task::spawn_blocking(move || crate::support::build_bundle(&st2))
                .await
                .map_err(|e| HostError::Internal(e.to_string()))??;
            Ok(json!({"download": "/api/support/bundle", "bytes": bytes.len()}))
        }
    }
}
