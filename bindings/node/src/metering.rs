//! Mirrors `b3iq-core/src/metering.rs`: prices in integer micro-credits.

use b3iq_core::metering as core;
use napi_derive::napi;

use crate::convert::{from_js, number, to_js, uint};
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

    /// A schedule from a plain object with the core's JSON field names: `prompt_per_1m_tokens`,
    /// `completion_per_1m_tokens`, `per_request` (micro-credits; unknown fields are refused).
    #[napi(factory)]
    pub fn from_json(value: serde_json::Value) -> Result<Self> {
        from_js("price schedule", value).map(|inner| Self { inner })
    }

    /// The schedule as a plain object (the core's JSON form, prices per million tokens).
    #[napi(js_name = "toJSON")]
    pub fn to_json(&self) -> Result<serde_json::Value> {
        to_js(&self.inner)
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
