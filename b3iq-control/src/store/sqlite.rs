//! SQLite backend (rusqlite; WAL, `synchronous=FULL`: a commit is on disk when it returns). One
//! connection behind a mutex, used from tokio's blocking pool; every rule is one transaction.
//! The hot writes (heartbeats, credit holds, receipts) are group-committed by one writer
//! thread ([`writer`]); the hot reads (gateway keys, nodes, holds, tunnel sessions) use a second,
//! read-only connection, so they never wait behind a commit's fsync (WAL lets readers run
//! beside the writer and see every committed transaction).

mod heartbeats;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use b3iq_core::heartbeat::HealthStatus;
use b3iq_core::{NodeId, NodePublicKey};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::credits::{
    self, account, kind, CheckInput, HoldState, LedgerRow, RawHold, TxMeta, GATEWAY_KEY_COLUMNS,
    HOLD_COLUMNS, MAX_TOTAL_TOPUPS,
};
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
    // 4: job keys (the newest is current) and the key each node pins, with the one a pending
    // rotation moves it to.
    r#"
    CREATE TABLE job_keys (
        public_key TEXT PRIMARY KEY,
        created_at_ms INTEGER NOT NULL
    );
    ALTER TABLE nodes ADD COLUMN job_key TEXT;
    ALTER TABLE nodes ADD COLUMN job_key_next TEXT;
    "#,
    // 5: gateway keys (sha256 of the token only), the credit ledger (accounts with guarded
    // balances, transactions, rows summing to zero per transaction), holds, each key's spend
    // per UTC day, and each organisation's totals.
    r#"
    CREATE TABLE gateway_keys (
        id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL REFERENCES orgs(id),
        name TEXT NOT NULL,
        token_hash BLOB NOT NULL UNIQUE,
        rate_per_min INTEGER NOT NULL CHECK (rate_per_min > 0),
        spend_limit_per_day INTEGER CHECK (spend_limit_per_day IS NULL OR spend_limit_per_day > 0),
        created_at_ms INTEGER NOT NULL,
        revoked_at_ms INTEGER
    );
    CREATE INDEX gateway_keys_org ON gateway_keys(org_id, created_at_ms);
    CREATE TABLE ledger_accounts (
        account TEXT PRIMARY KEY,
        balance INTEGER NOT NULL DEFAULT 0,
        CHECK (balance >= 0 OR account LIKE 'external:%')
    );
    CREATE TABLE ledger_tx (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('topup', 'hold', 'settle', 'release', 'expire')),
        org_id TEXT NOT NULL,
        key_id TEXT,
        hold_id BLOB,
        node_id TEXT,
        receipt_id BLOB,
        reference TEXT NOT NULL DEFAULT '',
        created_at_ms INTEGER NOT NULL
    );
    CREATE INDEX ledger_tx_org ON ledger_tx(org_id, id);
    CREATE UNIQUE INDEX ledger_tx_topup_reference ON ledger_tx(reference) WHERE kind = 'topup';
    CREATE TABLE ledger_rows (
        tx_id INTEGER NOT NULL REFERENCES ledger_tx(id),
        account TEXT NOT NULL REFERENCES ledger_accounts(account),
        amount INTEGER NOT NULL CHECK (amount <> 0),
        PRIMARY KEY (tx_id, account)
    );
    CREATE INDEX ledger_rows_account ON ledger_rows(account);
    CREATE TABLE credit_holds (
        id BLOB PRIMARY KEY,
        org_id TEXT NOT NULL REFERENCES orgs(id),
        key_id TEXT NOT NULL REFERENCES gateway_keys(id),
        amount INTEGER NOT NULL CHECK (amount > 0),
        day INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'settled', 'released', 'expired')),
        charge INTEGER CHECK (charge IS NULL OR (charge >= 0 AND charge <= amount)),
        node_id TEXT,
        receipt_id BLOB UNIQUE,
        closed_at_ms INTEGER
    );
    CREATE INDEX credit_holds_open ON credit_holds(created_at_ms) WHERE state = 'open';
    CREATE INDEX credit_holds_org ON credit_holds(org_id, state);
    CREATE TABLE gateway_key_spend (
        key_id TEXT NOT NULL REFERENCES gateway_keys(id),
        day INTEGER NOT NULL,
        reserved INTEGER NOT NULL CHECK (reserved >= 0),
        PRIMARY KEY (key_id, day)
    );
    CREATE TABLE org_credit_totals (
        org_id TEXT PRIMARY KEY REFERENCES orgs(id),
        topped_up_total INTEGER NOT NULL DEFAULT 0 CHECK (topped_up_total >= 0),
        spent_total INTEGER NOT NULL DEFAULT 0 CHECK (spent_total >= 0)
    );
    "#,
    // 6: which gateway replica holds each node's tunnel.
    r#"
    CREATE TABLE tunnel_sessions (
        node_id TEXT PRIMARY KEY,
        replica_url TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        max_concurrent BIGINT NOT NULL,
        models TEXT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    );
    CREATE INDEX tunnel_sessions_updated ON tunnel_sessions(updated_at_ms);
    "#,
    // 7: a hold whose client went away mid-stream waits for its node's receipt by upload.
    r#"
    ALTER TABLE credit_holds ADD COLUMN awaiting_request_id BLOB;
    ALTER TABLE credit_holds ADD COLUMN awaiting_ticket TEXT;
    CREATE INDEX credit_holds_awaiting ON credit_holds(awaiting_request_id) WHERE awaiting_request_id IS NOT NULL;
    "#,
    // 8: each gateway key's rate bucket, shared by every replica.
    r#"
    ALTER TABLE gateway_keys ADD COLUMN rate_units INTEGER;
    ALTER TABLE gateway_keys ADD COLUMN rate_at_ms INTEGER;
    "#,
    // 9: each node's reputation (b3iq-core's state, as JSON).
    r#"
    CREATE TABLE node_reputation (
        node_id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
    "#,
    // 10: settlement epochs; each network receipt is assigned to exactly one epoch (its
    // epoch_id is set once, from NULL, when the epoch closes).
    r#"
    CREATE TABLE epochs (
        epoch_id INTEGER PRIMARY KEY,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        receipt_count INTEGER NOT NULL,
        closed_at_ms INTEGER NOT NULL,
        claim_file TEXT,
        tx_hash TEXT,
        posted_at INTEGER
    );
    ALTER TABLE receipts ADD COLUMN epoch_id INTEGER;
    CREATE INDEX receipts_epoch ON receipts(epoch_id, started_at_ms);
    ALTER TABLE nodes ADD COLUMN payout_address TEXT;
    "#,
    // 11: verification in the network: verifier verdicts, and disputes opened from failed ones.
    r#"
    CREATE TABLE verification_verdicts (
        verdict_hash BLOB PRIMARY KEY,
        verifier TEXT NOT NULL,
        subject TEXT NOT NULL,
        request_id BLOB NOT NULL,
        receipt_id BLOB NOT NULL,
        outcome TEXT NOT NULL,
        metric TEXT NOT NULL,
        signed BLOB NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE INDEX verification_verdicts_subject ON verification_verdicts(subject, created_at_ms);
    CREATE TABLE disputes (
        evidence_hash BLOB PRIMARY KEY,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        request_id BLOB NOT NULL,
        status TEXT NOT NULL,
        chain_tx TEXT,
        opened_at_ms INTEGER NOT NULL
    );
    CREATE INDEX disputes_subject ON disputes(subject, opened_at_ms);
    "#,
    // 12: disputes on chain: the checked evidence, the disputed epoch, the chain's dispute id
    // and our transactions, so the dispute tool resumes after a restart without opening twice.
    // Rows from migration 11 were opened by one verifier's fail and carry no evidence: they
    // stay as reputation-only records.
    r#"
    ALTER TABLE disputes ADD COLUMN evidence BLOB;
    ALTER TABLE disputes ADD COLUMN epoch_id INTEGER;
    ALTER TABLE disputes ADD COLUMN chain_dispute_id TEXT;
    ALTER TABLE disputes ADD COLUMN vote_tx TEXT;
    ALTER TABLE disputes ADD COLUMN slash_tx TEXT;
    ALTER TABLE disputes ADD COLUMN updated_at_ms INTEGER NOT NULL DEFAULT 0;
    UPDATE disputes SET status = 'reputation_only', updated_at_ms = opened_at_ms WHERE status = 'open';
    CREATE INDEX disputes_status ON disputes(status, opened_at_ms);
    "#,
    // 13: the last registration request accepted per node (`POST /v1/node/registration`),
    // so a replayed one is refused.
    r#"
    CREATE TABLE registration_requests (
        node_id TEXT PRIMARY KEY REFERENCES nodes(node_id),
        sent_at_ms INTEGER NOT NULL,
        operator TEXT NOT NULL,
        accepted_at_ms INTEGER NOT NULL
    );
    "#,
    // 14: canaries: a verdict about the gateway's own canary request is marked.
    r#"
    ALTER TABLE verification_verdicts ADD COLUMN canary INTEGER NOT NULL DEFAULT 0;
    "#,
];

/// Prepared statements kept per connection (more than the store's distinct hot statements).
const STATEMENT_CACHE: usize = 128;

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// A read-only connection for the hot reads (the same as `conn` in memory).
    reader: Arc<Mutex<Connection>>,
    /// Group commit of the hot writes (heartbeats, credit holds, receipts): see `writer`.
    writer: writer::GroupWriter,
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
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db("busy_timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db("journal_mode"))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db("synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db("foreign_keys"))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        let store = Self::migrate(conn)?;
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db("open control.db for reading"))?;
        reader
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db("busy_timeout"))?;
        reader.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(SqliteStore {
            reader: Arc::new(Mutex::new(reader)),
            ..store
        })
    }

    /// An in-memory database (tests).
    ///
    /// # Errors
    /// `Store` when SQLite fails.
    pub fn open_in_memory() -> Result<SqliteStore> {
        let conn = Connection::open_in_memory().map_err(db("open"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(db("foreign_keys"))?;
        Self::migrate(conn)
    }

    fn migrate(mut conn: Connection) -> Result<SqliteStore> {
        let current: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db("user_version"))?;
        if current as usize > MIGRATIONS.len() {
            return Err(ControlError::Store(format!(
                "control.db has schema version {current}, newer than this build knows ({}); upgrade b3iq-control",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let tx = conn.transaction().map_err(db("migrate"))?;
            tx.execute_batch(sql).map_err(db("migrate"))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(db("migrate"))?;
            tx.commit().map_err(db("migrate"))?;
        }
        let conn = Arc::new(Mutex::new(conn));
        Ok(SqliteStore {
            writer: writer::GroupWriter::start(conn.clone())?,
            reader: conn.clone(),
            conn,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
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

    /// Runs `f` (reads only) on the read connection, beside the writer.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&c)
        })
        .await
        .map_err(|e| ControlError::store("blocking task", e))?
    }

    /// Runs `f` as one write of the next group commit (see `writer`): its changes are rolled
    /// back alone when it fails, and it returns after the batch is on disk.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.writer.write(writer::keep_none, f).await
    }
}

/// `execute` through the connection's statement cache (parsing the SQL is a large part of a
/// short write's time).
fn exec<P: rusqlite::Params>(c: &Connection, sql: &str, p: P) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(p)
}

/// `query_row` through the connection's statement cache.
fn row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
    c: &Connection,
    sql: &str,
    p: P,
    f: F,
) -> rusqlite::Result<T> {
    c.prepare_cached(sql)?.query_row(p, f)
}

