//! Mirrors `b3iq-core/src/metering.rs`: prices in integer micro-credits.

use std::sync::Arc;

use b3iq_core::metering as core;

use crate::convert::{from_json, to_json};
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

    /// A schedule from JSON text with the core's field names: `prompt_per_1m_tokens`,
    /// `completion_per_1m_tokens`, `per_request` (micro-credits; unknown fields are refused).
    #[uniffi::constructor]
    pub fn from_json(json: String) -> Result<Arc<Self>, B3iqError> {
        Ok(Arc::new(Self { inner: from_json("price schedule", &json)? }))
    }

    /// The schedule as JSON text (the core's form, prices per million tokens).
    pub fn to_json(&self) -> Result<String, B3iqError> {
        to_json(&self.inner)
    }

    /// The price of a request in micro-credits.
    pub fn price(&self, prompt_tokens: u64, completion_tokens: u64) -> Result<u64, B3iqError> {
        Ok(self.inner.price(prompt_tokens, completion_tokens)?)
    }
}
