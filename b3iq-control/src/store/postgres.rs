//! Postgres backend (tokio-postgres with a deadpool pool), for a control plane with more than one
//! replica. The same rules as the SQLite backend hold, each as one statement or one transaction:
//! conditional `UPDATE`s for single use and sequence order, `SELECT ... FOR UPDATE` where a
//! decision reads then writes. Migrations are numbered in `schema_migrations` and applied under
//! an advisory lock, so replicas starting together apply each once.
//!
//! The connection is plain TCP (`NoTls`): run Postgres on loopback or a private network, or put
//! it behind a TLS-terminating proxy. A URL with `sslmode=require` is refused rather than
//! silently sent in clear.

use async_trait::async_trait;
use b3iq_core::{NodeId, NodePublicKey};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

mod heartbeats;

use super::credits::{
    self, account, kind, CheckInput, HoldState, RawHold, TxMeta, GATEWAY_KEY_COLUMNS, HOLD_COLUMNS,
    MAX_TOTAL_TOPUPS,
};
use super::sqlite::{health_name, health_parse};
use super::*;
use crate::error::{ControlError, Result};

/// Numbered migrations.
const MIGRATIONS: &[&str] = &[
    // 1: as SQLite's migration 1.
    r#"
    CREATE TABLE orgs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at_ms BIGINT NOT NULL
    );
    CREATE TABLE operators (
        id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL REFERENCES orgs(id),
        username TEXT NOT NULL UNIQUE,
        password_phc TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL
    );
    CREATE TABLE operator_sessions (
        token_hash BYTEA PRIMARY KEY,
        operator_id TEXT NOT NULL REFERENCES operators(id),
        created_at_ms BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL
    );
    CREATE TABLE enrollment_tokens (
        id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL REFERENCES orgs(id),
        token_hash BYTEA NOT NULL UNIQUE,
        created_at_ms BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        used_at_ms BIGINT,
        used_by TEXT
    );
    CREATE TABLE challenges (
        id BYTEA PRIMARY KEY,
        nonce BYTEA NOT NULL,
        issued_at_ms BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        used_at_ms BIGINT
    );
    CREATE INDEX challenges_expiry ON challenges(expires_at_ms);
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        org_id TEXT NOT NULL REFERENCES orgs(id),
        status TEXT NOT NULL,
        status_reason TEXT NOT NULL DEFAULT '',
        enrolled_at_ms BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        last_sequence BIGINT,
        last_sent_at_ms BIGINT,
        last_received_at_ms BIGINT,
        last_health TEXT,
        last_body TEXT,
        refused_heartbeats BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX nodes_org ON nodes(org_id, enrolled_at_ms);
    CREATE TABLE heartbeats (
        node_id TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        received_at_ms BIGINT NOT NULL,
        health TEXT NOT NULL,
        PRIMARY KEY (node_id, sequence)
    );
    CREATE INDEX heartbeats_time ON heartbeats(received_at_ms);
    "#,
    // 2: as SQLite's migration 2.
    r#"
    CREATE TABLE job_sequence (id INTEGER PRIMARY KEY CHECK (id = 1), last BIGINT NOT NULL);
    INSERT INTO job_sequence(id, last) VALUES (1, 0);
    CREATE TABLE jobs (
        job_id BYTEA PRIMARY KEY,
        node_id TEXT NOT NULL,
        org_id TEXT NOT NULL,
        sequence BIGINT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        envelope BYTEA NOT NULL,
        created_by TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        delivered_at_ms BIGINT,
        outcome TEXT,
        code TEXT,
        result TEXT,
        finished_at_ms BIGINT
    );
    CREATE INDEX jobs_node ON jobs(node_id, sequence);
    "#,
    // 3: as SQLite's migration 3.
    r#"
    CREATE TABLE receipts (
        receipt_id BYTEA PRIMARY KEY,
        node_id TEXT NOT NULL,
        model_id TEXT NOT NULL,
        mode TEXT NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        price_micro_credits BIGINT NOT NULL,
        started_at_ms BIGINT NOT NULL,
        signed BYTEA NOT NULL,
        received_at_ms BIGINT NOT NULL
    );
    CREATE INDEX receipts_node ON receipts(node_id, started_at_ms);
    CREATE TABLE usage_daily (
        node_id TEXT NOT NULL,
        model_id TEXT NOT NULL,
        day BIGINT NOT NULL,
        requests BIGINT NOT NULL,
        prompt_tokens BIGINT NOT NULL,
        completion_tokens BIGINT NOT NULL,
        price_micro_credits BIGINT NOT NULL,
        PRIMARY KEY (node_id, model_id, day)
    );
    "#,
    // 4: job keys (the newest is current) and the key each node pins, with the one a pending
    // rotation moves it to.
    r#"
    CREATE TABLE job_keys (
        public_key TEXT PRIMARY KEY,
        created_at_ms BIGINT NOT NULL,
        position BIGSERIAL NOT NULL
    );
    ALTER TABLE nodes ADD COLUMN job_key TEXT;
    ALTER TABLE nodes ADD COLUMN job_key_next TEXT;
    "#,
    // 5: as SQLite's migration 5 (gateway keys, the credit ledger, holds, spend per key and
    // day, organisation totals).
    r#"
    CREATE TABLE gateway_keys (
        id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL REFERENCES orgs(id),
        name TEXT NOT NULL,
        token_hash BYTEA NOT NULL UNIQUE,
        rate_per_min BIGINT NOT NULL CHECK (rate_per_min > 0),
        spend_limit_per_day BIGINT CHECK (spend_limit_per_day IS NULL OR spend_limit_per_day > 0),
        created_at_ms BIGINT NOT NULL,
        revoked_at_ms BIGINT
    );
    CREATE INDEX gateway_keys_org ON gateway_keys(org_id, created_at_ms);
    CREATE TABLE ledger_accounts (
        account TEXT PRIMARY KEY,
        balance BIGINT NOT NULL DEFAULT 0,
        CHECK (balance >= 0 OR account LIKE 'external:%')
    );
    CREATE TABLE ledger_tx (
        id BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('topup', 'hold', 'settle', 'release', 'expire')),
        org_id TEXT NOT NULL,
        key_id TEXT,
        hold_id BYTEA,
        node_id TEXT,
        receipt_id BYTEA,
        reference TEXT NOT NULL DEFAULT '',
        created_at_ms BIGINT NOT NULL
    );
    CREATE INDEX ledger_tx_org ON ledger_tx(org_id, id);
    CREATE UNIQUE INDEX ledger_tx_topup_reference ON ledger_tx(reference) WHERE kind = 'topup';
    CREATE TABLE ledger_rows (
        tx_id BIGINT NOT NULL REFERENCES ledger_tx(id),
        account TEXT NOT NULL REFERENCES ledger_accounts(account),
        amount BIGINT NOT NULL CHECK (amount <> 0),
        PRIMARY KEY (tx_id, account)
    );
    CREATE INDEX ledger_rows_account ON ledger_rows(account);
    CREATE TABLE credit_holds (
        id BYTEA PRIMARY KEY,
        org_id TEXT NOT NULL REFERENCES orgs(id),
        key_id TEXT NOT NULL REFERENCES gateway_keys(id),
        amount BIGINT NOT NULL CHECK (amount > 0),
        day BIGINT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'settled', 'released', 'expired')),
        charge BIGINT CHECK (charge IS NULL OR (charge >= 0 AND charge <= amount)),
        node_id TEXT,
        receipt_id BYTEA UNIQUE,
        closed_at_ms BIGINT
    );
    CREATE INDEX credit_holds_open ON credit_holds(created_at_ms) WHERE state = 'open';
    CREATE INDEX credit_holds_org ON credit_holds(org_id, state);
    CREATE TABLE gateway_key_spend (
        key_id TEXT NOT NULL REFERENCES gateway_keys(id),
        day BIGINT NOT NULL,
        reserved BIGINT NOT NULL CHECK (reserved >= 0),
        PRIMARY KEY (key_id, day)
    );
    CREATE TABLE org_credit_totals (
        org_id TEXT PRIMARY KEY REFERENCES orgs(id),
        topped_up_total BIGINT NOT NULL DEFAULT 0 CHECK (topped_up_total >= 0),
        spent_total BIGINT NOT NULL DEFAULT 0 CHECK (spent_total >= 0)
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
    // 7: as SQLite's migration 7.
    r#"
    ALTER TABLE credit_holds ADD COLUMN awaiting_request_id BYTEA, ADD COLUMN awaiting_ticket TEXT;
    CREATE INDEX credit_holds_awaiting ON credit_holds(awaiting_request_id) WHERE awaiting_request_id IS NOT NULL;
    "#,
    // 8: as SQLite's migration 8.
    r#"
    ALTER TABLE gateway_keys ADD COLUMN rate_units BIGINT, ADD COLUMN rate_at_ms BIGINT;
    "#,
    // 9: as SQLite's migration 9.
    r#"
    CREATE TABLE node_reputation (
        node_id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    );
    "#,
    // 10: as SQLite's migration 10: settlement epochs; each network receipt is assigned to exactly one epoch (its
    // epoch_id is set once, from NULL, when the epoch closes).
    r#"
    CREATE TABLE epochs (
        epoch_id BIGINT PRIMARY KEY,
        start_ms BIGINT NOT NULL,
        end_ms BIGINT NOT NULL,
        receipt_count BIGINT NOT NULL,
        closed_at_ms BIGINT NOT NULL,
        claim_file TEXT,
        tx_hash TEXT,
        posted_at BIGINT
    );
    ALTER TABLE receipts ADD COLUMN epoch_id BIGINT;
    CREATE INDEX receipts_epoch ON receipts(epoch_id, started_at_ms);
    ALTER TABLE nodes ADD COLUMN payout_address TEXT;
    "#,
    // 11: as SQLite's migration 11: verifier verdicts, and disputes opened from failed ones.
    r#"
    CREATE TABLE verification_verdicts (
        verdict_hash BYTEA PRIMARY KEY,
        verifier TEXT NOT NULL,
        subject TEXT NOT NULL,
        request_id BYTEA NOT NULL,
        receipt_id BYTEA NOT NULL,
        outcome TEXT NOT NULL,
        metric TEXT NOT NULL,
        signed BYTEA NOT NULL,
        created_at_ms BIGINT NOT NULL
    );
    CREATE INDEX verification_verdicts_subject ON verification_verdicts(subject, created_at_ms);
    CREATE TABLE disputes (
        evidence_hash BYTEA PRIMARY KEY,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        request_id BYTEA NOT NULL,
        status TEXT NOT NULL,
        chain_tx TEXT,
        opened_at_ms BIGINT NOT NULL
    );
    CREATE INDEX disputes_subject ON disputes(subject, opened_at_ms);
    "#,
    // 12: as SQLite's migration 12: disputes on chain.
    r#"
    ALTER TABLE disputes ADD COLUMN evidence BYTEA;
    ALTER TABLE disputes ADD COLUMN epoch_id BIGINT;
    ALTER TABLE disputes ADD COLUMN chain_dispute_id TEXT;
    ALTER TABLE disputes ADD COLUMN vote_tx TEXT;
    ALTER TABLE disputes ADD COLUMN slash_tx TEXT;
    ALTER TABLE disputes ADD COLUMN updated_at_ms BIGINT NOT NULL DEFAULT 0;
    UPDATE disputes SET status = 'reputation_only', updated_at_ms = opened_at_ms WHERE status = 'open';
    CREATE INDEX disputes_status ON disputes(status, opened_at_ms);
    "#,
    // 13: as SQLite's migration 13: the last registration request accepted per node (`POST /v1/node/registration`),
    // so a replayed one is refused.
    r#"
    CREATE TABLE registration_requests (
        node_id TEXT PRIMARY KEY REFERENCES nodes(node_id),
        sent_at_ms BIGINT NOT NULL,
        operator TEXT NOT NULL,
        accepted_at_ms BIGINT NOT NULL
    );
    "#,
    // 14: as SQLite's migration 14: canary verdicts are marked.
    r#"
    ALTER TABLE verification_verdicts ADD COLUMN canary BOOLEAN NOT NULL DEFAULT FALSE;
    "#,
];

