//! The home directory (`B3IQ_HOME`, default `~/.b3iq`): layout, config.json and crash-safe writes.
//!
//! ```text
//! $B3IQ_HOME/
//!   config.json       settings (no secrets)
//!   identity.key      the node's Ed25519 secret key, hex, mode 0600
//!   owner.key         the owner's job-issuer secret key (created at claim), hex, mode 0600
//!   receipt-salt.key  the secret receipt commitment salts are derived from, hex, mode 0600
//!   setup-token       the one-time setup token while the node is unclaimed, mode 0600
//!   tls/              the self-signed TLS certificate and key, when `tls` is `self-signed`
//!   state.db          SQLite (WAL): users, sessions, keys, usage, receipts, audit, jobs, ...
//!   models/           the model store
//!   logs/             daemon logs
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{HostError, Result};

/// Default TCP port of the local API.
pub const DEFAULT_PORT: u16 = 7420;
/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";

/// The settings in `config.json`. Contains no secrets; every field has a default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    /// Format version of this file.
    pub version: u32,
    /// Address the API listens on when `--listen` is not given.
    pub listen: String,
    /// Extra host names accepted in the `Host` header (LAN names, or a name the node advertises
    /// such as `b3iq.local`), besides the loopback names `localhost`, `127.0.0.1` and `[::1]`.
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`scheme://host[:port]`, or `*` for any) granted CORS on the bearer-key
    /// routes (`/v1/...`) besides the loopback origins (`http(s)://localhost`, `127.0.0.1`,
    /// `[::1]`, any port), as Ollama's `OLLAMA_ORIGINS`. Cookie routes never grant CORS.
    pub cors_origins: Vec<String>,
    /// Model profile id or GGUF path to load when `--model` is not given.
    pub model: Option<String>,
    /// Seconds a new setup token stays valid.
    pub setup_token_ttl_s: u64,
    /// Seconds an owner session stays valid.
    pub session_ttl_s: u64,
    /// Parallel sequences the runtime decodes together (continuous batching).
    pub parallel: u32,
    /// Requests allowed to wait in the queue before 429.
    pub max_queue: u32,
    /// CPU threads for the runtime (0: the runtime decides).
    pub threads: u32,
    /// Context length per sequence (tokens).
    pub context_tokens: u32,
    /// The runtime's prompt (prefix) cache: a decode slot keeps the KV cells of the request it
    /// served and a request that starts with the same tokens (the history of a chat) reads only
    /// the rest. On by default; `false` reads every prompt whole (llama.cpp backend).
    pub prompt_cache: bool,
    /// One KV buffer shared by the parallel sequences (llama.cpp's `--kv-unified`) instead of
    /// one per sequence (the default, which keeps each sequence's numbers independent of its
    /// batch neighbours). llama.cpp backend only.
    pub kv_unified: bool,
    /// Total KV cells of the shared buffer (llama-server's `--ctx-size` with `--parallel` and
    /// `--kv-unified`); needs `kv_unified` and at least `context_tokens`. Absent: `parallel` ×
    /// `context_tokens` (room for every sequence's whole context). Fewer cells overcommit the
    /// cache: when the sequences together need more, the runtime shrinks batches and then ends
    /// the longest sequence with a 503 `kv_cache_full` (docs/runtime.md).
    pub kv_cells: Option<u32>,
    /// Most models loaded at once (3 by default, as Ollama's `OLLAMA_MAX_LOADED_MODELS` on a
    /// CPU). A request for an installed model that is not loaded loads it, unloading the least
    /// recently used idle model when this or `model_memory_mb` is reached.
    pub max_loaded_models: u32,
    /// Memory budget of the loaded models in MiB (weights plus KV cache, estimated from each
    /// GGUF header); 0 (default): half of the machine's RAM.
    pub model_memory_mb: u64,
    /// The inference backend: `auto` (default: b3iq-runtime's `choose_backend`, wgpu for an
    /// AMD, Intel or Apple GPU when llama.cpp is built for the CPU only, else llama.cpp),
    /// `llama_cpp`, or `wgpu` (the WGSL fallback; LLaMA GGUF models with Q4_1/Q8_0/F16/F32
    /// tensors).
    pub backend: String,
    /// Price per 1,000 tokens (prompt and completion alike) in micro-credits, written into the
    /// receipts of local requests through b3iq-core's `PriceSchedule` (its rounding: up to the
    /// next micro-credit). 0 (free) by default.
    pub price_micros_per_1k_tokens: u64,
    /// Seconds a connection may take to send a whole request head; also the longest idle
    /// keep-alive. 10 by default.
    pub header_timeout_s: u64,
    /// Seconds a request body may take to arrive in full (then 408). 30 by default.
    pub body_timeout_s: u64,
    /// Most connections served at once (more wait in the accept backlog). 256 by default.
    pub max_connections: u32,
    /// Seconds shutdown waits for in-flight requests before closing what is left. 10 by default.
    pub shutdown_grace_s: u64,
    /// Seconds a session cookie's secret is used before the next request gets a fresh one (the
    /// old one stays valid for [`crate::owner::auth::SESSION_ROTATE_GRACE_S`] more, for requests
    /// already in flight). 900 by default; the session's end (`session_ttl_s`) does not move.
    pub session_rotate_s: u64,
    /// TLS for the API: `off` (default), `self-signed` (made at first start under
    /// `$B3IQ_HOME/tls/`) or `provided` (`tls_cert` + `tls_key`). See `context::tls`.
    pub tls: String,
    /// PEM certificate chain for `tls: provided` (leaf first); a relative path is under the home.
    pub tls_cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `tls: provided`; a relative path is under the
    /// home.
    pub tls_key: Option<String>,
    /// PEM certificate(s) trusted for the release repository's TLS instead of the web roots
    /// (a control plane's self-signed certificate); a relative path is under the home. Used
    /// when `update/ca.pem` (saved by `b3iqd update check --ca-file`) is absent.
    pub update_ca_file: Option<String>,
    /// Serve verifiable work (llama.cpp backend): the runtime keeps hidden-state fingerprints
    /// and a network request's receipt names a signed inference attestation the gateway can
    /// have checked (`docs/verification.md`, "In the network"). `null` (default): on when the
    /// node is enrolled in a control plane when the runtime starts; `true`/`false` force it.
    /// Costs the lm_head on every prompt token while on.
    pub fingerprints: Option<bool>,
}

