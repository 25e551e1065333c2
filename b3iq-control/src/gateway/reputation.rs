//! Node reputation in routing: b3iq-core's non-transferable, decaying score
//! ([`b3iq_core::reputation`]) fed by what the gateway sees, kept in the store, and used to
//! weigh the choice of node.
//!
//! Events: every node with a tunnel on this replica is observed at each flush, up when its tunnel
//! is open and its heartbeat fresh; each full minute observed becomes an `Uptime` event (the
//! core counts whole minutes). A settled receipt is a `Latency` event (its TTFT against
//! [`TTFT_TARGET_MS`]) and a `DeliveredTokens` event (its completion tokens); a node that fails
//! before answering, fails mid-stream, or returns no valid receipt is a `Failure`. The gateway
//! buffers them and applies them to the store every [`FLUSH_INTERVAL`] in one write (per node:
//! read the state, apply the events in time order, write it back, so replicas add up), then
//! re-reads every node's score for routing.
//!
//! Routing: the two candidates of the power-of-two choices are drawn with probability
//! proportional to `score_bps + `[`FLOOR_BPS`] (a new node, scoring 0, still gets a share and so
//! a chance to earn a score), and the less loaded of the two wins; equal loads go to the better
//! score. A score belongs to a node id: a new node (a new key) starts at 0 whatever stake it
//! holds; there is no API to move one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use b3iq_core::reputation::{ReputationEvent, ReputationEventKind, ReputationParams};
use b3iq_core::NodeId;

use super::Gateway;
use crate::error::Result;

/// TTFT a request should meet to count as on time (`Latency` event), ms.
pub const TTFT_TARGET_MS: u64 = 2_000;
/// How often buffered events go to the store and scores are re-read.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Weight every candidate gets on top of its score (basis points), so a new node is tried.
pub const FLOOR_BPS: u64 = 500;
/// Most events buffered between flushes (past it the oldest are dropped, and counted).
pub const MAX_BUFFERED: usize = 100_000;

/// The gateway's reputation book: events waiting for the store, and scores for routing.
#[derive(Debug, Default)]
pub struct Book {
    pending: Mutex<Vec<ReputationEvent>>,
    /// Per node with a tunnel here: (ms up, ms observed) since its last `Uptime` event, and
    /// when it was last observed.
    uptime: Mutex<HashMap<NodeId, (u64, u64, u64)>>,
    scores: Mutex<HashMap<NodeId, u32>>,
    params: ReputationParams,
}

impl Book {
    /// Buffers an event.
    pub fn record(&self, node_id: NodeId, at_ms: u64, kind: ReputationEventKind) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() >= MAX_BUFFERED {
            p.remove(0);
            tracing::warn!(
                "gateway: reputation events buffered past {MAX_BUFFERED}; the oldest was dropped"
            );
        }
        p.push(ReputationEvent {
            node_id,
            at_ms,
            kind,
        });
    }

    /// A node's score in basis points (0 for a node never scored).
    pub fn score(&self, node: &NodeId) -> u32 {
        self.scores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .copied()
            .unwrap_or(0)
    }

    /// The parameters (b3iq-core's defaults).
    pub fn params(&self) -> &ReputationParams {
        &self.params
    }
}

impl Gateway {
    /// The reputation book.
    pub fn reputation(&self) -> &Book {
        &self.reputation
    }

