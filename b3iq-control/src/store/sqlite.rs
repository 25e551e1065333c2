//! SQLite backend (rusqlite; WAL, `synchronous=FULL`: a commit is on disk when it returns). One
//! connection behind a mutex, used from tokio's blocking pool; every rule is one transaction.
//! Heartbeats are group-committed by one writer thread ([`heartbeats`]).

mod heartbeats;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use b3iq_core::heartbeat::HealthStatus;
use b3iq_core::{NodeId, NodePublicKey};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::*;
use crate::error::{ControlError, Result};

/// Numbered migrations; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: organisations, operators and their sessions, enrollment tokens and challenges, nodes
    // with their latest heartbeat, and the heartbeat history.
    r#"
    CREATE TABLE orgs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE operators (
        id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL REFERENCES orgs(id),
        username TEXT NOT NULL UNIQUE,
        password_phc TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE operator_sessions (
        token_hash BLOB PRIMARY KEY,
        operator_id TEXT NOT NULL REFERENCES operators(id),
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );
    CREATE TABLE enrollment_tokens (
        id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL REFERENCES orgs(id),
        token_hash BLOB NOT NULL UNIQUE,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        used_at_ms INTEGER,
        used_by TEXT
    );
    CREATE TABLE challenges (
        id BLOB PRIMARY KEY,
        nonce BLOB NOT NULL,
        issued_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        used_at_ms INTEGER
    );
    CREATE INDEX challenges_expiry ON challenges(expires_at_ms);
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        org_id TEXT NOT NULL REFERENCES orgs(id),
        status TEXT NOT NULL,
        status_reason TEXT NOT NULL DEFAULT '',
        enrolled_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        last_sequence INTEGER,
        last_sent_at_ms INTEGER,
        last_received_at_ms INTEGER,
        last_health TEXT,
        last_body TEXT,
        refused_heartbeats INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX nodes_org ON nodes(org_id, enrolled_at_ms);
    CREATE TABLE heartbeats (
        node_id TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        received_at_ms INTEGER NOT NULL,
        health TEXT NOT NULL,
        PRIMARY KEY (node_id, sequence)
    );
    CREATE INDEX heartbeats_time ON heartbeats(received_at_ms);
    "#,
    // 2: signed jobs, one job sequence for the whole control plane.
    r#"
    CREATE TABLE job_sequence (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL);
    INSERT INTO job_sequence(id, last) VALUES (1, 0);
    CREATE TABLE jobs (
        job_id BLOB PRIMARY KEY,
        node_id TEXT NOT NULL,
        org_id TEXT NOT NULL,
        sequence INTEGER NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        envelope BLOB NOT NULL,
        created_by TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        delivered_at_ms INTEGER,
        outcome TEXT,
        code TEXT,
        result TEXT,
        finished_at_ms INTEGER
    );
    CREATE INDEX jobs_node ON jobs(node_id, sequence);
    "#,
    // 3: uploaded receipts (stored once by id) and usage per node, model and UTC day.
    r#"
    CREATE TABLE receipts (
        receipt_id BLOB PRIMARY KEY,
        node_id TEXT NOT NULL,
        model_id TEXT NOT NULL,
        mode TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        price_micro_credits INTEGER NOT NULL,
        started_at_ms INTEGER NOT NULL,
        signed BLOB NOT NULL,
        received_at_ms INTEGER NOT NULL
    );
    CREATE INDEX receipts_node ON receipts(node_id, started_at_ms);
    CREATE TABLE usage_daily (
        node_id TEXT NOT NULL,
        model_id TEXT NOT NULL,
        day INTEGER NOT NULL,
        requests INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        price_micro_credits INTEGER NOT NULL,
        PRIMARY KEY (node_id, model_id, day)
    );
    "#,
];

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    heartbeats: heartbeats::HeartbeatWriter,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

