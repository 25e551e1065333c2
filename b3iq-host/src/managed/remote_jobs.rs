//! Remote jobs in managed mode: the node long-polls its control plane for signed jobs
//! (`POST /v1/node/jobs/poll` with a signed `JobPoll`), opens each with the same rules as every
//! job ([`crate::jobs::submit_remote`]: pinned trust roots, audience, expiry, replay and
//! sequence, policy and owner consent by risk), and reports each outcome once from a durable
//! outbox (`POST /v1/node/jobs/result` with a signed `JobResultReport`; the job row's
//! `reported_at`), retried until the control plane has it.

use std::sync::Arc;
use std::time::Duration;

use b3iq_core::digest::Sha256Digest;
use b3iq_core::job::{JobKind, SeenSet as _, SignedJob};
use b3iq_protocol::messages::{
    Code, HexBlob, JobOutcome, ReleaseVersion, JobPoll, JobPollResponse, JobResultAck, JobResultData,
    JobResultReport, MAX_BUNDLE_BYTES,
};
use serde_json::Value;

use super::{post, CallError, Enrollment};
use crate::context::{unix_now_ms, NodeState};
use crate::error::{HostError, Result};
use crate::store::jobs::{self as sql, TxSeenSet, Unreported};

/// How long a poll may wait at the control plane when nothing is running here.
pub const POLL_WAIT_MS: u32 = 25_000;
/// How long a poll waits while a remote job runs here (so its result is reported soon).
pub const BUSY_POLL_WAIT_MS: u32 = 1_000;

/// The highest job sequence seen from the control plane's pinned key, or under a key it
/// rotated out (0 when none).
fn after_sequence(st: &NodeState, e: &Enrollment) -> Result<u64> {
    let seen = st.db.tx(|tx| {
        TxSeenSet(tx)
            .last_sequence(&e.job_key)
            .map_err(|x| HostError::Internal(x.0))
            .map(|v| v.unwrap_or(0))
    })?;
    Ok(seen.max(e.job_sequence_floor))
}

/// One long-poll: opens and starts (or parks for approval) every job in the answer. Returns how
/// many jobs arrived.
///
/// # Errors
/// `ControlPlane` when the poll is refused or the control plane is unreachable.
pub async fn poll_once(
    st: &Arc<NodeState>,
    e: &Enrollment,
    c: &reqwest::Client,
    wait_ms: u32,
) -> Result<usize> {
    let poll = JobPoll::sign(&st.key, after_sequence(st, e)?, wait_ms, unix_now_ms())
        .map_err(|x| HostError::Internal(x.to_string()))?;
    let url = format!("{}/v1/node/jobs/poll", e.control_url);
    let timeout = Duration::from_millis(u64::from(wait_ms)) + super::CONTROL_TIMEOUT;
    let answer: JobPollResponse = post(c, &url, None, &poll, Some(timeout)).await?;
    let n = answer.jobs.len();
    // In sequence order, one at a time: a `rotate_issuer_key` takes effect when it is accepted,
    // so the jobs after it in the same answer, signed with the new key, open.
    for job in answer.jobs {
        let id = job.body().job_id.to_hex();
        match crate::jobs::submit_remote(st, job).await {
            Ok(r) => tracing::info!(job = %id, state = %r.state, "managed mode: job received"),
            Err(err) => tracing::warn!(job = %id, error = %err, "managed mode: job refused"),
        }
    }
    Ok(n)
}

/// What a finished job produced, in the protocol's typed form.
fn result_data(st: &NodeState, u: &Unreported, kind: &JobKind) -> JobResultData {
    let r = u.job.result.clone().unwrap_or(Value::Null);
    let digest = |v: &Value| v.as_str().and_then(|s| Sha256Digest::parse(s).ok());
    if u.job.state != "succeeded" {
        return JobResultData::None {};
    }
    match kind {
        JobKind::RunBenchmark { .. } => JobResultData::Benchmark {
            generated_tokens_per_s_milli: (r["tokens_per_second"].as_f64().unwrap_or(0.0) * 1000.0)
                as u64,
            prompt_tokens_per_s_milli: (r["prompt_tokens_per_second"].as_f64().unwrap_or(0.0)
                * 1000.0) as u64,
            ttft_ms: r["ttft_ms"].as_u64().unwrap_or(0),
        },
        JobKind::InstallModelProfile { .. } => match digest(&r["sha256"]) {
            Some(sha256) => JobResultData::ModelInstalled {
                sha256,
                size_bytes: r["size_bytes"].as_u64().unwrap_or(0),
            },
            None => JobResultData::None {},
        },
        JobKind::RemoveModelProfile { .. } => digest(&r["removed"])
            .map(|sha256| JobResultData::ModelRemoved { sha256 })
            .unwrap_or(JobResultData::None {}),
        JobKind::ChangeMode { mode } => JobResultData::ModeChanged { mode: *mode },
        JobKind::BuildSupportBundle {} => {
            match std::fs::read(crate::jobs::bundle_path(st, &u.job.id)) {
                Ok(b) if b.len() <= MAX_BUNDLE_BYTES => JobResultData::SupportBundle {
                    sha256: Sha256Digest::of(&b),
                    bundle: HexBlob(b),
                },
                Ok(b) => {
                    tracing::warn!(
                        bytes = b.len(),
                        "managed mode: support bundle too large to report"
                    );
                    JobResultData::None {}
                }
                Err(_) => JobResultData::None {},
            }
        }
        // The outcome says it; what was loaded and what gave way stays in the node's job record.
        JobKind::RestartRuntime {} | JobKind::LoadModel { .. } => JobResultData::None {},
        JobKind::RotateIssuerKey { new_issuer } => JobResultData::IssuerKeyRotated {
            issuer: *new_issuer,
        },
        JobKind::Update { .. } => {
            let version = |k: &str| r[k].as_str().and_then(|v| ReleaseVersion::new(v).ok());
            match (
                version("previous"),
                version("installed"),
                r["sha256"].as_str().and_then(|h| Sha256Digest::parse(h).ok()),
            ) {
                (Some(previous), Some(installed), Some(sha256)) => JobResultData::Updated {
                    previous,
                    installed,
                    sha256,
                },
                _ => JobResultData::None {},
            }
        }
    }
}

