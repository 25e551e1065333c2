//! Owner operations: claim, sign-in, local API keys, support grants, the setup token and the
//! owner's job-issuer trust root. One implementation used by every front door (HTTP, the
//! embedding API `LocalNode` and the `b3iqd` CLI); each operation writes its own audit event, so
//! no caller can forget one. [`Via`] says which front door asked (it lands in the audit detail).
//!
//! Blocking (argon2id and SQLite): call from `spawn_blocking` on async paths.

pub mod auth;

use b3iq_core::job::IssuerClass;

use crate::context::home::{remove_durably, write_atomic};
use crate::context::{key, Context};
use crate::error::{HostError, Result};
use crate::store::jobs::{put_trust_root, TrustRoot};

pub use auth::{Grant, KeyInfo, Session, SessionGrant};

/// Which front door asked for an owner operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The local HTTP API (the wizard).
    Http,
    /// The `b3iqd` command line.
    Cli,
    /// An embedding application (`LocalNode`, the bindings).
    Embedding,
}

impl Via {
    /// As written in audit details.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Http => "http",
            Via::Cli => "cli",
            Via::Embedding => "embedding API",
        }
    }
}

/// The setup token to show at start, for an unclaimed node: the pending one if it is still
/// valid, else a new one (written to `setup-token`, mode 0600). `None` once claimed. The flag is
/// true when the token was issued now (so the caller may show it once).
///
/// # Errors
/// `Db`, `Home`.
pub fn setup_token_at_start(ctx: &Context) -> Result<Option<(String, bool)>> {
    if ctx.claimed()? {
        return Ok(None);
    }
    let now = ctx.now();
    let existing = std::fs::read_to_string(ctx.home.setup_token_path())
        .ok()
        .map(|s| s.trim().to_string());
    if let Some(t) = existing {
        if auth::setup_token_valid(&ctx.db, &t, now)? {
            return Ok(Some((t, false)));
        }
    }
    let (t, _) = issue_setup_token(ctx, ctx.config.setup_token_ttl_s)?;
    ctx.db
        .audit(now, "system", "setup.token", "", "ok", "setup token issued");
    Ok(Some((t, true)))
}

fn issue_setup_token(ctx: &Context, ttl_s: u64) -> Result<(String, u64)> {
    let (t, exp) = auth::issue_setup_token(&ctx.db, ctx.now(), ttl_s)?;
    write_atomic(
        &ctx.home.setup_token_path(),
        format!("{t}\n").as_bytes(),
        0o600,
    )?;
    Ok((t, exp))
}

/// `b3iqd setup --reset`: a new setup token (written to `setup-token`, 0600), valid for `ttl_s`
/// (default `config.json`'s). Refused once the node has an owner: recovery of a claimed node is
/// by sign-in.
///
/// # Errors
/// `AlreadyClaimed`; `Db`, `Home`.
pub fn reset_setup(ctx: &Context, ttl_s: Option<u64>, via: Via) -> Result<(String, u64)> {
    if ctx.claimed()? {
        return Err(HostError::AlreadyClaimed);
    }
    let (t, exp) = issue_setup_token(ctx, ttl_s.unwrap_or(ctx.config.setup_token_ttl_s))?;
    ctx.db.audit(
        ctx.now(),
        "owner",
        "setup.reset",
        "",
        "ok",
        &format!("new setup token issued ({})", via.as_str()),
    );
    Ok((t, exp))
}

/// Claim the node with `token`: check and consume it, create the owner and a session, remove
/// the setup-token file, create the owner's job-issuer key and persist it as a trust root.
///
/// # Errors
/// `SetupTokenInvalid`, `SetupTokenExpired`, `AlreadyClaimed`, `InvalidUsername`,
/// `WeakPassword`; `Db`, `Home`. A refusal is audited too.
pub fn claim(
    ctx: &Context,
    token: &str,
    username: &str,
    password: &str,
    via: Via,
) -> Result<SessionGrant> {
    let now = ctx.now();
    let g = match auth::claim(
        &ctx.db,
        &ctx.hash_slots,
        token,
        username,
        password,
        now,
        ctx.config.session_ttl_s,
    ) {
        Ok(g) => g,
        Err(e) => {
            ctx.refusals
                .record(&ctx.db, now, "setup", "node.claim", "", e.code());
            return Err(e);
        }
    };
    remove_durably(&ctx.home.setup_token_path())?;
    ensure_owner_trust_root(ctx)?;
    ctx.db.audit(
        now,
        "setup",
        "node.claim",
        &g.username,
        "ok",
        &format!(
            "owner account created; setup token consumed ({})",
            via.as_str()
        ),
    );
    Ok(g)
}

