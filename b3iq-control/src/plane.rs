//! [`ControlPlane`]: the use cases (enrollment by proof of possession, heartbeats, operator
//! sign-in, organisations, enrollment tokens, node status) over a [`ControlStore`]. The HTTP
//! layer and the CLI only parse and format; every rule is here or in the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use b3iq_core::credential::{Credential, CredentialKind};
use b3iq_core::digest::Sha256Digest;
use b3iq_core::enrollment::Nonce;
use b3iq_core::job::{Job, JobId, JobKind, SignedJob};
use b3iq_core::{NodeId, NodeKey};
use b3iq_protocol::messages::{
    Audience, ChallengeId, EnrollmentAccepted, EnrollmentChallenge, EnrollmentRequest,
    HeartbeatAck, HeartbeatRequest, JobOutcome, JobPoll, JobPollResponse, JobResultAck,
    JobResultReport, ReceiptUpload, ReceiptUploadAck, MAX_JOBS_PER_POLL,
};
use rand::RngCore;
use tokio::sync::{Notify, Semaphore};

use crate::error::{ControlError, Result};
use crate::keys::JobKeyRing;
use crate::store::{
    ChallengeRow, ControlStore, EnrollCommit, EnrollmentTokenRow, HeartbeatCommit, JobRow,
    JobSigner, NodeRow, NodeStatus, Operator, Org, ReceiptRow, Refusal,
};

/// Tunables, with the defaults of [`ControlConfig::new`].
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The control plane's id: enrollment proofs must name it.
    pub audience: Audience,
    /// How often nodes send heartbeats (default 30 s); a node missing
    /// [`OFFLINE_AFTER_INTERVALS`] intervals shows offline.
    pub heartbeat_interval_ms: u64,
    /// Lifetime of an enrollment challenge (default 120 s).
    pub challenge_ttl_ms: u64,
    /// Lifetime of an enrollment before it must be renewed (default 90 days).
    pub enrollment_ttl_ms: u64,
    /// Largest difference between a node's clock and ours in a signed message (default 2 min,
    /// b3iq-core's `DEFAULT_MAX_CLOCK_SKEW_MS`).
    pub max_clock_skew_ms: u64,
    /// Lifetime of an operator session (default 12 h).
    pub session_ttl_ms: u64,
}

/// Heartbeat intervals a node may miss before it shows offline.
pub const OFFLINE_AFTER_INTERVALS: u64 = 3;
/// Default lifetime of an enrollment token (24 h).
pub const DEFAULT_TOKEN_TTL_MS: u64 = 24 * 3_600_000;
/// Longest lifetime of an enrollment token (30 days).
pub const MAX_TOKEN_TTL_MS: u64 = 30 * 24 * 3_600_000;
/// Concurrent argon2id verifications for operator sign-in (each takes 19 MiB); more wait
/// for a slot, so a burst of sign-ins cannot exhaust memory.
pub const MAX_CONCURRENT_PASSWORD_HASHES: usize = 4;

impl ControlConfig {
    /// Defaults for `audience`.
    pub fn new(audience: Audience) -> ControlConfig {
        ControlConfig {
            audience,
            heartbeat_interval_ms: 30_000,
            challenge_ttl_ms: 120_000,
            enrollment_ttl_ms: 90 * 24 * 3_600_000,
            max_clock_skew_ms: b3iq_core::job::DEFAULT_MAX_CLOCK_SKEW_MS,
            session_ttl_ms: 12 * 3_600_000,
        }
    }
}

/// Counters exported on `/metrics` (Prometheus text format).
#[derive(Debug, Default)]
pub struct Metrics {
    /// `b3iq_control_heartbeats_total{outcome="accepted"}`.
    pub heartbeats_accepted: AtomicU64,
    /// Refused for a signature that does not verify (or a body that does not decode).
    pub heartbeats_forged: AtomicU64,
    /// Refused for a replayed or out-of-order sequence.
    pub heartbeats_stale: AtomicU64,
    /// Refused for a clock outside the allowed skew.
    pub heartbeats_skewed: AtomicU64,
    /// Refused because the node is unknown, suspended, revoked or expired.
    pub heartbeats_denied: AtomicU64,
    /// Enrollments accepted.
    pub enrollments_accepted: AtomicU64,
    /// Enrollments refused (any reason).
    pub enrollments_refused: AtomicU64,
    /// Receipts stored (each once).
    pub receipts_stored: AtomicU64,
    /// Receipts uploaded again (a retry), not stored twice.
    pub receipts_duplicate: AtomicU64,
    /// Receipts in refused uploads.
    pub receipts_refused: AtomicU64,
}

impl Metrics {
    /// The Prometheus text exposition of these counters.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        s.push_str("# HELP b3iq_control_heartbeats_total Signed heartbeats received, by outcome.\n# TYPE b3iq_control_heartbeats_total counter\n");
        for (o, v) in [
            ("accepted", g(&self.heartbeats_accepted)),
            ("forged", g(&self.heartbeats_forged)),
            ("stale_sequence", g(&self.heartbeats_stale)),
            ("clock_skew", g(&self.heartbeats_skewed)),
            ("denied", g(&self.heartbeats_denied)),
        ] {
            s.push_str(&format!(
                "b3iq_control_heartbeats_total{{outcome=\"{o}\"}} {v}\n"
            ));
        }
        s.push_str("# HELP b3iq_control_enrollments_total Enrollment attempts, by outcome.\n# TYPE b3iq_control_enrollments_total counter\n");
        s.push_str(&format!(
            "b3iq_control_enrollments_total{{outcome=\"accepted\"}} {}\n",
            g(&self.enrollments_accepted)
        ));
        s.push_str(&format!(
            "b3iq_control_enrollments_total{{outcome=\"refused\"}} {}\n",
            g(&self.enrollments_refused)
        ));
        s.push_str("# HELP b3iq_control_receipts_total Uploaded receipts, by outcome.\n# TYPE b3iq_control_receipts_total counter\n");
        for (o, v) in [
            ("stored", g(&self.receipts_stored)),
            ("duplicate", g(&self.receipts_duplicate)),
            ("refused", g(&self.receipts_refused)),
        ] {
            s.push_str(&format!(
                "b3iq_control_receipts_total{{outcome=\"{o}\"}} {v}\n"
            ));
        }
        s
    }
}

