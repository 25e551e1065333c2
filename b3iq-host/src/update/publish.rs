//! The release side of docs/release.md, with tough's repository editor: Ed25519 signing keys in
//! files (PKCS#8 DER, mode 0600; never on a command line), root metadata (first root and
//! rotations signed by both the old and the new root threshold) and a signed release (targets,
//! snapshot, timestamp; consistent snapshots, so a mirror can publish atomically).
//!
//! Layout written under `out`: `metadata/<N>.root.json`, `metadata/timestamp.json`,
//! `metadata/<N>.snapshot.json`, `metadata/<N>.targets.json`, `targets/<sha256>.<name>`.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use tough::editor::signed::{PathExists, SignedRole};
use tough::editor::RepositoryEditor;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::{KeyHolder, RoleKeys, RoleType, Root, Signed, Target};
use tough::sign::Sign;

pub use jiff;

/// Errors of the release tool: a message naming the file or step.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PublishError(pub String);

fn err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> PublishError {
    PublishError(format!("{what}: {e}"))
}

/// Result of the release tool.
pub type Result<T> = std::result::Result<T, PublishError>;

/// Writes a new Ed25519 key (PKCS#8 DER) to `path` with mode 0600; refuses to overwrite.
pub fn generate_key(path: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|e| err("generate an Ed25519 key", e))?;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| err(format!("create {}", d.display()), e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| err(format!("create key file {}", path.display()), e))?;
    f.write_all(doc.as_ref())
        .map_err(|e| err(format!("write {}", path.display()), e))
}

fn public_key(path: &Path) -> Result<tough::schema::key::Key> {
    let bytes =
        std::fs::read(path).map_err(|e| err(format!("read key file {}", path.display()), e))?;
    let pair = tough::sign::parse_keypair(&bytes)
        .map_err(|e| err(format!("key file {}", path.display()), e))?;
    Ok(pair.tuf_key())
}

fn sources(paths: &[PathBuf]) -> Vec<Box<dyn KeySource>> {
    paths
        .iter()
        .map(|p| Box::new(LocalKeySource { path: p.clone() }) as Box<dyn KeySource>)
        .collect()
}

/// Which key files (private; the public halves go into root) hold each role, and thresholds.
#[derive(Debug, Clone)]
pub struct RootSpec {
    /// Root role keys.
    pub root: Vec<PathBuf>,
    /// Root signatures required.
    pub root_threshold: u64,
    /// Targets role keys (threshold 1).
    pub targets: Vec<PathBuf>,
    /// Snapshot role keys (threshold 1).
    pub snapshot: Vec<PathBuf>,
    /// Timestamp role keys (threshold 1).
    pub timestamp: Vec<PathBuf>,
    /// Root version (1 for the first root, previous + 1 for a rotation).
    pub version: u64,
    /// Root expiry.
    pub expires: jiff::Timestamp,
}

/// Builds and signs root metadata. `signers` are the key files that sign: for a rotation the old
/// root's threshold of them must be among `signers` as well as the new root's (both sets sign,
/// TUF 5.3.4); pass `previous` to add the old root's signatures. Returns the JSON bytes.
pub async fn make_root(
    spec: &RootSpec,
    signers: &[PathBuf],
    previous: Option<&Signed<Root>>,
) -> Result<Vec<u8>> {
    let mut keys = HashMap::new();
    let mut role = |files: &[PathBuf], threshold: u64| -> Result<RoleKeys> {
        let mut keyids = Vec::new();
        for f in files {
            let k = public_key(f)?;
            let id = k.key_id().map_err(|e| err("key id", e))?;
            keyids.push(id.clone());
            keys.insert(id, k);
        }
        let threshold = NonZeroU64::new(threshold)
            .ok_or_else(|| PublishError("a threshold must be at least 1".into()))?;
        Ok(RoleKeys {
            keyids,
            threshold,
            _extra: HashMap::new(),
        })
    };
    let mut roles = HashMap::new();
    roles.insert(RoleType::Root, role(&spec.root, spec.root_threshold)?);
    roles.insert(RoleType::Targets, role(&spec.targets, 1)?);
    roles.insert(RoleType::Snapshot, role(&spec.snapshot, 1)?);
    roles.insert(RoleType::Timestamp, role(&spec.timestamp, 1)?);
    let root = Root {
        spec_version: "1.0.0".into(),
        consistent_snapshot: true,
        version: NonZeroU64::new(spec.version)
            .ok_or_else(|| PublishError("root version starts at 1".into()))?,
        expires: spec.expires,
        keys,
        roles,
        _extra: HashMap::new(),
    };
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let signers = sources(signers);
    let mut signed = SignedRole::new(root.clone(), &KeyHolder::Root(root.clone()), &signers, &rng)
        .await
        .map_err(|e| err("sign root with the new root's keys", e))?;
    if let Some(prev) = previous {
        let old = SignedRole::new(
            root.clone(),
            &KeyHolder::Root(prev.signed.clone()),
            &signers,
            &rng,
        )
        .await
        .map_err(|e| err("sign root with the previous root's keys", e))?;
        let theirs: Vec<_> = old
            .signed()
            .signatures
            .iter()
            .filter(|s| {
                !signed
                    .signed()
                    .signatures
                    .iter()
                    .any(|m| m.keyid == s.keyid)
            })
            .cloned()
            .collect();
        signed = signed
            .add_old_signatures(theirs)
            .map_err(|e| err("combine root signatures", e))?;
    }
    Ok(signed.buffer().clone())
}

