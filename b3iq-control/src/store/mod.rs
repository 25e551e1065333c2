//! The control plane's state behind one trait, [`ControlStore`], with two backends:
//! [`sqlite::SqliteStore`] (rusqlite, one file, the embedded default) and
//! [`postgres::PostgresStore`] (tokio-postgres, for more than one replica). Each has its own
//! numbered migrations; `tests/store.rs` runs one conformance suite against both.
//!
//! Every rule that must hold under concurrency is one statement or one transaction in the
//! backend, never a read followed by a write in the caller:
//! * a challenge is used at most once and only before it expires;
//! * an enrollment token is used at most once, before it expires, for its own organisation;
//! * a heartbeat is stored only when its sequence is above the last one stored for that node
//!   (`UPDATE ... WHERE last_sequence < $seq`), and only for an active, unexpired enrollment.
//!
//! Times are unix milliseconds, passed in by the caller (the store never reads a clock).

pub mod credits;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use b3iq_core::heartbeat::HealthStatus;
use b3iq_core::{NodeId, NodePublicKey};

use crate::error::{ControlError, Result};
use credits::{
    CreditBalance, GatewayKey, Hold, HoldRecord, HoldSettlement, LedgerCheck, LedgerEntry,
};

/// An organisation: it owns nodes, operators and enrollment tokens.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Org {
    /// `org_` + 16 hex.
    pub id: String,
    /// Display name (unique).
    pub name: String,
    /// Creation time, unix ms.
    pub created_at_ms: u64,
}

/// An operator account (signs in to the admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// `op_` + 16 hex.
    pub id: String,
    /// Its organisation.
    pub org_id: String,
    /// Sign-in name (unique across the control plane).
    pub username: String,
    /// argon2id PHC string.
    pub password_phc: String,
    /// Creation time, unix ms.
    pub created_at_ms: u64,
}

/// A stored enrollment token: only its sha256 is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentTokenRow {
    /// `etk_` + 16 hex (shown to operators; not a secret).
    pub id: String,
    /// The organisation a node enrolled with it joins.
    pub org_id: String,
    /// sha256 of the token text.
    pub token_hash: [u8; 32],
    /// Creation time, unix ms.
    pub created_at_ms: u64,
    /// The token is refused from this time on, unix ms.
    pub expires_at_ms: u64,
}

/// A single-use enrollment challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRow {
    /// Challenge id.
    pub id: [u8; 16],
    /// The nonce the proof must sign.
    pub nonce: [u8; 32],
    /// Issue time, unix ms.
    pub issued_at_ms: u64,
    /// Refused from this time on, unix ms.
    pub expires_at_ms: u64,
}

/// Where a node stands with the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Enrolled and allowed to talk to the control plane.
    Active,
    /// Temporarily refused (an operator can resume it).
    Suspended,
    /// Permanently refused: it can never enroll again with the same key.
    Revoked,
}

impl NodeStatus {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Active => "active",
            NodeStatus::Suspended => "suspended",
            NodeStatus::Revoked => "revoked",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<NodeStatus> {
        [
            NodeStatus::Active,
            NodeStatus::Suspended,
            NodeStatus::Revoked,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// The latest heartbeat state kept per node (the signed heartbeat's public fields).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LastHeartbeat {
    /// Its sequence.
    pub sequence: u64,
    /// The node's send time, unix ms.
    pub sent_at_ms: u64,
    /// When the control plane stored it, unix ms.
    pub received_at_ms: u64,
    /// Health.
    pub health: HealthStatus,
    /// The heartbeat body as JSON (counts, mode, inventory digests): public fields only.
    pub body: serde_json::Value,
}

/// A node as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeRow {
    /// Node id.
    pub node_id: NodeId,
    /// Its public key (the node id derives from it).
    pub public_key: NodePublicKey,
    /// Owning organisation.
    pub org_id: String,
    /// Status.
    pub status: NodeStatus,
    /// Why it was suspended or revoked (an operator's short reason), empty when active.
    pub status_reason: String,
    /// First enrollment, unix ms.
    pub enrolled_at_ms: u64,
    /// The enrollment ends here unless renewed, unix ms.
    pub expires_at_ms: u64,
    /// The latest stored heartbeat.
    pub last_heartbeat: Option<LastHeartbeat>,
    /// Heartbeats refused for a replayed or out-of-order sequence, or a clock outside the
    /// allowed skew (forged signatures cannot be attributed to a node: they are counted in the
    /// control plane's metrics only).
    pub refused_heartbeats: u64,
    /// The job-signing key the node pins (its jobs are signed with it). `None` only for a row
    /// enrolled before job keys were recorded, until the first key is adopted.
    pub job_key: Option<NodePublicKey>,
    /// The key a queued `rotate_issuer_key` job moves the node to, until the node reports it
    /// (jobs queued meanwhile are signed with it: the node runs them after the rotation).
    pub job_key_next: Option<NodePublicKey>,
}

/// The last registration request accepted from a node (`registration_requests`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RegistrationRequestRow {
    /// The node's send time, unix ms (a request must be newer to be accepted).
    pub sent_at_ms: u64,
    /// The operator wallet named, `0x` + 40 lowercase hex.
    pub operator: String,
    /// When the control plane accepted it, unix ms.
    pub accepted_at_ms: u64,
}