fn epoch_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EpochRow> {
    Ok(EpochRow {
        epoch_id: r.get::<_, i64>(0)? as u64,
        start_ms: r.get::<_, i64>(1)? as u64,
        end_ms: r.get::<_, i64>(2)? as u64,
        receipt_count: r.get::<_, i64>(3)? as u64,
        closed_at_ms: r.get::<_, i64>(4)? as u64,
        claim_file: r.get(5)?,
        tx_hash: r.get(6)?,
        posted_at: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
    })
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
            Some((
                seq,
                r.get::<_, i64>("last_sent_at_ms")?,
                r.get::<_, i64>("last_received_at_ms")?,
                health,
                body,
            ))
        }
    };
    let org_id: String = r.get("org_id")?;
    let status_reason: String = r.get("status_reason")?;
    let enrolled: i64 = r.get("enrolled_at_ms")?;
    let expires: i64 = r.get("expires_at_ms")?;
    let refused: i64 = r.get("refused_heartbeats")?;
    let job_key: Option<String> = r.get("job_key")?;
    let job_key_next: Option<String> = r.get("job_key_next")?;
    Ok((|| {
        let bad = |what: &str| {
            ControlError::Store(format!(
                "control.db holds an invalid {what} for node {node_id}"
            ))
        };
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
            job_key: job_key
                .map(|k| NodePublicKey::from_hex(&k))
                .transpose()
                .map_err(|_| bad("job key"))?,
            job_key_next: job_key_next
                .map(|k| NodePublicKey::from_hex(&k))
                .transpose()
                .map_err(|_| bad("next job key"))?,
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
        let bad = |what: &str| {
            ControlError::Store(format!(
                "control.db holds an invalid {what} for a job of {node_id}"
            ))
        };
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
            result: result
                .map(|s| serde_json::from_str(&s))
                .transpose()
                .map_err(|_| bad("result"))?,
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
    [
        HealthStatus::Starting,
        HealthStatus::Healthy,
        HealthStatus::Degraded,
        HealthStatus::Unhealthy,
    ]
    .into_iter()
    .find(|h| health_name(*h) == s)
}

fn get_node(c: &Connection, id: &str) -> Result<Option<NodeRow>> {
    row(
        c,
        &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE node_id = ?1"),
        [id],
        node_from_row,
    )
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

// ---- gateway keys and credits -------------------------------------------------------------

fn gateway_key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GatewayKey> {
    Ok(GatewayKey {
        id: r.get(0)?,
        org_id: r.get(1)?,
        name: r.get(2)?,
        rate_per_min: r.get(3)?,
        spend_limit_per_day: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        created_at_ms: r.get::<_, i64>(5)? as u64,
        revoked_at_ms: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
    })
}

fn get_hold(c: &Connection, id: &[u8; 16]) -> Result<Option<HoldRecord>> {
    row(
        c,
        &format!("SELECT {HOLD_COLUMNS} FROM credit_holds WHERE id = ?1"),
        [id.as_slice()],
        |r| {
            Ok(RawHold {
                id: r.get(0)?,
                org_id: r.get(1)?,
                key_id: r.get(2)?,
                amount: r.get(3)?,
                created_at_ms: r.get(4)?,
                state: r.get(5)?,
                charge: r.get(6)?,
                node_id: r.get(7)?,
                receipt_id: r.get(8)?,
                closed_at_ms: r.get(9)?,
            })
        },
    )
    .optional()
    .map_err(db("read hold"))?
    .map(RawHold::check)
    .transpose()
}

/// An account's balance (0 when it has none yet), as stored for a non-`external` account.
fn account_balance(c: &Connection, account: &str) -> Result<u64> {
    let b: Option<i64> = row(
        c,
        "SELECT balance FROM ledger_accounts WHERE account = ?1",
        [account],
        |r| r.get(0),
    )
    .optional()
    .map_err(db("read balance"))?;
    Ok(b.unwrap_or(0).max(0) as u64)
}

/// Writes one balanced ledger transaction inside the caller's transaction: the `ledger_tx` row,
/// then per account (in name order) its balance change and its row. `Ok(Err(account))` when a
/// change would take a guarded account below zero; the caller refuses and drops (rolls back)
/// its transaction.
fn ledger_apply(
    c: &Connection,
    t: &TxMeta<'_>,
    rows: &[(String, i64)],
) -> Result<std::result::Result<i64, String>> {
    let rows = credits::balanced(rows)?;
    exec(c,
        "INSERT INTO ledger_tx(kind, org_id, key_id, hold_id, node_id, receipt_id, reference, created_at_ms) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
        params![t.kind, t.org_id, t.key_id, t.hold_id, t.node_id, t.receipt_id, t.reference, ms(t.now_ms)],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            Refusal::Exists(format!("a top-up with reference {:?}", t.reference)).into()
        } else {
            ControlError::store("ledger transaction", e)
        }
    })?;
    let tx_id = c.last_insert_rowid();
    for (account, amount) in &rows {
        exec(
            c,
            "INSERT OR IGNORE INTO ledger_accounts(account, balance) VALUES (?1, 0)",
            [account],
        )
        .map_err(db("ledger account"))?;
        let n = c
            .execute("UPDATE ledger_accounts SET balance = balance + ?2 WHERE account = ?1 AND (balance + ?2 >= 0 OR account LIKE 'external:%')", params![account, amount])
            .map_err(db("ledger balance"))?;
        if n == 0 {
            return Ok(Err(account.clone()));
        }
        exec(
            c,
            "INSERT INTO ledger_rows(tx_id, account, amount) VALUES (?1, ?2, ?3)",
            params![tx_id, account, amount],
        )
        .map_err(db("ledger row"))?;
    }
    Ok(Ok(tx_id))
}

/// Groups joined (transaction, row) pairs, ordered by transaction, into entries.
pub(crate) fn group_entries(
    rows: Vec<(LedgerEntry, Option<String>, Option<i64>)>,
) -> Vec<LedgerEntry> {
    let mut out: Vec<LedgerEntry> = Vec::new();
    for (e, account, amount) in rows {
        if out.last().map(|l| l.tx_id) != Some(e.tx_id) {
            out.push(e);
        }
        if let (Some(account), Some(amount), Some(last)) = (account, amount, out.last_mut()) {
            last.rows.push(LedgerRow { account, amount });
        }
    }
    out
}

#[async_trait]
impl ControlStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn create_org(&self, org: &Org) -> Result<()> {
        let org = org.clone();
        self.run(move |c| {
            exec(
                c,
                "INSERT INTO orgs(id, name, created_at_ms) VALUES (?1, ?2, ?3)",
                params![org.id, org.name, ms(org.created_at_ms)],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Refusal::Exists(format!("organisation {:?}", org.name)).into()
                } else {
                    ControlError::store("create org", e)
                }
            })?;
            Ok(())
        })
        .await
    }

    async fn org(&self, id_or_name: &str) -> Result<Option<Org>> {
        let k = id_or_name.to_string();
        self.run(move |c| {
            row(
                c,
                "SELECT id, name, created_at_ms FROM orgs WHERE id = ?1 OR name = ?1",
                [k],
                |r| {
                    Ok(Org {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        created_at_ms: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .optional()
            .map_err(db("read org"))
        })
        .await
    }

    async fn create_operator(&self, op: &Operator) -> Result<()> {
        let op = op.clone();
        self.run(move |c| {
            exec(c,
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
            row(c, "SELECT id, org_id, username, password_phc, created_at_ms FROM operators WHERE username = ?1", [u], operator_from_row)
                .optional()
                .map_err(db("read operator"))
        })
        .await
    }

    async fn create_session(
        &self,
        token_hash: &[u8; 32],
        operator_id: &str,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<()> {
        let (h, op) = (*token_hash, operator_id.to_string());
        self.run(move |c| {
            let tx = c.transaction().map_err(db("create session"))?;
            exec(&tx, "DELETE FROM operator_sessions WHERE expires_at_ms <= ?1", [ms(now_ms)]).map_err(db("prune sessions"))?;
            exec(&tx,
                "INSERT INTO operator_sessions(token_hash, operator_id, created_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![h.as_slice(), op, ms(now_ms), ms(expires_at_ms)],
            )
            .map_err(db("create session"))?;
            tx.commit().map_err(db("create session"))
        })
        .await
    }

    async fn session_operator(
        &self,
        token_hash: &[u8; 32],
        now_ms: u64,
    ) -> Result<Option<Operator>> {
        let h = *token_hash;
        self.run(move |c| {
            row(c,
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
            exec(
                c,
                "DELETE FROM operator_sessions WHERE token_hash = ?1",
                [h.as_slice()],
            )
            .map_err(db("delete session"))?;
            Ok(())
        })
        .await
    }

    async fn create_enrollment_token(&self, t: &EnrollmentTokenRow) -> Result<()> {
        let t = t.clone();
        self.run(move |c| {
            exec(c,
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
            exec(&tx, "DELETE FROM challenges WHERE expires_at_ms <= ?1", [ms(now_ms)]).map_err(db("prune challenges"))?;
            let live: i64 = row(&tx, "SELECT COUNT(*) FROM challenges WHERE used_at_ms IS NULL", [], |r| r.get(0)).map_err(db("count challenges"))?;
            if live as u64 >= MAX_LIVE_CHALLENGES {
                return Ok(false);
            }
            exec(&tx,
                "INSERT INTO challenges(id, nonce, issued_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![ch.id.as_slice(), ch.nonce.as_slice(), ms(ch.issued_at_ms), ms(ch.expires_at_ms)],
            )
            .map_err(db("create challenge"))?;
            tx.commit().map_err(db("create challenge"))?;
            Ok(true)
        })
        .await
    }

    async fn use_challenge(&self, id: &[u8; 16], now_ms: u64) -> Result<bool> {
        let id = *id;
        self.run(move |c| {
            let n = c
                .execute("UPDATE challenges SET used_at_ms = ?2 WHERE id = ?1 AND used_at_ms IS NULL AND expires_at_ms > ?2", params![id.as_slice(), ms(now_ms)])
                .map_err(db("use challenge"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn live_challenge(&self, id: &[u8; 16], now_ms: u64) -> Result<Option<ChallengeRow>> {
        let id = *id;
        self.run(move |c| {
            row(c,
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
                    exec(&tx,
                        "UPDATE nodes SET expires_at_ms = ?2, public_key = ?3, job_key = ?4, job_key_next = NULL WHERE node_id = ?1",
                        params![id, ms(e.expires_at_ms), e.public_key.to_hex(), e.job_key.to_hex()],
                    )
                    .map_err(db("re-enroll node"))?;
                }
                None => {
                    exec(&tx,
                        "INSERT INTO nodes(node_id, public_key, org_id, status, enrolled_at_ms, expires_at_ms, job_key) VALUES (?1, ?2, ?3, 'active', ?4, ?5, ?6)",
                        params![id, e.public_key.to_hex(), org_id, now, ms(e.expires_at_ms), e.job_key.to_hex()],
                    )
                    .map_err(db("insert node"))?;
                }
            }
            exec(&tx,
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

    async fn renew(
        &self,
        challenge_id: &[u8; 16],
        node: &NodeId,
        key: &NodePublicKey,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<NodeRow> {
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
            exec(&tx, "UPDATE nodes SET expires_at_ms = MAX(expires_at_ms, ?2) WHERE node_id = ?1", params![id, ms(expires_at_ms)]).map_err(db("renew"))?;
            let n = get_node(&tx, &id)?.ok_or_else(|| ControlError::Store("renewed node vanished".into()))?;
            tx.commit().map_err(db("renew"))?;
            Ok(n)
        })
        .await
    }

    async fn node(&self, id: &NodeId) -> Result<Option<NodeRow>> {
        let id = id.to_text();
        self.read(move |c| get_node(c, &id)).await
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

    async fn set_node_status(
        &self,
        id: &NodeId,
        org_id: &str,
        status: NodeStatus,
        reason: &str,
    ) -> Result<()> {
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
        heartbeats::record(&self.writer, h).await
    }

    async fn count_refused_heartbeat(&self, id: &NodeId) -> Result<()> {
        let id = id.to_text();
        self.run(move |c| {
            exec(
                c,
                "UPDATE nodes SET refused_heartbeats = refused_heartbeats + 1 WHERE node_id = ?1",
                [id],
            )
            .map_err(db("count refusal"))?;
            Ok(())
        })
        .await
    }

    async fn heartbeat_count(&self, id: &NodeId, since_ms: u64) -> Result<u64> {
        let id = id.to_text();
        self.run(move |c| {
            row(
                c,
                "SELECT COUNT(*) FROM heartbeats WHERE node_id = ?1 AND received_at_ms >= ?2",
                params![id, ms(since_ms)],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(db("count heartbeats"))
        })
        .await
    }

    async fn queue_job(&self, sign: JobSigner) -> Result<JobRow> {
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db("queue job"))?;
            let last: i64 = row(&tx, "SELECT last FROM job_sequence WHERE id = 1", [], |r| r.get(0)).map_err(db("job sequence"))?;
            let seq = (last as u64).checked_add(1).ok_or_else(|| ControlError::Store("job sequence exhausted".into()))?;
            let j = sign(seq)?;
            exec(&tx, "UPDATE job_sequence SET last = ?1 WHERE id = 1", [ms(seq)]).map_err(db("job sequence"))?;
            exec(&tx,
                "INSERT INTO jobs(job_id, node_id, org_id, sequence, kind, envelope, created_by, created_at_ms, expires_at_ms) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                params![j.job_id.as_slice(), j.node_id.to_text(), j.org_id, ms(j.sequence), j.kind, j.envelope, j.created_by, ms(j.created_at_ms), ms(j.expires_at_ms)],
            )
            .map_err(db("queue job"))?;
            tx.commit().map_err(db("queue job"))?;
            Ok(j)
        })
        .await
    }

    async fn pending_jobs(
        &self,
        node: &NodeId,
        after_sequence: u64,
        now_ms: u64,
        limit: u32,
    ) -> Result<Vec<JobRow>> {
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
                exec(&tx, "UPDATE jobs SET delivered_at_ms = ?2 WHERE job_id = ?1 AND delivered_at_ms IS NULL", params![j.job_id.as_slice(), ms(now_ms)])
                    .map_err(db("mark delivered"))?;
            }
            tx.commit().map_err(db("pending jobs"))?;
            Ok(rows)
        })
        .await
    }

    async fn finish_job(
        &self,
        node: &NodeId,
        job_id: &[u8; 16],
        outcome: &str,
        code: Option<&str>,
        result: &serde_json::Value,
        now_ms: u64,
    ) -> Result<bool> {
        let (id, job, outcome, code, result) = (
            node.to_text(),
            *job_id,
            outcome.to_string(),
            code.map(str::to_string),
            result.to_string(),
        );
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

    async fn job(&self, node: &NodeId, job_id: &[u8; 16]) -> Result<Option<JobRow>> {
        let (id, job) = (node.to_text(), *job_id);
        self.run(move |c| {
            row(
                c,
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE node_id = ?1 AND job_id = ?2"),
                params![id, job.as_slice()],
                job_from_row,
            )
            .optional()
            .map_err(db("read job"))?
            .transpose()
        })
        .await
    }

    async fn job_keys(&self) -> Result<Vec<JobKeyRow>> {
        self.run(|c| {
            let mut st = c
                .prepare(
                    "SELECT public_key, created_at_ms FROM job_keys ORDER BY created_at_ms, rowid",
                )
                .map_err(db("job keys"))?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(db("job keys"))?;
            rows.map(|r| {
                let (k, at) = r.map_err(db("job keys"))?;
                Ok(JobKeyRow {
                    public_key: NodePublicKey::from_hex(&k).map_err(|_| {
                        ControlError::Store(format!("control.db holds an invalid job key {k:?}"))
                    })?,
                    created_at_ms: at as u64,
                })
            })
            .collect()
        })
        .await
    }

    async fn adopt_job_key(&self, key: &NodePublicKey, now_ms: u64) -> Result<bool> {
        let k = key.to_hex();
        self.run(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db("adopt job key"))?;
            let n: i64 = row(&tx, "SELECT COUNT(*) FROM job_keys", [], |r| r.get(0))
                .map_err(db("adopt job key"))?;
            if n > 0 {
                return Ok(false);
            }
            exec(
                &tx,
                "INSERT INTO job_keys(public_key, created_at_ms) VALUES (?1, ?2)",
                params![k, ms(now_ms)],
            )
            .map_err(db("adopt job key"))?;
            exec(
                &tx,
                "UPDATE nodes SET job_key = ?1 WHERE job_key IS NULL",
                [&k],
            )
            .map_err(db("adopt job key"))?;
            tx.commit().map_err(db("adopt job key"))?;
            Ok(true)
        })
        .await
    }

    async fn add_job_key(&self, key: &NodePublicKey, now_ms: u64) -> Result<()> {
        let k = key.to_hex();
        self.run(move |c| {
            exec(
                c,
                "INSERT INTO job_keys(public_key, created_at_ms) VALUES (?1, ?2)",
                params![k, ms(now_ms)],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    Refusal::Exists(format!("job key {k}")).into()
                } else {
                    ControlError::store("add job key", e)
                }
            })?;
            Ok(())
        })
        .await
    }

    async fn nodes_not_pinning(&self, key: &NodePublicKey, now_ms: u64) -> Result<Vec<NodeRow>> {
        let k = key.to_hex();
        self.run(move |c| {
            let mut st = c
                .prepare(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE status = 'active' AND expires_at_ms > ?2 AND (job_key IS NULL OR job_key <> ?1) ORDER BY node_id"))
                .map_err(db("nodes to rotate"))?;
            let it = st.query_map(params![k, ms(now_ms)], node_from_row).map_err(db("nodes to rotate"))?;
            it.collect::<rusqlite::Result<Vec<_>>>().map_err(db("nodes to rotate"))?.into_iter().collect()
        })
        .await
    }

    async fn set_job_key_next(&self, node: &NodeId, next: Option<&NodePublicKey>) -> Result<()> {
        let (id, k) = (node.to_text(), next.map(|k| k.to_hex()));
        self.run(move |c| {
            exec(
                c,
                "UPDATE nodes SET job_key_next = ?2 WHERE node_id = ?1",
                params![id, k],
            )
            .map_err(db("next job key"))?;
            Ok(())
        })
        .await
    }

    async fn confirm_job_key(
        &self,
        node: &NodeId,
        old: &NodePublicKey,
        new: &NodePublicKey,
    ) -> Result<bool> {
        let (id, old, new) = (node.to_text(), old.to_hex(), new.to_hex());
        self.run(move |c| {
            let n = c
                .execute(
                    "UPDATE nodes SET job_key = ?3, job_key_next = CASE WHEN job_key_next = ?3 THEN NULL ELSE job_key_next END WHERE node_id = ?1 AND job_key = ?2",
                    params![id, old, new],
                )
                .map_err(db("confirm job key"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn abandon_job_key_next(&self, node: &NodeId, next: &NodePublicKey) -> Result<()> {
        let (id, next) = (node.to_text(), next.to_hex());
        self.run(move |c| {
            exec(
                c,
                "UPDATE nodes SET job_key_next = NULL WHERE node_id = ?1 AND job_key_next = ?2",
                params![id, next],
            )
            .map_err(db("abandon job key"))?;
            Ok(())
        })
        .await
    }

    async fn store_receipts(&self, rows: Vec<ReceiptRow>, now_ms: u64) -> Result<(u32, u32)> {
        self.write(move |tx| {
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
            Ok((stored, dup))
        })
        .await
    }

    async fn receipt_count(&self, node: &NodeId) -> Result<u64> {
        let id = node.to_text();
        self.run(move |c| {
            row(
                c,
                "SELECT COUNT(*) FROM receipts WHERE node_id = ?1",
                [id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(db("count receipts"))
        })
        .await
    }

    async fn close_epoch(&self, end_ms: u64, now_ms: u64) -> Result<Option<EpochRow>> {
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db("close epoch"))?;
            let (count, start): (i64, Option<i64>) = row(&tx, "SELECT COUNT(*), MIN(started_at_ms) FROM receipts WHERE epoch_id IS NULL AND mode = 'network' AND started_at_ms < ?1 AND receipt_id IN (SELECT receipt_id FROM credit_holds WHERE state = 'settled')", [ms(end_ms)], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db("close epoch"))?;
            let Some(start) = start.filter(|_| count > 0) else { return Ok(None) };
            let last: i64 = row(&tx, "SELECT COALESCE(MAX(epoch_id), 0) FROM epochs", [], |r| r.get(0)).map_err(db("close epoch"))?;
            let id = last + 1;
            exec(&tx, "INSERT INTO epochs(epoch_id, start_ms, end_ms, receipt_count, closed_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)", params![id, start, ms(end_ms), count, ms(now_ms)]).map_err(db("close epoch"))?;
            let n = exec(&tx, "UPDATE receipts SET epoch_id = ?1 WHERE epoch_id IS NULL AND mode = 'network' AND started_at_ms < ?2 AND receipt_id IN (SELECT receipt_id FROM credit_holds WHERE state = 'settled')", params![id, ms(end_ms)]).map_err(db("close epoch"))?;
            if n as i64 != count {
                return Err(ControlError::Store(format!("close epoch: counted {count} receipts but assigned {n}")));
            }
            tx.commit().map_err(db("close epoch"))?;
            Ok(Some(EpochRow { epoch_id: id as u64, start_ms: start as u64, end_ms, receipt_count: count as u64, closed_at_ms: now_ms, claim_file: None, tx_hash: None, posted_at: None }))
        })
        .await
    }

    async fn epoch_receipts(&self, epoch_id: u64) -> Result<Vec<Vec<u8>>> {
        self.run(move |c| {
            let mut st = c.prepare_cached("SELECT signed FROM receipts WHERE epoch_id = ?1 ORDER BY receipt_id").map_err(db("epoch receipts"))?;
            let it = st.query_map([ms(epoch_id)], |r| r.get::<_, Vec<u8>>(0)).map_err(db("epoch receipts"))?;
            it.collect::<rusqlite::Result<Vec<_>>>().map_err(db("epoch receipts"))
        })
        .await
    }

    async fn set_epoch_claim_file(&self, epoch_id: u64, claim_file: &str) -> Result<()> {
        let f = claim_file.to_string();
        self.run(move |c| {
            let n = exec(c, "UPDATE epochs SET claim_file = ?2 WHERE epoch_id = ?1", params![ms(epoch_id), f]).map_err(db("store claim file"))?;
            if n == 0 {
                return Err(Refusal::NotFound(format!("epoch {epoch_id}")).into());
            }
            Ok(())
        })
        .await
    }

    async fn set_epoch_posted(&self, epoch_id: u64, tx_hash: Option<&str>, posted_at: u64) -> Result<()> {
        let h = tx_hash.map(str::to_string);
        self.run(move |c| {
            let n = exec(c, "UPDATE epochs SET tx_hash = COALESCE(?2, tx_hash), posted_at = ?3 WHERE epoch_id = ?1", params![ms(epoch_id), h, ms(posted_at)]).map_err(db("record epoch post"))?;
            if n == 0 {
                return Err(Refusal::NotFound(format!("epoch {epoch_id}")).into());
            }
            Ok(())
        })
        .await
    }

    async fn set_payout_address(&self, node: &NodeId, address: &str) -> Result<()> {
        let (id, a) = (node.to_text(), address.to_string());
        self.run(move |c| {
            if exec(c, "UPDATE nodes SET payout_address = ?2 WHERE node_id = ?1", params![id, a]).map_err(db("set payout address"))? == 0 {
                return Err(Refusal::UnknownNode.into());
            }
            Ok(())
        })
        .await
    }

    async fn payout_addresses(&self) -> Result<Vec<(NodeId, String)>> {
        self.run(move |c| {
            let mut st = c.prepare_cached("SELECT node_id, payout_address FROM nodes WHERE payout_address IS NOT NULL ORDER BY node_id").map_err(db("payout addresses"))?;
            let it = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(db("payout addresses"))?;
            let rows = it.collect::<rusqlite::Result<Vec<_>>>().map_err(db("payout addresses"))?;
            rows.into_iter().map(|(n, a)| Ok((NodeId::parse(&n).map_err(|e| ControlError::Store(format!("node id {n}: {e}")))?, a))).collect()
        })
        .await
    }

    async fn accept_registration_request(&self, node: &NodeId, sent_at_ms: u64, operator: &str, now_ms: u64) -> Result<()> {
        let (id, op) = (node.to_text(), operator.to_string());
        self.run(move |c| {
            let n = exec(
                c,
                "INSERT INTO registration_requests(node_id, sent_at_ms, operator, accepted_at_ms) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT(node_id) DO UPDATE SET sent_at_ms = excluded.sent_at_ms, operator = excluded.operator, accepted_at_ms = excluded.accepted_at_ms \
                 WHERE registration_requests.sent_at_ms < excluded.sent_at_ms",
                params![id, ms(sent_at_ms), op, ms(now_ms)],
            )
            .map_err(db("accept registration request"))?;
            if n == 0 {
                let last: i64 = c.query_row("SELECT sent_at_ms FROM registration_requests WHERE node_id = ?1", [&id], |r| r.get(0)).map_err(db("registration request"))?;
                return Err(Refusal::Replayed { what: "registration", got: sent_at_ms, last: last as u64 }.into());
            }
            Ok(())
        })
        .await
    }

    async fn registration_request(&self, node: &NodeId) -> Result<Option<RegistrationRequestRow>> {
        let id = node.to_text();
        self.run(move |c| {
            c.query_row("SELECT sent_at_ms, operator, accepted_at_ms FROM registration_requests WHERE node_id = ?1", [&id], |r| {
                Ok(RegistrationRequestRow { sent_at_ms: r.get::<_, i64>(0)? as u64, operator: r.get(1)?, accepted_at_ms: r.get::<_, i64>(2)? as u64 })
            })
            .optional()
            .map_err(db("registration request"))
        })
        .await
    }

    async fn epoch(&self, epoch_id: u64) -> Result<Option<EpochRow>> {
        self.run(move |c| row(c, &format!("SELECT {EPOCH_COLUMNS} FROM epochs WHERE epoch_id = ?1"), [ms(epoch_id)], epoch_from_row).optional().map_err(db("epoch")))
            .await
    }

    async fn epochs(&self, limit: u32) -> Result<Vec<EpochRow>> {
        self.run(move |c| {
            let mut st = c.prepare_cached(&format!("SELECT {EPOCH_COLUMNS} FROM epochs ORDER BY epoch_id DESC LIMIT ?1")).map_err(db("epochs"))?;
            let it = st.query_map([i64::from(limit)], epoch_from_row).map_err(db("epochs"))?;
            it.collect::<rusqlite::Result<Vec<_>>>().map_err(db("epochs"))
        })
        .await
    }

    async fn all_nodes(&self, limit: u32) -> Result<Vec<NodeRow>> {
        self.run(move |c| {
            let mut st = c
                .prepare_cached(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY enrolled_at_ms, node_id LIMIT ?1"))
                .map_err(db("all nodes"))?;
            let it = st.query_map([i64::from(limit)], node_from_row).map_err(db("all nodes"))?;
            it.collect::<rusqlite::Result<Vec<_>>>().map_err(db("all nodes"))?.into_iter().collect()
        })
        .await
    }

    async fn last_job(&self, node: &NodeId, kind: &str, outcome: &str) -> Result<Option<JobRow>> {
        let (id, kind, outcome) = (node.to_text(), kind.to_string(), outcome.to_string());
        self.run(move |c| {
            row(c, &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE node_id = ?1 AND kind = ?2 AND outcome = ?3 ORDER BY sequence DESC LIMIT 1"), params![id, kind, outcome], job_from_row)
                .optional()
                .map_err(db("last job"))?
                .transpose()
        })
        .await
    }

    async fn receipt_epoch(&self, receipt_id: &[u8; 32]) -> Result<Option<Option<u64>>> {
        let id = receipt_id.to_vec();
        self.run(move |c| {
            row(c, "SELECT epoch_id FROM receipts WHERE receipt_id = ?1", [id], |r| r.get::<_, Option<i64>>(0))
                .optional()
                .map(|e| e.map(|e| e.map(|e| e as u64)))
                .map_err(db("receipt epoch"))
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

    // ---- gateway keys and credits ---------------------------------------------------------

    async fn create_gateway_key(&self, key: &GatewayKey, token_hash: &[u8; 32]) -> Result<()> {
        let (k, h) = (key.clone(), *token_hash);
        self.run(move |c| {
            exec(c,
                "INSERT INTO gateway_keys(id, org_id, name, token_hash, rate_per_min, spend_limit_per_day, created_at_ms, revoked_at_ms) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
                params![k.id, k.org_id, k.name, h.as_slice(), k.rate_per_min, k.spend_limit_per_day.map(ms), ms(k.created_at_ms), k.revoked_at_ms.map(ms)],
            )
            .map_err(|e| {
                if is_fk_violation(&e) {
                    Refusal::NotFound(format!("organisation {:?}", k.org_id)).into()
                } else if is_unique_violation(&e) {
                    Refusal::Exists(format!("gateway key {}", k.id)).into()
                } else {
                    ControlError::store("create gateway key", e)
                }
            })?;
            Ok(())
        })
        .await
    }

    async fn gateway_key_by_hash(&self, token_hash: &[u8; 32]) -> Result<Option<GatewayKey>> {
        let h = *token_hash;
        self.read(move |c| {
            row(
                c,
                &format!("SELECT {GATEWAY_KEY_COLUMNS} FROM gateway_keys WHERE token_hash = ?1"),
                [h.as_slice()],
                gateway_key_from_row,
            )
            .optional()
            .map_err(db("read gateway key"))
        })
        .await
    }

    async fn gateway_keys(&self, org_id: &str) -> Result<Vec<GatewayKey>> {
        let org = org_id.to_string();
        self.run(move |c| {
            let mut st = c.prepare(&format!("SELECT {GATEWAY_KEY_COLUMNS} FROM gateway_keys WHERE org_id = ?1 ORDER BY created_at_ms, id")).map_err(db("list gateway keys"))?;
            let rows = st.query_map([org], gateway_key_from_row).map_err(db("list gateway keys"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db("list gateway keys"))
        })
        .await
    }

    async fn revoke_gateway_key(&self, org_id: &str, key_id: &str, now_ms: u64) -> Result<bool> {
        let (org, id) = (org_id.to_string(), key_id.to_string());
        self.run(move |c| {
            let n = c
                .execute("UPDATE gateway_keys SET revoked_at_ms = ?3 WHERE id = ?1 AND org_id = ?2 AND revoked_at_ms IS NULL", params![id, org, ms(now_ms)])
                .map_err(db("revoke gateway key"))?;
            if n == 1 {
                return Ok(true);
            }
            let exists: Option<i64> = row(c, "SELECT 1 FROM gateway_keys WHERE id = ?1 AND org_id = ?2", params![id, org], |r| r.get(0)).optional().map_err(db("revoke gateway key"))?;
            match exists {
                Some(_) => Ok(false),
                None => Err(Refusal::NotFound(format!("gateway key {:?}", id.chars().take(40).collect::<String>())).into()),
            }
        })
        .await
    }

    async fn add_credits(
        &self,
        org_id: &str,
        amount_u: u64,
        reference: &str,
        now_ms: u64,
    ) -> Result<u64> {
        let (org, reference) = (org_id.to_string(), reference.to_string());
        let a = credits::amount(amount_u)?;
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db("add credits"))?;
            let exists: Option<i64> = row(&tx, "SELECT 1 FROM orgs WHERE id = ?1", [&org], |r| r.get(0)).optional().map_err(db("add credits"))?;
            if exists.is_none() {
                return Err(Refusal::NotFound(format!("organisation {org:?}")).into());
            }
            let total: i64 = row(&tx, "SELECT COALESCE(-MIN(balance), 0) FROM ledger_accounts WHERE account = ?1", [account::TOPUP], |r| r.get(0)).map_err(db("add credits"))?;
            if (total as u64).saturating_add(amount_u) > MAX_TOTAL_TOPUPS {
                return Err(ControlError::Invalid { field: "amount", reason: format!("top-ups on this control plane would pass {MAX_TOTAL_TOPUPS} micro-credits") });
            }
            let meta = TxMeta { kind: kind::TOPUP, org_id: &org, key_id: None, hold_id: None, node_id: None, receipt_id: None, reference: &reference, now_ms };
            let avail = account::available(&org);
            ledger_apply(&tx, &meta, &[(account::TOPUP.to_string(), -a), (avail.clone(), a)])?
                .map_err(|acct| ControlError::Store(format!("top-up refused by the guard on {acct}")))?;
            exec(&tx,
                "INSERT INTO org_credit_totals(org_id, topped_up_total) VALUES (?1, ?2) ON CONFLICT(org_id) DO UPDATE SET topped_up_total = topped_up_total + excluded.topped_up_total",
                params![org, a],
            )
            .map_err(db("credit totals"))?;
            let balance = account_balance(&tx, &avail)?;
            tx.commit().map_err(db("add credits"))?;
            Ok(balance)
        })
        .await
    }

    async fn credit_balance(&self, org_id: &str) -> Result<CreditBalance> {
        let org = org_id.to_string();
        self.run(move |c| {
            let tx = c.transaction().map_err(db("credit balance"))?;
            let (spent, topped): (i64, i64) = tx
                .query_row(
                    "SELECT spent_total, topped_up_total FROM org_credit_totals WHERE org_id = ?1",
                    [&org],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db("credit balance"))?
                .unwrap_or((0, 0));
            Ok(CreditBalance {
                available: account_balance(&tx, &account::available(&org))?,
                held: account_balance(&tx, &account::held(&org))?,
                spent_total: spent as u64,
                topped_up_total: topped as u64,
            })
        })
        .await
    }

    async fn ledger_entries(&self, org_id: &str, limit: u32) -> Result<Vec<LedgerEntry>> {
        let org = org_id.to_string();
        self.run(move |c| {
            let mut st = c
                .prepare(
                    "SELECT t.id, t.kind, t.org_id, t.key_id, t.hold_id, t.node_id, t.receipt_id, t.reference, t.created_at_ms, r.account, r.amount
                     FROM (SELECT * FROM ledger_tx WHERE org_id = ?1 ORDER BY id DESC LIMIT ?2) t LEFT JOIN ledger_rows r ON r.tx_id = t.id
                     ORDER BY t.id DESC, r.account",
                )
                .map_err(db("ledger"))?;
            let rows = st
                .query_map(params![org, limit], |r| {
                    Ok((
                        LedgerEntry {
                            tx_id: r.get::<_, i64>(0)? as u64,
                            kind: r.get(1)?,
                            org_id: r.get(2)?,
                            key_id: r.get(3)?,
                            hold_id: r.get::<_, Option<Vec<u8>>>(4)?.map(hex::encode),
                            node_id: r.get(5)?,
                            receipt_id: r.get::<_, Option<Vec<u8>>>(6)?.map(hex::encode),
                            reference: r.get(7)?,
                            created_at_ms: r.get::<_, i64>(8)? as u64,
                            rows: Vec::new(),
                        },
                        r.get::<_, Option<String>>(9)?,
                        r.get::<_, Option<i64>>(10)?,
                    ))
                })
                .map_err(db("ledger"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db("ledger"))?;
            Ok(group_entries(rows))
        })
        .await
    }

    async fn place_hold(&self, hold: &Hold) -> Result<()> {
        let h = hold.clone();
        let a = credits::amount(h.amount)?;
        self.write(move |tx| {
            type KeyRow = (String, Option<i64>, Option<i64>, i64, Option<i64>, Option<i64>);
            let key: Option<KeyRow> = row(
                tx,
                "SELECT org_id, revoked_at_ms, spend_limit_per_day, rate_per_min, rate_units, rate_at_ms FROM gateway_keys WHERE id = ?1",
                [&h.key_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()
            .map_err(db("place hold"))?;
            let (limit, rate, bucket) = match key {
                Some((org, ..)) if org != h.org_id => return Err(Refusal::NotFound(format!("gateway key {}", h.key_id)).into()),
                None => return Err(Refusal::NotFound(format!("gateway key {}", h.key_id)).into()),
                Some((_, Some(_), ..)) => return Err(Refusal::KeyRevoked.into()),
                Some((_, None, limit, rate, units, at)) => (limit, rate as u32, units.zip(at).map(|(u, a)| (u as u64, a as u64))),
            };
            // The key's rate, across every replica (a refusal later in this write rolls it back).
            let (units, at) = credits::take_rate(bucket, rate, h.created_at_ms)
                .map_err(|retry_after_ms| Refusal::RateLimited { rate_per_min: rate, retry_after_ms })?;
            exec(tx, "UPDATE gateway_keys SET rate_units = ?2, rate_at_ms = ?3 WHERE id = ?1", params![h.key_id, ms(units), ms(at)]).map_err(db("key rate"))?;
            let day = ms(h.created_at_ms / DAY_MS);
            exec(tx, "INSERT OR IGNORE INTO gateway_key_spend(key_id, day, reserved) VALUES (?1, ?2, 0)", params![h.key_id, day]).map_err(db("key spend"))?;
            let n = tx
                .execute(
                    "UPDATE gateway_key_spend SET reserved = reserved + ?3 WHERE key_id = ?1 AND day = ?2 AND (?4 IS NULL OR reserved + ?3 <= ?4)",
                    params![h.key_id, day, a, limit],
                )
                .map_err(db("key spend"))?;
            if n == 0 {
                let used: i64 = row(tx, "SELECT reserved FROM gateway_key_spend WHERE key_id = ?1 AND day = ?2", params![h.key_id, day], |r| r.get(0)).map_err(db("key spend"))?;
                return Err(Refusal::SpendLimit { limit: limit.unwrap_or(0) as u64, used: used as u64, needed: h.amount }.into());
            }
            let meta = TxMeta { kind: kind::HOLD, org_id: &h.org_id, key_id: Some(&h.key_id), hold_id: Some(&h.id), node_id: None, receipt_id: None, reference: "", now_ms: h.created_at_ms };
            let avail = account::available(&h.org_id);
            if ledger_apply(tx, &meta, &[(avail.clone(), -a), (account::held(&h.org_id), a)])?.is_err() {
                let available = account_balance(tx, &avail)?;
                return Err(Refusal::InsufficientCredits { available, needed: h.amount }.into());
            }
            exec(tx,
                "INSERT INTO credit_holds(id, org_id, key_id, amount, day, created_at_ms, state) VALUES (?1,?2,?3,?4,?5,?6,'open')",
                params![h.id.as_slice(), h.org_id, h.key_id, a, day, ms(h.created_at_ms)],
            )
            .map_err(|e| if is_unique_violation(&e) { Refusal::Exists(format!("hold {}", hex::encode(h.id))).into() } else { ControlError::store("place hold", e) })?;
            Ok(())
        })
        .await
    }

    async fn hold(&self, id: &[u8; 16]) -> Result<Option<HoldRecord>> {
        let id = *id;
        self.read(move |c| get_hold(c, &id)).await
    }

    async fn settle_hold(&self, st: &HoldSettlement) -> Result<bool> {
        let st = st.clone();
        let charge = credits::amount(st.charge)?;
        self.write(move |tx| {
            let h = get_hold(tx, &st.hold_id)?.ok_or_else(|| Refusal::NotFound(format!("hold {}", hex::encode(st.hold_id))))?;
            match h.state {
                HoldState::Open => {}
                HoldState::Settled => return Ok(false),
                HoldState::Released | HoldState::Expired => return Err(Refusal::HoldClosed(h.state.as_str()).into()),
            }
            if st.charge > h.hold.amount {
                return Err(ControlError::Invalid { field: "charge", reason: format!("{} micro-credits is above the hold of {}", st.charge, h.hold.amount) });
            }
            let (amount, rest) = (h.hold.amount as i64, (h.hold.amount - st.charge) as i64);
            exec(tx,
                "UPDATE credit_holds SET state = 'settled', charge = ?2, node_id = ?3, receipt_id = ?4, closed_at_ms = ?5 WHERE id = ?1 AND state = 'open'",
                params![st.hold_id.as_slice(), charge, st.node_id.to_text(), st.receipt_id.as_slice(), ms(st.now_ms)],
            )
            .map_err(|e| if is_unique_violation(&e) { Refusal::ReceiptCharged.into() } else { ControlError::store("settle hold", e) })?;
            exec(tx, "UPDATE gateway_key_spend SET reserved = reserved - ?3 WHERE key_id = ?1 AND day = ?2", params![h.hold.key_id, ms(h.hold.created_at_ms / DAY_MS), rest])
                .map_err(db("key spend"))?;
            let org = &h.hold.org_id;
            let meta = TxMeta {
                kind: kind::SETTLE,
                org_id: org,
                key_id: Some(&h.hold.key_id),
                hold_id: Some(&st.hold_id),
                node_id: Some(st.node_id.to_text()),
                receipt_id: Some(&st.receipt_id),
                reference: "",
                now_ms: st.now_ms,
            };
            ledger_apply(tx, &meta, &[(account::held(org), -amount), (account::available(org), rest), (account::earned(&st.node_id), charge)])?
                .map_err(|acct| ControlError::Store(format!("settlement refused by the guard on {acct}: the ledger is inconsistent, run `b3iq-control admin ledger-check`")))?;
            exec(tx,
                "INSERT INTO org_credit_totals(org_id, spent_total) VALUES (?1, ?2) ON CONFLICT(org_id) DO UPDATE SET spent_total = spent_total + excluded.spent_total",
                params![org, charge],
            )
            .map_err(db("credit totals"))?;
            Ok(true)
        })
        .await
    }

    async fn release_hold(&self, id: &[u8; 16], now_ms: u64, expired: bool) -> Result<bool> {
        let id = *id;
        self.write(move |tx| {
            let h = get_hold(tx, &id)?.ok_or_else(|| Refusal::NotFound(format!("hold {}", hex::encode(id))))?;
            if h.state != HoldState::Open {
                return Ok(false);
            }
            let (state, k) = if expired { (HoldState::Expired, kind::EXPIRE) } else { (HoldState::Released, kind::RELEASE) };
            let amount = h.hold.amount as i64;
            exec(tx, "UPDATE credit_holds SET state = ?2, closed_at_ms = ?3 WHERE id = ?1 AND state = 'open'", params![id.as_slice(), state.as_str(), ms(now_ms)])
                .map_err(db("release hold"))?;
            exec(tx, "UPDATE gateway_key_spend SET reserved = reserved - ?3 WHERE key_id = ?1 AND day = ?2", params![h.hold.key_id, ms(h.hold.created_at_ms / DAY_MS), amount])
                .map_err(db("key spend"))?;
            let org = &h.hold.org_id;
            let meta = TxMeta { kind: k, org_id: org, key_id: Some(&h.hold.key_id), hold_id: Some(&id), node_id: None, receipt_id: None, reference: "", now_ms };
            ledger_apply(tx, &meta, &[(account::held(org), -amount), (account::available(org), amount)])?
                .map_err(|acct| ControlError::Store(format!("release refused by the guard on {acct}: the ledger is inconsistent, run `b3iq-control admin ledger-check`")))?;
            Ok(true)
        })
        .await
    }

    async fn await_hold_receipt(
        &self,
        hold_id: &[u8; 16],
        request_id: &[u8; 16],
        ticket: &str,
    ) -> Result<bool> {
        let (id, rid, t) = (*hold_id, *request_id, ticket.to_string());
        self.write(move |tx| {
            let n = exec(tx, "UPDATE credit_holds SET awaiting_request_id = ?2, awaiting_ticket = ?3 WHERE id = ?1 AND state = 'open'", params![id.as_slice(), rid.as_slice(), t])
                .map_err(db("await receipt"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn holds_awaiting(
        &self,
        request_ids: &[[u8; 16]],
    ) -> Result<Vec<([u8; 16], [u8; 16], String)>> {
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = request_ids.to_vec();
        self.read(move |c| {
            let mut st = c
                .prepare_cached("SELECT id, awaiting_ticket FROM credit_holds WHERE awaiting_request_id = ?1 AND state = 'open'")
                .map_err(db("awaiting holds"))?;
            let mut out = Vec::new();
            for rid in &ids {
                let rows = st.query_map([rid.as_slice()], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))).map_err(db("awaiting holds"))?;
                for r in rows {
                    let (h, t) = r.map_err(db("awaiting holds"))?;
                    let h: [u8; 16] = h.as_slice().try_into().map_err(|_| ControlError::Store("control.db holds an invalid hold id".into()))?;
                    out.push((*rid, h, t));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn hold_awaiting_ticket(&self, hold_id: &[u8; 16]) -> Result<Option<String>> {
        let id = *hold_id;
        self.read(move |c| {
            row(
                c,
                "SELECT awaiting_ticket FROM credit_holds WHERE id = ?1 AND state = 'open'",
                [id.as_slice()],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(db("awaiting hold"))
        })
        .await
    }

    async fn network_receipts_since(
        &self,
        node: &NodeId,
        since_ms: u64,
        limit: u32,
    ) -> Result<Vec<Vec<u8>>> {
        let id = node.to_text();
        self.read(move |c| {
            let mut st = c
                .prepare_cached("SELECT signed FROM receipts WHERE node_id = ?1 AND started_at_ms >= ?2 AND mode = 'network' ORDER BY started_at_ms LIMIT ?3")
                .map_err(db("network receipts"))?;
            let rows = st.query_map(params![id, ms(since_ms), limit], |r| r.get::<_, Vec<u8>>(0)).map_err(db("network receipts"))?;
            rows.map(|r| r.map_err(db("network receipts"))).collect()
        })
        .await
    }

    async fn apply_reputation(
        &self,
        events: Vec<b3iq_core::reputation::ReputationEvent>,
        params: b3iq_core::reputation::ReputationParams,
    ) -> Result<()> {
        self.write(move |tx| {
            for (node, evs) in super::reputation_groups(events) {
                let id = node.to_text();
                let stored: Option<String> = row(tx, "SELECT state FROM node_reputation WHERE node_id = ?1", [&id], |r| r.get(0)).optional().map_err(db("reputation"))?;
                let r = super::apply_reputation_events(node, stored.as_deref(), &evs, &params)?;
                let state = serde_json::to_string(&r).map_err(|e| ControlError::store("reputation", e))?;
                let at = evs.last().map_or(0, |e| e.at_ms);
                exec(tx, "INSERT INTO node_reputation(node_id, state, updated_at_ms) VALUES (?1, ?2, ?3) ON CONFLICT(node_id) DO UPDATE SET state = excluded.state, updated_at_ms = excluded.updated_at_ms", params![id, state, ms(at)])
                    .map_err(db("reputation"))?;
            }
            Ok(())
        })
        .await
    }

    async fn reputations(&self) -> Result<Vec<b3iq_core::reputation::Reputation>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached("SELECT node_id, state FROM node_reputation ORDER BY node_id")
                .map_err(db("reputation"))?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(db("reputation"))?;
            rows.map(|r| {
                let (id, state) = r.map_err(db("reputation"))?;
                serde_json::from_str(&state).map_err(|e| {
                    ControlError::Store(format!("the stored reputation of {id} is unreadable: {e}"))
                })
            })
            .collect()
        })
        .await
    }

    async fn open_holds_before(&self, before_ms: u64, limit: u32) -> Result<Vec<[u8; 16]>> {
        self.run(move |c| {
            let mut st = c.prepare("SELECT id FROM credit_holds WHERE state = 'open' AND created_at_ms <= ?1 ORDER BY created_at_ms LIMIT ?2").map_err(db("stale holds"))?;
            let rows = st.query_map(params![ms(before_ms), limit], |r| r.get::<_, Vec<u8>>(0)).map_err(db("stale holds"))?;
            rows.map(|r| {
                let v = r.map_err(db("stale holds"))?;
                v.as_slice().try_into().map_err(|_| ControlError::Store("control.db holds an invalid hold id".into()))
            })
            .collect()
        })
        .await
    }

    async fn node_earnings(&self, node: &NodeId) -> Result<u64> {
        let a = account::earned(node);
        self.run(move |c| account_balance(c, &a)).await
    }

    async fn ledger_check(&self) -> Result<LedgerCheck> {
        self.run(|c| {
            let tx = c.transaction().map_err(db("ledger check"))?;
            let pairs = |sql: &str| -> Result<Vec<(String, i128)>> {
                let mut st = tx.prepare(sql).map_err(db("ledger check"))?;
                let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, i128::from(r.get::<_, i64>(1)?)))).map_err(db("ledger check"))?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db("ledger check"))
            };
            let mut input = CheckInput {
                open_held: pairs("SELECT org_id, SUM(amount) FROM credit_holds WHERE state = 'open' GROUP BY org_id")?,
                settled_by_org: pairs("SELECT org_id, SUM(charge) FROM credit_holds WHERE state = 'settled' GROUP BY org_id")?,
                settled_by_node: pairs("SELECT node_id, SUM(charge) FROM credit_holds WHERE state = 'settled' GROUP BY node_id")?,
                topups_by_org: pairs(&format!(
                    "SELECT t.org_id, SUM(r.amount) FROM ledger_tx t JOIN ledger_rows r ON r.tx_id = t.id WHERE t.kind = 'topup' AND r.account <> '{}' GROUP BY t.org_id",
                    account::TOPUP
                ))?,
                accounts: pairs("SELECT account, balance FROM ledger_accounts")?.into_iter().map(|(a, b)| (a, b as i64)).collect(),
                ..CheckInput::default()
            };
            {
                let mut st = tx.prepare("SELECT account, SUM(amount), COUNT(*) FROM ledger_rows GROUP BY account").map_err(db("ledger check"))?;
                let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, i128::from(r.get::<_, i64>(1)?), r.get::<_, i64>(2)? as u64))).map_err(db("ledger check"))?;
                input.row_sums = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db("ledger check"))?;
                let mut st = tx.prepare("SELECT org_id, spent_total, topped_up_total FROM org_credit_totals").map_err(db("ledger check"))?;
                let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, i128::from(r.get::<_, i64>(1)?), i128::from(r.get::<_, i64>(2)?)))).map_err(db("ledger check"))?;
                input.totals = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db("ledger check"))?;
                let mut st = tx.prepare("SELECT tx_id FROM ledger_rows GROUP BY tx_id HAVING SUM(amount) <> 0 ORDER BY tx_id LIMIT 100").map_err(db("ledger check"))?;
                let rows = st.query_map([], |r| Ok(r.get::<_, i64>(0)? as u64)).map_err(db("ledger check"))?;
                input.unbalanced = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db("ledger check"))?;
            }
            input.transactions = row(&tx, "SELECT COUNT(*) FROM ledger_tx", [], |r| r.get::<_, i64>(0)).map_err(db("ledger check"))? as u64;
            Ok(input.check())
        })
        .await
    }

    // ---- gateway replicas -----------------------------------------------------------------

    async fn put_tunnel_session(&self, t: &TunnelSession) -> Result<()> {
        let t = t.clone();
        self.run(move |c| {
            exec(c,
                "INSERT INTO tunnel_sessions(node_id, replica_url, epoch, max_concurrent, models, updated_at_ms) VALUES (?1,?2,?3,?4,?5,?6)
                 ON CONFLICT(node_id) DO UPDATE SET replica_url = excluded.replica_url, epoch = excluded.epoch, max_concurrent = excluded.max_concurrent, models = excluded.models, updated_at_ms = excluded.updated_at_ms",
                params![t.node_id.to_text(), t.replica_url, ms(t.epoch), i64::from(t.max_concurrent), t.models.to_string(), ms(t.updated_at_ms)],
            )
            .map_err(db("tunnel session"))?;
            Ok(())
        })
        .await
    }

    async fn drop_tunnel_session(
        &self,
        node: &NodeId,
        replica_url: &str,
        epoch: u64,
    ) -> Result<()> {
        let (id, url) = (node.to_text(), replica_url.to_string());
        self.run(move |c| {
            exec(c, "DELETE FROM tunnel_sessions WHERE node_id = ?1 AND replica_url = ?2 AND epoch = ?3", params![id, url, ms(epoch)]).map_err(db("tunnel session"))?;
            Ok(())
        })
        .await
    }

    async fn put_verdict(&self, v: &VerdictRow) -> Result<bool> {
        let v = v.clone();
        self.run(move |c| {
            let n = exec(c,
                "INSERT INTO verification_verdicts(verdict_hash, verifier, subject, request_id, receipt_id, outcome, metric, signed, created_at_ms, canary) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10) ON CONFLICT(verdict_hash) DO NOTHING",
                params![&v.verdict_hash[..], v.verifier.to_text(), v.subject.to_text(), &v.request_id[..], &v.receipt_id[..], v.outcome, v.metric, v.signed, ms(v.created_at_ms), v.canary],
            )
            .map_err(db("verdict"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn verdicts(&self, subject: &NodeId) -> Result<Vec<VerdictRow>> {
        let subject = *subject;
        self.read(move |c| {
            let mut st = c
                .prepare("SELECT verdict_hash, verifier, request_id, receipt_id, outcome, metric, signed, created_at_ms, canary FROM verification_verdicts WHERE subject = ?1 ORDER BY created_at_ms, verdict_hash")
                .map_err(db("verdicts"))?;
            let rows = st
                .query_map([subject.to_text()], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?, r.get::<_, Vec<u8>>(3)?, r.get::<_, String>(4)?, r.get::<_, String>(5)?, r.get::<_, Vec<u8>>(6)?, r.get::<_, i64>(7)?, r.get::<_, bool>(8)?)))
                .map_err(db("verdicts"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db("verdicts"))?;
            rows.into_iter()
                .map(|(h, verifier, req, rid, outcome, metric, signed, at, canary)| {
                    Ok(VerdictRow {
                        verdict_hash: fixed(&h, "verification_verdicts.verdict_hash")?,
                        verifier: NodeId::parse(&verifier).map_err(|_| ControlError::Store(format!("the database holds an invalid node id {verifier:?} in verification_verdicts")))?,
                        subject,
                        request_id: fixed(&req, "verification_verdicts.request_id")?,
                        receipt_id: fixed(&rid, "verification_verdicts.receipt_id")?,
                        outcome,
                        metric,
                        signed,
                        created_at_ms: at as u64,
                        canary,
                    })
                })
                .collect()
        })
        .await
    }

    async fn open_dispute(&self, d: &DisputeRow) -> Result<bool> {
        let d = d.clone();
        self.run(move |c| {
            let n = exec(c,
                &format!("INSERT INTO disputes({DISPUTE_COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13) ON CONFLICT(evidence_hash) DO NOTHING"),
                params![&d.evidence_hash[..], d.kind, d.subject.to_text(), &d.request_id[..], d.status, d.chain_tx, ms(d.opened_at_ms), d.evidence, d.epoch_id.map(ms), d.chain_dispute_id, d.vote_tx, d.slash_tx, ms(d.updated_at_ms)],
            )
            .map_err(db("dispute"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn disputes(&self, subject: &NodeId) -> Result<Vec<DisputeRow>> {
        let subject = subject.to_text();
        self.read(move |c| dispute_rows(c, &format!("SELECT {DISPUTE_COLUMNS} FROM disputes WHERE subject = ?1 ORDER BY opened_at_ms, evidence_hash"), params![subject])).await
    }

    async fn dispute(&self, evidence_hash: &[u8; 32]) -> Result<Option<DisputeRow>> {
        let h = *evidence_hash;
        self.read(move |c| Ok(dispute_rows(c, &format!("SELECT {DISPUTE_COLUMNS} FROM disputes WHERE evidence_hash = ?1"), params![&h[..]])?.pop())).await
    }

    async fn update_dispute(&self, d: &DisputeRow) -> Result<()> {
        let d = d.clone();
        self.run(move |c| {
            let n = exec(c,
                "UPDATE disputes SET status = ?2, chain_tx = ?3, epoch_id = ?4, chain_dispute_id = ?5, vote_tx = ?6, slash_tx = ?7, updated_at_ms = ?8 WHERE evidence_hash = ?1",
                params![&d.evidence_hash[..], d.status, d.chain_tx, d.epoch_id.map(ms), d.chain_dispute_id, d.vote_tx, d.slash_tx, ms(d.updated_at_ms)],
            )
            .map_err(db("update dispute"))?;
            if n == 0 {
                return Err(Refusal::NotFound(format!("dispute {}", hex::encode(d.evidence_hash))).into());
            }
            Ok(())
        })
        .await
    }

    async fn list_disputes(&self, active: bool, limit: u32) -> Result<Vec<DisputeRow>> {
        let filter = if active { format!("WHERE status IN ({})", DISPUTE_ACTIVE.map(|s| format!("'{s}'")).join(",")) } else { String::new() };
        self.read(move |c| dispute_rows(c, &format!("SELECT {DISPUTE_COLUMNS} FROM disputes {filter} ORDER BY opened_at_ms, evidence_hash LIMIT ?1"), params![i64::from(limit)])).await
    }

    async fn tunnel_sessions(&self, since_ms: u64) -> Result<Vec<TunnelSession>> {
        self.read(move |c| {
            let mut st = c
                .prepare("SELECT node_id, replica_url, epoch, max_concurrent, models, updated_at_ms FROM tunnel_sessions WHERE updated_at_ms >= ?1 ORDER BY node_id")
                .map_err(db("tunnel sessions"))?;
            let rows = st
                .query_map([ms(since_ms)], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?, r.get::<_, String>(4)?, r.get::<_, i64>(5)?)))
                .map_err(db("tunnel sessions"))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db("tunnel sessions"))?;
            rows.into_iter()
                .map(|(n, url, epoch, mc, models, at)| {
                    Ok(TunnelSession {
                        node_id: NodeId::parse(&n).map_err(|_| ControlError::Store(format!("control.db holds an invalid node id {n:?} in tunnel_sessions")))?,
                        replica_url: url,
                        epoch: epoch as u64,
                        max_concurrent: u32::try_from(mc).unwrap_or(0),
                        models: serde_json::from_str(&models).map_err(|e| ControlError::store("tunnel session models", e))?,
                        updated_at_ms: at as u64,
                    })
                })
                .collect()
        })
        .await
    }
}

/// Reads [`DISPUTE_COLUMNS`] rows.
fn dispute_rows(c: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<DisputeRow>> {
    type Raw = (Vec<u8>, String, String, Vec<u8>, String, Option<String>, i64, Option<Vec<u8>>, Option<i64>, Option<String>, Option<String>, Option<String>, i64);
    let mut st = c.prepare_cached(sql).map_err(db("disputes"))?;
    let rows = st
        .query_map(p, |r| -> rusqlite::Result<Raw> { Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?, r.get(12)?)) })
        .map_err(db("disputes"))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db("disputes"))?;
    rows.into_iter()
        .map(|(h, kind, subject, req, status, chain_tx, at, evidence, epoch, id, vote_tx, slash_tx, upd)| {
            Ok(DisputeRow {
                evidence_hash: fixed(&h, "disputes.evidence_hash")?,
                kind,
                subject: NodeId::parse(&subject).map_err(|_| ControlError::Store(format!("control.db holds an invalid node id {subject:?} in disputes")))?,
                request_id: fixed(&req, "disputes.request_id")?,
                status,
                chain_tx,
                opened_at_ms: at as u64,
                evidence,
                epoch_id: epoch.map(|e| e as u64),
                chain_dispute_id: id,
                vote_tx,
                slash_tx,
                updated_at_ms: upd as u64,
            })
        })
        .collect()
}