/// Advisory lock key for migrations (`b3iqctl` as ASCII).
const MIGRATION_LOCK: i64 = 0x0062_3369_7163_746c;

/// The Postgres store.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    heartbeats: heartbeats::HeartbeatBatcher,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresStore")
    }
}

fn is_code(e: &tokio_postgres::Error, code: &SqlState) -> bool {
    e.code() == Some(code)
}

impl PostgresStore {
    /// Connects with a libpq-style URL or key=value string (`postgres://user@127.0.0.1:5432/b3iq`)
    /// and a pool of `pool_size` connections, then applies the migrations.
    ///
    /// # Errors
    /// `Config` for a malformed URL or one asking for TLS; `Store` when the server cannot be
    /// reached or its schema is newer than this build knows.
    pub async fn connect(url: &str, pool_size: usize) -> Result<PostgresStore> {
        let cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| ControlError::Config(format!("postgres url: {e}")))?;
        if cfg.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(ControlError::Config("postgres url asks for sslmode=require; this build connects without TLS (use a loopback or private server)".into()));
        }
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(pool_size.max(1))
            .build()
            .map_err(|e| ControlError::Config(format!("postgres pool: {e}")))?;
        let s = PostgresStore {
            heartbeats: heartbeats::HeartbeatBatcher::start(pool.clone()),
            pool,
        };
        s.migrate().await?;
        Ok(s)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(db("connect to postgres"))
    }

    async fn migrate(&self) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db("migrate"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db("migration lock"))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            .await
            .map_err(db("migrate"))?;
        let current: i32 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(db("migrate"))?
            .get(0);
        if current as usize > MIGRATIONS.len() {
            return Err(ControlError::Store(format!(
                "the database has schema version {current}, newer than this build knows ({}); upgrade b3iq-control",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(sql).await.map_err(db("migrate"))?;
            tx.execute(
                "INSERT INTO schema_migrations(version) VALUES ($1)",
                &[&((i + 1) as i32)],
            )
            .await
            .map_err(db("migrate"))?;
        }
        tx.commit().await.map_err(db("migrate"))
    }
}

fn node_from_row(r: &Row) -> Result<NodeRow> {
    let node_id: String = r.get("node_id");
    let bad = |what: &str| {
        ControlError::Store(format!(
            "the database holds an invalid {what} for node {node_id}"
        ))
    };
    let last_sequence: Option<i64> = r.get("last_sequence");
    Ok(NodeRow {
        node_id: NodeId::parse(&node_id).map_err(|_| bad("node id"))?,
        public_key: NodePublicKey::from_hex(r.get::<_, &str>("public_key"))
            .map_err(|_| bad("public key"))?,
        org_id: r.get("org_id"),
        status: NodeStatus::parse(r.get::<_, &str>("status")).ok_or_else(|| bad("status"))?,
        status_reason: r.get("status_reason"),
        enrolled_at_ms: r.get::<_, i64>("enrolled_at_ms") as u64,
        expires_at_ms: r.get::<_, i64>("expires_at_ms") as u64,
        last_heartbeat: match last_sequence {
            None => None,
            Some(seq) => Some(LastHeartbeat {
                sequence: seq as u64,
                sent_at_ms: r.get::<_, i64>("last_sent_at_ms") as u64,
                received_at_ms: r.get::<_, i64>("last_received_at_ms") as u64,
                health: health_parse(r.get::<_, &str>("last_health"))
                    .ok_or_else(|| bad("health"))?,
                body: serde_json::from_str(r.get::<_, &str>("last_body"))
                    .map_err(|_| bad("heartbeat body"))?,
            }),
        },
        refused_heartbeats: r.get::<_, i64>("refused_heartbeats") as u64,
        job_key: r
            .get::<_, Option<&str>>("job_key")
            .map(NodePublicKey::from_hex)
            .transpose()
            .map_err(|_| bad("job key"))?,
        job_key_next: r
            .get::<_, Option<&str>>("job_key_next")
            .map(NodePublicKey::from_hex)
            .transpose()
            .map_err(|_| bad("next job key"))?,
    })
}

fn job_from_row(r: &Row) -> Result<JobRow> {
    let node_id: String = r.get("node_id");
    let bad = |what: &str| {
        ControlError::Store(format!(
            "the database holds an invalid {what} for a job of {node_id}"
        ))
    };
    let opt = |v: Option<i64>| v.map(|x| x as u64);
    Ok(JobRow {
        job_id: r
            .get::<_, Vec<u8>>("job_id")
            .as_slice()
            .try_into()
            .map_err(|_| bad("job id"))?,
        node_id: NodeId::parse(&node_id).map_err(|_| bad("node id"))?,
        org_id: r.get("org_id"),
        sequence: r.get::<_, i64>("sequence") as u64,
        kind: r.get("kind"),
        envelope: r.get("envelope"),
        created_by: r.get("created_by"),
        created_at_ms: r.get::<_, i64>("created_at_ms") as u64,
        expires_at_ms: r.get::<_, i64>("expires_at_ms") as u64,
        delivered_at_ms: opt(r.get("delivered_at_ms")),
        outcome: r.get("outcome"),
        code: r.get("code"),
        result: r
            .get::<_, Option<String>>("result")
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|_| bad("result"))?,
        finished_at_ms: opt(r.get("finished_at_ms")),
    })
}

fn operator_from_row(r: &Row) -> Operator {
    Operator {
        id: r.get(0),
        org_id: r.get(1),
        username: r.get(2),
        password_phc: r.get(3),
        created_at_ms: r.get::<_, i64>(4) as u64,
    }
}

