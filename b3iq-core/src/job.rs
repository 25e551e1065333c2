//! Signed jobs from a control plane, and the policy that decides whether they run.
//!
//! A job is a [`Signed<Job>`]: an envelope (job id, audience node, issuer key, validity window,
//! sequence number) around exactly one [`JobKind`] from a closed enum. There is no shell or
//! free-form command, by construction.
//!
//! [`SignedJob::open`] checks, in order: the issuer is in the trust roots and signed the
//! envelope; the signature; the audience is this node; the validity window is sane, has begun
//! and has not ended (both with the allowed clock skew); the job id was never seen (replay); the
//! sequence number is above the last accepted one from this issuer; and then records the job in
//! the [`SeenSet`] (which must make it durable) *before* returning it. Only then may the caller
//! ask the [`JobPolicy`] whether to run it.

use std::collections::{BTreeMap, BTreeSet};

use crate::bytes::fixed_bytes;
use crate::codec::{check_identifier, read_identifier, Canonical, Reader, Writer};
use crate::error::{CoreError, Result};
use crate::identity::{NodeId, NodePublicKey};
use crate::mode::OperatingMode;
use crate::signed::{Kind, Signed, SignedKind};
use crate::version::{SoftwareVersion, MAX_VERSION_LEN};

/// Maximum length of profile ids and benchmark suite names.
pub const MAX_PROFILE_ID_LEN: u32 = 64;
/// Maximum length of a model id in a `load_model` job.
pub const MAX_MODEL_ID_LEN: u32 = 128;
/// Default allowed clock skew between control plane and node: 2 minutes.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = 2 * 60 * 1000;
/// Longest validity window a job may have: 24 hours.
pub const MAX_JOB_VALIDITY_MS: u64 = 24 * 60 * 60 * 1000;

fixed_bytes!(
    /// A job id (16 bytes, hex in JSON), unique per issuer.
    JobId,
    16,
    "job id"
);

/// What a job asks the node to do. A closed set: nothing here can run arbitrary commands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobKind {
    /// Install an approved model profile. Tag 0.
    InstallModelProfile {
        /// Profile id (identifier, at most 64 bytes).
        profile_id: String,
    },
    /// Remove an installed model profile. Tag 1.
    RemoveModelProfile {
        /// Profile id.
        profile_id: String,
    },
    /// Run a named benchmark suite. Tag 2.
    RunBenchmark {
        /// Suite name (identifier, at most 64 bytes).
        suite: String,
    },
    /// Build a redacted support bundle. Tag 3. (An empty struct variant, not a unit one: serde
    /// enforces `deny_unknown_fields` only on struct variants of an internally tagged enum.)
    BuildSupportBundle {},
    /// Restart the inference runtime. Tag 4.
    RestartRuntime {},
    /// Change the node's operating mode. Tag 5.
    ChangeMode {
        /// Target mode.
        mode: OperatingMode,
    },
    /// Replace the issuer's key by `new_issuer` in the node's trust roots. Tag 6. Only a remote
    /// issuer may rotate its own key, and only by a job signed with the key being replaced:
    /// from the rotation on, the node refuses jobs signed by the old key. Low risk: the new key
    /// gets exactly the authority the old one had, nothing more.
    RotateIssuerKey {
        /// The key that replaces the signer's (must differ from it).
        new_issuer: NodePublicKey,
    },
    /// Install the signed current `b3iqd` release from the node's own configured release
    /// repository, verified against its pinned TUF root (the same path as `b3iqd update
    /// apply`). Tag 7. The job names no URL and no binary: only, optionally, the lowest version
    /// it accepts, so a job queued for 1.4.0 installs nothing if the repository's signed
    /// current release is older. High risk: it replaces the software that enforces every
    /// other rule, so the owner always approves it.
    Update {
        /// The lowest release version the node may install (SemVer, see [`crate::version`]);
        /// `None`: whatever the repository's signed current release is, if newer than the
        /// running one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    /// Load an installed model so it is served (a no-op when it already is). Tag 8. To make
    /// room the node unloads idle models, least recently used first, within its
    /// `max_loaded_models` and memory budget; it never unloads a model that is serving a
    /// request (the job fails instead). Low risk: it changes which models are resident, not
    /// what is installed or who may use them.
    LoadModel {
        /// The model id as `GET /v1/models` lists it (identifier, at most 128 bytes).
        model: String,
    },
}