/// A job-signing key the control plane has used (the secret stays in the home's files).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobKeyRow {
    /// Its public key.
    pub public_key: NodePublicKey,
    /// When it was added, unix ms. The newest key is the current one: new enrollments pin it.
    pub created_at_ms: u64,
}

/// Everything an accepted enrollment writes, in one transaction.
#[derive(Debug, Clone)]
pub struct EnrollCommit {
    /// The challenge answered (marked used).
    pub challenge_id: [u8; 16],
    /// sha256 of the enrollment token presented (marked used).
    pub token_hash: [u8; 32],
    /// The proven node id.
    pub node_id: NodeId,
    /// Its public key.
    pub public_key: NodePublicKey,
    /// Now, unix ms.
    pub now_ms: u64,
    /// When the new enrollment ends, unix ms.
    pub expires_at_ms: u64,
    /// The current job key, which the node pins from this enrollment on.
    pub job_key: NodePublicKey,
}

/// Why an enrollment, a heartbeat or an admin change was refused by the store's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The challenge does not exist, was used, or has expired.
    #[error("the enrollment challenge was already used or has expired; request a new challenge")]
    ChallengeUsed,
    /// The token is unknown.
    #[error("unknown enrollment token; ask an operator for a new one (`b3iq-control admin enrollment-token`)")]
    TokenUnknown,
    /// The token was used before.
    #[error("this enrollment token was already used; each token enrolls one node once")]
    TokenUsed,
    /// The token expired.
    #[error("this enrollment token has expired; ask an operator for a new one")]
    TokenExpired,
    /// The node is enrolled in another organisation.
    #[error("this node is enrolled in another organisation; it must be unenrolled there first")]
    OtherOrg,
    /// The node is not enrolled here.
    #[error("this node is not enrolled with this control plane; run `b3iqd enroll`")]
    UnknownNode,
    /// The node was suspended.
    #[error("this node is suspended by an operator ({0}); ask the operator to resume it")]
    Suspended(String),
    /// The node was revoked.
    #[error("this node was revoked by an operator ({0}); it cannot enroll or report again with this key")]
    Revoked(String),
    /// The enrollment expired without renewal.
    #[error("this node's enrollment expired; enroll again with a new token")]
    EnrollmentExpired,
    /// A heartbeat sequence at or below the last stored one.
    #[error(
        "heartbeat sequence {got} is not above the last accepted {last} (replayed or out of order)"
    )]
    StaleSequence {
        /// The sequence sent.
        got: u64,
        /// The last sequence stored.
        last: u64,
    },
    /// A signed request no newer than the last one accepted from the node.
    #[error("this {what} request (sent at {got} ms) is not newer than the last accepted one (sent at {last} ms): replayed or out of order; sign a new one")]
    Replayed {
        /// Which request.
        what: &'static str,
        /// Its send time, unix ms.
        got: u64,
        /// The last accepted send time, unix ms.
        last: u64,
    },
    /// The node is enrolled but its latest heartbeat is not in network mode.
    #[error("this node is not in network mode (its latest heartbeat says {0}); turn it on with `b3iqd network on` and wait for a heartbeat")]
    NotNetworkMode(String),
    /// A name already taken.
    #[error("{0} already exists")]
    Exists(String),
    /// An org, operator or token id that does not exist.
    #[error("{0} not found")]
    NotFound(String),

    // ---- gateway keys and credits ---------------------------------------------------------
    /// The organisation's available credits do not cover the hold.
    #[error("insufficient credits: this request may cost up to {needed} micro-credits and the organisation has {available} available; add credits (`b3iq-control admin add-credits`) or lower max_tokens")]
    InsufficientCredits {
        /// Micro-credits available now.
        available: u64,
        /// The hold asked for.
        needed: u64,
    },
    /// The key's spend limit for the UTC day would be passed.
    #[error("this gateway key's spend limit of {limit} micro-credits per UTC day is reached ({used} settled or held today, {needed} more asked); wait for the next UTC day or use a key with a higher limit")]
    SpendLimit {
        /// The key's limit per day.
        limit: u64,
        /// Settled charges plus open holds of the day.
        used: u64,
        /// The hold asked for.
        needed: u64,
    },
    /// The key sent more requests per minute than its rate allows.
    #[error("rate limit reached for this gateway key ({rate_per_min} requests per minute); retry in {retry_after_ms} ms")]
    RateLimited {
        /// The key's rate.
        rate_per_min: u32,
        /// When the next request is allowed, in ms from now.
        retry_after_ms: u64,
    },
    /// The gateway key was revoked.
    #[error(
        "this gateway key was revoked; create a new one (`b3iq-control admin gateway-key create`)"
    )]
    KeyRevoked,
    /// The hold was released or expired before this settlement: nothing was charged.
    #[error("the hold was {0} before it was settled; nothing was charged")]
    HoldClosed(&'static str),
    /// The receipt already settled another hold (each receipt is charged once).
    #[error("this receipt already settled another hold; a receipt is charged once")]
    ReceiptCharged,
}

