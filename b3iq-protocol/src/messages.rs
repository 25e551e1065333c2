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
//!
//! The JSON form of the embedded signed objects is b3iq-core's (`kind`, `version`, `signer`,
//! `body`, `signature`; unknown fields refused).

use b3iq_core::enrollment::{Nonce, SignedEnrollmentProof};
use b3iq_core::heartbeat::SignedHeartbeat;
use b3iq_core::job::SignedJob;
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
