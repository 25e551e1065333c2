//! Mirrors `b3iq-core/src/split.rs`: the payment split in integer micro-units.

use b3iq_core::split as core;
use napi_derive::napi;

use crate::convert::{from_js, number, uint};
use crate::error::{core_error, Result};

/// The four parts of a payment; they always sum to the total.
#[napi(object)]
pub struct Split {
    /// Host part (gets the rounding remainder).
    pub host: f64,
    /// Publisher part (0 when there is no publisher).
    pub publisher: f64,
    /// Protocol part.
    pub protocol: f64,
    /// Verifier part.
    pub verifier: f64,
}

fn to_split(s: core::Split) -> Result<Split> {
    Ok(Split {
        host: number("host", s.host)?,
        publisher: number("publisher", s.publisher)?,
        protocol: number("protocol", s.protocol)?,
        verifier: number("verifier", s.verifier)?,
    })
}

/// Splits `total` micro-units with the default 70/10/15/5 policy.
#[napi]
pub fn split(total: f64, has_publisher: Option<bool>) -> Result<Split> {
    to_split(core::split(uint("total", total)?, has_publisher.unwrap_or(true)))
}

/// A split policy in basis points (must add up to 10,000).
#[napi]
pub struct SplitPolicy {
    inner: core::SplitPolicy,
}

#[napi]
impl SplitPolicy {
    /// A policy; `noPublisherTo` is `"host"` (default), `"protocol"` or `"verifier"`.
    #[napi(constructor)]
    pub fn new(
        host_bps: u16,
        publisher_bps: u16,
        protocol_bps: u16,
        verifier_bps: u16,
        no_publisher_to: Option<String>,
    ) -> Result<Self> {
        let to: core::Recipient =
            from_js("recipient", serde_json::Value::String(no_publisher_to.unwrap_or_else(|| "host".into())))?;
        core::SplitPolicy::new(host_bps, publisher_bps, protocol_bps, verifier_bps, to)
            .map(|inner| Self { inner })
            .map_err(core_error)
    }

    /// Splits `total` micro-units under this policy.
    #[napi]
    pub fn split(&self, total: f64, has_publisher: Option<bool>) -> Result<Split> {
        to_split(self.inner.split(uint("total", total)?, has_publisher.unwrap_or(true)))
    }
}
