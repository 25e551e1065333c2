//! The job executor: it runs only a [`VerifiedJob`], by b3iq-core's [`JobKind`] (one job
//! vocabulary; the API and the records use core's wire names).
//!
//! Every job takes the same path whoever issued it: a signed envelope is opened against the
//! persisted trust roots (signature, audience, validity window, replay and sequence, with the
//! job id written to the durable seen-set before anything runs), the core [`JobPolicy`] decides
//! for the issuer's class (the owner's own key is `OwnerLocal`; a control plane will be
//! `Remote`) and the node's persisted mode, a preflight checks the job can run here, then it is
//! recorded and executed. Every decision is an audit event.

use std::sync::Arc;

use b3iq_core::identity::NodeKey;
use b3iq_core::job::SeenSet as _;
use b3iq_core::job::{
    IssuerClass, Job, JobId, JobKind, JobPolicy, PolicyDecision, SignedJob, TrustRoots, Verdict,
    VerifiedJob,
};
use b3iq_core::mode::OperatingMode;
use b3iq_core::CoreError;
use b3iq_runtime::catalog::Catalog;
use serde_json::{json, Value};

use crate::context::{key, unix_now_ms, Context, NodeState};
use crate::error::{HostError, Result};
use crate::store::jobs::{self as sql, TrustRoot, TxSeenSet};

pub use crate::store::jobs::JobRecord;

/// Seconds a job envelope stays valid after issue.
pub const JOB_TTL_S: u64 = 300;

/// The benchmark suites `run_benchmark` accepts.
pub const BENCHMARK_SUITES: &[&str] = &["quick"];

/// Parse a job as the API takes it: `{"kind": NAME, ...}` with core's wire names
/// (`install_model_profile` and `remove_model_profile` with `profile_id`, `run_benchmark` with an
/// optional `suite` (default `quick`), `build_support_bundle`, `restart_runtime`, `change_mode`
/// with `mode`, `update` with an optional `version`: the lowest release it may install,
/// `load_model` with `model`: an installed model's id as `GET /v1/models` lists it). The names the wizard used before (`install_model`, `remove_model` with
/// `profile`, `support_bundle`) are accepted as aliases of the same core kinds.
///
/// # Errors
/// `UnknownJobKind`; `InvalidParameter` for a missing field; `UnknownProfile`.
pub fn kind_from_api(v: &Value) -> Result<JobKind> {
    let kind = v["kind"]
        .as_str()
        .ok_or_else(|| HostError::InvalidParameter("`kind` is required".into()))?;
    let profile = || -> Result<String> {
        let p = v["profile_id"]
            .as_str()
            .or_else(|| v["profile"].as_str())
            .ok_or_else(|| {
                HostError::InvalidParameter("`profile_id` is required for this job kind".into())
            })?;
        Catalog::builtin()
            .get(p)
            .map_err(|_| HostError::UnknownProfile(p.chars().take(100).collect()))?;
        Ok(p.to_string())
    };
    Ok(match kind {
        "install_model_profile" | "install_model" => JobKind::InstallModelProfile {
            profile_id: profile()?,
        },
        "remove_model_profile" | "remove_model" => JobKind::RemoveModelProfile {
            profile_id: profile()?,
        },
        "run_benchmark" => JobKind::RunBenchmark {
            suite: v["suite"].as_str().unwrap_or("quick").to_string(),
        },
        "load_model" => {
            let m = v["model"].as_str().ok_or_else(|| {
                HostError::InvalidParameter("`model` is required for load_model".into())
            })?;
            b3iq_core::codec::check_identifier(
                "model",
                m,
                b3iq_core::job::MAX_MODEL_ID_LEN as usize,
            )
            .map_err(|e| HostError::InvalidParameter(e.to_string()))?;
            JobKind::LoadModel {
                model: m.to_string(),
            }
        }
        "build_support_bundle" | "support_bundle" => JobKind::BuildSupportBundle {},
        "restart_runtime" => JobKind::RestartRuntime {},
        "update" => JobKind::Update {
            version: match &v["version"] {
                Value::Null => None,
                Value::String(s) => {
                    b3iq_core::version::SoftwareVersion::parse(s)
                        .map_err(|e| HostError::InvalidParameter(e.to_string()))?;
                    Some(s.clone())
                }
                _ => {
                    return Err(HostError::InvalidParameter(
                        "`version` of an update job is a string (MAJOR.MINOR.PATCH)".into(),
                    ))
                }
            },
        },
        "change_mode" => {
            let m = v["mode"].as_str().ok_or_else(|| {
                HostError::InvalidParameter("`mode` is required for change_mode".into())
            })?;
            JobKind::ChangeMode {
                mode: m.parse().map_err(|e: b3iq_core::CoreError| {
                    HostError::InvalidParameter(e.to_string())
                })?,
            }
        }
        other => return Err(HostError::UnknownJobKind(other.chars().take(40).collect())),
    })
}

/// What a `rotate_issuer_key` job records as its result.
fn rotation_result(new_issuer: &b3iq_core::NodePublicKey) -> Value {
    json!({"issuer": new_issuer.to_hex()})
}

fn profile_of(kind: &JobKind) -> Option<&str> {
    match kind {
        JobKind::InstallModelProfile { profile_id }
        | JobKind::RemoveModelProfile { profile_id } => Some(profile_id),
        _ => None,
    }
}

/// The persisted trust roots as core's [`TrustRoots`], with each root's record (for its class).
///
/// # Errors
/// `Db`; `Config` for a corrupt row.
pub fn trust_roots(ctx: &Context) -> Result<(TrustRoots, Vec<TrustRoot>)> {
    let roots = sql::trust_roots(&ctx.db)?;
    Ok((TrustRoots::new(roots.iter().map(|r| r.key)), roots))
}

/// Sign a job for this node with `issuer`, with the sequence after `last_sequence`.
///
/// # Errors
/// `Core` when signing fails.
pub fn sign_job(
    ctx: &Context,
    issuer: &NodeKey,
    kind: JobKind,
    last_sequence: Option<u64>,
    now_ms: u64,
) -> Result<SignedJob> {
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    let job = Job {
        job_id: JobId(id),
        audience: ctx.node_id,
        issuer: issuer.public(),
        issued_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(JOB_TTL_S * 1000),
        sequence: last_sequence.map(|l| l + 1).unwrap_or(1),
        kind,
    };
    Ok(issuer.sign_object(job)?)
}

/// Sign a job for this node with the owner's issuer key (a sequence above every one recorded).
/// [`submit_owner`] signs inside its accepting transaction instead, so concurrent owner jobs
/// never share a sequence.
///
/// # Errors
/// `Db`; `Core` when signing fails.
pub fn issue_owner_job(
    ctx: &Context,
    issuer: &NodeKey,
    kind: JobKind,
    now_ms: u64,
) -> Result<SignedJob> {
    let last = ctx.db.tx(|tx| {
        TxSeenSet(tx)
            .last_sequence(&issuer.public())
            .map_err(|e| HostError::Internal(e.0))
    })?;
    sign_job(ctx, issuer, kind, last, now_ms)
}

