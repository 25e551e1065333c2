//! Managed mode, the node's side: enrollment in a control plane by proof of possession, and
//! signed heartbeats. Every connection is node-dialed HTTPS; managed mode opens no listener.
//!
//! * [`enroll`]: `POST /v1/node/enroll/challenge`, sign a b3iq-core `EnrollmentProof` over the
//!   control plane's nonce with the node key (the key never leaves the node), `POST
//!   /v1/node/enroll` with the single-use token, then persist the enrollment, pin the control
//!   plane's job-signing key as a `Remote` trust root, and switch the node to managed mode, in
//!   that order, each durable before the next.
//! * [`unenroll`]: back to local mode; the trust root and the enrollment are forgotten.
//! * [`run_heartbeats`]: while enrolled, a signed heartbeat every interval with a sequence that
//!   is made durable before it is sent, so it increases across restarts.
//! * [`remote_jobs`]: long-polls for signed jobs and reports their outcomes from an outbox.
//! * [`upload_receipts`]: the receipt outbox: receipts written since enrollment go to the
//!   control plane in signed batches after each heartbeat, marked only once stored, so a
//!   control plane that restarts or a network that drops loses none and counts none twice.
//!
//! What is persisted (state.db `meta`): [`META_ENROLLMENT`] (JSON [`Enrollment`]),
//! [`META_HEARTBEAT_SEQUENCE`], [`META_LAST_HEARTBEAT`] (JSON [`HeartbeatReport`]).

pub mod remote_jobs;
pub mod wallet;

use std::sync::Arc;
use std::time::Duration;

use b3iq_core::digest::Sha256Digest;
use b3iq_core::enrollment::EnrollmentProof;
use b3iq_core::heartbeat::{HealthStatus, Heartbeat, HeartbeatCounts, MAX_INVENTORY};
use b3iq_core::job::IssuerClass;
use b3iq_core::mode::OperatingMode;
use b3iq_core::receipt::SignedReceipt;
use b3iq_core::{NodeKey, NodePublicKey};
use b3iq_protocol::messages::{
    EnrollmentAccepted, EnrollmentChallenge, EnrollmentRequest, HeartbeatAck, HeartbeatRequest,
    ReceiptUpload, ReceiptUploadAck, MAX_RECEIPTS_PER_UPLOAD,
};

use crate::context::{unix_now, unix_now_ms, NodeState};
use crate::error::{HostError, Result};
use crate::store::jobs::{self as jobs_sql, TrustRoot};
use crate::store::managed as managed_sql;
use crate::store::Db;

pub use crate::store::managed::{META_ENROLLMENT, META_HEARTBEAT_SEQUENCE, META_LAST_HEARTBEAT};

/// Request timeout for control-plane calls.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read from a control plane (64 KiB).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A persisted enrollment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// The control plane's base URL (`https://...`, no trailing slash).
    pub control_url: String,
    /// Its id (the proof's audience).
    pub audience: String,
    /// The organisation the node belongs to there.
    pub org_id: String,
    /// The pinned job-signing key (a `Remote` trust root).
    pub job_key: NodePublicKey,
    /// Heartbeat interval, ms.
    pub heartbeat_interval_ms: u64,
    /// Enrollment time, unix ms.
    pub enrolled_at_ms: u64,
    /// The enrollment ends here unless renewed, unix ms.
    pub expires_at_ms: u64,
    /// The PEM certificate(s) trusted for the control plane's TLS (from `--ca-file`); `None`
    /// trusts the built-in web roots.
    pub ca_pem: Option<String>,
    /// Receipts written from this time on (unix ms, the node's clock at enrollment) are uploaded;
    /// earlier ones, from local mode, stay private.
    #[serde(default)]
    pub receipts_from_ms: u64,
    /// The highest job sequence received under a job key rotated out since (0 before any
    /// rotation): polls ask for jobs above it and above every sequence seen from `job_key`.
    #[serde(default)]
    pub job_sequence_floor: u64,
}

