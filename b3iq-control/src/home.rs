//! The control plane's home directory (`$B3IQ_CONTROL_HOME`, default `~/.b3iq-control`):
//!
//! | file | what |
//! |---|---|
//! | `control.json` | settings ([`ControlSettings`]); made with defaults on first start |
//! | `job-key` | the first Ed25519 job-signing key (b3iq-core key file, mode 0600); nodes pin its public half |
//! | `job-keys/` | keys made by rotations, `<public key hex>.key` (see [`crate::keys`]) |
//! | `control.db` | the SQLite store (when `store` is `sqlite`) |
//! | `tls/` | the self-signed certificate (`tls` = `self-signed`) |
//! | `attester.key` | with `settlement`: the NodeRegistry attester's secp256k1 key (mode 0600, made on first start; `settlement.attester_key_file`) |
//!
//! A Postgres URL can hold a password, so it is never in `control.json` or argv: it comes from
//! the environment variable `B3IQ_CONTROL_DATABASE_URL` or the file named by `database_url_file`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use b3iq_core::NodeKey;
use b3iq_host::context::home::write_atomic;
use b3iq_host::context::tls::{self, TlsMaterial};
use b3iq_protocol::messages::Audience;
use rand::RngCore;

use crate::error::{ControlError, Result};
use crate::plane::{ControlConfig, ControlPlane};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::ControlStore;

/// Environment variable holding a Postgres URL (`postgres://user:pw@127.0.0.1:5432/b3iq`).
pub const DATABASE_URL_ENV: &str = "B3IQ_CONTROL_DATABASE_URL";

/// `control.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSettings {
    /// This control plane's id (proofs name it). Default: `cp-` + 16 random hex, fixed at first start.
    pub audience: String,
    /// Listen address (default `127.0.0.1:7430`).
    pub listen: String,
    /// `sqlite` (default; `control.db` in the home) or `postgres` (URL from
    /// `B3IQ_CONTROL_DATABASE_URL` or `database_url_file`).
    pub store: String,
    /// File holding the Postgres URL (first line), relative to the home or absolute.
    pub database_url_file: Option<String>,
    /// Postgres pool size (default 8).
    pub pool_size: usize,
    /// `self-signed` (default) or `provided` (`tls_cert`, `tls_key`). There is no plain-HTTP
    /// mode: nodes send signed bodies, but sessions and tokens need TLS.
    pub tls: String,
    /// Names of the self-signed certificate (default `localhost`, `127.0.0.1`, `::1`); add
    /// the name nodes use to reach this control plane.
    pub tls_names: Vec<String>,
    /// PEM certificate chain for `tls` = `provided`.
    pub tls_cert: Option<String>,
    /// PEM key for `tls` = `provided`.
    pub tls_key: Option<String>,
    /// Heartbeat interval told to nodes, seconds (default 30).
    pub heartbeat_interval_s: u64,
    /// Enrollment lifetime before renewal, seconds (default 90 days).
    pub enrollment_ttl_s: u64,
    /// The network's price for prompt tokens, micro-credits per 1,000 (default 100).
    pub network_prompt_price_per_1k: u64,
    /// The network's price for completion tokens, micro-credits per 1,000 (default 200).
    pub network_completion_price_per_1k: u64,
    /// With more than one gateway replica over one Postgres: the URL other replicas reach this
    /// one at (`https://10.0.0.2:7430`), recorded for each tunnel it holds so requests landing
    /// elsewhere are relayed here. The replicas share the home's files (keys, certificate).
    pub gateway_replica_url: Option<String>,
    /// Settlement epochs on chain (see [`crate::settlement`]); absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement: Option<crate::settlement::SettlementSettings>,
    /// Disputes on chain (see [`crate::disputes`]); absent: recorded, never opened on chain.
    /// Needs `settlement`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disputes: Option<crate::disputes::DisputeSettings>,
    /// Verification in the network: sampling rates per trust tier, how long and how much is
    /// held (see [`crate::gateway::verification`]).
    pub verification: crate::gateway::verification::VerificationSettings,
}

impl Default for ControlSettings {
    fn default() -> Self {
        ControlSettings {
            audience: String::new(),
            listen: "127.0.0.1:7430".into(),
            store: "sqlite".into(),
            database_url_file: None,
            pool_size: 8,
            tls: "self-signed".into(),
            tls_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            tls_cert: None,
            tls_key: None,
            heartbeat_interval_s: 30,
            enrollment_ttl_s: 90 * 24 * 3600,
            network_prompt_price_per_1k: 100,
            network_completion_price_per_1k: 200,
            gateway_replica_url: None,
            settlement: None,
            disputes: None,
            verification: Default::default(),
        }
    }
}

/// An opened control-plane home.
#[derive(Debug, Clone)]
pub struct ControlHome {
    root: PathBuf,
}

