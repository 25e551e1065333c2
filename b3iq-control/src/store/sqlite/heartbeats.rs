//! Heartbeats on SQLite, written through the store's group commit ([`super::writer`]): the
//! sequence check stays one conditional `UPDATE` per heartbeat, in arrival order, and a refusal
//! rolls back only its own writes (a stale sequence's refusal count is kept). An accepted
//! heartbeat is on disk when it is acknowledged.

use rusqlite::{params, Connection};

use super::get_node;
use super::health_name;
use super::writer::GroupWriter;
use crate::error::{ControlError, Result};
use crate::store::{db, ms, HeartbeatCommit, NodeStatus, Refusal, HEARTBEAT_HISTORY_MS};

/// Stores one heartbeat through the store's group-commit writer; a stale sequence's refusal
/// keeps its refusal count.
pub(super) async fn record(w: &GroupWriter, h: &HeartbeatCommit) -> Result<()> {
    let h = h.clone();
    w.write(|e| matches!(e, ControlError::Refused(Refusal::StaleSequence { .. })), move |c| one(c, &h)).await
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
