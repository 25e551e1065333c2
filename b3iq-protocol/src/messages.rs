//! Node <-> control-plane message types (JSON over outbound HTTPS).
//!
//! Every type here is public payload by the architecture's rules, so each is built only from
//! ids, hashes, counts, times, enums and signed b3iq-core objects: there is no free-form text
//! field, every string is a validated identifier, and every struct refuses unknown fields. A
//! prompt, an output, a key, a token, a customer identity, a URL or a file path therefore has
//! nowhere to go (see `tests/protocol/messages.rs`).
//!
//! Flows:
//! * enrollment: the control plane sends an [`EnrollmentChallenge`] (its audience id and a
//!   single-use 32-byte nonce with an expiry); the node answers with an [`EnrollmentRequest`]
//!   carrying a b3iq-core signed `EnrollmentProof` (Ed25519, self-certified).
//!   [`EnrollmentRequest::verify`] is everything the control plane checks before its attester
//!   signs the on-chain attestation (recording the nonce as used is the caller's job).
//! * heartbeat: the node sends a [`HeartbeatRequest`] with a b3iq-core signed `Heartbeat`
//!   (health, counters, model inventory digests); the control plane answers [`HeartbeatAck`].
//! * job poll: the node long-polls with a signed [`JobPoll`] (its own domain tag, see
//!   [`JobPoll::signing_message`]); the answer [`JobPollResponse`] carries b3iq-core signed jobs,
//!   which the node opens with the core job rules (signature, audience, expiry, replay, policy).
//! * job result: the node reports how each remote job ended with a signed [`JobResultReport`]
//!   (its own domain tag, see [`JobResultReport::signing_message`]): an outcome, an error code,
//!   and typed results (benchmark rates, artifact digests, the mode, a redacted support
//!   bundle); the control plane answers [`JobResultAck`].
//! * receipts: the node uploads its own signed receipts in a signed [`ReceiptUpload`] batch;
//!   the control plane stores each once and answers [`ReceiptUploadAck`].
//!
//! The JSON form of the embedded signed objects is b3iq-core's (`kind`, `version`, `signer`,
//! `body`, `signature`; unknown fields refused).

use b3iq_core::enrollment::{Nonce, SignedEnrollmentProof};
use b3iq_core::heartbeat::SignedHeartbeat;
use b3iq_core::digest::Sha256Digest;
use b3iq_core::job::{JobId, SignedJob};
use b3iq_core::mode::OperatingMode;
use b3iq_core::receipt::SignedReceipt;
use b3iq_core::{NodeId, NodeKey, NodePublicKey, Signature};

use crate::error::{ProtocolError, Result};

/// Domain tag of job polls.
pub const JOB_POLL_TAG: &[u8] = b"b3iq/cp/job-poll/v1";
/// Most jobs in one poll answer.
pub const MAX_JOBS_PER_POLL: usize = 32;
/// Longest control-plane audience id.
pub const MAX_AUDIENCE_LEN: usize = 128;
/// Longest wait a job poll may ask for.
pub const MAX_POLL_WAIT_MS: u32 = 60_000;

/// A challenge id (16 bytes, lowercase hex in JSON), chosen by the control plane.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ChallengeId(pub [u8; 16]);

impl serde::Serialize for ChallengeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for ChallengeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(serde::de::Error::custom(
                "challenge_id: expected 16 bytes as lowercase hex",
            ));
        }
        let mut out = [0u8; 16];
        hex::decode_to_slice(&*s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(Self(out))
    }
}

/// A control-plane id: 1 to 128 of letters, digits, `. _ - :`, not starting with `.`. No `/`,
/// so no URL or path fits.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize)]
#[serde(transparent)]
pub struct Audience(String);