/// The outcome of the last heartbeat, for `b3iqd status` and the wizard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeartbeatReport {
    /// When it was sent, unix ms.
    pub at_ms: u64,
    /// Its sequence.
    pub sequence: u64,
    /// `accepted`, `refused` (the control plane said no: see `error`) or `unreachable`.
    pub outcome: String,
    /// The control plane's error code (`node_suspended`, `node_revoked`, ...), if refused.
    pub code: Option<String>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// The current enrollment, if any.
///
/// # Errors
/// `Db`; `Config` when the stored JSON does not parse.
pub fn enrollment(db: &Db) -> Result<Option<Enrollment>> {
    match db.meta_get(META_ENROLLMENT)?.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => parse_enrollment(&s).map(Some),
    }
}

/// The last heartbeat's outcome, if any was sent.
///
/// # Errors
/// `Db`.
pub fn last_heartbeat(db: &Db) -> Result<Option<HeartbeatReport>> {
    Ok(db
        .meta_get(META_LAST_HEARTBEAT)?
        .and_then(|s| serde_json::from_str(&s).ok()))
}

/// Checks a control-plane URL: `https://host[:port]` with an optional path prefix, no query,
/// fragment or credentials. Returns it without a trailing slash.
///
/// # Errors
/// `InvalidParameter` saying what is wrong.
pub fn check_control_url(url: &str) -> Result<String> {
    let u = reqwest::Url::parse(url)
        .map_err(|e| HostError::InvalidParameter(format!("--control {url:?}: {e}")))?;
    if u.scheme() != "https" {
        return Err(HostError::InvalidParameter(format!("--control must be an https:// URL (got {}://); the control plane is only reached over TLS", u.scheme())));
    }
    if !u.username().is_empty()
        || u.password().is_some()
        || u.query().is_some()
        || u.fragment().is_some()
        || u.host().is_none()
    {
        return Err(HostError::InvalidParameter(
            "--control takes https://host[:port][/prefix], without credentials, query or fragment"
                .into(),
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// An HTTPS client for the control plane: TLS 1.2+, the given CA (PEM) or the built-in web
/// roots, a request timeout, no redirects, no proxy from the environment unless set.
///
/// # Errors
/// `InvalidParameter` for a CA that does not parse.
pub fn client(ca_pem: Option<&str>) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(CONTROL_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("b3iqd/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem {
        b = trust_only(b, pem).map_err(|e| HostError::InvalidParameter(format!("--ca-file: {e}")))?;
    }
    b.build()
        .map_err(|e| HostError::Internal(format!("http client: {e}")))
}

/// `b` trusting only the PEM certificate(s) in `pem` instead of the web roots (the control
/// plane's self-signed certificate, a private CA; also the release repository's).
///
/// # Errors
/// A message when `pem` does not parse or holds no `CERTIFICATE` block.
pub(crate) fn trust_only(
    mut b: reqwest::ClientBuilder,
    pem: &str,
) -> std::result::Result<reqwest::ClientBuilder, String> {
    let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("it holds no CERTIFICATE block".into());
    }
    b = b.tls_built_in_root_certs(false);
    for c in certs {
        b = b.add_root_certificate(c);
    }
    Ok(b)
}

/// POSTs `body` (JSON) and decodes a JSON answer of at most [`MAX_ANSWER_BYTES`]; a control-plane
/// error becomes `ControlPlane` with its message and code.
pub(crate) async fn post<T: serde::de::DeserializeOwned>(
    c: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    body: &impl serde::Serialize,
    timeout: Option<Duration>,
) -> std::result::Result<T, CallError> {
    let mut req = c.post(url).json(body);
    if let Some(t) = timeout {
        req = req.timeout(t);
    }
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| CallError::Unreachable(describe(&e)))?;
    let status = resp.status();
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(CallError::Unreachable(format!(
            "answer of {} bytes is too large",
            resp.content_length().unwrap_or(0)
        )));
    }
    let mut bytes = Vec::new();
    let mut resp = resp;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| CallError::Unreachable(describe(&e)))?
    {
        if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(CallError::Unreachable("answer too large".into()));
        }
        bytes.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let msg = v["error"]["message"]
            .as_str()
            .map(|m| m.chars().take(300).collect::<String>())
            .unwrap_or_else(|| format!("HTTP {status}"));
        let code = v["error"]["code"]
            .as_str()
            .map(|c| c.chars().take(40).collect::<String>());
        return Err(CallError::Refused {
            status: status.as_u16(),
            code,
            message: msg,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        CallError::Unreachable(format!("the control plane's answer does not parse: {e}"))
    })
}