impl SqliteStore {
    /// Opens (creating and migrating) the database file at `path`, mode 0600.
    ///
    /// # Errors
    /// `Store` when the file cannot be opened, or its schema is newer than this build knows.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = Connection::open(path).map_err(db("open control.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(db("busy_timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db("journal_mode"))?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(db("synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db("foreign_keys"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Self::migrate(conn)
    }

    /// An in-memory database (tests).
    ///
    /// # Errors
    /// `Store` when SQLite fails.
    pub fn open_in_memory() -> Result<SqliteStore> {
        let conn = Connection::open_in_memory().map_err(db("open"))?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db("foreign_keys"))?;
        Self::migrate(conn)
    }

    fn migrate(mut conn: Connection) -> Result<SqliteStore> {
        let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(db("user_version"))?;
        if current as usize > MIGRATIONS.len() {
            return Err(ControlError::Store(format!(
                "control.db has schema version {current}, newer than this build knows ({}); upgrade b3iq-control",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let tx = conn.transaction().map_err(db("migrate"))?;
            tx.execute_batch(sql).map_err(db("migrate"))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(db("migrate"))?;
            tx.commit().map_err(db("migrate"))?;
        }
        let conn = Arc::new(Mutex::new(conn));
        Ok(SqliteStore { heartbeats: heartbeats::HeartbeatWriter::start(conn.clone())?, conn })
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
            // back on drop), so a poisoned lock is still usable.
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|e| ControlError::store("blocking task", e))?
    }
}

fn node_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<NodeRow>> {
    let node_id: String = r.get("node_id")?;
    let public_key: String = r.get("public_key")?;
    let status: String = r.get("status")?;
    let last_sequence: Option<i64> = r.get("last_sequence")?;
    let last = match last_sequence {
        None => None,
        Some(seq) => {
            let health: String = r.get("last_health")?;
            let body: String = r.get("last_body")?;
            Some((seq, r.get::<_, i64>("last_sent_at_ms")?, r.get::<_, i64>("last_received_at_ms")?, health, body))
        }
    };
    let org_id: String = r.get("org_id")?;
    let status_reason: String = r.get("status_reason")?;
    let enrolled: i64 = r.get("enrolled_at_ms")?;
    let expires: i64 = r.get("expires_at_ms")?;
    let refused: i64 = r.get("refused_heartbeats")?;
    Ok((|| {
        let bad = |what: &str| ControlError::Store(format!("control.db holds an invalid {what} for node {node_id}"));
        Ok(NodeRow {
            node_id: NodeId::parse(&node_id).map_err(|_| bad("node id"))?,
            public_key: NodePublicKey::from_hex(&public_key).map_err(|_| bad("public key"))?,
            org_id,
            status: NodeStatus::parse(&status).ok_or_else(|| bad("status"))?,
            status_reason,
            enrolled_at_ms: enrolled as u64,
            expires_at_ms: expires as u64,
            last_heartbeat: match last {
                None => None,
                Some((seq, sent, recv, health, body)) => Some(LastHeartbeat {
                    sequence: seq as u64,
                    sent_at_ms: sent as u64,
                    received_at_ms: recv as u64,
                    health: health_parse(&health).ok_or_else(|| bad("health"))?,
                    body: serde_json::from_str(&body).map_err(|_| bad("heartbeat body"))?,
                }),
            },
            refused_heartbeats: refused as u64,
        })
    })())
}

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<JobRow>> {
    let job_id: Vec<u8> = r.get("job_id")?;
    let node_id: String = r.get("node_id")?;
    let result: Option<String> = r.get("result")?;
    let opt = |v: Option<i64>| v.map(|x| x as u64);
    let row = (
        r.get::<_, String>("org_id")?,
        r.get::<_, i64>("sequence")? as u64,
        r.get::<_, String>("kind")?,
        r.get::<_, Vec<u8>>("envelope")?,
        r.get::<_, String>("created_by")?,
        r.get::<_, i64>("created_at_ms")? as u64,
        r.get::<_, i64>("expires_at_ms")? as u64,
        opt(r.get("delivered_at_ms")?),
        r.get::<_, Option<String>>("outcome")?,
        r.get::<_, Option<String>>("code")?,
        opt(r.get("finished_at_ms")?),
    );
    Ok((|| {
        let bad = |what: &str| ControlError::Store(format!("control.db holds an invalid {what} for a job of {node_id}"));
        Ok(JobRow {
            job_id: job_id.as_slice().try_into().map_err(|_| bad("job id"))?,
            node_id: NodeId::parse(&node_id).map_err(|_| bad("node id"))?,
            org_id: row.0,
            sequence: row.1,
            kind: row.2,
            envelope: row.3,
            created_by: row.4,
            created_at_ms: row.5,
            expires_at_ms: row.6,
            delivered_at_ms: row.7,
            outcome: row.8,
            code: row.9,
            result: result.map(|s| serde_json::from_str(&s)).transpose().map_err(|_| bad("result"))?,
            finished_at_ms: row.10,
        })
    })())
}

pub(crate) fn health_name(h: HealthStatus) -> &'static str {
    match h {
        HealthStatus::Starting => "starting",
        HealthStatus::Healthy => "healthy",
        HealthStatus::Degraded => "degraded",
        HealthStatus::Unhealthy => "unhealthy",
    }
}

