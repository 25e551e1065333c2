//! Mirrors `b3iq-core/src/metering.rs`: prices in integer micro-credits.

use b3iq_core::metering as core;
use napi_derive::napi;

use crate::convert::{number, uint};
use crate::error::{raise, Result};

/// A price schedule in micro-credits per 1,000 prompt / completion tokens.
#[napi]
pub struct PriceSchedule {
    inner: core::PriceSchedule,
}

#[napi]
impl PriceSchedule {
    /// A schedule charging per 1,000 tokens.
    #[napi(constructor)]
    pub fn new(prompt_per_1k_tokens: f64, completion_per_1k_tokens: f64) -> Result<Self> {
        core::PriceSchedule::per_1k(
            uint("promptPer1kTokens", prompt_per_1k_tokens)?,
            uint("completionPer1kTokens", completion_per_1k_tokens)?,
        )
        .map(|inner| Self { inner })
        .map_err(raise)
    }

    /// The price of a request in micro-credits.
    #[napi]
    pub fn price(&self, prompt_tokens: f64, completion_tokens: f64) -> Result<f64> {
        let price = self
            .inner
            .price(uint("promptTokens", prompt_tokens)?, uint("completionTokens", completion_tokens)?)
            .map_err(raise)?;
        number("price", price)
    }
}