impl Audience {
    /// Validates an audience id.
    pub fn new(s: &str) -> Result<Self> {
        if s.is_empty()
            || s.len() > MAX_AUDIENCE_LEN
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
            || s.starts_with('.')
        {
            return Err(ProtocolError::InvalidMessage {
                field: "audience",
                reason: format!(
                    "{s:?}: use 1 to 128 of letters, digits, `. _ - :`, not starting with `.`"
                ),
            });
        }
        Ok(Self(s.to_string()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for Audience {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Audience::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Control plane -> node: prove possession of your node key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentChallenge {
    /// Challenge id.
    pub challenge_id: ChallengeId,
    /// The control plane's id; the proof must name it.
    pub audience: Audience,
    /// Single-use nonce.
    pub nonce: Nonce,
    /// Issue time, unix ms.
    pub issued_at_ms: u64,
    /// Expiry, unix ms.
    pub expires_at_ms: u64,
}

/// Node -> control plane: answer to an [`EnrollmentChallenge`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentRequest {
    /// The challenge answered.
    pub challenge_id: ChallengeId,
    /// b3iq-core signed enrollment proof (node id, public key, audience, nonce, signing time).
    pub proof: SignedEnrollmentProof,
}

impl EnrollmentRequest {
    /// What the control plane checks: the request answers `challenge`, the challenge has not
    /// expired at `now_ms`, and the core proof checks out (self-certified signature, audience,
    /// nonce, signing time within `max_age_ms`). Returns the proven node id.
    pub fn verify(
        &self,
        challenge: &EnrollmentChallenge,
        now_ms: u64,
        max_age_ms: u64,
    ) -> Result<NodeId> {
        if self.challenge_id != challenge.challenge_id {
            return Err(ProtocolError::InvalidMessage {
                field: "challenge_id",
                reason: "the request answers a different challenge; request a new challenge".into(),
            });
        }
        if now_ms >= challenge.expires_at_ms {
            return Err(ProtocolError::InvalidMessage {
                field: "expires_at_ms",
                reason: format!(
                    "challenge expired at {} (now {now_ms}); request a new challenge",
                    challenge.expires_at_ms
                ),
            });
        }
        Ok(self.proof.check(
            challenge.audience.as_str(),
            &challenge.nonce,
            now_ms,
            max_age_ms,
        )?)
    }
}

/// Control plane -> node: enrollment accepted (also the answer to a renewal).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentAccepted {
    /// The enrolled node.
    pub node_id: NodeId,
    /// The organisation that owns the node now (an identifier, same rules as [`Audience`]).
    pub org_id: Audience,
    /// The control plane's id (the proof's audience).
    pub audience: Audience,
    /// The control plane's job-signing key: the node pins it as a trust root and opens only
    /// jobs it signed (until a rotation job signed by this key names a successor).
    pub job_key: NodePublicKey,
    /// Heartbeat interval, ms.
    pub heartbeat_interval_ms: u64,
    /// Enrollment time, unix ms.
    pub enrolled_at_ms: u64,
    /// The enrollment ends here (unix ms) unless renewed before; after it the node must enroll
    /// again with a new token.
    pub expires_at_ms: u64,
}

/// Node -> control plane: a signed heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// b3iq-core signed heartbeat (health, counters, model inventory digests).
    pub heartbeat: SignedHeartbeat,
}

impl HeartbeatRequest {
    /// Checks the self-certified signature; returns the sending node. Sequence and clock-skew
    /// rules are the control plane's (it knows the last sequence it accepted).
    pub fn verify(&self) -> Result<NodeId> {
        Ok(self.heartbeat.verify_self_certified()?)
    }
}

/// Control plane -> node: heartbeat accepted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatAck {
    /// The sequence acknowledged.
    pub sequence: u64,
    /// When to send the next one, unix ms.
    pub next_heartbeat_at_ms: u64,
    /// Jobs waiting for this node.
    pub pending_jobs: u32,
}

/// Node -> control plane: long-poll for signed jobs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobPoll {
    /// Node id.
    pub node_id: NodeId,
    /// Node public key.
    pub public_key: NodePublicKey,
    /// Highest job sequence number the node has already seen.
    pub after_sequence: u64,
    /// How long the server may hold the request, ms (at most 60,000).
    pub wait_ms: u32,
    /// Send time, unix ms.
    pub sent_at_ms: u64,
    /// Ed25519 signature over [`JobPoll::signing_message`].
    pub signature: Signature,
}