impl Config {
    /// Refuse values the node cannot run with (a zero timeout or connection bound).
    ///
    /// # Errors
    /// `Config` naming the key.
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.backend.as_str(), "auto" | "llama_cpp" | "wgpu") {
            return Err(HostError::Config(format!(
                "config.json: backend {:?} is not one of auto, llama_cpp, wgpu",
                self.backend
            )));
        }
        if let Some(cells) = self.kv_cells {
            if !self.kv_unified {
                return Err(HostError::Config(format!(
                    "config.json: kv_cells ({cells}) sizes the shared KV buffer and needs \"kv_unified\": true (or remove kv_cells)"
                )));
            }
            if cells < self.context_tokens {
                return Err(HostError::Config(format!(
                    "config.json: kv_cells ({cells}) must be at least context_tokens ({}): one sequence may fill its whole context",
                    self.context_tokens
                )));
            }
        }
        for (key, v) in [
            ("header_timeout_s", self.header_timeout_s),
            ("body_timeout_s", self.body_timeout_s),
            ("max_connections", u64::from(self.max_connections)),
            ("shutdown_grace_s", self.shutdown_grace_s),
            ("session_rotate_s", self.session_rotate_s),
            ("max_loaded_models", u64::from(self.max_loaded_models)),
        ] {
            if v == 0 {
                return Err(HostError::Config(format!(
                    "config.json: {key} must be at least 1 (0 would refuse every request)"
                )));
            }
        }
        match crate::context::tls::TlsMode::parse(&self.tls) {
            Err(HostError::Config(m)) => {
                return Err(HostError::Config(format!("config.json: {m}")))
            }
            Err(e) => return Err(e),
            Ok(crate::context::tls::TlsMode::Provided)
                if self.tls_cert.is_none() || self.tls_key.is_none() =>
            {
                return Err(HostError::Config(
                    crate::context::tls::PROVIDED_NEEDS_FILES.into(),
                ));
            }
            Ok(crate::context::tls::TlsMode::Provided) => {}
            Ok(_) if self.tls_cert.is_some() || self.tls_key.is_some() => {
                return Err(HostError::Config(format!(
                    "config.json: tls_cert and tls_key are served only with tls \"provided\", not {:?} (set tls to \"provided\" or remove them)",
                    self.tls
                )));
            }
            Ok(_) => {}
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: 1,
            listen: DEFAULT_LISTEN.to_string(),
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            model: None,
            setup_token_ttl_s: 24 * 3600,
            session_ttl_s: 7 * 24 * 3600,
            parallel: 4,
            max_queue: 64,
            threads: 0,
            context_tokens: 2048,
            prompt_cache: true,
            kv_unified: false,
            kv_cells: None,
            max_loaded_models: 3,
            model_memory_mb: 0,
            backend: "auto".into(),
            price_micros_per_1k_tokens: 0,
            header_timeout_s: 10,
            body_timeout_s: 30,
            max_connections: 256,
            shutdown_grace_s: 10,
            session_rotate_s: 900,
            tls: "off".into(),
            tls_cert: None,
            tls_key: None,
            update_ca_file: None,
            fingerprints: None,
        }
    }
}