/// Inside `tx`: verify `job` against the trust roots, recording its id and sequence in the
/// seen-set of the same transaction, then decide by policy for the issuer's class and the mode
/// (`Run` or `NeedsOwnerApproval`; a refusal is an error).
fn open_in(
    st: &NodeState,
    tx: &rusqlite::Transaction<'_>,
    roots: &(TrustRoots, Vec<TrustRoot>),
    job: &SignedJob,
    now_ms: u64,
) -> Result<(VerifiedJob, IssuerClass, PolicyDecision)> {
    let verified = job.open(&roots.0, &st.node_id, now_ms, &mut TxSeenSet(tx))?;
    let class = roots
        .1
        .iter()
        .find(|r| &r.key == job.signer())
        .map(|r| r.class)
        .unwrap_or(IssuerClass::Remote);
    let decision = JobPolicy::default().decide_for(class, verified.kind(), st.mode());
    match decision.verdict {
        Verdict::Run | Verdict::NeedsOwnerApproval => Ok((verified, class, decision)),
        Verdict::Refuse => Err(HostError::InvalidParameter(format!(
            "job refused by policy: {}",
            decision.reason
        ))),
    }
}

/// Open a signed job: verify it against the persisted trust roots (recording it in the durable
/// seen-set; a verified job's id stays consumed even when the policy then refuses it), then
/// decide by policy for the issuer's class and the node's mode. Returns the verified job and the
/// policy's reason.
///
/// # Errors
/// `Core` (untrusted issuer, bad signature, wrong audience, expired, replayed, stale sequence);
/// `InvalidParameter` when the policy refuses or owner approval would be needed; `Db`.
pub fn open(
    st: &NodeState,
    job: &SignedJob,
    now_ms: u64,
) -> Result<(VerifiedJob, IssuerClass, String)> {
    let roots = trust_roots(st)?;
    let (v, class, d) = st.db.tx(|tx| Ok(open_in(st, tx, &roots, job, now_ms)))??;
    if d.verdict == Verdict::NeedsOwnerApproval {
        return Err(HostError::InvalidParameter(format!(
            "job needs the owner's approval: {}",
            d.reason
        )));
    }
    Ok((v, class, d.reason))
}

/// What the preflight needs to know about the node's mode choices, read before the accepting
/// transaction (it holds the database lock, so nothing inside it may read through `st.db`).
struct ModeFacts {
    enrolled: bool,
    network_blocker: Option<String>,
}

impl ModeFacts {
    fn read(st: &NodeState) -> Result<ModeFacts> {
        Ok(ModeFacts {
            enrolled: crate::managed::enrollment(&st.db)?.is_some(),
            network_blocker: crate::network::not_ready(st),
        })
    }
}

