//! Usage metering and prices, in integer micro-credits with overflow checks.
//!
//! Price rule: `price = per_request + ceil((prompt_tokens * prompt_per_1m +
//! completion_tokens * completion_per_1m) / 1_000_000)`, computed in `u128` and refused with
//! [`CoreError::Overflow`] if it does not fit in `u64`. Rounding up means a non-empty request at a
//! non-zero price never costs 0.
//!
//! ```
//! use b3iq_core::metering::{PriceSchedule, Meter};
//! let p = PriceSchedule::per_1k(100, 200).unwrap(); // 100 / 200 micro-credits per 1k tokens
//! assert_eq!(p.price(1000, 500).unwrap(), 200);
//! let mut m = Meter::default();
//! m.record("key_1", "smollm2", 1000, 500, 200).unwrap();
//! assert_eq!(m.by_key("key_1").unwrap().micro_credits, 200);
//! ```

use std::collections::BTreeMap;

use crate::error::{CoreError, Result};

/// Prices in micro-credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSchedule {
    /// Per million prompt tokens.
    pub prompt_per_1m_tokens: u64,
    /// Per million completion tokens.
    pub completion_per_1m_tokens: u64,
    /// Flat fee per request.
    pub per_request: u64,
}

impl PriceSchedule {
    /// Free.
    pub const FREE: PriceSchedule = PriceSchedule { prompt_per_1m_tokens: 0, completion_per_1m_tokens: 0, per_request: 0 };

    /// From prices per 1,000 tokens.
    pub fn per_1k(prompt_per_1k_tokens: u64, completion_per_1k_tokens: u64) -> Result<Self> {
        let ovf = CoreError::Overflow { what: "price per 1k tokens" };
        Ok(Self {
            prompt_per_1m_tokens: prompt_per_1k_tokens.checked_mul(1000).ok_or(ovf.clone())?,
            completion_per_1m_tokens: completion_per_1k_tokens.checked_mul(1000).ok_or(ovf)?,
            per_request: 0,
        })
    }

    /// The price of one request (see the module docs for rounding).
    pub fn price(&self, prompt_tokens: u64, completion_tokens: u64) -> Result<u64> {
        let ovf = CoreError::Overflow { what: "request price" };
        // Each product is < 2^128; their sum may not be.
        let var = (u128::from(prompt_tokens) * u128::from(self.prompt_per_1m_tokens))
            .checked_add(u128::from(completion_tokens) * u128::from(self.completion_per_1m_tokens))
            .ok_or(ovf.clone())?;
        let total = var.div_ceil(1_000_000).checked_add(u128::from(self.per_request)).ok_or(ovf)?;
        u64::try_from(total).map_err(|_| CoreError::Overflow { what: "request price" })
    }
}

/// Accumulated usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Requests.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Charged micro-credits.
    pub micro_credits: u64,
}

impl Usage {
    /// `self + one request`, or an overflow error (self unchanged).
    pub fn checked_add_request(&self, prompt_tokens: u64, completion_tokens: u64, micro_credits: u64) -> Result<Usage> {
        Ok(Usage {
            requests: self.requests.checked_add(1).ok_or(CoreError::Overflow { what: "request count" })?,
            prompt_tokens: self.prompt_tokens.checked_add(prompt_tokens).ok_or(CoreError::Overflow { what: "prompt tokens" })?,
            completion_tokens: self
                .completion_tokens
                .checked_add(completion_tokens)
                .ok_or(CoreError::Overflow { what: "completion tokens" })?,
            micro_credits: self.micro_credits.checked_add(micro_credits).ok_or(CoreError::Overflow { what: "micro-credits" })?,
        })
    }

    /// `self + other`, overflow-checked.
    pub fn checked_add(&self, other: &Usage) -> Result<Usage> {
        Ok(Usage {
            requests: self.requests.checked_add(other.requests).ok_or(CoreError::Overflow { what: "request count" })?,
            prompt_tokens: self.prompt_tokens.checked_add(other.prompt_tokens).ok_or(CoreError::Overflow { what: "prompt tokens" })?,
            completion_tokens: self
                .completion_tokens
                .checked_add(other.completion_tokens)
                .ok_or(CoreError::Overflow { what: "completion tokens" })?,
            micro_credits: self.micro_credits.checked_add(other.micro_credits).ok_or(CoreError::Overflow { what: "micro-credits" })?,
        })
    }

