//! Offline operations on a home directory, for the CLI (`b3iqd keys|receipts|setup|status`).
//! They work whether or not the daemon is running (SQLite WAL allows both) and go through the
//! same owner operations as the HTTP API and the embedding API.

use std::ops::Deref;

use serde_json::{json, Value};

use crate::context::Context;
use crate::error::{HostError, Result};
use crate::inference::receipts::{self, StoredReceipt, VerifyReport};
use crate::owner::{self, KeyInfo, Via};

/// Receipt export format name (`b3iqd receipts export`).
pub const RECEIPTS_EXPORT_FORMAT: &str = "b3iq-receipts/v1";

/// An opened home (config, state.db, identity) without a server. Dereferences to its
/// [`Context`].
#[derive(Debug)]
pub struct Offline(pub Context);

impl Deref for Offline {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.0
    }
}

impl Offline {
    /// Open (creating if needed) the home named by `B3IQ_HOME` / `~/.b3iq` or `dir`.
    ///
    /// # Errors
    /// As [`Context::open`].
    pub fn open(dir: Option<std::path::PathBuf>) -> Result<Offline> {
        Context::open(dir).map(Offline)
    }

    /// As [`Offline::open`], for commands that read or change an existing node: a home with
    /// no node identity is an error instead of a new node (a mistyped `--home` must not make
    /// one silently).
    ///
    /// # Errors
    /// `Config` when the home has no `identity.key`; else as [`Context::open`].
    pub fn open_existing(dir: Option<std::path::PathBuf>) -> Result<Offline> {
        let home = match &dir {
            Some(d) => crate::context::Home::at(d.clone()),
            None => crate::context::Home::from_env()?,
        };
        if !home.identity_path().exists() {
            return Err(HostError::Config(format!(
                "no node at {}: `b3iqd serve` creates one there, or pass --home (or set \
                 B3IQ_HOME) to the node's home",
                home.root().display()
            )));
        }
        Self::open(Some(home.root().to_path_buf()))
    }

    /// `b3iqd status`.
    ///
    /// # Errors
    /// `Db`.
    pub fn status(&self) -> Result<Value> {
        let running = self.running_listen()?;
        Ok(json!({
            "node_id": self.node_id.to_text(),
            "node_code": self.node_code(),
            "claimed": self.claimed()?,
            "mode": self.stored_mode()?.as_str(),
            // The address a running daemon bound (it may differ from config.json's, e.g. with
            // `serve --listen`); the configured one when none runs.
            "listen": running.map(|a| a.to_string()).unwrap_or_else(|| self.config.listen.clone()),
            "running": running.is_some(),
            // The running daemon's TLS (mode and SHA-256 fingerprint to pin); `null` for plain
            // HTTP. When none runs: the configured mode, with the fingerprint of the certificate
            // on disk once there is one (a self-signed node that has started before).
            "tls": match running {
                Some(_) => self.db.meta_get(crate::store::META_TLS_BOUND)?.and_then(|v| serde_json::from_str::<Value>(&v).ok()).unwrap_or(Value::Null),
                None if self.config.tls == "off" => Value::Null,
                None => match crate::context::tls::certificate_on_disk(&self.home, &self.config) {
                    Some(info) => serde_json::to_value(&info).unwrap_or(Value::Null),
                    None => json!({"mode": self.config.tls}),
                },
            },
            // Managed mode: the control plane (id, URL, organisation, enrollment expiry) and the
            // last heartbeat's outcome; `null` in local mode.
            "managed": match crate::managed::enrollment(&self.db)? {
                None => Value::Null,
                Some(e) => json!({
                    "audience": e.audience,
                    "control_url": e.control_url,
                    "org_id": e.org_id,
                    "job_key": e.job_key.to_hex(),
                    "expires_at_ms": e.expires_at_ms,
                    "last_heartbeat": crate::managed::last_heartbeat(&self.db)?,
                }),
            },
            // Network mode: the policy and the tunnel's last state (written by the daemon).
            "network": json!({
                "policy": crate::network::policy(self)?,
                "tunnel": self.db.meta_get(crate::store::META_TUNNEL_STATUS)?.and_then(|s| serde_json::from_str::<Value>(&s).ok()),
            }),
            "home": self.home.root().display().to_string(),
            "keys": owner::list_keys(self)?.iter().filter(|k| k.revoked_at.is_none()).count(),
            "receipts": self.db.count("receipts")?,
            "schema_version": self.db.schema_version()?,
            "integrity_check": self.db.integrity_check()?,
        }))
    }