impl JobKind {
    /// Wire tag.
    pub fn tag(&self) -> u8 {
        match self {
            JobKind::InstallModelProfile { .. } => 0,
            JobKind::RemoveModelProfile { .. } => 1,
            JobKind::RunBenchmark { .. } => 2,
            JobKind::BuildSupportBundle {} => 3,
            JobKind::RestartRuntime {} => 4,
            JobKind::ChangeMode { .. } => 5,
            JobKind::RotateIssuerKey { .. } => 6,
            JobKind::Update { .. } => 7,
            JobKind::LoadModel { .. } => 8,
        }
    }

    /// Short snake_case name (as in JSON `type`).
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::InstallModelProfile { .. } => "install_model_profile",
            JobKind::RemoveModelProfile { .. } => "remove_model_profile",
            JobKind::RunBenchmark { .. } => "run_benchmark",
            JobKind::BuildSupportBundle {} => "build_support_bundle",
            JobKind::RestartRuntime {} => "restart_runtime",
            JobKind::ChangeMode { .. } => "change_mode",
            JobKind::RotateIssuerKey { .. } => "rotate_issuer_key",
            JobKind::Update { .. } => "update",
            JobKind::LoadModel { .. } => "load_model",
        }
    }

    /// How risky the job is for the owner.
    pub fn risk(&self) -> RiskLevel {
        match self {
            JobKind::RunBenchmark { .. }
            | JobKind::RestartRuntime {}
            | JobKind::RotateIssuerKey { .. }
            | JobKind::LoadModel { .. } => RiskLevel::Low,
            JobKind::InstallModelProfile { .. }
            | JobKind::RemoveModelProfile { .. }
            | JobKind::BuildSupportBundle {} => RiskLevel::Medium,
            JobKind::ChangeMode { .. } | JobKind::Update { .. } => RiskLevel::High,
        }
    }
}

impl Canonical for JobKind {
    const NAME: &'static str = "job kind";
    fn encode_to(&self, w: &mut Writer) {
        w.u8(self.tag());
        match self {
            JobKind::InstallModelProfile { profile_id } | JobKind::RemoveModelProfile { profile_id } => w.str(profile_id),
            JobKind::RunBenchmark { suite } => w.str(suite),
            JobKind::LoadModel { model } => w.str(model),
            JobKind::BuildSupportBundle {} | JobKind::RestartRuntime {} => {}
            JobKind::ChangeMode { mode } => w.put(mode),
            JobKind::RotateIssuerKey { new_issuer } => w.put(new_issuer),
            JobKind::Update { version } => w.option(version.as_ref(), |w, v| w.str(v)),
        }
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        Ok(match r.u8("job kind")? {
            0 => JobKind::InstallModelProfile {
                profile_id: read_identifier(r, MAX_PROFILE_ID_LEN, "profile_id")?,
            },
            1 => JobKind::RemoveModelProfile {
                profile_id: read_identifier(r, MAX_PROFILE_ID_LEN, "profile_id")?,
            },
            2 => JobKind::RunBenchmark {
                suite: read_identifier(r, MAX_PROFILE_ID_LEN, "suite")?,
            },
            3 => JobKind::BuildSupportBundle {},
            4 => JobKind::RestartRuntime {},
            5 => JobKind::ChangeMode { mode: r.get()? },
            6 => JobKind::RotateIssuerKey { new_issuer: r.get()? },
            7 => JobKind::Update {
                version: r.option("version", |r| {
                    let v = r.str(MAX_VERSION_LEN as u32, "version")?;
                    SoftwareVersion::parse(&v)?;
                    Ok(v)
                })?,
            },
            8 => JobKind::LoadModel {
                model: read_identifier(r, MAX_MODEL_ID_LEN, "model")?,
            },
            tag => return Err(CoreError::InvalidTag { field: "job kind", tag }),
        })
    }
}

/// The job envelope (the signed body).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Unique id.
    pub job_id: JobId,
    /// The node that must run it.
    pub audience: NodeId,
    /// The issuing control-plane key (must also be the envelope's signer).
    pub issuer: NodePublicKey,
    /// Issue time, unix ms.
    pub issued_at_ms: u64,
    /// Expiry time, unix ms (after `issued_at_ms`, at most 24 h later).
    pub expires_at_ms: u64,
    /// Per-issuer sequence number; must increase.
    pub sequence: u64,
    /// What to do.
    pub kind: JobKind,
}