/// Claim with the pending token in `setup-token` (the embedding API's claim).
///
/// # Errors
/// `SetupTokenInvalid` when there is no pending token; otherwise as [`claim`].
pub fn claim_with_pending_token(
    ctx: &Context,
    username: &str,
    password: &str,
    via: Via,
) -> Result<SessionGrant> {
    let token = std::fs::read_to_string(ctx.home.setup_token_path())
        .map_err(|_| HostError::SetupTokenInvalid)?
        .trim()
        .to_string();
    claim(ctx, &token, username, password, via)
}

/// The owner's job-issuer key (created if absent) persisted as an owner-local trust root. Run at
/// claim, and at start for a node claimed before trust roots were persisted.
///
/// # Errors
/// `Home`, `Config`, `Db`.
pub fn ensure_owner_trust_root(ctx: &Context) -> Result<()> {
    finish_interrupted_rotation(ctx)?;
    let issuer = key::load_or_create_owner_issuer(&ctx.home)?;
    put_trust_root(
        &ctx.db,
        &TrustRoot {
            key: issuer.public(),
            class: IssuerClass::OwnerLocal,
            added_at: ctx.now(),
            label: "owner".into(),
        },
    )
}

fn staged_owner_key(ctx: &Context) -> std::path::PathBuf {
    ctx.home.owner_key_path().with_extension("key.new")
}

/// A rotation stopped between its steps (a crash): if the database already trusts the staged
/// key, it becomes `owner.key`; otherwise it is dropped and the old key stays.
fn finish_interrupted_rotation(ctx: &Context) -> Result<()> {
    let staged = staged_owner_key(ctx);
    let Ok(bytes) = std::fs::read(&staged) else {
        return Ok(());
    };
    let trusted = match b3iq_core::identity::NodeKey::from_key_file(&bytes) {
        Ok(k) => crate::store::jobs::trust_roots(&ctx.db)?
            .iter()
            .any(|r| r.key == k.public()),
        Err(_) => false,
    };
    if trusted {
        write_atomic(&ctx.home.owner_key_path(), &bytes, 0o600)?;
    }
    remove_durably(&staged)
}

/// Rotate the owner's job-issuer key (`b3iqd keys rotate-owner`): a new `owner.key` becomes the
/// owner-local trust root in place of the old one, so jobs signed with the old key are refused
/// from then on. Crash-safe: the new key is staged, the database switches roots in one
/// transaction, then the staged key replaces `owner.key`; a start after a crash finishes or drops
/// the rotation. Audited with both keys' public halves. Returns the new public key (hex).
///
/// # Errors
/// `NotClaimed` before the node has an owner key; `Home`, `Config`, `Db`.
pub fn rotate_owner_issuer(ctx: &Context, via: Via) -> Result<String> {
    finish_interrupted_rotation(ctx)?;
    let old = key::owner_issuer(&ctx.home)?.ok_or(HostError::NotClaimed)?;
    let new = b3iq_core::identity::NodeKey::generate(&mut rand::rngs::OsRng);
    let staged = staged_owner_key(ctx);
    write_atomic(&staged, &new.to_key_file(), 0o600)?;
    let root = TrustRoot {
        key: new.public(),
        class: IssuerClass::OwnerLocal,
        added_at: ctx.now(),
        label: "owner".into(),
    };
    crate::store::jobs::replace_trust_root(&ctx.db, &old.public(), &root)?;
    write_atomic(&ctx.home.owner_key_path(), &new.to_key_file(), 0o600)?;
    remove_durably(&staged)?;
    let detail = format!(
        "old {} -> new {} ({})",
        old.public().to_hex(),
        new.public().to_hex(),
        via.as_str()
    );
    ctx.db.audit(
        ctx.now(),
        "owner",
        "owner.rotate_issuer",
        "owner.key",
        "ok",
        &detail,
    );
    Ok(new.public().to_hex())
}

/// Sign in; `source` names who is trying (the client's IP address over HTTP, `cli` or
/// `embedding` otherwise): failed attempts lock out that source only. Audited as
/// `session.login`; a refusal records neither the typed user name nor the password, only
/// whether the name was the owner's.
///
/// # Errors
/// `NotClaimed`, `BadCredentials`, `LoginBackoff`, `SignInBusy`; `Db`.
pub fn login(
    ctx: &Context,
    source: &str,
    username: &str,
    password: &str,
    via: Via,
) -> Result<SessionGrant> {
    if !ctx.claimed()? {
        return Err(HostError::NotClaimed);
    }
    let now = ctx.now();
    match auth::login(
        &ctx.db,
        &ctx.hash_slots,
        source,
        username,
        password,
        now,
        ctx.config.session_ttl_s,
    ) {
        Ok(g) => {
            ctx.db.audit(
                now,
                "owner",
                "session.login",
                &g.username,
                "ok",
                via.as_str(),
            );
            Ok(g)
        }
        Err(e) => {
            let known = crate::store::auth::login_row(&ctx.db, username)?.is_some();
            let target = if known { "owner" } else { "unknown user" };
            ctx.refusals
                .record(&ctx.db, now, "anonymous", "session.login", target, e.code());
            Err(e)
        }
    }
}

