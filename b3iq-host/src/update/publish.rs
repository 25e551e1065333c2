//! The release side of docs/release.md, with tough's repository editor: Ed25519 signing keys in
//! files (PKCS#8 DER, mode 0600; never on a command line), root metadata (first root and
//! rotations signed by both the old and the new root threshold) and a signed release (targets,
//! snapshot, timestamp; consistent snapshots, so a mirror can publish atomically).
//!
//! Layout written under `out`: `metadata/<N>.root.json`, `metadata/timestamp.json`,
//! `metadata/<N>.snapshot.json`, `metadata/<N>.targets.json`, `targets/<sha256>.<name>`.
//!
//! Refused before anything is written: a root signed by fewer keys than its root threshold (or,
//! for a rotation, than the previous root's), a version that is not SemVer, a target name not of
//! the form [`check_target_name`] documents. [`refresh_timestamp`] re-signs only the timestamp
//! (the cron job that keeps a release from looking frozen).

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use tough::editor::signed::{PathExists, SignedRole};
use tough::editor::RepositoryEditor;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::{KeyHolder, RoleKeys, RoleType, Root, Signed, Target, Timestamp};
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
    // Signers that hold none of the new root's keys leave it unsigned: say so, not tough's
    // generic threshold message below.
    if signed.signed().signatures.is_empty() && previous.is_none() {
        return Err(PublishError(
            "refused: none of the --sign keys is a root key of this root".into(),
        ));
    }
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
    check_root_threshold(signed.signed(), previous)?;
    Ok(signed.buffer().clone())
}

/// Checks that `root` is signed by at least its own root threshold of its root keys and, for a
/// rotation, by `previous`'s threshold of `previous`'s root keys (TUF 5.3.4), as a client will.
///
/// # Errors
/// A refusal naming the threshold that is not met and how many valid signatures there are.
pub fn check_root_threshold(root: &Signed<Root>, previous: Option<&Signed<Root>>) -> Result<()> {
    let name = |r: &Root| format!("root version {}", r.version);
    root.signed.verify_role(root).map_err(|e| {
        PublishError(format!(
            "refused: {} is not signed by its own root threshold ({e}); add --sign with more of its root keys",
            name(&root.signed)
        ))
    })?;
    if let Some(prev) = previous {
        prev.signed.verify_role(root).map_err(|e| {
            PublishError(format!(
                "refused: {} is not signed by the threshold of the previous root, {} ({e}); a client would refuse the rotation: add --sign with the old root keys",
                name(&root.signed),
                name(&prev.signed)
            ))
        })?;
    }
    Ok(())
}

/// The operating systems and architectures a target name may name (values of Rust's
/// `std::env::consts::OS` and `ARCH`).
pub const TARGET_OS: &[&str] = &["linux", "macos", "windows", "freebsd", "netbsd", "openbsd", "android", "ios"];
/// See [`TARGET_OS`].
pub const TARGET_ARCH: &[&str] = &["x86", "x86_64", "arm", "aarch64", "riscv64", "powerpc64", "s390x", "loongarch64"];
/// The programs a release holds.
pub const TARGET_PROGRAMS: &[&str] = &["b3iqd", "b3iq-control"];

