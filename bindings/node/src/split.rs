//! Mirrors `b3iq-core/src/split.rs`: the payment split in integer micro-units.

use b3iq_core::split as core;
use napi::bindgen_prelude::BigInt;
use napi_derive::napi;

use crate::convert::from_js;
use crate::error::{raise, BindingError, Result};

/// The four parts of a payment (bigints, amounts exceed 2^53); they always sum to the total.
#[napi(object)]
pub struct Split {
    /// Host part (gets the rounding remainder).
    pub host: BigInt,
    /// Publisher part (0 when there is no publisher).
    pub publisher: BigInt,
    /// Protocol part.
    pub protocol: BigInt,
    /// Verifier part.
    pub verifier: BigInt,
}

fn to_split(s: core::Split) -> Result<Split> {
    Ok(Split {
        host: BigInt::from(s.host),
        publisher: BigInt::from(s.publisher),
        protocol: BigInt::from(s.protocol),
        verifier: BigInt::from(s.verifier),
    })
}

fn total_u64(total: BigInt) -> Result<u64> {
    let (negative, value, lossless) = total.get_u64();
    if negative || !lossless {
        return Err(raise(BindingError::invalid("total must be a bigint from 0n to 2n ** 64n - 1n")));
    }
    Ok(value)
}

/// Splits `total` micro-units (a bigint) with the default 70/10/15/5 policy.
#[napi]
pub fn split(total: BigInt, has_publisher: Option<bool>) -> Result<Split> {
    to_split(core::split(total_u64(total)?, has_publisher.unwrap_or(true)))
}

/// A split policy in basis points (must add up to 10,000).
#[napi]
pub struct SplitPolicy {
    inner: core::SplitPolicy,
}

#[napi]
impl SplitPolicy {
    /// A policy; `noPublisherTo` is `"host"`, `"protocol"` or `"verifier"` (default: the
    /// core's default policy's choice).
    #[napi(constructor)]
    pub fn new(
        host_bps: u32,
        publisher_bps: u32,
        protocol_bps: u32,
        verifier_bps: u32,
        no_publisher_to: Option<String>,
    ) -> Result<Self> {
        let to = match no_publisher_to {
            Some(name) => from_js("recipient", serde_json::Value::String(name))?,
            None => core::SplitPolicy::default().no_publisher_to(),
        };
        let bps = |name: &str, v: u32| {
            u16::try_from(v)
                .map_err(|_| raise(BindingError::invalid(format!("{name} must be at most 10000, got {v}"))))
        };
        core::SplitPolicy::new(
            bps("hostBps", host_bps)?,
            bps("publisherBps", publisher_bps)?,
            bps("protocolBps", protocol_bps)?,
            bps("verifierBps", verifier_bps)?,
            to,
        )
            .map(|inner| Self { inner })
            .map_err(raise)
    }

    /// Splits `total` micro-units (a bigint) under this policy.
    #[napi]
    pub fn split(&self, total: BigInt, has_publisher: Option<bool>) -> Result<Split> {
        to_split(self.inner.split(total_u64(total)?, has_publisher.unwrap_or(true)))
    }
}