/// A heartbeat to store (already verified: signature, node id, clock skew).
#[derive(Debug, Clone)]
pub struct HeartbeatCommit {
    /// The sending node.
    pub node_id: NodeId,
    /// Its sequence.
    pub sequence: u64,
    /// The node's send time, unix ms.
    pub sent_at_ms: u64,
    /// Now, unix ms.
    pub received_at_ms: u64,
    /// Health.
    pub health: HealthStatus,
    /// The heartbeat body as JSON.
    pub body: serde_json::Value,
}

/// A signed job as the control plane keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    /// Job id.
    pub job_id: [u8; 16],
    /// The node it is for (the signed audience).
    pub node_id: NodeId,
    /// The node's organisation.
    pub org_id: String,
    /// The control plane's job sequence (one counter for all nodes: each node sees it increase).
    pub sequence: u64,
    /// Kind name (`run_benchmark`, ...).
    pub kind: String,
    /// The b3iq-core signed job, encoded.
    pub envelope: Vec<u8>,
    /// The operator who queued it.
    pub created_by: String,
    /// Queue time, unix ms.
    pub created_at_ms: u64,
    /// The signed expiry, unix ms.
    pub expires_at_ms: u64,
    /// First delivery to the node, unix ms.
    pub delivered_at_ms: Option<u64>,
    /// How it ended, as the node reported (`succeeded`, `failed`, `refused`,
    /// `rejected_by_owner`, `expired`).
    pub outcome: Option<String>,
    /// The node's error code.
    pub code: Option<String>,
    /// What it produced (JSON of the protocol's `JobResultData`).
    pub result: Option<serde_json::Value>,
    /// When the node's report arrived, unix ms.
    pub finished_at_ms: Option<u64>,
}

/// Makes the signed job for a reserved sequence (the store calls it inside the transaction that
/// reserves the sequence, so jobs are stored in sequence order).
pub type JobSigner = Box<dyn FnOnce(u64) -> Result<JobRow> + Send>;

/// Most jobs listed for a node.
pub const MAX_JOBS_LISTED: u32 = 100;

/// A verified receipt to store (the signed bytes and the columns usage is summed from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRow {
    /// Receipt id (blake3 of the signed message).
    pub receipt_id: [u8; 32],
    /// The node that signed it.
    pub node_id: NodeId,
    /// Model id.
    pub model_id: String,
    /// Operating mode named in the receipt.
    pub mode: String,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
    /// Price, micro-credits.
    pub price_micro_credits: u64,
    /// Start time, unix ms.
    pub started_at_ms: u64,
    /// The b3iq-core signed receipt, encoded.
    pub signed: Vec<u8>,
}

/// Usage summed per node, model and UTC day.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageDay {
    /// Days since 1970-01-01 (UTC) of the receipts' start times.
    pub day: u64,
    /// Model id.
    pub model_id: String,
    /// Receipts.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Price, micro-credits.
    pub price_micro_credits: u64,
}

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;

/// Usage of a batch of newly stored receipts, summed per (node, model, UTC day), so a backend
/// writes one `usage_daily` upsert per group instead of one per receipt.
#[derive(Debug, Default)]
pub(crate) struct UsageSums(pub(crate) std::collections::BTreeMap<(String, String, u64), UsageDay>);

impl UsageSums {
    /// Counts one stored receipt of `node` (its id as text).
    pub(crate) fn add(&mut self, node: String, r: &ReceiptRow) {
        let day = r.started_at_ms / DAY_MS;
        let u = self
            .0
            .entry((node, r.model_id.clone(), day))
            .or_insert_with(|| UsageDay {
                day,
                model_id: r.model_id.clone(),
                requests: 0,
                prompt_tokens: 0,
                completion_tokens: 0,
                price_micro_credits: 0,
            });
        u.requests += 1;
        u.prompt_tokens += u64::from(r.prompt_tokens);
        u.completion_tokens += u64::from(r.completion_tokens);
        u.price_micro_credits = u.price_micro_credits.saturating_add(r.price_micro_credits);
    }
}

/// Heartbeat history kept per node, for uptime: rows older than this are deleted as new ones
/// arrive (7 days).
pub const HEARTBEAT_HISTORY_MS: u64 = 7 * 24 * 3_600_000;

/// Most live (unused, unexpired) challenges: past it, new challenges are refused (429), so
/// strangers cannot grow the table.
pub const MAX_LIVE_CHALLENGES: u64 = 10_000;

/// Maps a backend error to `Store` naming the operation.
pub(crate) fn db<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> crate::ControlError {
    move |e| crate::ControlError::store(what, e)
}

/// Milliseconds as the databases' signed 64-bit integer; values past `i64::MAX` are refused by
/// the callers' checked arithmetic long before, so saturating cannot change a comparison that
/// matters.
/// Events grouped per node, each group in time order (the order [`ControlStore::apply_reputation`]
/// applies them in).
pub(crate) fn reputation_groups(
    mut events: Vec<b3iq_core::reputation::ReputationEvent>,
) -> Vec<(NodeId, Vec<b3iq_core::reputation::ReputationEvent>)> {
    events.sort_by_key(|e| (e.node_id, e.at_ms));
    let mut out: Vec<(NodeId, Vec<b3iq_core::reputation::ReputationEvent>)> = Vec::new();
    for e in events {
        match out.last_mut() {
            Some((n, v)) if *n == e.node_id => v.push(e),
            _ => out.push((e.node_id, vec![e])),
        }
    }
    out
}