fn io(what: &str, p: &Path, e: std::io::Error) -> ControlError {
    ControlError::Config(format!("{what} {}: {e}", p.display()))
}

impl ControlHome {
    /// `dir`, else `$B3IQ_CONTROL_HOME`, else `~/.b3iq-control`.
    ///
    /// # Errors
    /// `Config` when no home can be found.
    pub fn locate(dir: Option<PathBuf>) -> Result<ControlHome> {
        let root = match dir.or_else(|| std::env::var_os("B3IQ_CONTROL_HOME").map(PathBuf::from)) {
            Some(d) => d,
            None => PathBuf::from(
                std::env::var_os("HOME")
                    .ok_or_else(|| ControlError::Config("set B3IQ_CONTROL_HOME or HOME".into()))?,
            )
            .join(".b3iq-control"),
        };
        Ok(ControlHome { root })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn ensure(&self) -> Result<()> {
        std::fs::create_dir_all(&self.root).map_err(|e| io("create home", &self.root, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700));
        }
        Ok(())
    }

    /// Loads `control.json`, creating it (with a fresh audience id) on first use.
    ///
    /// # Errors
    /// `Config` for an unreadable or invalid file.
    pub fn settings(&self) -> Result<ControlSettings> {
        self.ensure()?;
        let p = self.root.join("control.json");
        let mut s: ControlSettings = match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| ControlError::Config(format!("{}: {e}", p.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ControlSettings::default(),
            Err(e) => return Err(io("read", &p, e)),
        };
        if s.audience.is_empty() {
            let mut b = [0u8; 8];
            rand::rngs::OsRng.fill_bytes(&mut b);
            s.audience = format!("cp-{}", hex::encode(b));
            let text =
                serde_json::to_vec_pretty(&s).map_err(|e| ControlError::Config(e.to_string()))?;
            write_atomic(&p, &text, 0o600).map_err(|e| ControlError::Config(e.to_string()))?;
        }
        Audience::new(&s.audience)
            .map_err(|e| ControlError::Config(format!("control.json audience: {e}")))?;
        if !matches!(s.store.as_str(), "sqlite" | "postgres") {
            return Err(ControlError::Config(format!(
                "control.json store {:?}: use \"sqlite\" or \"postgres\"",
                s.store
            )));
        }
        if s.heartbeat_interval_s == 0 || s.enrollment_ttl_s == 0 {
            return Err(ControlError::Config(
                "control.json heartbeat_interval_s and enrollment_ttl_s must be above zero".into(),
            ));
        }
        Ok(s)
    }

    /// The job-signing key, created (mode 0600) on first use.
    ///
    /// # Errors
    /// `Config` when the file is unreadable or not a key file.
    pub fn job_key(&self) -> Result<NodeKey> {
        self.key_file("job-key")
    }

    /// The key file `name` in the home, made (mode 0600) on first use.
    fn key_file(&self, name: &str) -> Result<NodeKey> {
        self.ensure()?;
        let p = self.root.join(name);
        match std::fs::read(&p) {
            Ok(b) => NodeKey::from_key_file(&b)
                .map_err(|e| ControlError::Config(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = NodeKey::generate(&mut rand::rngs::OsRng);
                write_atomic(&p, &k.to_key_file(), 0o600)
                    .map_err(|e| ControlError::Config(e.to_string()))?;
                Ok(k)
            }
            Err(e) => Err(io("read", &p, e)),
        }
    }

    /// The gateway's ticket-signing key (`ticket-key`, made with mode 0600 on first use; every
    /// replica needs the same file, as with `job-key`).
    ///
    /// # Errors
    /// `Config` when the file is unreadable or not a key file.
    pub fn ticket_key(&self) -> Result<NodeKey> {
        self.key_file("ticket-key")
    }

    /// The gateway over `cp` with this home's ticket key and price.
    ///
    /// # Errors
    /// As [`ControlHome::ticket_key`]; `Config` for a price that overflows.
    pub fn gateway(
        &self,
        s: &ControlSettings,
        cp: Arc<ControlPlane>,
    ) -> Result<Arc<crate::gateway::Gateway>> {
        let mut cfg = crate::gateway::GatewayConfig::new();
        cfg.price = b3iq_core::metering::PriceSchedule::per_1k(
            s.network_prompt_price_per_1k,
            s.network_completion_price_per_1k,
        )
        .map_err(|e| ControlError::Config(format!("control.json network price: {e}")))?;
        s.verification
            .validate()
            .map_err(|e| ControlError::Config(format!("control.json {e}")))?;
        cfg.verification = s.verification.clone();
        if let Some(url) = &s.gateway_replica_url {
            if !url.starts_with("https://") {
                return Err(ControlError::Config(format!(
                    "control.json gateway_replica_url {url:?}: use https://host:port"
                )));
            }
            cfg.replica_url = Some(url.trim_end_matches('/').to_string());
            let tls = self.tls(s)?;
            cfg.replica_ca_pem = Some(
                std::fs::read_to_string(&tls.info.cert_path)
                    .map_err(|e| io("read", &tls.info.cert_path, e))?,
            );
        }
        if let Some(st) = s.settlement.as_ref().filter(|st| st.require_stake) {
            cfg.stake = Some(crate::gateway::stake::StakeCheck {
                rpc_url: st.rpc_url.clone(),
                deployment: st.deployment,
                cache_for: std::time::Duration::from_secs(st.stake_cache_s.max(1)),
            });
        }
        Ok(crate::gateway::Gateway::new(cp, self.ticket_key()?, cfg))
    }

    /// The settler of `control.json` `settlement`, attached to `cp` (`None` when not
    /// configured).
    ///
    /// # Errors
    /// `Config` for a bad key file or setting; `Chain` when the chain cannot be reached.
    pub async fn settler(&self, s: &ControlSettings, cp: &ControlPlane) -> Result<Option<Arc<crate::settlement::Settler>>> {
        let Some(cfg) = &s.settlement else { return Ok(None) };
        let p = if Path::new(&cfg.settler_key_file).is_relative() { self.root.join(&cfg.settler_key_file) } else { PathBuf::from(&cfg.settler_key_file) };
        let signer = b3iq_chain::key_file::load_key_file(&p).map_err(|e| ControlError::Config(format!("control.json settlement.settler_key_file: {e}")))?;
        let st = Arc::new(crate::settlement::Settler::connect(cp.store().clone(), cfg.clone(), signer, b3iq_host::context::unix_now_ms()).await?);
        cp.set_settler(st.clone());
        Ok(Some(st))
    }

    /// The dispute tool of `control.json` `disputes` (on `settlement`'s chain and deployment),
    /// attached to `cp` (`None` when not configured).
    ///
    /// # Errors
    /// `Config` for a bad key file or setting, or disputes without settlement; `Chain` when the
    /// chain cannot be reached.
    pub async fn dispute_tool(&self, s: &ControlSettings, cp: &ControlPlane) -> Result<Option<Arc<crate::disputes::DisputeTool>>> {
        let Some(cfg) = &s.disputes else { return Ok(None) };
        let Some(st) = &s.settlement else {
            return Err(ControlError::Config("control.json disputes needs settlement (its rpc_url and deployment)".into()));
        };
        let (challenger, verifiers) = crate::disputes::DisputeTool::load_keys(&self.root, cfg)?;
        let t = Arc::new(crate::disputes::DisputeTool::connect(cp.store().clone(), &st.rpc_url, st.deployment, cfg.clone(), challenger, verifiers).await?);
        cp.set_dispute_tool(t.clone());
        Ok(Some(t))
    }

    /// The NodeRegistry attester's key (`settlement.attester_key_file`), made with mode 0600
    /// when absent; `None` without `settlement`.
    ///
    /// # Errors
    /// `Config` for a file that is unreadable or not a key file.
    pub fn attester_key(&self, s: &ControlSettings) -> Result<Option<b3iq_chain::PrivateKeySigner>> {
        let Some(cfg) = &s.settlement else { return Ok(None) };
        self.ensure()?;
        let p = if Path::new(&cfg.attester_key_file).is_relative() { self.root.join(&cfg.attester_key_file) } else { PathBuf::from(&cfg.attester_key_file) };
        let err = |e: b3iq_chain::ChainError| ControlError::Config(format!("control.json settlement.attester_key_file: {e}"));
        if !p.exists() {
            b3iq_chain::key_file::create_key_file(&p).map_err(err)?;
        }
        b3iq_chain::key_file::load_key_file(&p).map(Some).map_err(err)
    }

    /// The NodeRegistry attester of `control.json` `settlement`, attached to `cp`
    /// (`POST /v1/node/registration`, `GET /v1/network/contracts`); `None` when not configured.
    ///
    /// # Errors
    /// As [`ControlHome::attester_key`]; `Chain` when the chain cannot be reached.
    pub async fn registrar(&self, s: &ControlSettings, cp: &ControlPlane) -> Result<Option<Arc<crate::registration::Registrar>>> {
        let (Some(cfg), Some(key)) = (&s.settlement, self.attester_key(s)?) else { return Ok(None) };
        let r = Arc::new(crate::registration::Registrar::connect(&cfg.rpc_url, cfg.deployment, key).await?);
        cp.set_registrar(r.clone());
        Ok(Some(r))
    }

    /// Opens the configured store.
    ///
    /// # Errors
    /// `Config` for a Postgres store without a URL; `Store` when it cannot be opened.
    pub async fn open_store(&self, s: &ControlSettings) -> Result<Arc<dyn ControlStore>> {
        if s.store == "sqlite" {
            return Ok(Arc::new(SqliteStore::open(&self.root.join("control.db"))?));
        }
        let url = match (&s.database_url_file, std::env::var(DATABASE_URL_ENV)) {
            (_, Ok(u)) if !u.is_empty() => u,
            (Some(f), _) => {
                let p = if Path::new(f).is_relative() {
                    self.root.join(f)
                } else {
                    PathBuf::from(f)
                };
                std::fs::read_to_string(&p)
                    .map_err(|e| io("read database_url_file", &p, e))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            }
            _ => {
                return Err(ControlError::Config(format!(
                "store \"postgres\" needs {DATABASE_URL_ENV} or database_url_file in control.json"
            )))
            }
        };
        Ok(Arc::new(PostgresStore::connect(&url, s.pool_size).await?))
    }

    /// The TLS material.
    ///
    /// # Errors
    /// `Config` for an unknown mode, missing or unusable files.
    pub fn tls(&self, s: &ControlSettings) -> Result<TlsMaterial> {
        let cfg = |e: b3iq_host::HostError| ControlError::Config(e.to_string());
        match s.tls.as_str() {
            "self-signed" => tls::self_signed_in(&self.root.join("tls"), &s.tls_names).map_err(cfg),
            "provided" => {
                let (Some(c), Some(k)) = (&s.tls_cert, &s.tls_key) else {
                    return Err(ControlError::Config(
                        "tls \"provided\" needs tls_cert and tls_key in control.json".into(),
                    ));
                };
                let at = |f: &str| {
                    if Path::new(f).is_relative() {
                        self.root.join(f)
                    } else {
                        PathBuf::from(f)
                    }
                };
                tls::load_pem(&at(c), &at(k), "provided").map_err(cfg)
            }
            other => Err(ControlError::Config(format!(
                "control.json tls {other:?}: use \"self-signed\" or \"provided\""
            ))),
        }
    }

    /// Opens everything: settings, job key, store, and the [`ControlPlane`] over them.
    ///
    /// # Errors
    /// As [`ControlHome::settings`], [`ControlHome::job_key`], [`ControlHome::open_store`].
    pub async fn open(&self) -> Result<(ControlSettings, Arc<ControlPlane>)> {
        let s = self.settings()?;
        let key = self.job_key()?;
        let store = self.open_store(&s).await?;
        let mut cfg = ControlConfig::new(Audience::new(&s.audience)?);
        cfg.heartbeat_interval_ms = s.heartbeat_interval_s.saturating_mul(1000);
        cfg.enrollment_ttl_ms = s.enrollment_ttl_s.saturating_mul(1000);
        let first = key.public();
        let ring = crate::keys::JobKeyRing::open(&self.root, key)?;
        Ok((
            s,
            Arc::new(ControlPlane::with_keys(store, cfg, ring, first)),
        ))
    }
}

/// Serve the control plane on `listener` over TLS until `shutdown` fires (the host's connection
/// loop: header and body timeouts, a connection bound, a shutdown deadline).
pub async fn serve(
    listener: tokio::net::TcpListener,
    cp: Arc<ControlPlane>,
    tls: &TlsMaterial,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    serve_with(listener, cp, None, tls, shutdown).await
}

/// As [`serve`], with the gateway's routes (node tunnels, the public `/v1` API) on the same
/// port when `gateway` is given. Tunnels are upgraded connections: they do not count against
/// the connection bound once open.
pub async fn serve_with(listener: tokio::net::TcpListener, cp: Arc<ControlPlane>, gateway: Option<Arc<crate::gateway::Gateway>>, tls: &TlsMaterial, shutdown: tokio::sync::oneshot::Receiver<()>) {
    serve_full(listener, cp, gateway, None, tls, shutdown).await
}

/// As [`serve_with`], also serving the signed release repository in `releases` under
/// `/releases/` and its `/install.sh` (crate::releases, docs/release.md).
pub async fn serve_full(listener: tokio::net::TcpListener, cp: Arc<ControlPlane>, gateway: Option<Arc<crate::gateway::Gateway>>, releases: Option<PathBuf>, tls: &TlsMaterial, shutdown: tokio::sync::oneshot::Receiver<()>) {
    let limits = b3iq_host::http::serve::ServeLimits::default();
    let mut app = crate::http::router(cp.clone()).merge(crate::public::router(cp, gateway.clone()));
    if let Some(gw) = gateway {
        app = app.merge(crate::gateway::router(gw));
    }
    if let Some(dir) = releases {
        app = app.merge(crate::releases::router(dir));
    }
    b3iq_host::http::serve::serve(listener, app, limits, Some(tls.server_config.clone()), shutdown).await
}
