//! SQL for owner accounts, sessions, setup tokens, local API keys and support grants. Secrets
//! arrive here already hashed ([`crate::creds::hash_secret`]); nothing in this module sees one.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::Db;
use crate::error::{HostError, Result};

/// The only scope of a support grant.
pub const SCOPE_DIAGNOSTICS: &str = "diagnostics";

/// Whether an owner exists.
pub fn is_claimed(db: &Db) -> Result<bool> {
    Ok(db
        .lock()
        .query_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0))?
        > 0)
}

/// Replace any setup token with the one whose hash is `token_hash`.
pub fn replace_setup_token(db: &Db, token_hash: &str, now: u64, expires_at: u64) -> Result<()> {
    db.tx(|tx| {
        tx.execute("DELETE FROM setup_tokens", [])?;
        tx.execute(
            "INSERT INTO setup_tokens(token_hash, created_at, expires_at) VALUES (?1,?2,?3)",
            params![token_hash, now as i64, expires_at as i64],
        )?;
        Ok(())
    })
}

/// Expiry of the pending setup token, if any.
pub fn setup_token_expiry(db: &Db) -> Result<Option<u64>> {
    Ok(db
        .lock()
        .query_row("SELECT MAX(expires_at) FROM setup_tokens", [], |r| {
            r.get::<_, Option<i64>>(0)
        })?
        .map(|v| v as u64))
}

/// Expiry of the setup token with this hash, if it exists.
pub fn setup_token_expires_at(db: &Db, token_hash: &str) -> Result<Option<u64>> {
    Ok(db
        .lock()
        .query_row(
            "SELECT expires_at FROM setup_tokens WHERE token_hash = ?1",
            [token_hash],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .map(|v| v as u64))
}

/// What [`claim_owner`] writes.
#[derive(Debug)]
pub struct NewOwner<'a> {
    /// Owner name (validated by the caller).
    pub username: &'a str,
    /// argon2id PHC string.
    pub password_hash: &'a str,
    /// Hash of the setup token presented.
    pub setup_token_hash: &'a str,
    /// Hash of the new session's cookie value.
    pub session_hash: &'a str,
    /// Unix seconds.
    pub now: u64,
    /// Unix seconds when the session ends.
    pub session_expires_at: u64,
}

/// In one transaction: refuse if an owner exists (`AlreadyClaimed`), check the setup token
/// (`SetupTokenInvalid`, `SetupTokenExpired`), consume it, create the owner and a session.
pub fn claim_owner(db: &Db, o: &NewOwner<'_>) -> Result<()> {
    db.tx(|tx| {
        let owners: i64 = tx.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
        if owners > 0 {
            return Err(HostError::AlreadyClaimed);
        }
        let exp: Option<i64> = tx
            .query_row("SELECT expires_at FROM setup_tokens WHERE token_hash = ?1", [o.setup_token_hash], |r| r.get(0))
            .optional()?;
        match exp {
            None => return Err(HostError::SetupTokenInvalid),
            Some(e) if (e as u64) <= o.now => return Err(HostError::SetupTokenExpired),
            Some(_) => {}
        }
        tx.execute("DELETE FROM setup_tokens", [])?;
        tx.execute(
            "INSERT INTO users(username, password_hash, role, created_at) VALUES (?1,?2,'owner',?3)",
            params![o.username, o.password_hash, o.now as i64],
        )?;
        let uid = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO sessions(id_hash, user_id, created_at, expires_at) VALUES (?1,?2,?3,?4)",
            params![o.session_hash, uid, o.now as i64, o.session_expires_at as i64],
        )?;
        Ok(())
    })
}