/// A home directory on disk.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The home named by `B3IQ_HOME`, else `~/.b3iq`.
    pub fn from_env() -> Result<Home> {
        if let Some(p) = std::env::var_os("B3IQ_HOME").filter(|p| !p.is_empty()) {
            return Ok(Home::at(PathBuf::from(p)));
        }
        let home = std::env::var_os("HOME")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                HostError::Config("neither B3IQ_HOME nor HOME is set; set B3IQ_HOME".into())
            })?;
        Ok(Home::at(PathBuf::from(home).join(".b3iq")))
    }

    /// A home at an explicit path (not created yet).
    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// Create the directory tree (mode 0700) if absent.
    pub fn ensure(&self) -> Result<()> {
        for d in [self.root.clone(), self.models_dir(), self.logs_dir()] {
            fs::create_dir_all(&d).map_err(|e| HostError::home("create home directory", e))?;
        }
        set_mode(&self.root, 0o700)?;
        Ok(())
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.json")
    }
    /// `identity.key`.
    pub fn identity_path(&self) -> PathBuf {
        self.root.join("identity.key")
    }
    /// `owner.key`.
    pub fn owner_key_path(&self) -> PathBuf {
        self.root.join("owner.key")
    }
    /// `receipt-salt.key`.
    pub fn receipt_salt_path(&self) -> PathBuf {
        self.root.join("receipt-salt.key")
    }
    /// `setup-token`.
    pub fn setup_token_path(&self) -> PathBuf {
        self.root.join("setup-token")
    }
    /// `state.db`.
    pub fn db_path(&self) -> PathBuf {
        self.root.join("state.db")
    }
    /// `models/`.
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }
    /// `logs/`.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Read `config.json`, writing the defaults first if it does not exist.
    pub fn load_or_init_config(&self) -> Result<Config> {
        let path = self.config_path();
        match fs::read(&path) {
            Ok(bytes) => {
                let cfg: Config = serde_json::from_slice(&bytes).map_err(|e| {
                    HostError::Config(format!(
                        "config.json is not valid ({e}); fix it or delete it to get the defaults"
                    ))
                })?;
                cfg.validate()?;
                Ok(cfg)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let cfg = Config::default();
                self.save_config(&cfg)?;
                Ok(cfg)
            }
            Err(e) => Err(HostError::home("read config.json", e)),
        }
    }

    /// Write `config.json` crash-safely.
    pub fn save_config(&self, cfg: &Config) -> Result<()> {
        let mut bytes =
            serde_json::to_vec_pretty(cfg).map_err(|e| HostError::Internal(e.to_string()))?;
        bytes.push(b'\n');
        write_atomic(&self.config_path(), &bytes, 0o644)
    }
}

/// Write a file crash-safely: write a temp file in the same directory, fsync it, rename it over the
/// target, then fsync the directory. `mode` is applied to the temp file before any byte is written,
/// so a secret is never readable by others even for a moment.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| HostError::Internal("write_atomic: path has no parent".into()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let what = format!("write {name}");
    {
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        let mut f = opts
            .open(&tmp)
            .map_err(|e| HostError::home(what.clone(), e))?;
        set_mode(&tmp, mode)?;
        f.write_all(bytes)
            .map_err(|e| HostError::home(what.clone(), e))?;
        f.sync_all().map_err(|e| HostError::home(what.clone(), e))?;
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        HostError::home(what.clone(), e)
    })?;
    if let Ok(d) = File::open(dir) {
        d.sync_all().map_err(|e| HostError::home(what, e))?;
    }
    Ok(())
}

/// Remove a file if present, then fsync the directory.
pub fn remove_durably(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(HostError::home("remove file", e)),
    }
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| HostError::home("set permissions", e))?;
    }
    let _ = (path, mode);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // no temp file left behind
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn kv_cells_needs_a_unified_buffer_that_holds_one_context() {
        let parse = |s: &str| serde_json::from_str::<Config>(s).unwrap().validate();
        let e = parse(r#"{"kv_cells": 4096}"#).unwrap_err().to_string();
        assert!(e.contains("kv_cells") && e.contains("kv_unified"), "{e}");
        let e = parse(r#"{"kv_unified": true, "kv_cells": 1000, "context_tokens": 2048}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least context_tokens (2048)"), "{e}");
        parse(r#"{"kv_unified": true, "kv_cells": 2048, "context_tokens": 2048}"#).unwrap();
        parse(r#"{"kv_unified": true}"#).unwrap();
    }

    #[test]
    fn config_defaults_roundtrip_and_bad_config_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h"));
        home.ensure().unwrap();
        let cfg = home.load_or_init_config().unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.listen, "127.0.0.1:7420");
        fs::write(home.config_path(), b"{not json").unwrap();
        let err = home.load_or_init_config().unwrap_err();
        assert!(
            err.to_string().contains("config.json is not valid"),
            "{err}"
        );
        // A zero connection limit is refused by name, not coerced.
        fs::write(home.config_path(), br#"{"body_timeout_s": 0}"#).unwrap();
        let err = home.load_or_init_config().unwrap_err();
        assert!(
            err.to_string()
                .contains("body_timeout_s must be at least 1"),
            "{err}"
        );
    }
}
