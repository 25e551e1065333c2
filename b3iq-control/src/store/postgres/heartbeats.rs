//! Batched heartbeats on Postgres. Each transaction costs the server a commit (a WAL flush with
//! `synchronous_commit` on) and the control plane a round trip, so heartbeats waiting at the
//! same moment are stored by one statement: `UPDATE nodes ... FROM UNNEST(...)` with the same
//! conditions as for one heartbeat (active, unexpired, sequence above the last), whose
//! `RETURNING` rows feed the history `INSERT`. A batch holds at most one heartbeat per node (a
//! second waits for the next batch), so each node's row is judged against exactly one
//! heartbeat. A heartbeat the batch did not store goes through [`super::record_one`], which
//! stores it if it has become acceptable meanwhile, or says why it is refused and counts a
//! stale sequence, as before. Callers are answered after the commit.

use std::collections::HashSet;
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{health_name, record_one};
use crate::error::{ControlError, Result};
use crate::store::{db, ms, HeartbeatCommit, HEARTBEAT_HISTORY_MS};

/// Most heartbeats in one statement.
const MAX_BATCH: usize = 256;
/// Batches in flight at once (each on its own pooled connection).
const WORKERS: usize = 4;

type Item = (HeartbeatCommit, oneshot::Sender<Result<()>>);

/// The queue to the batch workers; they end when the last clone of the store is dropped.
#[derive(Clone)]
pub(super) struct HeartbeatBatcher(mpsc::UnboundedSender<Item>);

impl HeartbeatBatcher {
    /// Starts the workers (on the current tokio runtime).
    pub(super) fn start(pool: Pool) -> HeartbeatBatcher {
        let (tx, rx) = mpsc::unbounded_channel::<Item>();
        let rx = Arc::new(Mutex::new((rx, Vec::<Item>::new())));
        for _ in 0..WORKERS {
            let (rx, pool) = (rx.clone(), pool.clone());
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut g = rx.lock().await;
                        let (rx, carried) = &mut *g;
                        let mut batch = std::mem::take(carried);
                        if batch.is_empty() {
                            match rx.recv().await {
                                Some(it) => batch.push(it),
                                None => return,
                            }
                        }
                        // One heartbeat per node in a batch; a second one waits for the next.
                        let mut nodes: HashSet<_> = HashSet::new();
                        let mut kept = Vec::with_capacity(batch.len());
                        for it in batch {
                            if kept.len() < MAX_BATCH && nodes.insert(it.0.node_id) {
                                kept.push(it);
                            } else {
                                carried.push(it);
                            }
                        }
                        while kept.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(it) if nodes.insert(it.0.node_id) => kept.push(it),
                                Ok(it) => carried.push(it),
                                Err(_) => break,
                            }
                        }
                        kept
                    };
                    store(&pool, batch).await;
                }
            });
        }
        HeartbeatBatcher(tx)
    }

    /// Queues a heartbeat and waits for its outcome (after its batch's commit).
    pub(super) async fn record(&self, h: &HeartbeatCommit) -> Result<()> {
        let gone = || ControlError::Store("the heartbeat writer stopped".into());
        let (tx, rx) = oneshot::channel();
        self.0.send((h.clone(), tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

async fn store(pool: &Pool, batch: Vec<Item>) {
    match stored(pool, &batch).await {
        Ok(accepted) => {
            for (h, reply) in batch {
                if accepted.contains(&h.node_id.to_text()) {
                    let _ = reply.send(Ok(()));
                } else {
                    // Refused (or raced): judged on its own, as a single heartbeat.
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(record_one(&pool, &h).await);
                    });
                }
            }
        }
        Err(e) => {
            let m = e.to_string();
            for (_, reply) in batch {
                let _ = reply.send(Err(ControlError::Store(m.clone())));
            }
        }
    }
}

/// Stores the batch in one statement; returns the nodes whose heartbeat was stored.
async fn stored(pool: &Pool, batch: &[Item]) -> Result<HashSet<String>> {
    let c = pool.get().await.map_err(db("connect to postgres"))?;
    let st = c
        .prepare_cached(
            "WITH beat AS (
                 SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[])
                     AS b(node_id, sequence, sent_at_ms, received_at_ms, health, body)),
             moved AS (
                 UPDATE nodes n SET last_sequence = b.sequence, last_sent_at_ms = b.sent_at_ms, last_received_at_ms = b.received_at_ms,
                     last_health = b.health, last_body = b.body
                 FROM beat b
                 WHERE n.node_id = b.node_id AND n.status = 'active' AND n.expires_at_ms > b.received_at_ms
                     AND (n.last_sequence IS NULL OR n.last_sequence < b.sequence)
                 RETURNING n.node_id, b.sequence, b.received_at_ms, b.health)
             INSERT INTO heartbeats(node_id, sequence, received_at_ms, health) SELECT node_id, sequence, received_at_ms, health FROM moved
             RETURNING node_id",
        )
        .await
        .map_err(db("store heartbeats"))?;
    let ids: Vec<String> = batch.iter().map(|(h, _)| h.node_id.to_text()).collect();
    let seqs: Vec<i64> = batch.iter().map(|(h, _)| ms(h.sequence)).collect();
    let sent: Vec<i64> = batch.iter().map(|(h, _)| ms(h.sent_at_ms)).collect();
    let recv: Vec<i64> = batch.iter().map(|(h, _)| ms(h.received_at_ms)).collect();
    let health: Vec<&str> = batch.iter().map(|(h, _)| health_name(h.health)).collect();
    let body: Vec<String> = batch.iter().map(|(h, _)| h.body.to_string()).collect();
    let rows = c.query(&st, &[&ids, &seqs, &sent, &recv, &health, &body]).await.map_err(db("store heartbeats"))?;
    let accepted: HashSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    // Bounded history: a cheap indexed delete on roughly one heartbeat in 64, as for one.
    // The heartbeats are committed by now: a failed prune is retried with a later batch, not
    // reported to their nodes.
    if let Some((h, _)) = batch.iter().find(|(h, _)| h.sequence % 64 == 0 && accepted.contains(&h.node_id.to_text())) {
        if let Err(e) = c.execute("DELETE FROM heartbeats WHERE received_at_ms < $1", &[&ms(h.received_at_ms.saturating_sub(HEARTBEAT_HISTORY_MS))]).await {
            tracing::warn!(error = %e, "prune heartbeat history");
        }
    }
    Ok(accepted)
}