    /// Total tokens (saturating).
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// Usage per key id and per model id, plus the total. A failed `record` changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Meter {
    by_key: BTreeMap<String, Usage>,
    by_model: BTreeMap<String, Usage>,
    total: Usage,
}

impl Meter {
    /// Records one request for `key_id` on `model_id`.
    pub fn record(&mut self, key_id: &str, model_id: &str, prompt_tokens: u64, completion_tokens: u64, micro_credits: u64) -> Result<()> {
        let k = self.by_key.get(key_id).copied().unwrap_or_default().checked_add_request(prompt_tokens, completion_tokens, micro_credits)?;
        let m = self.by_model.get(model_id).copied().unwrap_or_default().checked_add_request(prompt_tokens, completion_tokens, micro_credits)?;
        let t = self.total.checked_add_request(prompt_tokens, completion_tokens, micro_credits)?;
        self.by_key.insert(key_id.to_owned(), k);
        self.by_model.insert(model_id.to_owned(), m);
        self.total = t;
        Ok(())
    }

    /// Records a receipt's usage under `key_id`.
    pub fn record_receipt(&mut self, key_id: &str, receipt: &crate::receipt::Receipt) -> Result<()> {
        self.record(
            key_id,
            &receipt.model_id,
            u64::from(receipt.prompt_tokens),
            u64::from(receipt.completion_tokens),
            receipt.price_micro_credits,
        )
    }

    /// Usage of one key.
    pub fn by_key(&self, key_id: &str) -> Option<&Usage> {
        self.by_key.get(key_id)
    }
    /// Usage of one model.
    pub fn by_model(&self, model_id: &str) -> Option<&Usage> {
        self.by_model.get(model_id)
    }
    /// All keys.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &Usage)> {
        self.by_key.iter().map(|(k, v)| (k.as_str(), v))
    }
    /// All models.
    pub fn models(&self) -> impl Iterator<Item = (&str, &Usage)> {
        self.by_model.iter().map(|(k, v)| (k.as_str(), v))
    }
    /// Total.
    pub fn total(&self) -> &Usage {
        &self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_round_up_and_overflow_is_refused() {
        let p = PriceSchedule { prompt_per_1m_tokens: 1, completion_per_1m_tokens: 3, per_request: 5 };
        assert_eq!(p.price(0, 0).unwrap(), 5);
        assert_eq!(p.price(1, 0).unwrap(), 6);
        assert_eq!(p.price(1_000_000, 1_000_000).unwrap(), 9);
        let big = PriceSchedule { prompt_per_1m_tokens: u64::MAX, completion_per_1m_tokens: u64::MAX, per_request: u64::MAX };
        assert!(matches!(big.price(u64::MAX, u64::MAX), Err(CoreError::Overflow { .. })));
        assert!(PriceSchedule::per_1k(u64::MAX, 0).is_err());
        assert_eq!(PriceSchedule::FREE.price(123, 456).unwrap(), 0);
    }

    #[test]
    fn meter_accumulates_and_is_atomic_on_overflow() {
        let mut m = Meter::default();
        m.record("a", "m1", 10, 20, 30).unwrap();
        m.record("a", "m2", 1, 2, 3).unwrap();
        m.record("b", "m1", 5, 5, 5).unwrap();
        assert_eq!(m.by_key("a").unwrap(), &Usage { requests: 2, prompt_tokens: 11, completion_tokens: 22, micro_credits: 33 });
        assert_eq!(m.by_model("m1").unwrap().requests, 2);
        assert_eq!(m.total().micro_credits, 38);
        let before = m.clone();
        assert!(m.record("c", "m1", 0, 0, u64::MAX).is_err());
        assert_eq!(m, before);
    }
}
