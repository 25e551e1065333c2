//! Credential rules: owner accounts (argon2id), login backoff, sessions, setup tokens, API keys
//! and support grants. Secrets are stored only as hashes (see [`crate::creds`]); the SQL is in
//! [`crate::store::auth`]. These functions write no audit events: the owner operations in
//! [`crate::owner`] call them and record each decision.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::creds;
use crate::error::{HostError, Result};
use crate::store::auth as sql;
use crate::store::Db;

pub use crate::store::auth::{is_claimed, setup_token_expiry, Grant, KeyInfo, Session, SCOPE_DIAGNOSTICS};

/// Consecutive failures before backoff starts.
pub const BACKOFF_AFTER_FAILURES: i64 = 3;
/// Longest login backoff, seconds.
pub const MAX_BACKOFF_S: u64 = 300;

/// Scope for the `/v1/*` routes.
pub const SCOPE_INFERENCE: &str = "inference";
/// Scope for `/metrics`.
pub const SCOPE_METRICS: &str = "metrics";
/// Scopes a local key may carry.
pub const LOCAL_SCOPES: &[&str] = &[SCOPE_INFERENCE, SCOPE_METRICS];

/// Hash a password with argon2id (PHC string, random salt).
pub fn hash_password(password: &str) -> Result<String> {
    let mut raw = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    let salt = SaltString::encode_b64(&raw).map_err(|e| HostError::Internal(format!("argon2 salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HostError::Internal(format!("argon2: {e}")))
}

/// Check a password against a PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// Validate a new username and password.
pub fn validate_new_account(username: &str, password: &str) -> Result<()> {
    let ok_name = !username.is_empty()
        && username.len() <= 64
        && username.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok_name {
        return Err(HostError::InvalidUsername);
    }
    let n = password.chars().count();
    if !(10..=1024).contains(&n) {
        return Err(HostError::WeakPassword);
    }
    Ok(())
}

/// Replace any setup token with a new one; returns the secret (to print once and write to the
/// setup-token file) and its expiry.
pub fn issue_setup_token(db: &Db, now: u64, ttl_s: u64) -> Result<(String, u64)> {
    let token = creds::new_setup_token();
    let expires = now + ttl_s;
    sql::replace_setup_token(db, &creds::hash_secret(&token), now, expires)?;
    Ok((token, expires))
}

/// Whether `token` is the pending setup token and has not expired at `now`.
pub fn setup_token_valid(db: &Db, token: &str, now: u64) -> Result<bool> {
    Ok(sql::setup_token_expires_at(db, &creds::hash_secret(token))?.is_some_and(|e| e > now))
}

/// Result of a claim or login.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionGrant {
    /// The owner's name.
    pub username: String,
    /// The session cookie value (secret; set as a cookie, never logged).
    #[serde(skip)]
    pub session_secret: String,
    /// When the session ends.
    pub expires_at: u64,
}

/// Claim the node: check and consume the setup token, create the owner and a session, all in one
/// transaction. The password is hashed before the transaction starts (argon2 is slow).
pub fn claim(db: &Db, token: &str, username: &str, password: &str, now: u64, session_ttl_s: u64) -> Result<SessionGrant> {
    if creds::check_setup_token_format(token).is_err() {
        return Err(HostError::SetupTokenInvalid);
    }
    validate_new_account(username, password)?;
    let phc = hash_password(password)?;
    let session = creds::new_session_secret();
    let expires_at = now + session_ttl_s;
    sql::claim_owner(
        db,
        &sql::NewOwner {
            username,
            password_hash: &phc,
            setup_token_hash: &creds::hash_secret(token),
            session_hash: &creds::hash_secret(&session),
            now,
            session_expires_at: expires_at,
        },
    )?;
    Ok(SessionGrant { username: username.to_string(), session_secret: session, expires_at })
}

/// Log in with backoff: after [`BACKOFF_AFTER_FAILURES`] consecutive failures the user is locked
/// for 1, 2, 4 ... [`MAX_BACKOFF_S`] seconds; attempts while locked are refused without checking
/// the password. Unknown users cost a hash too (no user enumeration by timing).
pub fn login(db: &Db, username: &str, password: &str, now: u64, session_ttl_s: u64) -> Result<SessionGrant> {
    let Some(user) = sql::login_row(db, username)? else {
        let _ = verify_password(password, dummy_phc());
        return Err(HostError::BadCredentials);
    };
    if user.locked_until > now {
        return Err(HostError::LoginBackoff(user.locked_until - now));
    }
    if !verify_password(password, &user.password_hash) {
        let fails = user.failed_logins + 1;
        let locked = if fails >= BACKOFF_AFTER_FAILURES {
            let exp = (fails - BACKOFF_AFTER_FAILURES).min(16) as u32;
            now + (1u64 << exp).min(MAX_BACKOFF_S)
        } else {
            0
        };
        sql::record_login_failure(db, user.id, fails, locked)?;
        return Err(HostError::BadCredentials);
    }
    let session = creds::new_session_secret();
    let expires_at = now + session_ttl_s;
    sql::start_session(db, user.id, &creds::hash_secret(&session), now, expires_at)?;
    Ok(SessionGrant { username: username.to_string(), session_secret: session, expires_at })
}

// An argon2id hash of a random string, so an unknown username costs the same as a wrong password.
fn dummy_phc() -> &'static str {
    static PHC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PHC.get_or_init(|| hash_password(&creds::random_id()).unwrap_or_default())
}

/// Look up a session cookie value.
pub fn session(db: &Db, secret: &str, now: u64) -> Result<Option<Session>> {
    sql::session(db, &creds::hash_secret(secret), now)
}

/// Delete a session.
pub fn logout(db: &Db, secret: &str) -> Result<()> {
    sql::delete_session(db, &creds::hash_secret(secret))
}

/// Create a local key; returns its record and the secret (shown once).
pub fn create_key(db: &Db, name: &str, scopes: &[String], expires_in_s: Option<u64>, now: u64) -> Result<(KeyInfo, String)> {
    if name.trim().is_empty() || name.chars().count() > 64 {
        return Err(HostError::InvalidParameter("key name must be 1 to 64 characters".into()));
    }
    let mut scopes: Vec<String> = if scopes.is_empty() { vec![SCOPE_INFERENCE.to_string()] } else { scopes.to_vec() };
    scopes.sort();
    scopes.dedup();
    if let Some(bad) = scopes.iter().find(|s| !LOCAL_SCOPES.contains(&s.as_str())) {
        return Err(HostError::InvalidParameter(format!("unknown scope {bad:?}; use \"inference\" and/or \"metrics\"")));
    }
    if expires_in_s == Some(0) {
        return Err(HostError::InvalidParameter("expires_in_s must be positive".into()));
    }
    let secret = creds::new_local_key();
    let info = KeyInfo {
        id: format!("key_{}", creds::random_id()),
        name: name.to_string(),
        prefix: creds::display_prefix(&secret),
        scopes,
        created_at: now,
        last_used_at: None,
        expires_at: expires_in_s.map(|s| now + s),
        revoked_at: None,
    };
    sql::insert_key(db, &info, &creds::hash_secret(&secret))?;
    Ok((info, secret))
}

/// All local keys, newest first.
pub fn list_keys(db: &Db) -> Result<Vec<KeyInfo>> {
    sql::list_keys(db)
}

/// Revoke a key (idempotent for an already revoked key). 404 if unknown.
pub fn revoke_key(db: &Db, id: &str, now: u64) -> Result<()> {
    sql::revoke_key(db, id, now)
}

/// Authenticate a bearer `b3iq_local_` key and check its scope. Returns the key.
pub fn authenticate_key(db: &Db, secret: &str, scope: &'static str, now: u64) -> Result<KeyInfo> {
    if creds::check_local_key_format(secret).is_err() {
        return Err(HostError::InvalidApiKey);
    }
    let info = sql::key_by_hash(db, &creds::hash_secret(secret))?.ok_or(HostError::InvalidApiKey)?;
    if info.revoked_at.is_some() {
        return Err(HostError::RevokedApiKey);
    }
    if info.expires_at.is_some_and(|e| e <= now) {
        return Err(HostError::ExpiredApiKey);
    }
    if !info.scopes.iter().any(|s| s == scope) {
        return Err(HostError::InsufficientScope(scope));
    }
    // last_used_at at minute resolution, so hot keys do not write on every request.
    if info.last_used_at.is_none_or(|t| now >= t + 60) {
        sql::touch_key(db, &info.id, now)?;
    }
    Ok(info)
}

/// Create a support grant valid for `ttl_s` seconds (60 s to 7 days).
pub fn create_grant(db: &Db, ttl_s: u64, note: &str, now: u64) -> Result<(Grant, String)> {
    if !(60..=7 * 24 * 3600).contains(&ttl_s) {
        return Err(HostError::InvalidParameter("ttl_s must be between 60 and 604800 seconds".into()));
    }
    if note.chars().count() > 200 {
        return Err(HostError::InvalidParameter("note must be at most 200 characters".into()));
    }
    let secret = creds::new_support_key();
    let g = Grant {
        id: format!("sg_{}", creds::random_id()),
        prefix: creds::display_prefix(&secret),
        note: note.to_string(),
        scopes: vec![SCOPE_DIAGNOSTICS.to_string()],
        created_at: now,
        expires_at: now + ttl_s,
        revoked_at: None,
    };
    sql::insert_grant(db, &g, &creds::hash_secret(&secret))?;
    Ok((g, secret))
}

/// All support grants, newest first.
pub fn list_grants(db: &Db) -> Result<Vec<Grant>> {
    sql::list_grants(db)
}

/// Revoke a grant. 404 if unknown.
pub fn revoke_grant(db: &Db, id: &str, now: u64) -> Result<()> {
    sql::revoke_grant(db, id, now)
}

/// Authenticate a `b3iq_support_` bearer secret.
pub fn authenticate_grant(db: &Db, secret: &str, now: u64) -> Result<Grant> {
    if creds::check_support_key_format(secret).is_err() {
        return Err(HostError::InvalidApiKey);
    }
    let g = sql::grant_by_hash(db, &creds::hash_secret(secret))?.ok_or(HostError::InvalidApiKey)?;
    if g.revoked_at.is_some() {
        return Err(HostError::RevokedApiKey);
    }
    if g.expires_at <= now {
        return Err(HostError::ExpiredApiKey);
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Db {
        Db::open_in_memory().unwrap()
    }

    #[test]
    fn setup_token_is_single_use() {
        let db = db();
        let (tok, _) = issue_setup_token(&db, 1000, 3600).unwrap();
        let g = claim(&db, &tok, "owner", "correct horse battery", 1001, 600).unwrap();
        assert_eq!(g.username, "owner");
        assert!(session(&db, &g.session_secret, 1002).unwrap().is_some());
        // second use: already claimed (the token is gone and an owner exists)
        let e = claim(&db, &tok, "other", "correct horse battery", 1003, 600).unwrap_err();
        assert!(matches!(e, HostError::AlreadyClaimed), "{e:?}");
        assert_eq!(db.count("setup_tokens").unwrap(), 0);
    }

    #[test]
    fn setup_token_expires_and_wrong_token_is_refused() {
        let db = db();
        let (tok, exp) = issue_setup_token(&db, 1000, 60).unwrap();
        assert_eq!(exp, 1060);
        let e = claim(&db, &tok, "owner", "correct horse battery", 1060, 600).unwrap_err();
        assert!(matches!(e, HostError::SetupTokenExpired), "{e:?}");
        let other = creds::new_setup_token();
        let e = claim(&db, &other, "owner", "correct horse battery", 1001, 600).unwrap_err();
        assert!(matches!(e, HostError::SetupTokenInvalid), "{e:?}");
        let e = claim(&db, "garbage", "owner", "correct horse battery", 1001, 600).unwrap_err();
        assert!(matches!(e, HostError::SetupTokenInvalid), "{e:?}");
        // still unclaimed, the token still works before expiry
        assert!(!is_claimed(&db).unwrap());
        claim(&db, &tok, "owner", "correct horse battery", 1059, 600).unwrap();
    }

    #[test]
    fn passwords_are_argon2id_and_login_backs_off() {
        let db = db();
        let (tok, _) = issue_setup_token(&db, 0, 3600).unwrap();
        claim(&db, &tok, "owner", "correct horse battery", 1, 600).unwrap();
        let phc: String = sql::owner_password_hash(&db).unwrap().unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        for _ in 0..2 {
            assert!(matches!(login(&db, "owner", "wrong password!", 10, 600), Err(HostError::BadCredentials)));
        }
        // third failure sets a 1 s lock
        assert!(matches!(login(&db, "owner", "wrong password!", 10, 600), Err(HostError::BadCredentials)));
        // even the right password is refused while locked
        assert!(matches!(login(&db, "owner", "correct horse battery", 10, 600), Err(HostError::LoginBackoff(1))));
        // 4th failure after the lock: 2 s
        assert!(matches!(login(&db, "owner", "wrong password!", 11, 600), Err(HostError::BadCredentials)));
        assert!(matches!(login(&db, "owner", "correct horse battery", 12, 600), Err(HostError::LoginBackoff(1))));
        let g = login(&db, "owner", "correct horse battery", 13, 600).unwrap();
        assert_eq!(g.expires_at, 613);
        assert!(matches!(login(&db, "nobody", "correct horse battery", 13, 600), Err(HostError::BadCredentials)));
        logout(&db, &g.session_secret).unwrap();
        assert!(session(&db, &g.session_secret, 14).unwrap().is_none());
    }

    #[test]
    fn keys_are_hashed_scoped_revocable_and_expiring() {
        let db = db();
        let (info, secret) = create_key(&db, "laptop", &[], None, 100).unwrap();
        assert_eq!(info.scopes, vec!["inference"]);
        let stored: String = db.lock().query_row("SELECT key_hash FROM api_keys", [], |r| r.get(0)).unwrap();
        assert_ne!(stored, secret);
        assert!(!stored.contains(&secret[12..]));
        assert_eq!(authenticate_key(&db, &secret, SCOPE_INFERENCE, 101).unwrap().id, info.id);
        assert!(matches!(authenticate_key(&db, &secret, SCOPE_METRICS, 101), Err(HostError::InsufficientScope(_))));
        let mut bad = secret.clone();
        bad.pop();
        bad.push(if secret.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(authenticate_key(&db, &bad, SCOPE_INFERENCE, 101), Err(HostError::InvalidApiKey)));
        revoke_key(&db, &info.id, 102).unwrap();
        assert!(matches!(authenticate_key(&db, &secret, SCOPE_INFERENCE, 103), Err(HostError::RevokedApiKey)));
        assert!(matches!(revoke_key(&db, "key_nope", 1), Err(HostError::NotFound(_))));
        let (_, s2) = create_key(&db, "short", &["metrics".into()], Some(10), 100).unwrap();
        assert!(authenticate_key(&db, &s2, SCOPE_METRICS, 109).is_ok());
        assert!(matches!(authenticate_key(&db, &s2, SCOPE_METRICS, 110), Err(HostError::ExpiredApiKey)));
        assert!(create_key(&db, "x", &["admin".into()], None, 1).is_err());
    }

    #[test]
    fn grants_expire_and_revoke() {
        let db = db();
        assert!(create_grant(&db, 10, "", 0).is_err());
        let (g, s) = create_grant(&db, 60, "ticket", 0).unwrap();
        assert_eq!(g.scopes, vec!["diagnostics"]);
        assert!(authenticate_grant(&db, &s, 59).is_ok());
        assert!(matches!(authenticate_grant(&db, &s, 60), Err(HostError::ExpiredApiKey)));
        revoke_grant(&db, &g.id, 1).unwrap();
        assert!(matches!(authenticate_grant(&db, &s, 2), Err(HostError::RevokedApiKey)));
        // a local key is not a grant
        let (_, local) = create_key(&db, "k", &[], None, 0).unwrap();
        assert!(authenticate_grant(&db, &local, 2).is_err());
    }
}