/// How often a waiting long-poll re-reads the store for jobs queued by another process.
pub const POLL_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Default lifetime of a queued job (1 h).
pub const DEFAULT_JOB_TTL_MS: u64 = 3_600_000;

/// A job as operators see it (the signed envelope stays in the store).
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobView {
    /// Job id (hex).
    pub job_id: String,
    /// The node.
    pub node_id: NodeId,
    /// Kind name.
    pub kind: String,
    /// Job sequence.
    pub sequence: u64,
    /// Who queued it.
    pub created_by: String,
    /// Queue time, unix ms.
    pub created_at_ms: u64,
    /// Expiry, unix ms.
    pub expires_at_ms: u64,
    /// `queued`, `delivered`, or the node's outcome.
    pub state: String,
    /// The node's error code.
    pub code: Option<String>,
    /// What it produced.
    pub result: Option<serde_json::Value>,
    /// When the report arrived, unix ms.
    pub finished_at_ms: Option<u64>,
}

impl From<JobRow> for JobView {
    fn from(r: JobRow) -> JobView {
        let state = match (&r.outcome, r.delivered_at_ms) {
            (Some(o), _) => o.clone(),
            (None, Some(_)) => "delivered".into(),
            (None, None) => "queued".into(),
        };
        JobView {
            job_id: hex::encode(r.job_id),
            node_id: r.node_id,
            kind: r.kind,
            sequence: r.sequence,
            created_by: r.created_by,
            created_at_ms: r.created_at_ms,
            expires_at_ms: r.expires_at_ms,
            state,
            code: r.code,
            result: r.result,
            finished_at_ms: r.finished_at_ms,
        }
    }
}

/// A node as operators see it: the stored row plus whether it is online now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeView {
    /// The stored state.
    #[serde(flatten)]
    pub node: NodeRow,
    /// `online`, `offline` (no heartbeat within [`OFFLINE_AFTER_INTERVALS`] intervals),
    /// `never_seen`, `expired`, `suspended` or `revoked`.
    pub presence: &'static str,
    /// The `b3iqd` version the node runs, from its latest heartbeat (version-2 heartbeats carry
    /// it; `None` before the first one, or from a node too old to report it).
    pub software_version: Option<String>,
}

/// A job key as operators see it (`b3iq-control admin job-keys`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobKeyView {
    /// Its public key.
    pub public_key: b3iq_core::NodePublicKey,
    /// When it was made, unix ms.
    pub created_at_ms: u64,
    /// New enrollments pin it.
    pub current: bool,
    /// Active nodes that still pin it though it is not current.
    pub pinned_by_lagging_nodes: u64,
    /// Active nodes with a rotation to it pending.
    pub rotating_to: u64,
    /// This process holds its secret.
    pub held_here: bool,
}

/// What a rotation queued.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RotationReport {
    /// The current job key.
    pub job_key: b3iq_core::NodePublicKey,
    /// `rotate_issuer_key` jobs queued.
    pub queued: u64,
    /// The queued jobs.
    pub nodes: Vec<JobView>,
}

/// The control plane.
pub struct ControlPlane {
    store: Arc<dyn ControlStore>,
    config: ControlConfig,
    keys: JobKeyRing,
    /// The key adopted as the first job key when the store has none.
    first_key: b3iq_core::NodePublicKey,
    hash_slots: Semaphore,
    /// Per-node wake-ups for long-polls (a queued job notifies its node's waiters).
    waiters: std::sync::Mutex<std::collections::HashMap<NodeId, Arc<Notify>>>,
    /// Counters.
    pub metrics: Metrics,
    /// Gateway keys' request rates (per replica; `gateway::credits`).
    pub(crate) gateway_rate: crate::gateway::credits::RateLimiter,
    /// The settler, when `control.json` configures settlement.
    settler: std::sync::OnceLock<Arc<crate::settlement::Settler>>,
    /// The dispute tool, when `control.json` configures disputes.
    dispute_tool: std::sync::OnceLock<Arc<crate::disputes::DisputeTool>>,
    /// The NodeRegistry attester (`crate::registration`), when the chain is configured.
    pub(crate) registrar: std::sync::OnceLock<Arc<crate::registration::Registrar>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("backend", &self.store.backend())
            .field("audience", &self.config.audience)
            .finish_non_exhaustive()
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

fn random_id(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(random::<8>()))
}

/// sha256 of a secret's text (what the store keeps).
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256Digest::of(secret.as_bytes()).0
}

/// An organisation name: 1 to 64 of letters, digits, space, `. _ -`.
fn check_org_name(name: &str) -> Result<()> {
    let ok = !name.trim().is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ControlError::Invalid {
            field: "name",
            reason: "use 1 to 64 of letters, digits, space, `. _ -`".into(),
        })
    }
}

impl ControlPlane {
    /// A control plane over `store`, signing jobs with `job_key` (held in memory; the first
    /// job key when the store has none yet).
    pub fn new(
        store: Arc<dyn ControlStore>,
        config: ControlConfig,
        job_key: NodeKey,
    ) -> ControlPlane {
        let first = job_key.public();
        Self::with_keys(store, config, JobKeyRing::in_memory([job_key]), first)
    }

