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

use b3iq_core::job::{IssuerClass, Job, JobId, JobKind, JobPolicy, SignedJob, TrustRoots, Verdict, VerifiedJob};
use b3iq_core::mode::OperatingMode;
use b3iq_core::identity::NodeKey;
use b3iq_core::job::SeenSet as _;
use b3iq_runtime::catalog::Catalog;
use serde_json::{json, Value};

use crate::context::{key, unix_now_ms, Context, NodeState};
use crate::error::{HostError, Result};
use crate::store::jobs::{self as sql, DbSeenSet, TrustRoot};

pub use crate::store::jobs::JobRecord;

/// Seconds a job envelope stays valid after issue.
pub const JOB_TTL_S: u64 = 300;

/// The benchmark suites `run_benchmark` accepts.
pub const BENCHMARK_SUITES: &[&str] = &["quick"];

/// Parse a job as the API takes it: `{"kind": NAME, ...}` with core's wire names
/// (`install_model_profile` and `remove_model_profile` with `profile_id`, `run_benchmark` with an
/// optional `suite` (default `quick`), `build_support_bundle`, `restart_runtime`, `change_mode`
/// with `mode`). The names the wizard used before (`install_model`, `remove_model` with
/// `profile`, `support_bundle`) are accepted as aliases of the same core kinds.
///
/// # Errors
/// `UnknownJobKind`; `InvalidParameter` for a missing field; `UnknownProfile`.
pub fn kind_from_api(v: &Value) -> Result<JobKind> {
    let kind = v["kind"].as_str().ok_or_else(|| HostError::InvalidParameter("`kind` is required".into()))?;
    let profile = || -> Result<String> {
        let p = v["profile_id"]
            .as_str()
            .or_else(|| v["profile"].as_str())
            .ok_or_else(|| HostError::InvalidParameter("`profile_id` is required for this job kind".into()))?;
        Catalog::builtin().get(p).map_err(|_| HostError::UnknownProfile(p.chars().take(100).collect()))?;
        Ok(p.to_string())
    };
    Ok(match kind {
        "install_model_profile" | "install_model" => JobKind::InstallModelProfile { profile_id: profile()? },
        "remove_model_profile" | "remove_model" => JobKind::RemoveModelProfile { profile_id: profile()? },
        "run_benchmark" => JobKind::RunBenchmark { suite: v["suite"].as_str().unwrap_or("quick").to_string() },
        "build_support_bundle" | "support_bundle" => JobKind::BuildSupportBundle,
        "restart_runtime" => JobKind::RestartRuntime,
        "change_mode" => {
            let m = v["mode"].as_str().ok_or_else(|| HostError::InvalidParameter("`mode` is required for change_mode".into()))?;
            JobKind::ChangeMode { mode: m.parse().map_err(|e: b3iq_core::CoreError| HostError::InvalidParameter(e.to_string()))? }
        }
        other => return Err(HostError::UnknownJobKind(other.chars().take(40).collect())),
    })
}

