//! Canary requests (`docs/verification.md`, "Canaries"): the gateway's own chat requests, sent
//! every [`VerificationSettings::canary_interval_s`](super::verification::VerificationSettings)
//! (with jitter) to a node picked for it, through the customer path
//! ([`Gateway::forward_body`](super::Gateway)): the same ticket (tier, price, random seed key),
//! a hold on the canary organisation's credits, settlement by the node's receipt. Nothing on the
//! wire marks them: an ordinary prompt from a fixed set, `max_tokens` 16 to 96, streamed or
//! not, temperature absent, 0, 0.7 or 1. A canary is always verified (the sampling rate does
//! not apply) under the rules of sampled requests.
//!
//! **Which node.** Among fresh, open tunnels here with no canary in flight and a free slot that
//! a canary would not take from customers (at least two free; a one-slot share only when idle,
//! else it would never be checked): the one with the fewest verdicts about it in the last hour,
//! then the one whose last canary is oldest (round robin among equals).
//!
//! Counters: `b3iq_gateway_canaries_total{outcome="pass|fail|inconclusive|error"}`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::body::Bytes;
use b3iq_core::NodeId;
use b3iq_host::context::unix_now_ms;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use super::tunnel::{OfferedModel, Tunnel};
use super::Gateway;

/// Verdicts about a node counted for the choice of node: those of the last hour.
pub const VERIFIED_WINDOW_MS: u64 = 3_600_000;

/// The prompts canaries ask (ordinary requests a chat client sends).
pub const PROMPTS: &[&str] = &[
    "Write two sentences about the sea.",
    "What is the capital of France?",
    "Give me three tips for sleeping better.",
    "Explain what a prime number is in simple words.",
    "Suggest a name for a small bakery.",
    "Summarise the plot of Little Red Riding Hood in one paragraph.",
    "How do I boil an egg?",
    "Write a short poem about autumn leaves.",
    "What are the benefits of drinking water?",
    "Translate 'good morning' into Spanish and German.",
    "List four animals that live in the desert.",
    "Why is the sky blue?",
];

/// A canary in flight: what the forward path reports back (the canary's task reads it).
#[derive(Debug, Default)]
pub(crate) struct Tag {
    /// The node's receipt checked (the request was served and settled).
    pub(crate) settled: AtomicBool,
}

/// The canaries' state: nodes with a canary in flight, the last canary per node, recent
/// verdict times per node.
#[derive(Debug, Default)]
pub struct Canaries {
    in_flight: Mutex<HashSet<NodeId>>,
    last_sent_ms: Mutex<HashMap<NodeId, u64>>,
    verified: Mutex<HashMap<NodeId, VecDeque<u64>>>,
}

impl Canaries {
    /// Notes a verdict about `subject` (any request's) at `now_ms`.
    pub(crate) fn note_verdict(&self, subject: NodeId, now_ms: u64) {
        let mut m = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let q = m.entry(subject).or_default();
        q.push_back(now_ms);
        while q.front().is_some_and(|t| t + VERIFIED_WINDOW_MS < now_ms) || q.len() > 10_000 {
            q.pop_front();
        }
    }

    fn verified_recently(&self, node: &NodeId, now_ms: u64) -> usize {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .map_or(0, |q| q.iter().filter(|t| *t + VERIFIED_WINDOW_MS >= now_ms).count())
    }
}

/// Whether a canary may take a slot of a share of `max` with `in_flight` taken: it leaves a
/// free slot to customers, or the share is a single idle slot.
pub fn leaves_room(in_flight: u32, max: u32) -> bool {
    in_flight.saturating_add(1) < max || (max == 1 && in_flight == 0)
}

/// Orders candidates `(node, verdicts in the window, last canary ms)`: fewest verdicts first,
/// then the oldest last canary (never sent: 0), then node id. Returns the first.
pub fn choose(cands: &[(NodeId, usize, u64)]) -> Option<NodeId> {
    cands
        .iter()
        .min_by_key(|(n, v, last)| (*v, *last, *n))
        .map(|(n, _, _)| *n)
}

/// A canary's body: an ordinary chat request for `model` from the draws `r`.
pub fn body(model: &str, r: [u64; 4]) -> Value {
    let prompt = PROMPTS[(r[0] % PROMPTS.len() as u64) as usize];
    let mut v = json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 16 + r[1] % 81,
    });
    match r[2] % 4 {
        0 => {}
        1 => v["temperature"] = json!(0),
        2 => v["temperature"] = json!(0.7),
        _ => v["temperature"] = json!(1),
    }
    if r[3] % 2 == 1 {
        v["stream"] = json!(true);
    }
    v
}

impl Gateway {
    /// Starts the canary loop when [`VerificationSettings::canary_interval_s`] is above 0.
    ///
    /// [`VerificationSettings::canary_interval_s`]: super::verification::VerificationSettings
    pub(crate) fn spawn_canaries(gw: &Arc<Gateway>) {
        let every = gw.config.verification.canary_interval_s;
        if every == 0 {
            return;
        }
        let Ok(h) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Gateway> = Arc::downgrade(gw);
        h.spawn(async move {
            loop {
                // Jittered: 0.5 to 1.5 intervals.
                let ms = every.saturating_mul(500) + rand::random::<u64>() % every.saturating_mul(1000).max(1);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let Some(gw) = weak.upgrade() else { return };
                gw.canary_tick().await;
            }
        });
    }

