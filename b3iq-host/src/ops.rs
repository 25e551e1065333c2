//! Offline operations on a home directory, for the CLI (`b3iqd keys|receipts|setup|status`).
//! They work whether or not the daemon is running (SQLite WAL allows both).

use serde_json::{json, Value};

use crate::auth::{self, KeyInfo};
use crate::db::Db;
use crate::error::{HostError, Result};
use crate::home::{write_atomic, Home};
use crate::receipts::{self, StoredReceipt, VerifyReport};
use crate::state::{load_or_create_identity, unix_now};

/// An opened home (config, state.db, identity) without a server.
pub struct Offline {
    /// The home.
    pub home: Home,
    /// state.db.
    pub db: Db,
    /// The node key.
    pub key: b3iq_core::identity::NodeKey,
    /// Settings.
    pub config: crate::home::Config,
}

impl Offline {
    /// Open (creating if needed) the home named by `B3IQ_HOME` / `~/.b3iq` or `dir`.
    pub fn open(dir: Option<std::path::PathBuf>) -> Result<Offline> {
        let home = match dir {
            Some(d) => Home::at(d),
            None => Home::from_env()?,
        };
        home.ensure()?;
        let config = home.load_or_init_config()?;
        let db = Db::open(&home.db_path())?;
        let key = load_or_create_identity(&home)?;
        Ok(Offline { home, db, key, config })
    }

    /// `b3iqd status`.
    pub fn status(&self) -> Result<Value> {
        let claimed = auth::is_claimed(&self.db)?;
        Ok(json!({
            "node_id": self.key.node_id().to_text(),
            "node_code": self.key.node_id().short_code(),
            "claimed": claimed,
            "mode": "local",
            "listen": self.config.listen,
            "home": self.home.root().display().to_string(),
            "keys": auth::list_keys(&self.db)?.iter().filter(|k| k.revoked_at.is_none()).count(),
            "receipts": self.db.count("receipts")?,
            "schema_version": self.db.schema_version()?,
            "integrity_check": self.db.integrity_check()?,
        }))
    }

    /// `b3iqd keys create`: returns the record and the secret (to print once or write to a file).
    pub fn create_key(&self, name: &str, scopes: &[String], expires_in_s: Option<u64>) -> Result<(KeyInfo, String)> {
        let now = unix_now();
        let (k, s) = auth::create_key(&self.db, name, scopes, expires_in_s, now)?;
        self.db.audit(now, "owner", "key.create", &k.id, "ok", "cli");
        Ok((k, s))
    }

    /// `b3iqd keys list`.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        auth::list_keys(&self.db)
    }

    /// `b3iqd keys revoke`.
    pub fn revoke_key(&self, id: &str) -> Result<()> {
        let now = unix_now();
        auth::revoke_key(&self.db, id, now)?;
        self.db.audit(now, "owner", "key.revoke", id, "ok", "cli");
        Ok(())
    }

    /// `b3iqd receipts export`.
    pub fn export_receipts(&self) -> Result<Value> {
        let list: Vec<StoredReceipt> = receipts::all(&self.db, &self.key.public())?;
        Ok(json!({"format": "b3iq-receipts/v1", "node_id": self.key.node_id().to_text(), "node_public_key": self.key.public().to_hex(), "receipts": list}))
    }

    /// `b3iqd setup --reset`: a new setup token (written to the setup-token file, 0600). Refused
    /// once the node has an owner unless `force_unclaim`... which this build does not offer:
    /// recovery of a claimed node is by login.
    pub fn reset_setup(&self, ttl_s: Option<u64>) -> Result<(String, u64)> {
        if auth::is_claimed(&self.db)? {
            return Err(HostError::AlreadyClaimed);
        }
        let now = unix_now();
        let (t, exp) = auth::issue_setup_token(&self.db, now, ttl_s.unwrap_or(self.config.setup_token_ttl_s))?;
        write_atomic(&self.home.setup_token_path(), format!("{t}\n").as_bytes(), 0o600)?;
        self.db.audit(now, "owner", "setup.reset", "", "ok", "new setup token issued from the command line");
        Ok((t, exp))
    }
}

/// `b3iqd receipts verify FILE`: check an export offline against the public key it names (and,
/// if given, the expected node id).
pub fn verify_export(export: &Value, expected_node: Option<&str>) -> Result<VerifyReport> {
    let pk_hex = export["node_public_key"].as_str().ok_or_else(|| HostError::InvalidParameter("export has no node_public_key".into()))?;
    let pk = b3iq_core::identity::NodePublicKey::from_hex(pk_hex).map_err(|e| HostError::InvalidParameter(format!("node_public_key: {e}")))?;
    if let Some(n) = expected_node {
        if pk.node_id().to_text() != n {
            return Err(HostError::InvalidParameter(format!("the export is signed by {} not {n}", pk.node_id().to_text())));
        }
    }
    let items = export["receipts"].as_array().ok_or_else(|| HostError::InvalidParameter("export has no receipts array".into()))?;
    let pairs: Vec<(&str, &str)> = items
        .iter()
        .map(|r| (r["id"].as_str().unwrap_or(""), r["signed"].as_str().unwrap_or("")))
        .collect();
    Ok(receipts::verify_all(&pk, pairs))
}
