//! Signed model manifests: what a publisher vouches for about a model.
//!
//! Artifact names are plain file names (no directories, no `..`), and digests are
//! [`Sha256Digest`]s, so a model store can build paths from them without traversal.

use crate::codec::{check_identifier, check_text, read_identifier, read_text, Canonical, Reader, Writer};
use crate::digest::Sha256Digest;
use crate::error::{CoreError, Result};
use crate::signed::{Kind, Signed, SignedKind};

/// Maximum model id length.
pub const MAX_MODEL_ID_LEN: u32 = 128;
/// Maximum display name / license / runtime profile length.
pub const MAX_SHORT_TEXT_LEN: u32 = 128;
/// Maximum intended-use text length.
pub const MAX_INTENDED_USE_LEN: u32 = 1024;
/// Maximum artifact file name length.
pub const MAX_ARTIFACT_NAME_LEN: u32 = 128;
/// Maximum number of artifacts in one manifest.
pub const MAX_ARTIFACTS: u32 = 64;

/// One file of a model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestArtifact {
    /// File name: `[A-Za-z0-9._-]`, 1..=128 bytes, not starting with `.`.
    pub name: String,
    /// sha256 of the file.
    pub digest: Sha256Digest,
    /// Exact size in bytes.
    pub size_bytes: u64,
}

/// Memory a model needs, in MiB (the "RAM/VRAM band").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBand {
    /// Minimum system RAM, MiB.
    pub min_ram_mib: u32,
    /// Recommended system RAM, MiB (>= min).
    pub recommended_ram_mib: u32,
    /// Minimum GPU memory for full offload, MiB (0: runs on CPU).
    pub min_vram_mib: u32,
}

/// A model manifest (the signed body).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// Model id (identifier).
    pub model_id: String,
    /// Human name.
    pub display_name: String,
    /// Files (1..=64, unique names).
    pub artifacts: Vec<ManifestArtifact>,
    /// License (SPDX id where there is one), e.g. `Apache-2.0`.
    pub license: String,
    /// Runtime profile id, e.g. `llama.cpp/gguf`.
    pub runtime_profile: String,
    /// Memory band.
    pub memory: MemoryBand,
    /// Context window in tokens.
    pub context_window: u32,
    /// Intended use, free text (no control characters).
    pub intended_use: String,
    /// Creation time, unix ms.
    pub created_at_ms: u64,
}

/// A signed manifest (signed by the publisher's key).
pub type SignedManifest = Signed<ModelManifest>;

/// Checks an artifact file name.
pub fn check_artifact_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_ARTIFACT_NAME_LEN as usize {
        return Err(CoreError::field("artifact name", format!("must be 1..={MAX_ARTIFACT_NAME_LEN} bytes")));
    }
    if name.starts_with('.') || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err(CoreError::field(
            "artifact name",
            "must be a plain file name of letters, digits, `.`, `_`, `-`, not starting with `.`",
        ));
    }
    Ok(())
}

impl ModelManifest {
    /// Total size of all artifacts (overflow-checked).
    pub fn total_size_bytes(&self) -> Result<u64> {
        self.artifacts
            .iter()
            .try_fold(0u64, |acc, a| acc.checked_add(a.size_bytes))
            .ok_or(CoreError::Overflow { what: "manifest total size" })
    }

    /// The artifact with this digest.
    pub fn artifact_by_digest(&self, d: &Sha256Digest) -> Option<&ManifestArtifact> {
        self.artifacts.iter().find(|a| &a.digest == d)
    }

    fn check(&self) -> Result<()> {
        check_identifier("model_id", &self.model_id, MAX_MODEL_ID_LEN as usize)?;
        check_text("display_name", &self.display_name, MAX_SHORT_TEXT_LEN as usize)?;
        check_text("license", &self.license, MAX_SHORT_TEXT_LEN as usize)?;
        check_identifier("runtime_profile", &self.runtime_profile, MAX_SHORT_TEXT_LEN as usize)?;
        check_text("intended_use", &self.intended_use, MAX_INTENDED_USE_LEN as usize)?;
        if self.artifacts.is_empty() {
            return Err(CoreError::field("artifacts", "a manifest lists at least one artifact"));
        }
        let mut names = std::collections::BTreeSet::new();
        for a in &self.artifacts {
            check_artifact_name(&a.name)?;
            if !names.insert(a.name.as_str()) {
                return Err(CoreError::field("artifacts", format!("duplicate artifact name {:?}", a.name)));
            }
        }
        if self.memory.recommended_ram_mib < self.memory.min_ram_mib {
            return Err(CoreError::field("memory", "recommended_ram_mib must be >= min_ram_mib"));
        }
        if self.context_window == 0 {
            return Err(CoreError::field("context_window", "must be positive"));
        }
        self.total_size_bytes()?;
        Ok(())
    }
}

