//! Mirrors `b3iq-core/src/metering.rs`: prices in integer micro-credits.

use std::sync::Arc;

use b3iq_core::metering as core;

use crate::error::B3iqError;

/// A price schedule in micro-credits per 1,000 prompt / completion tokens.
#[derive(uniffi::Object)]
pub struct PriceSchedule {
    inner: core::PriceSchedule,
}

#[uniffi::export]
impl PriceSchedule {
    /// A schedule charging per 1,000 tokens.
    #[uniffi::constructor]
    pub fn new(prompt_per_1k_tokens: u64, completion_per_1k_tokens: u64) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: core::PriceSchedule::per_1k(prompt_per_1k_tokens, completion_per_1k_tokens)? }))
    }

    /// The price of a request in micro-credits.
    pub fn price(&self, prompt_tokens: u64, completion_tokens: u64) -> Result<u64, B3iqError> {
        Ok(self.inner.price(prompt_tokens, completion_tokens)?)
    }
}