/// Applies one node's events (in time order) to its stored state, or to a new one.
pub(crate) fn apply_reputation_events(
    node: NodeId,
    stored: Option<&str>,
    events: &[b3iq_core::reputation::ReputationEvent],
    params: &b3iq_core::reputation::ReputationParams,
) -> Result<b3iq_core::reputation::Reputation> {
    let mut r = match stored {
        Some(s) => serde_json::from_str(s).map_err(|e| {
            ControlError::Store(format!(
                "the stored reputation of {node} is unreadable: {e}"
            ))
        })?,
        None => b3iq_core::reputation::Reputation::new(node, events.first().map_or(0, |e| e.at_ms)),
    };
    for e in events {
        r.apply(e, params).map_err(|e| ControlError::Invalid {
            field: "reputation event",
            reason: e.to_string(),
        })?;
    }
    Ok(r)
}

/// A fixed-size byte column read back (an id or a hash).
pub(crate) fn fixed<const N: usize>(b: &[u8], what: &str) -> Result<[u8; N]> {
    b.try_into().map_err(|_| {
        crate::ControlError::Store(format!(
            "the database holds an invalid {what} ({} bytes, expected {N})",
            b.len()
        ))
    })
}

pub(crate) fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The `nodes` columns both backends read into a [`NodeRow`].
pub(crate) const NODE_COLUMNS: &str = "node_id, public_key, org_id, status, status_reason, enrolled_at_ms, expires_at_ms, last_sequence, last_sent_at_ms, last_received_at_ms, last_health, last_body, refused_heartbeats, job_key, job_key_next";

/// The `jobs` columns both backends read into a [`JobRow`].
pub(crate) const JOB_COLUMNS: &str = "job_id, node_id, org_id, sequence, kind, envelope, created_by, created_at_ms, expires_at_ms, delivered_at_ms, outcome, code, result, finished_at_ms";