impl JobPoll {
    /// Signs a poll.
    pub fn sign(key: &NodeKey, after_sequence: u64, wait_ms: u32, now_ms: u64) -> Result<Self> {
        check_wait(wait_ms)?;
        let mut p = Self {
            node_id: key.node_id(),
            public_key: key.public(),
            after_sequence,
            wait_ms,
            sent_at_ms: now_ms,
            signature: Signature([0; 64]),
        };
        p.signature = key.sign_raw(&p.signing_message());
        Ok(p)
    }

    /// `b"b3iq/cp/job-poll/v1" || node_id (32) || public_key (32) || after_sequence (u64 BE) ||
    /// wait_ms (u32 BE) || sent_at_ms (u64 BE)`.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(JOB_POLL_TAG.len() + 84);
        m.extend_from_slice(JOB_POLL_TAG);
        m.extend_from_slice(&self.node_id.0);
        m.extend_from_slice(self.public_key.as_bytes());
        m.extend_from_slice(&self.after_sequence.to_be_bytes());
        m.extend_from_slice(&self.wait_ms.to_be_bytes());
        m.extend_from_slice(&self.sent_at_ms.to_be_bytes());
        m
    }

    /// Checks the wait bound, that the node id derives from the key, and the signature.
    pub fn verify(&self) -> Result<NodeId> {
        check_wait(self.wait_ms)?;
        if self.public_key.node_id() != self.node_id {
            return Err(ProtocolError::InvalidMessage {
                field: "node_id",
                reason: format!(
                    "job poll: {} is not derived from the given public key",
                    self.node_id
                ),
            });
        }
        if !self
            .public_key
            .verify_raw(&self.signing_message(), &self.signature)
        {
            return Err(ProtocolError::InvalidMessage {
                field: "signature",
                reason: "job poll: Ed25519 signature does not verify".into(),
            });
        }
        Ok(self.node_id)
    }
}

fn check_wait(wait_ms: u32) -> Result<()> {
    if wait_ms > MAX_POLL_WAIT_MS {
        return Err(ProtocolError::InvalidMessage {
            field: "wait_ms",
            reason: format!("{wait_ms} ms; at most {MAX_POLL_WAIT_MS}"),
        });
    }
    Ok(())
}

/// Control plane -> node: jobs for the node (possibly none after the wait).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobPollResponse {
    /// b3iq-core signed jobs, ascending sequence (at most 32).
    #[serde(deserialize_with = "bounded_jobs")]
    pub jobs: Vec<SignedJob>,
    /// Earliest time for the next poll, unix ms.
    pub next_poll_at_ms: u64,
}

fn bounded_jobs<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<SignedJob>, D::Error> {
    let v = <Vec<SignedJob> as serde::Deserialize>::deserialize(d)?;
    if v.len() > MAX_JOBS_PER_POLL {
        return Err(serde::de::Error::custom(format!(
            "{} jobs in one answer; at most {MAX_JOBS_PER_POLL}",
            v.len()
        )));
    }
    Ok(v)
}

/// Domain tag of job result reports.
pub const JOB_RESULT_TAG: &[u8] = b"b3iq/cp/job-result/v1";
/// Largest support bundle a job result carries (bytes, before hex).
pub const MAX_BUNDLE_BYTES: usize = 4 * 1024 * 1024;
/// Longest error code in a job result.
pub const MAX_CODE_LEN: usize = 64;

/// How a remote job ended on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    /// It ran and succeeded.
    Succeeded,
    /// It ran and failed (see `code`).
    Failed,
    /// The node refused to open or run it (signature, audience, expiry, replay, policy or
    /// preflight; see `code`).
    Refused,
    /// The owner rejected it.
    RejectedByOwner,
    /// It waited for the owner's approval past its expiry.
    Expired,
}

