//! Reputation: a non-transferable score bound to a [`NodeId`], with time decay.
//!
//! The state keeps two decaying accumulators in milli-points, `good` and `bad`. Every event
//! adds to one of them (weights in [`ReputationParams`]); before an event at time `t` both are
//! multiplied by `2^(-(t - last) / half_life)` using integer fixed-point math (Q32, 20 bits of
//! fraction of a half-life), so every platform computes the same bits. The score, in basis
//! points (0..=10,000), is `good * 10_000 / (good + bad + prior)`; the prior keeps a brand new
//! node from scoring high on one good event.
//!
//! Non-transferable: a [`Reputation`] names its node, an event for another node is refused with
//! [`CoreError::ReputationNodeMismatch`], and there is no API to move or merge scores.

use crate::error::{CoreError, Result};
use crate::identity::NodeId;

/// Weights and decay, all integers (milli-points).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReputationParams {
    /// Half-life of the accumulators, ms (>= 1).
    pub half_life_ms: u64,
    /// Pseudo-count added to the denominator, milli-points.
    pub prior_milli: u64,
    /// Good per minute of uptime.
    pub uptime_per_min_milli: u64,
    /// Bad per minute of downtime.
    pub downtime_per_min_milli: u64,
    /// Good per request meeting the latency target.
    pub latency_ok_milli: u64,
    /// Bad per request missing the latency target.
    pub latency_miss_milli: u64,
    /// Good per 1,000 delivered tokens.
    pub per_1k_tokens_milli: u64,
    /// Bad per failed request.
    pub failure_milli: u64,
    /// Bad per dispute lost.
    pub dispute_lost_milli: u64,
    /// Good per dispute won.
    pub dispute_won_milli: u64,
    /// Good per challenge passed.
    pub challenge_passed_milli: u64,
    /// Bad per challenge failed.
    pub challenge_failed_milli: u64,
}

impl Default for ReputationParams {
    fn default() -> Self {
        Self {
            half_life_ms: 7 * 24 * 60 * 60 * 1000,
            prior_milli: 100_000,
            uptime_per_min_milli: 10,
            downtime_per_min_milli: 40,
            latency_ok_milli: 5,
            latency_miss_milli: 20,
            per_1k_tokens_milli: 10,
            failure_milli: 500,
            dispute_lost_milli: 50_000,
            dispute_won_milli: 1_000,
            challenge_passed_milli: 5_000,
            challenge_failed_milli: 100_000,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReputationEventKind {
    /// An observation window: `up_ms` of `window_ms` online.
    Uptime {
        /// Milliseconds up.
        up_ms: u64,
        /// Window length (>= up_ms).
        window_ms: u64,
    },
    /// A request's time to first token against the route's target.
    Latency {
        /// Measured TTFT.
        ttft_ms: u64,
        /// Target TTFT.
        target_ms: u64,
    },
    /// Tokens delivered and settled.
    DeliveredTokens {
        /// Token count.
        tokens: u64,
    },
    /// A failed request.
    Failure,
    /// A dispute was resolved.
    Dispute {
        /// True if the node lost.
        lost: bool,
    },
    /// A verification challenge was resolved.
    Challenge {
        /// True if the node passed.
        passed: bool,
    },
}

/// An event for one node at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReputationEvent {
    /// The node it is about.
    pub node_id: NodeId,
    /// When, unix ms.
    pub at_ms: u64,
    /// What.
    pub kind: ReputationEventKind,
}

/// A node's reputation state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reputation {
    node_id: NodeId,
    good_milli: u64,
    bad_milli: u64,
    last_ms: u64,
}

const Q: u32 = 32;
const ONE: u128 = 1 << Q;
const FRAC_BITS: u32 = 20;

fn isqrt(n: u128) -> u128 {
    if n < 2 {
        return n;
    }
    let mut x = n;
    let mut y = x.div_ceil(2);
    while y < x {
        x = y;
        y = (x + n / x) / 2;
    }
    x
}

/// `value * 2^(-dt / half_life)`, integer fixed point (deterministic on every platform).
pub fn decay(value: u64, dt_ms: u64, half_life_ms: u64) -> u64 {
    let hl = half_life_ms.max(1);
    let halvings = dt_ms / hl;
    if halvings >= 64 {
        return 0;
    }
    let rem = dt_ms % hl;
    let frac = (u128::from(rem) << FRAC_BITS) / u128::from(hl);
    let mut f = ONE;
    let mut base = ONE / 2; // 2^(-1)
    for i in 1..=FRAC_BITS {
        base = isqrt(base << Q); // 2^(-2^-i)
        if (frac >> (FRAC_BITS - i)) & 1 == 1 {
            f = (f * base) >> Q;
        }
    }
    (((u128::from(value) >> halvings) * f) >> Q) as u64
}

impl Reputation {
    /// A fresh reputation for `node_id`, starting at `now_ms`.
    pub fn new(node_id: NodeId, now_ms: u64) -> Self {
        Self { node_id, good_milli: 0, bad_milli: 0, last_ms: now_ms }
    }