async fn get_node<C: deadpool_postgres::GenericClient>(
    c: &C,
    id: &str,
    lock: bool,
) -> Result<Option<NodeRow>> {
    let sql = format!(
        "SELECT {NODE_COLUMNS} FROM nodes WHERE node_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    c.query_opt(&sql, &[&id])
        .await
        .map_err(db("read node"))?
        .map(|r| node_from_row(&r))
        .transpose()
}

// ---- gateway keys and credits -------------------------------------------------------------

fn gateway_key_from_row(r: &Row) -> GatewayKey {
    GatewayKey {
        id: r.get(0),
        org_id: r.get(1),
        name: r.get(2),
        rate_per_min: u32::try_from(r.get::<_, i64>(3)).unwrap_or(u32::MAX),
        spend_limit_per_day: r.get::<_, Option<i64>>(4).map(|v| v as u64),
        created_at_ms: r.get::<_, i64>(5) as u64,
        revoked_at_ms: r.get::<_, Option<i64>>(6).map(|v| v as u64),
    }
}

async fn get_hold<C: deadpool_postgres::GenericClient>(
    c: &C,
    id: &[u8; 16],
    lock: bool,
) -> Result<Option<HoldRecord>> {
    let sql = format!(
        "SELECT {HOLD_COLUMNS} FROM credit_holds WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    c.query_opt(&sql, &[&id.as_slice()])
        .await
        .map_err(db("read hold"))?
        .map(|r| {
            RawHold {
                id: r.get(0),
                org_id: r.get(1),
                key_id: r.get(2),
                amount: r.get(3),
                created_at_ms: r.get(4),
                state: r.get(5),
                charge: r.get(6),
                node_id: r.get(7),
                receipt_id: r.get(8),
                closed_at_ms: r.get(9),
            }
            .check()
        })
        .transpose()
}

/// An account's balance (0 when it has none yet), as stored for a non-`external` account.
async fn account_balance<C: deadpool_postgres::GenericClient>(c: &C, account: &str) -> Result<u64> {
    let b: Option<i64> = c
        .query_opt(
            "SELECT balance FROM ledger_accounts WHERE account = $1",
            &[&account],
        )
        .await
        .map_err(db("read balance"))?
        .map(|r| r.get(0));
    Ok(b.unwrap_or(0).max(0) as u64)
}

/// Writes one balanced ledger transaction inside the caller's transaction: the `ledger_tx` row,
/// then per account (in name order, so concurrent transactions lock accounts in one order) its
/// guarded balance change and its row. `Ok(Err(account))` when a change would take a guarded
/// account below zero; the caller refuses and drops (rolls back) its transaction. Under READ
/// COMMITTED the guarded `UPDATE` re-reads the row after any concurrent writer commits, so two
/// holds can never both pass on the same credits.
async fn ledger_apply(
    c: &deadpool_postgres::Transaction<'_>,
    t: &TxMeta<'_>,
    rows: &[(String, i64)],
) -> Result<std::result::Result<i64, String>> {
    let rows = credits::balanced(rows)?;
    let tx_id: i64 = c
        .query_one(
            "INSERT INTO ledger_tx(kind, org_id, key_id, hold_id, node_id, receipt_id, reference, created_at_ms) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) RETURNING id",
            &[&t.kind, &t.org_id, &t.key_id, &t.hold_id, &t.node_id, &t.receipt_id, &t.reference, &ms(t.now_ms)],
        )
        .await
        .map_err(|e| {
            if is_code(&e, &SqlState::UNIQUE_VIOLATION) {
                Refusal::Exists(format!("a top-up with reference {:?}", t.reference)).into()
            } else {
                ControlError::store("ledger transaction", e)
            }
        })?
        .get(0);
    for (account, amount) in &rows {
        c.execute("INSERT INTO ledger_accounts(account, balance) VALUES ($1, 0) ON CONFLICT (account) DO NOTHING", &[account]).await.map_err(db("ledger account"))?;
        let n = c
            .execute("UPDATE ledger_accounts SET balance = balance + $2 WHERE account = $1 AND (balance + $2 >= 0 OR account LIKE 'external:%')", &[account, amount])
            .await
            .map_err(db("ledger balance"))?;
        if n == 0 {
            return Ok(Err(account.clone()));
        }
        c.execute(
            "INSERT INTO ledger_rows(tx_id, account, amount) VALUES ($1, $2, $3)",
            &[&tx_id, account, amount],
        )
        .await
        .map_err(db("ledger row"))?;
    }
    Ok(Ok(tx_id))
}

/// A `SUM(...)::TEXT` column (Postgres sums BIGINT as NUMERIC) as an exact integer.
fn sum_col(r: &Row, i: usize) -> Result<i128> {
    let s: Option<String> = r.get(i);
    s.as_deref()
        .unwrap_or("0")
        .parse()
        .map_err(|e| ControlError::store("ledger sum", e))
}

/// One heartbeat on its own (the path of a heartbeat its batch did not store: a refusal, or a
/// race): one prepared statement, then the refusal's reason in a transaction.
async fn record_one(pool: &Pool, h: &HeartbeatCommit) -> Result<()> {
    let c = pool.get().await.map_err(db("connect to postgres"))?;
    let id = h.node_id.to_text();
    let now = ms(h.received_at_ms);
    // The common case in one round trip: one statement (so one transaction) that moves the
    // node's last heartbeat forward only for an active, unexpired node and a higher sequence,
    // and adds the history row only when it did. The statement is prepared once per connection.
    let st = c
        .prepare_cached(
            "WITH moved AS (
                 UPDATE nodes SET last_sequence = $2, last_sent_at_ms = $3, last_received_at_ms = $4, last_health = $5, last_body = $6
                 WHERE node_id = $1 AND status = 'active' AND expires_at_ms > $4 AND (last_sequence IS NULL OR last_sequence < $2)
                 RETURNING node_id)
             INSERT INTO heartbeats(node_id, sequence, received_at_ms, health) SELECT node_id, $2, $4, $5 FROM moved",
        )
        .await
        .map_err(db("store heartbeat"))?;
    let n = c
        .execute(
            &st,
            &[
                &id,
                &ms(h.sequence),
                &ms(h.sent_at_ms),
                &now,
                &health_name(h.health),
                &h.body.to_string(),
            ],
        )
        .await
        .map_err(db("store heartbeat"))?;
    if n == 1 {
        if h.sequence % 64 == 0 {
            // Bounded history: a cheap indexed delete on roughly one row in 64 heartbeats.
            c.execute(
                "DELETE FROM heartbeats WHERE received_at_ms < $1",
                &[&ms(h.received_at_ms.saturating_sub(HEARTBEAT_HISTORY_MS))],
            )
            .await
            .map_err(db("prune heartbeats"))?;
        }
        return Ok(());
    }
    // Refused: say why, and count a stale sequence on the node, in one transaction.
    let mut c = c;
    let tx = c.transaction().await.map_err(db("heartbeat"))?;
    let refusal = match get_node(&tx, &id, false).await? {
        None => Refusal::UnknownNode,
        Some(n) if n.status == NodeStatus::Revoked => Refusal::Revoked(n.status_reason),
        Some(n) if n.status == NodeStatus::Suspended => Refusal::Suspended(n.status_reason),
        Some(n) if n.expires_at_ms <= h.received_at_ms => Refusal::EnrollmentExpired,
        Some(n) => {
            tx.execute(
                "UPDATE nodes SET refused_heartbeats = refused_heartbeats + 1 WHERE node_id = $1",
                &[&id],
            )
            .await
            .map_err(db("count refusal"))?;
            tx.commit().await.map_err(db("count refusal"))?;
            return Err(Refusal::StaleSequence {
                got: h.sequence,
                last: n.last_heartbeat.map(|l| l.sequence).unwrap_or(0),
            }
            .into());
        }
    };
    Err(refusal.into())
}

#[async_trait]
impl ControlStore for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn create_org(&self, org: &Org) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO orgs(id, name, created_at_ms) VALUES ($1, $2, $3)",
            &[&org.id, &org.name, &ms(org.created_at_ms)],
        )
        .await
        .map_err(|e| {
            if is_code(&e, &SqlState::UNIQUE_VIOLATION) {
                Refusal::Exists(format!("organisation {:?}", org.name)).into()
            } else {
                ControlError::store("create org", e)
            }
        })?;
        Ok(())
    }

    async fn org(&self, id_or_name: &str) -> Result<Option<Org>> {
        let c = self.client().await?;
        Ok(c.query_opt(
            "SELECT id, name, created_at_ms FROM orgs WHERE id = $1 OR name = $1",
            &[&id_or_name],
        )
        .await
        .map_err(db("read org"))?
        .map(|r| Org {
            id: r.get(0),
            name: r.get(1),
            created_at_ms: r.get::<_, i64>(2) as u64,
        }))
    }

    async fn create_operator(&self, op: &Operator) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO operators(id, org_id, username, password_phc, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
            &[&op.id, &op.org_id, &op.username, &op.password_phc, &ms(op.created_at_ms)],
        )
        .await
        .map_err(|e| {
            if is_code(&e, &SqlState::UNIQUE_VIOLATION) {
                Refusal::Exists(format!("operator {:?}", op.username)).into()
            } else if is_code(&e, &SqlState::FOREIGN_KEY_VIOLATION) {
                Refusal::NotFound(format!("organisation {:?}", op.org_id)).into()
            } else {
                ControlError::store("create operator", e)
            }
        })?;
        Ok(())
    }

    async fn operator_by_username(&self, username: &str) -> Result<Option<Operator>> {
        let c = self.client().await?;
        Ok(c.query_opt("SELECT id, org_id, username, password_phc, created_at_ms FROM operators WHERE username = $1", &[&username])
            .await
            .map_err(db("read operator"))?
            .map(|r| operator_from_row(&r)))
    }

    async fn create_session(
        &self,
        token_hash: &[u8; 32],
        operator_id: &str,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM operator_sessions WHERE expires_at_ms <= $1",
            &[&ms(now_ms)],
        )
        .await
        .map_err(db("prune sessions"))?;
        c.execute(
            "INSERT INTO operator_sessions(token_hash, operator_id, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4)",
            &[&token_hash.as_slice(), &operator_id, &ms(now_ms), &ms(expires_at_ms)],
        )
        .await
        .map_err(db("create session"))?;
        Ok(())
    }

    async fn session_operator(
        &self,
        token_hash: &[u8; 32],
        now_ms: u64,
    ) -> Result<Option<Operator>> {
        let c = self.client().await?;
        Ok(c.query_opt(
            "SELECT o.id, o.org_id, o.username, o.password_phc, o.created_at_ms FROM operator_sessions s JOIN operators o ON o.id = s.operator_id
             WHERE s.token_hash = $1 AND s.expires_at_ms > $2",
            &[&token_hash.as_slice(), &ms(now_ms)],
        )
        .await
        .map_err(db("read session"))?
        .map(|r| operator_from_row(&r)))
    }

    async fn delete_session(&self, token_hash: &[u8; 32]) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM operator_sessions WHERE token_hash = $1",
            &[&token_hash.as_slice()],
        )
        .await
        .map_err(db("delete session"))?;
        Ok(())
    }

    async fn create_enrollment_token(&self, t: &EnrollmentTokenRow) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO enrollment_tokens(id, org_id, token_hash, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5)",
            &[&t.id, &t.org_id, &t.token_hash.as_slice(), &ms(t.created_at_ms), &ms(t.expires_at_ms)],
        )
        .await
        .map_err(|e| if is_code(&e, &SqlState::FOREIGN_KEY_VIOLATION) { Refusal::NotFound(format!("organisation {:?}", t.org_id)).into() } else { ControlError::store("create enrollment token", e) })?;
        Ok(())
    }

    async fn create_challenge(&self, ch: &ChallengeRow, now_ms: u64) -> Result<bool> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM challenges WHERE expires_at_ms <= $1",
            &[&ms(now_ms)],
        )
        .await
        .map_err(db("prune challenges"))?;
        // The cap is checked and the row inserted in one statement; concurrent inserts may pass
        // it by a few rows, which only bounds the table a little more loosely.
        let n = c
            .execute(
                "INSERT INTO challenges(id, nonce, issued_at_ms, expires_at_ms)
                 SELECT $1, $2, $3, $4 WHERE (SELECT COUNT(*) FROM challenges WHERE used_at_ms IS NULL) < $5",
                &[&ch.id.as_slice(), &ch.nonce.as_slice(), &ms(ch.issued_at_ms), &ms(ch.expires_at_ms), &(MAX_LIVE_CHALLENGES as i64)],
            )
            .await
            .map_err(db("create challenge"))?;
        Ok(n == 1)
    }

    async fn use_challenge(&self, id: &[u8; 16], now_ms: u64) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute("UPDATE challenges SET used_at_ms = $2 WHERE id = $1 AND used_at_ms IS NULL AND expires_at_ms > $2", &[&id.as_slice(), &ms(now_ms)])
            .await
            .map_err(db("use challenge"))?;
        Ok(n == 1)
    }

    async fn live_challenge(&self, id: &[u8; 16], now_ms: u64) -> Result<Option<ChallengeRow>> {
        let c = self.client().await?;
        c.query_opt(
            "SELECT nonce, issued_at_ms, expires_at_ms FROM challenges WHERE id = $1 AND used_at_ms IS NULL AND expires_at_ms > $2",
            &[&id.as_slice(), &ms(now_ms)],
        )
        .await
        .map_err(db("read challenge"))?
        .map(|r| {
            Ok(ChallengeRow {
                id: *id,
                nonce: r.get::<_, Vec<u8>>(0).try_into().map_err(|_| ControlError::Store("the database holds a nonce that is not 32 bytes".into()))?,
                issued_at_ms: r.get::<_, i64>(1) as u64,
                expires_at_ms: r.get::<_, i64>(2) as u64,
            })
        })
        .transpose()
    }

    async fn enroll(&self, e: &EnrollCommit) -> Result<NodeRow> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db("enroll"))?;
        let now = ms(e.now_ms);
        let used = tx
            .execute("UPDATE challenges SET used_at_ms = $2 WHERE id = $1 AND used_at_ms IS NULL AND expires_at_ms > $2", &[&e.challenge_id.as_slice(), &now])
            .await
            .map_err(db("use challenge"))?;
        if used != 1 {
            return Err(Refusal::ChallengeUsed.into());
        }
        let tok = tx
            .query_opt("SELECT org_id, expires_at_ms, used_at_ms FROM enrollment_tokens WHERE token_hash = $1 FOR UPDATE", &[&e.token_hash.as_slice()])
            .await
            .map_err(db("read token"))?
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1), r.get::<_, Option<i64>>(2)));
        // A refused attempt still uses up its challenge: a nonce is good for one try.
        let refusal = match &tok {
            None => Some(Refusal::TokenUnknown),
            Some((_, _, Some(_))) => Some(Refusal::TokenUsed),
            Some((_, exp, None)) if *exp <= now => Some(Refusal::TokenExpired),
            Some(_) => None,
        };
        if let Some(r) = refusal {
            tx.commit().await.map_err(db("enroll"))?;
            return Err(r.into());
        }
        let org_id = tok.map(|t| t.0).unwrap_or_default();
        let id = e.node_id.to_text();
        // Serialise concurrent first enrollments of one node on the insert.
        tx.execute(
            "INSERT INTO nodes(node_id, public_key, org_id, status, enrolled_at_ms, expires_at_ms, job_key) VALUES ($1, $2, $3, 'active', $4, $5, $6) ON CONFLICT (node_id) DO NOTHING",
            &[&id, &e.public_key.to_hex(), &org_id, &now, &ms(e.expires_at_ms), &e.job_key.to_hex()],
        )
        .await
        .map_err(db("insert node"))?;
        let node = get_node(&tx, &id, true)
            .await?
            .ok_or_else(|| ControlError::Store("enrolled node vanished".into()))?;
        if node.status == NodeStatus::Revoked {
            tx.commit().await.map_err(db("enroll"))?;
            return Err(Refusal::Revoked(node.status_reason).into());
        }
        if node.org_id != org_id {
            tx.commit().await.map_err(db("enroll"))?;
            return Err(Refusal::OtherOrg.into());
        }
        tx.execute(
            "UPDATE nodes SET expires_at_ms = $2, public_key = $3, job_key = $4, job_key_next = NULL WHERE node_id = $1",
            &[&id, &ms(e.expires_at_ms), &e.public_key.to_hex(), &e.job_key.to_hex()],
        )
            .await
            .map_err(db("re-enroll node"))?;
        tx.execute("UPDATE enrollment_tokens SET used_at_ms = $2, used_by = $3 WHERE token_hash = $1 AND used_at_ms IS NULL", &[&e.token_hash.as_slice(), &now, &id])
            .await
            .map_err(db("use token"))?;
        let node = get_node(&tx, &id, false)
            .await?
            .ok_or_else(|| ControlError::Store("enrolled node vanished".into()))?;
        tx.commit().await.map_err(db("enroll"))?;
        Ok(node)
    }

    async fn renew(
        &self,
        challenge_id: &[u8; 16],
        node: &NodeId,
        key: &NodePublicKey,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<NodeRow> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db("renew"))?;
        let now = ms(now_ms);
        let used = tx
            .execute("UPDATE challenges SET used_at_ms = $2 WHERE id = $1 AND used_at_ms IS NULL AND expires_at_ms > $2", &[&challenge_id.as_slice(), &now])
            .await
            .map_err(db("use challenge"))?;
        if used != 1 {
            return Err(Refusal::ChallengeUsed.into());
        }
        let id = node.to_text();
        let refusal = match get_node(&tx, &id, true).await? {
            None => Some(Refusal::UnknownNode),
            Some(n) if n.public_key != *key => Some(Refusal::UnknownNode),
            Some(n) if n.status == NodeStatus::Revoked => Some(Refusal::Revoked(n.status_reason)),
            Some(n) if n.status == NodeStatus::Suspended => {
                Some(Refusal::Suspended(n.status_reason))
            }
            Some(n) if n.expires_at_ms <= now_ms => Some(Refusal::EnrollmentExpired),
            Some(_) => None,
        };
        if let Some(r) = refusal {
            tx.commit().await.map_err(db("renew"))?;
            return Err(r.into());
        }
        tx.execute(
            "UPDATE nodes SET expires_at_ms = GREATEST(expires_at_ms, $2) WHERE node_id = $1",
            &[&id, &ms(expires_at_ms)],
        )
        .await
        .map_err(db("renew"))?;
        let n = get_node(&tx, &id, false)
            .await?
            .ok_or_else(|| ControlError::Store("renewed node vanished".into()))?;
        tx.commit().await.map_err(db("renew"))?;
        Ok(n)
    }

    async fn node(&self, id: &NodeId) -> Result<Option<NodeRow>> {
        let c = self.client().await?;
        get_node(&c, &id.to_text(), false).await
    }

    async fn nodes(&self, org_id: &str) -> Result<Vec<NodeRow>> {
        let c = self.client().await?;
        c.query(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE org_id = $1 ORDER BY enrolled_at_ms, node_id"), &[&org_id])
            .await
            .map_err(db("list nodes"))?
            .iter()
            .map(node_from_row)
            .collect()
    }

    async fn set_node_status(
        &self,
        id: &NodeId,
        org_id: &str,
        status: NodeStatus,
        reason: &str,
    ) -> Result<()> {
        let c = self.client().await?;
        let id = id.to_text();
        let reason = if status == NodeStatus::Active {
            ""
        } else {
            reason
        };
        let n = c
            .execute(
                "UPDATE nodes SET status = $3, status_reason = $4 WHERE node_id = $1 AND org_id = $2 AND status <> 'revoked'",
                &[&id, &org_id, &status.as_str(), &reason],
            )
            .await
            .map_err(db("set node status"))?;
        if n == 0 {
            return match get_node(&c, &id, false).await? {
                Some(n) if n.org_id == org_id => Err(Refusal::Revoked(n.status_reason).into()),
                _ => Err(Refusal::UnknownNode.into()),
            };
        }
        Ok(())
    }

    async fn record_heartbeat(&self, h: &HeartbeatCommit) -> Result<()> {
        self.heartbeats.record(h).await
    }

    async fn count_refused_heartbeat(&self, id: &NodeId) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE nodes SET refused_heartbeats = refused_heartbeats + 1 WHERE node_id = $1",
            &[&id.to_text()],
        )
        .await
        .map_err(db("count refusal"))?;
        Ok(())
    }

    async fn heartbeat_count(&self, id: &NodeId, since_ms: u64) -> Result<u64> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM heartbeats WHERE node_id = $1 AND received_at_ms >= $2",
                &[&id.to_text(), &ms(since_ms)],
            )
            .await
            .map_err(db("count heartbeats"))?
            .get(0);
        Ok(n as u64)
    }

    async fn queue_job(&self, sign: JobSigner) -> Result<JobRow> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db("queue job"))?;
        // The row lock orders concurrent queuers: sequences commit in the order they are taken.
        let last: i64 = tx
            .query_one("SELECT last FROM job_sequence WHERE id = 1 FOR UPDATE", &[])
            .await
            .map_err(db("job sequence"))?
            .get(0);
        let seq = (last as u64)
            .checked_add(1)
            .ok_or_else(|| ControlError::Store("job sequence exhausted".into()))?;
        let j = sign(seq)?;
        tx.execute(
            "UPDATE job_sequence SET last = $1 WHERE id = 1",
            &[&ms(seq)],
        )
        .await
        .map_err(db("job sequence"))?;
        tx.execute(
            "INSERT INTO jobs(job_id, node_id, org_id, sequence, kind, envelope, created_by, created_at_ms, expires_at_ms) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
            &[&j.job_id.as_slice(), &j.node_id.to_text(), &j.org_id, &ms(j.sequence), &j.kind, &j.envelope, &j.created_by, &ms(j.created_at_ms), &ms(j.expires_at_ms)],
        )
        .await
        .map_err(db("queue job"))?;
        tx.commit().await.map_err(db("queue job"))?;
        Ok(j)
    }

    async fn pending_jobs(
        &self,
        node: &NodeId,
        after_sequence: u64,
        now_ms: u64,
        limit: u32,
    ) -> Result<Vec<JobRow>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE node_id = $1 AND sequence > $2 AND finished_at_ms IS NULL AND expires_at_ms > $3 ORDER BY sequence LIMIT $4"),
                &[&node.to_text(), &ms(after_sequence), &ms(now_ms), &i64::from(limit)],
            )
            .await
            .map_err(db("pending jobs"))?;
        let jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        if !jobs.is_empty() {
            let ids: Vec<&[u8]> = jobs.iter().map(|j| j.job_id.as_slice()).collect();
            c.execute("UPDATE jobs SET delivered_at_ms = $2 WHERE job_id = ANY($1) AND delivered_at_ms IS NULL", &[&ids, &ms(now_ms)])
                .await
                .map_err(db("mark delivered"))?;
        }
        Ok(jobs)
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
        let c = self.client().await?;
        let id = node.to_text();
        let n = c
            .execute(
                "UPDATE jobs SET outcome = $3, code = $4, result = $5, finished_at_ms = $6 WHERE job_id = $1 AND node_id = $2 AND finished_at_ms IS NULL",
                &[&job_id.as_slice(), &id, &outcome, &code, &result.to_string(), &ms(now_ms)],
            )
            .await
            .map_err(db("finish job"))?;
        if n == 1 {
            return Ok(true);
        }
        match c
            .query_opt(
                "SELECT 1 FROM jobs WHERE job_id = $1 AND node_id = $2",
                &[&job_id.as_slice(), &id],
            )
            .await
            .map_err(db("finish job"))?
        {
            Some(_) => Ok(false),
            None => {
                Err(Refusal::NotFound(format!("job {} for this node", hex::encode(job_id))).into())
            }
        }
    }

    async fn jobs(&self, node: &NodeId) -> Result<Vec<JobRow>> {
        let c = self.client().await?;
        c.query(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE node_id = $1 ORDER BY sequence DESC LIMIT $2"
            ),
            &[&node.to_text(), &i64::from(MAX_JOBS_LISTED)],
        )
        .await
        .map_err(db("list jobs"))?
        .iter()
        .map(job_from_row)
        .collect()
    }

    async fn job(&self, node: &NodeId, job_id: &[u8; 16]) -> Result<Option<JobRow>> {
        let c = self.client().await?;
        c.query_opt(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE node_id = $1 AND job_id = $2"),
            &[&node.to_text(), &job_id.as_slice()],
        )
        .await
        .map_err(db("read job"))?
        .map(|r| job_from_row(&r))
        .transpose()
    }

    async fn job_keys(&self) -> Result<Vec<JobKeyRow>> {
        let c = self.client().await?;
        c.query(
            "SELECT public_key, created_at_ms FROM job_keys ORDER BY created_at_ms, position",
            &[],
        )
        .await
        .map_err(db("job keys"))?
        .iter()
        .map(|r| {
            let k: &str = r.get(0);
            Ok(JobKeyRow {
                public_key: NodePublicKey::from_hex(k).map_err(|_| {
                    ControlError::Store(format!("the database holds an invalid job key {k:?}"))
                })?,
                created_at_ms: r.get::<_, i64>(1) as u64,
            })
        })
        .collect()
    }

    async fn adopt_job_key(&self, key: &NodePublicKey, now_ms: u64) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db("adopt job key"))?;
        // One adopter at a time across replicas: the first key is chosen once.
        tx.execute("LOCK TABLE job_keys IN EXCLUSIVE MODE", &[])
            .await
            .map_err(db("adopt job key"))?;
        let n: i64 = tx
            .query_one("SELECT COUNT(*) FROM job_keys", &[])
            .await
            .map_err(db("adopt job key"))?
            .get(0);
        if n > 0 {
            return Ok(false);
        }
        let k = key.to_hex();
        tx.execute(
            "INSERT INTO job_keys(public_key, created_at_ms) VALUES ($1, $2)",
            &[&k, &ms(now_ms)],
        )
        .await
        .map_err(db("adopt job key"))?;
        tx.execute("UPDATE nodes SET job_key = $1 WHERE job_key IS NULL", &[&k])
            .await
            .map_err(db("adopt job key"))?;
        tx.commit().await.map_err(db("adopt job key"))?;
        Ok(true)
    }

    async fn add_job_key(&self, key: &NodePublicKey, now_ms: u64) -> Result<()> {
        let c = self.client().await?;
        let k = key.to_hex();
        c.execute(
            "INSERT INTO job_keys(public_key, created_at_ms) VALUES ($1, $2)",
            &[&k, &ms(now_ms)],
        )
        .await
        .map_err(|e| {
            if is_code(&e, &SqlState::UNIQUE_VIOLATION) {
                Refusal::Exists(format!("job key {k}")).into()
            } else {
                ControlError::store("add job key", e)
            }
        })?;
        Ok(())
    }

    async fn nodes_not_pinning(&self, key: &NodePublicKey, now_ms: u64) -> Result<Vec<NodeRow>> {
        let c = self.client().await?;
        c.query(
            &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE status = 'active' AND expires_at_ms > $2 AND (job_key IS NULL OR job_key <> $1) ORDER BY node_id"),
            &[&key.to_hex(), &ms(now_ms)],
        )
        .await
        .map_err(db("nodes to rotate"))?
        .iter()
        .map(node_from_row)
        .collect()
    }

    async fn set_job_key_next(&self, node: &NodeId, next: Option<&NodePublicKey>) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE nodes SET job_key_next = $2 WHERE node_id = $1",
            &[&node.to_text(), &next.map(|k| k.to_hex())],
        )
        .await
        .map_err(db("next job key"))?;
        Ok(())
    }

    async fn confirm_job_key(
        &self,
        node: &NodeId,
        old: &NodePublicKey,
        new: &NodePublicKey,
    ) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE nodes SET job_key = $3, job_key_next = CASE WHEN job_key_next = $3 THEN NULL ELSE job_key_next END WHERE node_id = $1 AND job_key = $2",
                &[&node.to_text(), &old.to_hex(), &new.to_hex()],
            )
            .await
            .map_err(db("confirm job key"))?;
        Ok(n == 1)
    }

    async fn abandon_job_key_next(&self, node: &NodeId, next: &NodePublicKey) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE nodes SET job_key_next = NULL WHERE node_id = $1 AND job_key_next = $2",
            &[&node.to_text(), &next.to_hex()],
        )
        .await
        .map_err(db("abandon job key"))?;
        Ok(())
    }

    async fn store_receipts(&self, rows: Vec<ReceiptRow>, now_ms: u64) -> Result<(u32, u32)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db("store receipts"))?;
        // One statement for the whole batch: the rows whose id is new come back (a concurrent
        // upload of the same id waits for the other transaction and then inserts nothing), and
        // only those are added to the usage, one upsert per (node, model, day).
        let insert = tx
            .prepare_cached(
                "INSERT INTO receipts(receipt_id, node_id, model_id, mode, prompt_tokens, completion_tokens, price_micro_credits, started_at_ms, signed, received_at_ms)
                 SELECT r.*, $10::BIGINT FROM UNNEST($1::BYTEA[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::BIGINT[], $7::BIGINT[], $8::BIGINT[], $9::BYTEA[]) AS r
                 ON CONFLICT (receipt_id) DO NOTHING RETURNING receipt_id",
            )
            .await
            .map_err(db("store receipts"))?;
        let ids: Vec<&[u8]> = rows.iter().map(|r| r.receipt_id.as_slice()).collect();
        let nodes: Vec<String> = rows.iter().map(|r| r.node_id.to_text()).collect();
        let models: Vec<&str> = rows.iter().map(|r| r.model_id.as_str()).collect();
        let modes: Vec<&str> = rows.iter().map(|r| r.mode.as_str()).collect();
        let prompt: Vec<i64> = rows.iter().map(|r| i64::from(r.prompt_tokens)).collect();
        let completion: Vec<i64> = rows
            .iter()
            .map(|r| i64::from(r.completion_tokens))
            .collect();
        let price: Vec<i64> = rows.iter().map(|r| ms(r.price_micro_credits)).collect();
        let started: Vec<i64> = rows.iter().map(|r| ms(r.started_at_ms)).collect();
        let signed: Vec<&[u8]> = rows.iter().map(|r| r.signed.as_slice()).collect();
        let new_ids: std::collections::HashSet<Vec<u8>> = tx
            .query(
                &insert,
                &[
                    &ids,
                    &nodes,
                    &models,
                    &modes,
                    &prompt,
                    &completion,
                    &price,
                    &started,
                    &signed,
                    &ms(now_ms),
                ],
            )
            .await
            .map_err(db("store receipt"))?
            .iter()
            .map(|r| r.get::<_, Vec<u8>>(0))
            .collect();
        let mut usage = UsageSums::default();
        let mut seen = std::collections::HashSet::new();
        for (r, node) in rows.iter().zip(nodes) {
            // A batch naming one receipt twice stores (and counts) it once.
            if new_ids.contains(r.receipt_id.as_slice()) && seen.insert(r.receipt_id) {
                usage.add(node, r);
            }
        }
        let stored = seen.len() as u32;
        if !usage.0.is_empty() {
            let upsert = tx
                .prepare_cached(
                    "INSERT INTO usage_daily(node_id, model_id, day, requests, prompt_tokens, completion_tokens, price_micro_credits) VALUES ($1,$2,$3,$4,$5,$6,$7)
                     ON CONFLICT (node_id, model_id, day) DO UPDATE SET requests = usage_daily.requests + excluded.requests, prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens,
                     completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens, price_micro_credits = usage_daily.price_micro_credits + excluded.price_micro_credits",
                )
                .await
                .map_err(db("usage"))?;
            for ((node, model, day), u) in &usage.0 {
                tx.execute(
                    &upsert,
                    &[
                        node,
                        model,
                        &ms(*day),
                        &ms(u.requests),
                        &ms(u.prompt_tokens),
                        &ms(u.completion_tokens),
                        &ms(u.price_micro_credits),
                    ],
                )
                .await
                .map_err(db("usage"))?;
            }
        }
        tx.commit().await.map_err(db("store receipts"))?;
        Ok((stored, rows.len() as u32 - stored))
    }

    async fn receipt_count(&self, node: &NodeId) -> Result<u64> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM receipts WHERE node_id = $1",
                &[&node.to_text()],
            )
            .await
            .map_err(db("count receipts"))?
            .get(0);
        Ok(n as u64)
    }

    async fn close_epoch(&self, end_ms: u64, now_ms: u64) -> Result<Option<EpochRow>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db("close epoch"))?;
        // One closer at a time across replicas: the second waits here, then sees the receipts
        // the first assigned.
        tx.execute("LOCK TABLE epochs IN EXCLUSIVE MODE", &[]).await.map_err(db("close epoch"))?;
        let r = tx
            .query_one("SELECT COUNT(*), MIN(started_at_ms) FROM receipts WHERE epoch_id IS NULL AND mode = 'network' AND started_at_ms < $1 AND receipt_id IN (SELECT receipt_id FROM credit_holds WHERE state = 'settled')", &[&ms(end_ms)])
            .await
            .map_err(db("close epoch"))?;
        let (count, start): (i64, Option<i64>) = (r.get(0), r.get(1));
        let Some(start) = start.filter(|_| count > 0) else { return Ok(None) };
        let last: i64 = tx.query_one("SELECT COALESCE(MAX(epoch_id), 0) FROM epochs", &[]).await.map_err(db("close epoch"))?.get(0);
        let id = last + 1;
        tx.execute("INSERT INTO epochs(epoch_id, start_ms, end_ms, receipt_count, closed_at_ms) VALUES ($1, $2, $3, $4, $5)", &[&id, &start, &ms(end_ms), &count, &ms(now_ms)])
            .await
            .map_err(|e| if is_code(&e, &SqlState::UNIQUE_VIOLATION) { Refusal::Exists(format!("epoch {id}")).into() } else { ControlError::store("close epoch", e) })?;
        let n = tx
            .execute("UPDATE receipts SET epoch_id = $1 WHERE epoch_id IS NULL AND mode = 'network' AND started_at_ms < $2 AND receipt_id IN (SELECT receipt_id FROM credit_holds WHERE state = 'settled')", &[&id, &ms(end_ms)])
            .await
            .map_err(db("close epoch"))?;
        if n as i64 != count {
            return Err(ControlError::Store(format!("close epoch: counted {count} receipts but assigned {n}")));
        }
        tx.commit().await.map_err(db("close epoch"))?;
        Ok(Some(EpochRow { epoch_id: id as u64, start_ms: start as u64, end_ms, receipt_count: count as u64, closed_at_ms: now_ms, claim_file: None, tx_hash: None, posted_at: None }))
    }

    async fn epoch_receipts(&self, epoch_id: u64) -> Result<Vec<Vec<u8>>> {
        let c = self.client().await?;
        Ok(c.query("SELECT signed FROM receipts WHERE epoch_id = $1 ORDER BY receipt_id", &[&ms(epoch_id)])
            .await
            .map_err(db("epoch receipts"))?
            .iter()
            .map(|r| r.get::<_, Vec<u8>>(0))
            .collect())
    }

    async fn set_epoch_claim_file(&self, epoch_id: u64, claim_file: &str) -> Result<()> {
        let c = self.client().await?;
        let n = c.execute("UPDATE epochs SET claim_file = $2 WHERE epoch_id = $1", &[&ms(epoch_id), &claim_file]).await.map_err(db("store claim file"))?;
        if n == 0 {
            return Err(Refusal::NotFound(format!("epoch {epoch_id}")).into());
        }
        Ok(())
    }

    async fn set_epoch_posted(&self, epoch_id: u64, tx_hash: Option<&str>, posted_at: u64) -> Result<()> {
        let c = self.client().await?;
        let n = c
            .execute("UPDATE epochs SET tx_hash = COALESCE($2, tx_hash), posted_at = $3 WHERE epoch_id = $1", &[&ms(epoch_id), &tx_hash, &ms(posted_at)])
            .await
            .map_err(db("record epoch post"))?;
        if n == 0 {
            return Err(Refusal::NotFound(format!("epoch {epoch_id}")).into());
        }
        Ok(())
    }

    async fn set_payout_address(&self, node: &NodeId, address: &str) -> Result<()> {
        let c = self.client().await?;
        if c.execute("UPDATE nodes SET payout_address = $2 WHERE node_id = $1", &[&node.to_text(), &address]).await.map_err(db("set payout address"))? == 0 {
            return Err(Refusal::UnknownNode.into());
        }
        Ok(())
    }

    async fn payout_addresses(&self) -> Result<Vec<(NodeId, String)>> {
        let c = self.client().await?;
        c.query("SELECT node_id, payout_address FROM nodes WHERE payout_address IS NOT NULL ORDER BY node_id", &[])
            .await
            .map_err(db("payout addresses"))?
            .iter()
            .map(|r| {
                let n: String = r.get(0);
                Ok((NodeId::parse(&n).map_err(|e| ControlError::Store(format!("node id {n}: {e}")))?, r.get::<_, String>(1)))
            })
            .collect()
    }

    async fn accept_registration_request(&self, node: &NodeId, sent_at_ms: u64, operator: &str, now_ms: u64) -> Result<()> {
        let c = self.client().await?;
        let id = node.to_text();
        let n = c
            .execute(
                "INSERT INTO registration_requests(node_id, sent_at_ms, operator, accepted_at_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT(node_id) DO UPDATE SET sent_at_ms = excluded.sent_at_ms, operator = excluded.operator, accepted_at_ms = excluded.accepted_at_ms \
                 WHERE registration_requests.sent_at_ms < excluded.sent_at_ms",
                &[&id, &ms(sent_at_ms), &operator, &ms(now_ms)],
            )
            .await
            .map_err(db("accept registration request"))?;
        if n == 0 {
            let r = c.query_one("SELECT sent_at_ms FROM registration_requests WHERE node_id = $1", &[&id]).await.map_err(db("registration request"))?;
            return Err(Refusal::Replayed { what: "registration", got: sent_at_ms, last: r.get::<_, i64>(0) as u64 }.into());
        }
        Ok(())
    }

    async fn registration_request(&self, node: &NodeId) -> Result<Option<RegistrationRequestRow>> {
        let c = self.client().await?;
        Ok(c.query_opt("SELECT sent_at_ms, operator, accepted_at_ms FROM registration_requests WHERE node_id = $1", &[&node.to_text()])
            .await
            .map_err(db("registration request"))?
            .map(|r| RegistrationRequestRow { sent_at_ms: r.get::<_, i64>(0) as u64, operator: r.get(1), accepted_at_ms: r.get::<_, i64>(2) as u64 }))
    }

    async fn epoch(&self, epoch_id: u64) -> Result<Option<EpochRow>> {
        let c = self.client().await?;
        Ok(c.query_opt(&format!("SELECT {EPOCH_COLUMNS} FROM epochs WHERE epoch_id = $1"), &[&ms(epoch_id)]).await.map_err(db("epoch"))?.as_ref().map(epoch_from_row))
    }

    async fn all_nodes(&self, limit: u32) -> Result<Vec<NodeRow>> {
        let c = self.client().await?;
        c.query(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY enrolled_at_ms, node_id LIMIT $1"), &[&i64::from(limit)])
            .await
            .map_err(db("all nodes"))?
            .iter()
            .map(node_from_row)
            .collect()
    }

    async fn last_job(&self, node: &NodeId, kind: &str, outcome: &str) -> Result<Option<JobRow>> {
        let c = self.client().await?;
        c.query_opt(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE node_id = $1 AND kind = $2 AND outcome = $3 ORDER BY sequence DESC LIMIT 1"), &[&node.to_text(), &kind, &outcome])
            .await
            .map_err(db("last job"))?
            .as_ref()
            .map(job_from_row)
            .transpose()
    }

    async fn receipt_epoch(&self, receipt_id: &[u8; 32]) -> Result<Option<Option<u64>>> {
        let c = self.client().await?;
        Ok(c.query_opt("SELECT epoch_id FROM receipts WHERE receipt_id = $1", &[&receipt_id.as_slice()])
            .await
            .map_err(db("receipt epoch"))?
            .map(|r| r.get::<_, Option<i64>>(0).map(|e| e as u64)))
    }

    async fn epochs(&self, limit: u32) -> Result<Vec<EpochRow>> {
        let c = self.client().await?;
        Ok(c.query(&format!("SELECT {EPOCH_COLUMNS} FROM epochs ORDER BY epoch_id DESC LIMIT $1"), &[&i64::from(limit)])
            .await
            .map_err(db("epochs"))?
            .iter()
            .map(epoch_from_row)
            .collect())
    }

    async fn usage(&self, node: &NodeId) -> Result<Vec<UsageDay>> {
        let c = self.client().await?;
        Ok(c.query(
            "SELECT day, model_id, requests, prompt_tokens, completion_tokens, price_micro_credits FROM usage_daily WHERE node_id = $1 ORDER BY day DESC, model_id LIMIT 400",
            &[&node.to_text()],
        )
        .await
        .map_err(db("usage"))?
        .iter()
        .map(|r| UsageDay {
            day: r.get::<_, i64>(0) as u64,
            model_id: r.get(1),
            requests: r.get::<_, i64>(2) as u64,
            prompt_tokens: r.get::<_, i64>(3) as u64,
            completion_tokens: r.get::<_, i64>(4) as u64,
            price_micro_credits: r.get::<_, i64>(5) as u64,
        })
        .collect())
    }

    // ---- gateway keys and credits ---------------------------------------------------------

    async fn create_gateway_key(&self, key: &GatewayKey, token_hash: &[u8; 32]) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO gateway_keys(id, org_id, name, token_hash, rate_per_min, spend_limit_per_day, created_at_ms, revoked_at_ms) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
            &[&key.id, &key.org_id, &key.name, &token_hash.as_slice(), &i64::from(key.rate_per_min), &key.spend_limit_per_day.map(ms), &ms(key.created_at_ms), &key.revoked_at_ms.map(ms)],
        )
        .await
        .map_err(|e| {
            if is_code(&e, &SqlState::FOREIGN_KEY_VIOLATION) {
                Refusal::NotFound(format!("organisation {:?}", key.org_id)).into()
            } else if is_code(&e, &SqlState::UNIQUE_VIOLATION) {
                Refusal::Exists(format!("gateway key {}", key.id)).into()
            } else {
                ControlError::store("create gateway key", e)
            }
        })?;
        Ok(())
    }

    async fn gateway_key_by_hash(&self, token_hash: &[u8; 32]) -> Result<Option<GatewayKey>> {
        let c = self.client().await?;
        Ok(c.query_opt(
            &format!("SELECT {GATEWAY_KEY_COLUMNS} FROM gateway_keys WHERE token_hash = $1"),
            &[&token_hash.as_slice()],
        )
        .await
        .map_err(db("read gateway key"))?
        .map(|r| gateway_key_from_row(&r)))
    }

    async fn gateway_keys(&self, org_id: &str) -> Result<Vec<GatewayKey>> {
        let c = self.client().await?;
        Ok(c.query(&format!("SELECT {GATEWAY_KEY_COLUMNS} FROM gateway_keys WHERE org_id = $1 ORDER BY created_at_ms, id"), &[&org_id])
            .await
            .map_err(db("list gateway keys"))?
            .iter()
            .map(gateway_key_from_row)
            .collect())
    }

    async fn revoke_gateway_key(&self, org_id: &str, key_id: &str, now_ms: u64) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute("UPDATE gateway_keys SET revoked_at_ms = $3 WHERE id = $1 AND org_id = $2 AND revoked_at_ms IS NULL", &[&key_id, &org_id, &ms(now_ms)])
            .await
            .map_err(db("revoke gateway key"))?;
        if n == 1 {
            return Ok(true);
        }
        match c
            .query_opt(
                "SELECT 1 FROM gateway_keys WHERE id = $1 AND org_id = $2",
                &[&key_id, &org_id],
            )
            .await
            .map_err(db("revoke gateway key"))?
        {
            Some(_) => Ok(false),
            None => Err(Refusal::NotFound(format!(
                "gateway key {:?}",
                key_id.chars().take(40).collect::<String>()
            ))
            .into()),
        }
    }

    async fn add_credits(
        &self,
        org_id: &str,
        amount_u: u64,
        reference: &str,
        now_ms: u64,
    ) -> Result<u64> {
        let a = credits::amount(amount_u)?;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db("add credits"))?;
        if tx
            .query_opt("SELECT 1 FROM orgs WHERE id = $1", &[&org_id])
            .await
            .map_err(db("add credits"))?
            .is_none()
        {
            return Err(Refusal::NotFound(format!("organisation {org_id:?}")).into());
        }
        // The topup account's row lock orders concurrent top-ups, so the cap is checked on the
        // latest total.
        tx.execute("INSERT INTO ledger_accounts(account, balance) VALUES ($1, 0) ON CONFLICT (account) DO NOTHING", &[&account::TOPUP]).await.map_err(db("add credits"))?;
        let total: i64 = tx
            .query_one(
                "SELECT -balance FROM ledger_accounts WHERE account = $1 FOR UPDATE",
                &[&account::TOPUP],
            )
            .await
            .map_err(db("add credits"))?
            .get(0);
        if (total.max(0) as u64).saturating_add(amount_u) > MAX_TOTAL_TOPUPS {
            return Err(ControlError::Invalid {
                field: "amount",
                reason: format!(
                    "top-ups on this control plane would pass {MAX_TOTAL_TOPUPS} micro-credits"
                ),
            });
        }
        let meta = TxMeta {
            kind: kind::TOPUP,
            org_id,
            key_id: None,
            hold_id: None,
            node_id: None,
            receipt_id: None,
            reference,
            now_ms,
        };
        let avail = account::available(org_id);
        ledger_apply(
            &tx,
            &meta,
            &[(account::TOPUP.to_string(), -a), (avail.clone(), a)],
        )
        .await?
        .map_err(|acct| ControlError::Store(format!("top-up refused by the guard on {acct}")))?;
        tx.execute(
            "INSERT INTO org_credit_totals(org_id, topped_up_total) VALUES ($1, $2) ON CONFLICT (org_id) DO UPDATE SET topped_up_total = org_credit_totals.topped_up_total + excluded.topped_up_total",
            &[&org_id, &a],
        )
        .await
        .map_err(db("credit totals"))?;
        let balance = account_balance(&tx, &avail).await?;
        tx.commit().await.map_err(db("add credits"))?;
        Ok(balance)
    }

    async fn credit_balance(&self, org_id: &str) -> Result<CreditBalance> {
        let mut c = self.client().await?;
        // One snapshot for the three reads.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db("credit balance"))?;
        let (spent, topped): (i64, i64) = tx
            .query_opt(
                "SELECT spent_total, topped_up_total FROM org_credit_totals WHERE org_id = $1",
                &[&org_id],
            )
            .await
            .map_err(db("credit balance"))?
            .map(|r| (r.get(0), r.get(1)))
            .unwrap_or((0, 0));
        let b = CreditBalance {
            available: account_balance(&tx, &account::available(org_id)).await?,
            held: account_balance(&tx, &account::held(org_id)).await?,
            spent_total: spent as u64,
            topped_up_total: topped as u64,
        };
        tx.commit().await.map_err(db("credit balance"))?;
        Ok(b)
    }

    async fn ledger_entries(&self, org_id: &str, limit: u32) -> Result<Vec<LedgerEntry>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT t.id, t.kind, t.org_id, t.key_id, t.hold_id, t.node_id, t.receipt_id, t.reference, t.created_at_ms, r.account, r.amount
                 FROM (SELECT * FROM ledger_tx WHERE org_id = $1 ORDER BY id DESC LIMIT $2) t LEFT JOIN ledger_rows r ON r.tx_id = t.id
                 ORDER BY t.id DESC, r.account",
                &[&org_id, &i64::from(limit)],
            )
            .await
            .map_err(db("ledger"))?;
        Ok(super::sqlite::group_entries(
            rows.iter()
                .map(|r| {
                    (
                        LedgerEntry {
                            tx_id: r.get::<_, i64>(0) as u64,
                            kind: r.get(1),
                            org_id: r.get(2),
                            key_id: r.get(3),
                            hold_id: r.get::<_, Option<Vec<u8>>>(4).map(hex::encode),
                            node_id: r.get(5),
                            receipt_id: r.get::<_, Option<Vec<u8>>>(6).map(hex::encode),
                            reference: r.get(7),
                            created_at_ms: r.get::<_, i64>(8) as u64,
                            rows: Vec::new(),
                        },
                        r.get::<_, Option<String>>(9),
                        r.get::<_, Option<i64>>(10),
                    )
                })
                .collect(),
        ))
    }

    async fn place_hold(&self, h: &Hold) -> Result<()> {
        let a = credits::amount(h.amount)?;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db("place hold"))?;
        // FOR UPDATE: concurrent holds of one key take its rate bucket in turn.
        let key = tx
            .query_opt(
                "SELECT org_id, revoked_at_ms, spend_limit_per_day, rate_per_min, rate_units, rate_at_ms FROM gateway_keys WHERE id = $1 FOR UPDATE",
                &[&h.key_id],
            )
            .await
            .map_err(db("place hold"))?
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, Option<i64>>(1),
                    r.get::<_, Option<i64>>(2),
                    r.get::<_, i64>(3),
                    r.get::<_, Option<i64>>(4).zip(r.get::<_, Option<i64>>(5)),
                )
            });
        let (limit, rate, bucket) = match key {
            Some((org, ..)) if org != h.org_id => {
                return Err(Refusal::NotFound(format!("gateway key {}", h.key_id)).into())
            }
            None => return Err(Refusal::NotFound(format!("gateway key {}", h.key_id)).into()),
            Some((_, Some(_), ..)) => return Err(Refusal::KeyRevoked.into()),
            Some((_, None, limit, rate, b)) => {
                (limit, rate as u32, b.map(|(u, a)| (u as u64, a as u64)))
            }
        };
        // The key's rate, across every replica (a refusal later in this transaction rolls it
        // back).
        let (units, at) =
            credits::take_rate(bucket, rate, h.created_at_ms).map_err(|retry_after_ms| {
                Refusal::RateLimited {
                    rate_per_min: rate,
                    retry_after_ms,
                }
            })?;
        tx.execute(
            "UPDATE gateway_keys SET rate_units = $2, rate_at_ms = $3 WHERE id = $1",
            &[&h.key_id, &ms(units), &ms(at)],
        )
        .await
        .map_err(db("key rate"))?;
        let day = ms(h.created_at_ms / DAY_MS);
        tx.execute("INSERT INTO gateway_key_spend(key_id, day, reserved) VALUES ($1, $2, 0) ON CONFLICT (key_id, day) DO NOTHING", &[&h.key_id, &day])
            .await
            .map_err(db("key spend"))?;
        let n = tx
            .execute(
                "UPDATE gateway_key_spend SET reserved = reserved + $3 WHERE key_id = $1 AND day = $2 AND ($4::BIGINT IS NULL OR reserved + $3 <= $4::BIGINT)",
                &[&h.key_id, &day, &a, &limit],
            )
            .await
            .map_err(db("key spend"))?;
        if n == 0 {
            let used: i64 = tx
                .query_one(
                    "SELECT reserved FROM gateway_key_spend WHERE key_id = $1 AND day = $2",
                    &[&h.key_id, &day],
                )
                .await
                .map_err(db("key spend"))?
                .get(0);
            return Err(Refusal::SpendLimit {
                limit: limit.unwrap_or(0) as u64,
                used: used as u64,
                needed: h.amount,
            }
            .into());
        }
        let meta = TxMeta {
            kind: kind::HOLD,
            org_id: &h.org_id,
            key_id: Some(&h.key_id),
            hold_id: Some(&h.id),
            node_id: None,
            receipt_id: None,
            reference: "",
            now_ms: h.created_at_ms,
        };
        let avail = account::available(&h.org_id);
        if ledger_apply(
            &tx,
            &meta,
            &[(avail.clone(), -a), (account::held(&h.org_id), a)],
        )
        .await?
        .is_err()
        {
            let available = account_balance(&tx, &avail).await?;
            return Err(Refusal::InsufficientCredits {
                available,
                needed: h.amount,
            }
            .into());
        }
        tx.execute(
            "INSERT INTO credit_holds(id, org_id, key_id, amount, day, created_at_ms, state) VALUES ($1,$2,$3,$4,$5,$6,'open')",
            &[&h.id.as_slice(), &h.org_id, &h.key_id, &a, &day, &ms(h.created_at_ms)],
        )
        .await
        .map_err(|e| if is_code(&e, &SqlState::UNIQUE_VIOLATION) { Refusal::Exists(format!("hold {}", hex::encode(h.id))).into() } else { ControlError::store("place hold", e) })?;
        tx.commit().await.map_err(db("place hold"))
    }

    async fn hold(&self, id: &[u8; 16]) -> Result<Option<HoldRecord>> {
        let c = self.client().await?;
        get_hold(&c, id, false).await
    }

    async fn settle_hold(&self, st: &HoldSettlement) -> Result<bool> {
        let charge = credits::amount(st.charge)?;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db("settle hold"))?;
        // The row lock makes a concurrent settle or release of the same hold wait, then see it
        // closed.
        let h = get_hold(&tx, &st.hold_id, true)
            .await?
            .ok_or_else(|| Refusal::NotFound(format!("hold {}", hex::encode(st.hold_id))))?;
        match h.state {
            HoldState::Open => {}
            HoldState::Settled => return Ok(false),
            HoldState::Released | HoldState::Expired => {
                return Err(Refusal::HoldClosed(h.state.as_str()).into())
            }
        }
        if st.charge > h.hold.amount {
            return Err(ControlError::Invalid {
                field: "charge",
                reason: format!(
                    "{} micro-credits is above the hold of {}",
                    st.charge, h.hold.amount
                ),
            });
        }
        let (amount, rest) = (h.hold.amount as i64, (h.hold.amount - st.charge) as i64);
        tx.execute(
            "UPDATE credit_holds SET state = 'settled', charge = $2, node_id = $3, receipt_id = $4, closed_at_ms = $5 WHERE id = $1 AND state = 'open'",
            &[&st.hold_id.as_slice(), &charge, &st.node_id.to_text(), &st.receipt_id.as_slice(), &ms(st.now_ms)],
        )
        .await
        .map_err(|e| if is_code(&e, &SqlState::UNIQUE_VIOLATION) { Refusal::ReceiptCharged.into() } else { ControlError::store("settle hold", e) })?;
        tx.execute(
            "UPDATE gateway_key_spend SET reserved = reserved - $3 WHERE key_id = $1 AND day = $2",
            &[&h.hold.key_id, &ms(h.hold.created_at_ms / DAY_MS), &rest],
        )
        .await
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
        ledger_apply(&tx, &meta, &[(account::held(org), -amount), (account::available(org), rest), (account::earned(&st.node_id), charge)])
            .await?
            .map_err(|acct| ControlError::Store(format!("settlement refused by the guard on {acct}: the ledger is inconsistent, run `b3iq-control admin ledger-check`")))?;
        tx.execute(
            "INSERT INTO org_credit_totals(org_id, spent_total) VALUES ($1, $2) ON CONFLICT (org_id) DO UPDATE SET spent_total = org_credit_totals.spent_total + excluded.spent_total",
            &[org, &charge],
        )
        .await
        .map_err(db("credit totals"))?;
        tx.commit().await.map_err(db("settle hold"))?;
        Ok(true)
    }

    async fn release_hold(&self, id: &[u8; 16], now_ms: u64, expired: bool) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db("release hold"))?;
        let h = get_hold(&tx, id, true)
            .await?
            .ok_or_else(|| Refusal::NotFound(format!("hold {}", hex::encode(id))))?;
        if h.state != HoldState::Open {
            return Ok(false);
        }
        let (state, k) = if expired {
            (HoldState::Expired, kind::EXPIRE)
        } else {
            (HoldState::Released, kind::RELEASE)
        };
        let amount = h.hold.amount as i64;
        tx.execute("UPDATE credit_holds SET state = $2, closed_at_ms = $3 WHERE id = $1 AND state = 'open'", &[&id.as_slice(), &state.as_str(), &ms(now_ms)])
            .await
            .map_err(db("release hold"))?;
        tx.execute(
            "UPDATE gateway_key_spend SET reserved = reserved - $3 WHERE key_id = $1 AND day = $2",
            &[&h.hold.key_id, &ms(h.hold.created_at_ms / DAY_MS), &amount],
        )
        .await
        .map_err(db("key spend"))?;
        let org = &h.hold.org_id;
        let meta = TxMeta {
            kind: k,
            org_id: org,
            key_id: Some(&h.hold.key_id),
            hold_id: Some(id),
            node_id: None,
            receipt_id: None,
            reference: "",
            now_ms,
        };
        ledger_apply(&tx, &meta, &[(account::held(org), -amount), (account::available(org), amount)])
            .await?
            .map_err(|acct| ControlError::Store(format!("release refused by the guard on {acct}: the ledger is inconsistent, run `b3iq-control admin ledger-check`")))?;
        tx.commit().await.map_err(db("release hold"))?;
        Ok(true)
    }

    async fn await_hold_receipt(
        &self,
        hold_id: &[u8; 16],
        request_id: &[u8; 16],
        ticket: &str,
    ) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE credit_holds SET awaiting_request_id = $2, awaiting_ticket = $3 WHERE id = $1 AND state = 'open'",
                &[&hold_id.as_slice(), &request_id.as_slice(), &ticket],
            )
            .await
            .map_err(db("await receipt"))?;
        Ok(n == 1)
    }

    async fn holds_awaiting(
        &self,
        request_ids: &[[u8; 16]],
    ) -> Result<Vec<([u8; 16], [u8; 16], String)>> {
        if request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.client().await?;
        let ids: Vec<&[u8]> = request_ids.iter().map(|r| r.as_slice()).collect();
        let bad = || ControlError::Store("the database holds an invalid hold or request id".into());
        c.query("SELECT awaiting_request_id, id, awaiting_ticket FROM credit_holds WHERE awaiting_request_id = ANY($1) AND state = 'open'", &[&ids])
            .await
            .map_err(db("awaiting holds"))?
            .iter()
            .map(|r| {
                let rid: [u8; 16] = r.get::<_, Vec<u8>>(0).as_slice().try_into().map_err(|_| bad())?;
                let h: [u8; 16] = r.get::<_, Vec<u8>>(1).as_slice().try_into().map_err(|_| bad())?;
                Ok((rid, h, r.get::<_, String>(2)))
            })
            .collect()
    }

    async fn hold_awaiting_ticket(&self, hold_id: &[u8; 16]) -> Result<Option<String>> {
        let c = self.client().await?;
        Ok(c.query_opt(
            "SELECT awaiting_ticket FROM credit_holds WHERE id = $1 AND state = 'open'",
            &[&hold_id.as_slice()],
        )
        .await
        .map_err(db("awaiting hold"))?
        .and_then(|r| r.get::<_, Option<String>>(0)))
    }

    async fn network_receipts_since(
        &self,
        node: &NodeId,
        since_ms: u64,
        limit: u32,
    ) -> Result<Vec<Vec<u8>>> {
        let c = self.client().await?;
        Ok(c.query(
            "SELECT signed FROM receipts WHERE node_id = $1 AND started_at_ms >= $2 AND mode = 'network' ORDER BY started_at_ms LIMIT $3",
            &[&node.to_text(), &ms(since_ms), &i64::from(limit)],
        )
        .await
        .map_err(db("network receipts"))?
        .iter()
        .map(|r| r.get::<_, Vec<u8>>(0))
        .collect())
    }

    async fn apply_reputation(
        &self,
        events: Vec<b3iq_core::reputation::ReputationEvent>,
        params: b3iq_core::reputation::ReputationParams,
    ) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db("reputation"))?;
        for (node, evs) in super::reputation_groups(events) {
            let id = node.to_text();
            // FOR UPDATE: replicas flushing at once add up instead of overwriting.
            let stored: Option<String> = tx
                .query_opt(
                    "SELECT state FROM node_reputation WHERE node_id = $1 FOR UPDATE",
                    &[&id],
                )
                .await
                .map_err(db("reputation"))?
                .map(|r| r.get(0));
            let r = super::apply_reputation_events(node, stored.as_deref(), &evs, &params)?;
            let state =
                serde_json::to_string(&r).map_err(|e| ControlError::store("reputation", e))?;
            let at = evs.last().map_or(0, |e| e.at_ms);
            tx.execute(
                "INSERT INTO node_reputation(node_id, state, updated_at_ms) VALUES ($1, $2, $3) ON CONFLICT (node_id) DO UPDATE SET state = excluded.state, updated_at_ms = excluded.updated_at_ms",
                &[&id, &state, &ms(at)],
            )
            .await
            .map_err(db("reputation"))?;
        }
        tx.commit().await.map_err(db("reputation"))
    }

    async fn reputations(&self) -> Result<Vec<b3iq_core::reputation::Reputation>> {
        let c = self.client().await?;
        c.query(
            "SELECT node_id, state FROM node_reputation ORDER BY node_id",
            &[],
        )
        .await
        .map_err(db("reputation"))?
        .iter()
        .map(|r| {
            let (id, state): (String, String) = (r.get(0), r.get(1));
            serde_json::from_str(&state).map_err(|e| {
                ControlError::Store(format!("the stored reputation of {id} is unreadable: {e}"))
            })
        })
        .collect()
    }

    async fn open_holds_before(&self, before_ms: u64, limit: u32) -> Result<Vec<[u8; 16]>> {
        let c = self.client().await?;
        c.query("SELECT id FROM credit_holds WHERE state = 'open' AND created_at_ms <= $1 ORDER BY created_at_ms LIMIT $2", &[&ms(before_ms), &i64::from(limit)])
            .await
            .map_err(db("stale holds"))?
            .iter()
            .map(|r| r.get::<_, Vec<u8>>(0).as_slice().try_into().map_err(|_| ControlError::Store("the database holds an invalid hold id".into())))
            .collect()
    }

    async fn node_earnings(&self, node: &NodeId) -> Result<u64> {
        let c = self.client().await?;
        account_balance(&c, &account::earned(node)).await
    }

    async fn ledger_check(&self) -> Result<LedgerCheck> {
        let mut c = self.client().await?;
        // One snapshot: every read sees the same committed state.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db("ledger check"))?;
        let q = |sql: String| {
            let tx = &tx;
            async move { tx.query(&sql, &[]).await.map_err(db("ledger check")) }
        };
        let pairs = |rows: Vec<Row>| -> Result<Vec<(String, i128)>> {
            rows.iter()
                .map(|r| Ok((r.get::<_, String>(0), sum_col(r, 1)?)))
                .collect()
        };
        let mut input = CheckInput {
            open_held: pairs(q("SELECT org_id, SUM(amount)::TEXT FROM credit_holds WHERE state = 'open' GROUP BY org_id".into()).await?)?,
            settled_by_org: pairs(q("SELECT org_id, SUM(charge)::TEXT FROM credit_holds WHERE state = 'settled' GROUP BY org_id".into()).await?)?,
            settled_by_node: pairs(q("SELECT node_id, SUM(charge)::TEXT FROM credit_holds WHERE state = 'settled' GROUP BY node_id".into()).await?)?,
            topups_by_org: pairs(
                q(format!(
                    "SELECT t.org_id, SUM(r.amount)::TEXT FROM ledger_tx t JOIN ledger_rows r ON r.tx_id = t.id WHERE t.kind = 'topup' AND r.account <> '{}' GROUP BY t.org_id",
                    account::TOPUP
                ))
                .await?,
            )?,
            accounts: q("SELECT account, balance FROM ledger_accounts".into()).await?.iter().map(|r| (r.get(0), r.get(1))).collect(),
            ..CheckInput::default()
        };
        input.row_sums = q(
            "SELECT account, SUM(amount)::TEXT, COUNT(*) FROM ledger_rows GROUP BY account".into(),
        )
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.get::<_, String>(0),
                sum_col(r, 1)?,
                r.get::<_, i64>(2) as u64,
            ))
        })
        .collect::<Result<_>>()?;
        input.totals =
            q("SELECT org_id, spent_total, topped_up_total FROM org_credit_totals".into())
                .await?
                .iter()
                .map(|r| {
                    (
                        r.get::<_, String>(0),
                        i128::from(r.get::<_, i64>(1)),
                        i128::from(r.get::<_, i64>(2)),
                    )
                })
                .collect();
        input.unbalanced = q("SELECT tx_id FROM ledger_rows GROUP BY tx_id HAVING SUM(amount) <> 0 ORDER BY tx_id LIMIT 100".into()).await?.iter().map(|r| r.get::<_, i64>(0) as u64).collect();
        input.transactions = q("SELECT COUNT(*) FROM ledger_tx".into())
            .await?
            .first()
            .map(|r| r.get::<_, i64>(0) as u64)
            .unwrap_or(0);
        tx.commit().await.map_err(db("ledger check"))?;
        Ok(input.check())
    }

    // ---- gateway replicas -----------------------------------------------------------------

    async fn put_tunnel_session(&self, t: &TunnelSession) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO tunnel_sessions(node_id, replica_url, epoch, max_concurrent, models, updated_at_ms) VALUES ($1,$2,$3,$4,$5,$6)
             ON CONFLICT (node_id) DO UPDATE SET replica_url = excluded.replica_url, epoch = excluded.epoch, max_concurrent = excluded.max_concurrent, models = excluded.models, updated_at_ms = excluded.updated_at_ms",
            &[&t.node_id.to_text(), &t.replica_url, &ms(t.epoch), &i64::from(t.max_concurrent), &t.models.to_string(), &ms(t.updated_at_ms)],
        )
        .await
        .map_err(db("tunnel session"))?;
        Ok(())
    }

    async fn drop_tunnel_session(
        &self,
        node: &NodeId,
        replica_url: &str,
        epoch: u64,
    ) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "DELETE FROM tunnel_sessions WHERE node_id = $1 AND replica_url = $2 AND epoch = $3",
            &[&node.to_text(), &replica_url, &ms(epoch)],
        )
        .await
        .map_err(db("tunnel session"))?;
        Ok(())
    }

    async fn put_verdict(&self, v: &VerdictRow) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO verification_verdicts(verdict_hash, verifier, subject, request_id, receipt_id, outcome, metric, signed, created_at_ms, canary) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) ON CONFLICT (verdict_hash) DO NOTHING",
                &[&&v.verdict_hash[..], &v.verifier.to_text(), &v.subject.to_text(), &&v.request_id[..], &&v.receipt_id[..], &v.outcome, &v.metric, &v.signed, &ms(v.created_at_ms), &v.canary],
            )
            .await
            .map_err(db("verdict"))?;
        Ok(n == 1)
    }

    async fn verdicts(&self, subject: &NodeId) -> Result<Vec<VerdictRow>> {
        let c = self.client().await?;
        c.query("SELECT verdict_hash, verifier, request_id, receipt_id, outcome, metric, signed, created_at_ms, canary FROM verification_verdicts WHERE subject = $1 ORDER BY created_at_ms, verdict_hash", &[&subject.to_text()])
            .await
            .map_err(db("verdicts"))?
            .iter()
            .map(|r| {
                let verifier: &str = r.get(1);
                Ok(VerdictRow {
                    verdict_hash: fixed(r.get::<_, &[u8]>(0), "verification_verdicts.verdict_hash")?,
                    verifier: NodeId::parse(verifier).map_err(|_| ControlError::Store(format!("the database holds an invalid node id {verifier:?} in verification_verdicts")))?,
                    subject: *subject,
                    request_id: fixed(r.get::<_, &[u8]>(2), "verification_verdicts.request_id")?,
                    receipt_id: fixed(r.get::<_, &[u8]>(3), "verification_verdicts.receipt_id")?,
                    outcome: r.get(4),
                    metric: r.get(5),
                    signed: r.get(6),
                    created_at_ms: r.get::<_, i64>(7) as u64,
                    canary: r.get(8),
                })
            })
            .collect()
    }

    async fn open_dispute(&self, d: &DisputeRow) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                &format!("INSERT INTO disputes({DISPUTE_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) ON CONFLICT (evidence_hash) DO NOTHING"),
                &[&&d.evidence_hash[..], &d.kind, &d.subject.to_text(), &&d.request_id[..], &d.status, &d.chain_tx, &ms(d.opened_at_ms), &d.evidence, &d.epoch_id.map(ms), &d.chain_dispute_id, &d.vote_tx, &d.slash_tx, &ms(d.updated_at_ms)],
            )
            .await
            .map_err(db("dispute"))?;
        Ok(n == 1)
    }

    async fn disputes(&self, subject: &NodeId) -> Result<Vec<DisputeRow>> {
        let c = self.client().await?;
        let rows = c.query(&format!("SELECT {DISPUTE_COLUMNS} FROM disputes WHERE subject = $1 ORDER BY opened_at_ms, evidence_hash"), &[&subject.to_text()]).await.map_err(db("disputes"))?;
        rows.iter().map(dispute_from_row).collect()
    }

    async fn dispute(&self, evidence_hash: &[u8; 32]) -> Result<Option<DisputeRow>> {
        let c = self.client().await?;
        let rows = c.query(&format!("SELECT {DISPUTE_COLUMNS} FROM disputes WHERE evidence_hash = $1"), &[&&evidence_hash[..]]).await.map_err(db("dispute"))?;
        rows.iter().map(dispute_from_row).next().transpose()
    }

    async fn update_dispute(&self, d: &DisputeRow) -> Result<()> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE disputes SET status = $2, chain_tx = $3, epoch_id = $4, chain_dispute_id = $5, vote_tx = $6, slash_tx = $7, updated_at_ms = $8 WHERE evidence_hash = $1",
                &[&&d.evidence_hash[..], &d.status, &d.chain_tx, &d.epoch_id.map(ms), &d.chain_dispute_id, &d.vote_tx, &d.slash_tx, &ms(d.updated_at_ms)],
            )
            .await
            .map_err(db("update dispute"))?;
        if n == 0 {
            return Err(Refusal::NotFound(format!("dispute {}", hex::encode(d.evidence_hash))).into());
        }
        Ok(())
    }

    async fn list_disputes(&self, active: bool, limit: u32) -> Result<Vec<DisputeRow>> {
        let c = self.client().await?;
        let statuses: Vec<&str> = if active { DISPUTE_ACTIVE.to_vec() } else { Vec::new() };
        let rows = c
            .query(&format!("SELECT {DISPUTE_COLUMNS} FROM disputes WHERE (NOT $1 OR status = ANY($2)) ORDER BY opened_at_ms, evidence_hash LIMIT $3"), &[&active, &statuses, &i64::from(limit)])
            .await
            .map_err(db("disputes"))?;
        rows.iter().map(dispute_from_row).collect()
    }

    async fn tunnel_sessions(&self, since_ms: u64) -> Result<Vec<TunnelSession>> {
        let c = self.client().await?;
        c.query("SELECT node_id, replica_url, epoch, max_concurrent, models, updated_at_ms FROM tunnel_sessions WHERE updated_at_ms >= $1 ORDER BY node_id", &[&ms(since_ms)])
            .await
            .map_err(db("tunnel sessions"))?
            .iter()
            .map(|r| {
                let n: &str = r.get(0);
                Ok(TunnelSession {
                    node_id: NodeId::parse(n).map_err(|_| ControlError::Store(format!("the database holds an invalid node id {n:?} in tunnel_sessions")))?,
                    replica_url: r.get(1),
                    epoch: r.get::<_, i64>(2) as u64,
                    max_concurrent: u32::try_from(r.get::<_, i64>(3)).unwrap_or(0),
                    models: serde_json::from_str(r.get::<_, &str>(4)).map_err(|e| ControlError::store("tunnel session models", e))?,
                    updated_at_ms: r.get::<_, i64>(5) as u64,
                })
            })
            .collect()
    }
}

