//! Group commit of heartbeats on SQLite. With `synchronous=FULL` every commit waits for the
//! disk (about 1.6 ms on the benchmark machine), so one transaction per heartbeat caps a control
//! plane at a few hundred heartbeats a second. One writer thread takes every heartbeat waiting
//! (at most [`MAX_BATCH`]) and stores them in one transaction, each inside its own savepoint
//! with the same statements as before: the sequence check stays one conditional `UPDATE` per
//! heartbeat, in arrival order, and a refusal rolls back only its own writes (a stale
//! sequence's refusal count is kept, as before). Each caller is answered after the commit, so
//! an accepted heartbeat is on disk when it is acknowledged; a failed commit fails the batch.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, TransactionBehavior};

use super::{get_node, health_name};
use crate::error::{ControlError, Result};
use crate::store::{db, ms, HeartbeatCommit, NodeStatus, Refusal, HEARTBEAT_HISTORY_MS};

/// Most heartbeats in one transaction (bounds the wait of the last one in a batch).
pub(super) const MAX_BATCH: usize = 512;

type Item = (HeartbeatCommit, tokio::sync::oneshot::Sender<Result<()>>);

/// The queue to the writer thread; the thread ends when the last clone of the store is dropped.
#[derive(Clone)]
pub(super) struct HeartbeatWriter(mpsc::Sender<Item>);

impl HeartbeatWriter {
    /// Starts the writer over the store's connection.
    pub(super) fn start(conn: Arc<Mutex<Connection>>) -> Result<HeartbeatWriter> {
        let (tx, rx) = mpsc::channel::<Item>();
        std::thread::Builder::new()
            .name("b3iq-control-heartbeats".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
                    // Everything that arrived meanwhile (while the last batch committed, or while
                    // another statement held the connection) joins this one.
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(it) => batch.push(it),
                            Err(_) => break,
                        }
                    }
                    commit(&mut c, batch);
                }
            })
            .map_err(|e| ControlError::store("start the heartbeat writer", e))?;
        Ok(HeartbeatWriter(tx))
    }

    /// Queues a heartbeat and waits for its outcome (after the batch's commit).
    pub(super) async fn record(&self, h: &HeartbeatCommit) -> Result<()> {
        let gone = || ControlError::Store("the heartbeat writer stopped".into());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0.send((h.clone(), tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

fn commit(c: &mut Connection, batch: Vec<Item>) {
    let outcomes = match write(c, &batch) {
        Ok(o) => o,
        Err(e) => {
            let m = e.to_string();
            batch.iter().map(|_| Err(ControlError::Store(m.clone()))).collect()
        }
    };
    for ((_, reply), r) in batch.into_iter().zip(outcomes) {
        let _ = reply.send(r);
    }
}

fn write(c: &mut Connection, batch: &[Item]) -> Result<Vec<Result<()>>> {
    let mut tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db("heartbeat"))?;
    let mut out = Vec::with_capacity(batch.len());
    for (h, _) in batch {
        let sp = tx.savepoint().map_err(db("heartbeat"))?;
        let r = one(&sp, h);
        match &r {
            Ok(()) | Err(ControlError::Refused(Refusal::StaleSequence { .. })) => sp.commit().map_err(db("heartbeat"))?,
            // Dropping the savepoint rolls back whatever this heartbeat wrote.
            Err(_) => drop(sp),
        }
        out.push(r);
    }
    tx.commit().map_err(db("heartbeat"))?;
    Ok(out)
}

/// One heartbeat, as one transaction stored it before batching.
fn one(c: &Connection, h: &HeartbeatCommit) -> Result<()> {
    let id = h.node_id.to_text();
    let now = ms(h.received_at_ms);
    let n = c
        .prepare_cached(
            "UPDATE nodes SET last_sequence = ?2, last_sent_at_ms = ?3, last_received_at_ms = ?4, last_health = ?5, last_body = ?6
             WHERE node_id = ?1 AND status = 'active' AND expires_at_ms > ?4 AND (last_sequence IS NULL OR last_sequence < ?2)",
        )
        .and_then(|mut s| s.execute(params![id, ms(h.sequence), ms(h.sent_at_ms), now, health_name(h.health), h.body.to_string()]))
        .map_err(db("store heartbeat"))?;
    if n != 1 {
        let refusal = match get_node(c, &id)? {
            None => Refusal::UnknownNode,
            Some(n) if n.status == NodeStatus::Revoked => Refusal::Revoked(n.status_reason),
            Some(n) if n.status == NodeStatus::Suspended => Refusal::Suspended(n.status_reason),
            Some(n) if n.expires_at_ms <= h.received_at_ms => Refusal::EnrollmentExpired,
            Some(n) => {
                c.execute("UPDATE nodes SET refused_heartbeats = refused_heartbeats + 1 WHERE node_id = ?1", [&id]).map_err(db("count refusal"))?;
                return Err(Refusal::StaleSequence { got: h.sequence, last: n.last_heartbeat.map(|l| l.sequence).unwrap_or(0) }.into());
            }
        };
        return Err(refusal.into());
    }
    c.prepare_cached("INSERT INTO heartbeats(node_id, sequence, received_at_ms, health) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut s| s.execute(params![id, ms(h.sequence), now, health_name(h.health)]))
        .map_err(db("heartbeat history"))?;
    // Bounded history: a cheap indexed delete on roughly one row in 64 heartbeats.
    if h.sequence % 64 == 0 {
        c.prepare_cached("DELETE FROM heartbeats WHERE received_at_ms < ?1")
            .and_then(|mut s| s.execute([ms(h.received_at_ms.saturating_sub(HEARTBEAT_HISTORY_MS))]))
            .map_err(db("prune heartbeats"))?;
    }
    Ok(())
}
