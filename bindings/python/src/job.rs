//! Mirrors `b3iq-core/src/job.rs`: signed jobs, trust roots, the replay seen-set and the policy.

use b3iq_core::job as core;
use b3iq_core::OperatingMode;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::{bytes, from_py, to_py};
use crate::error::raise;
use crate::identity::{NodeId, NodeKey, NodePublicKey};

/// An unsigned job envelope, built from a dict with the core's JSON field names
/// (`job_id`, `audience`, `issuer`, `issued_at_ms`, `expires_at_ms`, `sequence`, `kind`).
#[pyclass(module = "b3iq", name = "Job", frozen)]
pub struct Job(core::Job);

#[pymethods]
impl Job {
    /// Builds a job from a dict (unknown fields and job kinds are refused).
    #[staticmethod]
    fn from_dict(value: &Bound<'_, PyAny>) -> PyResult<Self> {
        from_py("job", value).map(Self)
    }

    /// The job as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.0)
    }

    /// Signs the job as its issuer (`key`'s public key must be the job's `issuer`).
    fn sign(&self, key: &NodeKey) -> PyResult<SignedJob> {
        key.0.sign_object(self.0.clone()).map(SignedJob).map_err(raise)
    }
}

/// A signed job as received by a node.
#[pyclass(module = "b3iq", name = "SignedJob", frozen)]
pub struct SignedJob(core::SignedJob);

#[pymethods]
impl SignedJob {
    /// Strictly decodes the wire form. Does not verify: call `open`.
    #[staticmethod]
    fn decode(data: &[u8]) -> PyResult<Self> {
        core::SignedJob::decode(data).map(Self).map_err(raise)
    }

    /// Builds from the signed JSON form (`{"version", "kind", "signer", "body", "signature"}`).
    /// Does not verify.
    #[staticmethod]
    fn from_dict(value: &Bound<'_, PyAny>) -> PyResult<Self> {
        from_py("signed job", value).map(Self)
    }

    /// The signed JSON form.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.0)
    }

    /// The canonical body bytes that were signed.
    #[getter]
    fn body_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.body_bytes())
    }

    /// `domain_tag || version || body`: the exact bytes the signature covers.
    fn signing_message<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, &self.0.signing_message())
    }

    /// blake3 of the signing message (32 bytes): the object's stable id.
    #[getter]
    fn object_hash<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, &self.0.object_hash())
    }

    /// The key written in the envelope (not yet trusted).
    #[getter]
    fn signer(&self) -> NodePublicKey {
        NodePublicKey(*self.0.signer())
    }

    /// The 64-byte signature.
    #[getter]
    fn signature<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, self.0.signature().as_bytes())
    }

    /// The wire encoding.
    fn encode<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        bytes(py, &self.0.encode())
    }

    /// Checks only that `expected` signed this job (no trust, audience, time or replay
    /// checks: a node uses `open` for those). Raises `B3iqAuthError` otherwise.
    fn verify(&self, expected: &NodePublicKey) -> PyResult<()> {
        self.0.verify(&expected.0).map_err(raise)
    }

    /// The signed envelope (not yet checked).
    #[getter]
    fn job(&self) -> Job {
        Job(self.0.body().clone())
    }

    /// Runs every check for the node `audience` at `now_ms` (unix ms): issuer trusted,
    /// signature, audience, validity window with clock skew, replay and sequence against
    /// `seen`, then records the job in `seen`. Returns `{"job": ..., "job_hash": hex}`.
    fn open<'py>(
        &self,
        py: Python<'py>,
        trust_roots: &TrustRoots,
        audience: &NodeId,
        now_ms: u64,
        seen: &mut SeenSet,
    ) -> PyResult<Bound<'py, PyAny>> {
        let verified = self
            .0
            .open(&trust_roots.0, &audience.0, now_ms, &mut seen.0)
            .map_err(raise)?;
        let out = serde_json::json!({
            "job": verified.job(),
            "job_hash": b3iq_core::Hash32(verified.job_hash()).to_hex(),
        });
        to_py(py, &out)
    }
}

/// The control-plane keys a node accepts jobs from, and the allowed clock skew.
#[pyclass(module = "b3iq", name = "TrustRoots", frozen)]
pub struct TrustRoots(core::TrustRoots);

#[pymethods]
impl TrustRoots {
    /// Trust roots for `issuers`; `max_clock_skew_ms` defaults to the core's default.
    #[new]
    #[pyo3(signature = (issuers, max_clock_skew_ms = None))]
    fn new(issuers: Vec<PyRef<'_, NodePublicKey>>, max_clock_skew_ms: Option<u64>) -> Self {
        let roots = core::TrustRoots::new(issuers.iter().map(|k| k.0));
        Self(match max_clock_skew_ms {
            Some(ms) => roots.with_max_clock_skew_ms(ms),
            None => roots,
        })
    }

    /// The allowed clock skew in ms.
    #[getter]
    fn max_clock_skew_ms(&self) -> u64 {
        self.0.max_clock_skew_ms()
    }
}

/// An in-memory replay seen-set (job ids and the last sequence per issuer). The host keeps a
/// durable one in its state.db; this one is for tools and tests.
#[pyclass(module = "b3iq", name = "SeenSet")]
#[derive(Default)]
pub struct SeenSet(core::MemorySeenSet);

#[pymethods]
impl SeenSet {
    /// An empty seen-set.
    #[new]
    fn new() -> Self {
        Self::default()
    }
}

/// Decides whether a verified job runs in `mode` (`"local"`, `"managed"`, `"network"`).
/// Returns `{"verdict": "run" | "needs_owner_approval" | "refuse", "risk", "reason"}`.
#[pyfunction]
#[pyo3(signature = (kind, mode, auto_approve_up_to = Some("low")))]
fn decide_job<'py>(
    py: Python<'py>,
    kind: &Bound<'_, PyAny>,
    mode: &str,
    auto_approve_up_to: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    let kind: core::JobKind = from_py("job kind", kind)?;
    let mode: OperatingMode = mode.parse().map_err(raise)?;
    let policy: core::JobPolicy = from_py(
        "job policy",
        &to_py(py, &serde_json::json!({ "auto_approve_up_to": auto_approve_up_to }))?,
    )?;
    to_py(py, &policy.decide(&kind, mode))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Job>()?;
    m.add_class::<SignedJob>()?;
    m.add_class::<TrustRoots>()?;
    m.add_class::<SeenSet>()?;
    m.add_function(wrap_pyfunction!(decide_job, m)?)?;
    Ok(())
}
