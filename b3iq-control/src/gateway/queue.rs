//! The gateway's per-model wait queue: first come, first served.
//!
//! A request that finds no node with spare capacity takes a ticket in its model's queue and
//! waits to be woken (a request ending, a tunnel opening) or for its recheck interval. A node
//! with room goes to the oldest waiter that can use it: a request arriving later, or a waiter
//! woken later, does not overtake an older one. "Can use" matters because a retried request
//! skips the nodes it already tried: a node every older waiter has tried is left to the next.
//!
//! Without the order (all waiters woken at once, newcomers taking free slots first), a request
//! could lose every race for its whole queue time and get 429 while later ones were served.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use b3iq_core::NodeId;

/// Requests waiting for a node, per public model id, in arrival order.
#[derive(Default)]
pub(crate) struct WaitQueue {
    /// model -> ticket -> the nodes that request already tried.
    models: Mutex<HashMap<String, BTreeMap<u64, Vec<NodeId>>>>,
    next: AtomicU64,
}

impl WaitQueue {
    /// Takes the next ticket for `model`, or `None` when `max` requests already wait for it.
    pub(crate) fn join(&self, model: &str, tried: &[NodeId], max: usize) -> Option<u64> {
        let mut m = self.models.lock().unwrap_or_else(|p| p.into_inner());
        let q = m.entry(model.to_string()).or_default();
        if q.len() >= max {
            if q.is_empty() {
                m.remove(model);
            }
            return None;
        }
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        q.insert(ticket, tried.to_vec());
        Some(ticket)
    }

    /// Leaves the queue (served, or given up).
    pub(crate) fn leave(&self, model: &str, ticket: u64) {
        let mut m = self.models.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = m.get_mut(model) {
            q.remove(&ticket);
            if q.is_empty() {
                m.remove(model);
            }
        }
    }

    /// Keeps in `nodes` only those the request holding `ticket` (`None`: one not waiting yet,
    /// so every waiter is older) may take: the nodes every older waiter has already tried.
    pub(crate) fn keep_mine<T>(
        &self,
        model: &str,
        ticket: Option<u64>,
        nodes: &mut Vec<T>,
        id: impl Fn(&T) -> NodeId,
    ) {
        let m = self.models.lock().unwrap_or_else(|p| p.into_inner());
        let Some(q) = m.get(model) else { return };
        let older: Vec<&Vec<NodeId>> = q.range(..ticket.unwrap_or(u64::MAX)).map(|(_, t)| t).collect();
        if !older.is_empty() {
            nodes.retain(|n| {
                let n = id(n);
                older.iter().all(|tried| tried.contains(&n))
            });
        }
    }

    /// Requests waiting, per model.
    pub(crate) fn lengths(&self) -> HashMap<String, usize> {
        let m = self.models.lock().unwrap_or_else(|p| p.into_inner());
        m.iter().map(|(k, q)| (k.clone(), q.len())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn node(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    #[test]
    fn a_node_goes_to_the_oldest_waiter_that_can_use_it() {
        let q = WaitQueue::default();
        let (a, b) = (node(1), node(2));
        let t1 = q.join("m", &[a], 8).unwrap();
        let t2 = q.join("m", &[], 8).unwrap();
        assert!(t1 < t2);
        // A newcomer gets nothing while someone older can use the node.
        let mut v = vec![a, b];
        q.keep_mine("m", None, &mut v, |n| *n);
        assert!(v.is_empty(), "{v:?}");
        // The first waiter tried `a`: `a` is left to the second, `b` is the first's.
        let mut v = vec![a, b];
        q.keep_mine("m", Some(t2), &mut v, |n| *n);
        assert_eq!(v, vec![a]);
        let mut v = vec![a, b];
        q.keep_mine("m", Some(t1), &mut v, |n| *n);
        assert_eq!(v, vec![a, b]);
        // Another model's queue is separate; leaving frees the place.
        let mut v = vec![a];
        q.keep_mine("other", None, &mut v, |n| *n);
        assert_eq!(v, vec![a]);
        q.leave("m", t1);
        let mut v = vec![a, b];
        q.keep_mine("m", Some(t2), &mut v, |n| *n);
        assert_eq!(v, vec![a, b]);
        q.leave("m", t2);
        assert!(q.lengths().is_empty());
    }

    #[test]
    fn the_queue_is_bounded_per_model() {
        let q = WaitQueue::default();
        assert!(q.join("m", &[], 2).is_some());
        assert!(q.join("m", &[], 2).is_some());
        assert_eq!(q.join("m", &[], 2), None);
        assert!(q.join("n", &[], 2).is_some());
        assert_eq!(q.lengths().get("m"), Some(&2));
        assert_eq!(q.join("z", &[], 0), None);
        assert!(!q.lengths().contains_key("z"));
    }

    /// Waiters woken all at once by one broadcast (as the gateway's `Notify::notify_waiters`)
    /// are served in arrival order, one slot at a time, while newcomers keep arriving.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn woken_waiters_are_served_in_arrival_order() {
        struct Pool {
            q: WaitQueue,
            free: Mutex<u32>,
            wake: tokio::sync::Notify,
            served: Mutex<Vec<u64>>,
        }
        let p = Arc::new(Pool {
            q: WaitQueue::default(),
            free: Mutex::new(0),
            wake: tokio::sync::Notify::new(),
            served: Mutex::new(Vec::new()),
        });
        let n = node(7);
        let mut tasks = Vec::new();
        let mut order = Vec::new();
        for _ in 0..40 {
            let t = p.q.join("m", &[], 64).unwrap();
            order.push(t);
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let w = p.wake.notified();
                    tokio::pin!(w);
                    w.as_mut().enable();
                    let mut v = vec![n];
                    p.q.keep_mine("m", Some(t), &mut v, |x| *x);
                    if !v.is_empty() {
                        let mut f = p.free.lock().unwrap();
                        if *f > 0 {
                            *f -= 1;
                            drop(f);
                            p.served.lock().unwrap().push(t);
                            p.q.leave("m", t);
                            p.wake.notify_waiters();
                            return;
                        }
                    }
                    let _ = tokio::time::timeout(std::time::Duration::from_millis(50), w).await;
                }
            }));
        }
        // Slots free up one or a few at a time; every wake reaches every waiter.
        let mut k = 0u32;
        while p.served.lock().unwrap().len() < order.len() {
            assert!(k < 10_000, "waiters still unserved after {k} wakes");
            *p.free.lock().unwrap() += 1 + k % 3;
            p.wake.notify_waiters();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            k += 1;
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*p.served.lock().unwrap(), order);
    }
}