    /// A control plane over `store` with the job keys of `keys`; `first` is adopted as the first
    /// job key when the store has none yet (its secret must be in `keys`).
    pub fn with_keys(
        store: Arc<dyn ControlStore>,
        config: ControlConfig,
        keys: JobKeyRing,
        first: b3iq_core::NodePublicKey,
    ) -> ControlPlane {
        ControlPlane {
            store,
            config,
            keys,
            first_key: first,
            hash_slots: Semaphore::new(MAX_CONCURRENT_PASSWORD_HASHES),
            waiters: Default::default(),
            metrics: Metrics::default(),
            gateway_rate: Default::default(),
            settler: Default::default(),
            dispute_tool: Default::default(),
            registrar: Default::default(),
        }
    }

    /// Attaches the dispute tool (once; later calls are ignored): disputes the gateway records
    /// wake it.
    pub fn set_dispute_tool(&self, t: Arc<crate::disputes::DisputeTool>) {
        let _ = self.dispute_tool.set(t);
    }

    /// The dispute tool, when disputes are configured.
    pub fn dispute_tool(&self) -> Option<&Arc<crate::disputes::DisputeTool>> {
        self.dispute_tool.get()
    }

    /// Attaches the settler (once; later calls are ignored): the payout routes answer from it.
    pub fn set_settler(&self, s: Arc<crate::settlement::Settler>) {
        let _ = self.settler.set(s);
    }

    /// The settler, when settlement is configured.
    ///
    /// # Errors
    /// `Refused(NotFound)` when it is not.
    pub fn settler(&self) -> Result<&Arc<crate::settlement::Settler>> {
        self.settler.get().ok_or_else(|| Refusal::NotFound("settlement on this network (its control plane has no `settlement` section in control.json; ask its operator)".into()).into())
    }

    /// Records the address a node's earnings are paid to (signed by the node; its clock within
    /// `max_clock_skew_ms`; an active, unexpired node).
    ///
    /// # Errors
    /// `Invalid` for a forged or stale request; `Refused` for the node's status.
    pub async fn set_payout_address(&self, r: &b3iq_protocol::payout_api::PayoutAddressRequest, now_ms: u64) -> Result<b3iq_protocol::payout_api::PayoutAddressAck> {
        let node = r.verify()?;
        if r.sent_at_ms.abs_diff(now_ms) > self.config.max_clock_skew_ms {
            return Err(ControlError::Invalid { field: "sent_at_ms", reason: format!("payout address: the node's clock is {} ms away from the control plane's", r.sent_at_ms.abs_diff(now_ms)) });
        }
        self.active_node(&node, now_ms).await?;
        self.store.set_payout_address(&node, &r.address.to_string()).await?;
        Ok(b3iq_protocol::payout_api::PayoutAddressAck { address: r.address })
    }

    /// The configuration.
    pub fn config(&self) -> &ControlConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ControlStore> {
        &self.store
    }

    /// The current job-signing public key: the one new enrollments pin (the newest in the
    /// store; on a store without one, the first key is adopted).
    ///
    /// # Errors
    /// `Store`.
    pub async fn job_public_key(&self) -> Result<b3iq_core::NodePublicKey> {
        if let Some(k) = self.store.job_keys().await?.last() {
            return Ok(k.public_key);
        }
        self.store
            .adopt_job_key(&self.first_key, b3iq_host::context::unix_now_ms())
            .await?;
        self.store
            .job_keys()
            .await?
            .last()
            .map(|k| k.public_key)
            .ok_or_else(|| ControlError::Store("no job key after adopting one".into()))
    }

    /// Every job key with the number of nodes pinning it and rotating to it.
    ///
    /// # Errors
    /// `Store`.
    pub async fn job_keys(&self, now_ms: u64) -> Result<Vec<JobKeyView>> {
        let current = self.job_public_key().await?;
        let keys = self.store.job_keys().await?;
        let lagging = self.store.nodes_not_pinning(&current, now_ms).await?;
        Ok(keys
            .into_iter()
            .map(|k| JobKeyView {
                current: k.public_key == current,
                pinned_by_lagging_nodes: lagging
                    .iter()
                    .filter(|n| n.job_key == Some(k.public_key))
                    .count() as u64,
                rotating_to: lagging
                    .iter()
                    .filter(|n| n.job_key_next == Some(k.public_key))
                    .count() as u64,
                held_here: self.keys.get(&k.public_key).is_ok(),
                public_key: k.public_key,
                created_at_ms: k.created_at_ms,
            })
            .collect())
    }

    /// Rotates the job key: makes a new key (kept in the home before it is used), records it
    /// as current (new enrollments pin it), then [`ControlPlane::resend_rotations`].
    ///
    /// # Errors
    /// `Config` when the key cannot be written or an old key's secret is missing; `Store`.
    pub async fn rotate_job_key(&self, now_ms: u64) -> Result<RotationReport> {
        self.job_public_key().await?;
        let new = self.keys.generate()?;
        self.store.add_job_key(&new.public(), now_ms).await?;
        tracing::info!(key = %new.public().to_hex(), "job key rotated");
        self.resend_rotations(now_ms).await
    }

    /// For every active, unexpired node that does not pin the current key: queues a
    /// `rotate_issuer_key` job to it, signed by the key the node pins (valid b3iq-core's
    /// 24 h), and signs that node's later jobs with the new key. A node offline past the
    /// job's expiry needs this again (`b3iq-control admin rotate-job-key --resend`).
    ///
    /// # Errors
    /// `Config` when a pinned key's secret is missing here; `Store`.
    pub async fn resend_rotations(&self, now_ms: u64) -> Result<RotationReport> {
        let current = self.job_public_key().await?;
        let nodes = self.store.nodes_not_pinning(&current, now_ms).await?;
        let mut report = RotationReport {
            job_key: current,
            queued: 0,
            nodes: Vec::new(),
        };
        for n in nodes {
            let Some(pinned) = n.job_key else { continue };
            let kind = JobKind::RotateIssuerKey {
                new_issuer: current,
            };
            let row = self
                .queue_signed(
                    &n,
                    pinned,
                    "control-plane",
                    kind,
                    b3iq_core::job::MAX_JOB_VALIDITY_MS,
                    now_ms,
                )
                .await?;
            self.store
                .set_job_key_next(&n.node_id, Some(&current))
                .await?;
            report.queued += 1;
            report.nodes.push(JobView::from(row));
        }
        Ok(report)
    }