    /// `b3iqd enroll`: enrolls this node in a control plane (see [`crate::managed::enroll`]). A
    /// running daemon starts sending heartbeats within seconds.
    ///
    /// # Errors
    /// As [`crate::managed::enroll`].
    pub async fn enroll(
        &self,
        control_url: &str,
        token: &str,
        ca_pem: Option<&str>,
    ) -> Result<crate::managed::Enrollment> {
        crate::managed::enroll(&self.db, &self.key, control_url, token, ca_pem).await
    }

    /// `b3iqd unenroll`: back to local mode (see [`crate::managed::unenroll`]).
    ///
    /// # Errors
    /// `Db`.
    pub fn unenroll(&self) -> Result<Option<crate::managed::Enrollment>> {
        crate::managed::unenroll(&self.db)
    }

    /// `b3iqd keys create`: returns the record and the secret (to print once or write to a file).
    ///
    /// # Errors
    /// As [`owner::create_key`].
    pub fn create_key(
        &self,
        name: &str,
        scopes: &[String],
        expires_in_s: Option<u64>,
    ) -> Result<(KeyInfo, String)> {
        owner::create_key(self, name, scopes, expires_in_s, Via::Cli)
    }

    /// `b3iqd keys list`.
    ///
    /// # Errors
    /// `Db`.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        owner::list_keys(self)
    }

    /// `b3iqd keys revoke`.
    ///
    /// # Errors
    /// `NotFound`, `Db`.
    pub fn revoke_key(&self, id: &str) -> Result<()> {
        owner::revoke_key(self, id, Via::Cli)
    }

    /// `b3iqd receipts export`: every receipt with the node's public key.
    ///
    /// # Errors
    /// `Db`.
    pub fn export_receipts(&self) -> Result<Value> {
        let list: Vec<StoredReceipt> = receipts::all(self)?;
        Ok(
            json!({"format": RECEIPTS_EXPORT_FORMAT, "node_id": self.node_id.to_text(), "node_public_key": self.key.public().to_hex(), "receipts": list}),
        )
    }

    /// `b3iqd setup --reset`: a new setup token (see [`owner::reset_setup`]).
    ///
    /// # Errors
    /// `AlreadyClaimed`, `Db`, `Home`.
    pub fn reset_setup(&self, ttl_s: Option<u64>) -> Result<(String, u64)> {
        owner::reset_setup(self, ttl_s, Via::Cli)
    }

    /// `b3iqd keys rotate-owner`: a new owner job-issuer key replaces the old one as trust root
    /// (jobs signed with the old key are refused). Returns the new public key (hex).
    ///
    /// # Errors
    /// As [`owner::rotate_owner_issuer`].
    pub fn rotate_owner_issuer(&self) -> Result<String> {
        owner::rotate_owner_issuer(self, Via::Cli)
    }

    /// `b3iqd owner reset-password`: the on-machine recovery (whoever can open the home directory
    /// is at the machine): a new owner password, every session ended, every sign-in lock cleared.
    /// Returns the owner's name.
    ///
    /// # Errors
    /// `WeakPassword`, `NotClaimed`; `Db`.
    pub fn reset_owner_password(&self, password: &str) -> Result<String> {
        owner::reset_password(self, password, Via::Cli)
    }
}