/// Checks a target name: `<program>-<os>-<arch>` with program one of [`TARGET_PROGRAMS`], os
/// one of [`TARGET_OS`] and arch one of [`TARGET_ARCH`] (e.g. `b3iqd-linux-x86_64`): the names
/// the updater ([`super::platform_target`]) and the install script look for.
///
/// # Errors
/// A refusal naming the expected form.
pub fn check_target_name(name: &str) -> Result<()> {
    let ok = TARGET_PROGRAMS.iter().any(|p| {
        name.strip_prefix(p)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.split_once('-'))
            .is_some_and(|(os, arch)| TARGET_OS.contains(&os) && TARGET_ARCH.contains(&arch))
    });
    if ok {
        Ok(())
    } else {
        Err(PublishError(format!(
            "refused: target name {:?} is not <program>-<os>-<arch> with program {}, os {} and arch {} (e.g. b3iqd-linux-x86_64)",
            name.chars().take(100).collect::<String>(),
            TARGET_PROGRAMS.join("|"),
            TARGET_OS.join("|"),
            TARGET_ARCH.join("|")
        )))
    }
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
    b3iq_core::version::SoftwareVersion::parse(&release.version)
        .map_err(|e| PublishError(format!("refused: --version: {e}")))?;
    if release.files.is_empty() {
        return Err(PublishError("refused: a release needs at least one --file".into()));
    }
    for f in &release.files {
        check_target_name(&f.name)?;
    }
    check_root_threshold(&read_root(&release.root)?, None)?;
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

/// Re-signs only `out/metadata/timestamp.json`: the same snapshot, a version above the current
/// one (`version`, or the current one + 1 if that is not above it) and the expiry `expires`, so
/// a repository with no new release does not look frozen to clients. The current timestamp must
/// verify against `root`, and the snapshot it names must outlive `expires` (else a new release
/// is needed: clients would refuse the expired snapshot). Written atomically (temp file,
/// fsync, rename). Returns the new timestamp version.
///
/// # Errors
/// A refusal when the current timestamp does not verify, the keys do not meet the timestamp
/// threshold, or the snapshot expires first; file errors.
pub async fn refresh_timestamp(
    root: &Path,
    out: &Path,
    keys: &[PathBuf],
    expires: jiff::Timestamp,
    version: u64,
) -> Result<u64> {
    let root = read_root(root)?;
    check_root_threshold(&root, None)?;
    let meta = out.join("metadata");
    let path = meta.join("timestamp.json");
    let bytes = std::fs::read(&path).map_err(|e| err(format!("read {}", path.display()), e))?;
    let current: Signed<Timestamp> =
        serde_json::from_slice(&bytes).map_err(|e| err(format!("parse {}", path.display()), e))?;
    root.signed.verify_role(&current).map_err(|e| {
        PublishError(format!(
            "refused: {} does not verify against this root ({e})",
            path.display()
        ))
    })?;
    let snap = current
        .signed
        .meta
        .get("snapshot.json")
        .ok_or_else(|| PublishError("refused: the timestamp names no snapshot.json".into()))?;
    let snap_path = meta.join(format!("{}.snapshot.json", snap.version));
    let snapshot: Signed<tough::schema::Snapshot> = serde_json::from_slice(
        &std::fs::read(&snap_path).map_err(|e| err(format!("read {}", snap_path.display()), e))?,
    )
    .map_err(|e| err(format!("parse {}", snap_path.display()), e))?;
    if snapshot.signed.expires <= expires {
        return Err(PublishError(format!(
            "refused: the snapshot expires at {}, before the new timestamp would ({expires}); publish a new release instead",
            snapshot.signed.expires
        )));
    }
    let next = version.max(current.signed.version.get() + 1);
    let mut ts = Timestamp::new(
        current.signed.spec_version.clone(),
        NonZeroU64::new(next).ok_or_else(|| PublishError("timestamp version 0".into()))?,
        expires,
    );
    ts.meta = current.signed.meta.clone();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let signed = SignedRole::new(ts, &KeyHolder::Root(root.signed.clone()), &sources(keys), &rng)
        .await
        .map_err(|e| {
            PublishError(format!(
                "refused: the --key files do not meet the timestamp role's threshold ({e}); use the timestamp key"
            ))
        })?;
    root.signed.verify_role(signed.signed()).map_err(|e| {
        PublishError(format!(
            "refused: the --key files do not meet the timestamp role's threshold ({e}); use the timestamp key"
        ))
    })?;
    crate::context::home::write_atomic(&path, signed.buffer(), 0o644)
        .map_err(|e| err(format!("write {}", path.display()), e))?;
    Ok(next)
}
