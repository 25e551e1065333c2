//! Managed-mode state in `meta`: the enrollment, the heartbeat sequence, the last heartbeat's
//! outcome; and the control plane's trust root.

use rusqlite::{params, OptionalExtension};

use super::Db;
use crate::error::{HostError, Result};

/// meta key: the current enrollment (JSON); absent in local mode.
pub const META_ENROLLMENT: &str = "managed_enrollment";
/// meta key: the last heartbeat sequence used (decimal).
pub const META_HEARTBEAT_SEQUENCE: &str = "managed_heartbeat_sequence";
/// meta key: the outcome of the last heartbeat (JSON).
pub const META_LAST_HEARTBEAT: &str = "managed_last_heartbeat";

/// In one transaction: store the enrollment JSON and forget the previous last-heartbeat outcome.
///
/// # Errors
/// `Db`.
pub fn put_enrollment(db: &Db, json: &str) -> Result<()> {
    db.tx(|tx| {
        tx.execute("INSERT INTO meta(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v", params![META_ENROLLMENT, json])?;
        tx.execute("DELETE FROM meta WHERE k = ?1", [META_LAST_HEARTBEAT])?;
        Ok(())
    })
}

/// In one transaction: forget the enrollment, its last heartbeat and the control plane's
/// `remote` trust root `job_key_hex`.
///
/// # Errors
/// `Db`.
pub fn clear_enrollment(db: &Db, job_key_hex: &str) -> Result<()> {
    db.tx(|tx| {
        tx.execute("DELETE FROM meta WHERE k IN (?1, ?2)", [META_ENROLLMENT, META_LAST_HEARTBEAT])?;
        tx.execute("DELETE FROM trust_roots WHERE public_key = ?1 AND class = 'remote'", [job_key_hex])?;
        Ok(())
    })
}

/// The enrollment JSON inside `tx` (`None` when not enrolled).
fn enrollment_in(tx: &rusqlite::Transaction<'_>) -> Result<Option<crate::managed::Enrollment>> {
    let v: Option<String> = tx.query_row("SELECT v FROM meta WHERE k = ?1", [META_ENROLLMENT], |r| r.get(0)).optional()?;
    match v.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => serde_json::from_str(&s).map(Some).map_err(|e| HostError::Config(format!("state.db managed_enrollment: {e}"))),
    }
}

fn put_enrollment_in(tx: &rusqlite::Transaction<'_>, e: &crate::managed::Enrollment) -> Result<()> {
    let json = serde_json::to_string(e).map_err(|x| HostError::Internal(x.to_string()))?;
    tx.execute("INSERT INTO meta(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v", params![META_ENROLLMENT, json])?;
    Ok(())
}

/// In one transaction: change the current enrollment with `f` (a read-modify-write that cannot
/// lose a concurrent change, such as a renewal's new term racing a key rotation). Returns the
/// enrollment as written, or `None` when the node is not enrolled (nothing is written).
///
/// # Errors
/// `Db`; `Config` for a corrupt enrollment row.
pub fn update_enrollment(db: &Db, f: impl FnOnce(&mut crate::managed::Enrollment)) -> Result<Option<crate::managed::Enrollment>> {
    db.tx(|tx| {
        let Some(mut e) = enrollment_in(tx)? else { return Ok(None) };
        f(&mut e);
        put_enrollment_in(tx, &e)?;
        Ok(Some(e))
    })
}

/// Inside `tx` (the transaction that records a `rotate_issuer_key` job): the control plane's
/// pinned job key `old` (the job's verified signer) is replaced by `new`, in the enrollment and
/// in the trust roots, so from the commit on jobs signed by `old` are refused as from an
/// untrusted issuer. The highest job sequence accepted from `old` is kept in the enrollment
/// (`job_sequence_floor`), so the next poll does not ask again for jobs already received.
/// Checks come before any write: an error leaves nothing changed.
///
/// # Errors
/// `InvalidParameter` when the node is not enrolled or `old` is not the pinned key; `Db`.
pub fn rotate_job_key_in(tx: &rusqlite::Transaction<'_>, old: &b3iq_core::NodePublicKey, new: &b3iq_core::NodePublicKey, now: u64) -> Result<()> {
    let Some(mut e) = enrollment_in(tx)? else {
        return Err(HostError::InvalidParameter("rotate_issuer_key refused: the node is not enrolled with a control plane".into()));
    };
    if &e.job_key != old {
        return Err(HostError::InvalidParameter(format!(
            "rotate_issuer_key refused: it is signed by {}, not by the pinned job key {}",
            old.to_hex(),
            e.job_key.to_hex()
        )));
    }
    let last: Option<i64> = tx.query_row("SELECT MAX(sequence) FROM job_seen WHERE issuer = ?1", [old.to_hex()], |r| r.get(0))?;
    e.job_sequence_floor = e.job_sequence_floor.max(last.unwrap_or(0).max(0) as u64);
    e.job_key = *new;
    tx.execute("DELETE FROM trust_roots WHERE public_key = ?1 AND class = 'remote'", [old.to_hex()])?;
    tx.execute(
        "INSERT INTO trust_roots(public_key, class, added_at, label) VALUES (?1, 'remote', ?2, ?3)
         ON CONFLICT(public_key) DO UPDATE SET class = excluded.class, label = excluded.label",
        params![new.to_hex(), now as i64, format!("control plane {}", e.audience)],
    )?;
    put_enrollment_in(tx, &e)
}

/// Takes the next heartbeat sequence (1, 2, ...) and commits it before returning, so a
/// sequence is never used twice, across restarts too.
///
/// # Errors
/// `Db`; `Internal` when the sequence is exhausted.
pub fn next_heartbeat_sequence(db: &Db) -> Result<u64> {
    db.tx(|tx| {
        let cur: Option<String> = tx.query_row("SELECT v FROM meta WHERE k = ?1", [META_HEARTBEAT_SEQUENCE], |r| r.get(0)).optional()?;
        let next = cur
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| HostError::Internal("heartbeat sequence exhausted".into()))?;
        tx.execute("INSERT INTO meta(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v", params![META_HEARTBEAT_SEQUENCE, next.to_string()])?;
        Ok(next)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_increases_and_enrollment_clears_with_its_trust_root() {
        let db = Db::open_in_memory().unwrap();
        assert_eq!(next_heartbeat_sequence(&db).unwrap(), 1);
        assert_eq!(next_heartbeat_sequence(&db).unwrap(), 2);
        db.meta_set(META_LAST_HEARTBEAT, "{}").unwrap();
        put_enrollment(&db, "{\"x\":1}").unwrap();
        assert_eq!(db.meta_get(META_ENROLLMENT).unwrap().as_deref(), Some("{\"x\":1}"));
        assert_eq!(db.meta_get(META_LAST_HEARTBEAT).unwrap(), None);
        db.lock().execute("INSERT INTO trust_roots(public_key, class, added_at) VALUES ('aa', 'remote', 1), ('bb', 'owner_local', 1)", []).unwrap();
        clear_enrollment(&db, "aa").unwrap();
        assert_eq!(db.meta_get(META_ENROLLMENT).unwrap(), None);
        assert_eq!(db.count("trust_roots").unwrap(), 1, "only the control plane's root is removed");
        assert_eq!(next_heartbeat_sequence(&db).unwrap(), 3, "the sequence survives unenrollment");
    }
}