impl JobOutcome {
    /// Wire tag in the signing message.
    pub fn tag(self) -> u8 {
        match self {
            JobOutcome::Succeeded => 0,
            JobOutcome::Failed => 1,
            JobOutcome::Refused => 2,
            JobOutcome::RejectedByOwner => 3,
            JobOutcome::Expired => 4,
        }
    }

    /// Name (as in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed => "failed",
            JobOutcome::Refused => "refused",
            JobOutcome::RejectedByOwner => "rejected_by_owner",
            JobOutcome::Expired => "expired",
        }
    }
}

/// A machine-readable error code: 1 to 64 of `a-z 0-9 _` (the node's `HostError::code`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize)]
#[serde(transparent)]
pub struct Code(String);

impl Code {
    /// Validates a code.
    pub fn new(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > MAX_CODE_LEN || !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(ProtocolError::InvalidMessage { field: "code", reason: format!("{:?}: use 1 to 64 of a-z, 0-9, _", s.chars().take(70).collect::<String>()) });
        }
        Ok(Self(s.to_string()))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Code::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A release version: SemVer 2.0.0 ([`b3iq_core::version::SoftwareVersion`]), at most 64
/// bytes; refused otherwise, so no free text travels in its place.
#[derive(Clone, PartialEq, Eq, Hash, Debug, serde::Serialize)]
#[serde(transparent)]
pub struct ReleaseVersion(String);

impl ReleaseVersion {
    /// Validates a version.
    pub fn new(s: &str) -> Result<Self> {
        b3iq_core::version::SoftwareVersion::parse(s).map_err(|e| ProtocolError::InvalidMessage { field: "version", reason: e.to_string() })?;
        Ok(Self(s.to_string()))
    }

    /// The version.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for ReleaseVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ReleaseVersion::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Bytes as lowercase hex in JSON, at most [`MAX_BUNDLE_BYTES`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HexBlob(pub Vec<u8>);

impl serde::Serialize for HexBlob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> serde::Deserialize<'de> for HexBlob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.len() > 2 * MAX_BUNDLE_BYTES || s.len() % 2 != 0 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(serde::de::Error::custom(format!("expected lowercase hex of at most {MAX_BUNDLE_BYTES} bytes")));
        }
        hex::decode(&*s).map(HexBlob).map_err(serde::de::Error::custom)
    }
}

/// What a finished job produced: numbers, digests and ids; a support bundle is the redacted
/// archive the node builds (no keys, tokens, prompts, outputs or paths), as hex.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobResultData {
    /// Nothing to report (a failure, a refusal, or a job without output). A struct variant, so
    /// `deny_unknown_fields` holds for it too (serde does not check a unit variant's extra
    /// fields in an internally tagged enum).
    None {},
    /// `run_benchmark`: rates in thousandths per second, time to first token in ms.
    Benchmark {
        /// Generated tokens per second x 1000.
        generated_tokens_per_s_milli: u64,
        /// Prompt tokens per second x 1000.
        prompt_tokens_per_s_milli: u64,
        /// Time to first token, ms.
        ttft_ms: u64,
    },
    /// `install_model_profile`: the installed artifact.
    ModelInstalled {
        /// Its sha256.
        sha256: Sha256Digest,
        /// Its size in bytes.
        size_bytes: u64,
    },
    /// `remove_model_profile`: the removed artifact.
    ModelRemoved {
        /// Its sha256.
        sha256: Sha256Digest,
    },
    /// `change_mode`: the mode now.
    ModeChanged {
        /// The new mode.
        mode: OperatingMode,
    },
    /// `build_support_bundle`: the redacted `.tar.gz`.
    SupportBundle {
        /// sha256 of the archive.
        sha256: Sha256Digest,
        /// The archive (at most 4 MiB).
        bundle: HexBlob,
    },
    /// `rotate_issuer_key`: the job key the node pins from now on (the job's `new_issuer`).
    IssuerKeyRotated {
        /// The newly pinned key.
        issuer: NodePublicKey,
    },
    /// `update`: the signed release the node runs from its restart on.
    Updated {
        /// The version that ran when the job started.
        previous: ReleaseVersion,
        /// The repository's signed current release, now installed (equal to `previous` when
        /// the node was already up to date and nothing was installed).
        installed: ReleaseVersion,
        /// Its SHA-256, as the signed targets metadata states it.
        sha256: Sha256Digest,
    },
}

