//! Owner jobs as b3iq-core signed jobs: issued with the owner's issuer key, opened against the
//! trust roots (signature, audience, validity window, replay, sequence) with a SQLite-backed
//! durable [`SeenSet`], then decided by the core [`JobPolicy`].

use b3iq_core::identity::{NodeKey, NodePublicKey};
use b3iq_core::job::{IssuerClass, Job, JobId, JobKind, JobPolicy, SeenSet, SeenSetError, SignedJob, TrustRoots, Verdict, VerifiedJob};
use rusqlite::{params, OptionalExtension};

use crate::db::Db;
use crate::error::{HostError, Result};
use crate::jobs::{JobRequest, JOB_TTL_S};
use crate::state::{unix_now, NodeState};

/// The seen-set in `state.db` (`job_seen`). Each `record` is its own committed transaction
/// (`synchronous=FULL`), so it is durable before the job runs.
pub struct DbSeenSet<'a>(pub &'a Db);

impl SeenSet for DbSeenSet<'_> {
    fn contains(&self, job_id: &JobId) -> std::result::Result<bool, SeenSetError> {
        self.0
            .lock()
            .query_row("SELECT 1 FROM job_seen WHERE job_id = ?1", [job_id.to_hex()], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| SeenSetError(e.to_string()))
    }

    fn last_sequence(&self, issuer: &NodePublicKey) -> std::result::Result<Option<u64>, SeenSetError> {
        self.0
            .lock()
            .query_row("SELECT MAX(sequence) FROM job_seen WHERE issuer = ?1", [issuer.to_hex()], |r| r.get::<_, Option<i64>>(0))
            .map(|v| v.map(|v| v as u64))
            .map_err(|e| SeenSetError(e.to_string()))
    }

    fn record(&mut self, issuer: &NodePublicKey, job_id: &JobId, sequence: u64, expires_at_ms: u64) -> std::result::Result<(), SeenSetError> {
        self.0
            .lock()
            .execute(
                "INSERT INTO job_seen(job_id, issuer, sequence, expires_at_ms, seen_at) VALUES (?1,?2,?3,?4,?5)",
                params![job_id.to_hex(), issuer.to_hex(), sequence as i64, expires_at_ms as i64, unix_now() as i64],
            )
            .map(|_| ())
            .map_err(|e| SeenSetError(e.to_string()))
    }
}

fn kind_of(req: &JobRequest) -> JobKind {
    match req {
        JobRequest::InstallModel(p) => JobKind::InstallModelProfile { profile_id: p.clone() },
        JobRequest::RemoveModel(p) => JobKind::RemoveModelProfile { profile_id: p.clone() },
        JobRequest::RunBenchmark => JobKind::RunBenchmark { suite: "quick".into() },
        JobRequest::SupportBundle => JobKind::BuildSupportBundle,
    }
}

/// Issue a signed job for `req` from the owner key to this node. The sequence number is above
/// every one recorded for this issuer.
pub fn issue(st: &NodeState, issuer: &NodeKey, req: &JobRequest, now_ms: u64) -> Result<SignedJob> {
    let mut id = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    let last = DbSeenSet(&st.db).last_sequence(&issuer.public()).map_err(|e| HostError::Internal(e.0))?;
    let job = Job {
        job_id: JobId(id),
        audience: st.node_id,
        issuer: issuer.public(),
        issued_at_ms: now_ms,
        expires_at_ms: now_ms + JOB_TTL_S * 1000,
        sequence: last.map(|l| l + 1).unwrap_or(1),
        kind: kind_of(req),
    };
    issuer.sign_object(job).map_err(|e| HostError::Core(e.to_string()))
}

/// Open (verify + durably record) an owner job and apply the policy. Owner-issued jobs carry the
/// owner's consent, so `NeedsOwnerApproval` runs; `Refuse` does not.
pub fn open(st: &NodeState, owner: &NodePublicKey, job: &SignedJob, now_ms: u64) -> Result<(VerifiedJob, String)> {
    let roots = TrustRoots::new([*owner]);
    let mut seen = DbSeenSet(&st.db);
    let verified = job
        .open(&roots, &st.node_id, now_ms, &mut seen)
        .map_err(|e| HostError::InvalidParameter(format!("job refused: {e}")))?;
    // The owner signed it on this node: the core policy's owner-local class (the signature is the
    // consent; local mode refuses only remote issuers). This node has no remote issuers yet.
    let decision = JobPolicy::default().decide_for(IssuerClass::OwnerLocal, verified.kind(), st.mode());
    match decision.verdict {
        Verdict::Run => Ok((verified, decision.reason)),
        Verdict::Refuse | Verdict::NeedsOwnerApproval => {
            Err(HostError::InvalidParameter(format!("job refused by policy: {}", decision.reason)))
        }
    }
}