impl Canonical for ModelManifest {
    const NAME: &'static str = "manifest";
    fn encode_to(&self, w: &mut Writer) {
        w.str(&self.model_id);
        w.str(&self.display_name);
        w.list(&self.artifacts, |w, a| {
            w.str(&a.name);
            w.put(&a.digest);
            w.u64(a.size_bytes);
        });
        w.str(&self.license);
        w.str(&self.runtime_profile);
        w.u32(self.memory.min_ram_mib);
        w.u32(self.memory.recommended_ram_mib);
        w.u32(self.memory.min_vram_mib);
        w.u32(self.context_window);
        w.str(&self.intended_use);
        w.u64(self.created_at_ms);
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<Self> {
        let m = Self {
            model_id: read_identifier(r, MAX_MODEL_ID_LEN, "model_id")?,
            display_name: read_text(r, MAX_SHORT_TEXT_LEN, "display_name")?,
            artifacts: r.list(MAX_ARTIFACTS, "artifacts", |r| {
                Ok(ManifestArtifact {
                    name: r.str(MAX_ARTIFACT_NAME_LEN, "artifact name")?,
                    digest: r.get()?,
                    size_bytes: r.u64("size_bytes")?,
                })
            })?,
            license: read_text(r, MAX_SHORT_TEXT_LEN, "license")?,
            runtime_profile: read_identifier(r, MAX_SHORT_TEXT_LEN, "runtime_profile")?,
            memory: MemoryBand {
                min_ram_mib: r.u32("min_ram_mib")?,
                recommended_ram_mib: r.u32("recommended_ram_mib")?,
                min_vram_mib: r.u32("min_vram_mib")?,
            },
            context_window: r.u32("context_window")?,
            intended_use: read_text(r, MAX_INTENDED_USE_LEN, "intended_use")?,
            created_at_ms: r.u64("created_at_ms")?,
        };
        m.check()?;
        Ok(m)
    }
}

impl SignedKind for ModelManifest {
    const KIND: Kind = Kind::Manifest;
    crate::canonical_body!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;

    pub(crate) fn sample() -> ModelManifest {
        ModelManifest {
            model_id: "smollm2-135m-instruct:q4_1".into(),
            display_name: "SmolLM2 135M Instruct (Q4_1)".into(),
            artifacts: vec![ManifestArtifact {
                name: "SmolLM2-135M-Instruct.Q4_1.gguf".into(),
                digest: Sha256Digest::parse("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53").unwrap(),
                size_bytes: 98_362_432,
            }],
            license: "Apache-2.0".into(),
            runtime_profile: "llama.cpp/gguf".into(),
            memory: MemoryBand { min_ram_mib: 256, recommended_ram_mib: 512, min_vram_mib: 0 },
            context_window: 8192,
            intended_use: "Small instruction-following model for tests and demos.".into(),
            created_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn round_trip_and_verify() {
        let k = NodeKey::from_seed([4; 32]);
        let s = k.sign_object(sample()).unwrap();
        let d = SignedManifest::decode(&s.encode()).unwrap();
        d.verify(&k.public()).unwrap();
        assert_eq!(d.body().total_size_bytes().unwrap(), 98_362_432);
    }

    #[test]
    fn refuses_bad_manifests() {
        let k = NodeKey::from_seed([4; 32]);
        let mut bad_names = vec!["../x.gguf", "a/b.gguf", ".hidden", "", "a b", "x\\y"];
        bad_names.push("a\u{0}b");
        for n in bad_names {
            let mut m = sample();
            m.artifacts[0].name = n.into();
            assert!(k.sign_object(m).is_err(), "{n:?}");
        }
        let mut m = sample();
        m.artifacts.push(m.artifacts[0].clone());
        assert!(k.sign_object(m).is_err());
        let mut m = sample();
        m.artifacts.clear();
        assert!(k.sign_object(m).is_err());
        let mut m = sample();
        m.artifacts.push(ManifestArtifact { name: "b".into(), digest: Sha256Digest([0; 32]), size_bytes: u64::MAX });
        assert!(matches!(k.sign_object(m), Err(CoreError::Overflow { .. })));
        let mut m = sample();
        m.intended_use = "line\nbreak".into();
        assert!(k.sign_object(m).is_err());
    }
}