/// Node -> control plane: how a remote job ended, signed by the node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobResultReport {
    /// The reporting node.
    pub node_id: NodeId,
    /// Its public key.
    pub public_key: NodePublicKey,
    /// The job.
    pub job_id: JobId,
    /// How it ended.
    pub outcome: JobOutcome,
    /// The node's error code for a failure or refusal.
    pub code: Option<Code>,
    /// What it produced.
    pub result: JobResultData,
    /// When it ended, unix ms.
    pub finished_at_ms: u64,
    /// Ed25519 signature over [`JobResultReport::signing_message`].
    pub signature: Signature,
}

impl JobResultReport {
    /// Signs a report.
    pub fn sign(key: &NodeKey, job_id: JobId, outcome: JobOutcome, code: Option<Code>, result: JobResultData, finished_at_ms: u64) -> Result<Self> {
        let mut r = Self { node_id: key.node_id(), public_key: key.public(), job_id, outcome, code, result, finished_at_ms, signature: Signature([0; 64]) };
        r.signature = key.sign_raw(&r.signing_message()?);
        Ok(r)
    }

    /// `b"b3iq/cp/job-result/v1" || sha256(JSON of the report with an all-zero signature)`.
    /// The JSON of these types is deterministic (struct fields in declaration order, no maps,
    /// no floats), so signer and verifier compute the same bytes.
    pub fn signing_message(&self) -> Result<Vec<u8>> {
        let mut unsigned = self.clone();
        unsigned.signature = Signature([0; 64]);
        let json = serde_json::to_vec(&unsigned).map_err(|e| ProtocolError::InvalidMessage { field: "report", reason: e.to_string() })?;
        let mut m = JOB_RESULT_TAG.to_vec();
        m.extend_from_slice(&b3iq_core::digest::Sha256Digest::of(&json).0);
        Ok(m)
    }

    /// Checks that the node id derives from the key and the signature; returns the node.
    pub fn verify(&self) -> Result<NodeId> {
        if self.public_key.node_id() != self.node_id {
            return Err(ProtocolError::InvalidMessage { field: "node_id", reason: format!("job result: {} is not derived from the given public key", self.node_id) });
        }
        if !self.public_key.verify_raw(&self.signing_message()?, &self.signature) {
            return Err(ProtocolError::InvalidMessage { field: "signature", reason: "job result: Ed25519 signature does not verify".into() });
        }
        Ok(self.node_id)
    }
}

/// Control plane -> node: the result was stored (or had been).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobResultAck {
    /// The job.
    pub job_id: JobId,
    /// `false` when this was a repeat of a result already stored.
    pub stored: bool,
}

/// Domain tag of receipt uploads.
pub const RECEIPT_UPLOAD_TAG: &[u8] = b"b3iq/cp/receipt-upload/v1";
/// Most receipts in one upload.
pub const MAX_RECEIPTS_PER_UPLOAD: usize = 256;

/// Node -> control plane: a batch of the node's own signed receipts (managed mode's receipt
/// outbox). Each receipt is b3iq-core's signed receipt (ids, counts, times, price and salted
/// commitments: no prompt or output); the batch is signed by the node too, so a node can only
/// upload receipts it signed itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptUpload {
    /// The uploading node.
    pub node_id: NodeId,
    /// Its public key.
    pub public_key: NodePublicKey,
    /// Its signed receipts (at most 256).
    #[serde(deserialize_with = "bounded_receipts")]
    pub receipts: Vec<SignedReceipt>,
    /// Send time, unix ms.
    pub sent_at_ms: u64,
    /// Ed25519 signature over [`ReceiptUpload::signing_message`].
    pub signature: Signature,
}