/// Talking to the running daemon from the machine it runs on (`b3iqd model load|unload|ps`).
impl Offline {
    /// Call the running daemon's owner API as its owner: `method` (an HTTP method, `GET`) `path`
    /// (`/api/...`) with an optional JSON body; returns the JSON answer. The daemon is the one
    /// serving this home (the address it bound, recorded in state.db); over TLS its certificate
    /// is the one trusted. The caller can open the home directory, so it is at the machine: a
    /// one-minute owner session ([`owner::machine_session`], audited) is made for the call and
    /// ended after it.
    ///
    /// # Errors
    /// `Daemon` when no daemon runs for this home, it cannot be reached, or it answers an
    /// error (its message and code); `NotClaimed` before the node has an owner; `Internal` for
    /// a `method` that is not an HTTP method; `Db`.
    pub async fn daemon_call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let Some(addr) = self.running_listen()? else {
            return Err(HostError::Daemon(format!(
                "no b3iqd is serving the node at {}: start it with `b3iqd serve` (or pass --home / set B3IQ_HOME to the home of the one that runs)",
                self.home.root().display()
            )));
        };
        let addr = if addr.ip().is_unspecified() {
            std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
        } else {
            addr
        };
        let tls_mode = self
            .db
            .meta_get(crate::store::META_TLS_BOUND)?
            .and_then(|v| serde_json::from_str::<Value>(&v).ok())
            .and_then(|v| v["mode"].as_str().map(str::to_string));
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(600));
        let scheme = match &tls_mode {
            None => crate::http::Scheme::Http,
            Some(mode) => {
                let mut config = self.config.clone();
                config.tls = mode.clone();
                let info = crate::context::tls::certificate_on_disk(&self.home, &config).ok_or_else(|| {
                    HostError::Daemon(format!("the daemon serves TLS ({mode}) but its certificate is not where config.json says; set tls_cert in config.json"))
                })?;
                let pem = std::fs::read(&info.cert_path).map_err(|e| HostError::home(info.cert_path.display().to_string(), e))?;
                let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| HostError::Daemon(format!("the daemon's certificate {}: {e}", info.cert_path.display())))?;
                builder = builder.tls_built_in_root_certs(false).add_root_certificate(cert);
                crate::http::Scheme::Https
            }
        };
        let client = builder.build().map_err(|e| HostError::Internal(format!("HTTP client: {e}")))?;
        let url = format!("{}://{addr}{path}", scheme.as_str());
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| HostError::Internal(format!("daemon_call: {method:?} is not an HTTP method")))?;
        let grant = owner::machine_session(self, Via::Cli)?;
        let cookie = format!("{}={}", scheme.session_cookie_name(), grant.session_secret);
        let mut req = client
            .request(method.clone(), &url)
            .header(reqwest::header::COOKIE, cookie);
        if let Some(b) = body {
            req = req.json(b);
        }
        let answer = async {
            let resp = req.send().await.map_err(|e| {
                HostError::Daemon(format!("could not reach the daemon at {url}: {e}"))
            })?;
            let status = resp.status();
            let v: Value = resp.json().await.map_err(|e| {
                HostError::Daemon(format!("the daemon's answer to {method} {path} ({status}) is not JSON: {e}"))
            })?;
            if status.is_success() {
                Ok(v)
            } else {
                let e = &v["error"];
                Err(HostError::Daemon(format!(
                    "{} ({}, HTTP {})",
                    e["message"].as_str().unwrap_or("the daemon refused the request"),
                    e["code"].as_str().unwrap_or("error"),
                    status.as_u16()
                )))
            }
        }
        .await;
        owner::logout(self, &grant.session_secret, &grant.username)?;
        answer
    }
}

/// `b3iqd receipts verify FILE`: check an export offline against the public key it names (and,
/// if given, the expected node id). Receipts of every version verify.
///
/// # Errors
/// `InvalidParameter` when the export is malformed or signed by another node than expected.
pub fn verify_export(export: &Value, expected_node: Option<&str>) -> Result<VerifyReport> {
    let pk_hex = export["node_public_key"]
        .as_str()
        .ok_or_else(|| HostError::InvalidParameter("export has no node_public_key".into()))?;
    let pk = b3iq_core::identity::NodePublicKey::from_hex(pk_hex)
        .map_err(|e| HostError::InvalidParameter(format!("node_public_key: {e}")))?;
    if let Some(n) = expected_node {
        if pk.node_id().to_text() != n {
            return Err(HostError::InvalidParameter(format!(
                "the export is signed by {} not {n}",
                pk.node_id().to_text()
            )));
        }
    }
    let items = export["receipts"]
        .as_array()
        .ok_or_else(|| HostError::InvalidParameter("export has no receipts array".into()))?;
    let pairs: Vec<(&str, &str)> = items
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or(""),
                r["signed"].as_str().unwrap_or(""),
            )
        })
        .collect();
    Ok(receipts::verify_all(&pk, pairs))
}
