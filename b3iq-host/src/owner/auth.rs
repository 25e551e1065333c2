//! Credential rules: owner accounts (argon2id), login backoff, sessions, setup tokens, API keys
//! and support grants. Secrets are stored only as hashes (see [`crate::creds`]); the SQL is in
//! [`crate::store::auth`]. These functions write no audit events: the owner operations in
//! [`crate::owner`] call them and record each decision.

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::Argon2;

use crate::creds::{self, HashSlots};
use crate::error::{HostError, Result};
use crate::store::auth as sql;
use crate::store::Db;

pub use crate::store::auth::{
    is_claimed, setup_token_expiry, Grant, KeyInfo, Session, SCOPE_DIAGNOSTICS,
};

/// Consecutive failures (per source) before backoff starts.
pub const BACKOFF_AFTER_FAILURES: i64 = 3;
/// Longest login backoff, seconds.
pub const MAX_BACKOFF_S: u64 = 300;
/// Longest lifetime of anything the owner issues with an expiry (keys, setup tokens): 10 years.
/// Bounding it keeps every `now + lifetime` far from overflow.
pub const MAX_TTL_S: u64 = 10 * 365 * 24 * 3600;

/// Seconds of lock after `failures` consecutive failures: none below
/// [`BACKOFF_AFTER_FAILURES`], then 1, 2, 4 ... up to [`MAX_BACKOFF_S`].
pub fn backoff_s(failures: i64) -> u64 {
    if failures < BACKOFF_AFTER_FAILURES {
        return 0;
    }
    let exp = (failures - BACKOFF_AFTER_FAILURES).min(16) as u32;
    (1u64 << exp).min(MAX_BACKOFF_S)
}

/// Scope for the `/v1/*` routes.
pub const SCOPE_INFERENCE: &str = "inference";
/// Scope for `/metrics`.
pub const SCOPE_METRICS: &str = "metrics";
/// Scopes a local key may carry.
pub const LOCAL_SCOPES: &[&str] = &[SCOPE_INFERENCE, SCOPE_METRICS];

