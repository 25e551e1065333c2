//! Mirrors `b3iq-core/src/split.rs`: the host/publisher/protocol/verifier payment split in
//! integer micro-units (the parts always sum to the total).

use b3iq_core::split as core;
use pyo3::prelude::*;

use crate::convert::{from_py, to_py};
use crate::error::raise;

/// Splits `total` micro-units with the default 70/10/15/5 policy; returns
/// `{"host", "publisher", "protocol", "verifier"}`.
#[pyfunction]
#[pyo3(signature = (total, has_publisher = true))]
fn split<'py>(py: Python<'py>, total: u64, has_publisher: bool) -> PyResult<Bound<'py, PyAny>> {
    to_py(py, &core::split(total, has_publisher))
}

/// A split policy in basis points (must add up to 10,000).
#[pyclass(module = "b3iq", name = "SplitPolicy", frozen)]
pub struct SplitPolicy(core::SplitPolicy);

#[pymethods]
impl SplitPolicy {
    /// A policy; `no_publisher_to` is `"host"`, `"protocol"` or `"verifier"` (default: the
    /// core's default policy's choice).
    #[new]
    #[pyo3(signature = (host_bps = 7000, publisher_bps = 1000, protocol_bps = 1500, verifier_bps = 500, no_publisher_to = None))]
    fn new(
        host_bps: u16,
        publisher_bps: u16,
        protocol_bps: u16,
        verifier_bps: u16,
        no_publisher_to: Option<&str>,
    ) -> PyResult<Self> {
        let to = match no_publisher_to {
            Some(name) => from_py_str(name)?,
            None => core::SplitPolicy::default().no_publisher_to(),
        };
        core::SplitPolicy::new(host_bps, publisher_bps, protocol_bps, verifier_bps, to)
            .map(Self)
            .map_err(raise)
    }

    /// Splits `total` micro-units under this policy.
    #[pyo3(signature = (total, has_publisher = true))]
    fn split<'py>(&self, py: Python<'py>, total: u64, has_publisher: bool) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.0.split(total, has_publisher))
    }
}

fn from_py_str(name: &str) -> PyResult<core::Recipient> {
    Python::attach(|py| {
        let value = pyo3::types::PyString::new(py, name);
        from_py("recipient", value.as_any())
    })
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(split, m)?)?;
    m.add_class::<SplitPolicy>()?;
    Ok(())
}
