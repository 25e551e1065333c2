//! Mirrors `b3iq-core/src/job.rs`: signed jobs, trust roots, the replay seen-set and the policy.

use std::sync::{Arc, Mutex};

use b3iq_core::job as core;
use b3iq_core::OperatingMode;

use crate::convert::{from_json, to_json};
use crate::error::B3iqError;
use crate::identity::{NodeId, NodeKey, NodePublicKey};

/// An unsigned job envelope, built from the core's JSON form.
#[derive(uniffi::Object)]
pub struct Job {
    inner: core::Job,
}

#[uniffi::export]
impl Job {
    /// Builds a job from JSON text (unknown fields and job kinds are refused).
    #[uniffi::constructor]
    pub fn from_json(json: String) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: from_json("job", &json)? }))
    }

    /// The job as JSON text.
    pub fn to_json(&self) -> Result<String, B3iqError> {
        to_json(&self.inner)
    }

    /// Signs the job as its issuer.
    pub fn sign(&self, key: Arc<NodeKey>) -> Result<Arc<SignedJob>, B3iqError> {
        Ok(Arc::new(SignedJob { inner: key.inner.sign_object(self.inner.clone())? }))
    }
}

/// A signed job as received by a node.
#[derive(uniffi::Object)]
pub struct SignedJob {
    inner: core::SignedJob,
}

#[uniffi::export]
impl SignedJob {
    /// Strictly decodes the wire form. Does not verify: call `open`.
    #[uniffi::constructor]
    pub fn decode(data: Vec<u8>) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: core::SignedJob::decode(&data)? }))
    }

    /// Builds from the signed JSON form. Does not verify.
    #[uniffi::constructor]
    pub fn from_json(json: String) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: from_json("signed job", &json)? }))
    }

    /// The signed JSON form.
    pub fn to_json(&self) -> Result<String, B3iqError> {
        to_json(&self.inner)
    }

    /// The canonical body bytes that were signed.
    pub fn body_bytes(&self) -> Vec<u8> {
        self.inner.body_bytes().to_vec()
    }

    /// `domain_tag || version || body`: the exact bytes the signature covers.
    pub fn signing_message(&self) -> Vec<u8> {
        self.inner.signing_message()
    }

    /// blake3 of the signing message (32 bytes): the object's stable id.
    pub fn object_hash(&self) -> Vec<u8> {
        self.inner.object_hash().to_vec()
    }

    /// The key written in the envelope (not yet trusted).
    pub fn signer(&self) -> Arc<NodePublicKey> {
        Arc::new(NodePublicKey { inner: *self.inner.signer() })
    }

    /// The 64-byte signature.
    pub fn signature(&self) -> Vec<u8> {
        self.inner.signature().to_bytes().to_vec()
    }

    /// Checks only that `expected` signed this job (no trust, audience, time or replay checks).
    pub fn verify(&self, expected: Arc<NodePublicKey>) -> Result<(), B3iqError> {
        Ok(self.inner.verify(&expected.inner)?)
    }

    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.inner.encode()
    }

    /// The signed envelope (not yet checked).
    pub fn job(&self) -> Arc<Job> {
        Arc::new(Job { inner: self.inner.body().clone() })
    }

    /// Runs every check for node `audience` at `now_ms` and records the job in `seen`.
    /// Returns JSON `{"job", "job_hash"}`.
    pub fn open_json(
        &self,
        trust_roots: Arc<TrustRoots>,
        audience: Arc<NodeId>,
        now_ms: u64,
        seen: Arc<SeenSet>,
    ) -> Result<String, B3iqError> {
        let mut guard = seen.inner.lock().unwrap_or_else(|p| p.into_inner());
        let verified = self.inner.open(&trust_roots.inner, &audience.inner, now_ms, &mut *guard)?;
        to_json(&serde_json::json!({
            "job": verified.job(),
            "job_hash": b3iq_core::Hash32(verified.job_hash()).to_hex(),
        }))
    }
}

/// The control-plane keys a node accepts jobs from.
#[derive(uniffi::Object)]
pub struct TrustRoots {
    inner: core::TrustRoots,
}

#[uniffi::export]
impl TrustRoots {
    /// Trust roots for `issuers`; `max_clock_skew_ms` defaults to the core's default.
    #[uniffi::constructor]
    pub fn new(issuers: Vec<Arc<NodePublicKey>>, max_clock_skew_ms: Option<u64>) -> Arc<Self> {
        let roots = core::TrustRoots::new(issuers.iter().map(|k| k.inner));
        Arc::new(Self {
            inner: match max_clock_skew_ms {
                Some(ms) => roots.with_max_clock_skew_ms(ms),
                None => roots,
            },
        })
    }

    /// The allowed clock skew in ms.
    pub fn max_clock_skew_ms(&self) -> u64 {
        self.inner.max_clock_skew_ms()
    }
}

/// An in-memory replay seen-set.
#[derive(uniffi::Object, Default)]
pub struct SeenSet {
    inner: Mutex<core::MemorySeenSet>,
}

#[uniffi::export]
impl SeenSet {
    /// An empty seen-set.
    #[uniffi::constructor]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

/// Decides whether a verified job (its `kind` as JSON) runs in `mode`; returns JSON
/// `{"verdict", "risk", "reason"}`. `auto_approve_up_to`: `"low"`, `"medium"` or none.
#[uniffi::export]
pub fn decide_job(kind_json: String, mode: String, auto_approve_up_to: Option<String>) -> Result<String, B3iqError> {
    let kind: core::JobKind = from_json("job kind", &kind_json)?;
    let mode: OperatingMode = mode.parse()?;
    let policy: core::JobPolicy = from_json(
        "job policy",
        &serde_json::json!({ "auto_approve_up_to": auto_approve_up_to }).to_string(),
    )?;
    to_json(&policy.decide(&kind, mode))
}