/// The control plane's store. Both backends pass `tests/store.rs`.
///
/// # Errors
/// Every method returns [`crate::ControlError::Store`] for a database failure, and
/// [`crate::ControlError::Refused`] with a [`Refusal`] where a rule refuses the change.
#[async_trait]
pub trait ControlStore: Send + Sync + 'static {
    /// Backend name (`sqlite`, `postgres`), for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Creates an organisation; `Refusal::Exists` when the name is taken.
    async fn create_org(&self, org: &Org) -> Result<()>;
    /// An organisation by id or by name.
    async fn org(&self, id_or_name: &str) -> Result<Option<Org>>;
    /// Creates an operator; `Refusal::Exists` when the user name is taken,
    /// `Refusal::NotFound` when the organisation does not exist.
    async fn create_operator(&self, op: &Operator) -> Result<()>;
    /// An operator by user name.
    async fn operator_by_username(&self, username: &str) -> Result<Option<Operator>>;
    /// Stores an operator session (sha256 of its secret), expiring at `expires_at_ms`.
    async fn create_session(
        &self,
        token_hash: &[u8; 32],
        operator_id: &str,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<()>;
    /// The operator of a live session.
    async fn session_operator(
        &self,
        token_hash: &[u8; 32],
        now_ms: u64,
    ) -> Result<Option<Operator>>;
    /// Ends a session.
    async fn delete_session(&self, token_hash: &[u8; 32]) -> Result<()>;

    /// Stores a new enrollment token; `Refusal::NotFound` when the organisation does not exist.
    async fn create_enrollment_token(&self, t: &EnrollmentTokenRow) -> Result<()>;

    /// Stores a challenge. Deletes expired ones first; `Ok(false)` when
    /// [`MAX_LIVE_CHALLENGES`] are live (the caller answers 429).
    async fn create_challenge(&self, c: &ChallengeRow, now_ms: u64) -> Result<bool>;
    /// A challenge that is unused and unexpired at `now_ms`.
    async fn live_challenge(&self, id: &[u8; 16], now_ms: u64) -> Result<Option<ChallengeRow>>;
    /// Marks a live challenge used (one statement: of concurrent callers, one wins). `false`
    /// when it is unknown, used or expired.
    async fn use_challenge(&self, id: &[u8; 16], now_ms: u64) -> Result<bool>;
    /// In one transaction: uses the challenge and the token, and creates or re-enrolls the
    /// node (a re-enrollment keeps a suspension; a revoked node or one of another organisation
    /// is refused). Returns the node.
    async fn enroll(&self, c: &EnrollCommit) -> Result<NodeRow>;

    /// In one transaction: uses the challenge and extends an active, unexpired enrollment of
    /// `node` (whose key must be `key`) to `expires_at_ms`. A suspended, revoked, expired or
    /// unknown node is refused (an expired one must enroll again with a token).
    async fn renew(
        &self,
        challenge_id: &[u8; 16],
        node: &NodeId,
        key: &NodePublicKey,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<NodeRow>;

    /// A node.
    async fn node(&self, id: &NodeId) -> Result<Option<NodeRow>>;
    /// The nodes of an organisation, by enrollment time.
    async fn nodes(&self, org_id: &str) -> Result<Vec<NodeRow>>;
    /// Sets a node's status (with a short reason); `Refusal::UnknownNode` when absent. A revoked
    /// node stays revoked.
    async fn set_node_status(
        &self,
        id: &NodeId,
        org_id: &str,
        status: NodeStatus,
        reason: &str,
    ) -> Result<()>;

    /// Stores a heartbeat when its sequence is above the node's last one and the node is
    /// active and unexpired; records it in the history (pruned past
    /// [`HEARTBEAT_HISTORY_MS`]). On a stale sequence, counts the refusal on the node.
    async fn record_heartbeat(&self, h: &HeartbeatCommit) -> Result<()>;
    /// Counts a refused heartbeat on the node (clock skew); no-op for an unknown node.
    async fn count_refused_heartbeat(&self, id: &NodeId) -> Result<()>;
    /// Heartbeats stored for a node at or after `since_ms` (for uptime).
    async fn heartbeat_count(&self, id: &NodeId, since_ms: u64) -> Result<u64>;

    /// In one transaction: reserves the next job sequence, calls `sign` with it and stores the
    /// row, so a job with a higher sequence is never visible before a lower one.
    async fn queue_job(&self, sign: JobSigner) -> Result<JobRow>;
    /// The node's jobs not yet reported, unexpired at `now_ms`, with a sequence above
    /// `after_sequence`, ascending, at most `limit`; marks each delivered.
    async fn pending_jobs(
        &self,
        node: &NodeId,
        after_sequence: u64,
        now_ms: u64,
        limit: u32,
    ) -> Result<Vec<JobRow>>;
    /// Stores the node's report of a job, once: `Ok(true)` when stored, `Ok(false)` when a
    /// report was already stored (a retry); `Refusal::NotFound` when the job is not this node's.
    async fn finish_job(
        &self,
        node: &NodeId,
        job_id: &[u8; 16],
        outcome: &str,
        code: Option<&str>,
        result: &serde_json::Value,
        now_ms: u64,
    ) -> Result<bool>;
    /// A node's jobs, newest first, at most [`MAX_JOBS_LISTED`].
    async fn jobs(&self, node: &NodeId) -> Result<Vec<JobRow>>;
    /// One job of a node.
    async fn job(&self, node: &NodeId, job_id: &[u8; 16]) -> Result<Option<JobRow>>;

    /// The job keys, oldest first (the last is the current one).
    async fn job_keys(&self) -> Result<Vec<JobKeyRow>>;
    /// When no job key is recorded yet (a new store, or one from before job keys were
    /// recorded): records `key` as the first, and as the pinned key of every node without one.
    /// Does nothing otherwise. Returns whether it recorded `key`.
    async fn adopt_job_key(&self, key: &NodePublicKey, now_ms: u64) -> Result<bool>;
    /// Records a new current job key (`Refusal::Exists` when it was used before).
    async fn add_job_key(&self, key: &NodePublicKey, now_ms: u64) -> Result<()>;
    /// Active, unexpired nodes whose pinned key is not `key` (those a rotation must reach).
    async fn nodes_not_pinning(&self, key: &NodePublicKey, now_ms: u64) -> Result<Vec<NodeRow>>;
    /// Sets the key a queued rotation moves the node to (`None`: no rotation pending).
    async fn set_job_key_next(&self, node: &NodeId, next: Option<&NodePublicKey>) -> Result<()>;
    /// The node reported a rotation from `old` to `new`: it pins `new` from now on. Applies only
    /// while the node's recorded key is `old` (a late or repeated report changes nothing);
    /// returns whether it applied.
    async fn confirm_job_key(
        &self,
        node: &NodeId,
        old: &NodePublicKey,
        new: &NodePublicKey,
    ) -> Result<bool>;
    /// A rotation to `next` failed on the node: new jobs go back to its pinned key.
    async fn abandon_job_key_next(&self, node: &NodeId, next: &NodePublicKey) -> Result<()>;

    /// In one transaction: stores each receipt whose id is new and adds it to the usage of its
    /// node, model and day. Returns (stored, duplicates): a receipt is stored and counted once,
    /// however often it is uploaded.
    async fn store_receipts(&self, rows: Vec<ReceiptRow>, now_ms: u64) -> Result<(u32, u32)>;
    /// Receipts stored for a node.
    async fn receipt_count(&self, node: &NodeId) -> Result<u64>;
    /// A node's usage per model and day, newest day first (at most 400 rows).
    async fn usage(&self, node: &NodeId) -> Result<Vec<UsageDay>>;

    // ---- settlement epochs (`crate::settlement`) --------------------------------------------

    /// In one transaction: closes the next epoch at `end_ms`, assigning it every network receipt
    /// not yet in an epoch whose start time is before `end_ms` (a receipt's epoch is set once, so
    /// it belongs to exactly one epoch; one uploaded late lands in the next epoch). The epoch's
    /// id is the last one plus 1 (the first is 1), its `start_ms` the earliest start time among
    /// its receipts. `Ok(None)`, and nothing stored, when no receipt is waiting.
    /// `Refusal::Exists` when another replica closed the same id at the same time.
    async fn close_epoch(&self, end_ms: u64, now_ms: u64) -> Result<Option<EpochRow>>;
    /// The signed receipts (b3iq-core encoding) of an epoch, by receipt id.
    async fn epoch_receipts(&self, epoch_id: u64) -> Result<Vec<Vec<u8>>>;
    /// Stores an epoch's claim file (JSON of the protocol's `ClaimFile`), once built.
    async fn set_epoch_claim_file(&self, epoch_id: u64, claim_file: &str) -> Result<()>;
    /// Records that an epoch is on chain (`tx_hash` when this process sent the post, `None`
    /// when it found it posted already); `posted_at` is the chain's block timestamp, seconds.
    async fn set_epoch_posted(&self, epoch_id: u64, tx_hash: Option<&str>, posted_at: u64) -> Result<()>;
    /// Sets the address a node's earnings are paid to (`0x` + 40 lowercase hex, checked by the
    /// caller); `Refusal::UnknownNode` when absent.
    async fn set_payout_address(&self, node: &NodeId, address: &str) -> Result<()>;
    /// Payout address per node, for every node that set one.
    async fn payout_addresses(&self) -> Result<Vec<(NodeId, String)>>;
    /// Accepts a node's signed registration request (`POST /v1/node/registration`) once: its
    /// send time must be above the last accepted one (`Refusal::Replayed` otherwise, nothing
    /// written); keeps it with the operator (`0x` + 40 lowercase hex) and `now_ms`. Nothing
    /// secret is stored.
    async fn accept_registration_request(&self, node: &NodeId, sent_at_ms: u64, operator: &str, now_ms: u64) -> Result<()>;
    /// The last accepted registration request of a node.
    async fn registration_request(&self, node: &NodeId) -> Result<Option<RegistrationRequestRow>>;
    /// One epoch.
    async fn epoch(&self, epoch_id: u64) -> Result<Option<EpochRow>>;
    /// Epochs, newest first, at most `limit`.
    async fn epochs(&self, limit: u32) -> Result<Vec<EpochRow>>;

    // ---- the public explorer (`crate::public`) ---------------------------------------------

    /// Every node of every organisation, oldest enrollment first (then by node id), at most
    /// `limit`.
    async fn all_nodes(&self, limit: u32) -> Result<Vec<NodeRow>>;
    /// The epoch a stored receipt was assigned to: `None` for a receipt id not stored here,
    /// `Some(None)` for one stored but in no epoch yet.
    async fn receipt_epoch(&self, receipt_id: &[u8; 32]) -> Result<Option<Option<u64>>>;
    /// A node's newest job (by sequence) of `kind` that ended with `outcome` (the node's
    /// report), if any: one row, whatever the node's other jobs hold.
    async fn last_job(&self, node: &NodeId, kind: &str, outcome: &str) -> Result<Option<JobRow>>;

    // ---- gateway keys and credits (`crate::gateway::credits`, `store/credits.rs`) ----------
    // Every movement of credits is one transaction: the ledger rows (summing to zero), the
    // account balances (guarded: only `external:*` may go below zero), the hold and the key's
    // spend of the day, together. Balances change in account-name order.

    /// Stores a new gateway key with the sha256 of its token; `Refusal::NotFound` when the
    /// organisation does not exist.
    async fn create_gateway_key(&self, key: &GatewayKey, token_hash: &[u8; 32]) -> Result<()>;
    /// The key whose token hashes to `token_hash` (revoked or not).
    async fn gateway_key_by_hash(&self, token_hash: &[u8; 32]) -> Result<Option<GatewayKey>>;
    /// An organisation's gateway keys, oldest first.
    async fn gateway_keys(&self, org_id: &str) -> Result<Vec<GatewayKey>>;
    /// Revokes a key of `org_id`: `Ok(true)` when revoked now, `Ok(false)` when it already was;
    /// `Refusal::NotFound` when `org_id` has no such key.
    async fn revoke_gateway_key(&self, org_id: &str, key_id: &str, now_ms: u64) -> Result<bool>;
    /// In one transaction: moves `amount` from `external:topup` to the organisation's available
    /// account. Returns the new available balance. `Refusal::NotFound` for an unknown
    /// organisation, `Refusal::Exists` for a reference used by an earlier top-up.
    async fn add_credits(
        &self,
        org_id: &str,
        amount: u64,
        reference: &str,
        now_ms: u64,
    ) -> Result<u64>;
    /// An organisation's balances (zero for one without credits).
    async fn credit_balance(&self, org_id: &str) -> Result<CreditBalance>;
    /// An organisation's ledger transactions, newest first, at most `limit`.
    async fn ledger_entries(&self, org_id: &str, limit: u32) -> Result<Vec<LedgerEntry>>;
    /// In one transaction: checks the key (exists, of the hold's organisation, not revoked:
    /// `Refusal::KeyRevoked`), adds the amount to the key's spend of the hold's UTC day within
    /// its limit (`Refusal::SpendLimit`), moves it from available to held when available covers
    /// it (`Refusal::InsufficientCredits`), and stores the open hold.
    async fn place_hold(&self, hold: &Hold) -> Result<()>;
    /// A hold with its state.
    async fn hold(&self, id: &[u8; 16]) -> Result<Option<HoldRecord>>;
    /// In one transaction: settles an open hold (`Ok(true)`): the charge to the node's earnings,
    /// the rest back to available, the key's spend of the day lowered by the rest, the
    /// organisation's spent total raised by the charge. `Ok(false)` when it was settled before;
    /// `Refusal::HoldClosed` when it was released or expired; `Refusal::ReceiptCharged` when the
    /// receipt settled another hold; `Invalid` for a charge above the hold; `Refusal::NotFound`
    /// for an unknown hold.
    async fn settle_hold(&self, s: &HoldSettlement) -> Result<bool>;
    /// In one transaction: releases an open hold entirely (`Ok(true)`), as `kind::RELEASE` or,
    /// with `expired`, `kind::EXPIRE`; `Ok(false)` when it is no longer open;
    /// `Refusal::NotFound` for an unknown hold.
    async fn release_hold(&self, id: &[u8; 16], now_ms: u64, expired: bool) -> Result<bool>;
    /// Marks an open hold as waiting for its node's receipt by upload, because the client went
    /// away mid-stream and the receipt never came back on the tunnel: `request_id` is the
    /// ticket's, `ticket` its header form ([`b3iq_protocol::gateway::RequestTicket::to_header`]).
    /// `Ok(false)` when the hold is no longer open (settled or released meanwhile).
    async fn await_hold_receipt(
        &self,
        hold_id: &[u8; 16],
        request_id: &[u8; 16],
        ticket: &str,
    ) -> Result<bool>;
    /// Open holds waiting for the receipt of one of `request_ids` (at most 256 ids): each as
    /// (request id, hold id, ticket).
    async fn holds_awaiting(
        &self,
        request_ids: &[[u8; 16]],
    ) -> Result<Vec<([u8; 16], [u8; 16], String)>>;
    /// The ticket of an open hold waiting for a receipt, `None` for any other hold.
    async fn hold_awaiting_ticket(&self, hold_id: &[u8; 16]) -> Result<Option<String>>;
    /// A node's stored network-mode receipts (their signed encodings) started at or after
    /// `since_ms`, oldest first, at most `limit`.
    async fn network_receipts_since(
        &self,
        node: &NodeId,
        since_ms: u64,
        limit: u32,
    ) -> Result<Vec<Vec<u8>>>;
    // ---- reputation (`crate::gateway::reputation`) ------------------------------------------

    /// In one write: per node, reads its reputation (a new one at its first event's time when
    /// it has none), applies its events in time order with b3iq-core's rules, and stores it.
    async fn apply_reputation(
        &self,
        events: Vec<b3iq_core::reputation::ReputationEvent>,
        params: b3iq_core::reputation::ReputationParams,
    ) -> Result<()>;
    /// Every node's reputation.
    async fn reputations(&self) -> Result<Vec<b3iq_core::reputation::Reputation>>;

    /// Ids of open holds placed at or before `before_ms`, oldest first, at most `limit`.
    async fn open_holds_before(&self, before_ms: u64, limit: u32) -> Result<Vec<[u8; 16]>>;
    /// A node's earnings account balance.
    async fn node_earnings(&self, node: &NodeId) -> Result<u64>;
    /// Checks the whole ledger in one snapshot (see [`LedgerCheck`]).
    async fn ledger_check(&self) -> Result<LedgerCheck>;

    // ---- gateway replicas (`crate::gateway::tunnel`) ---------------------------------------

    /// Records (or replaces) which replica holds a node's tunnel.
    async fn put_tunnel_session(&self, t: &TunnelSession) -> Result<()>;
    /// Forgets a node's tunnel session if it is still the one of `replica_url` and `epoch`.
    async fn drop_tunnel_session(&self, node: &NodeId, replica_url: &str, epoch: u64)
        -> Result<()>;
    /// Tunnel sessions refreshed at or after `since_ms`.
    async fn tunnel_sessions(&self, since_ms: u64) -> Result<Vec<TunnelSession>>;

    // ---- verification in the network (`crate::gateway::verification`) -------------------

    /// Stores a checked verifier verdict; `false` when one with its hash is already stored.
    async fn put_verdict(&self, v: &VerdictRow) -> Result<bool>;
    /// The verdicts about `subject` (the verified node), oldest first.
    async fn verdicts(&self, subject: &NodeId) -> Result<Vec<VerdictRow>>;
    /// Opens a dispute record; `false` when one for its evidence is already open.
    async fn open_dispute(&self, d: &DisputeRow) -> Result<bool>;
    /// The disputes against `subject`, oldest first.
    async fn disputes(&self, subject: &NodeId) -> Result<Vec<DisputeRow>>;
    /// The dispute of `evidence_hash`.
    async fn dispute(&self, evidence_hash: &[u8; 32]) -> Result<Option<DisputeRow>>;
    /// Records a dispute's progress ([`crate::disputes`]): its status, epoch, chain dispute id,
    /// transactions and `updated_at_ms` (every other field is kept). `Refusal::NotFound` for an
    /// unknown evidence hash.
    async fn update_dispute(&self, d: &DisputeRow) -> Result<()>;
    /// Disputes, oldest first, at most `limit`: with `active`, only those the dispute tool still
    /// drives ([`DISPUTE_ACTIVE`] statuses).
    async fn list_disputes(&self, active: bool, limit: u32) -> Result<Vec<DisputeRow>>;
}

/// Dispute statuses the dispute tool still drives (`pending`: checked evidence waiting for its
/// epoch to be posted; `opened`: on chain; `voted`: our vote is in; `upheld`: in its appeal
/// window; `appealed`: waiting for the arbiter).
pub const DISPUTE_ACTIVE: [&str; 5] = ["pending", "opened", "voted", "upheld", "appealed"];

/// A verifier node's signed verdict on a sampled request (`verification_verdicts`), checked by
/// the gateway (signature of the verifier's tunnel key; the receipt's node, request and
/// attestation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictRow {
    /// The signed verdict's object hash (its id; dispute evidence hash).
    pub verdict_hash: [u8; 32],
    /// The verifying node.
    pub verifier: NodeId,
    /// The verified node.
    pub subject: NodeId,
    /// The verified request.
    pub request_id: [u8; 16],
    /// The verified receipt's id.
    pub receipt_id: [u8; 32],
    /// `pass`, `fail` or `inconclusive`.
    pub outcome: String,
    /// Where it failed or why it was inconclusive (the verdict's metric), empty on pass.
    pub metric: String,
    /// The signed verdict (b3iq-core encoding).
    pub signed: Vec<u8>,
    /// When the gateway stored it, unix ms.
    pub created_at_ms: u64,
    /// About a canary, the gateway's own request (`gateway::canary`), not a customer's.
    pub canary: bool,
}