    // ---- organisations, operators, tokens -------------------------------------------------

    /// Creates an organisation.
    ///
    /// # Errors
    /// `Invalid` for a bad name; `Refused(Exists)` when taken.
    pub async fn create_org(&self, name: &str, now_ms: u64) -> Result<Org> {
        check_org_name(name)?;
        let org = Org {
            id: random_id("org_"),
            name: name.to_string(),
            created_at_ms: now_ms,
        };
        self.store.create_org(&org).await?;
        Ok(org)
    }

    /// Finds an organisation by id or name.
    ///
    /// # Errors
    /// `Refused(NotFound)` when absent.
    pub async fn org(&self, id_or_name: &str) -> Result<Org> {
        self.store.org(id_or_name).await?.ok_or_else(|| {
            Refusal::NotFound(format!(
                "organisation {:?}",
                id_or_name.chars().take(64).collect::<String>()
            ))
            .into()
        })
    }

    /// Creates an operator of `org` with an argon2id password hash (10 to 1024 characters).
    ///
    /// # Errors
    /// `Invalid` for a bad user name or password; `Refused` when the name is taken or the
    /// organisation does not exist.
    pub async fn create_operator(
        &self,
        org: &str,
        username: &str,
        password: &str,
        now_ms: u64,
    ) -> Result<Operator> {
        b3iq_host::owner::auth::validate_new_account(username, password).map_err(|e| {
            ControlError::Invalid {
                field: "operator",
                reason: e.to_string(),
            }
        })?;
        let org = self.org(org).await?;
        let pw = password.to_string();
        let _slot = self
            .hash_slots
            .acquire()
            .await
            .map_err(|e| ControlError::store("hash slots", e))?;
        let phc = tokio::task::spawn_blocking(move || b3iq_host::owner::auth::hash_password(&pw))
            .await
            .map_err(|e| ControlError::store("hash task", e))?
            .map_err(|e| ControlError::store("hash password", e))?;
        let op = Operator {
            id: random_id("op_"),
            org_id: org.id,
            username: username.to_string(),
            password_phc: phc,
            created_at_ms: now_ms,
        };
        self.store.create_operator(&op).await?;
        Ok(op)
    }

    /// Makes a single-use enrollment token for `org`, valid `ttl_ms` (at most 30 days).
    /// Returns the stored row and the secret, which is shown once and never stored.
    ///
    /// # Errors
    /// `Invalid` for a zero or too long lifetime; `Refused(NotFound)` for an unknown org.
    pub async fn create_enrollment_token(
        &self,
        org: &str,
        ttl_ms: u64,
        now_ms: u64,
    ) -> Result<(EnrollmentTokenRow, String)> {
        if ttl_ms == 0 || ttl_ms > MAX_TOKEN_TTL_MS {
            return Err(ControlError::Invalid {
                field: "ttl",
                reason: format!("{ttl_ms} ms; use 1 ms to {MAX_TOKEN_TTL_MS} ms (30 days)"),
            });
        }
        let org = self.org(org).await?;
        let cred = Credential::generate(CredentialKind::Enrollment, &mut rand::rngs::OsRng);
        let row = EnrollmentTokenRow {
            id: random_id("etk_"),
            org_id: org.id,
            token_hash: cred.hash_for_storage().0,
            created_at_ms: now_ms,
            expires_at_ms: now_ms.checked_add(ttl_ms).ok_or(ControlError::Invalid {
                field: "ttl",
                reason: "overflows the clock".into(),
            })?,
        };
        self.store.create_enrollment_token(&row).await?;
        Ok((row, cred.expose_secret().to_string()))
    }

