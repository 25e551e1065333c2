//! Mirrors `b3iq-core/src/split.rs`: the payment split in integer micro-units.

use std::sync::Arc;

use b3iq_core::split as core;

use crate::convert::from_json;
use crate::error::B3iqError;

/// The four parts of a payment; they always sum to the total.
#[derive(uniffi::Record)]
pub struct Split {
    /// Host part (gets the rounding remainder).
    pub host: u64,
    /// Publisher part.
    pub publisher: u64,
    /// Protocol part.
    pub protocol: u64,
    /// Verifier part.
    pub verifier: u64,
}

impl From<core::Split> for Split {
    fn from(s: core::Split) -> Self {
        Split { host: s.host, publisher: s.publisher, protocol: s.protocol, verifier: s.verifier }
    }
}

/// Splits `total` micro-units with the default 70/10/15/5 policy.
#[uniffi::export]
pub fn split(total: u64, has_publisher: bool) -> Split {
    core::split(total, has_publisher).into()
}

/// A split policy in basis points.
#[derive(uniffi::Object)]
pub struct SplitPolicy {
    inner: core::SplitPolicy,
}

#[uniffi::export]
impl SplitPolicy {
    /// A policy; `no_publisher_to` is `"host"`, `"protocol"` or `"verifier"` (none: the core's
    /// default policy's choice).
    #[uniffi::constructor]
    pub fn new(
        host_bps: u16,
        publisher_bps: u16,
        protocol_bps: u16,
        verifier_bps: u16,
        no_publisher_to: Option<String>,
    ) -> Result<Arc<Self>, B3iqError> {
        let to = match no_publisher_to {
            Some(name) => from_json("recipient", &serde_json::Value::String(name).to_string())?,
            None => core::SplitPolicy::default().no_publisher_to(),
        };
        Ok(Arc::new(Self {
            inner: core::SplitPolicy::new(host_bps, publisher_bps, protocol_bps, verifier_bps, to)?,
        }))
    }

    /// Splits `total` micro-units under this policy.
    pub fn split(&self, total: u64, has_publisher: bool) -> Split {
        self.inner.split(total, has_publisher).into()
    }
}
