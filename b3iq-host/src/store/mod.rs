//! `state.db`: SQLite in WAL mode with numbered migrations, and every SQL statement of the host.
//! Nothing outside this module names a table; the layers above call these typed functions.
//!
//! | module | tables |
//! |---|---|
//! | [`auth`] | `users`, `sessions`, `setup_tokens`, `api_keys`, `support_grants` |
//! | [`receipts`] | `receipts`, `receipt_salts`, `usage` (written with each receipt) |
//! | [`usage`] | `usage` (reads) |
//! | [`audit`] | `audit_events` (reads; writes through [`Db::audit`]) |
//! | [`jobs`] | `jobs`, `job_seen`, `trust_roots` |
//! | this module | `meta` (the operating mode among others) |

pub mod audit;
pub mod auth;
pub mod jobs;
pub mod managed;
pub mod receipts;
pub mod usage;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{HostError, Result};

/// Numbered migrations; `PRAGMA user_version` records how many ran. Append only: never edit a
/// migration that shipped.
const MIGRATIONS: &[&str] = &[
    // 1: the Local-mode schema.
    r#"
    CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL DEFAULT 'owner',
        created_at INTEGER NOT NULL,
        failed_logins INTEGER NOT NULL DEFAULT 0,
        locked_until INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE setup_tokens (
        token_hash TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        id_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        scopes TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER,
        expires_at INTEGER,
        revoked_at INTEGER
    );
    CREATE TABLE support_grants (
        id TEXT PRIMARY KEY,
        prefix TEXT NOT NULL,
        secret_hash TEXT NOT NULL UNIQUE,
        note TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE receipts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        request_id TEXT NOT NULL UNIQUE,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        ttft_ms INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        signed BLOB NOT NULL
    );
    CREATE TABLE receipt_salts (
        receipt_id TEXT PRIMARY KEY REFERENCES receipts(id),
        salt BLOB NOT NULL
    );
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        receipt_id TEXT NOT NULL UNIQUE REFERENCES receipts(id)
    );
    CREATE INDEX usage_at ON usage(at);
    CREATE TABLE audit_events (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        profile TEXT,
        state TEXT NOT NULL,
        bytes_done INTEGER,
        bytes_total INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        error TEXT,
        result TEXT,
        envelope BLOB
    );
    CREATE TABLE job_seen (
        job_id TEXT PRIMARY KEY,
        issuer TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        seen_at INTEGER NOT NULL
    );
    CREATE INDEX job_seen_issuer ON job_seen(issuer, sequence);
    "#,
    // 2: persisted trust roots: the keys whose signed jobs the node opens, with their issuer class.
    r#"
    CREATE TABLE trust_roots (
        public_key TEXT PRIMARY KEY,
        class TEXT NOT NULL,
        added_at INTEGER NOT NULL,
        label TEXT NOT NULL DEFAULT ''
    );
    "#,
    // 3: sign-in limits per source (client address, or the CLI / embedding front door), so a
    // stranger's wrong guesses lock out that stranger and not the owner; users.failed_logins and
    // users.locked_until are no longer read.
    r#"
    CREATE TABLE login_limits (
        source TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        locked_until INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX login_limits_updated ON login_limits(updated_at);
    -- One job per (issuer, sequence): keep the first of any pair recorded before this rule
    -- (their 5-minute validity has long passed; the sequence check still refuses them).
    DELETE FROM job_seen WHERE rowid NOT IN (SELECT MIN(rowid) FROM job_seen GROUP BY issuer, sequence);
    CREATE UNIQUE INDEX job_seen_issuer_sequence ON job_seen(issuer, sequence);
    -- How the response a receipt accounts for ended: `completed`, or `cancelled` when the client
    -- went away after tokens were produced (they are receipted and counted all the same).
    ALTER TABLE receipts ADD COLUMN outcome TEXT NOT NULL DEFAULT 'completed';
    "#,
    // 4: session rotation: a session's secret is replaced after `session_rotate_s`; the old row
    // names its successor (so signing out ends both) and lives only a short grace longer.
    r#"
    ALTER TABLE sessions ADD COLUMN replaced_by TEXT;
    "#,
    // 5: remote jobs (managed mode): the issuer's class, the signed expiry (a job awaiting the
    // owner's approval expires), the error code reported to the control plane, and when the
    // outcome reached it (the result outbox).
    r#"
    ALTER TABLE jobs ADD COLUMN issuer_class TEXT NOT NULL DEFAULT 'owner_local';
    ALTER TABLE jobs ADD COLUMN expires_at_ms INTEGER;
    ALTER TABLE jobs ADD COLUMN code TEXT;
    ALTER TABLE jobs ADD COLUMN reported_at INTEGER;
    "#,
    // 6: the managed-mode receipt outbox: when each receipt reached the control plane.
    r#"
    ALTER TABLE receipts ADD COLUMN uploaded_at INTEGER;
    CREATE INDEX receipts_not_uploaded ON receipts(seq) WHERE uploaded_at IS NULL;
    "#,
    // 7: the signed inference attestation of a network request, beside its receipt (the
    // receipt's `attestation_digest` is its object hash).
    r#"
    CREATE TABLE attestations (
        receipt_id TEXT PRIMARY KEY REFERENCES receipts(id),
        signed BLOB NOT NULL
    );
    "#,
];