    /// Operator sign-in: returns a bearer session secret (shown once) and its expiry. Unknown
    /// users take as long as wrong passwords (a fixed hash is checked), so names cannot be
    /// probed by timing.
    ///
    /// # Errors
    /// `Unauthorized` for an unknown user or a wrong password.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        now_ms: u64,
    ) -> Result<(String, u64)> {
        const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        if username.len() > 64 || password.len() > 1024 {
            return Err(ControlError::Unauthorized(
                "wrong user name or password".into(),
            ));
        }
        let op = self.store.operator_by_username(username).await?;
        let phc = op
            .as_ref()
            .map(|o| o.password_phc.clone())
            .unwrap_or_else(|| DUMMY.to_string());
        let pw = password.to_string();
        let ok = {
            let _slot = self
                .hash_slots
                .acquire()
                .await
                .map_err(|e| ControlError::store("hash slots", e))?;
            tokio::task::spawn_blocking(move || b3iq_host::owner::auth::verify_password(&pw, &phc))
                .await
                .map_err(|e| ControlError::store("hash task", e))?
        };
        let Some(op) = op.filter(|_| ok) else {
            return Err(ControlError::Unauthorized(
                "wrong user name or password".into(),
            ));
        };
        let secret = hex::encode(random::<32>());
        let expires = now_ms.saturating_add(self.config.session_ttl_ms);
        self.store
            .create_session(&secret_hash(&secret), &op.id, now_ms, expires)
            .await?;
        Ok((secret, expires))
    }

    /// The operator behind a bearer session secret.
    ///
    /// # Errors
    /// `Unauthorized` when the session is unknown or expired.
    pub async fn operator(&self, session: &str, now_ms: u64) -> Result<Operator> {
        if session.len() != 64 {
            return Err(ControlError::Unauthorized(
                "sign in first: POST /v1/admin/session".into(),
            ));
        }
        self.store
            .session_operator(&secret_hash(session), now_ms)
            .await?
            .ok_or_else(|| {
                ControlError::Unauthorized(
                    "the session is unknown or expired; sign in again".into(),
                )
            })
    }

    /// Signs an operator out.
    ///
    /// # Errors
    /// `Store`.
    pub async fn logout(&self, session: &str) -> Result<()> {
        self.store.delete_session(&secret_hash(session)).await
    }

    // ---- enrollment -----------------------------------------------------------------------

    /// Issues a single-use challenge.
    ///
    /// # Errors
    /// `TooMany` when [`crate::store::MAX_LIVE_CHALLENGES`] are outstanding.
    pub async fn challenge(&self, now_ms: u64) -> Result<EnrollmentChallenge> {
        let row = ChallengeRow {
            id: random(),
            nonce: random(),
            issued_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(self.config.challenge_ttl_ms),
        };
        if !self.store.create_challenge(&row, now_ms).await? {
            return Err(ControlError::TooMany(
                "too many enrollment challenges outstanding; retry in a minute".into(),
            ));
        }
        Ok(EnrollmentChallenge {
            challenge_id: ChallengeId(row.id),
            audience: self.config.audience.clone(),
            nonce: Nonce(row.nonce),
            issued_at_ms: row.issued_at_ms,
            expires_at_ms: row.expires_at_ms,
        })
    }

    /// Checks an enrollment (token format, a live challenge, the proof: signature, key derives
    /// the node id, audience, nonce, signing time) and commits it (challenge and token used,
    /// node created). The token is checked against the store only after the proof verifies.
    ///
    /// # Errors
    /// `Unauthorized` for a malformed token; `Invalid` for a proof that does not verify;
    /// `Refused` for a used or expired challenge or token, a revoked node or one of another
    /// organisation.
    pub async fn enroll(
        &self,
        token: &str,
        req: &EnrollmentRequest,
        now_ms: u64,
    ) -> Result<EnrollmentAccepted> {
        let r = self.enroll_inner(token, req, now_ms).await;
        match &r {
            Ok(_) => self
                .metrics
                .enrollments_accepted
                .fetch_add(1, Ordering::Relaxed),
            Err(_) => self
                .metrics
                .enrollments_refused
                .fetch_add(1, Ordering::Relaxed),
        };
        r
    }

    /// The live challenge a proof answers, and the node it proves (signature, key derives the
    /// node id, audience, nonce, signing time): the check shared by enrollment and renewal.
    async fn verify_proof(
        &self,
        req: &EnrollmentRequest,
        now_ms: u64,
    ) -> Result<(ChallengeRow, NodeId)> {
        let Some(ch) = self
            .store
            .live_challenge(&req.challenge_id.0, now_ms)
            .await?
        else {
            return Err(Refusal::ChallengeUsed.into());
        };
        let challenge = EnrollmentChallenge {
            challenge_id: ChallengeId(ch.id),
            audience: self.config.audience.clone(),
            nonce: Nonce(ch.nonce),
            issued_at_ms: ch.issued_at_ms,
            expires_at_ms: ch.expires_at_ms,
        };
        let node_id = req.verify(&challenge, now_ms, self.config.max_clock_skew_ms)?;
        Ok((ch, node_id))
    }

    /// The answer to an accepted enrollment or renewal, naming the job key the node pins.
    fn accepted(
        &self,
        node: &NodeRow,
        job_key: b3iq_core::NodePublicKey,
    ) -> Result<EnrollmentAccepted> {
        Ok(EnrollmentAccepted {
            node_id: node.node_id,
            org_id: Audience::new(&node.org_id)?,
            audience: self.config.audience.clone(),
            job_key: node.job_key.unwrap_or(job_key),
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            enrolled_at_ms: node.enrolled_at_ms,
            expires_at_ms: node.expires_at_ms,
        })
    }

    async fn enroll_inner(
        &self,
        token: &str,
        req: &EnrollmentRequest,
        now_ms: u64,
    ) -> Result<EnrollmentAccepted> {
        let cred = Credential::parse_kind(token, CredentialKind::Enrollment)
            .map_err(|e| ControlError::Unauthorized(format!("enrollment token: {e}")))?;
        let (ch, node_id) = self.verify_proof(req, now_ms).await?;
        let expires_at_ms = now_ms.saturating_add(self.config.enrollment_ttl_ms);
        let job_key = self.job_public_key().await?;
        let node = self
            .store
            .enroll(&EnrollCommit {
                challenge_id: ch.id,
                token_hash: cred.hash_for_storage().0,
                node_id,
                public_key: req.proof.body().public_key,
                now_ms,
                expires_at_ms,
                job_key,
            })
            .await?;
        tracing::info!(node = %node.node_id, org = %node.org_id, "node enrolled");
        self.accepted(&node, job_key)
    }

    /// Headless renewal before the enrollment ends: a proof over a fresh challenge (as at
    /// enrollment, without a token) extends an active, unexpired enrollment by the configured
    /// lifetime.
    ///
    /// # Errors
    /// `Invalid` for a proof that does not verify; `Refused` for a used or expired challenge,
    /// or a suspended, revoked, expired or unknown node (an expired one must enroll again).
    pub async fn renew(&self, req: &EnrollmentRequest, now_ms: u64) -> Result<EnrollmentAccepted> {
        let (ch, node_id) = self.verify_proof(req, now_ms).await?;
        let node = self
            .store
            .renew(
                &ch.id,
                &node_id,
                &req.proof.body().public_key,
                now_ms,
                now_ms.saturating_add(self.config.enrollment_ttl_ms),
            )
            .await?;
        tracing::info!(node = %node.node_id, expires_at_ms = node.expires_at_ms, "enrollment renewed");
        let current = self.job_public_key().await?;
        self.accepted(&node, current)
    }

    // ---- heartbeats -----------------------------------------------------------------------

    /// Checks and stores a heartbeat: a signature that verifies for its node id, a clock within
    /// the allowed skew, an enrolled, active, unexpired node whose key signed it, and a sequence
    /// above the last one stored. Refusals are counted ([`Metrics`], and on the node).
    ///
    /// # Errors
    /// `Invalid` for a forged heartbeat or one outside the clock skew; `Refused` for an unknown,
    /// suspended, revoked or expired node or a stale sequence.
    pub async fn heartbeat(&self, req: &HeartbeatRequest, now_ms: u64) -> Result<HeartbeatAck> {
        let node_id = match req.verify() {
            Ok(id) => id,
            Err(e) => {
                self.metrics
                    .heartbeats_forged
                    .fetch_add(1, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        let hb = req.heartbeat.body();
        if hb.sent_at_ms.abs_diff(now_ms) > self.config.max_clock_skew_ms {
            self.metrics
                .heartbeats_skewed
                .fetch_add(1, Ordering::Relaxed);
            self.store.count_refused_heartbeat(&node_id).await?;
            return Err(ControlError::Invalid {
                field: "sent_at_ms",
                reason: format!("the node's clock is {} ms away from the control plane's (at most {} ms); fix the node's clock", hb.sent_at_ms.abs_diff(now_ms), self.config.max_clock_skew_ms),
            });
        }
        let r = self
            .store
            .record_heartbeat(&HeartbeatCommit {
                node_id,
                sequence: hb.sequence,
                sent_at_ms: hb.sent_at_ms,
                received_at_ms: now_ms,
                health: hb.health,
                body: serde_json::to_value(hb)
                    .map_err(|e| ControlError::store("heartbeat json", e))?,
            })
            .await;
        match &r {
            Ok(()) => self
                .metrics
                .heartbeats_accepted
                .fetch_add(1, Ordering::Relaxed),
            Err(ControlError::Refused(Refusal::StaleSequence { .. })) => self
                .metrics
                .heartbeats_stale
                .fetch_add(1, Ordering::Relaxed),
            Err(ControlError::Refused(_)) => self
                .metrics
                .heartbeats_denied
                .fetch_add(1, Ordering::Relaxed),
            Err(_) => 0,
        };
        r?;
        Ok(HeartbeatAck {
            sequence: hb.sequence,
            next_heartbeat_at_ms: now_ms.saturating_add(self.config.heartbeat_interval_ms),
            pending_jobs: 0,
        })
    }

    // ---- nodes ----------------------------------------------------------------------------

    /// A node's presence at `now_ms`: `revoked`, `suspended`, `expired` (enrollment not
    /// renewed), `never_seen` (no heartbeat yet), `offline` (no heartbeat for a few intervals)
    /// or `online`.
    pub fn presence(&self, node: &NodeRow, now_ms: u64) -> &'static str {
        match node.status {
            NodeStatus::Revoked => "revoked",
            NodeStatus::Suspended => "suspended",
            NodeStatus::Active if node.expires_at_ms <= now_ms => "expired",
            NodeStatus::Active => match &node.last_heartbeat {
                None => "never_seen",
                Some(h)
                    if now_ms.saturating_sub(h.received_at_ms)
                        > OFFLINE_AFTER_INTERVALS * self.config.heartbeat_interval_ms =>
                {
                    "offline"
                }
                Some(_) => "online",
            },
        }
    }

    fn view(&self, node: NodeRow, now_ms: u64) -> NodeView {
        let presence = self.presence(&node, now_ms);
        let software_version = node
            .last_heartbeat
            .as_ref()
            .and_then(|h| h.body["software_version"].as_str())
            .map(str::to_string);
        NodeView {
            node,
            presence,
            software_version,
        }
    }

    /// The nodes of `org_id` with their presence.
    ///
    /// # Errors
    /// `Store`.
    pub async fn nodes(&self, org_id: &str, now_ms: u64) -> Result<Vec<NodeView>> {
        Ok(self
            .store
            .nodes(org_id)
            .await?
            .into_iter()
            .map(|n| self.view(n, now_ms))
            .collect())
    }

    /// One node of `org_id`.
    ///
    /// # Errors
    /// `Refused(UnknownNode)` when absent or of another organisation.
    pub async fn node(&self, org_id: &str, id: &NodeId, now_ms: u64) -> Result<NodeView> {
        match self.store.node(id).await? {
            Some(n) if n.org_id == org_id => Ok(self.view(n, now_ms)),
            _ => Err(Refusal::UnknownNode.into()),
        }
    }

    /// Suspends, resumes or revokes a node of `org_id`, with a short reason (at most 200
    /// characters, printable). Its heartbeats are refused from the next one on.
    ///
    /// # Errors
    /// `Invalid` for a bad reason; `Refused` for an unknown or already revoked node.
    pub async fn set_node_status(
        &self,
        org_id: &str,
        id: &NodeId,
        status: NodeStatus,
        reason: &str,
    ) -> Result<()> {
        if reason.chars().count() > 200 || reason.chars().any(char::is_control) {
            return Err(ControlError::Invalid {
                field: "reason",
                reason: "at most 200 printable characters".into(),
            });
        }
        self.store
            .set_node_status(id, org_id, status, reason)
            .await?;
        tracing::info!(node = %id, status = status.as_str(), "node status changed");
        Ok(())
    }

    // ---- jobs -----------------------------------------------------------------------------

    fn notifier(&self, node: &NodeId) -> Arc<Notify> {
        let mut m = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(*node).or_default().clone()
    }

    /// An enrolled, active, unexpired node, or the refusal that applies.
    pub(crate) async fn active_node(&self, id: &NodeId, now_ms: u64) -> Result<NodeRow> {
        let n = self.store.node(id).await?.ok_or(Refusal::UnknownNode)?;
        match n.status {
            NodeStatus::Revoked => Err(Refusal::Revoked(n.status_reason).into()),
            NodeStatus::Suspended => Err(Refusal::Suspended(n.status_reason).into()),
            NodeStatus::Active if n.expires_at_ms <= now_ms => {
                Err(Refusal::EnrollmentExpired.into())
            }
            NodeStatus::Active => Ok(n),
        }
    }

    /// Queues a job for a node of `op`'s organisation, signed with the job key (audience the
    /// node, the next job sequence, valid `ttl_ms`: default [`DEFAULT_JOB_TTL_MS`], at most
    /// b3iq-core's 24 h), and wakes the node's long-poll.
    ///
    /// # Errors
    /// `Invalid` for a kind with bad fields or a bad lifetime; `Refused` for a node that is not
    /// the organisation's, or is suspended, revoked or expired.
    pub async fn queue_job(
        &self,
        op: &Operator,
        node_id: &NodeId,
        kind: JobKind,
        ttl_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<JobView> {
        let node = self.active_node(node_id, now_ms).await?;
        if node.org_id != op.org_id {
            return Err(Refusal::UnknownNode.into());
        }
        let ttl = ttl_ms.unwrap_or(DEFAULT_JOB_TTL_MS);
        if ttl == 0 || ttl > b3iq_core::job::MAX_JOB_VALIDITY_MS {
            return Err(ControlError::Invalid {
                field: "ttl",
                reason: format!(
                    "{ttl} ms; use 1 ms to {} ms",
                    b3iq_core::job::MAX_JOB_VALIDITY_MS
                ),
            });
        }
        // Signed with the key the node will pin when it runs the job: the one a pending
        // rotation moves it to, else the one it pins.
        let signer = match node.job_key_next.or(node.job_key) {
            Some(k) => k,
            None => self.job_public_key().await?,
        };
        let row = self
            .queue_signed(&node, signer, &op.username, kind, ttl, now_ms)
            .await?;
        Ok(JobView::from(row))
    }

    /// Signs `kind` for `node` with the secret of `signer` and queues it under the next job
    /// sequence, then wakes the node's long-poll.
    async fn queue_signed(
        &self,
        node: &NodeRow,
        signer: b3iq_core::NodePublicKey,
        by: &str,
        kind: JobKind,
        ttl: u64,
        now_ms: u64,
    ) -> Result<JobRow> {
        let key = self.keys.get(&signer)?;
        let (org, by, node_id) = (node.org_id.clone(), by.to_string(), node.node_id);
        let sign: JobSigner = Box::new(move |sequence| {
            let job = Job {
                job_id: JobId(random()),
                audience: node_id,
                issuer: key.public(),
                issued_at_ms: now_ms,
                expires_at_ms: now_ms + ttl,
                sequence,
                kind,
            };
            let name = job.kind.name().to_string();
            let signed = key.sign_object(job).map_err(|e| ControlError::Invalid {
                field: "kind",
                reason: e.to_string(),
            })?;
            Ok(JobRow {
                job_id: signed.body().job_id.0,
                node_id,
                org_id: org,
                sequence,
                kind: name,
                envelope: signed.encode(),
                created_by: by,
                created_at_ms: now_ms,
                expires_at_ms: now_ms + ttl,
                delivered_at_ms: None,
                outcome: None,
                code: None,
                result: None,
                finished_at_ms: None,
            })
        });
        let row = self.store.queue_job(sign).await?;
        self.notifier(&node_id).notify_waiters();
        tracing::info!(node = %node_id, job = %hex::encode(row.job_id), kind = %row.kind, sequence = row.sequence, "job queued");
        Ok(row)
    }

    /// A node's long-poll: checks the signed poll (key derives the node id, signature, clock
    /// skew) and the node (active, unexpired), then answers with its pending jobs above
    /// `after_sequence`, waiting up to `wait_ms` for one to be queued.
    ///
    /// # Errors
    /// `Invalid` for a forged or skewed poll; `Refused` for an unknown, suspended, revoked or
    /// expired node.
    pub async fn poll(&self, p: &JobPoll, now_ms: u64) -> Result<JobPollResponse> {
        let node = p.verify()?;
        if p.sent_at_ms.abs_diff(now_ms) > self.config.max_clock_skew_ms {
            return Err(ControlError::Invalid {
                field: "sent_at_ms",
                reason: "the node's clock is outside the allowed skew; fix the node's clock".into(),
            });
        }
        self.active_node(&node, now_ms).await?;
        let started = tokio::time::Instant::now();
        let deadline = started + std::time::Duration::from_millis(u64::from(p.wait_ms));
        let n = self.notifier(&node);
        loop {
            let notified = n.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // The caller's clock, advanced by the time this poll has waited (not the wall
            // clock: a caller in simulated time stays in it).
            let now = now_ms.saturating_add(started.elapsed().as_millis() as u64);
            let rows = self
                .store
                .pending_jobs(&node, p.after_sequence, now, MAX_JOBS_PER_POLL as u32)
                .await?;
            if !rows.is_empty() || tokio::time::Instant::now() >= deadline {
                let jobs = rows
                    .iter()
                    .map(|r| {
                        SignedJob::decode(&r.envelope).map_err(|e| {
                            ControlError::Store(format!("stored job does not decode: {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                return Ok(JobPollResponse {
                    jobs,
                    next_poll_at_ms: now,
                });
            }
            // Woken by a job queued in this process; re-read the store at least every
            // POLL_RECHECK for jobs queued by another process (the CLI, another replica).
            let wake = deadline.min(tokio::time::Instant::now() + POLL_RECHECK);
            let _ = tokio::time::timeout_at(wake, notified).await;
        }
    }

    /// Stores a node's signed report of a job (once; a retry is acknowledged as not stored).
    ///
    /// # Errors
    /// `Invalid` for a forged report; `Refused` for a revoked or unknown node, or a job that is
    /// not this node's.
    pub async fn job_result(&self, r: &JobResultReport, now_ms: u64) -> Result<JobResultAck> {
        let node = r.verify()?;
        let n = self.store.node(&node).await?.ok_or(Refusal::UnknownNode)?;
        if n.status == NodeStatus::Revoked {
            return Err(Refusal::Revoked(n.status_reason).into());
        }
        let result =
            serde_json::to_value(&r.result).map_err(|e| ControlError::store("result json", e))?;
        let stored = self
            .store
            .finish_job(
                &node,
                &r.job_id.0,
                r.outcome.as_str(),
                r.code.as_ref().map(|c| c.as_str()),
                &result,
                now_ms,
            )
            .await?;
        tracing::info!(node = %node, job = %r.job_id.to_hex(), outcome = r.outcome.as_str(), stored, "job result");
        if stored {
            self.rotation_reported(&node, r).await?;
        }
        Ok(JobResultAck {
            job_id: r.job_id,
            stored,
        })
    }

    /// After a stored report of a `rotate_issuer_key` job: a success moves the node's pinned key
    /// to the job's new key (only from the job's signer, so a late report changes nothing); any
    /// other outcome sends its later jobs back to the key it still pins.
    async fn rotation_reported(&self, node: &NodeId, r: &JobResultReport) -> Result<()> {
        let Some(row) = self.store.job(node, &r.job_id.0).await? else {
            return Ok(());
        };
        let Ok(signed) = SignedJob::decode(&row.envelope) else {
            return Ok(());
        };
        let JobKind::RotateIssuerKey { new_issuer } = signed.body().kind else {
            return Ok(());
        };
        let old = signed.body().issuer;
        if r.outcome == JobOutcome::Succeeded {
            let applied = self.store.confirm_job_key(node, &old, &new_issuer).await?;
            tracing::info!(node = %node, key = %new_issuer.to_hex(), applied, "node pins the new job key");
        } else {
            self.store.abandon_job_key_next(node, &new_issuer).await?;
            tracing::warn!(node = %node, outcome = r.outcome.as_str(), "job key rotation failed on the node; its jobs stay signed with the key it pins");
        }
        Ok(())
    }

    /// A node's jobs (newest first) for an operator of its organisation.
    ///
    /// # Errors
    /// `Refused(UnknownNode)` for a node of another organisation.
    pub async fn jobs(&self, org_id: &str, node: &NodeId) -> Result<Vec<JobView>> {
        match self.store.node(node).await? {
            Some(n) if n.org_id == org_id => Ok(self
                .store
                .jobs(node)
                .await?
                .into_iter()
                .map(JobView::from)
                .collect()),
            _ => Err(Refusal::UnknownNode.into()),
        }
    }

    // ---- receipts -------------------------------------------------------------------------

    /// Stores a node's upload of its own signed receipts: the batch signature, every receipt's
    /// signature and node, then each receipt once (by id) with its usage per model and day.
    /// Uploads from a suspended, revoked, expired or unknown node are refused at once.
    ///
    /// # Errors
    /// `Invalid` for a forged batch or a receipt of another node; `Refused` for the node's status.
    pub async fn upload_receipts(
        &self,
        u: &ReceiptUpload,
        now_ms: u64,
    ) -> Result<ReceiptUploadAck> {
        let node = match u.verify() {
            Ok(n) => n,
            Err(e) => {
                self.metrics
                    .receipts_refused
                    .fetch_add(u.receipts.len() as u64, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        if let Err(e) = self.active_node(&node, now_ms).await {
            self.metrics
                .receipts_refused
                .fetch_add(u.receipts.len() as u64, Ordering::Relaxed);
            return Err(e);
        }
        let rows = u
            .receipts
            .iter()
            .map(|r| {
                let b = r.body();
                ReceiptRow {
                    receipt_id: r.receipt_id().0,
                    node_id: b.node_id,
                    model_id: b.model_id.clone(),
                    mode: b.mode.as_str().to_string(),
                    prompt_tokens: b.prompt_tokens,
                    completion_tokens: b.completion_tokens,
                    price_micro_credits: b.price_micro_credits,
                    started_at_ms: b.started_at_ms,
                    signed: r.encode(),
                }
            })
            .collect();
        let (stored, duplicates) = self.store.store_receipts(rows, now_ms).await?;
        // Network receipts of requests whose client went away mid-stream settle their holds.
        if let Err(e) = self
            .settle_uploaded(&u.receipts, &u.public_key, now_ms)
            .await
        {
            tracing::error!(error = %e, "settling holds with uploaded receipts failed; the stale-hold sweep will look again");
        }
        self.metrics
            .receipts_stored
            .fetch_add(u64::from(stored), Ordering::Relaxed);
        self.metrics
            .receipts_duplicate
            .fetch_add(u64::from(duplicates), Ordering::Relaxed);
        Ok(ReceiptUploadAck { stored, duplicates })
    }

    /// A node's receipt count and usage per model and day, for an operator of its organisation.
    ///
    /// # Errors
    /// `Refused(UnknownNode)` for a node of another organisation.
    pub async fn usage(&self, org_id: &str, node: &NodeId) -> Result<serde_json::Value> {
        match self.store.node(node).await? {
            Some(n) if n.org_id == org_id => Ok(serde_json::json!({
                "node_id": node,
                "receipts": self.store.receipt_count(node).await?,
                "days": self.store.usage(node).await?,
            })),
            _ => Err(Refusal::UnknownNode.into()),
        }
    }
}