/// A one-minute owner session for a command run on the machine that talks to the running
/// daemon (see [`auth::machine_session`]). Audited as `session.machine`; end it with
/// [`logout`].
///
/// # Errors
/// `NotClaimed`; `Db`.
pub fn machine_session(ctx: &Context, via: Via) -> Result<SessionGrant> {
    let now = ctx.now();
    let g = auth::machine_session(&ctx.db, now, MACHINE_SESSION_TTL_S)?;
    ctx.db
        .audit(now, "owner", "session.machine", &g.username, "ok", via.as_str());
    Ok(g)
}

/// How long a [`machine_session`] lasts, 60 s: one command's calls.
pub const MACHINE_SESSION_TTL_S: u64 = 60;

/// The on-machine recovery for a lost password or a locked-out owner (`b3iqd owner
/// reset-password`): a new password, every session ended, every sign-in lock cleared. Audited.
///
/// # Errors
/// `WeakPassword`, `NotClaimed`; `Db`.
pub fn reset_password(ctx: &Context, password: &str, via: Via) -> Result<String> {
    let username = auth::reset_password(&ctx.db, &ctx.hash_slots, password)?;
    ctx.db.audit(
        ctx.now(),
        "owner",
        "owner.reset_password",
        &username,
        "ok",
        &format!("sessions ended, sign-in locks cleared ({})", via.as_str()),
    );
    Ok(username)
}

/// End a session.
///
/// # Errors
/// `Db`.
pub fn logout(ctx: &Context, session_secret: &str, username: &str) -> Result<()> {
    auth::logout(&ctx.db, session_secret)?;
    ctx.db
        .audit(ctx.now(), "owner", "session.logout", username, "ok", "");
    Ok(())
}

/// Sign out everywhere: end every owner session (this one too). Audited.
///
/// # Errors
/// `Db`.
pub fn logout_all(ctx: &Context, username: &str, via: Via) -> Result<usize> {
    let n = auth::logout_all(&ctx.db)?;
    ctx.db.audit(
        ctx.now(),
        "owner",
        "session.logout_all",
        username,
        "ok",
        &format!("{n} sessions ended ({})", via.as_str()),
    );
    Ok(n)
}

/// Create a local API key; returns its record and the secret (show it once; it is not stored).
///
/// # Errors
/// `InvalidParameter` for a bad name, scope or expiry; `Db`.
pub fn create_key(
    ctx: &Context,
    name: &str,
    scopes: &[String],
    expires_in_s: Option<u64>,
    via: Via,
) -> Result<(KeyInfo, String)> {
    let now = ctx.now();
    let (k, s) = auth::create_key(&ctx.db, name, scopes, expires_in_s, now)?;
    ctx.db.audit(
        now,
        "owner",
        "key.create",
        &k.id,
        "ok",
        &format!("scopes={} ({})", k.scopes.join(","), via.as_str()),
    );
    Ok((k, s))
}

/// Every local key, newest first (never the secrets).
///
/// # Errors
/// `Db`.
pub fn list_keys(ctx: &Context) -> Result<Vec<KeyInfo>> {
    auth::list_keys(&ctx.db)
}

/// Revoke a local key.
///
/// # Errors
/// `NotFound`; `Db`.
pub fn revoke_key(ctx: &Context, id: &str, via: Via) -> Result<()> {
    let now = ctx.now();
    auth::revoke_key(&ctx.db, id, now)?;
    ctx.db
        .audit(now, "owner", "key.revoke", id, "ok", via.as_str());
    Ok(())
}

/// Create a support grant (diagnostics only) valid for `ttl_s` seconds; returns it and its
/// secret (shown once).
///
/// # Errors
/// `InvalidParameter` for a ttl outside 60 s to 7 days or a long note; `Db`.
pub fn create_grant(ctx: &Context, ttl_s: u64, note: &str, via: Via) -> Result<(Grant, String)> {
    let now = ctx.now();
    let (g, secret) = auth::create_grant(&ctx.db, ttl_s, note, now)?;
    ctx.db.audit(
        now,
        "owner",
        "support.grant",
        &g.id,
        "ok",
        &format!("expires_at={} ({})", g.expires_at, via.as_str()),
    );
    Ok((g, secret))
}

/// Every support grant, newest first.
///
/// # Errors
/// `Db`.
pub fn list_grants(ctx: &Context) -> Result<Vec<Grant>> {
    auth::list_grants(&ctx.db)
}

/// Revoke a support grant.
///
/// # Errors
/// `NotFound`; `Db`.
pub fn revoke_grant(ctx: &Context, id: &str, via: Via) -> Result<()> {
    let now = ctx.now();
    auth::revoke_grant(&ctx.db, id, now)?;
    ctx.db
        .audit(now, "owner", "support.revoke", id, "ok", via.as_str());
    Ok(())
}