pub(crate) fn health_parse(s: &str) -> Option<HealthStatus> {
    [HealthStatus::Starting, HealthStatus::Healthy, HealthStatus::Degraded, HealthStatus::Unhealthy]
        .into_iter()
        .find(|h| health_name(*h) == s)
}

fn get_node(c: &Connection, id: &str) -> Result<Option<NodeRow>> {
    c.query_row(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE node_id = ?1"), [id], node_from_row)
        .optional()
        .map_err(db("read node"))?
        .transpose()
}

fn operator_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Operator> {
    Ok(Operator {
        id: r.get(0)?,
        org_id: r.get(1)?,
        username: r.get(2)?,
        password_phc: r.get(3)?,
        created_at_ms: r.get::<_, i64>(4)? as u64,
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn is_fk_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

#[async_trait]
impl ControlStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn create_org(&self, org: &Org) -> Result<()> {
        let org = org.clone();
        self.run(move |c| {
            c.execute("INSERT INTO orgs(id, name, created_at_ms) VALUES (?1, ?2, ?3)", params![org.id, org.name, ms(org.created_at_ms)])
                .map_err(|e| if is_unique_violation(&e) { Refusal::Exists(format!("organisation {:?}", org.name)).into() } else { ControlError::store("create org", e) })?;
            Ok(())
        })
        .await
    }

    async fn org(&self, id_or_name: &str) -> Result<Option<Org>> {
        let k = id_or_name.to_string();
        self.run(move |c| {
            c.query_row("SELECT id, name, created_at_ms FROM orgs WHERE id = ?1 OR name = ?1", [k], |r| {
                Ok(Org { id: r.get(0)?, name: r.get(1)?, created_at_ms: r.get::<_, i64>(2)? as u64 })
            })
            .optional()
            .map_err(db("read org"))
        })
        .await
    }

    async fn create_operator(&self, op: &Operator) -> Result<()> {
        let op = op.clone();
        self.run(move |c| {
            c.execute(
                "INSERT INTO operators(id, org_id, username, password_phc, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![op.id, op.org_id, op.username, op.password_phc, ms(op.created_at_ms)],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Refusal::Exists(format!("operator {:?}", op.username)).into()
                } else if is_fk_violation(&e) {
                    Refusal::NotFound(format!("organisation {:?}", op.org_id)).into()
                } else {
                    ControlError::store("create operator", e)
                }
            })?;
            Ok(())
        })
        .await
    }

    async fn operator_by_username(&self, username: &str) -> Result<Option<Operator>> {
        let u = username.to_string();
        self.run(move |c| {
            c.query_row("SELECT id, org_id, username, password_phc, created_at_ms FROM operators WHERE username = ?1", [u], operator_from_row)
                .optional()
                .map_err(db("read operator"))
        })
        .await
    }

    async fn create_session(&self, token_hash: &[u8; 32], operator_id: &str, now_ms: u64, expires_at_ms: u64) -> Result<()> {
        let (h, op) = (*token_hash, operator_id.to_string());
        self.run(move |c| {
            let tx = c.transaction().map_err(db("create session"))?;
            tx.execute("DELETE FROM operator_sessions WHERE expires_at_ms <= ?1", [ms(now_ms)]).map_err(db("prune sessions"))?;
            tx.execute(
                "INSERT INTO operator_sessions(token_hash, operator_id, created_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![h.as_slice(), op, ms(now_ms), ms(expires_at_ms)],
            )
            .map_err(db("create session"))?;
            tx.commit().map_err(db("create session"))
        })
        .await
    }

    async fn session_operator(&self, token_hash: &[u8; 32], now_ms: u64) -> Result<Option<Operator>> {
        let h = *token_hash;
        self.run(move |c| {
            c.query_row(
                "SELECT o.id, o.org_id, o.username, o.password_phc, o.created_at_ms FROM operator_sessions s JOIN operators o ON o.id = s.operator_id
                 WHERE s.token_hash = ?1 AND s.expires_at_ms > ?2",
                params![h.as_slice(), ms(now_ms)],
                operator_from_row,
            )
            .optional()
            .map_err(db("read session"))
        })
        .await
    }

    async fn delete_session(&self, token_hash: &[u8; 32]) -> Result<()> {
        let h = *token_hash;
        self.run(move |c| {
            c.execute("DELETE FROM operator_sessions WHERE token_hash = ?1", [h.as_slice()]).map_err(db("delete session"))?;
            Ok(())
        })
        .await
    }

    async fn create_enrollment_token(&self, t: &EnrollmentTokenRow) -> Result<()> {
        let t = t.clone();
        self.run(move |c| {
            c.execute(
                "INSERT INTO enrollment_tokens(id, org_id, token_hash, created_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![t.id, t.org_id, t.token_hash.as_slice(), ms(t.created_at_ms), ms(t.expires_at_ms)],
            )
            .map_err(|e| if is_fk_violation(&e) { Refusal::NotFound(format!("organisation {:?}", t.org_id)).into() } else { ControlError::store("create enrollment token", e) })?;
            Ok(())
        })
        .await
    }

    async fn create_challenge(&self, ch: &ChallengeRow, now_ms: u64) -> Result<bool> {
        let ch = ch.clone();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db("create challenge"))?;
            tx.execute("DELETE FROM challenges WHERE expires_at_ms <= ?1", [ms(now_ms)]).map_err(db("prune challenges"))?;
            let live: i64 = tx.query_row("SELECT COUNT(*) FROM challenges WHERE used_at_ms IS NULL", [], |r| r.get(0)).map_err(db("count challenges"))?;
            if live as u64 >= MAX_LIVE_CHALLENGES {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO challenges(id, nonce, issued_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![ch.id.as_slice(), ch.nonce.as_slice(), ms(ch.issued_at_ms), ms(ch.expires_at_ms)],
            )
            .map_err(db("create challenge"))?;
            tx.commit().map_err(db("create challenge"))?;
            Ok(true)
        })
        .await
    }

    async fn live_challenge(&self, id: &[u8; 16], now_ms: u64) -> Result<Option<ChallengeRow>> {
        let id = *id;
        self.run(move |c| {
            c.query_row(
                "SELECT nonce, issued_at_ms, expires_at_ms FROM challenges WHERE id = ?1 AND used_at_ms IS NULL AND expires_at_ms > ?2",
                params![id.as_slice(), ms(now_ms)],
                |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
            )
            .optional()
            .map_err(db("read challenge"))?
            .map(|(nonce, issued, expires)| {
                Ok(ChallengeRow {
                    id,
                    nonce: nonce.try_into().map_err(|_| ControlError::Store("control.db holds a nonce that is not 32 bytes".into()))?,
                    issued_at_ms: issued as u64,
                    expires_at_ms: expires as u64,
                })
            })
            .transpose()
        })
        .await
    }

    async fn enroll(&self, e: &EnrollCommit) -> Result<NodeRow> {
        let e = e.clone();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db("enroll"))?;
            let now = ms(e.now_ms);
            let used = tx
                .execute(
                    "UPDATE challenges SET used_at_ms = ?2 WHERE id = ?1 AND used_at_ms IS NULL AND expires_at_ms > ?2",
                    params![e.challenge_id.as_slice(), now],
                )
                .map_err(db("use challenge"))?;
            if used != 1 {
                return Err(Refusal::ChallengeUsed.into());
            }
            let tok: Option<(String, i64, Option<i64>)> = tx
                .query_row(
                    "SELECT org_id, expires_at_ms, used_at_ms FROM enrollment_tokens WHERE token_hash = ?1",
                    [e.token_hash.as_slice()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db("read token"))?;
            // A refused attempt still uses up its challenge: a nonce is good for one try.
            let refuse = |tx: rusqlite::Transaction<'_>, r: Refusal| -> Result<NodeRow> {
                tx.commit().map_err(db("enroll"))?;
                Err(r.into())
            };
            let org_id = match tok {
                None => return refuse(tx, Refusal::TokenUnknown),
                Some((_, _, Some(_))) => return refuse(tx, Refusal::TokenUsed),
                Some((_, exp, None)) if exp <= now => return refuse(tx, Refusal::TokenExpired),
                Some((org, _, None)) => org,
            };
            let id = e.node_id.to_text();
            match get_node(&tx, &id)? {
                Some(n) if n.status == NodeStatus::Revoked => return refuse(tx, Refusal::Revoked(n.status_reason)),
                Some(n) if n.org_id != org_id => return refuse(tx, Refusal::OtherOrg),
                Some(_) => {
                    // Re-enrollment (e.g. after expiry): a new term; a suspension stays.
                    tx.execute(
                        "UPDATE nodes SET expires_at_ms = ?2, public_key = ?3 WHERE node_id = ?1",
                        params![id, ms(e.expires_at_ms), e.public_key.to_hex()],
                    )
                    .map_err(db("re-enroll node"))?;
                }
                None => {
                    tx.execute(
                        "INSERT INTO nodes(node_id, public_key, org_id, status, enrolled_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, 'active', ?4, ?5)",
                        params![id, e.public_key.to_hex(), org_id, now, ms(e.expires_at_ms)],
                    )
                    .map_err(db("insert node"))?;
                }
            }
            tx.execute(
                "UPDATE enrollment_tokens SET used_at_ms = ?2, used_by = ?3 WHERE token_hash = ?1 AND used_at_ms IS NULL",
                params![e.token_hash.as_slice(), now, id],
            )
            .map_err(db("use token"))?;
            let node = get_node(&tx, &id)?.ok_or_else(|| ControlError::Store("enrolled node vanished".into()))?;
            tx.commit().map_err(db("enroll"))?;
            Ok(node)
        })
        .await
    }

    async fn renew(&self, challenge_id: &[u8; 16], node: &NodeId, key: &NodePublicKey, now_ms: u64, expires_at_ms: u64) -> Result<NodeRow> {
        let (ch, id, key) = (*challenge_id, node.to_text(), key.to_hex());
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db("renew"))?;
            let used = tx
                .execute("UPDATE challenges SET used_at_ms = ?2 WHERE id = ?1 AND used_at_ms IS NULL AND expires_at_ms > ?2", params![ch.as_slice(), ms(now_ms)])
                .map_err(db("use challenge"))?;
            if used != 1 {
                return Err(Refusal::ChallengeUsed.into());
            }
            let refusal = match get_node(&tx, &id)? {
                None => Some(Refusal::UnknownNode),
                Some(n) if n.public_key.to_hex() != key => Some(Refusal::UnknownNode),
                Some(n) if n.status == NodeStatus::Revoked => Some(Refusal::Revoked(n.status_reason)),
                Some(n) if n.status == NodeStatus::Suspended => Some(Refusal::Suspended(n.status_reason)),
                Some(n) if n.expires_at_ms <= now_ms => Some(Refusal::EnrollmentExpired),
                Some(_) => None,
            };
            if let Some(r) = refusal {
                tx.commit().map_err(db("renew"))?;
                return Err(r.into());
            }
            tx.execute("UPDATE nodes SET expires_at_ms = MAX(expires_at_ms, ?2) WHERE node_id = ?1", params![id, ms(expires_at_ms)]).map_err(db("renew"))?;
            let n = get_node(&tx, &id)?.ok_or_else(|| ControlError::Store("renewed node vanished".into()))?;
            tx.commit().map_err(db("renew"))?;
            Ok(n)
        })
        .await
    }

    async fn node(&self, id: &NodeId) -> Result<Option<NodeRow>> {
        let id = id.to_text();
        self.run(move |c| get_node(c, &id)).await
    }

    async fn nodes(&self, org_id: &str) -> Result<Vec<NodeRow>> {
        let org = org_id.to_string();
        self.run(move |c| {
            let mut st = c
                .prepare(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE org_id = ?1 ORDER BY enrolled_at_ms, node_id"))
                .map_err(db("list nodes"))?;
            let rows = st.query_map([org], node_from_row).map_err(db("list nodes"))?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r.map_err(db("list nodes"))??);
            }
            Ok(out)
        })
        .await
    }

    async fn set_node_status(&self, id: &NodeId, org_id: &str, status: NodeStatus, reason: &str) -> Result<()> {
        let (id, org, reason) = (id.to_text(), org_id.to_string(), reason.to_string());
        self.run(move |c| {
            let n = c
                .execute(
                    "UPDATE nodes SET status = ?3, status_reason = ?4 WHERE node_id = ?1 AND org_id = ?2 AND status <> 'revoked'",
                    params![id, org, status.as_str(), if status == NodeStatus::Active { "" } else { reason.as_str() }],
                )
                .map_err(db("set node status"))?;
            if n == 0 {
                return match get_node(c, &id)? {
                    Some(n) if n.org_id == org => Err(Refusal::Revoked(n.status_reason).into()),
                    _ => Err(Refusal::UnknownNode.into()),
                };
            }
            Ok(())
        })
        .await
    }

    async fn record_heartbeat(&self, h: &HeartbeatCommit) -> Result<()> {
        self.heartbeats.record(h).await
    }

    async fn count_refused_heartbeat(&self, id: &NodeId) -> Result<()> {
        let id = id.to_text();
        self.run(move |c| {
            c.execute("UPDATE nodes SET refused_heartbeats = refused_heartbeats + 1 WHERE node_id = ?1", [id]).map_err(db("count refusal"))?;
            Ok(())
        })
        .await
    }

    async fn heartbeat_count(&self, id: &NodeId, since_ms: u64) -> Result<u64> {
        let id = id.to_text();
        self.run(move |c| {
            c.query_row("SELECT COUNT(*) FROM heartbeats WHERE node_id = ?1 AND received_at_ms >= ?2", params![id, ms(since_ms)], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(db("count heartbeats"))
        })
        .await
    }

    async fn queue_job(&self, sign: JobSigner) -> Result<JobRow> {
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db("queue job"))?;
            let last: i64 = tx.query_row("SELECT last FROM job_sequence WHERE id = 1", [], |r| r.get(0)).map_err(db("job sequence"))?;
            let seq = (last as u64).checked_add(1).ok_or_else(|| ControlError::Store("job sequence exhausted".into()))?;
            let j = sign(seq)?;
            tx.execute("UPDATE job_sequence SET last = ?1 WHERE id = 1", [ms(seq)]).map_err(db("job sequence"))?;
            tx.execute(
                "INSERT INTO jobs(job_id, node_id, org_id, sequence, kind, envelope, created_by, created_at_ms, expires_at_ms) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                params![j.job_id.as_slice(), j.node_id.to_text(), j.org_id, ms(j.sequence), j.kind, j.envelope, j.created_by, ms(j.created_at_ms), ms(j.expires_at_ms)],
            )
            .map_err(db("queue job"))?;
            tx.commit().map_err(db("queue job"))?;
            Ok(j)
        })
        .await
    }

    async fn pending_jobs(&self, node: &NodeId, after_sequence: u64, now_ms: u64, limit: u32) -> Result<Vec<JobRow>> {
        let id = node.to_text();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db("pending jobs"))?;
            let rows = {
                let mut st = tx
                    .prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE node_id = ?1 AND sequence > ?2 AND finished_at_ms IS NULL AND expires_at_ms > ?3 ORDER BY sequence LIMIT ?4"))
                    .map_err(db("pending jobs"))?;
                let it = st.query_map(params![id, ms(after_sequence), ms(now_ms), limit], job_from_row).map_err(db("pending jobs"))?;
                it.collect::<rusqlite::Result<Vec<_>>>().map_err(db("pending jobs"))?.into_iter().collect::<Result<Vec<_>>>()?
            };
            for j in &rows {
                tx.execute("UPDATE jobs SET delivered_at_ms = ?2 WHERE job_id = ?1 AND delivered_at_ms IS NULL", params![j.job_id.as_slice(), ms(now_ms)])
                    .map_err(db("mark delivered"))?;
            }
            tx.commit().map_err(db("pending jobs"))?;
            Ok(rows)
        })
        .await
    }

    async fn finish_job(&self, node: &NodeId, job_id: &[u8; 16], outcome: &str, code: Option<&str>, result: &serde_json::Value, now_ms: u64) -> Result<bool> {
        let (id, job, outcome, code, result) = (node.to_text(), *job_id, outcome.to_string(), code.map(str::to_string), result.to_string());
        self.run(move |c| {
            let n = c
                .execute(
                    "UPDATE jobs SET outcome = ?3, code = ?4, result = ?5, finished_at_ms = ?6 WHERE job_id = ?1 AND node_id = ?2 AND finished_at_ms IS NULL",
                    params![job.as_slice(), id, outcome, code, result, ms(now_ms)],
                )
                .map_err(db("finish job"))?;
            if n == 1 {
                return Ok(true);
            }
            let exists: Option<i64> = c
                .query_row("SELECT 1 FROM jobs WHERE job_id = ?1 AND node_id = ?2", params![job.as_slice(), id], |r| r.get(0))
                .optional()
                .map_err(db("finish job"))?;
            match exists {
                Some(_) => Ok(false),
                None => Err(Refusal::NotFound(format!("job {} for this node", hex::encode(job))).into()),
            }
        })
        .await
    }

    async fn jobs(&self, node: &NodeId) -> Result<Vec<JobRow>> {
        let id = node.to_text();
        self.run(move |c| {
            let mut st = c.prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE node_id = ?1 ORDER BY sequence DESC LIMIT ?2")).map_err(db("list jobs"))?;
            let it = st.query_map(params![id, MAX_JOBS_LISTED], job_from_row).map_err(db("list jobs"))?;
            it.collect::<rusqlite::Result<Vec<_>>>().map_err(db("list jobs"))?.into_iter().collect()
        })
        .await
    }

    async fn store_receipts(&self, rows: Vec<ReceiptRow>, now_ms: u64) -> Result<(u32, u32)> {
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db("store receipts"))?;
            let (mut stored, mut dup) = (0u32, 0u32);
            // Usage of the receipts stored now, summed per (node, model, day): one upsert per group.
            let mut usage = UsageSums::default();
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO receipts(receipt_id, node_id, model_id, mode, prompt_tokens, completion_tokens, price_micro_credits, started_at_ms, signed, received_at_ms)
                         VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
                    )
                    .map_err(db("store receipt"))?;
                for r in &rows {
                    let node = r.node_id.to_text();
                    let n = insert
                        .execute(params![r.receipt_id.as_slice(), node, r.model_id, r.mode, r.prompt_tokens, r.completion_tokens, ms(r.price_micro_credits), ms(r.started_at_ms), r.signed, ms(now_ms)])
                        .map_err(db("store receipt"))?;
                    if n == 0 {
                        dup += 1;
                    } else {
                        stored += 1;
                        usage.add(node, r);
                    }
                }
            }
            {
                let mut upsert = tx
                    .prepare_cached(
                        "INSERT INTO usage_daily(node_id, model_id, day, requests, prompt_tokens, completion_tokens, price_micro_credits) VALUES (?1,?2,?3,?4,?5,?6,?7)
                         ON CONFLICT(node_id, model_id, day) DO UPDATE SET requests = requests + excluded.requests, prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                         completion_tokens = completion_tokens + excluded.completion_tokens, price_micro_credits = price_micro_credits + excluded.price_micro_credits",
                    )
                    .map_err(db("usage"))?;
                for ((node, model, day), u) in &usage.0 {
                    upsert.execute(params![node, model, ms(*day), ms(u.requests), ms(u.prompt_tokens), ms(u.completion_tokens), ms(u.price_micro_credits)]).map_err(db("usage"))?;
                }
            }
            tx.commit().map_err(db("store receipts"))?;
            Ok((stored, dup))
        })
        .await
    }

    async fn receipt_count(&self, node: &NodeId) -> Result<u64> {
        let id = node.to_text();
        self.run(move |c| {
            c.query_row("SELECT COUNT(*) FROM receipts WHERE node_id = ?1", [id], |r| r.get::<_, i64>(0)).map(|n| n as u64).map_err(db("count receipts"))
        })
        .await
    }

    async fn usage(&self, node: &NodeId) -> Result<Vec<UsageDay>> {
        let id = node.to_text();
        self.run(move |c| {
            let mut st = c
                .prepare("SELECT day, model_id, requests, prompt_tokens, completion_tokens, price_micro_credits FROM usage_daily WHERE node_id = ?1 ORDER BY day DESC, model_id LIMIT 400")
                .map_err(db("usage"))?;
            let rows = st
                .query_map([id], |r| {
                    Ok(UsageDay {
                        day: r.get::<_, i64>(0)? as u64,
                        model_id: r.get(1)?,
                        requests: r.get::<_, i64>(2)? as u64,
                        prompt_tokens: r.get::<_, i64>(3)? as u64,
                        completion_tokens: r.get::<_, i64>(4)? as u64,
                        price_micro_credits: r.get::<_, i64>(5)? as u64,
                    })
                })
                .map_err(db("usage"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db("usage"))?;
            Ok(rows)
        })
        .await
    }
}