fn bounded_receipts<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<SignedReceipt>, D::Error> {
    let v = <Vec<SignedReceipt> as serde::Deserialize>::deserialize(d)?;
    if v.len() > MAX_RECEIPTS_PER_UPLOAD {
        return Err(serde::de::Error::custom(format!("{} receipts in one upload; at most {MAX_RECEIPTS_PER_UPLOAD}", v.len())));
    }
    Ok(v)
}

/// Uploads of at least this many receipts are checked with the upload key's precomputed
/// multiples ([`b3iq_core::precomputed`]); below it, one by one is cheaper.
const PRECOMPUTE_FROM: usize = 16;

impl ReceiptUpload {
    /// Signs a batch (1 to 256 receipts).
    pub fn sign(key: &NodeKey, receipts: Vec<SignedReceipt>, now_ms: u64) -> Result<Self> {
        if receipts.is_empty() || receipts.len() > MAX_RECEIPTS_PER_UPLOAD {
            return Err(ProtocolError::InvalidMessage { field: "receipts", reason: format!("{} receipts; send 1 to {MAX_RECEIPTS_PER_UPLOAD}", receipts.len()) });
        }
        let mut u = Self { node_id: key.node_id(), public_key: key.public(), receipts, sent_at_ms: now_ms, signature: Signature([0; 64]) };
        u.signature = key.sign_raw(&u.signing_message());
        Ok(u)
    }

    /// `b"b3iq/cp/receipt-upload/v1" || node_id (32) || public_key (32) || sent_at_ms (u64 BE) ||
    /// count (u32 BE) || each receipt id (32)`.
    pub fn signing_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(RECEIPT_UPLOAD_TAG.len() + 76 + 32 * self.receipts.len());
        m.extend_from_slice(RECEIPT_UPLOAD_TAG);
        m.extend_from_slice(&self.node_id.0);
        m.extend_from_slice(self.public_key.as_bytes());
        m.extend_from_slice(&self.sent_at_ms.to_be_bytes());
        m.extend_from_slice(&(self.receipts.len() as u32).to_be_bytes());
        for r in &self.receipts {
            m.extend_from_slice(&r.receipt_id().0);
        }
        m
    }

    /// Checks the batch: 1 to 256 receipts, the node id derives from the key, the batch
    /// signature, and every receipt is signed by this node's key and names this node. Returns the
    /// node id.
    pub fn verify(&self) -> Result<NodeId> {
        let bad = |field: &'static str, reason: String| ProtocolError::InvalidMessage { field, reason };
        if self.receipts.is_empty() || self.receipts.len() > MAX_RECEIPTS_PER_UPLOAD {
            return Err(bad("receipts", format!("{} receipts; send 1 to {MAX_RECEIPTS_PER_UPLOAD}", self.receipts.len())));
        }
        if self.public_key.node_id() != self.node_id {
            return Err(bad("node_id", format!("receipt upload: {} is not derived from the given public key", self.node_id)));
        }
        if !self.public_key.verify_raw(&self.signing_message(), &self.signature) {
            return Err(bad("signature", "receipt upload: Ed25519 signature does not verify".into()));
        }
        // Up to 256 receipts by one key: with the key's multiples precomputed (about 15 strict
        // checks' worth of work) each check costs about half as much, with the same verdict.
        let precomputed = (self.receipts.len() >= PRECOMPUTE_FROM).then(|| self.public_key.precompute());
        for (i, r) in self.receipts.iter().enumerate() {
            let checked = match &precomputed {
                Some(k) => r.verify_self_certified_with(k),
                None => r.verify_self_certified(),
            };
            let id = checked.map_err(|e| bad("receipts", format!("receipt {i}: {e}")))?;
            if id != self.node_id || r.signer() != &self.public_key {
                return Err(bad("receipts", format!("receipt {i} was signed by another node ({id}); a node uploads only its own receipts")));
            }
        }
        Ok(self.node_id)
    }
}

/// Control plane -> node: the batch was stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptUploadAck {
    /// Receipts stored now.
    pub stored: u32,
    /// Receipts already stored before (a retry), not counted again.
    pub duplicates: u32,
}
