//! Trust tiers: how much a route can trust a node's results.

use crate::error::{CoreError, Result};

/// Trust tier 0-3. Higher tiers satisfy lower requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum TrustTier {
    /// 0: best effort, statistical checks only.
    BestEffort = 0,
    /// 1: verified agent stack (signed host, known runtime build).
    VerifiedAgent = 1,
    /// 2: attested compute (confidential-computing GPU / TEE attestation).
    AttestedCompute = 2,
    /// 3: redundant verification (results re-executed and compared).
    RedundantVerification = 3,
}

impl TrustTier {
    /// All tiers, lowest first.
    pub const ALL: [TrustTier; 4] = [TrustTier::BestEffort, TrustTier::VerifiedAgent, TrustTier::AttestedCompute, TrustTier::RedundantVerification];

    /// The tier number.
    pub fn level(self) -> u8 {
        self as u8
    }

    /// True if a node at this tier may serve a route requiring `required`.
    pub fn satisfies(self, required: TrustTier) -> bool {
        self >= required
    }

    /// Short description.
    pub fn describe(self) -> &'static str {
        match self {
            TrustTier::BestEffort => "best effort",
            TrustTier::VerifiedAgent => "verified agent stack",
            TrustTier::AttestedCompute => "attested compute",
            TrustTier::RedundantVerification => "redundant verification",
        }
    }
}

impl TryFrom<u8> for TrustTier {
    type Error = CoreError;
    fn try_from(v: u8) -> Result<Self> {
        TrustTier::ALL.get(usize::from(v)).copied().ok_or(CoreError::InvalidTag { field: "trust tier", tag: v })
    }
}

impl From<TrustTier> for u8 {
    fn from(t: TrustTier) -> u8 {
        t as u8
    }
}

impl std::fmt::Display for TrustTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tier {} ({})", self.level(), self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_and_parsing() {
        assert!(TrustTier::AttestedCompute.satisfies(TrustTier::VerifiedAgent));
        assert!(!TrustTier::BestEffort.satisfies(TrustTier::VerifiedAgent));
        assert_eq!(TrustTier::try_from(3).unwrap(), TrustTier::RedundantVerification);
        assert!(TrustTier::try_from(4).is_err());
        assert_eq!(serde_json::to_string(&TrustTier::AttestedCompute).unwrap(), "2");
        assert!(serde_json::from_str::<TrustTier>("9").is_err());
    }
}
