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

/// Seconds over which refusals of unauthenticated callers are aggregated.
pub const REFUSAL_WINDOW_S: u64 = 60;

/// Per (action, code): (window start, refusals suppressed in it, actor of the first).
type RefusalWindows = std::collections::BTreeMap<(String, String), (u64, u64, String)>;

/// Audit of refusals of unauthenticated callers (failed sign-ins, bad claims), aggregated so a
/// stranger cannot grow the log: per (action, code), the first refusal of a
/// [`REFUSAL_WINDOW_S`] window is written at once, the rest only counted and written as one
/// summary row (`"N more ..."`) when the next window starts or at [`RefusalAudit::flush`].
/// The callers pass no typed input (a password typed into the user field must not land here).
#[derive(Debug, Default)]
pub struct RefusalAudit {
    windows: std::sync::Mutex<RefusalWindows>,
}

impl RefusalAudit {
    /// Record one refusal of `action` with error `code` by `actor` on `target` (no user input).
    pub fn record(&self, db: &Db, now: u64, actor: &str, action: &str, target: &str, code: &str) {
        let summary = {
            let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            match w.get_mut(&(action.to_string(), code.to_string())) {
                Some((started, suppressed, _)) if now < started.saturating_add(REFUSAL_WINDOW_S) => {
                    *suppressed += 1;
                    return;
                }
                Some(win) => {
                    let s = (win.1 > 0).then(|| (win.1, win.0, win.2.clone()));
                    *win = (now, 0, actor.to_string());
                    s
                }
                None => {
                    w.insert((action.to_string(), code.to_string()), (now, 0, actor.to_string()));
                    None
                }
            }
        };
        if let Some((n, since, who)) = summary {
            db.audit(now, &who, action, "", "refused", &format!("{code}: {n} more since unix time {since} (aggregated)"));
        }
        db.audit(now, actor, action, target, "refused", code);
    }

    /// Write the summary rows of every open window (at shutdown).
    pub fn flush(&self, db: &Db, now: u64) {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        for ((action, code), (since, n, who)) in std::mem::take(&mut *w) {
            if n > 0 {
                db.audit(now, &who, &action, "", "refused", &format!("{code}: {n} more since unix time {since} (aggregated)"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_refusals_writes_one_row_and_one_summary() {
        let db = Db::open_in_memory().unwrap();
        let r = RefusalAudit::default();
        for _ in 0..300 {
            r.record(&db, 1000, "setup", "node.claim", "", "setup_token_invalid");
        }
        r.record(&db, 1000, "anonymous", "session.login", "unknown user", "bad_credentials");
        assert_eq!(db.count("audit_events").unwrap(), 2, "one row per (action, code) in a window");
        // The next window writes the summary, then its own first refusal.
        r.record(&db, 1000 + REFUSAL_WINDOW_S, "setup", "node.claim", "", "setup_token_invalid");
        let rows = recent(&db, 10).unwrap();
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().any(|e| e.detail.contains("299 more")), "{rows:?}");
        r.flush(&db, 2000);
        assert_eq!(db.count("audit_events").unwrap(), 4, "nothing pending");
        for _ in 0..5 {
            r.record(&db, 3000, "anonymous", "session.login", "owner", "bad_credentials");
        }
        r.flush(&db, 3001);
        assert!(recent(&db, 1).unwrap()[0].detail.contains("4 more"));
    }
}