    /// The node this reputation belongs to.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    fn decayed_to(&self, now_ms: u64, p: &ReputationParams) -> (u64, u64) {
        let dt = now_ms.saturating_sub(self.last_ms);
        (decay(self.good_milli, dt, p.half_life_ms), decay(self.bad_milli, dt, p.half_life_ms))
    }

    /// Applies an event (events older than the last one are applied without decay).
    pub fn apply(&mut self, event: &ReputationEvent, p: &ReputationParams) -> Result<()> {
        if event.node_id != self.node_id {
            return Err(CoreError::ReputationNodeMismatch { expected: self.node_id.to_string(), found: event.node_id.to_string() });
        }
        let (mut good, mut bad) = self.decayed_to(event.at_ms, p);
        let mul = |a: u64, b: u64| -> u64 { a.saturating_mul(b) };
        match event.kind {
            ReputationEventKind::Uptime { up_ms, window_ms } => {
                if up_ms > window_ms {
                    return Err(CoreError::field("uptime", "up_ms must not exceed window_ms"));
                }
                good = good.saturating_add(mul(up_ms / 60_000, p.uptime_per_min_milli));
                bad = bad.saturating_add(mul((window_ms - up_ms) / 60_000, p.downtime_per_min_milli));
            }
            ReputationEventKind::Latency { ttft_ms, target_ms } => {
                if ttft_ms <= target_ms {
                    good = good.saturating_add(p.latency_ok_milli);
                } else {
                    bad = bad.saturating_add(p.latency_miss_milli);
                }
            }
            ReputationEventKind::DeliveredTokens { tokens } => good = good.saturating_add(mul(tokens / 1000, p.per_1k_tokens_milli)),
            ReputationEventKind::Failure => bad = bad.saturating_add(p.failure_milli),
            ReputationEventKind::Dispute { lost: true } => bad = bad.saturating_add(p.dispute_lost_milli),
            ReputationEventKind::Dispute { lost: false } => good = good.saturating_add(p.dispute_won_milli),
            ReputationEventKind::Challenge { passed: true } => good = good.saturating_add(p.challenge_passed_milli),
            ReputationEventKind::Challenge { passed: false } => bad = bad.saturating_add(p.challenge_failed_milli),
        }
        self.good_milli = good;
        self.bad_milli = bad;
        self.last_ms = self.last_ms.max(event.at_ms);
        Ok(())
    }

    /// Score in basis points (0..=10,000) at `now_ms`.
    pub fn score_bps(&self, now_ms: u64, p: &ReputationParams) -> u32 {
        let (good, bad) = self.decayed_to(now_ms, p);
        let den = u128::from(good) + u128::from(bad) + u128::from(p.prior_milli);
        if den == 0 {
            return 0;
        }
        (u128::from(good) * 10_000 / den) as u32
    }

    /// Decayed accumulators `(good, bad)` at `now_ms`, milli-points.
    pub fn accumulators(&self, now_ms: u64, p: &ReputationParams) -> (u64, u64) {
        self.decayed_to(now_ms, p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_halves_per_half_life() {
        assert_eq!(decay(1_000_000, 0, 100), 1_000_000);
        assert_eq!(decay(1_000_000, 100, 100), 500_000);
        assert_eq!(decay(1_000_000, 200, 100), 250_000);
        let half_half = decay(1_000_000, 50, 100);
        assert!((707_100..=707_110).contains(&half_half), "{half_half}");
        assert_eq!(decay(u64::MAX, 64 * 100, 100), 0);
        // monotone
        let mut prev = u64::MAX;
        for dt in (0..1000).step_by(7) {
            let v = decay(1_000_000_000, dt, 300);
            assert!(v <= prev);
            prev = v;
        }
    }

    #[test]
    fn score_moves_the_right_way_and_is_bound_to_the_node() {
        let p = ReputationParams::default();
        let a = NodeId([1; 32]);
        let b = NodeId([2; 32]);
        let mut r = Reputation::new(a, 0);
        assert_eq!(r.score_bps(0, &p), 0);
        for i in 0..200 {
            r.apply(&ReputationEvent { node_id: a, at_ms: i, kind: ReputationEventKind::Challenge { passed: true } }, &p).unwrap();
        }
        let high = r.score_bps(200, &p);
        assert!(high > 9000, "{high}");
        r.apply(&ReputationEvent { node_id: a, at_ms: 201, kind: ReputationEventKind::Dispute { lost: true } }, &p).unwrap();
        assert!(r.score_bps(201, &p) < high);
        assert!(matches!(
            r.apply(&ReputationEvent { node_id: b, at_ms: 22, kind: ReputationEventKind::Failure }, &p),
            Err(CoreError::ReputationNodeMismatch { .. })
        ));
        let (g0, _) = r.accumulators(201, &p);
        let (g1, _) = r.accumulators(201 + p.half_life_ms, &p);
        assert!(g1 <= g0 / 2 + 1 && g1 + 1 >= g0 / 2);
    }
}
