//! SQL for the audit log (writes go through [`super::Db::audit`]).

use rusqlite::params;
use serde::Serialize;

use super::Db;
use crate::error::Result;

/// An audit event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEvent {
    /// Sequence.
    pub id: i64,
    /// Unix seconds.
    pub at: u64,
    /// Who: `owner`, `system`, `setup`, `anonymous`, `key:<id>`, `support:<id>`.
    pub actor: String,
    /// What (`key.create`, `job.execute`, ...).
    pub action: String,
    /// On what (an id).
    pub target: String,
    /// `ok`, `refused`, `failed`.
    pub outcome: String,
    /// Non-secret detail.
    pub detail: String,
}

/// The newest `limit` audit events, newest first.
pub fn recent(db: &Db, limit: u32) -> Result<Vec<AuditEvent>> {
    let conn = db.lock();
    let mut st = conn.prepare("SELECT id, at, actor, action, target, outcome, detail FROM audit_events ORDER BY id DESC LIMIT ?1")?;
    let rows = st
        .query_map(params![limit], |r| {
            Ok(AuditEvent {
                id: r.get(0)?,
                at: r.get::<_, i64>(1)? as u64,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                outcome: r.get(5)?,
                detail: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