fn profile_of(kind: &JobKind) -> Option<&str> {
    match kind {
        JobKind::InstallModelProfile { profile_id } | JobKind::RemoveModelProfile { profile_id } => Some(profile_id),
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

/// Sign a job for this node with the owner's issuer key (a sequence above every one recorded).
///
/// # Errors
/// `Db`; `Core` when signing fails.
pub fn issue_owner_job(ctx: &Context, issuer: &NodeKey, kind: JobKind, now_ms: u64) -> Result<SignedJob> {
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    let last = DbSeenSet(&ctx.db).last_sequence(&issuer.public()).map_err(|e| HostError::Internal(e.0))?;
    let job = Job {
        job_id: JobId(id),
        audience: ctx.node_id,
        issuer: issuer.public(),
        issued_at_ms: now_ms,
        expires_at_ms: now_ms + JOB_TTL_S * 1000,
        sequence: last.map(|l| l + 1).unwrap_or(1),
        kind,
    };
    Ok(issuer.sign_object(job)?)
}

/// Open a signed job: verify it against the persisted trust roots (recording it in the durable
/// seen-set), then decide by policy for the issuer's class and the node's mode. Returns the
/// verified job and the policy's reason.
///
/// # Errors
/// `Core` (untrusted issuer, bad signature, wrong audience, expired, replayed, stale sequence);
/// `InvalidParameter` when the policy refuses or owner approval would be needed.
pub fn open(st: &NodeState, job: &SignedJob, now_ms: u64) -> Result<(VerifiedJob, IssuerClass, String)> {
    let (roots, records) = trust_roots(st)?;
    let verified = job.open(&roots, &st.node_id, now_ms, &mut DbSeenSet(&st.db))?;
    let class = records.iter().find(|r| &r.key == job.signer()).map(|r| r.class).unwrap_or(IssuerClass::Remote);
    let decision = JobPolicy::default().decide_for(class, verified.kind(), st.mode());
    match decision.verdict {
        Verdict::Run => Ok((verified, class, decision.reason)),
        Verdict::NeedsOwnerApproval => Err(HostError::InvalidParameter(format!(
            "job needs the owner's approval, which this build cannot ask for yet: {}",
            decision.reason
        ))),
        Verdict::Refuse => Err(HostError::InvalidParameter(format!("job refused by policy: {}", decision.reason))),
    }
}

/// Whether this node can run `kind` now (checked after the policy, before the job is recorded).
fn preflight(st: &NodeState, kind: &JobKind) -> Result<()> {
    match kind {
        JobKind::RunBenchmark { suite } if !BENCHMARK_SUITES.contains(&suite.as_str()) => Err(HostError::InvalidParameter(format!(
            "benchmark suite {suite:?} is not available; use \"quick\""
        ))),
        JobKind::RunBenchmark { .. } if st.served_models().is_empty() => Err(HostError::ModelNotLoaded),
        JobKind::RestartRuntime => Err(HostError::InvalidParameter(
            "restart_runtime is not available in this build; restart b3iqd instead".into(),
        )),
        JobKind::ChangeMode { mode } if *mode != OperatingMode::Local => Err(HostError::ModeNotAvailable(mode.as_str().into())),
        _ => Ok(()),
    }
}

/// The owner asks for a job: sign it with the owner's issuer key, open it, preflight, record and
/// start it. Returns it queued, or the refusal (audited as `job.reject`).
///
/// # Errors
/// As [`open`]; `SessionRequired`-like `InvalidParameter` when the node has no owner key yet.
pub async fn submit_owner(st: &Arc<NodeState>, kind: JobKind) -> Result<JobRecord> {
    let issuer = key::owner_issuer(&st.home)?.ok_or(HostError::NotClaimed)?;
    let signed = issue_owner_job(st, &issuer, kind, unix_now_ms())?;
    submit(st, signed, "owner").await
}

/// Open, preflight, record and start a signed job from `actor`.
///
/// # Errors
/// As [`open`] and the preflight.
pub async fn submit(st: &Arc<NodeState>, signed: SignedJob, actor: &str) -> Result<JobRecord> {
    let now = st.now();
    let id = format!("job_{}", signed.body().job_id.to_hex());
    let name = signed.body().kind.name();
    let opened = open(st, &signed, unix_now_ms()).and_then(|(job, class, note)| preflight(st, job.kind()).map(|_| (job, class, note)));
    let (job, class, note) = match opened {
        Ok(o) => o,
        Err(e) => {
            st.db.audit(now, actor, "job.reject", &id, "refused", &format!("{name}: {e}"));
            return Err(e);
        }
    };
    let total = match job.kind() {
        JobKind::InstallModelProfile { profile_id } => Catalog::builtin().get(profile_id).ok().map(|p| p.size_bytes),
        _ => None,
    };
    sql::insert(&st.db, &id, name, profile_of(job.kind()), total, now, &signed.encode())?;
    st.db.audit(now, actor, "job.accept", &id, "ok", &format!("{name}; {class:?}; {note}"));
    let st2 = st.clone();
    let id2 = id.clone();
    tokio::spawn(async move {
        let _g = st2.job_lock.lock().await;
        let _ = sql::set_state(&st2.db, &id2, "running", None, None, st2.now());
        let r = execute(&st2, &id2, &job).await;
        let now = st2.now();
        let name = job.kind().name();
        match r {
            // Audit first, so a client that sees the final state also sees its audit event.
            Ok(v) => {
                st2.db.audit(now, "system", "job.execute", &id2, "ok", name);
                let _ = sql::set_state(&st2.db, &id2, "succeeded", None, Some(&v), now);
            }
            Err(e) => {
                st2.db.audit(now, "system", "job.execute", &id2, "failed", &format!("{name}: {}", e.code()));
                let _ = sql::set_state(&st2.db, &id2, "failed", Some(&e.to_string()), None, now);
            }
        }
    });
    sql::get(&st.db, &id)?.ok_or_else(|| HostError::Internal("job vanished".into()))
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
async fn execute(st: &Arc<NodeState>, id: &str, job: &VerifiedJob) -> Result<Value> {
    match job.kind() {
        JobKind::InstallModelProfile { profile_id } => {
            let total = Catalog::builtin().get(profile_id).map(|p| p.size_bytes).unwrap_or(0);
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
            let m = store.find_profile(profile_id)?.ok_or_else(|| HostError::NotFound(format!("installed profile {profile_id}")))?;
            if st.served_models().iter().any(|s| s.info.sha256 == m.sha256) {
                return Err(HostError::InvalidParameter(format!("profile {profile_id} is loaded; restart b3iqd with another --model first")));
            }
            store.remove(&m.sha256)?;
            Ok(json!({"removed": m.sha256}))
        }
        JobKind::RunBenchmark { .. } => {
            let model = st.served_models().into_iter().next().ok_or(HostError::ModelNotLoaded)?;
            crate::inference::quick_benchmark(st, &model).await
        }
        JobKind::BuildSupportBundle => {
            let st2 = st.clone();
            let bytes = tokio::task::spawn_blocking(move || crate::support::build_bundle(&st2))
                .await
                .map_err(|e| HostError::Internal(e.to_string()))??;
            Ok(json!({"download": "/api/support/bundle", "bytes": bytes.len()}))
        }
        JobKind::ChangeMode { mode } => {
            st.set_mode(*mode)?;
            Ok(json!({"mode": mode.as_str()}))
        }
        // Refused by the preflight; kept exhaustive so a new core kind is a compile error here.
        JobKind::RestartRuntime => Err(HostError::InvalidParameter("restart_runtime is not available in this build".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use b3iq_core::CoreError;

    fn node(dir: &tempfile::TempDir) -> Arc<NodeState> {
        let ctx = Context::open(Some(dir.path().join("h"))).unwrap();
        Arc::new(NodeState::new(ctx, None, Vec::new()).unwrap())
    }

    #[test]
    fn jobs_open_only_from_persisted_roots_and_by_their_class() {
        let dir = tempfile::tempdir().unwrap();
        let st = node(&dir);
        let now = unix_now_ms();
        // No trust root yet: even a well-formed job is refused.
        let stranger = NodeKey::generate(&mut rand::rngs::OsRng);
        let j = issue_owner_job(&st, &stranger, JobKind::BuildSupportBundle, now).unwrap();
        assert!(matches!(open(&st, &j, now), Err(HostError::Core(CoreError::UntrustedIssuer { .. }))));
        // The owner's root (made at claim) opens as OwnerLocal; the same envelope twice is a replay.
        crate::owner::ensure_owner_trust_root(&st).unwrap();
        let owner = key::owner_issuer(&st.home).unwrap().unwrap();
        let owner_job = issue_owner_job(&st, &owner, JobKind::BuildSupportBundle, now).unwrap();
        let (v, class, _) = open(&st, &owner_job, now).unwrap();
        assert_eq!((class, v.kind()), (IssuerClass::OwnerLocal, &JobKind::BuildSupportBundle));
        assert!(matches!(open(&st, &owner_job, now), Err(HostError::Core(CoreError::Replayed { .. }))));
        // A remote root (a control plane) is held to JobPolicy::decide: refused in local mode.
        let cp = NodeKey::generate(&mut rand::rngs::OsRng);
        sql::put_trust_root(&st.db, &TrustRoot { key: cp.public(), class: IssuerClass::Remote, added_at: st.now() + 1, label: "cp".into() }).unwrap();
        let j = issue_owner_job(&st, &cp, JobKind::RunBenchmark { suite: "quick".into() }, now).unwrap();
        let e = open(&st, &j, now).unwrap_err();
        assert!(e.to_string().contains("refused by policy"), "{e}");
        // Roots and the seen-set are durable: a reopened home refuses the replay and knows the roots.
        drop(st);
        let st = node(&dir);
        let (_, roots) = trust_roots(&st).unwrap();
        assert_eq!(roots.iter().map(|r| r.class).collect::<Vec<_>>(), [IssuerClass::OwnerLocal, IssuerClass::Remote]);
        assert!(matches!(open(&st, &owner_job, now), Err(HostError::Core(CoreError::Replayed { .. }))));
        let j2 = issue_owner_job(&st, &owner, JobKind::BuildSupportBundle, now).unwrap();
        assert!(j2.body().sequence > owner_job.body().sequence);
        assert!(open(&st, &j2, now).is_ok());
    }

    #[tokio::test]
    async fn preflight_refuses_what_this_build_cannot_run() {
        let dir = tempfile::tempdir().unwrap();
        let st = node(&dir);
        crate::owner::ensure_owner_trust_root(&st).unwrap();
        for (kind, code) in [
            (JobKind::RestartRuntime, "invalid_parameter"),
            (JobKind::RunBenchmark { suite: "full".into() }, "invalid_parameter"),
            (JobKind::RunBenchmark { suite: "quick".into() }, "model_not_loaded"),
            (JobKind::ChangeMode { mode: OperatingMode::Network }, "mode_not_available"),
            // A no-op mode change is refused by the core policy.
            (JobKind::ChangeMode { mode: OperatingMode::Local }, "invalid_parameter"),
        ] {
            let e = submit_owner(&st, kind.clone()).await.unwrap_err();
            assert_eq!(e.code(), code, "{kind:?}: {e}");
        }
        assert!(list(&st, 10).unwrap().is_empty(), "refused jobs are not recorded");
        let rejected = crate::store::audit::recent(&st.db, 20).unwrap().into_iter().filter(|e| e.action == "job.reject").count();
        assert_eq!(rejected, 5);
    }

    #[test]
    fn api_kinds_are_core_kinds_and_legacy_names_are_aliases() {
        let p = b3iq_runtime::catalog::DEFAULT_PROFILE;
        let k = kind_from_api(&json!({"kind": "install_model_profile", "profile_id": p})).unwrap();
        assert_eq!(k, JobKind::InstallModelProfile { profile_id: p.into() });
        assert_eq!(kind_from_api(&json!({"kind": "install_model", "profile": p})).unwrap(), k);
        assert_eq!(kind_from_api(&json!({"kind": "support_bundle"})).unwrap(), JobKind::BuildSupportBundle);
        assert_eq!(kind_from_api(&json!({"kind": "run_benchmark"})).unwrap(), JobKind::RunBenchmark { suite: "quick".into() });
        assert_eq!(kind_from_api(&json!({"kind": "change_mode", "mode": "managed"})).unwrap(), JobKind::ChangeMode { mode: OperatingMode::Managed });
        assert!(matches!(kind_from_api(&json!({"kind": "shell", "cmd": "rm -rf /"})), Err(HostError::UnknownJobKind(_))));
        assert!(matches!(kind_from_api(&json!({"kind": "install_model_profile", "profile_id": "nope"})), Err(HostError::UnknownProfile(_))));
        assert!(matches!(kind_from_api(&json!({"kind": "install_model_profile"})), Err(HostError::InvalidParameter(_))));
        assert!(matches!(kind_from_api(&json!({"kind": "change_mode", "mode": "sideways"})), Err(HostError::InvalidParameter(_))));
    }
}