/// A signed job.
pub type SignedJob = Signed<Job>;

impl Canonical for Job {
    const NAME: &'static str = "job";
    fn encode_to(&self, w: &mut Writer) {
        w.put(&self.job_id);
        w.put(&self.audience);
        w.put(&self.issuer);
        w.u64(self.issued_at_ms);
        w.u64(self.expires_at_ms);
        w.u64(self.sequence);
        w.put(&self.kind);
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            job_id: r.get()?,
            audience: r.get()?,
            issuer: r.get()?,
            issued_at_ms: r.u64("issued_at_ms")?,
            expires_at_ms: r.u64("expires_at_ms")?,
            sequence: r.u64("sequence")?,
            kind: r.get()?,
        })
    }
}

impl SignedKind for Job {
    const KIND: Kind = Kind::Job;
    crate::canonical_body!();
    fn claimed_signer(&self) -> Option<NodePublicKey> {
        Some(self.issuer)
    }
}

impl Job {
    /// Validates the job's own fields (ids, validity window) without any clock.
    pub fn check_fields(&self) -> Result<()> {
        match &self.kind {
            JobKind::InstallModelProfile { profile_id } | JobKind::RemoveModelProfile { profile_id } => {
                check_identifier("profile_id", profile_id, MAX_PROFILE_ID_LEN as usize)?;
            }
            JobKind::RunBenchmark { suite } => check_identifier("suite", suite, MAX_PROFILE_ID_LEN as usize)?,
            JobKind::LoadModel { model } => check_identifier("model", model, MAX_MODEL_ID_LEN as usize)?,
            JobKind::Update { version: Some(v) } => {
                SoftwareVersion::parse(v)?;
            }
            JobKind::RotateIssuerKey { new_issuer } if *new_issuer == self.issuer => {
                return Err(CoreError::InvalidField {
                    field: "new_issuer",
                    reason: "rotate_issuer_key must name a key other than its signer's".into(),
                });
            }
            _ => {}
        }
        if self.expires_at_ms <= self.issued_at_ms {
            return Err(CoreError::InvalidValidity {
                job_id: self.job_id.to_hex(),
                reason: "expires_at_ms must be after issued_at_ms".into(),
            });
        }
        if self.expires_at_ms - self.issued_at_ms > MAX_JOB_VALIDITY_MS {
            return Err(CoreError::InvalidValidity {
                job_id: self.job_id.to_hex(),
                reason: format!("the validity window is longer than {MAX_JOB_VALIDITY_MS} ms"),
            });
        }
        Ok(())
    }
}

/// The control-plane keys a node accepts jobs from, and the clock skew it tolerates.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrustRoots {
    issuers: BTreeSet<NodePublicKey>,
    max_clock_skew_ms: u64,
}

impl Default for TrustRoots {
    fn default() -> Self {
        Self {
            issuers: BTreeSet::new(),
            max_clock_skew_ms: DEFAULT_MAX_CLOCK_SKEW_MS,
        }
    }
}

impl TrustRoots {
    /// Trust roots with the default clock skew.
    pub fn new(issuers: impl IntoIterator<Item = NodePublicKey>) -> Self {
        Self {
            issuers: issuers.into_iter().collect(),
            max_clock_skew_ms: DEFAULT_MAX_CLOCK_SKEW_MS,
        }
    }
    /// Sets the tolerated clock skew.
    pub fn with_max_clock_skew_ms(mut self, ms: u64) -> Self {
        self.max_clock_skew_ms = ms;
        self
    }
    /// The tolerated clock skew.
    pub fn max_clock_skew_ms(&self) -> u64 {
        self.max_clock_skew_ms
    }
    /// True if `key` may issue jobs.
    pub fn contains(&self, key: &NodePublicKey) -> bool {
        self.issuers.contains(key)
    }
    /// Adds an issuer.
    pub fn insert(&mut self, key: NodePublicKey) {
        self.issuers.insert(key);
    }
    /// The issuers.
    pub fn issuers(&self) -> impl Iterator<Item = &NodePublicKey> {
        self.issuers.iter()
    }
}

/// An error from a [`SeenSet`] store (for example SQLite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenSetError(pub String);

impl std::fmt::Display for SeenSetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SeenSetError {}