fn epoch_from_row(r: &Row) -> EpochRow {
    EpochRow {
        epoch_id: r.get::<_, i64>(0) as u64,
        start_ms: r.get::<_, i64>(1) as u64,
        end_ms: r.get::<_, i64>(2) as u64,
        receipt_count: r.get::<_, i64>(3) as u64,
        closed_at_ms: r.get::<_, i64>(4) as u64,
        claim_file: r.get(5),
        tx_hash: r.get(6),
        posted_at: r.get::<_, Option<i64>>(7).map(|v| v as u64),
    }
}

/// Reads a [`DISPUTE_COLUMNS`] row.
fn dispute_from_row(r: &Row) -> Result<DisputeRow> {
    let subject: &str = r.get(2);
    Ok(DisputeRow {
        evidence_hash: fixed(r.get::<_, &[u8]>(0), "disputes.evidence_hash")?,
        kind: r.get(1),
        subject: NodeId::parse(subject).map_err(|_| ControlError::Store(format!("the database holds an invalid node id {subject:?} in disputes")))?,
        request_id: fixed(r.get::<_, &[u8]>(3), "disputes.request_id")?,
        status: r.get(4),
        chain_tx: r.get(5),
        opened_at_ms: r.get::<_, i64>(6) as u64,
        evidence: r.get(7),
        epoch_id: r.get::<_, Option<i64>>(8).map(|v| v as u64),
        chain_dispute_id: r.get(9),
        vote_tx: r.get(10),
        slash_tx: r.get(11),
        updated_at_ms: r.get::<_, i64>(12) as u64,
    })
}
