//! Mirrors `b3iq-core/src/metering.rs`: prices in integer micro-credits.

use b3iq_core::metering as core;
use pyo3::prelude::*;

use crate::convert::from_py;
use crate::error::raise;

/// A price schedule in micro-credits per 1,000 prompt / completion tokens.
#[pyclass(module = "b3iq", name = "PriceSchedule", frozen)]
pub struct PriceSchedule(core::PriceSchedule);

#[pymethods]
impl PriceSchedule {
    /// A schedule charging per 1,000 tokens.
    #[new]
    fn new(prompt_per_1k_tokens: u64, completion_per_1k_tokens: u64) -> PyResult<Self> {
        core::PriceSchedule::per_1k(prompt_per_1k_tokens, completion_per_1k_tokens)
            .map(Self)
            .map_err(raise)
    }

    /// A schedule from a dict with the core's JSON field names: `prompt_per_1m_tokens`,
    /// `completion_per_1m_tokens`, `per_request` (micro-credits; unknown fields are refused).
    #[staticmethod]
    fn from_dict(value: &Bound<'_, PyAny>) -> PyResult<Self> {
        from_py("price schedule", value).map(Self)
    }

    /// The schedule as a dict (the core's JSON form, prices per million tokens).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::convert::to_py(py, &self.0)
    }

    /// The price of a request in micro-credits (integer rounding as documented in the core).
    fn price(&self, prompt_tokens: u64, completion_tokens: u64) -> PyResult<u64> {
        self.0.price(prompt_tokens, completion_tokens).map_err(raise)
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PriceSchedule>()?;
    Ok(())
}