fn outcome_of(state: &str) -> Option<JobOutcome> {
    Some(match state {
        "succeeded" => JobOutcome::Succeeded,
        "failed" => JobOutcome::Failed,
        "refused" => JobOutcome::Refused,
        "rejected" => JobOutcome::RejectedByOwner,
        "expired" => JobOutcome::Expired,
        _ => return None,
    })
}

/// Sends every unreported outcome (oldest first). A report the control plane stored, or one
/// for a job it does not know (a forged job the node refused), is marked reported; the rest
/// are retried on the next round.
///
/// # Errors
/// `ControlPlane` when unreachable; `Db`.
pub async fn report_outbox(st: &NodeState, e: &Enrollment, c: &reqwest::Client) -> Result<usize> {
    let url = format!("{}/v1/node/jobs/result", e.control_url);
    let mut sent = 0;
    for u in sql::unreported_remote(&st.db, 16)? {
        let Ok(signed) = SignedJob::decode(&u.envelope) else {
            sql::mark_reported(&st.db, &u.job.id, st.now())?;
            continue;
        };
        let Some(outcome) = outcome_of(&u.job.state) else {
            continue;
        };
        let body = signed.body();
        let code = u.code.as_deref().and_then(|c| Code::new(c).ok());
        let report = JobResultReport::sign(
            &st.key,
            body.job_id,
            outcome,
            code,
            result_data(st, &u, &body.kind),
            unix_now_ms(),
        )
        .map_err(|x| HostError::Internal(x.to_string()))?;
        match post::<JobResultAck>(c, &url, None, &report, None).await {
            Ok(_) | Err(CallError::Refused { status: 404, .. }) => {
                sql::mark_reported(&st.db, &u.job.id, st.now())?;
                if matches!(body.kind, JobKind::BuildSupportBundle {}) {
                    let _ = std::fs::remove_file(crate::jobs::bundle_path(st, &u.job.id));
                }
                st.db.audit(
                    st.now(),
                    "system",
                    "job.report",
                    &u.job.id,
                    "ok",
                    outcome.as_str(),
                );
                sent += 1;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(sent)
}

/// While enrolled and in managed mode: expire jobs the owner did not approve in time, report
/// finished jobs, and long-poll for new ones (briefly while a remote job runs, so its result
/// goes out soon). Backs off with jitter on errors. Returns when `stop` resolves.
pub async fn run(st: Arc<NodeState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut failures: u32 = 0;
    let mut last_problem: Option<String> = None;
    loop {
        let wait = match super::enrollment(&st.db) {
            Ok(Some(e))
                if matches!(
                    st.mode(),
                    b3iq_core::mode::OperatingMode::Managed
                        | b3iq_core::mode::OperatingMode::Network
                ) =>
            {
                match super::client(e.ca_pem.as_deref()) {
                    Err(err) => {
                        tracing::error!(error = %err, "managed mode: cannot build the control-plane client");
                        Duration::from_secs(60)
                    }
                    Ok(c) => {
                        let round = async {
                            for id in sql::expire_awaiting(&st.db, unix_now_ms(), st.now())? {
                                st.db.audit(
                                    st.now(),
                                    "system",
                                    "job.expire",
                                    &id,
                                    "expired",
                                    "not approved before its expiry",
                                );
                            }
                            report_outbox(&st, &e, &c).await?;
                            let busy = sql::remote_in_flight(&st.db)?;
                            poll_once(
                                &st,
                                &e,
                                &c,
                                if busy {
                                    BUSY_POLL_WAIT_MS
                                } else {
                                    POLL_WAIT_MS
                                },
                            )
                            .await?;
                            report_outbox(&st, &e, &c).await
                        };
                        let r = tokio::select! {
                            r = round => r,
                            _ = stop.changed() => return,
                        };
                        match r {
                            Ok(_) => {
                                if last_problem.take().is_some() {
                                    tracing::info!("managed mode: job polls work again");
                                }
                                failures = 0;
                                Duration::from_millis(100)
                            }
                            Err(err) => {
                                let msg = err.to_string();
                                if last_problem.as_deref() != Some(msg.as_str()) {
                                    tracing::warn!(error = %msg, "managed mode: job poll failed");
                                    last_problem = Some(msg);
                                }
                                failures = failures.saturating_add(1);
                                let base = Duration::from_secs(1u64 << failures.min(6))
                                    .min(Duration::from_secs(60));
                                base.mul_f64(rand::random::<f64>() * 0.5 + 0.75)
                            }
                        }
                    }
                }
            }
            Ok(_) => Duration::from_secs(5),
            Err(err) => {
                tracing::error!(error = %err, "managed mode: cannot read the enrollment");
                Duration::from_secs(30)
            }
        };
        if super::sleep_or_stop(&mut stop, wait).await {
            return;
        }
    }
}