/// Why a control-plane call failed.
#[derive(Debug, Clone)]
pub(crate) enum CallError {
    /// Transport failure or an unreadable answer.
    Unreachable(String),
    /// The control plane answered with an error.
    Refused {
        /// HTTP status.
        status: u16,
        /// Its error code.
        code: Option<String>,
        /// Its message.
        message: String,
    },
}

impl From<CallError> for HostError {
    fn from(e: CallError) -> HostError {
        match e {
            CallError::Unreachable(m) => HostError::ControlPlane(format!("unreachable: {m}")),
            CallError::Refused {
                status, message, ..
            } => HostError::ControlPlane(format!("refused (HTTP {status}): {message}")),
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    // reqwest's Display hides the TLS cause; walk the chain so "certificate unknown" shows.
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    if s.contains("UnknownIssuer") || s.contains("invalid peer certificate") {
        s.push_str(" (pass the control plane's certificate with --ca-file)");
    }
    s
}

/// Proof of possession, shared by enrollment and renewal: asks `base` for a one-time challenge
/// and signs an `EnrollmentProof` over its nonce and audience with the node key.
async fn prove(
    c: &reqwest::Client,
    base: &str,
    key: &NodeKey,
) -> Result<(EnrollmentChallenge, EnrollmentRequest)> {
    let challenge: EnrollmentChallenge = post(
        c,
        &format!("{base}/v1/node/enroll/challenge"),
        None,
        &serde_json::json!({}),
        None,
    )
    .await?;
    let proof = key.sign_object(EnrollmentProof {
        node_id: key.node_id(),
        public_key: key.public(),
        audience: challenge.audience.as_str().to_string(),
        nonce: challenge.nonce,
        signed_at_ms: unix_now_ms(),
    })?;
    let req = EnrollmentRequest {
        challenge_id: challenge.challenge_id,
        proof,
    };
    Ok((challenge, req))
}

/// Enrolls the node in the control plane at `control_url` with a single-use `token`, trusting
/// `ca_pem` for its TLS (else the built-in roots). On success the enrollment is persisted, the
/// control plane's job key is pinned as a `Remote` trust root, and the mode is `managed`;
/// a node already enrolled is refused (run [`unenroll`] first).
///
/// # Errors
/// `InvalidParameter` for a bad URL, token or CA; `ModeNotAvailable` when already enrolled;
/// `ControlPlane` with the control plane's reason (used or expired token or challenge, another
/// audience, a revoked node) or the transport's; `Db`.
pub async fn enroll(
    db: &Db,
    key: &NodeKey,
    control_url: &str,
    token: &str,
    ca_pem: Option<&str>,
) -> Result<Enrollment> {
    let base = check_control_url(control_url)?;
    b3iq_core::credential::Credential::parse_kind(
        token.trim(),
        b3iq_core::credential::CredentialKind::Enrollment,
    )
    .map_err(|e| HostError::InvalidParameter(format!("enrollment token: {e}")))?;
    if let Some(e) = enrollment(db)? {
        return Err(HostError::ModeNotAvailable(format!(
            "already enrolled with {} ({}); run `b3iqd unenroll` first",
            e.audience, e.control_url
        )));
    }
    let c = client(ca_pem)?;
    let (challenge, req) = prove(&c, &base, key).await?;
    let acc: EnrollmentAccepted = post(
        &c,
        &format!("{base}/v1/node/enroll"),
        Some(token.trim()),
        &req,
        None,
    )
    .await?;
    if acc.node_id != key.node_id() || acc.audience != challenge.audience {
        return Err(HostError::ControlPlane(
            "the answer names another node or control plane; not enrolled".into(),
        ));
    }
    let e = Enrollment {
        control_url: base,
        audience: acc.audience.as_str().to_string(),
        org_id: acc.org_id.as_str().to_string(),
        job_key: acc.job_key,
        heartbeat_interval_ms: acc.heartbeat_interval_ms.clamp(1_000, 3_600_000),
        enrolled_at_ms: acc.enrolled_at_ms,
        expires_at_ms: acc.expires_at_ms,
        ca_pem: ca_pem.map(str::to_string),
        receipts_from_ms: unix_now_ms(),
        job_sequence_floor: 0,
    };
    let json = serde_json::to_string(&e).map_err(|x| HostError::Internal(x.to_string()))?;
    let now = unix_now();
    managed_sql::put_enrollment(db, &json)?;
    jobs_sql::put_trust_root(
        db,
        &TrustRoot {
            key: e.job_key,
            class: IssuerClass::Remote,
            added_at: now,
            label: format!("control plane {}", e.audience),
        },
    )?;
    crate::context::mode::store(db, OperatingMode::Managed)?;
    db.audit(
        now,
        "owner",
        "managed.enroll",
        &e.audience,
        "ok",
        &format!("org={} job_key={}", e.org_id, e.job_key.to_hex()),
    );
    Ok(e)
}

fn parse_enrollment(s: &str) -> Result<Enrollment> {
    serde_json::from_str(s)
        .map_err(|e| HostError::Config(format!("state.db managed_enrollment: {e}")))
}

/// In one transaction: change the current enrollment with `f` (a read-modify-write that cannot
/// lose a concurrent change, such as a renewal's new term racing a key rotation). Returns the
/// enrollment as written, or `None` when the node is not enrolled (nothing is written).
///
/// # Errors
/// `Db`; `Config` for a corrupt enrollment row.
pub fn update_enrollment(db: &Db, f: impl FnOnce(&mut Enrollment)) -> Result<Option<Enrollment>> {
    db.tx(|tx| {
        let Some(json) = managed_sql::enrollment_json_in(tx)? else {
            return Ok(None);
        };
        let mut e = parse_enrollment(&json)?;
        f(&mut e);
        managed_sql::put_enrollment_json_in(
            tx,
            &serde_json::to_string(&e).map_err(|x| HostError::Internal(x.to_string()))?,
        )?;
        Ok(Some(e))
    })
}

/// Inside `tx` (the transaction that records a `rotate_issuer_key` job): the control plane's
/// pinned job key `old` (the job's verified signer) is replaced by `new`, in the enrollment and
/// in the trust roots, so from the commit on jobs signed by `old` are refused as from an
/// untrusted issuer. The highest job sequence accepted from `old` is kept in the enrollment
/// (`job_sequence_floor`), so the next poll does not ask again for jobs already received.
/// Checks come before any write: an error leaves nothing changed.
///
/// # Errors
/// `InvalidParameter` when the node is not enrolled or `old` is not the pinned key; `Db`.
pub fn rotate_job_key_in(
    tx: &rusqlite::Transaction<'_>,
    old: &NodePublicKey,
    new: &NodePublicKey,
    now: u64,
) -> Result<()> {
    let Some(json) = managed_sql::enrollment_json_in(tx)? else {
        return Err(HostError::InvalidParameter(
            "rotate_issuer_key refused: the node is not enrolled with a control plane".into(),
        ));
    };
    let mut e = parse_enrollment(&json)?;
    if &e.job_key != old {
        return Err(HostError::InvalidParameter(format!(
            "rotate_issuer_key refused: it is signed by {}, not by the pinned job key {}",
            old.to_hex(),
            e.job_key.to_hex()
        )));
    }
    e.job_sequence_floor = e
        .job_sequence_floor
        .max(managed_sql::max_seen_sequence_in(tx, &old.to_hex())?);
    e.job_key = *new;
    managed_sql::replace_remote_root_in(
        tx,
        &old.to_hex(),
        &new.to_hex(),
        &format!("control plane {}", e.audience),
        now,
    )?;
    managed_sql::put_enrollment_json_in(
        tx,
        &serde_json::to_string(&e).map_err(|x| HostError::Internal(x.to_string()))?,
    )
}

/// How long before the enrollment ends the node renews it: a third of its lifetime, at most
/// 7 days.
pub fn renew_before_ms(e: &Enrollment) -> u64 {
    (e.expires_at_ms.saturating_sub(e.enrolled_at_ms) / 3).min(7 * 24 * 3_600_000)
}

/// Renews the enrollment headlessly: a proof over a fresh challenge (no token), then the new
/// expiry is persisted. Audited.
///
/// # Errors
/// `ControlPlane` with the control plane's reason (suspended, revoked, expired: enroll again)
/// or the transport's; `Db`.
pub async fn renew(
    db: &Db,
    key: &NodeKey,
    e: &Enrollment,
    c: &reqwest::Client,
) -> Result<Enrollment> {
    let (challenge, req) = prove(c, &e.control_url, key).await?;
    if challenge.audience.as_str() != e.audience {
        return Err(HostError::ControlPlane(format!(
            "the control plane now calls itself {}, not {}; not renewed",
            challenge.audience.as_str(),
            e.audience
        )));
    }
    let acc: EnrollmentAccepted = post(
        c,
        &format!("{}/v1/node/enroll/renew", e.control_url),
        None,
        &req,
        None,
    )
    .await?;
    // The answer's job key is not looked at: the pinned key changes only by a
    // `rotate_issuer_key` job signed with the pinned key, never by a renewal.
    if acc.node_id != key.node_id() {
        return Err(HostError::ControlPlane(
            "the renewal names another node; not renewed".into(),
        ));
    }
    // Only the term changes, in one read-modify-write (a key rotation may have landed since
    // `e` was read); the last heartbeat's outcome stays.
    let interval = acc.heartbeat_interval_ms.clamp(1_000, 3_600_000);
    let renewed = update_enrollment(db, |r| {
        r.expires_at_ms = acc.expires_at_ms;
        r.heartbeat_interval_ms = interval;
    })?
    .ok_or_else(|| {
        HostError::ControlPlane("the node was unenrolled during the renewal; not renewed".into())
    })?;
    db.audit(
        unix_now(),
        "system",
        "managed.renew",
        &e.audience,
        "ok",
        &format!("expires_at_ms={}", acc.expires_at_ms),
    );
    Ok(renewed)
}

/// Leaves managed mode: the enrollment and the control plane's trust root are forgotten and the
/// mode is `local`. Returns the enrollment that ended (`None` when not enrolled).
///
/// # Errors
/// `Db`.
pub fn unenroll(db: &Db) -> Result<Option<Enrollment>> {
    let Some(e) = enrollment(db)? else {
        return Ok(None);
    };
    managed_sql::clear_enrollment(db, &e.job_key.to_hex())?;
    crate::context::mode::store(db, OperatingMode::Local)?;
    db.audit(
        unix_now(),
        "owner",
        "managed.unenroll",
        &e.audience,
        "ok",
        "",
    );
    Ok(Some(e))
}

/// The heartbeat body for this node now. Its health is the runtime's: `Healthy` when it
/// serves, `Degraded` with a full queue or no runtime, `Unhealthy` when it cannot serve (a
/// lost GPU device or a dead engine thread: the gateway then routes nothing to the node).
pub async fn heartbeat_body(state: &NodeState, sequence: u64) -> Heartbeat {
    let rt = state.runtime.as_ref().map(|r| r.metrics());
    let served = state.served_models();
    let mut inventory: Vec<Sha256Digest> = served
        .iter()
        .map(|m| m.digest)
        .filter(|d| d.0 != [0; 32])
        .collect();
    inventory.sort();
    inventory.dedup();
    inventory.truncate(MAX_INVENTORY as usize);
    let health = match &state.runtime {
        None => HealthStatus::Degraded,
        Some(r) => match r.health().await.status {
            b3iq_runtime::HealthStatus::Ok => HealthStatus::Healthy,
            b3iq_runtime::HealthStatus::Degraded => HealthStatus::Degraded,
            b3iq_runtime::HealthStatus::Down => HealthStatus::Unhealthy,
        },
    };
    Heartbeat {
        node_id: state.node_id,
        sent_at_ms: unix_now_ms(),
        sequence,
        mode: state.mode(),
        health,
        counts: HeartbeatCounts {
            active_requests: rt.as_ref().map(|m| m.active_sequences).unwrap_or(0),
            queued_requests: rt.as_ref().map(|m| m.queue_depth).unwrap_or(0),
            completed_requests: rt.as_ref().map(|m| m.requests_total).unwrap_or(0),
            failed_requests: rt.as_ref().map(|m| m.requests_rejected_total).unwrap_or(0),
            generated_tokens: rt.as_ref().map(|m| m.generated_tokens_total).unwrap_or(0),
            uptime_s: state.started.elapsed().as_secs(),
        },
        model_inventory: inventory,
        software_version: Some(crate::update::RUNNING_VERSION.to_string()),
    }
}

/// Sends one signed heartbeat and records the outcome in [`META_LAST_HEARTBEAT`].
///
/// # Errors
/// `ControlPlane` when refused or unreachable (also recorded); `Db`; `Core` for signing.
pub async fn send_heartbeat(
    state: &NodeState,
    e: &Enrollment,
    c: &reqwest::Client,
) -> Result<HeartbeatAck> {
    let seq = managed_sql::next_heartbeat_sequence(&state.db)?;
    let body = heartbeat_body(state, seq).await;
    let url = format!("{}/v1/node/heartbeat", e.control_url);
    let send = |hb: Heartbeat| async {
        let signed = state.key.sign_object(hb)?;
        Ok::<_, HostError>(
            post::<HeartbeatAck>(c, &url, None, &HeartbeatRequest { heartbeat: signed }, None)
                .await,
        )
    };
    let mut r = send(body.clone()).await?;
    if refuses_heartbeat_v2(&r) {
        // A control plane built before heartbeat version 2 refuses its version byte: send the
        // same heartbeat as version 1 (without the software version), so heartbeats, and the
        // receipt uploads that follow them, keep working while control planes are upgraded.
        r = send(Heartbeat {
            software_version: None,
            ..body
        })
        .await?;
    }
    let report = match &r {
        Ok(_) => HeartbeatReport {
            at_ms: unix_now_ms(),
            sequence: seq,
            outcome: "accepted".into(),
            code: None,
            error: None,
        },
        Err(CallError::Unreachable(m)) => HeartbeatReport {
            at_ms: unix_now_ms(),
            sequence: seq,
            outcome: "unreachable".into(),
            code: None,
            error: Some(m.clone()),
        },
        Err(CallError::Refused { code, message, .. }) => HeartbeatReport {
            at_ms: unix_now_ms(),
            sequence: seq,
            outcome: "refused".into(),
            code: code.clone(),
            error: Some(message.clone()),
        },
    };
    if let Ok(j) = serde_json::to_string(&report) {
        state.db.meta_set(META_LAST_HEARTBEAT, &j)?;
    }
    Ok(r?)
}

/// Whether a heartbeat was refused by a control plane that reads heartbeat version 1 only
/// (b3iq-core's `unsupported_version` for the heartbeat kind, in its 400 answer).
fn refuses_heartbeat_v2<T>(r: &std::result::Result<T, CallError>) -> bool {
    matches!(r, Err(CallError::Refused { status: 400, message, .. })
        if message.contains("unsupported heartbeat version"))
}

/// Uploads the receipts written since enrollment that the control plane does not have yet,
/// in signed batches of up to 256, oldest first, until none is left (at most 16 batches a
/// call); each batch is marked uploaded only after the control plane stored it. Returns how
/// many receipts were sent.
///
/// # Errors
/// `ControlPlane` when refused or unreachable (the receipts stay in the outbox); `Db`.
pub async fn upload_receipts(
    state: &NodeState,
    e: &Enrollment,
    c: &reqwest::Client,
) -> Result<usize> {
    let url = format!("{}/v1/node/receipts", e.control_url);
    let mut sent = 0;
    for _ in 0..16 {
        let rows = crate::store::receipts::not_uploaded(
            &state.db,
            e.receipts_from_ms / 1000,
            MAX_RECEIPTS_PER_UPLOAD as u32,
        )?;
        if rows.is_empty() {
            break;
        }
        let mut receipts = Vec::with_capacity(rows.len());
        for (_, bytes) in &rows {
            receipts.push(SignedReceipt::decode(bytes)?);
        }
        let batch = ReceiptUpload::sign(&state.key, receipts, unix_now_ms())
            .map_err(|x| HostError::Internal(x.to_string()))?;
        let _: ReceiptUploadAck = post(c, &url, None, &batch, None).await?;
        let seqs: Vec<i64> = rows.iter().map(|(s, _)| *s).collect();
        crate::store::receipts::mark_uploaded(&state.db, &seqs, unix_now())?;
        sent += seqs.len();
    }
    Ok(sent)
}

/// While the node runs: if enrolled, send a heartbeat every interval (the enrollment is re-read
/// each time, so `b3iqd enroll` / `unenroll` take effect without a restart); back off with
/// jitter while the control plane is unreachable. Logs refusals (suspended, revoked) once per
/// change. Returns when `stop` resolves.
pub async fn run_heartbeats(state: Arc<NodeState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut failures: u32 = 0;
    let mut last_problem: Option<String> = None;
    let mut clients: Option<(Option<String>, reqwest::Client)> = None;
    loop {
        // `b3iqd enroll` / `unenroll` change the mode in state.db; receipts and heartbeats
        // must name the mode the node is really in.
        if let Err(e) = state.reload_mode() {
            tracing::error!(error = %e, "managed mode: cannot read the operating mode");
        }
        let wait = match enrollment(&state.db) {
            Ok(Some(e)) => {
                let c = match &clients {
                    Some((ca, c)) if *ca == e.ca_pem => c.clone(),
                    _ => match client(e.ca_pem.as_deref()) {
                        Ok(c) => {
                            clients = Some((e.ca_pem.clone(), c.clone()));
                            c
                        }
                        Err(err) => {
                            tracing::error!(error = %err, "managed mode: cannot build the control-plane client");
                            clients = None;
                            if sleep_or_stop(&mut stop, Duration::from_secs(60)).await {
                                return;
                            }
                            continue;
                        }
                    },
                };
                let interval = Duration::from_millis(e.heartbeat_interval_ms);
                let beat = match send_heartbeat(&state, &e, &c).await {
                    // Receipts go out on the heartbeat's cadence, from the durable outbox.
                    Ok(_) => {
                        // A payout address recorded before enrolling goes out once.
                        if let Err(x) = wallet::send_pending(&state, &e, &c).await {
                            tracing::warn!(error = %x, "managed mode: the payout address was not accepted; retrying on the next heartbeat");
                        }
                        upload_receipts(&state, &e, &c).await.map(|_| ())
                    }
                    Err(x) => Err(x),
                };
                // Renew headlessly once the enrollment nears its end.
                let beat = match beat {
                    Ok(())
                        if e.expires_at_ms.saturating_sub(unix_now_ms()) < renew_before_ms(&e) =>
                    {
                        renew(&state.db, &state.key, &e, &c).await.map(|_| ())
                    }
                    other => other,
                };
                match beat {
                    Ok(()) => {
                        if last_problem.take().is_some() {
                            tracing::info!(control = %e.audience, "managed mode: heartbeats accepted again");
                        }
                        failures = 0;
                        interval
                    }
                    Err(err) => {
                        let msg = err.to_string();
                        if last_problem.as_deref() != Some(msg.as_str()) {
                            tracing::warn!(control = %e.audience, error = %msg, "managed mode: heartbeat or receipt upload not accepted");
                            last_problem = Some(msg);
                        }
                        failures = failures.saturating_add(1);
                        // Exponential backoff from 1 s, capped at the interval, with ±25% jitter.
                        let base = Duration::from_secs(1u64 << failures.min(10)).min(interval);
                        let jitter = rand::random::<f64>() * 0.5 + 0.75;
                        base.mul_f64(jitter)
                    }
                }
            }
            Ok(None) => Duration::from_secs(5),
            Err(err) => {
                tracing::error!(error = %err, "managed mode: cannot read the enrollment");
                Duration::from_secs(30)
            }
        };
        if sleep_or_stop(&mut stop, wait).await {
            return;
        }
    }
}

/// Waits `d`; `true` when the node is stopping (stop set, or its sender gone).
pub(crate) async fn sleep_or_stop(
    stop: &mut tokio::sync::watch::Receiver<bool>,
    d: Duration,
) -> bool {
    if *stop.borrow() {
        return true;
    }
    match tokio::time::timeout(d, stop.changed()).await {
        Ok(Ok(())) => *stop.borrow(),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Context;
    use std::sync::{Arc, Mutex};

    /// A control plane from before heartbeat version 2, as far as heartbeats go: it answers a
    /// version-2 heartbeat exactly as that release did (400, `invalid_message`, serde's message
    /// with b3iq-core's `unsupported_version` text) and accepts version 1.
    async fn old_control_plane(seen: Arc<Mutex<Vec<u8>>>) -> String {
        use axum::{routing::post, Json, Router};
        let app = Router::new().route(
            "/v1/node/heartbeat",
            post(move |Json(v): Json<serde_json::Value>| {
                let seen = seen.clone();
                async move {
                    let version = v["heartbeat"]["version"].as_u64().unwrap_or(0) as u8;
                    seen.lock().unwrap().push(version);
                    if version > 1 {
                        let msg = format!("invalid body: unsupported heartbeat version {version} (this build reads versions 1 to 1); upgrade b3iq at line 1 column 60");
                        return (
                            axum::http::StatusCode::BAD_REQUEST,
                            Json(serde_json::json!({"error": {"message": msg, "type": "invalid_request_error", "param": "body", "code": "invalid_message"}})),
                        );
                    }
                    let seq = v["heartbeat"]["body"]["sequence"].as_u64().unwrap_or(0);
                    (
                        axum::http::StatusCode::OK,
                        Json(serde_json::json!({"sequence": seq, "next_heartbeat_at_ms": 0, "pending_jobs": 0})),
                    )
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        url
    }

    /// Issue "wgpu fallback backend": a lost GPU device marks the runtime unhealthy and the
    /// heartbeat says so (the gateway routes nothing to an `Unhealthy` node). A real wgpu
    /// device (Mesa's lavapipe in CI), destroyed as a driver reset would.
    #[tokio::test]
    async fn a_lost_gpu_device_makes_the_heartbeat_unhealthy() {
        use b3iq_runtime::backend::wgpu::{WgpuConfig, WgpuRuntime};
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::open(Some(dir.path().join("h"))).unwrap();
        let rt = WgpuRuntime::new(WgpuConfig::default()).expect("a wgpu adapter (install mesa-vulkan-drivers)");
        let dev = rt.device().clone();
        let st = NodeState::new(ctx, Some(Arc::new(rt) as Arc<dyn b3iq_runtime::Runtime>), Vec::new()).unwrap();
        assert_eq!(heartbeat_body(&st, 1).await.health, HealthStatus::Healthy);
        dev.destroy();
        assert_eq!(heartbeat_body(&st, 2).await.health, HealthStatus::Unhealthy);
    }

    #[tokio::test]
    async fn heartbeats_fall_back_to_version_1_for_an_older_control_plane() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::open(Some(dir.path().join("h"))).unwrap();
        let st = NodeState::new(ctx, None, Vec::new()).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let e = Enrollment {
            control_url: old_control_plane(seen.clone()).await,
            audience: "cp-old".into(),
            org_id: "org".into(),
            job_key: NodeKey::from_seed([3; 32]).public(),
            heartbeat_interval_ms: 1000,
            enrolled_at_ms: 0,
            expires_at_ms: u64::MAX,
            ca_pem: None,
            receipts_from_ms: 0,
            job_sequence_floor: 0,
        };
        let c = client(None).unwrap();
        // This build writes version 2 (with its version); the old control plane refuses it and
        // accepts the same heartbeat as version 1.
        assert_eq!(heartbeat_body(&st, 1).await.software_version.as_deref(), Some(crate::update::RUNNING_VERSION));
        let ack = send_heartbeat(&st, &e, &c).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), [2, 1]);
        let report: serde_json::Value = serde_json::from_str(&st.db.meta_get(META_LAST_HEARTBEAT).unwrap().unwrap()).unwrap();
        assert_eq!(report["outcome"], "accepted");
        assert_eq!(report["sequence"], ack.sequence);
        // Any other refusal is not retried.
        assert!(!refuses_heartbeat_v2::<()>(&Err(CallError::Refused { status: 400, code: None, message: "invalid sent_at_ms".into() })));
    }
}
