//! Payment splits in integer micro-units.
//!
//! Default policy: host 70 %, model publisher 10 %, protocol 15 %, verifier 5 %
//! (7000 / 1000 / 1500 / 500 basis points).
//!
//! Remainder rule: the publisher, protocol and verifier parts are each
//! `floor(total * bps / 10_000)` (computed in `u128`, so no overflow for any `u64` total); the
//! host gets everything else (`total - publisher - protocol - verifier`), so the parts always
//! sum exactly to the total and rounding dust goes to the host. When the model has no
//! publisher, the publisher part is computed the same way and then added to the recipient
//! named by [`SplitPolicy::no_publisher_to`] (default: protocol); the publisher part is 0.
//!
//! ```
//! use b3iq_core::split::SplitPolicy;
//! let s = SplitPolicy::default().split(1_000_001, true);
//! assert_eq!((s.host, s.publisher, s.protocol, s.verifier), (700_001, 100_000, 150_000, 50_000));
//! assert_eq!(s.sum(), 1_000_001);
//! ```

use crate::error::{CoreError, Result};

/// Basis points in a whole.
pub const BPS_DENOMINATOR: u32 = 10_000;

/// Who receives a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    /// The node operator.
    Host,
    /// The model publisher.
    Publisher,
    /// The protocol treasury.
    Protocol,
    /// The verifier pool.
    Verifier,
}

/// The four parts of a payment. Always `host + publisher + protocol + verifier == total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Split {
    /// Host part (gets the rounding remainder).
    pub host: u64,
    /// Publisher part (0 when there is no publisher).
    pub publisher: u64,
    /// Protocol part.
    pub protocol: u64,
    /// Verifier part.
    pub verifier: u64,
}

impl Split {
    /// Sum of the parts, in `u128` (never overflows; equals the total).
    pub fn sum(&self) -> u128 {
        u128::from(self.host) + u128::from(self.publisher) + u128::from(self.protocol) + u128::from(self.verifier)
    }

    /// The part for one recipient.
    pub fn get(&self, r: Recipient) -> u64 {
        match r {
            Recipient::Host => self.host,
            Recipient::Publisher => self.publisher,
            Recipient::Protocol => self.protocol,
            Recipient::Verifier => self.verifier,
        }
    }
}

/// Shares in basis points plus the no-publisher rule. Shares must add up to 10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "SplitPolicyFields", into = "SplitPolicyFields")]
pub struct SplitPolicy {
    host_bps: u16,
    publisher_bps: u16,
    protocol_bps: u16,
    verifier_bps: u16,
    no_publisher_to: Recipient,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitPolicyFields {
    host_bps: u16,
    publisher_bps: u16,
    protocol_bps: u16,
    verifier_bps: u16,
    no_publisher_to: Recipient,
}

impl TryFrom<SplitPolicyFields> for SplitPolicy {
    type Error = CoreError;
    fn try_from(f: SplitPolicyFields) -> Result<Self> {
        SplitPolicy::new(f.host_bps, f.publisher_bps, f.protocol_bps, f.verifier_bps, f.no_publisher_to)
    }
}

impl From<SplitPolicy> for SplitPolicyFields {
    fn from(p: SplitPolicy) -> Self {
        Self {
            host_bps: p.host_bps,
            publisher_bps: p.publisher_bps,
            protocol_bps: p.protocol_bps,
            verifier_bps: p.verifier_bps,
            no_publisher_to: p.no_publisher_to,
        }
    }
}

impl Default for SplitPolicy {
    fn default() -> Self {
        Self {
            host_bps: 7000,
            publisher_bps: 1000,
            protocol_bps: 1500,
            verifier_bps: 500,
            no_publisher_to: Recipient::Protocol,
        }
    }
}

impl SplitPolicy {
    /// A policy; the shares must add up to 10,000 and `no_publisher_to` must not be the publisher.
    pub fn new(host_bps: u16, publisher_bps: u16, protocol_bps: u16, verifier_bps: u16, no_publisher_to: Recipient) -> Result<Self> {
        let sum = u32::from(host_bps) + u32::from(publisher_bps) + u32::from(protocol_bps) + u32::from(verifier_bps);
        if sum != BPS_DENOMINATOR {
            return Err(CoreError::InvalidSplitPolicy { sum });
        }
        if no_publisher_to == Recipient::Publisher {
            return Err(CoreError::field(
                "no_publisher_to",
                "the publisher slot cannot go to the publisher when there is none; use host, protocol or verifier",
            ));
        }
        Ok(Self {
            host_bps,
            publisher_bps,
            protocol_bps,
            verifier_bps,
            no_publisher_to,
        })
    }