impl From<SeenSetError> for CoreError {
    fn from(e: SeenSetError) -> Self {
        CoreError::SeenSet { message: e.0 }
    }
}

/// The node's durable record of accepted jobs (the host implements it on SQLite).
pub trait SeenSet {
    /// True if a job with this id was already recorded.
    fn contains(&self, job_id: &JobId) -> std::result::Result<bool, SeenSetError>;
    /// The highest sequence number recorded from `issuer`, if any.
    fn last_sequence(&self, issuer: &NodePublicKey) -> std::result::Result<Option<u64>, SeenSetError>;
    /// Records the job. Must be durable (committed) before returning `Ok`: the caller runs the
    /// job right after. Entries may be pruned once `expires_at_ms` plus the skew has passed,
    /// but the per-issuer sequence must be kept.
    fn record(
        &mut self,
        issuer: &NodePublicKey,
        job_id: &JobId,
        sequence: u64,
        expires_at_ms: u64,
    ) -> std::result::Result<(), SeenSetError>;
}

/// An in-memory [`SeenSet`] (for tests, tools and embedders without storage).
#[derive(Debug, Clone, Default)]
pub struct MemorySeenSet {
    ids: BTreeSet<JobId>,
    last: BTreeMap<NodePublicKey, u64>,
}

impl SeenSet for MemorySeenSet {
    fn contains(&self, job_id: &JobId) -> std::result::Result<bool, SeenSetError> {
        Ok(self.ids.contains(job_id))
    }
    fn last_sequence(&self, issuer: &NodePublicKey) -> std::result::Result<Option<u64>, SeenSetError> {
        Ok(self.last.get(issuer).copied())
    }
    fn record(&mut self, issuer: &NodePublicKey, job_id: &JobId, sequence: u64, _expires_at_ms: u64) -> std::result::Result<(), SeenSetError> {
        self.ids.insert(*job_id);
        let e = self.last.entry(*issuer).or_insert(sequence);
        *e = (*e).max(sequence);
        Ok(())
    }
}

/// A job that passed every check in [`SignedJob::open`] and was recorded as seen.
/// Only `open` can make one, so an executor taking `VerifiedJob` cannot run an unchecked job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJob {
    job: Job,
    job_hash: [u8; 32],
}

impl VerifiedJob {
    /// The job.
    pub fn job(&self) -> &Job {
        &self.job
    }
    /// What to do.
    pub fn kind(&self) -> &JobKind {
        &self.job.kind
    }
    /// blake3 of the signed message (for the audit log).
    pub fn job_hash(&self) -> [u8; 32] {
        self.job_hash
    }
}

impl Signed<Job> {
    /// Checks the job for this node at `now_ms` and records it in `seen` (see module docs).
    pub fn open(
        &self,
        trust_roots: &TrustRoots,
        audience: &NodeId,
        now_ms: u64,
        seen: &mut impl SeenSet,
    ) -> Result<VerifiedJob> {
        let job = self.body();
        let id = job.job_id.to_hex();
        if !trust_roots.contains(&job.issuer) || !trust_roots.contains(self.signer()) {
            return Err(CoreError::UntrustedIssuer { job_id: id });
        }
        // Checks signer == issuer and the signature.
        self.verify(&job.issuer)?;
        if &job.audience != audience {
            return Err(CoreError::WrongAudience {
                job_id: id,
                audience: job.audience.to_string(),
            });
        }
        job.check_fields()?;
        let skew = trust_roots.max_clock_skew_ms;
        if now_ms.saturating_add(skew) < job.issued_at_ms {
            return Err(CoreError::NotYetValid {
                job_id: id,
                issued_at_ms: job.issued_at_ms,
                now_ms,
            });
        }
        if now_ms > job.expires_at_ms.saturating_add(skew) {
            return Err(CoreError::Expired {
                job_id: id,
                expires_at_ms: job.expires_at_ms,
                now_ms,
            });
        }
        if seen.contains(&job.job_id)? {
            return Err(CoreError::Replayed { job_id: id });
        }
        if let Some(last) = seen.last_sequence(&job.issuer)? {
            if job.sequence <= last {
                return Err(CoreError::StaleSequence {
                    job_id: id,
                    sequence: job.sequence,
                    last,
                });
            }
        }
        seen.record(&job.issuer, &job.job_id, job.sequence, job.expires_at_ms)?;
        Ok(VerifiedJob {
            job: job.clone(),
            job_hash: self.object_hash(),
        })
    }
}