/// Most audit events kept (the oldest beyond it are deleted).
pub const MAX_AUDIT_ROWS: i64 = 100_000;
/// Audit events older than this are deleted: 400 days.
pub const AUDIT_RETENTION_S: u64 = 400 * 24 * 3600;
/// The audit log is pruned once every this many events.
pub const AUDIT_PRUNE_EVERY: i64 = 1000;

/// The `meta` key holding the persisted operating mode.
pub const META_OPERATING_MODE: &str = "operating_mode";
/// The `meta` key holding the owner's network policy (`network::NetworkPolicy` as JSON).
pub const META_NETWORK_POLICY: &str = "network_policy";
/// The `meta` key holding the tunnel's state (`network::TunnelStatus` as JSON), written by the
/// daemon for `b3iqd status` and the wizard.
pub const META_TUNNEL_STATUS: &str = "network_tunnel";
/// The `meta` key holding the address the running daemon bound (empty once it stopped).
pub const META_LISTEN_BOUND: &str = "listen_bound";
/// The `meta` key holding the running daemon's TLS (`context::tls::TlsInfo` as JSON; empty for
/// plain HTTP or once it stopped).
pub const META_TLS_BOUND: &str = "tls_bound";

/// The state database. Cheap to share behind an `Arc`; one connection behind a mutex (SQLite
/// serialises writers anyway, and every statement here is short).
#[derive(Debug)]
pub struct Db {
    conn: Mutex<Connection>,
}

impl Db {
    /// Open (creating if needed) and migrate `path`.
    pub fn open(path: &Path) -> Result<Db> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk when it returns (a receipt is durable before the response).
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        let mut db = Db {
            conn: Mutex::new(conn),
        };
        db.migrate()?;
        Ok(db)
    }

    /// An in-memory database (tests).
    pub fn open_in_memory() -> Result<Db> {
        let conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut db = Db {
            conn: Mutex::new(conn),
        };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&mut self) -> Result<()> {
        let conn = self
            .conn
            .get_mut()
            .map_err(|_| HostError::Internal("db lock poisoned".into()))?;
        let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if current as usize > MIGRATIONS.len() {
            return Err(HostError::Config(format!(
                "state.db has schema version {current}, newer than this b3iqd knows ({}); upgrade b3iqd",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Lock the connection.
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` inside one transaction; commit if it returns Ok.
    pub fn tx<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Append an audit event. Every [`AUDIT_PRUNE_EVERY`] rows, events beyond the newest
    /// [`MAX_AUDIT_ROWS`] or older than [`AUDIT_RETENTION_S`] are deleted, so the table stays
    /// bounded.
    pub fn audit(
        &self,
        now: u64,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
        detail: &str,
    ) {
        let conn = self.lock();
        let r = conn.execute(
            "INSERT INTO audit_events(at, actor, action, target, outcome, detail) VALUES (?1,?2,?3,?4,?5,?6)",
            params![now as i64, actor, action, target, outcome, detail],
        );
        if let Err(e) = r {
            tracing::error!(error = %e, action, "could not write audit event");
            return;
        }
        let id = conn.last_insert_rowid();
        if id % AUDIT_PRUNE_EVERY == 0 {
            let r = conn.execute(
                "DELETE FROM audit_events WHERE id <= ?1 OR at < ?2",
                params![
                    id - MAX_AUDIT_ROWS,
                    now.saturating_sub(AUDIT_RETENTION_S) as i64
                ],
            );
            if let Err(e) = r {
                tracing::warn!(error = %e, "could not prune the audit log");
            }
        }
    }

    /// Read a `meta` value.
    pub fn meta_get(&self, k: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0))
            .optional()?)
    }

    /// Write a `meta` value.
    pub fn meta_set(&self, k: &str, v: &str) -> Result<()> {
        self.lock().execute(
            "INSERT INTO meta(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            params![k, v],
        )?;
        Ok(())
    }

    /// `PRAGMA integrity_check` result (`"ok"` when healthy).
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self
            .lock()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }

    /// Count rows of a known table.
    pub fn count(&self, table: &'static str) -> Result<i64> {
        Ok(self
            .lock()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.db");
        let db = Db::open(&p).unwrap();
        assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
        db.meta_set("a", "1").unwrap();
        drop(db);
        let db = Db::open(&p).unwrap();
        assert_eq!(db.meta_get("a").unwrap().as_deref(), Some("1"));
        let mode: String = db
            .lock()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(db.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn newer_schema_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.db");
        drop(Db::open(&p).unwrap());
        let c = Connection::open(&p).unwrap();
        c.pragma_update(None, "user_version", 999).unwrap();
        drop(c);
        let e = Db::open(&p).unwrap_err();
        assert!(e.to_string().contains("upgrade b3iqd"), "{e}");
    }

    #[test]
    fn failed_transaction_rolls_back() {
        let db = Db::open_in_memory().unwrap();
        let r: Result<()> = db.tx(|tx| {
            tx.execute("INSERT INTO meta(k,v) VALUES ('x','1')", [])?;
            Err(HostError::Internal("boom".into()))
        });
        assert!(r.is_err());
        assert_eq!(db.meta_get("x").unwrap(), None);
    }
}