/// A dispute (`disputes`): checked objective evidence, and its progress on chain
/// ([`crate::disputes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeRow {
    /// The evidence's hash ([`b3iq_core::evidence::Evidence::hash`], the on-chain
    /// `evidenceHash`; for rows from before migration 12, a signed verdict's object hash); one
    /// dispute per evidence.
    pub evidence_hash: [u8; 32],
    /// What the evidence is: `conflicting_receipts`, `failed_verification`.
    pub kind: String,
    /// The accused node.
    pub subject: NodeId,
    /// The disputed request.
    pub request_id: [u8; 16],
    /// [`DISPUTE_ACTIVE`], or final: `executed` (slashed), `rejected` (voted down),
    /// `overturned` (appeal won), `expired` (its evidence window closed before it could be
    /// opened), `reputation_only` (a single verifier's fail from before migration 12).
    pub status: String,
    /// The `Disputes.open` transaction (`0x...`), when this control plane sent it.
    pub chain_tx: Option<String>,
    /// When it was recorded, unix ms.
    pub opened_at_ms: u64,
    /// The encoded evidence ([`b3iq_core::evidence::Evidence::encode`]); `None` for rows from
    /// before migration 12.
    pub evidence: Option<Vec<u8>>,
    /// The settlement epoch of the disputed receipt, once known.
    pub epoch_id: Option<u64>,
    /// The chain's dispute id (decimal), once opened.
    pub chain_dispute_id: Option<String>,
    /// Our `Disputes.vote` transaction.
    pub vote_tx: Option<String>,
    /// The `Disputes.executeSlash` transaction.
    pub slash_tx: Option<String>,
    /// Last change, unix ms.
    pub updated_at_ms: u64,
}