/// A user row as login needs it.
#[derive(Debug, Clone)]
pub struct LoginRow {
    /// Row id.
    pub id: i64,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// The user named `username`, if any.
pub fn login_row(db: &Db, username: &str) -> Result<Option<LoginRow>> {
    Ok(db
        .lock()
        .query_row(
            "SELECT id, password_hash FROM users WHERE username = ?1",
            [username],
            |r| {
                Ok(LoginRow {
                    id: r.get(0)?,
                    password_hash: r.get(1)?,
                })
            },
        )
        .optional()?)
}

/// Most sources whose sign-in failures are remembered; the oldest are forgotten beyond it.
pub const MAX_LOGIN_SOURCES: i64 = 10_000;

/// Take one sign-in attempt for `source`, in one transaction, before any password is hashed:
/// `Err(seconds)` while the source is locked; otherwise the attempt is counted as a failure up
/// front (a success clears it with [`clear_login_failures`]), and `lock_for(failures)` seconds of
/// lock start now (0 for none). So however many attempts run at once, only the ones taken before
/// the lock reach the password check. Rows idle for a day, and the oldest beyond
/// [`MAX_LOGIN_SOURCES`], are dropped on the way.
pub fn reserve_login_attempt(
    db: &Db,
    source: &str,
    now: u64,
    lock_for: impl Fn(i64) -> u64,
) -> Result<std::result::Result<(), u64>> {
    db.tx(|tx| {
        let row: Option<(i64, i64)> = tx
            .query_row("SELECT failures, locked_until FROM login_limits WHERE source = ?1", [source], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (failures, locked_until) = row.map(|(f, l)| (f, l.max(0) as u64)).unwrap_or((0, 0));
        if locked_until > now {
            return Ok(Err(locked_until - now));
        }
        let failures = failures.saturating_add(1);
        let lock = lock_for(failures);
        let until = if lock == 0 { 0 } else { now.saturating_add(lock) };
        tx.execute(
            "INSERT INTO login_limits(source, failures, locked_until, updated_at) VALUES (?1,?2,?3,?4)
             ON CONFLICT(source) DO UPDATE SET failures = ?2, locked_until = ?3, updated_at = ?4",
            params![source, failures, until as i64, now as i64],
        )?;
        tx.execute("DELETE FROM login_limits WHERE updated_at < ?1 AND locked_until < ?2", params![now.saturating_sub(86_400) as i64, now as i64])?;
        tx.execute(
            "DELETE FROM login_limits WHERE source IN (SELECT source FROM login_limits ORDER BY updated_at DESC LIMIT -1 OFFSET ?1)",
            [MAX_LOGIN_SOURCES],
        )?;
        Ok(Ok(()))
    })
}

/// Forget `source`'s failures (after a successful sign-in).
pub fn clear_login_failures(db: &Db, source: &str) -> Result<()> {
    db.lock()
        .execute("DELETE FROM login_limits WHERE source = ?1", [source])?;
    Ok(())
}

/// The owner's row id and name, `None` before the node is claimed.
pub fn owner_row(db: &Db) -> Result<Option<(i64, String)>> {
    Ok(db
        .lock()
        .query_row(
            "SELECT id, username FROM users ORDER BY id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Replace the owner's password hash, end every session and forget every sign-in lock, in one
/// transaction. `NotClaimed` without an owner.
pub fn reset_owner_password(db: &Db, password_hash: &str) -> Result<String> {
    db.tx(|tx| {
        let owner: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, username FROM users ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (id, username) = owner.ok_or(HostError::NotClaimed)?;
        tx.execute(
            "UPDATE users SET password_hash = ?1 WHERE id = ?2",
            params![password_hash, id],
        )?;
        tx.execute("DELETE FROM sessions", [])?;
        tx.execute("DELETE FROM login_limits", [])?;
        Ok(username)
    })
}

/// Drop expired sessions and start a new one, in one transaction.
pub fn start_session(
    db: &Db,
    user_id: i64,
    session_hash: &str,
    now: u64,
    expires_at: u64,
) -> Result<()> {
    db.tx(|tx| {
        tx.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now as i64])?;
        tx.execute(
            "INSERT INTO sessions(id_hash, user_id, created_at, expires_at) VALUES (?1,?2,?3,?4)",
            params![session_hash, user_id, now as i64, expires_at as i64],
        )?;
        Ok(())
    })
}

/// The owner's stored password hash (tests and diagnostics of the hash format).
pub fn owner_password_hash(db: &Db) -> Result<Option<String>> {
    Ok(db
        .lock()
        .query_row(
            "SELECT password_hash FROM users ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?)
}

/// A live owner session.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    /// The owner's name.
    pub username: String,
    /// When the session ends (sign-in plus `session_ttl_s`; rotation does not move it).
    pub expires_at: u64,
    /// When the secret used stops working, if it was replaced by rotation and is in its grace
    /// (earlier than `expires_at`); `None` for the current secret.
    pub grace_expires_at: Option<u64>,
}

/// The live session whose cookie hashes to `session_hash`. For a secret already replaced by
/// rotation (in its grace) the session's end is its newest secret's, found along the
/// `replaced_by` chain; the grace's end is `grace_expires_at`.
pub fn session(db: &Db, session_hash: &str, now: u64) -> Result<Option<Session>> {
    Ok(db
        .lock()
        .query_row(
            "WITH RECURSIVE successors(h, expires_at, depth) AS (
                 SELECT replaced_by, NULL, 0 FROM sessions WHERE id_hash = ?1 AND replaced_by IS NOT NULL
                 UNION ALL
                 SELECT s.replaced_by, s.expires_at, c.depth + 1 FROM sessions s JOIN successors c ON s.id_hash = c.h
                 WHERE c.depth < 64
             )
             SELECT u.username, s.expires_at, s.replaced_by IS NOT NULL, (SELECT MAX(expires_at) FROM successors)
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id_hash = ?1 AND s.expires_at > ?2",
            params![session_hash, now as i64],
            |r| {
                let own_end = r.get::<_, i64>(1)?.max(0) as u64;
                let replaced: bool = r.get(2)?;
                let chain_end = r.get::<_, Option<i64>>(3)?.map(|e| e.max(0) as u64);
                Ok(match (replaced, chain_end) {
                    (true, Some(end)) if end > own_end => {
                        Session { username: r.get(0)?, expires_at: end, grace_expires_at: Some(own_end) }
                    }
                    _ => Session { username: r.get(0)?, expires_at: own_end, grace_expires_at: None },
                })
            },
        )
        .optional()?)
}

/// Delete a session: the row `session_hash` names and every row of its rotation chain (those it
/// replaced, still in their grace, and those that replaced it), so signing out ends every
/// secret of that sign-in.
pub fn delete_session(db: &Db, session_hash: &str) -> Result<()> {
    db.lock().execute(
        "WITH RECURSIVE chain(h) AS (
             SELECT ?1
             UNION SELECT s.id_hash FROM sessions s JOIN chain c ON s.replaced_by = c.h
             UNION SELECT s.replaced_by FROM sessions s JOIN chain c ON s.id_hash = c.h WHERE s.replaced_by IS NOT NULL
         )
         DELETE FROM sessions WHERE id_hash IN (SELECT h FROM chain)",
        [session_hash],
    )?;
    Ok(())
}

/// What [`rotate_session`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// No live session has that secret.
    NoSession,
    /// The secret is younger than the rotation age, or was already replaced (a concurrent
    /// request rotated it; this one keeps using it within the grace).
    Kept,
    /// A successor row was inserted; the old secret now ends at `old_expires_at`.
    Rotated {
        /// When the whole session ends (unchanged by rotation).
        session_expires_at: u64,
    },
}

/// In one transaction: if the live, not yet replaced session `old_hash` was issued at or before
/// `now - rotate_after_s`, insert `new_hash` for the same user and end (`expires_at`), end the old
/// row at `now + grace_s` (never later than it already ended) and point it at its successor.
/// Only one of several concurrent callers rotates (the `replaced_by IS NULL` guard).
pub fn rotate_session(
    db: &Db,
    old_hash: &str,
    new_hash: &str,
    now: u64,
    rotate_after_s: u64,
    grace_s: u64,
) -> Result<Rotation> {
    db.tx(|tx| {
        let row: Option<(i64, i64, i64, Option<String>)> = tx
            .query_row(
                "SELECT user_id, created_at, expires_at, replaced_by FROM sessions WHERE id_hash = ?1 AND expires_at > ?2",
                params![old_hash, now as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((user_id, created_at, expires_at, replaced_by)) = row else {
            return Ok(Rotation::NoSession);
        };
        let age = now.saturating_sub(created_at.max(0) as u64);
        if replaced_by.is_some() || age < rotate_after_s {
            return Ok(Rotation::Kept);
        }
        tx.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now as i64])?;
        tx.execute(
            "INSERT INTO sessions(id_hash, user_id, created_at, expires_at) VALUES (?1,?2,?3,?4)",
            params![new_hash, user_id, now as i64, expires_at],
        )?;
        let old_end = (now.saturating_add(grace_s) as i64).min(expires_at);
        tx.execute(
            "UPDATE sessions SET replaced_by = ?2, expires_at = ?3 WHERE id_hash = ?1",
            params![old_hash, new_hash, old_end],
        )?;
        Ok(Rotation::Rotated { session_expires_at: expires_at.max(0) as u64 })
    })
}

/// End every session; returns how many there were.
pub fn delete_all_sessions(db: &Db) -> Result<usize> {
    Ok(db.lock().execute("DELETE FROM sessions", [])?)
}

/// A local API key as listed (never the secret or its hash).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyInfo {
    /// Key id (`key_...`).
    pub id: String,
    /// Human name.
    pub name: String,
    /// First characters of the secret, to recognise it.
    pub prefix: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Created.
    pub created_at: u64,
    /// Last used (minute resolution).
    pub last_used_at: Option<u64>,
    /// Expiry.
    pub expires_at: Option<u64>,
    /// Revoked.
    pub revoked_at: Option<u64>,
}

