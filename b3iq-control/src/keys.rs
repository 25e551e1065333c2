//! The control plane's job-signing keys: the secrets this process holds, by public key.
//!
//! Which key is current is the store's answer ([`crate::store::ControlStore::job_keys`], the
//! newest), so every replica and the admin CLI agree on it; the secrets are files in the home:
//! `job-key` (the first key, made at first start) and `job-keys/<public key hex>.key` (each key
//! made by a rotation), b3iq-core key files, mode 0600. A replica on another machine needs a
//! copy of each key file it signs with; a key it lacks is a clear error, never a silent
//! fallback to another key.
//!
//! Rotation (`b3iq-control admin rotate-job-key`) adds a key and queues, for every active node,
//! a `rotate_issuer_key` job signed by the key that node pins; the node accepts the new key only
//! through that job and refuses the old one from then on. The old secrets stay in the home until
//! no node pins them (see `b3iq-control admin job-keys`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use b3iq_core::{NodeKey, NodePublicKey};
use b3iq_host::context::home::write_atomic;

use crate::error::{ControlError, Result};

/// Directory (under the home) of the keys made by rotations.
pub const KEY_DIR: &str = "job-keys";

/// The job-signing secrets this process holds.
pub struct JobKeyRing {
    home: Option<PathBuf>,
    keys: RwLock<HashMap<NodePublicKey, NodeKey>>,
}

impl std::fmt::Debug for JobKeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.keys.read().map(|k| k.len()).unwrap_or(0);
        f.debug_struct("JobKeyRing").field("home", &self.home).field("keys", &n).finish()
    }
}

fn read_key(p: &Path) -> Result<NodeKey> {
    let b = std::fs::read(p).map_err(|e| ControlError::Config(format!("read {}: {e}", p.display())))?;
    NodeKey::from_key_file(&b).map_err(|e| ControlError::Config(format!("{}: {e}", p.display())))
}

impl JobKeyRing {
    /// A ring held in memory only (tests, embedders): [`JobKeyRing::generate`] keeps new keys
    /// in memory.
    pub fn in_memory(keys: impl IntoIterator<Item = NodeKey>) -> JobKeyRing {
        JobKeyRing { home: None, keys: RwLock::new(keys.into_iter().map(|k| (k.public(), k)).collect()) }
    }

    /// The keys of the home at `root`: `job-key` and every `job-keys/*.key`.
    ///
    /// # Errors
    /// `Config` for an unreadable key file, or one whose name is not its public key.
    pub fn open(root: &Path, first: NodeKey) -> Result<JobKeyRing> {
        let ring = JobKeyRing { home: Some(root.to_path_buf()), keys: RwLock::new(HashMap::from([(first.public(), first)])) };
        ring.reload()?;
        Ok(ring)
    }

    /// Re-reads `job-keys/` (a rotation by the admin CLI, or a key file copied in).
    ///
    /// # Errors
    /// As [`JobKeyRing::open`].
    pub fn reload(&self) -> Result<()> {
        let Some(root) = &self.home else { return Ok(()) };
        let dir = root.join(KEY_DIR);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ControlError::Config(format!("read {}: {e}", dir.display()))),
        };
        let mut found = Vec::new();
        for entry in rd.flatten() {
            let p = entry.path();
            if p.extension().and_then(|x| x.to_str()) != Some("key") {
                continue;
            }
            let k = read_key(&p)?;
            if p.file_stem().and_then(|s| s.to_str()) != Some(k.public().to_hex().as_str()) {
                return Err(ControlError::Config(format!("{} holds key {}, not the one its name says", p.display(), k.public().to_hex())));
            }
            found.push(k);
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        for k in found {
            keys.insert(k.public(), k);
        }
        Ok(())
    }

    /// The secret of `public`, re-reading the home once when it is not held yet.
    ///
    /// # Errors
    /// `Config` when this process does not hold it (another replica's home made it: copy the
    /// file).
    pub fn get(&self, public: &NodePublicKey) -> Result<NodeKey> {
        if let Some(k) = self.keys.read().unwrap_or_else(|p| p.into_inner()).get(public) {
            return Ok(k.clone());
        }
        self.reload()?;
        self.keys.read().unwrap_or_else(|p| p.into_inner()).get(public).cloned().ok_or_else(|| {
            ControlError::Config(format!(
                "job key {} is not in this control plane's home ({KEY_DIR}/{}.key); copy it from the home of the replica that made it",
                public.to_hex(),
                public.to_hex()
            ))
        })
    }

    /// Makes a new key and keeps it (in `job-keys/<hex>.key`, mode 0600, when the ring has a
    /// home) before returning it, so a key is never in use without its file.
    ///
    /// # Errors
    /// `Config` when the file cannot be written.
    pub fn generate(&self) -> Result<NodeKey> {
        let k = NodeKey::generate(&mut rand::rngs::OsRng);
        if let Some(root) = &self.home {
            let dir = root.join(KEY_DIR);
            std::fs::create_dir_all(&dir).map_err(|e| ControlError::Config(format!("create {}: {e}", dir.display())))?;
            let p = dir.join(format!("{}.key", k.public().to_hex()));
            write_atomic(&p, &k.to_key_file(), 0o600).map_err(|e| ControlError::Config(e.to_string()))?;
        }
        self.keys.write().unwrap_or_else(|p| p.into_inner()).insert(k.public(), k.clone());
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_finds_keys_made_by_another_process_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeKey::generate(&mut rand::rngs::OsRng);
        let a = JobKeyRing::open(dir.path(), first.clone()).unwrap();
        let b = JobKeyRing::open(dir.path(), first.clone()).unwrap();
        let made = a.generate().unwrap();
        // `b` did not make it, but reads it from the home on first use.
        assert_eq!(b.get(&made.public()).unwrap().public(), made.public());
        assert_eq!(b.get(&first.public()).unwrap().public(), first.public());
        let stranger = NodeKey::generate(&mut rand::rngs::OsRng).public();
        let e = b.get(&stranger).unwrap_err().to_string();
        assert!(e.contains(&stranger.to_hex()) && e.contains("copy it"), "{e}");
        // A file whose name is not its key is refused.
        std::fs::write(dir.path().join(KEY_DIR).join(format!("{}.key", stranger.to_hex())), made.to_key_file()).unwrap();
        assert!(JobKeyRing::open(dir.path(), first).unwrap_err().to_string().contains("not the one its name says"));
    }
}