/// Whether this node can run `kind` now (checked after the policy, before the job is recorded).
fn preflight(st: &NodeState, kind: &JobKind, facts: &ModeFacts) -> Result<()> {
    match kind {
        JobKind::RunBenchmark { suite } if !BENCHMARK_SUITES.contains(&suite.as_str()) => {
            Err(HostError::InvalidParameter(format!(
                "benchmark suite {suite:?} is not available; use \"quick\""
            )))
        }
        JobKind::RunBenchmark { .. } if st.served_models().is_empty() => {
            Err(HostError::ModelNotLoaded)
        }
        JobKind::RestartRuntime {} => Err(HostError::InvalidParameter(
            "restart_runtime is not available in this build; restart b3iqd instead".into(),
        )),
        JobKind::LoadModel { .. } if st.runtime.is_none() => Err(HostError::ModelNotLoaded),
        JobKind::LoadModel { model }
            if st.served_model(model).is_none() && st.loadable(model)?.is_none() =>
        {
            Err(HostError::ModelNotFound(model.clone()))
        }
        JobKind::ChangeMode {
            mode: OperatingMode::Managed,
        } if !facts.enrolled => Err(HostError::ModeNotAvailable("managed".into())),
        JobKind::Update { .. } => crate::update::Updater::for_home(
            st.home.root(),
            st.config.update_ca_file.as_deref(),
        )
        .map_err(HostError::from)
        .and_then(|u| {
            if u.repository_configured() {
                Ok(())
            } else {
                Err(HostError::InvalidParameter(
                    "update: no release repository is configured on this node; its owner runs `b3iqd update check --repo https://…` once".into(),
                ))
            }
        }),
        JobKind::ChangeMode {
            mode: OperatingMode::Network,
        } => match &facts.network_blocker {
            Some(reason) => Err(HostError::InvalidParameter(format!(
                "network mode cannot be selected: {reason}"
            ))),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The owner asks for a job: in one transaction, sign it with the owner's issuer key and the
/// next sequence, open it, preflight and record it; then start it. Returns it queued, or the
/// refusal (audited as `job.reject`).
///
/// # Errors
/// As [`open`] and the preflight; `NotClaimed` when the node has no owner key yet.
pub async fn submit_owner(st: &Arc<NodeState>, kind: JobKind) -> Result<JobRecord> {
    let issuer = key::owner_issuer(&st.home)?.ok_or(HostError::NotClaimed)?;
    accept(st, "owner", |tx| {
        let last = TxSeenSet(tx)
            .last_sequence(&issuer.public())
            .map_err(|e| HostError::Internal(e.0))?;
        sign_job(st, &issuer, kind, last, unix_now_ms())
    })
}

/// Open, preflight, record and start a signed job from `actor`.
///
/// # Errors
/// As [`open`] and the preflight.
pub async fn submit(st: &Arc<NodeState>, signed: SignedJob, actor: &str) -> Result<JobRecord> {
    accept(st, actor, |_| Ok(signed))
}

/// One transaction: get the signed job from `issue` (which may read the seen-set for a
/// sequence), open it (seen-set record), policy, preflight, job record. The sequence, the
/// seen-set row and the job row commit together, or a refused job commits only its seen-set row.
fn accept(
    st: &Arc<NodeState>,
    actor: &str,
    issue: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<SignedJob>,
) -> Result<JobRecord> {
    let now = st.now();
    let roots = trust_roots(st)?;
    let facts = ModeFacts::read(st)?;
    let (signed, id, opened) = st.db.tx(|tx| {
        let signed = issue(tx)?;
        let id = format!("job_{}", signed.body().job_id.to_hex());
        // A job that waits for the owner is preflighted when approved (the node may change).
        let opened = open_in(st, tx, &roots, &signed, unix_now_ms()).and_then(|(job, class, d)| {
            if d.verdict == Verdict::Run {
                preflight(st, job.kind(), &facts)?;
                // A key rotation takes effect in this transaction, with the job's record: no
                // crash can leave the key changed and the job unrecorded, or the reverse.
                if let JobKind::RotateIssuerKey { new_issuer } = job.kind() {
                    crate::managed::rotate_job_key_in(tx, signed.signer(), new_issuer, now)?;
                }
            }
            Ok((job, class, d))
        });
        if let Ok((job, class, d)) = &opened {
            let total = match job.kind() {
                JobKind::InstallModelProfile { profile_id } => Catalog::builtin()
                    .get(profile_id)
                    .ok()
                    .map(|p| p.size_bytes),
                _ => None,
            };
            let state = match (d.verdict, job.kind()) {
                (Verdict::NeedsOwnerApproval, _) => "awaiting_approval",
                (_, JobKind::RotateIssuerKey { .. }) => "succeeded",
                _ => "queued",
            };
            sql::insert_as(
                tx,
                &id,
                job.kind().name(),
                profile_of(job.kind()),
                total,
                now,
                &signed.encode(),
                state,
                *class,
                signed.body().expires_at_ms,
            )?;
            if let JobKind::RotateIssuerKey { new_issuer } = job.kind() {
                if state == "succeeded" {
                    sql::set_result_in(tx, &id, &rotation_result(new_issuer), now)?;
                }
            }
        }
        Ok((signed, id, opened))
    })?;
    let name = signed.body().kind.name();
    let (job, class, decision) = match opened {
        Ok(o) => o,
        Err(e) => {
            st.db.audit(
                now,
                actor,
                "job.reject",
                &id,
                "refused",
                &format!("{name}: {e}"),
            );
            return Err(e);
        }
    };
    if decision.verdict == Verdict::NeedsOwnerApproval {
        st.db.audit(
            now,
            actor,
            "job.await_approval",
            &id,
            "pending",
            &format!("{name}; {class:?}; {}", decision.reason),
        );
    } else if let JobKind::RotateIssuerKey { new_issuer } = job.kind() {
        st.db.audit(
            now,
            actor,
            "job.accept",
            &id,
            "ok",
            &format!("{name}; {class:?}; {}", decision.reason),
        );
        st.db.audit(
            now,
            "system",
            "managed.rotate_job_key",
            &id,
            "ok",
            &format!("{} -> {}", signed.signer().to_hex(), new_issuer.to_hex()),
        );
    } else {
        st.db.audit(
            now,
            actor,
            "job.accept",
            &id,
            "ok",
            &format!("{name}; {class:?}; {}", decision.reason),
        );
        start(st, id.clone(), job, class);
    }
    sql::get(&st.db, &id)?.ok_or_else(|| HostError::Internal("job vanished".into()))
}

/// Run an accepted job in the background, one at a time, recording its outcome (and, for a
/// failure, the error code a control plane is told).
fn start(st: &Arc<NodeState>, id: String, job: VerifiedJob, class: IssuerClass) {
    let st2 = st.clone();
    tokio::spawn(async move {
        let _g = st2.job_lock.lock().await;
        let _ = sql::set_state(&st2.db, &id, "running", None, None, st2.now());
        let r = execute(&st2, &id, &job, class).await;
        let now = st2.now();
        let name = job.kind().name();
        match r {
            // Audit first, so a client that sees the final state also sees its audit event.
            Ok(v) => {
                st2.db.audit(now, "system", "job.execute", &id, "ok", name);
                let _ = sql::set_state(&st2.db, &id, "succeeded", None, Some(&v), now);
            }
            Err(e) => {
                st2.db.audit(
                    now,
                    "system",
                    "job.execute",
                    &id,
                    "failed",
                    &format!("{name}: {}", e.code()),
                );
                let _ = sql::set_code(&st2.db, &id, error_code(&e));
                let _ = sql::set_state(&st2.db, &id, "failed", Some(&e.to_string()), None, now);
            }
        }
    });
}

/// The code a control plane is told for a job error: the core's own code for a verification
/// failure (`untrusted_issuer`, `expired`, ...), else the node's.
pub fn error_code(e: &HostError) -> &'static str {
    match e {
        HostError::Core(c) => c.code(),
        other => other.code(),
    }
}

/// A job from the control plane (managed mode): opened against the pinned trust roots like any
/// other; a refusal other than a replay is recorded as `refused` (with its code) so the control
/// plane learns of it; a job the policy gives to the owner waits as `awaiting_approval`.
///
/// # Errors
/// As [`submit`].
pub async fn submit_remote(st: &Arc<NodeState>, signed: SignedJob) -> Result<JobRecord> {
    match accept(st, "control_plane", |_| Ok(signed.clone())) {
        Ok(r) => Ok(r),
        Err(e) => {
            let replay = matches!(
                &e,
                HostError::Core(CoreError::Replayed { .. } | CoreError::StaleSequence { .. })
            );
            if !replay {
                let b = signed.body();
                let id = format!("job_{}", b.job_id.to_hex());
                sql::insert_refused(
                    &st.db,
                    &id,
                    b.kind.name(),
                    st.now(),
                    &signed.encode(),
                    b.expires_at_ms,
                    &e.to_string(),
                    error_code(&e),
                )?;
            }
            Err(e)
        }
    }
}

/// Re-checks an approved job's envelope without the replay rules (its id is in the seen-set
/// since it was accepted; the state change `awaiting_approval` -> `queued` is what makes it run
/// once).
struct Reopen;

impl b3iq_core::job::SeenSet for Reopen {
    fn contains(&self, _: &JobId) -> std::result::Result<bool, b3iq_core::job::SeenSetError> {
        Ok(false)
    }
    fn last_sequence(
        &self,
        _: &b3iq_core::NodePublicKey,
    ) -> std::result::Result<Option<u64>, b3iq_core::job::SeenSetError> {
        Ok(None)
    }
    fn record(
        &mut self,
        _: &b3iq_core::NodePublicKey,
        _: &JobId,
        _: u64,
        _: u64,
    ) -> std::result::Result<(), b3iq_core::job::SeenSetError> {
        Ok(())
    }
}

fn awaiting(st: &NodeState, id: &str) -> Result<Vec<u8>> {
    let shown = || id.chars().take(80).collect::<String>();
    let rec =
        sql::get(&st.db, id)?.ok_or_else(|| HostError::NotFound(format!("job {}", shown())))?;
    if rec.state != "awaiting_approval" {
        return Err(HostError::InvalidParameter(format!(
            "job {} is {}, not awaiting approval",
            shown(),
            rec.state
        )));
    }
    Ok(sql::envelope(&st.db, id)?
        .ok_or_else(|| HostError::NotFound(format!("job {}", shown())))?
        .0)
}

/// The owner approves a job waiting for approval: its envelope is checked again (trust roots,
/// signature, audience, expiry: a job signed by a key rotated out or unenrolled since, or past
/// its expiry, is not run), then preflighted and started.
///
/// # Errors
/// `NotFound`; `InvalidParameter` when it is not awaiting approval or fails the preflight;
/// `Core` when its envelope no longer verifies (the job is then `expired` or `refused`).
pub fn approve(st: &Arc<NodeState>, id: &str) -> Result<JobRecord> {
    let env = awaiting(st, id)?;
    let now = st.now();
    let signed = SignedJob::decode(&env)?;
    let roots = trust_roots(st)?;
    let checked = signed
        .open(&roots.0, &st.node_id, unix_now_ms(), &mut Reopen)
        .map_err(HostError::from)
        .and_then(|j| {
            ModeFacts::read(st)
                .and_then(|f| preflight(st, j.kind(), &f))
                .map(|_| j)
        });
    let job = match checked {
        Ok(j) => j,
        Err(e) => {
            let to = if matches!(e, HostError::Core(CoreError::Expired { .. })) {
                "expired"
            } else {
                "refused"
            };
            if sql::transition(&st.db, id, "awaiting_approval", to, now)? {
                sql::set_code(&st.db, id, error_code(&e))?;
                sql::set_state(&st.db, id, to, Some(&e.to_string()), None, now)?;
            }
            st.db
                .audit(now, "owner", "job.approve", id, "refused", e.code());
            return Err(e);
        }
    };
    if !sql::transition(&st.db, id, "awaiting_approval", "queued", now)? {
        return Err(HostError::InvalidParameter(
            "the job was approved or rejected meanwhile".into(),
        ));
    }
    let class = roots
        .1
        .iter()
        .find(|r| &r.key == signed.signer())
        .map(|r| r.class)
        .unwrap_or(IssuerClass::Remote);
    st.db
        .audit(now, "owner", "job.approve", id, "ok", job.kind().name());
    start(st, id.to_string(), job, class);
    sql::get(&st.db, id)?.ok_or_else(|| HostError::Internal("job vanished".into()))
}

/// The owner rejects a job waiting for approval; it never runs, and the control plane is told.
///
/// # Errors
/// `NotFound`; `InvalidParameter` when it is not awaiting approval.
pub fn reject(st: &NodeState, id: &str) -> Result<JobRecord> {
    awaiting(st, id)?;
    let now = st.now();
    if !sql::transition(&st.db, id, "awaiting_approval", "rejected", now)? {
        return Err(HostError::InvalidParameter(
            "the job was approved or rejected meanwhile".into(),
        ));
    }
    sql::set_code(&st.db, id, "rejected_by_owner")?;
    st.db
        .audit(now, "owner", "job.reject_by_owner", id, "ok", "");
    sql::get(&st.db, id)?.ok_or_else(|| HostError::Internal("job vanished".into()))
}

/// Where a remote support-bundle job keeps its archive until the control plane has it.
pub fn bundle_path(ctx: &Context, id: &str) -> std::path::PathBuf {
    ctx.home.root().join("support").join(format!("{id}.tar.gz"))
}

/// The reason recorded on a job that was running (or queued) when the daemon stopped.
pub const INTERRUPTED: &str = "interrupted: b3iqd stopped while this job was queued or running; it was not run again (submit it anew)";

/// At start, before any job is accepted: every job a previous process left `queued` or `running`
/// becomes `failed` with [`INTERRUPTED`] (never re-run silently; each is audited), and the model
/// store's temporary directory is emptied (partial downloads of an interrupted install).
/// Returns the ids of the reconciled jobs.
///
/// # Errors
/// `Db`; the runtime's when the model store cannot be opened or cleaned.
pub fn reconcile_at_start(ctx: &Context) -> Result<Vec<String>> {
    let now = ctx.now();
    let ids = sql::fail_unfinished(&ctx.db, INTERRUPTED, now)?;
    for id in &ids {
        ctx.db.audit(
            now,
            "system",
            "job.interrupted",
            id,
            "failed",
            "b3iqd stopped while the job ran",
        );
    }
    crate::context::runtime::model_store(&ctx.home)?.clean_tmp()?;
    Ok(ids)
}

/// Jobs, newest first.
///
/// # Errors
/// `Db`.
pub fn list(ctx: &Context, limit: u32) -> Result<Vec<JobRecord>> {
    sql::list(&ctx.db, limit)
}

/// One job.
///
/// # Errors
/// `Db`.
pub fn get(ctx: &Context, id: &str) -> Result<Option<JobRecord>> {
    sql::get(&ctx.db, id)
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

/// Run a verified job by its kind.
async fn execute(
    st: &Arc<NodeState>,
    id: &str,
    job: &VerifiedJob,
    class: IssuerClass,
) -> Result<Value> {
    match job.kind() {
        JobKind::InstallModelProfile { profile_id } => {
            let total = Catalog::builtin()
                .get(profile_id)
                .map(|p| p.size_bytes)
                .unwrap_or(0);
            let tmp = st.home.models_dir().join("tmp");
            let (db_st, id2) = (st.clone(), id.to_string());
            let watcher = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    let _ = sql::set_progress(&db_st.db, &id2, dir_size(&tmp).min(total), total);
                }
            });
            let r = crate::context::runtime::ensure_profile(&st.home, profile_id, false).await;
            watcher.abort();
            let m = r?;
            sql::set_progress(&st.db, id, m.size_bytes, m.size_bytes.max(total))?;
            Ok(json!({"sha256": m.sha256, "size_bytes": m.size_bytes, "profile": m.profile}))
        }
        JobKind::RemoveModelProfile { profile_id } => {
            let store = crate::context::runtime::model_store(&st.home)?;
            let m = store
                .find_profile(profile_id)?
                .ok_or_else(|| HostError::NotFound(format!("installed profile {profile_id}")))?;
            if st.served_models().iter().any(|s| s.info.sha256 == m.sha256) {
                return Err(HostError::InvalidParameter(format!(
                    "profile {profile_id} is loaded; restart b3iqd with another --model first"
                )));
            }
            store.remove(&m.sha256)?;
            Ok(json!({"removed": m.sha256}))
        }
        JobKind::RunBenchmark { .. } => {
            let model = st
                .served_models()
                .into_iter()
                .next()
                .ok_or(HostError::ModelNotLoaded)?;
            crate::inference::quick_benchmark(st, &model).await
        }
        JobKind::BuildSupportBundle {} => {
            let st2 = st.clone();
            let bytes = tokio::task::spawn_blocking(move || crate::support::build_bundle(&st2))
                .await
                .map_err(|e| HostError::Internal(e.to_string()))??;
            let sha256 = b3iq_core::digest::Sha256Digest::of(&bytes).to_hex();
            if class == IssuerClass::Remote {
                // Kept (0600) until the control plane has it; the report sends this very archive.
                let p = bundle_path(st, id);
                std::fs::create_dir_all(p.parent().unwrap_or(st.home.root()))
                    .map_err(|e| HostError::home("create support directory", e))?;
                crate::context::home::write_atomic(&p, &bytes, 0o600)?;
            }
            Ok(json!({"download": "/api/support/bundle", "bytes": bytes.len(), "sha256": sha256}))
        }
        JobKind::ChangeMode { mode } => {
            st.set_mode(*mode)?;
            Ok(json!({"mode": mode.as_str()}))
        }
        // The same check + apply as `b3iqd update apply`: the configured repository, the pinned
        // root; a running `serve` notices the swapped binary and restarts on it.
        JobKind::Update { version } => {
            let u = crate::update::Updater::for_home(
                st.home.root(),
                st.config.update_ca_file.as_deref(),
            )?;
            let r = u.apply_at_least(version.as_deref()).await?;
            Ok(json!({
                "previous": r.current,
                "installed": if r.available { &r.latest } else { &r.current },
                "sha256": r.sha256,
                "installed_now": r.available,
                "notes": r.notes,
            }))
        }
        // Refused by the preflight; kept exhaustive so a new core kind is a compile error here.
        JobKind::RestartRuntime {} => Err(HostError::InvalidParameter(
            "restart_runtime is not available in this build".into(),
        )),
        // Never unloads a model in use: when only busy models fill the places or the budget,
        // it fails with `model_memory_budget` and nothing is unloaded.
        JobKind::LoadModel { model } => {
            let already = st.served_model(model).is_some();
            let (m, gave_way) = st.load_model_reporting(model).await?;
            Ok(json!({
                "loaded": m.id,
                "already_loaded": already,
                "unloaded": gave_way,
                "served": st.served_models().into_iter().map(|m| m.id).collect::<Vec<_>>(),
            }))
        }
        // Applied in the accepting transaction when the policy runs it at once (the default:
        // low risk); here only after an owner's approval, when the policy asked for one.
        JobKind::RotateIssuerKey { new_issuer } => {
            st.db.tx(|tx| {
                crate::managed::rotate_job_key_in(tx, &job.job().issuer, new_issuer, st.now())
            })?;
            Ok(rotation_result(new_issuer))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use b3iq_core::job::SeenSet;
    use b3iq_core::CoreError;

    fn node(dir: &tempfile::TempDir) -> Arc<NodeState> {
        let ctx = Context::open(Some(dir.path().join("h"))).unwrap();
        Arc::new(NodeState::new(ctx, None, Vec::new()).unwrap())
    }

    fn remote_job(
        key: &NodeKey,
        seq: u64,
        kind: JobKind,
        audience: b3iq_core::NodeId,
        issued: u64,
        expires: u64,
    ) -> SignedJob {
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        key.sign_object(Job {
            job_id: JobId(id),
            audience,
            issuer: key.public(),
            issued_at_ms: issued,
            expires_at_ms: expires,
            sequence: seq,
            kind,
        })
        .unwrap()
    }

    async fn settle(st: &NodeState, id: &str) -> JobRecord {
        for _ in 0..200 {
            let j = get(st, id).unwrap().unwrap();
            if !["queued", "running"].contains(&j.state.as_str()) {
                return j;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("job {id} did not finish");
    }

    #[tokio::test]
    async fn remote_jobs_follow_the_pinned_key_audience_expiry_replay_and_owner_consent() {
        let dir = tempfile::tempdir().unwrap();
        let st = node(&dir);
        st.set_mode(OperatingMode::Managed).unwrap();
        let cp = NodeKey::generate(&mut rand::rngs::OsRng);
        sql::put_trust_root(
            &st.db,
            &TrustRoot {
                key: cp.public(),
                class: IssuerClass::Remote,
                added_at: st.now(),
                label: "cp".into(),
            },
        )
        .unwrap();
        let (me, now) = (st.node_id, unix_now_ms());
        let code = |e: HostError| error_code(&e).to_string();

        // Refusals: an unknown key, another node's job, an expired job; each recorded as
        // `refused` with its code, for the control plane to learn.
        let stranger = NodeKey::generate(&mut rand::rngs::OsRng);
        let j = remote_job(
            &stranger,
            1,
            JobKind::BuildSupportBundle {},
            me,
            now,
            now + 60_000,
        );
        assert_eq!(
            code(submit_remote(&st, j.clone()).await.unwrap_err()),
            "untrusted_issuer"
        );
        let other = NodeKey::generate(&mut rand::rngs::OsRng).node_id();
        assert_eq!(
            code(
                submit_remote(
                    &st,
                    remote_job(
                        &cp,
                        2,
                        JobKind::BuildSupportBundle {},
                        other,
                        now,
                        now + 60_000
                    )
                )
                .await
                .unwrap_err()
            ),
            "wrong_audience"
        );
        let skew = b3iq_core::job::DEFAULT_MAX_CLOCK_SKEW_MS;
        assert_eq!(
            code(
                submit_remote(
                    &st,
                    remote_job(
                        &cp,
                        3,
                        JobKind::BuildSupportBundle {},
                        me,
                        now - 2 * skew - 10_000,
                        now - skew - 1
                    )
                )
                .await
                .unwrap_err()
            ),
            "expired"
        );
        let refused = sql::unreported_remote(&st.db, 10).unwrap();
        assert_eq!(
            refused
                .iter()
                .map(|u| (u.job.state.as_str(), u.code.as_deref().unwrap_or("")))
                .collect::<Vec<_>>(),
            [
                ("refused", "untrusted_issuer"),
                ("refused", "wrong_audience"),
                ("refused", "expired")
            ]
        );

        // A medium-risk job waits for the owner; a replay of it is refused and not recorded again.
        let bundle = remote_job(
            &cp,
            10,
            JobKind::BuildSupportBundle {},
            me,
            now,
            now + 60_000,
        );
        let r = submit_remote(&st, bundle.clone()).await.unwrap();
        assert_eq!(
            (r.state.as_str(), r.issuer.as_str()),
            ("awaiting_approval", "remote")
        );
        assert_eq!(
            code(submit_remote(&st, bundle.clone()).await.unwrap_err()),
            "replayed"
        );
        assert_eq!(
            code(
                submit_remote(
                    &st,
                    remote_job(
                        &cp,
                        10,
                        JobKind::RunBenchmark {
                            suite: "quick".into()
                        },
                        me,
                        now,
                        now + 60_000
                    )
                )
                .await
                .unwrap_err()
            ),
            "stale_sequence"
        );
        assert_eq!(
            sql::unreported_remote(&st.db, 10).unwrap().len(),
            3,
            "replays are not reported"
        );
        assert!(reject(&st, "job_nope").is_err());
        let approved = approve(&st, &r.id).unwrap();
        assert_eq!(approved.state, "queued");
        assert!(approve(&st, &r.id).is_err(), "approved once");
        let done = settle(&st, &r.id).await;
        assert_eq!(done.state, "succeeded", "{done:?}");
        assert!(bundle_path(&st, &r.id).exists(), "kept for the report");

        // A high-risk job is rejected by the owner; another is left until it expires.
        let mode = remote_job(
            &cp,
            11,
            JobKind::ChangeMode {
                mode: OperatingMode::Local,
            },
            me,
            now,
            now + 60_000,
        );
        let m = submit_remote(&st, mode).await.unwrap();
        assert_eq!(m.state, "awaiting_approval");
        assert_eq!(reject(&st, &m.id).unwrap().state, "rejected");
        assert!(approve(&st, &m.id).is_err());
        assert_eq!(st.mode(), OperatingMode::Managed);
        let late = remote_job(
            &cp,
            12,
            JobKind::ChangeMode {
                mode: OperatingMode::Local,
            },
            me,
            now,
            now + 1,
        );
        let l = submit_remote(&st, late).await.unwrap();
        assert_eq!(
            sql::expire_awaiting(&st.db, now + 2, st.now()).unwrap(),
            std::slice::from_ref(&l.id)
        );
        assert!(approve(&st, &l.id).is_err());

        // After the control plane's key is rotated out, a job it signed that still waits is not
        // run on approval: refused as from an untrusted issuer.
        let waiting = submit_remote(
            &st,
            remote_job(
                &cp,
                13,
                JobKind::BuildSupportBundle {},
                me,
                now,
                now + 60_000,
            ),
        )
        .await
        .unwrap();
        let next = NodeKey::generate(&mut rand::rngs::OsRng);
        sql::replace_trust_root(
            &st.db,
            &cp.public(),
            &TrustRoot {
                key: next.public(),
                class: IssuerClass::Remote,
                added_at: st.now(),
                label: "cp".into(),
            },
        )
        .unwrap();
        assert_eq!(
            code(approve(&st, &waiting.id).unwrap_err()),
            "untrusted_issuer"
        );
        assert_eq!(get(&st, &waiting.id).unwrap().unwrap().state, "refused");
        assert_eq!(
            code(
                submit_remote(
                    &st,
                    remote_job(
                        &cp,
                        14,
                        JobKind::RunBenchmark {
                            suite: "quick".into()
                        },
                        me,
                        now,
                        now + 60_000
                    )
                )
                .await
                .unwrap_err()
            ),
            "untrusted_issuer"
        );

        let states: Vec<String> = sql::unreported_remote(&st.db, 20)
            .unwrap()
            .into_iter()
            .map(|u| u.job.state)
            .collect();
        for s in ["succeeded", "rejected", "expired"] {
            assert!(
                states.iter().any(|x| x == s),
                "{s} not in the outbox: {states:?}"
            );
        }
        sql::mark_reported(&st.db, &r.id, st.now()).unwrap();
        assert!(!sql::unreported_remote(&st.db, 20)
            .unwrap()
            .iter()
            .any(|u| u.job.id == r.id));
    }

    #[tokio::test]
    async fn a_rotation_signed_by_the_pinned_key_moves_trust_to_the_new_key_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let st = node(&dir);
        let (old, new) = (
            NodeKey::generate(&mut rand::rngs::OsRng),
            NodeKey::generate(&mut rand::rngs::OsRng),
        );
        let e = crate::managed::Enrollment {
            control_url: "https://127.0.0.1:1".into(),
            audience: "cp_test".into(),
            org_id: "org_test".into(),
            job_key: old.public(),
            heartbeat_interval_ms: 30_000,
            enrolled_at_ms: 1,
            expires_at_ms: u64::MAX / 2,
            ca_pem: None,
            receipts_from_ms: 0,
            job_sequence_floor: 0,
        };
        crate::store::managed::put_enrollment(&st.db, &serde_json::to_string(&e).unwrap()).unwrap();
        sql::put_trust_root(
            &st.db,
            &TrustRoot {
                key: old.public(),
                class: IssuerClass::Remote,
                added_at: st.now(),
                label: "cp".into(),
            },
        )
        .unwrap();
        st.set_mode(OperatingMode::Managed).unwrap();
        let (me, now) = (st.node_id, unix_now_ms());
        let code = |e: HostError| error_code(&e).to_string();
        let rotate = |k: &NodeKey, seq, to: &NodeKey| {
            remote_job(
                k,
                seq,
                JobKind::RotateIssuerKey {
                    new_issuer: to.public(),
                },
                me,
                now,
                now + 60_000,
            )
        };

        // Refused: a rotation to the signer's own key (a field check), and one signed by a key
        // that is not pinned (untrusted); neither changes anything.
        assert_eq!(
            code(submit_remote(&st, rotate(&old, 5, &old)).await.unwrap_err()),
            "invalid_field"
        );
        let stranger = NodeKey::generate(&mut rand::rngs::OsRng);
        assert_eq!(
            code(
                submit_remote(&st, rotate(&stranger, 6, &new))
                    .await
                    .unwrap_err()
            ),
            "untrusted_issuer"
        );
        assert_eq!(
            crate::managed::enrollment(&st.db).unwrap().unwrap().job_key,
            old.public()
        );

        // A job under the old key first, so the floor has a sequence to keep.
        submit_remote(
            &st,
            remote_job(
                &old,
                7,
                JobKind::BuildSupportBundle {},
                me,
                now,
                now + 60_000,
            ),
        )
        .await
        .unwrap();
        // The rotation signed by the pinned key: succeeded when accepted (no background run),
        // in the same transaction as the trust-root change.
        let r = submit_remote(&st, rotate(&old, 8, &new)).await.unwrap();
        assert_eq!(r.state, "succeeded", "{r:?}");
        assert_eq!(r.result.as_ref().unwrap()["issuer"], new.public().to_hex());
        let (roots, recs) = trust_roots(&st).unwrap();
        assert!(
            roots.contains(&new.public()) && !roots.contains(&old.public()),
            "{recs:?}"
        );
        let e2 = crate::managed::enrollment(&st.db).unwrap().unwrap();
        assert_eq!((e2.job_key, e2.job_sequence_floor), (new.public(), 8));

        // From now on the old key is refused, the new one accepted (its sequence continues the
        // control plane's counter); the audit log names the rotation.
        assert_eq!(
            code(
                submit_remote(
                    &st,
                    remote_job(
                        &old,
                        9,
                        JobKind::BuildSupportBundle {},
                        me,
                        now,
                        now + 60_000
                    )
                )
                .await
                .unwrap_err()
            ),
            "untrusted_issuer"
        );
        let ok = submit_remote(
            &st,
            remote_job(
                &new,
                10,
                JobKind::BuildSupportBundle {},
                me,
                now,
                now + 60_000,
            ),
        )
        .await
        .unwrap();
        assert_eq!(ok.state, "awaiting_approval");
        assert_eq!(
            code(
                submit_remote(&st, rotate(&old, 11, &stranger))
                    .await
                    .unwrap_err()
            ),
            "untrusted_issuer",
            "the rotated-out key cannot rotate again"
        );
        let audit = st
            .db
            .lock()
            .query_row(
                "SELECT COUNT(*) FROM audit_events WHERE action = 'managed.rotate_job_key'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap();
        assert_eq!(audit, 1);

        // The outbox reports the rotation with the newly pinned key.
        let u = sql::unreported_remote(&st.db, 20).unwrap();
        assert!(u
            .iter()
            .any(|u| u.job.id == r.id && u.job.state == "succeeded"));

        // An owner-signed rotation is refused by policy: the owner's key rotates another way.
        crate::owner::ensure_owner_trust_root(&st).unwrap();
        let owner = key::owner_issuer(&st.home).unwrap().unwrap();
        let j = issue_owner_job(
            &st,
            &owner,
            JobKind::RotateIssuerKey {
                new_issuer: stranger.public(),
            },
            now,
        )
        .unwrap();
        assert!(submit(&st, j, "owner").await.is_err());
        assert!(trust_roots(&st).unwrap().0.contains(&owner.public()));
    }

    #[test]
    fn jobs_open_only_from_persisted_roots_and_by_their_class() {
        let dir = tempfile::tempdir().unwrap();
        let st = node(&dir);
        let now = unix_now_ms();
        // No trust root yet: even a well-formed job is refused.
        let stranger = NodeKey::generate(&mut rand::rngs::OsRng);
        let j = issue_owner_job(&st, &stranger, JobKind::BuildSupportBundle {}, now).unwrap();
        assert!(matches!(
            open(&st, &j, now),
            Err(HostError::Core(CoreError::UntrustedIssuer { .. }))
        ));
        // The owner's root (made at claim) opens as OwnerLocal; the same envelope twice is a replay.
        crate::owner::ensure_owner_trust_root(&st).unwrap();
        let owner = key::owner_issuer(&st.home).unwrap().unwrap();
        let owner_job = issue_owner_job(&st, &owner, JobKind::BuildSupportBundle {}, now).unwrap();
        let (v, class, _) = open(&st, &owner_job, now).unwrap();
        assert_eq!(
            (class, v.kind()),
            (IssuerClass::OwnerLocal, &JobKind::BuildSupportBundle {})
        );
        assert!(matches!(
            open(&st, &owner_job, now),
            Err(HostError::Core(CoreError::Replayed { .. }))
        ));
        // A remote root (a control plane) is held to JobPolicy::decide: refused in local mode.
        let cp = NodeKey::generate(&mut rand::rngs::OsRng);
        sql::put_trust_root(
            &st.db,
            &TrustRoot {
                key: cp.public(),
                class: IssuerClass::Remote,
                added_at: st.now() + 1,
                label: "cp".into(),
            },
        )
        .unwrap();
        let j = issue_owner_job(
            &st,
            &cp,
            JobKind::RunBenchmark {
                suite: "quick".into(),
            },
            now,
        )
        .unwrap();
        let e = open(&st, &j, now).unwrap_err();
        assert!(e.to_string().contains("refused by policy"), "{e}");
        // Roots and the seen-set are durable: a reopened home refuses the replay and knows the roots.
        drop(st);
        let st = node(&dir);
        let (_, roots) = trust_roots(&st).unwrap();
        assert_eq!(
            roots.iter().map(|r| r.class).collect::<Vec<_>>(),
            [IssuerClass::OwnerLocal, IssuerClass::Remote]
        );
        assert!(matches!(
            open(&st, &owner_job, now),
            Err(HostError::Core(CoreError::Replayed { .. }))
        ));
        let j2 = issue_owner_job(&st, &owner, JobKind::BuildSupportBundle {}, now).unwrap();
        assert!(j2.body().sequence > owner_job.body().sequence);
        assert!(open(&st, &j2, now).is_ok());
    }

    #[tokio::test]
    async fn preflight_refuses_what_this_build_cannot_run() {
        let dir = tempfile::tempdir().unwrap();
        let st = node(&dir);
        crate::owner::ensure_owner_trust_root(&st).unwrap();
        for (kind, code) in [
            (JobKind::RestartRuntime {}, "invalid_parameter"),
            (
                JobKind::RunBenchmark {
                    suite: "full".into(),
                },
                "invalid_parameter",
            ),
            (
                JobKind::RunBenchmark {
                    suite: "quick".into(),
                },
                "model_not_loaded",
            ),
            // Not enrolled: neither managed nor network mode can be chosen.
            (
                JobKind::ChangeMode {
                    mode: OperatingMode::Managed,
                },
                "mode_not_available",
            ),
            (
                JobKind::ChangeMode {
                    mode: OperatingMode::Network,
                },
                "invalid_parameter",
            ),
            // A no-op mode change is refused by the core policy.
            (
                JobKind::ChangeMode {
                    mode: OperatingMode::Local,
                },
                "invalid_parameter",
            ),
        ] {
            let e = submit_owner(&st, kind.clone()).await.unwrap_err();
            assert_eq!(e.code(), code, "{kind:?}: {e}");
        }
        assert!(
            list(&st, 10).unwrap().is_empty(),
            "refused jobs are not recorded"
        );
        let rejected = crate::store::audit::recent(&st.db, 20)
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "job.reject")
            .count();
        assert_eq!(rejected, 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_owner_jobs_get_distinct_sequences_recorded_with_their_job() {
        let dir = tempfile::tempdir().unwrap();
        let st = node(&dir);
        crate::owner::ensure_owner_trust_root(&st).unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let st = st.clone();
                tokio::spawn(async move { submit_owner(&st, JobKind::BuildSupportBundle {}).await })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap().unwrap().id);
        }
        let conn = rusqlite::Connection::open(st.home.db_path()).unwrap();
        let (n, distinct): (i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), COUNT(DISTINCT sequence) FROM job_seen",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (n, distinct),
            (8, 8),
            "one seen-set row per job, each its own sequence"
        );
        for id in &ids {
            let hex = id.strip_prefix("job_").unwrap();
            let seen: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM job_seen WHERE job_id = ?1",
                    [hex],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(seen, 1, "{id} recorded in the seen-set with its job");
        }
        // The database refuses a second row for an (issuer, sequence) pair, whatever the caller.
        let issuer = key::owner_issuer(&st.home).unwrap().unwrap();
        let e = st
            .db
            .tx(|tx| {
                TxSeenSet(tx)
                    .record(&issuer.public(), &JobId([9; 16]), 1, u64::MAX)
                    .map_err(|e| HostError::Internal(e.0))
            })
            .unwrap_err();
        assert!(e.to_string().contains("UNIQUE"), "{e}");
        // Two different jobs signed with the same sequence: the second is refused.
        let a = sign_job(
            &st,
            &issuer,
            JobKind::BuildSupportBundle {},
            Some(100),
            unix_now_ms(),
        )
        .unwrap();
        let b = sign_job(
            &st,
            &issuer,
            JobKind::BuildSupportBundle {},
            Some(100),
            unix_now_ms(),
        )
        .unwrap();
        assert!(open(&st, &a, unix_now_ms()).is_ok());
        assert!(matches!(
            open(&st, &b, unix_now_ms()),
            Err(HostError::Core(_))
        ));
    }

    #[test]
    fn rotating_the_owner_key_refuses_what_the_old_key_signed() {
        let dir = tempfile::tempdir().unwrap();
        let st = node(&dir);
        crate::owner::ensure_owner_trust_root(&st).unwrap();
        let old = key::owner_issuer(&st.home).unwrap().unwrap();
        let before =
            issue_owner_job(&st, &old, JobKind::BuildSupportBundle {}, unix_now_ms()).unwrap();
        let new_pk = crate::owner::rotate_owner_issuer(&st, crate::owner::Via::Cli).unwrap();
        let new = key::owner_issuer(&st.home).unwrap().unwrap();
        assert_eq!(new.public().to_hex(), new_pk);
        assert_ne!(new.public(), old.public());
        assert!(matches!(
            open(&st, &before, unix_now_ms()),
            Err(HostError::Core(CoreError::UntrustedIssuer { .. }))
        ));
        let after =
            issue_owner_job(&st, &new, JobKind::BuildSupportBundle {}, unix_now_ms()).unwrap();
        assert!(open(&st, &after, unix_now_ms()).is_ok());
        let (_, roots) = trust_roots(&st).unwrap();
        assert_eq!(
            roots
                .iter()
                .filter(|r| r.class == IssuerClass::OwnerLocal)
                .count(),
            1
        );
        let audited = crate::store::audit::recent(&st.db, 5)
            .unwrap()
            .into_iter()
            .find(|e| e.action == "owner.rotate_issuer")
            .unwrap();
        assert!(
            audited.detail.contains(&old.public().to_hex()) && audited.detail.contains(&new_pk)
        );
        // A rotation cut after its staging step (no database switch) is dropped at the next start.
        let staged = st.home.owner_key_path().with_extension("key.new");
        std::fs::write(
            &staged,
            NodeKey::generate(&mut rand::rngs::OsRng).to_key_file(),
        )
        .unwrap();
        crate::owner::ensure_owner_trust_root(&st).unwrap();
        assert!(!staged.exists());
        assert_eq!(
            key::owner_issuer(&st.home).unwrap().unwrap().public(),
            new.public(),
            "the trusted key stays"
        );
    }

    #[test]
    fn a_restart_fails_unfinished_jobs_instead_of_leaving_them_running() {
        let dir = tempfile::tempdir().unwrap();
        let st = node(&dir);
        st.db
            .tx(|tx| {
                sql::insert_as(
                    tx,
                    "job_a",
                    "run_benchmark",
                    None,
                    None,
                    10,
                    b"env",
                    "queued",
                    IssuerClass::OwnerLocal,
                    0,
                )?;
                sql::insert_as(
                    tx,
                    "job_b",
                    "build_support_bundle",
                    None,
                    None,
                    11,
                    b"env",
                    "queued",
                    IssuerClass::OwnerLocal,
                    0,
                )?;
                sql::insert_as(
                    tx,
                    "job_c",
                    "build_support_bundle",
                    None,
                    None,
                    12,
                    b"env",
                    "queued",
                    IssuerClass::OwnerLocal,
                    0,
                )
            })
            .unwrap();
        sql::set_state(&st.db, "job_a", "running", None, None, 20).unwrap();
        sql::set_state(&st.db, "job_c", "succeeded", None, Some(&json!({})), 21).unwrap();
        let partial = st.home.models_dir().join("tmp").join("0123.partial");
        std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
        std::fs::write(&partial, b"half a model").unwrap();
        drop(st);
        let ctx = Context::open(Some(dir.path().join("h"))).unwrap();
        assert_eq!(reconcile_at_start(&ctx).unwrap(), ["job_a", "job_b"]);
        for (id, state) in [
            ("job_a", "failed"),
            ("job_b", "failed"),
            ("job_c", "succeeded"),
        ] {
            let j = get(&ctx, id).unwrap().unwrap();
            assert_eq!(j.state, state, "{id}");
            if state == "failed" {
                assert_eq!(j.error.as_deref(), Some(INTERRUPTED));
            }
        }
        assert!(!partial.exists(), "the model store's temp dir is cleaned");
        let audited = crate::store::audit::recent(&ctx.db, 10)
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "job.interrupted")
            .count();
        assert_eq!(audited, 2);
        assert!(reconcile_at_start(&ctx).unwrap().is_empty(), "idempotent");
    }

    #[test]
    fn api_kinds_are_core_kinds_and_legacy_names_are_aliases() {
        let p = b3iq_runtime::catalog::DEFAULT_PROFILE;
        let k = kind_from_api(&json!({"kind": "install_model_profile", "profile_id": p})).unwrap();
        assert_eq!(
            k,
            JobKind::InstallModelProfile {
                profile_id: p.into()
            }
        );
        assert_eq!(
            kind_from_api(&json!({"kind": "install_model", "profile": p})).unwrap(),
            k
        );
        assert_eq!(
            kind_from_api(&json!({"kind": "support_bundle"})).unwrap(),
            JobKind::BuildSupportBundle {}
        );
        assert_eq!(
            kind_from_api(&json!({"kind": "run_benchmark"})).unwrap(),
            JobKind::RunBenchmark {
                suite: "quick".into()
            }
        );
        assert_eq!(
            kind_from_api(&json!({"kind": "change_mode", "mode": "managed"})).unwrap(),
            JobKind::ChangeMode {
                mode: OperatingMode::Managed
            }
        );
        assert!(matches!(
            kind_from_api(&json!({"kind": "shell", "cmd": "rm -rf /"})),
            Err(HostError::UnknownJobKind(_))
        ));
        assert!(matches!(
            kind_from_api(&json!({"kind": "install_model_profile", "profile_id": "nope"})),
            Err(HostError::UnknownProfile(_))
        ));
        assert!(matches!(
            kind_from_api(&json!({"kind": "install_model_profile"})),
            Err(HostError::InvalidParameter(_))
        ));
        assert!(matches!(
            kind_from_api(&json!({"kind": "change_mode", "mode": "sideways"})),
            Err(HostError::InvalidParameter(_))
        ));
    }
}
