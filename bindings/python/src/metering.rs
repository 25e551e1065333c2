//! Mirrors `b3iq-core/src/metering.rs`: prices in integer micro-credits.

use b3iq_core::metering as core;
use pyo3::prelude::*;

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

    /// The price of a request in micro-credits (integer rounding as documented in the core).
    fn price(&self, prompt_tokens: u64, completion_tokens: u64) -> PyResult<u64> {
        self.0.price(prompt_tokens, completion_tokens).map_err(raise)
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PriceSchedule>()?;
    Ok(())
}