thread_local! {
    /// This thread's argon2 working memory (19 MiB with the default parameters), allocated on the
    /// first hash and reused: hashes run on the few [`HashSlots`] threads, so the node holds at
    /// most that many buffers however many sign-ins arrive (allocating per hash, the allocator
    /// keeps freed 19 MiB blocks in per-thread arenas and the process grows with every burst).
    static ARGON2_MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// argon2 over `password` and `salt` into `out`, in this thread's reused working memory.
fn argon2_into(
    a: &Argon2<'_>,
    params: &argon2::Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    ARGON2_MEMORY.with(|m| {
        let mut m = m.borrow_mut();
        let n = params.block_count();
        if m.len() < n {
            m.resize(n, argon2::Block::default());
        }
        a.hash_password_into_with_memory(password, salt, out, &mut m[..n])
    })
}

/// Hash a password with argon2id, default parameters (RFC 9106's second recommended option:
/// m = 19 MiB, t = 2, p = 1) and a random 16-byte salt; returns the PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`). Run it through [`HashSlots::run`].
pub fn hash_password(password: &str) -> Result<String> {
    let internal = |e: &dyn std::fmt::Display| HostError::Internal(format!("argon2: {e}"));
    let mut raw = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    let salt = SaltString::encode_b64(&raw).map_err(|e| internal(&e))?;
    let params = argon2::Params::default();
    let a = Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params.clone(),
    );
    let out_len = params
        .output_len()
        .unwrap_or(argon2::Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(out_len, |out| {
        argon2_into(&a, &params, password.as_bytes(), &raw, out).map_err(Into::into)
    })
    .map_err(|e| internal(&e))?;
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(argon2::Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| internal(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Check a password against a PHC string (argon2id, argon2i or argon2d, any parameters); a
/// string that does not parse is a mismatch. The comparison is constant-time (`Output`'s `==`).
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let (Ok(params), Ok(alg)) = (
        argon2::Params::try_from(&h),
        argon2::Algorithm::try_from(h.algorithm),
    ) else {
        return false;
    };
    let Ok(version) = h
        .version
        .map(argon2::Version::try_from)
        .unwrap_or(Ok(argon2::Version::V0x13))
    else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let a = Argon2::new(alg, version, params.clone());
    Output::init_with(expected.len(), |out| {
        argon2_into(&a, &params, password.as_bytes(), salt, out).map_err(Into::into)
    })
    .is_ok_and(|out| out == expected)
}

/// Validate a new username and password.
pub fn validate_new_account(username: &str, password: &str) -> Result<()> {
    let ok_name = !username.is_empty()
        && username.len() <= 64
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok_name {
        return Err(HostError::InvalidUsername);
    }
    validate_password(password)
}

/// A new password must be 10 to 1024 characters (`WeakPassword` otherwise).
pub fn validate_password(password: &str) -> Result<()> {
    if !(10..=1024).contains(&password.chars().count()) {
        return Err(HostError::WeakPassword);
    }
    Ok(())
}

/// Replace any setup token with a new one; returns the secret (to print once and write to the
/// setup-token file) and its expiry.
pub fn issue_setup_token(db: &Db, now: u64, ttl_s: u64) -> Result<(String, u64)> {
    let token = creds::new_setup_token();
    let expires = now
        .checked_add(ttl_s)
        .filter(|_| ttl_s <= MAX_TTL_S)
        .ok_or_else(|| {
            HostError::InvalidParameter(format!(
                "the setup token lifetime must be at most {MAX_TTL_S} s (10 years), got {ttl_s}"
            ))
        })?;
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
/// transaction. Cheap checks run first (token format, owner exists, token known and unexpired, name
/// and password rules), so a refused claim never hashes a password; the hash (argon2, slow) runs
/// in a slot of `slots` ([`HashSlots`]) before the transaction, which checks the token and the owner again.
///
/// # Errors
/// `SetupTokenInvalid`, `SetupTokenExpired`, `AlreadyClaimed`, `InvalidUsername`, `WeakPassword`,
/// `SignInBusy`; `Db`.
pub fn claim(
    db: &Db,
    slots: &HashSlots,
    token: &str,
    username: &str,
    password: &str,
    now: u64,
    session_ttl_s: u64,
) -> Result<SessionGrant> {
    if creds::check_setup_token_format(token).is_err() {
        return Err(HostError::SetupTokenInvalid);
    }
    if is_claimed(db)? {
        return Err(HostError::AlreadyClaimed);
    }
    match sql::setup_token_expires_at(db, &creds::hash_secret(token))? {
        None => return Err(HostError::SetupTokenInvalid),
        Some(e) if e <= now => return Err(HostError::SetupTokenExpired),
        Some(_) => {}
    }
    validate_new_account(username, password)?;
    let pw = password.to_string();
    let phc = slots.run(move || hash_password(&pw))??;
    let session = creds::new_session_secret();
    let expires_at = now.saturating_add(session_ttl_s);
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
    Ok(SessionGrant {
        username: username.to_string(),
        session_secret: session,
        expires_at,
    })
}

/// Log in with backoff per `source` (the client's address, or the front door for the CLI and
/// the embedding API): each attempt is first counted against its source in one transaction
/// ([`sql::reserve_login_attempt`]); after [`BACKOFF_AFTER_FAILURES`] consecutive failures the
/// source is locked for [`backoff_s`] seconds and its attempts are refused (`LoginBackoff`) without
/// a hash, however many arrive at once. Only then is a slot of `slots` ([`HashSlots`]) taken (`SignInBusy` when all
/// are busy) and the password checked. Unknown users cost a hash too (no user enumeration by
/// timing). Another source's failures never lock this one out.
///
/// # Errors
/// `BadCredentials`, `LoginBackoff`, `SignInBusy`; `Db`.
pub fn login(
    db: &Db,
    slots: &HashSlots,
    source: &str,
    username: &str,
    password: &str,
    now: u64,
    session_ttl_s: u64,
) -> Result<SessionGrant> {
    if let Err(wait) = sql::reserve_login_attempt(db, source, now, backoff_s)? {
        return Err(HostError::LoginBackoff(wait));
    }
    let user = sql::login_row(db, username)?;
    let (pw, phc) = (
        password.to_string(),
        user.as_ref().map(|u| u.password_hash.clone()),
    );
    let ok = slots.run(move || match phc {
        Some(phc) => verify_password(&pw, &phc),
        None => {
            let _ = verify_password(&pw, dummy_phc());
            false
        }
    })?;
    let Some(user) = user.filter(|_| ok) else {
        return Err(HostError::BadCredentials);
    };
    sql::clear_login_failures(db, source)?;
    let session = creds::new_session_secret();
    let expires_at = now.saturating_add(session_ttl_s);
    sql::start_session(db, user.id, &creds::hash_secret(&session), now, expires_at)?;
    Ok(SessionGrant {
        username: username.to_string(),
        session_secret: session,
        expires_at,
    })
}

/// A short owner session for a command run on the machine (`b3iqd model load` and other commands
/// that talk to the running daemon): whoever can open the home directory is at the machine, as
/// for [`reset_password`], so no password is asked. Ends at `now + ttl_s`.
///
/// # Errors
/// `NotClaimed` without an owner; `Db`.
pub fn machine_session(db: &Db, now: u64, ttl_s: u64) -> Result<SessionGrant> {
    let (user_id, username) = sql::owner_row(db)?.ok_or(HostError::NotClaimed)?;
    let session = creds::new_session_secret();
    let expires_at = now.saturating_add(ttl_s);
    sql::start_session(db, user_id, &creds::hash_secret(&session), now, expires_at)?;
    Ok(SessionGrant {
        username,
        session_secret: session,
        expires_at,
    })
}

/// Set a new owner password (the on-machine recovery `b3iqd owner reset-password`): ends every
/// session and clears every sign-in lock. Returns the owner's name.
///
/// # Errors
/// `WeakPassword`, `NotClaimed`, `SignInBusy`; `Db`.
pub fn reset_password(db: &Db, slots: &HashSlots, password: &str) -> Result<String> {
    validate_password(password)?;
    let pw = password.to_string();
    let phc = slots.run(move || hash_password(&pw))??;
    sql::reset_owner_password(db, &phc)
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

/// How long a replaced session secret keeps working, 60 s: requests the browser sent before it
/// saw the new cookie (parallel fetches, a second tab) still succeed.
pub const SESSION_ROTATE_GRACE_S: u64 = 60;

/// A fresh secret for a session cookie that is due for rotation.
#[derive(Debug, Clone)]
pub struct RotatedSession {
    /// The new cookie value (a secret).
    pub secret: String,
    /// When the session ends (the same as before rotation).
    pub expires_at: u64,
}

/// Rotate the session whose cookie is `secret` when its secret is `rotate_after_s` old or more:
/// a new secret for the same session (same end), the old one valid for
/// [`SESSION_ROTATE_GRACE_S`] more. `None` when nothing was rotated (no such live session, not
/// due yet, or a concurrent request already rotated it).
///
/// # Errors
/// `Db`.
pub fn rotate_session(
    db: &Db,
    secret: &str,
    now: u64,
    rotate_after_s: u64,
) -> Result<Option<RotatedSession>> {
    let fresh = creds::new_session_secret();
    match sql::rotate_session(
        db,
        &creds::hash_secret(secret),
        &creds::hash_secret(&fresh),
        now,
        rotate_after_s,
        SESSION_ROTATE_GRACE_S,
    )? {
        sql::Rotation::Rotated { session_expires_at } => Ok(Some(RotatedSession {
            secret: fresh,
            expires_at: session_expires_at,
        })),
        sql::Rotation::NoSession | sql::Rotation::Kept => Ok(None),
    }
}

/// Delete a session (with the secrets it rotated from or to).
pub fn logout(db: &Db, secret: &str) -> Result<()> {
    sql::delete_session(db, &creds::hash_secret(secret))
}

/// End every session (sign out everywhere); returns how many ended.
pub fn logout_all(db: &Db) -> Result<usize> {
    sql::delete_all_sessions(db)
}

/// Create a local key; returns its record and the secret (shown once).
pub fn create_key(
    db: &Db,
    name: &str,
    scopes: &[String],
    expires_in_s: Option<u64>,
    now: u64,
) -> Result<(KeyInfo, String)> {
    if name.trim().is_empty() || name.chars().count() > 64 {
        return Err(HostError::InvalidParameter(
            "key name must be 1 to 64 characters".into(),
        ));
    }
    let mut scopes: Vec<String> = if scopes.is_empty() {
        vec![SCOPE_INFERENCE.to_string()]
    } else {
        scopes.to_vec()
    };
    scopes.sort();
    scopes.dedup();
    if let Some(bad) = scopes.iter().find(|s| !LOCAL_SCOPES.contains(&s.as_str())) {
        return Err(HostError::InvalidParameter(format!(
            "unknown scope {bad:?}; use \"inference\" and/or \"metrics\""
        )));
    }
    let expires_at = match expires_in_s {
        None => None,
        Some(s) if (1..=MAX_TTL_S).contains(&s) => Some(
            now.checked_add(s)
                .ok_or_else(|| HostError::Internal("clock beyond u64".into()))?,
        ),
        Some(s) => {
            return Err(HostError::InvalidParameter(format!(
                "expires_in_s must be between 1 and {MAX_TTL_S} seconds (10 years), got {s}"
            )));
        }
    };
    let secret = creds::new_local_key();
    let info = KeyInfo {
        id: format!("key_{}", creds::random_id()),
        name: name.to_string(),
        prefix: creds::display_prefix(&secret),
        scopes,
        created_at: now,
        last_used_at: None,
        expires_at,
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
    let info =
        sql::key_by_hash(db, &creds::hash_secret(secret))?.ok_or(HostError::InvalidApiKey)?;
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
        return Err(HostError::InvalidParameter(
            "ttl_s must be between 60 and 604800 seconds".into(),
        ));
    }
    if note.chars().count() > 200 {
        return Err(HostError::InvalidParameter(
            "note must be at most 200 characters".into(),
        ));
    }
    let secret = creds::new_support_key();
    let g = Grant {
        id: format!("sg_{}", creds::random_id()),
        prefix: creds::display_prefix(&secret),
        note: note.to_string(),
        scopes: vec![SCOPE_DIAGNOSTICS.to_string()],
        created_at: now,
        expires_at: now.saturating_add(ttl_s),
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

    fn slots() -> HashSlots {
        HashSlots::new(2)
    }

    #[test]
    fn password_hashes_interoperate_with_the_argon2_crates_own_phc_strings() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // Stored before this change (the crate's PasswordHasher) -> verified here.
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let theirs = Argon2::default()
            .hash_password(b"correct horse battery", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("correct horse battery", &theirs));
        assert!(!verify_password("correct horse batterx", &theirs));
        // Made here -> verified by the crate, and here.
        let ours = hash_password("correct horse battery").unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        assert!(Argon2::default()
            .verify_password(b"correct horse battery", &PasswordHash::new(&ours).unwrap())
            .is_ok());
        assert!(verify_password("correct horse battery", &ours));
        assert!(!verify_password("wrong", &ours));
        assert!(!verify_password("x", "not a phc string"));
        // Other parameters (as stored by another build) still verify: the buffer grows.
        let small = Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8192, 1, 1, None).unwrap(),
        );
        let other = small
            .hash_password(b"pw pw pw pw", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("pw pw pw pw", &other));
    }

    #[test]
    fn setup_token_is_single_use() {
        let db = db();
        let (tok, _) = issue_setup_token(&db, 1000, 3600).unwrap();
        let g = claim(
            &db,
            &slots(),
            &tok,
            "owner",
            "correct horse battery",
            1001,
            600,
        )
        .unwrap();
        assert_eq!(g.username, "owner");
        assert!(session(&db, &g.session_secret, 1002).unwrap().is_some());
        // second use: already claimed (the token is gone and an owner exists)
        let e = claim(
            &db,
            &slots(),
            &tok,
            "other",
            "correct horse battery",
            1003,
            600,
        )
        .unwrap_err();
        assert!(matches!(e, HostError::AlreadyClaimed), "{e:?}");
        assert_eq!(db.count("setup_tokens").unwrap(), 0);
    }

    #[test]
    fn setup_token_expires_and_wrong_token_is_refused() {
        let db = db();
        let (tok, exp) = issue_setup_token(&db, 1000, 60).unwrap();
        assert_eq!(exp, 1060);
        let e = claim(
            &db,
            &slots(),
            &tok,
            "owner",
            "correct horse battery",
            1060,
            600,
        )
        .unwrap_err();
        assert!(matches!(e, HostError::SetupTokenExpired), "{e:?}");
        let other = creds::new_setup_token();
        let e = claim(
            &db,
            &slots(),
            &other,
            "owner",
            "correct horse battery",
            1001,
            600,
        )
        .unwrap_err();
        assert!(matches!(e, HostError::SetupTokenInvalid), "{e:?}");
        let e = claim(
            &db,
            &slots(),
            "garbage",
            "owner",
            "correct horse battery",
            1001,
            600,
        )
        .unwrap_err();
        assert!(matches!(e, HostError::SetupTokenInvalid), "{e:?}");
        // still unclaimed, the token still works before expiry
        assert!(!is_claimed(&db).unwrap());
        claim(
            &db,
            &slots(),
            &tok,
            "owner",
            "correct horse battery",
            1059,
            600,
        )
        .unwrap();
    }

    #[test]
    fn passwords_are_argon2id_and_login_backs_off() {
        let db = db();
        let (tok, _) = issue_setup_token(&db, 0, 3600).unwrap();
        claim(
            &db,
            &slots(),
            &tok,
            "owner",
            "correct horse battery",
            1,
            600,
        )
        .unwrap();
        let phc: String = sql::owner_password_hash(&db).unwrap().unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        for _ in 0..2 {
            assert!(matches!(
                login(&db, &slots(), "test", "owner", "wrong password!", 10, 600),
                Err(HostError::BadCredentials)
            ));
        }
        // third failure sets a 1 s lock
        assert!(matches!(
            login(&db, &slots(), "test", "owner", "wrong password!", 10, 600),
            Err(HostError::BadCredentials)
        ));
        // even the right password is refused while locked
        assert!(matches!(
            login(
                &db,
                &slots(),
                "test",
                "owner",
                "correct horse battery",
                10,
                600
            ),
            Err(HostError::LoginBackoff(1))
        ));
        // 4th failure after the lock: 2 s
        assert!(matches!(
            login(&db, &slots(), "test", "owner", "wrong password!", 11, 600),
            Err(HostError::BadCredentials)
        ));
        assert!(matches!(
            login(
                &db,
                &slots(),
                "test",
                "owner",
                "correct horse battery",
                12,
                600
            ),
            Err(HostError::LoginBackoff(1))
        ));
        let g = login(
            &db,
            &slots(),
            "test",
            "owner",
            "correct horse battery",
            13,
            600,
        )
        .unwrap();
        assert_eq!(g.expires_at, 613);
        assert!(matches!(
            login(
                &db,
                &slots(),
                "test",
                "nobody",
                "correct horse battery",
                13,
                600
            ),
            Err(HostError::BadCredentials)
        ));
        logout(&db, &g.session_secret).unwrap();
        assert!(session(&db, &g.session_secret, 14).unwrap().is_none());
    }

    #[test]
    fn a_locked_source_does_not_lock_the_owner_out_elsewhere() {
        let db = db();
        let (tok, _) = issue_setup_token(&db, 0, 3600).unwrap();
        claim(
            &db,
            &slots(),
            &tok,
            "owner",
            "correct horse battery",
            1,
            600,
        )
        .unwrap();
        for _ in 0..3 {
            assert!(matches!(
                login(
                    &db,
                    &slots(),
                    "10.0.0.9",
                    "owner",
                    "guess guess guess",
                    10,
                    600
                ),
                Err(HostError::BadCredentials)
            ));
        }
        assert!(matches!(
            login(
                &db,
                &slots(),
                "10.0.0.9",
                "owner",
                "correct horse battery",
                10,
                600
            ),
            Err(HostError::LoginBackoff(1))
        ));
        // The owner on loopback is not affected by the stranger's lock.
        assert!(login(
            &db,
            &slots(),
            "127.0.0.1",
            "owner",
            "correct horse battery",
            10,
            600
        )
        .is_ok());
        // Unknown user names count against their source as well.
        for _ in 0..3 {
            assert!(matches!(
                login(&db, &slots(), "10.0.0.7", "root", "hunter2hunter2", 20, 600),
                Err(HostError::BadCredentials)
            ));
        }
        assert!(matches!(
            login(&db, &slots(), "10.0.0.7", "root", "hunter2hunter2", 20, 600),
            Err(HostError::LoginBackoff(1))
        ));
    }

    #[test]
    fn parallel_guesses_are_bounded_by_the_backoff_before_any_hash() {
        let db = std::sync::Arc::new(db());
        let (tok, _) = issue_setup_token(&db, 0, 3600).unwrap();
        claim(
            &db,
            &slots(),
            &tok,
            "owner",
            "correct horse battery",
            1,
            600,
        )
        .unwrap();
        let slots = std::sync::Arc::new(HashSlots::new(64));
        let handles: Vec<_> = (0..24)
            .map(|_| {
                let (db, slots) = (db.clone(), slots.clone());
                std::thread::spawn(move || {
                    login(&db, &slots, "10.0.0.9", "owner", "wrong password!", 10, 600)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let checked = results
            .iter()
            .filter(|r| matches!(r, Err(HostError::BadCredentials)))
            .count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(HostError::LoginBackoff(_))))
            .count();
        assert_eq!(checked as i64, BACKOFF_AFTER_FAILURES, "{results:?}");
        assert_eq!(checked + refused, 24);
    }

    #[test]
    fn refused_claims_and_locked_sign_ins_never_need_a_hash() {
        let db = db();
        let (tok, _) = issue_setup_token(&db, 0, 3600).unwrap();
        let busy = HashSlots::new(1);
        let held = busy.take().unwrap();
        // A well-formed but unknown token, an expired one: refused while every slot is taken.
        let forged = creds::new_setup_token();
        assert!(matches!(
            claim(
                &db,
                &busy,
                &forged,
                "owner",
                "correct horse battery",
                1,
                600
            ),
            Err(HostError::SetupTokenInvalid)
        ));
        assert!(matches!(
            claim(
                &db,
                &busy,
                &tok,
                "owner",
                "correct horse battery",
                3600,
                600
            ),
            Err(HostError::SetupTokenExpired)
        ));
        // A valid claim needs a slot.
        assert!(matches!(
            claim(&db, &busy, &tok, "owner", "correct horse battery", 1, 600),
            Err(HostError::SignInBusy(1))
        ));
        drop(held);
        claim(&db, &busy, &tok, "owner", "correct horse battery", 1, 600).unwrap();
        let held = busy.take().unwrap();
        // Already claimed, with a forged token: refused without a hash.
        assert!(matches!(
            claim(&db, &busy, &forged, "x", "correct horse battery", 2, 600),
            Err(HostError::AlreadyClaimed)
        ));
        // A locked source is refused without a hash; an unlocked one waits for a slot.
        assert!(matches!(
            login(&db, &busy, "10.0.0.9", "owner", "wrong password!", 5, 600),
            Err(HostError::SignInBusy(1))
        ));
        drop(held);
        for _ in 0..2 {
            let _ = login(&db, &busy, "10.0.0.9", "owner", "wrong password!", 5, 600);
        }
        let _held = busy.take().unwrap();
        assert!(matches!(
            login(&db, &busy, "10.0.0.9", "owner", "wrong password!", 5, 600),
            Err(HostError::LoginBackoff(_))
        ));
        assert_eq!(busy.in_use(), 1);
    }

    #[test]
    fn sessions_rotate_once_keep_their_end_and_sign_out_ends_the_whole_chain() {
        let db = std::sync::Arc::new(db());
        let (tok, _) = issue_setup_token(&db, 0, 3600).unwrap();
        let g = claim(
            &db,
            &slots(),
            &tok,
            "owner",
            "correct horse battery",
            100,
            10_000,
        )
        .unwrap();
        assert_eq!(g.expires_at, 10_100);
        // Not due yet: nothing happens.
        assert!(rotate_session(&db, &g.session_secret, 100 + 899, 900)
            .unwrap()
            .is_none());
        // Due: eight concurrent requests with the old secret; exactly one rotates.
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (db, s) = (db.clone(), g.session_secret.clone());
                std::thread::spawn(move || rotate_session(&db, &s, 1000, 900).unwrap())
            })
            .collect();
        let fresh: Vec<RotatedSession> = handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(fresh.len(), 1, "one rotation, whatever the concurrency");
        let r1 = fresh[0].clone();
        assert_ne!(r1.secret, g.session_secret);
        assert_eq!(
            r1.expires_at, 10_100,
            "rotation does not extend the session"
        );
        // The old secret lives for the grace, then ends; the new one works.
        assert!(
            session(&db, &g.session_secret, 1000 + SESSION_ROTATE_GRACE_S - 1)
                .unwrap()
                .is_some()
        );
        assert!(
            session(&db, &g.session_secret, 1000 + SESSION_ROTATE_GRACE_S)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            session(&db, &r1.secret, 2000).unwrap().unwrap().expires_at,
            10_100
        );
        // Within its grace the old secret reports the session's end, not the grace's.
        let old = session(&db, &g.session_secret, 1001).unwrap().unwrap();
        assert_eq!(
            (old.expires_at, old.grace_expires_at),
            (10_100, Some(1000 + SESSION_ROTATE_GRACE_S))
        );
        assert_eq!(
            session(&db, &r1.secret, 1001)
                .unwrap()
                .unwrap()
                .grace_expires_at,
            None
        );
        // A chain of three: signing out with the newest ends all of them, even within the grace.
        let r2 = rotate_session(&db, &r1.secret, 1950, 900).unwrap().unwrap();
        let r1_in_grace = session(&db, &r1.secret, 1960)
            .unwrap()
            .expect("r1 in its grace");
        assert_eq!(
            (r1_in_grace.expires_at, r1_in_grace.grace_expires_at),
            (10_100, Some(1950 + SESSION_ROTATE_GRACE_S)),
            "the end along a chain of two"
        );
        logout(&db, &r2.secret).unwrap();
        for s in [&g.session_secret, &r1.secret, &r2.secret] {
            assert!(session(&db, s, 1960).unwrap().is_none());
        }
        // An unknown or ended secret rotates nothing.
        assert!(rotate_session(&db, &r2.secret, 3000, 900)
            .unwrap()
            .is_none());
    }

    #[test]
    fn reset_password_ends_sessions_and_clears_locks() {
        let db = db();
        assert!(matches!(
            reset_password(&db, &slots(), "a brand new password"),
            Err(HostError::NotClaimed)
        ));
        let (tok, _) = issue_setup_token(&db, 0, 3600).unwrap();
        let g = claim(
            &db,
            &slots(),
            &tok,
            "owner",
            "correct horse battery",
            1,
            600,
        )
        .unwrap();
        for _ in 0..3 {
            let _ = login(
                &db,
                &slots(),
                "127.0.0.1",
                "owner",
                "wrong password!",
                10,
                600,
            );
        }
        assert!(matches!(
            login(
                &db,
                &slots(),
                "127.0.0.1",
                "owner",
                "correct horse battery",
                10,
                600
            ),
            Err(HostError::LoginBackoff(_))
        ));
        assert!(matches!(
            reset_password(&db, &slots(), "short"),
            Err(HostError::WeakPassword)
        ));
        assert_eq!(
            reset_password(&db, &slots(), "a brand new password").unwrap(),
            "owner"
        );
        assert!(
            session(&db, &g.session_secret, 10).unwrap().is_none(),
            "sessions end"
        );
        assert!(matches!(
            login(
                &db,
                &slots(),
                "127.0.0.1",
                "owner",
                "correct horse battery",
                10,
                600
            ),
            Err(HostError::BadCredentials)
        ));
        assert!(login(
            &db,
            &slots(),
            "127.0.0.1",
            "owner",
            "a brand new password",
            10,
            600
        )
        .is_ok());
    }

    #[test]
    fn keys_are_hashed_scoped_revocable_and_expiring() {
        let db = db();
        let (info, secret) = create_key(&db, "laptop", &[], None, 100).unwrap();
        assert_eq!(info.scopes, vec!["inference"]);
        let stored: String = db
            .lock()
            .query_row("SELECT key_hash FROM api_keys", [], |r| r.get(0))
            .unwrap();
        assert_ne!(stored, secret);
        assert!(!stored.contains(&secret[12..]));
        assert_eq!(
            authenticate_key(&db, &secret, SCOPE_INFERENCE, 101)
                .unwrap()
                .id,
            info.id
        );
        assert!(matches!(
            authenticate_key(&db, &secret, SCOPE_METRICS, 101),
            Err(HostError::InsufficientScope(_))
        ));
        let mut bad = secret.clone();
        bad.pop();
        bad.push(if secret.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(
            authenticate_key(&db, &bad, SCOPE_INFERENCE, 101),
            Err(HostError::InvalidApiKey)
        ));
        revoke_key(&db, &info.id, 102).unwrap();
        assert!(matches!(
            authenticate_key(&db, &secret, SCOPE_INFERENCE, 103),
            Err(HostError::RevokedApiKey)
        ));
        assert!(matches!(
            revoke_key(&db, "key_nope", 1),
            Err(HostError::NotFound(_))
        ));
        let (_, s2) = create_key(&db, "short", &["metrics".into()], Some(10), 100).unwrap();
        assert!(authenticate_key(&db, &s2, SCOPE_METRICS, 109).is_ok());
        assert!(matches!(
            authenticate_key(&db, &s2, SCOPE_METRICS, 110),
            Err(HostError::ExpiredApiKey)
        ));
        assert!(create_key(&db, "x", &["admin".into()], None, 1).is_err());
        // Lifetimes that would overflow or mean nothing are refused with the range.
        for bad in [0, u64::MAX, MAX_TTL_S + 1] {
            let e = create_key(&db, "x", &[], Some(bad), 100).unwrap_err();
            assert!(
                matches!(&e, HostError::InvalidParameter(m) if m.contains("315360000")),
                "{bad}: {e}"
            );
        }
        let (k, _) = create_key(&db, "decade", &[], Some(MAX_TTL_S), 100).unwrap();
        assert_eq!(k.expires_at, Some(100 + MAX_TTL_S));
    }

    #[test]
    fn grants_expire_and_revoke() {
        let db = db();
        assert!(create_grant(&db, 10, "", 0).is_err());
        let (g, s) = create_grant(&db, 60, "ticket", 0).unwrap();
        assert_eq!(g.scopes, vec!["diagnostics"]);
        assert!(authenticate_grant(&db, &s, 59).is_ok());
        assert!(matches!(
            authenticate_grant(&db, &s, 60),
            Err(HostError::ExpiredApiKey)
        ));
        revoke_grant(&db, &g.id, 1).unwrap();
        assert!(matches!(
            authenticate_grant(&db, &s, 2),
            Err(HostError::RevokedApiKey)
        ));
        // a local key is not a grant
        let (_, local) = create_key(&db, "k", &[], None, 0).unwrap();
        assert!(authenticate_grant(&db, &local, 2).is_err());
    }
}