    /// The default policy with the no-publisher slot sent elsewhere.
    pub fn with_no_publisher_to(self, to: Recipient) -> Result<Self> {
        Self::new(self.host_bps, self.publisher_bps, self.protocol_bps, self.verifier_bps, to)
    }

    /// Where the publisher slot goes when a model has no publisher.
    pub fn no_publisher_to(&self) -> Recipient {
        self.no_publisher_to
    }

    /// Share of a recipient in basis points.
    pub fn bps(&self, r: Recipient) -> u16 {
        match r {
            Recipient::Host => self.host_bps,
            Recipient::Publisher => self.publisher_bps,
            Recipient::Protocol => self.protocol_bps,
            Recipient::Verifier => self.verifier_bps,
        }
    }

    /// Splits `total` micro-units (see the module docs for the remainder rule).
    pub fn split(&self, total: u64, has_publisher: bool) -> Split {
        let part = |bps: u16| -> u64 {
            // total * bps / 10_000 <= total, so it fits in u64.
            (u128::from(total) * u128::from(bps) / u128::from(BPS_DENOMINATOR)) as u64
        };
        let mut s = Split {
            host: 0,
            publisher: part(self.publisher_bps),
            protocol: part(self.protocol_bps),
            verifier: part(self.verifier_bps),
        };
        // The three floors sum to at most total.
        s.host = total - s.publisher - s.protocol - s.verifier;
        if !has_publisher {
            let moved = std::mem::take(&mut s.publisher);
            match self.no_publisher_to {
                Recipient::Host | Recipient::Publisher => s.host += moved,
                Recipient::Protocol => s.protocol += moved,
                Recipient::Verifier => s.verifier += moved,
            }
        }
        s
    }
}

/// [`SplitPolicy::default`]`.split(total, has_publisher)`.
pub fn split(total: u64, has_publisher: bool) -> Split {
    SplitPolicy::default().split(total, has_publisher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_totals() {
        for total in [0u64, 1, 7, 99, 100, 101, 10_000, u64::MAX - 1, u64::MAX] {
            for hp in [true, false] {
                let s = split(total, hp);
                assert_eq!(s.sum(), u128::from(total), "total={total}");
                if !hp {
                    assert_eq!(s.publisher, 0);
                }
            }
        }
        assert_eq!(split(99, true), Split { host: 72, publisher: 9, protocol: 14, verifier: 4 });
        assert_eq!(split(99, false), Split { host: 72, publisher: 0, protocol: 23, verifier: 4 });
        assert_eq!(split(1, true), Split { host: 1, publisher: 0, protocol: 0, verifier: 0 });
        assert_eq!(split(100, true), Split { host: 70, publisher: 10, protocol: 15, verifier: 5 });
    }

    #[test]
    fn policy_validation() {
        assert!(matches!(SplitPolicy::new(7000, 1000, 1500, 400, Recipient::Protocol), Err(CoreError::InvalidSplitPolicy { sum: 9900 })));
        assert!(SplitPolicy::new(7000, 1000, 1500, 500, Recipient::Publisher).is_err());
        let p = SplitPolicy::default().with_no_publisher_to(Recipient::Host).unwrap();
        assert_eq!(p.split(100, false), Split { host: 80, publisher: 0, protocol: 15, verifier: 5 });
        let j = serde_json::to_string(&SplitPolicy::default()).unwrap();
        assert_eq!(serde_json::from_str::<SplitPolicy>(&j).unwrap(), SplitPolicy::default());
        let bad = j.replace("7000", "7001");
        assert!(serde_json::from_str::<SplitPolicy>(&bad).is_err());
    }
}