    /// Applies the buffered events to the store and re-reads every node's score. Events of a
    /// failed write go back to the buffer.
    ///
    /// # Errors
    /// `Store`.
    pub async fn flush_reputation(&self, now_ms: u64) -> Result<()> {
        let mut observed = Vec::new();
        for t in self.tunnels.all() {
            let up = t.is_open().await && self.is_fresh(&t).await;
            observed.push((t.node_id, up));
        }
        {
            let mut u = self
                .reputation
                .uptime
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (node, up) in observed {
                let e = u.entry(node).or_insert((0, 0, now_ms));
                let dt = now_ms.saturating_sub(e.2);
                e.2 = now_ms;
                e.1 += dt;
                if up {
                    e.0 += dt;
                }
                if e.1 >= 60_000 {
                    let (up_ms, window_ms) = (e.0, e.1);
                    *e = (0, 0, now_ms);
                    self.reputation.record(
                        node,
                        now_ms,
                        ReputationEventKind::Uptime { up_ms, window_ms },
                    );
                }
            }
        }
        let events = std::mem::take(
            &mut *self
                .reputation
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        if !events.is_empty() {
            if let Err(e) = self
                .cp
                .store()
                .apply_reputation(events.clone(), self.reputation.params)
                .await
            {
                let mut p = self
                    .reputation
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let mut back = events;
                back.append(&mut p);
                *p = back;
                return Err(e);
            }
        }
        let scores: HashMap<NodeId, u32> = self
            .cp
            .store()
            .reputations()
            .await?
            .into_iter()
            .map(|r| (r.node_id(), r.score_bps(now_ms, &self.reputation.params)))
            .collect();
        *self
            .reputation
            .scores
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = scores;
        Ok(())
    }

    /// Flushes every [`FLUSH_INTERVAL`] while the gateway lives (started by [`Gateway::new`]
    /// inside a tokio runtime).
    pub(crate) fn spawn_reputation_flush(gw: &Arc<Gateway>) {
        let Ok(h) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Gateway> = Arc::downgrade(gw);
        h.spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(gw) = weak.upgrade() else { return };
                if let Err(e) = gw.flush_reputation(b3iq_host::context::unix_now_ms()).await {
                    tracing::warn!(error = %e, "gateway: reputation flush failed; retrying");
                }
            }
        });
    }
}

/// The power of two choices weighed by reputation: `cands[i] = (load, score_bps)`, `r1` and
/// `r2` uniform random numbers; returns the index chosen. Each of the two draws picks `i`
/// with probability `(score_i + FLOOR_BPS) / sum`; the less loaded wins, then the better score.
///
/// # Panics
/// Never for a non-empty `cands`; an empty one returns 0.
pub fn two_choices(cands: &[(f64, u32)], r1: u64, r2: u64) -> usize {
    let w: Vec<u64> = cands
        .iter()
        .map(|&(_, s)| u64::from(s) + FLOOR_BPS)
        .collect();
    let total: u64 = w.iter().sum();
    let draw = |r: u64| {
        if total == 0 {
            return 0;
        }
        let mut x = r % total;
        for (i, wi) in w.iter().enumerate() {
            if x < *wi {
                return i;
            }
            x -= wi;
        }
        w.len() - 1
    };
    let (a, b) = (draw(r1), draw(r2));
    let (la, sa) = cands[a];
    let (lb, sb) = cands[b];
    if lb < la || (lb == la && sb > sa) {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn better_reputation_gets_more_traffic_and_a_new_node_still_some() {
        // Equal loads: a node at 8,000 bps against a new one at 0.
        let cands = [(0.0, 8_000), (0.0, 0)];
        let mut picks = [0u32; 2];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..10_000 {
            // xorshift: deterministic spread of draws.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r1 = x;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            picks[two_choices(&cands, r1, x)] += 1;
        }
        // P(new node) = P(both draws pick it) = (500/9000)^2 ~ 0.3%.
        assert!(picks[0] > 9_900, "{picks:?}");
        assert!(picks[1] > 0, "a new node is still tried: {picks:?}");
    }

    #[test]
    fn load_comes_before_reputation() {
        // Draws that pick both: the idle one wins even with a lower score.
        let cands = [(0.9, 9_000), (0.1, 100)];
        // r % total: total = 9,500 + 600 = 10,100; 0 -> index 0, 9,600 -> index 1.
        assert_eq!(two_choices(&cands, 0, 9_600), 1);
        assert_eq!(two_choices(&cands, 9_600, 0), 1);
        // Same load: the better score.
        let cands = [(0.5, 100), (0.5, 9_000)];
        assert_eq!(two_choices(&cands, 0, 700), 1);
        assert_eq!(two_choices(&[(0.2, 7)], 12345, 99), 0);
    }
}
