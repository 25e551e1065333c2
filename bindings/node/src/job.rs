//! Mirrors `b3iq-core/src/job.rs`: signed jobs, trust roots, the replay seen-set and the policy.

use b3iq_core::job as core;
use b3iq_core::OperatingMode;
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::convert::{buffer, from_js, to_js, uint};
use crate::error::{raise, Result};
use crate::identity::{NodeId, NodeKey, NodePublicKey};

/// An unsigned job envelope, built from a plain object with the core's JSON field names.
#[napi]
pub struct Job {
    inner: core::Job,
}

#[napi]
impl Job {
    /// Builds a job from a plain object (unknown fields and job kinds are refused).
    #[napi(factory)]
    pub fn from_json(value: serde_json::Value) -> Result<Self> {
        from_js("job", value).map(|inner| Self { inner })
    }

    /// The job as a plain object.
    #[napi(js_name = "toJSON")]
    pub fn to_json(&self) -> Result<serde_json::Value> {
        to_js(&self.inner)
    }

    /// Signs the job as its issuer (`key`'s public key must be the job's `issuer`).
    #[napi]
    pub fn sign(&self, key: &NodeKey) -> Result<SignedJob> {
        key.inner.sign_object(self.inner.clone()).map(|inner| SignedJob { inner }).map_err(raise)
    }
}

/// A signed job as received by a node.
#[napi]
pub struct SignedJob {
    inner: core::SignedJob,
}

#[napi]
impl SignedJob {
    /// Strictly decodes the wire form. Does not verify: call `open`.
    #[napi(factory)]
    pub fn decode(data: Buffer) -> Result<Self> {
        core::SignedJob::decode(&data).map(|inner| Self { inner }).map_err(raise)
    }

    /// Builds from the signed JSON form (`{ version, kind, signer, body, signature }`).
    /// Does not verify.
    #[napi(factory)]
    pub fn from_json(value: serde_json::Value) -> Result<Self> {
        from_js("signed job", value).map(|inner| Self { inner })
    }

    /// The signed JSON form.
    #[napi(js_name = "toJSON")]
    pub fn to_json(&self) -> Result<serde_json::Value> {
        to_js(&self.inner)
    }

    /// The canonical body bytes that were signed.
    #[napi(getter)]
    pub fn body_bytes(&self) -> Buffer {
        buffer(self.inner.body_bytes())
    }

    /// `domain_tag || version || body`: the exact bytes the signature covers.
    #[napi]
    pub fn signing_message(&self) -> Buffer {
        buffer(&self.inner.signing_message())
    }

    /// blake3 of the signing message (32 bytes): the object's stable id.
    #[napi(getter)]
    pub fn object_hash(&self) -> Buffer {
        buffer(&self.inner.object_hash())
    }

    /// The key written in the envelope (not yet trusted).
    #[napi(getter)]
    pub fn signer(&self) -> NodePublicKey {
        NodePublicKey { inner: *self.inner.signer() }
    }

    /// The 64-byte signature.
    #[napi(getter)]
    pub fn signature(&self) -> Buffer {
        buffer(self.inner.signature().as_bytes())
    }

    /// Checks only that `expected` signed this job (no trust, audience, time or replay
    /// checks: a node uses `open` for those).
    #[napi]
    pub fn verify(&self, expected: &NodePublicKey) -> Result<()> {
        self.inner.verify(&expected.inner).map_err(raise)
    }

    /// The wire encoding.
    #[napi]
    pub fn encode(&self) -> Buffer {
        buffer(&self.inner.encode())
    }

    /// The signed envelope (not yet checked).
    #[napi(getter)]
    pub fn job(&self) -> Job {
        Job { inner: self.inner.body().clone() }
    }

    /// Runs every check for node `audience` at `nowMs` and records the job in `seen`.
    /// Returns `{ job, job_hash }`; throws `B3iqAuthError`, `B3iqExpiredError`,
    /// `B3iqReplayError`, ... otherwise.
    #[napi]
    pub fn open(
        &self,
        trust_roots: &TrustRoots,
        audience: &NodeId,
        now_ms: f64,
        seen: &mut SeenSet,
    ) -> Result<serde_json::Value> {
        let verified = self
            .inner
            .open(&trust_roots.inner, &audience.inner, uint("nowMs", now_ms)?, &mut seen.inner)
            .map_err(raise)?;
        Ok(serde_json::json!({
            "job": to_js(verified.job())?,
            "job_hash": b3iq_core::Hash32(verified.job_hash()).to_hex(),
        }))
    }
}

/// The control-plane keys a node accepts jobs from, and the allowed clock skew.
#[napi]
pub struct TrustRoots {
    inner: core::TrustRoots,
}

#[napi]
impl TrustRoots {
    /// Trust roots for issuer public keys given as hex strings.
    #[napi(constructor)]
    pub fn new(issuers_hex: Vec<String>, max_clock_skew_ms: Option<f64>) -> Result<Self> {
        let keys = issuers_hex
            .iter()
            .map(|h| b3iq_core::NodePublicKey::from_hex(h).map_err(raise))
            .collect::<Result<Vec<_>>>()?;
        let roots = core::TrustRoots::new(keys);
        Ok(Self {
            inner: match max_clock_skew_ms {
                Some(ms) => roots.with_max_clock_skew_ms(uint("maxClockSkewMs", ms)?),
                None => roots,
            },
        })
    }

    /// Adds an issuer key.
    #[napi]
    pub fn insert(&mut self, key: &NodePublicKey) {
        self.inner.insert(key.inner);
    }

    /// The allowed clock skew in ms.
    #[napi(getter)]
    pub fn max_clock_skew_ms(&self) -> f64 {
        self.inner.max_clock_skew_ms() as f64
    }
}

/// An in-memory replay seen-set (job ids and the last sequence per issuer).
#[napi]
#[derive(Default)]
pub struct SeenSet {
    inner: core::MemorySeenSet,
}

#[napi]
impl SeenSet {
    /// An empty seen-set.
    #[napi(constructor)]
    pub fn new() -> Self {
        Self::default()
    }
}

/// Decides whether a verified job runs in `mode` (`"local"`, `"managed"`, `"network"`).
/// Returns `{ verdict: "run" | "needs_owner_approval" | "refuse", risk, reason }`.
/// `policy` is the core's policy object, `{ auto_approve_up_to: "low" | "medium" | null }`
/// (default `"low"`; `null` asks the owner for everything).
#[napi]
pub fn decide_job(
    kind: serde_json::Value,
    mode: String,
    policy: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let kind: core::JobKind = from_js("job kind", kind)?;
    let mode: OperatingMode = mode.parse().map_err(raise)?;
    let policy: core::JobPolicy = match policy {
        Some(p) => from_js("job policy", p)?,
        None => core::JobPolicy::default(),
    };
    to_js(&policy.decide(&kind, mode))
}