/// How risky a job is for the node owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    /// Read-only or self-healing (benchmarks, runtime restart).
    Low,
    /// Changes disk contents or sends diagnostics (install/remove models, support bundles).
    Medium,
    /// Changes what the node is exposed to (operating mode) or the software it runs (update).
    High,
}

/// The policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Run it now.
    Run,
    /// Ask the owner first.
    NeedsOwnerApproval,
    /// Never run it.
    Refuse,
}

/// A decision with its reason (for the audit log and the owner's UI).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyDecision {
    /// What to do.
    pub verdict: Verdict,
    /// The job's risk level.
    pub risk: RiskLevel,
    /// Why, in words.
    pub reason: String,
}

/// Decides per operating mode and risk level whether a verified job runs.
///
/// Rules (first match wins):
/// 1. Local mode: every remote job is refused (there is no control plane in local mode).
/// 2. `ChangeMode` to the current mode: refused (nothing to do).
/// 3. High risk (`ChangeMode`, `Update`): always needs the owner's approval; never
///    auto-approved.
///    (`RotateIssuerKey` is low risk: the key it names gets the signer's authority, no more.
///    From the owner's own key it is refused by [`JobPolicy::decide_for`].)
/// 4. Risk at or below `auto_approve_up_to`: run.
/// 5. Otherwise: needs the owner's approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobPolicy {
    /// Highest risk level run without asking (`None`: ask for everything). Values above
    /// `Medium` are treated as `Medium`.
    pub auto_approve_up_to: Option<RiskLevel>,
}

impl Default for JobPolicy {
    /// Auto-approve low-risk jobs only.
    fn default() -> Self {
        Self {
            auto_approve_up_to: Some(RiskLevel::Low),
        }
    }
}

/// Who issued a job, as far as the policy is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssuerClass {
    /// The node's owner, signing on this machine (the local UI or CLI): the signature is the
    /// owner's consent, in every mode, including local.
    OwnerLocal,
    /// A remote issuer (the control plane of a managed fleet): [`JobPolicy::decide`]'s rules.
    Remote,
}

impl JobPolicy {
    /// The decision for `kind` from an issuer of `class` when the node is in `mode`. Owner-local
    /// jobs run (the owner asked for them), except a `change_mode` to the mode the node is
    /// already in, which is refused as a no-op; remote jobs follow [`JobPolicy::decide`].
    pub fn decide_for(&self, class: IssuerClass, kind: &JobKind, mode: OperatingMode) -> PolicyDecision {
        match class {
            IssuerClass::Remote => self.decide(kind, mode),
            IssuerClass::OwnerLocal => {
                let risk = kind.risk();
                if let JobKind::RotateIssuerKey { .. } = kind {
                    return PolicyDecision {
                        verdict: Verdict::Refuse,
                        risk,
                        reason: "rotate_issuer_key refused: it rotates a control plane's key; the owner's own key rotates with the owner's key rotation".into(),
                    };
                }
                if let JobKind::ChangeMode { mode: to } = kind {
                    if *to == mode {
                        return PolicyDecision {
                            verdict: Verdict::Refuse,
                            risk,
                            reason: format!("change_mode refused: the node is already in {mode} mode"),
                        };
                    }
                }
                PolicyDecision {
                    verdict: Verdict::Run,
                    risk,
                    reason: format!("{} is {risk:?} risk, issued by the owner on this node in {mode} mode", kind.name()),
                }
            }
        }
    }