const KEY_COLS: &str = "id, name, prefix, scopes, created_at, last_used_at, expires_at, revoked_at";

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyInfo> {
    let scopes: String = r.get(3)?;
    Ok(KeyInfo {
        id: r.get(0)?,
        name: r.get(1)?,
        prefix: r.get(2)?,
        scopes: serde_json::from_str(&scopes).unwrap_or_default(),
        created_at: r.get::<_, i64>(4)? as u64,
        last_used_at: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        expires_at: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        revoked_at: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
    })
}

/// Insert a key record with the hash of its secret.
pub fn insert_key(db: &Db, k: &KeyInfo, key_hash: &str) -> Result<()> {
    db.lock().execute(
        "INSERT INTO api_keys(id, name, prefix, key_hash, scopes, created_at, expires_at) VALUES (?1,?2,?3,?4,?5,?6,?7)",
        params![
            k.id,
            k.name,
            k.prefix,
            key_hash,
            serde_json::to_string(&k.scopes).unwrap_or_default(),
            k.created_at as i64,
            k.expires_at.map(|v| v as i64)
        ],
    )?;
    Ok(())
}

/// All local keys, newest first.
pub fn list_keys(db: &Db) -> Result<Vec<KeyInfo>> {
    let conn = db.lock();
    let mut st = conn.prepare(&format!(
        "SELECT {KEY_COLS} FROM api_keys ORDER BY created_at DESC, id"
    ))?;
    let rows = st
        .query_map([], key_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The key whose secret hashes to `key_hash`.
pub fn key_by_hash(db: &Db, key_hash: &str) -> Result<Option<KeyInfo>> {
    Ok(db
        .lock()
        .query_row(
            &format!("SELECT {KEY_COLS} FROM api_keys WHERE key_hash = ?1"),
            [key_hash],
            key_row,
        )
        .optional()?)
}

/// Revoke a key (keeps the first revocation time). `NotFound` if unknown.
pub fn revoke_key(db: &Db, id: &str, now: u64) -> Result<()> {
    let n = db.lock().execute(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
        params![id, now as i64],
    )?;
    if n == 0 {
        return Err(HostError::NotFound(format!("key {id}")));
    }
    Ok(())
}

/// Set a key's `last_used_at`.
pub fn touch_key(db: &Db, id: &str, now: u64) -> Result<()> {
    db.lock().execute(
        "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
        params![id, now as i64],
    )?;
    Ok(())
}

/// A support grant as listed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Grant {
    /// Grant id (`sg_...`).
    pub id: String,
    /// First characters of the secret.
    pub prefix: String,
    /// Owner's note.
    pub note: String,
    /// Always `["diagnostics"]`.
    pub scopes: Vec<String>,
    /// Created.
    pub created_at: u64,
    /// Expiry (always set).
    pub expires_at: u64,
    /// Revoked.
    pub revoked_at: Option<u64>,
}

const GRANT_COLS: &str = "id, prefix, note, created_at, expires_at, revoked_at";

fn grant_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Grant> {
    Ok(Grant {
        id: r.get(0)?,
        prefix: r.get(1)?,
        note: r.get(2)?,
        scopes: vec![SCOPE_DIAGNOSTICS.to_string()],
        created_at: r.get::<_, i64>(3)? as u64,
        expires_at: r.get::<_, i64>(4)? as u64,
        revoked_at: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
    })
}

/// Insert a grant with the hash of its secret.
pub fn insert_grant(db: &Db, g: &Grant, secret_hash: &str) -> Result<()> {
    db.lock().execute(
        "INSERT INTO support_grants(id, prefix, secret_hash, note, created_at, expires_at) VALUES (?1,?2,?3,?4,?5,?6)",
        params![g.id, g.prefix, secret_hash, g.note, g.created_at as i64, g.expires_at as i64],
    )?;
    Ok(())
}

/// All support grants, newest first.
pub fn list_grants(db: &Db) -> Result<Vec<Grant>> {
    let conn = db.lock();
    let mut st = conn.prepare(&format!(
        "SELECT {GRANT_COLS} FROM support_grants ORDER BY created_at DESC, id"
    ))?;
    let rows = st
        .query_map([], grant_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Revoke a grant. `NotFound` if unknown.
pub fn revoke_grant(db: &Db, id: &str, now: u64) -> Result<()> {
    let n = db.lock().execute(
        "UPDATE support_grants SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
        params![id, now as i64],
    )?;
    if n == 0 {
        return Err(HostError::NotFound(format!("support grant {id}")));
    }
    Ok(())
}

/// The grant whose secret hashes to `secret_hash`.
pub fn grant_by_hash(db: &Db, secret_hash: &str) -> Result<Option<Grant>> {
    Ok(db
        .lock()
        .query_row(
            &format!("SELECT {GRANT_COLS} FROM support_grants WHERE secret_hash = ?1"),
            [secret_hash],
            grant_row,
        )
        .optional()?)
}