/// Reads root metadata from a file.
pub fn read_root(path: &Path) -> Result<Signed<Root>> {
    let bytes = std::fs::read(path).map_err(|e| err(format!("read {}", path.display()), e))?;
    serde_json::from_slice(&bytes).map_err(|e| err(format!("parse {}", path.display()), e))
}

/// One file of a release.
#[derive(Debug, Clone)]
pub struct ReleaseFile {
    /// The file on disk.
    pub path: PathBuf,
    /// Its target name (`b3iqd-linux-x86_64`, see [`super::platform_target`]).
    pub name: String,
}

/// A release to sign.
#[derive(Debug, Clone)]
pub struct Release {
    /// The trusted root file (its version names the current root).
    pub root: PathBuf,
    /// Version string (`custom.version` of every target), dotted numbers.
    pub version: String,
    /// Release notes' summary (`custom.notes`).
    pub notes: String,
    /// The files.
    pub files: Vec<ReleaseFile>,
    /// Metadata version of targets, snapshot and timestamp (must grow with each release; the
    /// release task uses the Unix time in seconds).
    pub meta_version: u64,
    /// Expiry of targets and snapshot.
    pub expires: jiff::Timestamp,
    /// Expiry of timestamp (short: a frozen mirror is noticed when it passes).
    pub timestamp_expires: jiff::Timestamp,
    /// Key files for targets, snapshot and timestamp.
    pub keys: Vec<PathBuf>,
}

/// Signs `release` and writes it under `out` (`metadata/`, `targets/`). Earlier metadata in
/// `out/metadata` (root chain, older consistent snapshots) is kept; `timestamp.json` is replaced.
pub async fn publish(release: &Release, out: &Path) -> Result<()> {
    let mut ed = RepositoryEditor::new(&release.root)
        .await
        .map_err(|e| err(format!("load root {}", release.root.display()), e))?;
    let v = NonZeroU64::new(release.meta_version)
        .ok_or_else(|| PublishError("metadata version starts at 1".into()))?;
    ed.targets_version(v)
        .map_err(|e| err("targets version", e))?;
    ed.targets_expires(release.expires)
        .map_err(|e| err("targets expiry", e))?;
    ed.snapshot_version(v)
        .snapshot_expires(release.expires)
        .timestamp_version(v)
        .timestamp_expires(release.timestamp_expires);
    for f in &release.files {
        let mut t = Target::from_path(&f.path)
            .await
            .map_err(|e| err(format!("hash {}", f.path.display()), e))?;
        t.custom.insert(
            "version".into(),
            serde_json::Value::String(release.version.clone()),
        );
        t.custom.insert(
            "notes".into(),
            serde_json::Value::String(release.notes.clone()),
        );
        ed.add_target(f.name.as_str(), t)
            .map_err(|e| err(format!("add target {}", f.name), e))?;
    }
    let signed = ed
        .sign(&sources(&release.keys))
        .await
        .map_err(|e| err("sign the release", e))?;
    let meta = out.join("metadata");
    let targets = out.join("targets");
    std::fs::create_dir_all(&targets)
        .map_err(|e| err(format!("create {}", targets.display()), e))?;
    signed
        .write(&meta)
        .await
        .map_err(|e| err(format!("write {}", meta.display()), e))?;
    for f in &release.files {
        let name = tough::TargetName::new(f.name.clone()).map_err(|e| err("target name", e))?;
        signed
            .copy_target(&f.path, &targets, PathExists::Replace, Some(&name))
            .await
            .map_err(|e| err(format!("copy {}", f.path.display()), e))?;
    }
    // The root chain beside the metadata: every N.root.json the client may need.
    let root_bytes = std::fs::read(&release.root).map_err(|e| err("read root", e))?;
    let r: Signed<Root> = serde_json::from_slice(&root_bytes).map_err(|e| err("parse root", e))?;
    std::fs::write(
        meta.join(format!("{}.root.json", r.signed.version)),
        &root_bytes,
    )
    .map_err(|e| err("write root", e))?;
    Ok(())
}