/// The `disputes` columns both backends read into a [`DisputeRow`].
pub(crate) const DISPUTE_COLUMNS: &str = "evidence_hash, kind, subject, request_id, status, chain_tx, opened_at_ms, evidence, epoch_id, chain_dispute_id, vote_tx, slash_tx, updated_at_ms";

/// A closed settlement epoch (`epochs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRow {
    /// Epoch id (the on-chain key), from 1.
    pub epoch_id: u64,
    /// Earliest receipt start time, unix ms (inclusive).
    pub start_ms: u64,
    /// End, unix ms (exclusive).
    pub end_ms: u64,
    /// Receipts assigned to it.
    pub receipt_count: u64,
    /// When it was closed, unix ms.
    pub closed_at_ms: u64,
    /// The claim file (JSON), once built.
    pub claim_file: Option<String>,
    /// The post transaction's hash (`0x...`), when this control plane sent it.
    pub tx_hash: Option<String>,
    /// Block timestamp of the post, seconds; `None` until posted.
    pub posted_at: Option<u64>,
}

/// The `epochs` columns both backends read into an [`EpochRow`].
pub(crate) const EPOCH_COLUMNS: &str = "epoch_id, start_ms, end_ms, receipt_count, closed_at_ms, claim_file, tx_hash, posted_at";

/// Which gateway replica holds a node's tunnel (`tunnel_sessions`), so a request that lands on
/// another replica is relayed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSession {
    /// The node.
    pub node_id: NodeId,
    /// The replica's internal base URL (`https://host:port`).
    pub replica_url: String,
    /// The tunnel's epoch on that replica.
    pub epoch: u64,
    /// The node's network share.
    pub max_concurrent: u32,
    /// The offered models as JSON (`[{"public_id", "node_model_id", "digest"}]`).
    pub models: serde_json::Value,
    /// Last refresh, unix ms (replicas refresh their sessions every few seconds).
    pub updated_at_ms: u64,
}