    /// The decision for `kind` from a remote issuer when the node is in `mode`.
    pub fn decide(&self, kind: &JobKind, mode: OperatingMode) -> PolicyDecision {
        let risk = kind.risk();
        let d = |verdict, reason: String| PolicyDecision { verdict, risk, reason };
        if mode == OperatingMode::Local {
            return d(
                Verdict::Refuse,
                format!("{} refused: the node is in local mode, where remote jobs are disabled; enroll it in managed mode to accept them", kind.name()),
            );
        }
        if let JobKind::ChangeMode { mode: to } = kind {
            if *to == mode {
                return d(Verdict::Refuse, format!("change_mode refused: the node is already in {mode} mode"));
            }
            return d(
                Verdict::NeedsOwnerApproval,
                format!("change_mode from {mode} to {to} changes what the node is exposed to; only the owner can approve it"),
            );
        }
        let auto = self.auto_approve_up_to.map(|r| r.min(RiskLevel::Medium));
        match auto {
            Some(limit) if risk <= limit => d(
                Verdict::Run,
                format!("{} is {risk:?} risk, within the owner's auto-approval limit ({limit:?}) in {mode} mode", kind.name()),
            ),
            _ => d(
                Verdict::NeedsOwnerApproval,
                format!("{} is {risk:?} risk, above the owner's auto-approval limit in {mode} mode; waiting for the owner", kind.name()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;

    struct Fx {
        cp: NodeKey,
        node: NodeKey,
        roots: TrustRoots,
    }

    fn fx() -> Fx {
        let cp = NodeKey::from_seed([10; 32]);
        let node = NodeKey::from_seed([11; 32]);
        let roots = TrustRoots::new([cp.public()]);
        Fx { cp, node, roots }
    }

    fn job(f: &Fx, id: u8, seq: u64) -> Job {
        Job {
            job_id: JobId([id; 16]),
            audience: f.node.node_id(),
            issuer: f.cp.public(),
            issued_at_ms: 1_000_000,
            expires_at_ms: 1_060_000,
            sequence: seq,
            kind: JobKind::RunBenchmark { suite: "quick".into() },
        }
    }

    #[test]
    fn open_accepts_once_then_refuses_replay_and_stale() {
        let f = fx();
        let mut seen = MemorySeenSet::default();
        let s = f.cp.sign_object(job(&f, 1, 5)).unwrap();
        let bytes = s.encode();
        let s = SignedJob::decode(&bytes).unwrap();
        let v = s.open(&f.roots, &f.node.node_id(), 1_000_100, &mut seen).unwrap();
        assert_eq!(v.kind(), &JobKind::RunBenchmark { suite: "quick".into() });
        assert!(matches!(s.open(&f.roots, &f.node.node_id(), 1_000_100, &mut seen), Err(CoreError::Replayed { .. })));
        let older = f.cp.sign_object(job(&f, 2, 5)).unwrap();
        assert!(matches!(older.open(&f.roots, &f.node.node_id(), 1_000_100, &mut seen), Err(CoreError::StaleSequence { sequence: 5, last: 5, .. })));
        let newer = f.cp.sign_object(job(&f, 3, 6)).unwrap();
        newer.open(&f.roots, &f.node.node_id(), 1_000_100, &mut seen).unwrap();
    }

    #[test]
    fn open_error_cases() {
        let f = fx();
        let mut seen = MemorySeenSet::default();
        let me = f.node.node_id();
        // untrusted issuer
        let rogue = NodeKey::from_seed([12; 32]);
        let mut j = job(&f, 1, 1);
        j.issuer = rogue.public();
        let s = rogue.sign_object(j).unwrap();
        assert!(matches!(s.open(&f.roots, &me, 1_000_100, &mut seen), Err(CoreError::UntrustedIssuer { .. })));
        // wrong audience
        let s = f.cp.sign_object(job(&f, 1, 1)).unwrap();
        assert!(matches!(s.open(&f.roots, &rogue.node_id(), 1_000_100, &mut seen), Err(CoreError::WrongAudience { .. })));
        // too early / expired (with 2 min skew)
        assert!(s.open(&f.roots, &me, 1_000_000 - 120_000, &mut MemorySeenSet::default()).is_ok());
        assert!(matches!(s.open(&f.roots, &me, 1_000_000 - 120_001, &mut seen), Err(CoreError::NotYetValid { .. })));
        assert!(matches!(s.open(&f.roots, &me, 1_060_000 + 120_001, &mut seen), Err(CoreError::Expired { .. })));
        // nothing was recorded by failed opens
        assert!(!seen.contains(&JobId([1; 16])).unwrap());
        // bad window
        let mut j = job(&f, 4, 1);
        j.expires_at_ms = j.issued_at_ms;
        let s = f.cp.sign_object(j).unwrap();
        assert!(matches!(s.open(&f.roots, &me, 1_000_000, &mut seen), Err(CoreError::InvalidValidity { .. })));
        let mut j = job(&f, 5, 1);
        j.expires_at_ms = j.issued_at_ms + MAX_JOB_VALIDITY_MS + 1;
        let s = f.cp.sign_object(j).unwrap();
        assert!(matches!(s.open(&f.roots, &me, 1_000_000, &mut seen), Err(CoreError::InvalidValidity { .. })));
        // signer must be the issuer
        let s = f.cp.sign_object(job(&f, 6, 1)).unwrap();
        let forged = SignedJob::from_parts(s.body().clone(), rogue.public(), *s.signature()).unwrap();
        let mut roots = f.roots.clone();
        roots.insert(rogue.public());
        assert!(forged.open(&roots, &me, 1_000_100, &mut seen).is_err());
        // sign refuses a mismatched issuer up front
        assert!(matches!(rogue.sign_object(job(&f, 7, 1)), Err(CoreError::SignerMismatch { .. })));
    }

    #[test]
    fn seen_set_failure_stops_the_job() {
        struct Broken;
        impl SeenSet for Broken {
            fn contains(&self, _: &JobId) -> std::result::Result<bool, SeenSetError> {
                Ok(false)
            }
            fn last_sequence(&self, _: &NodePublicKey) -> std::result::Result<Option<u64>, SeenSetError> {
                Ok(None)
            }
            fn record(&mut self, _: &NodePublicKey, _: &JobId, _: u64, _: u64) -> std::result::Result<(), SeenSetError> {
                Err(SeenSetError("disk full".into()))
            }
        }
        let f = fx();
        let s = f.cp.sign_object(job(&f, 1, 1)).unwrap();
        assert!(matches!(s.open(&f.roots, &f.node.node_id(), 1_000_100, &mut Broken), Err(CoreError::SeenSet { .. })));
    }

    #[test]
    fn policy_matrix() {
        let p = JobPolicy::default();
        let bench = JobKind::RunBenchmark { suite: "q".into() };
        let install = JobKind::InstallModelProfile { profile_id: "p".into() };
        let to_net = JobKind::ChangeMode { mode: OperatingMode::Network };
        assert_eq!(p.decide(&bench, OperatingMode::Local).verdict, Verdict::Refuse);
        assert_eq!(p.decide(&bench, OperatingMode::Managed).verdict, Verdict::Run);
        assert_eq!(p.decide(&install, OperatingMode::Managed).verdict, Verdict::NeedsOwnerApproval);
        assert_eq!(p.decide(&to_net, OperatingMode::Managed).verdict, Verdict::NeedsOwnerApproval);
        assert_eq!(p.decide(&to_net, OperatingMode::Network).verdict, Verdict::Refuse);
        let trusting = JobPolicy { auto_approve_up_to: Some(RiskLevel::High) };
        assert_eq!(trusting.decide(&install, OperatingMode::Network).verdict, Verdict::Run);
        assert_eq!(trusting.decide(&to_net, OperatingMode::Managed).verdict, Verdict::NeedsOwnerApproval);
        // The owner, signing locally, is not a remote issuer: local mode does not refuse it.
        let owner = p.decide_for(IssuerClass::OwnerLocal, &install, OperatingMode::Local);
        assert_eq!(owner.verdict, Verdict::Run);
        assert!(owner.reason.contains("owner"));
        assert_eq!(p.decide_for(IssuerClass::Remote, &install, OperatingMode::Local).verdict, Verdict::Refuse);
        let same = JobKind::ChangeMode { mode: OperatingMode::Local };
        assert_eq!(p.decide_for(IssuerClass::OwnerLocal, &same, OperatingMode::Local).verdict, Verdict::Refuse);
        // A rotation runs from a remote issuer in managed mode; the owner's own key cannot send one.
        let rot = JobKind::RotateIssuerKey { new_issuer: crate::identity::NodeKey::from_seed([4; 32]).public() };
        assert_eq!(p.decide_for(IssuerClass::Remote, &rot, OperatingMode::Managed).verdict, Verdict::Run);
        assert_eq!(p.decide_for(IssuerClass::OwnerLocal, &rot, OperatingMode::Managed).verdict, Verdict::Refuse);
        let strict = JobPolicy { auto_approve_up_to: None };
        assert_eq!(strict.decide(&bench, OperatingMode::Managed).verdict, Verdict::NeedsOwnerApproval);
        assert!(!p.decide(&bench, OperatingMode::Local).reason.is_empty());
    }

    #[test]
    fn job_kind_json_and_bad_tags() {
        let k = JobKind::ChangeMode { mode: OperatingMode::Managed };
        assert_eq!(serde_json::to_string(&k).unwrap(), r#"{"type":"change_mode","mode":"managed"}"#);
        assert!(matches!(JobKind::from_canonical_bytes(&[9]), Err(CoreError::InvalidTag { tag: 9, .. })));
        assert!(JobKind::from_canonical_bytes(&[6, 1, 2]).is_err(), "a truncated key");
        let r = JobKind::RotateIssuerKey { new_issuer: crate::identity::NodeKey::from_seed([3; 32]).public() };
        assert_eq!(JobKind::from_canonical_bytes(&r.to_canonical_bytes()).unwrap(), r);
        assert_eq!(serde_json::from_str::<JobKind>(&serde_json::to_string(&r).unwrap()).unwrap(), r);
        assert_eq!((r.risk(), r.name()), (RiskLevel::Low, "rotate_issuer_key"));
        assert!(JobKind::from_canonical_bytes(&[5, 3]).is_err());
        assert!(serde_json::from_str::<JobKind>(r#"{"type":"shell","cmd":"rm -rf /"}"#).is_err());
    }

    #[test]
    fn load_model_jobs_name_an_identifier_and_run_without_the_owner() {
        let k = JobKind::LoadModel { model: "smollm2-135m-instruct.q8_0".into() };
        assert_eq!(serde_json::to_string(&k).unwrap(), r#"{"type":"load_model","model":"smollm2-135m-instruct.q8_0"}"#);
        assert_eq!(JobKind::from_canonical_bytes(&k.to_canonical_bytes()).unwrap(), k);
        assert_eq!((k.tag(), k.name(), k.risk()), (8, "load_model", RiskLevel::Low));
        assert_eq!(JobPolicy::default().decide(&k, OperatingMode::Managed).verdict, Verdict::Run);
        assert_eq!(JobPolicy::default().decide(&k, OperatingMode::Local).verdict, Verdict::Refuse);
        for bad in ["../etc/passwd", "", "a b", &"m".repeat(129)] {
            let b = JobKind::LoadModel { model: bad.to_string() };
            assert!(JobKind::from_canonical_bytes(&b.to_canonical_bytes()).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<JobKind>(r#"{"type":"load_model"}"#).is_err());
        assert!(serde_json::from_str::<JobKind>(r#"{"type":"load_model","model":"m","path":"/x"}"#).is_err());
    }

    #[test]
    fn update_jobs_name_only_a_version_and_always_need_the_owner() {
        let any = JobKind::Update { version: None };
        let min = JobKind::Update { version: Some("1.4.0".into()) };
        assert_eq!(serde_json::to_string(&any).unwrap(), r#"{"type":"update"}"#);
        assert_eq!(serde_json::to_string(&min).unwrap(), r#"{"type":"update","version":"1.4.0"}"#);
        for k in [&any, &min] {
            assert_eq!(JobKind::from_canonical_bytes(&k.to_canonical_bytes()).unwrap(), *k);
            assert_eq!(serde_json::from_str::<JobKind>(&serde_json::to_string(k).unwrap()).unwrap(), *k);
            assert_eq!((k.tag(), k.name(), k.risk()), (7, "update", RiskLevel::High));
        }
        assert_eq!(any.to_canonical_bytes(), [7, 0]);
        // No URL, binary or anything else: unknown fields are refused.
        assert!(serde_json::from_str::<JobKind>(r#"{"type":"update","url":"https://evil.example/b3iqd"}"#).is_err());
        // A version that is not SemVer is refused when signing and when decoding.
        let f = fx();
        let mut j = job(&f, 1, 1);
        j.kind = JobKind::Update { version: Some("../../bin/sh".into()) };
        assert_eq!(f.cp.sign_object(j).unwrap_err().code(), "invalid_field");
        let mut bytes = vec![7, 1];
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(b"1.4");
        assert!(JobKind::from_canonical_bytes(&bytes).is_err());
        // The owner approves every update, whatever the auto-approval limit.
        let trusting = JobPolicy { auto_approve_up_to: Some(RiskLevel::High) };
        assert_eq!(trusting.decide(&min, OperatingMode::Managed).verdict, Verdict::NeedsOwnerApproval);
        assert_eq!(trusting.decide(&min, OperatingMode::Local).verdict, Verdict::Refuse);
        assert_eq!(JobPolicy::default().decide_for(IssuerClass::OwnerLocal, &any, OperatingMode::Local).verdict, Verdict::Run);
    }
}
