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

/// Inside `tx`: the enrollment JSON (`None` when not enrolled).
///
/// # Errors
/// `Db`.
pub fn enrollment_json_in(tx: &rusqlite::Transaction<'_>) -> Result<Option<String>> {
    let v: Option<String> = tx.query_row("SELECT v FROM meta WHERE k = ?1", [META_ENROLLMENT], |r| r.get(0)).optional()?;
    Ok(v.filter(|s| !s.is_empty()))
}

/// Inside `tx`: store the enrollment JSON (the last heartbeat's outcome stays).
///
/// # Errors
/// `Db`.
pub fn put_enrollment_json_in(tx: &rusqlite::Transaction<'_>, json: &str) -> Result<()> {
    tx.execute("INSERT INTO meta(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v", params![META_ENROLLMENT, json])?;
    Ok(())
}

/// Inside `tx`: the highest job sequence recorded from `issuer_hex` (0 when none).
///
/// # Errors
/// `Db`.
pub fn max_seen_sequence_in(tx: &rusqlite::Transaction<'_>, issuer_hex: &str) -> Result<u64> {
    let last: Option<i64> = tx.query_row("SELECT MAX(sequence) FROM job_seen WHERE issuer = ?1", [issuer_hex], |r| r.get(0))?;
    Ok(last.unwrap_or(0).max(0) as u64)
}

/// Inside `tx`: the `remote` trust root `old_hex` is replaced by `new_hex` (labelled `label`).
///
/// # Errors
/// `Db`.
pub fn replace_remote_root_in(tx: &rusqlite::Transaction<'_>, old_hex: &str, new_hex: &str, label: &str, now: u64) -> Result<()> {
    tx.execute("DELETE FROM trust_roots WHERE public_key = ?1 AND class = 'remote'", [old_hex])?;
    tx.execute(
        "INSERT INTO trust_roots(public_key, class, added_at, label) VALUES (?1, 'remote', ?2, ?3)
         ON CONFLICT(public_key) DO UPDATE SET class = excluded.class, label = excluded.label",
        params![new_hex, now as i64, label],
    )?;
    Ok(())
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