    /// Sends one canary, if a node needs one and the canary organisation can pay.
    async fn canary_tick(self: &Arc<Self>) {
        let Some((tunnel, offered)) = self.pick_canary_node().await else {
            return;
        };
        let node = tunnel.node_id;
        let key = match self.canary_payer().await {
            Ok(k) => k,
            Err(e) => {
                self.canaries.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&node);
                tracing::warn!(error = %e, "gateway: cannot send a canary");
                self.metrics.canary("error");
                return;
            }
        };
        let gw = self.clone();
        tokio::spawn(async move {
            let tag = Arc::new(Tag::default());
            let body = body(&offered.public_id, rand::random());
            let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
            let r = gw
                .clone()
                .forward_body(key, bytes, "/v1/chat/completions", Some((tunnel, tag.clone())))
                .await;
            let ok = match r {
                // The answer is read to its end (a streamed one settles at its end).
                Ok(resp) => resp.into_body().collect().await.is_ok() && tag.settled.load(Ordering::Acquire),
                Err(e) => {
                    tracing::warn!(node = %node, error = %e, "gateway: a canary was not served");
                    false
                }
            };
            if !ok {
                gw.metrics.canary("error");
            }
            gw.canaries.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&node);
        });
    }

    /// The canary organisation's gateway key (its first unrevoked one).
    async fn canary_payer(&self) -> crate::error::Result<super::credits::GatewayKey> {
        let name = &self.config.verification.canary_org;
        let org = self
            .cp
            .store()
            .org(name)
            .await?
            .ok_or_else(|| crate::error::ControlError::Config(format!("verification.canary_org {name:?}: no such organisation")))?;
        self.cp
            .store()
            .gateway_keys(&org.id)
            .await?
            .into_iter()
            .find(|k| k.revoked_at_ms.is_none())
            .ok_or_else(|| crate::error::ControlError::Config(format!("verification.canary_org {name:?} has no unrevoked gateway key for canaries to spend through")))
    }

    /// The node the next canary goes to (see the module docs), marked in flight, and one of its
    /// models.
    async fn pick_canary_node(&self) -> Option<(Arc<Tunnel>, OfferedModel)> {
        let now = unix_now_ms();
        let mut cands = Vec::new();
        let mut by_id = HashMap::new();
        for t in self.tunnels.all() {
            if t.models.is_empty()
                || self.canaries.in_flight.lock().unwrap_or_else(|p| p.into_inner()).contains(&t.node_id)
                || !leaves_room(t.in_flight.load(Ordering::Acquire), t.max_concurrent)
                || !t.is_open().await
                || !self.is_fresh(&t).await
            {
                continue;
            }
            let last = self.canaries.last_sent_ms.lock().unwrap_or_else(|p| p.into_inner()).get(&t.node_id).copied().unwrap_or(0);
            cands.push((t.node_id, self.canaries.verified_recently(&t.node_id, now), last));
            by_id.insert(t.node_id, t);
        }
        let node = choose(&cands)?;
        let t = by_id.remove(&node)?;
        if !self.canaries.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(node) {
            return None;
        }
        self.canaries.last_sent_ms.lock().unwrap_or_else(|p| p.into_inner()).insert(node, now);
        let m = t.models[rand::random::<usize>() % t.models.len()].clone();
        Some((t, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canary_never_takes_the_last_free_slot_and_prefers_unverified_nodes() {
        assert!(leaves_room(0, 2));
        assert!(!leaves_room(1, 2), "the last free slot stays with customers");
        assert!(leaves_room(0, 1), "a one-slot share is checked when idle");
        assert!(!leaves_room(1, 1));
        assert!(!leaves_room(0, 0));
        let (a, b, c) = (NodeId([1; 32]), NodeId([2; 32]), NodeId([3; 32]));
        assert_eq!(choose(&[(a, 5, 0), (b, 0, 100), (c, 0, 50)]), Some(c), "fewest verdicts, then the oldest canary");
        assert_eq!(choose(&[(a, 0, 10), (b, 0, 0)]), Some(b), "never sent first");
        assert_eq!(choose(&[]), None);
        let cs = Canaries::default();
        cs.note_verdict(a, 1_000);
        cs.note_verdict(a, VERIFIED_WINDOW_MS + 1_500);
        assert_eq!(cs.verified_recently(&a, VERIFIED_WINDOW_MS + 1_600), 1, "older verdicts leave the window");
    }

    #[test]
    fn canary_bodies_look_like_ordinary_chat_requests() {
        for i in 0..64u64 {
            let v = body("m", [i, i * 7, i, i / 3]);
            let o = v.as_object().unwrap();
            for k in o.keys() {
                assert!(["model", "messages", "max_tokens", "temperature", "stream"].contains(&k.as_str()), "{k}");
            }
            let n = v["max_tokens"].as_u64().unwrap();
            assert!((16..=96).contains(&n));
            assert!(PROMPTS.contains(&v["messages"][0]["content"].as_str().unwrap()));
        }
    }
}
