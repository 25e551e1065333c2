//! Signed updates (docs/release.md): a TUF client (AWS's `tough`) that checks a release repository
//! against a pinned root and swaps the `b3iqd` binary atomically, keeping the old one as
//! `<binary>.previous`.
//!
//! State lives under `$B3IQ_HOME/update/`:
//! * `datastore/` — tough's trusted metadata (`root.json`, `timestamp.json`, `snapshot.json`,
//!   `targets.json`): the latest root the node trusts (starts as [`PINNED_ROOT`], shipped in the
//!   binary) and the versions it has seen, so a replayed older snapshot, targets or timestamp is
//!   refused (rollback) and a root can only change through a chain signed by each old threshold.
//! * `repository` — the repository's base URL (metadata under `metadata/`, targets under
//!   `targets/`), saved by `b3iqd update check --repo URL`.
//! * `ca.pem` — PEM certificate(s) trusted for the repository's TLS instead of the web roots (a
//!   control plane's self-signed certificate), saved by `b3iqd update check --ca-file PATH`;
//!   config.json `update_ca_file` names one when this file is absent.
//!
//! Every refusal is an [`UpdateError`] whose message says what was refused and why; on any
//! refusal the running binary is untouched (the download goes to `<binary>.new` and is removed).
//!
//! The release side (root creation, rotation, signing a release) is [`publish`].

pub mod publish;
mod transport;

use std::io::Write;
use std::path::{Path, PathBuf};

use b3iq_core::version::SoftwareVersion;
use futures_util::StreamExt;
use tough::{Repository, RepositoryLoader, TargetName};
use url::Url;

pub use transport::HttpTransport;

/// The root metadata shipped in the binary: the release repository's trust anchor before the
/// node has seen any repository. Maintainers replace `b3iq-host/src/update/root.json` with their
/// production root (docs/release.md, "Replacing the pinned root"); its private keys are never in
/// the source tree.
pub const PINNED_ROOT: &[u8] = include_bytes!("root.json");

/// Size limits for downloaded metadata, bytes (targets are bounded by their signed length).
/// Source: tough's defaults cut to what a repository of a few binaries needs.
pub const LIMITS: tough::Limits = tough::Limits {
    max_root_size: 256 * 1024,
    max_targets_size: 1024 * 1024,
    max_timestamp_size: 64 * 1024,
    max_snapshot_size: 256 * 1024,
    max_root_updates: 64,
};

/// Why an update was refused or failed (defined with the crate's errors, in the ground
/// layer, so `HostError` can carry it).
pub use crate::error::UpdateError;

impl UpdateError {
    fn from_tough(e: tough::error::Error) -> Self {
        Self::classify(&e, e.to_string())
    }

    /// Maps a tough error (or the tough error a transport error wraps: a hash or size check
    /// failing inside a download stream) to the refusal it stands for.
    fn classify(e: &tough::error::Error, detail: String) -> Self {
        use tough::error::Error as E;
        match e {
            E::OlderMetadata { role, .. } => UpdateError::Rollback {
                role: role.to_string(),
                detail,
            },
            E::OlderSnapshotInTimestamp { .. } => UpdateError::Rollback {
                role: "snapshot".into(),
                detail,
            },
            E::SnapshotRoleRollback { .. } => UpdateError::Rollback {
                role: "targets".into(),
                detail,
            },
            E::ExpiredMetadata { role, .. } => UpdateError::Expired {
                role: role.to_string(),
            },
            E::VerifyMetadata { role, .. } if role.to_string() == "root" => {
                UpdateError::BadRootRotation { detail }
            }
            E::VerifyMetadata { role, .. } => UpdateError::UntrustedSignature {
                role: role.to_string(),
                detail,
            },
            E::VerifyRoleMetadata { role, .. } => UpdateError::UntrustedSignature {
                role: role.clone(),
                detail,
            },
            E::VerifyTrustedMetadata { .. } => UpdateError::UntrustedSignature {
                role: "root".into(),
                detail,
            },
            E::HashMismatch { context, .. } => {
                if context.ends_with(".json") {
                    UpdateError::MixAndMatch { detail }
                } else {
                    UpdateError::HashMismatch {
                        what: context.clone(),
                        detail,
                    }
                }
            }
            E::VersionMismatch { .. } | E::MetaMissing { .. } | E::SnapshotRoleMissing { .. } => {
                UpdateError::MixAndMatch { detail }
            }
            E::MaxSizeExceeded { specifier, .. } => UpdateError::TooLarge {
                what: specifier.to_string(),
                detail,
            },
            E::MaxUpdatesExceeded { .. } => UpdateError::TooLarge {
                what: "root update chain".into(),
                detail,
            },
            E::Transport { .. } | E::CacheFileRead { .. } => {
                let mut src: Option<&(dyn std::error::Error + 'static)> =
                    std::error::Error::source(e);
                while let Some(s) = src {
                    if let Some(inner) = s.downcast_ref::<tough::error::Error>() {
                        return Self::classify(inner, detail);
                    }
                    src = s.source();
                }
                UpdateError::Unavailable(detail)
            }
            _ => UpdateError::BadMetadata(detail),
        }
    }
}

/// Result of the update module.
pub type Result<T> = std::result::Result<T, UpdateError>;

fn local(what: impl std::fmt::Display, e: impl std::fmt::Display) -> UpdateError {
    UpdateError::Local(format!("{what}: {e}"))
}

/// This build's platform target name in the repository: `b3iqd-<os>-<arch>`
/// (e.g. `b3iqd-linux-x86_64`, from Rust's `std::env::consts`).
pub fn platform_target() -> String {
    format!("b3iqd-{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// A release version (SemVer 2.0.0, [`b3iq_core::version::SoftwareVersion`]: ordered by SemVer
/// precedence, `1.2.10` > `1.2.9` > `1.2.9-rc.1`). Returns `None` when `v` is not one.
pub fn parse_version(v: &str) -> Option<SoftwareVersion> {
    SoftwareVersion::parse(v).ok()
}

/// This build's version (the workspace version, what heartbeats report).
pub const RUNNING_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version of root metadata `bytes` (a signed, TUF-shaped document), 0 when it is not one.
/// Only picks which root to start from; tough verifies the chosen one.
pub fn root_version(bytes: &[u8]) -> u64 {
    serde_json::from_slice::<tough::schema::Signed<tough::schema::Root>>(bytes)
        .map(|r| r.signed.version.get())
        .unwrap_or(0)
}

/// What `b3iqd update check` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    /// The running version.
    pub current: String,
    /// The repository's version for this platform.
    pub latest: String,
    /// `latest` is newer than `current`.
    pub available: bool,
    /// The release notes' summary (targets metadata `custom.notes`).
    pub notes: String,
    /// The target file name.
    pub target: String,
    /// Signed length, bytes.
    pub length: u64,
    /// Signed SHA-256, hex.
    pub sha256: String,
    /// Trusted root version after this check.
    pub root_version: u64,
}

/// The updater for one home and one binary.
#[derive(Debug, Clone)]
pub struct Updater {
    /// `$B3IQ_HOME/update`.
    pub dir: PathBuf,
    /// The binary to replace (default: the running executable).
    pub binary: PathBuf,
    /// The running version (default: this crate's version).
    pub current_version: String,
    /// PEM certificate(s) trusted for the repository's TLS instead of the web roots.
    pub ca_pem: Option<String>,
}

impl Updater {
    /// An updater for the home at `home` replacing the running executable. Owner-only: refuses
    /// unless the calling user owns the home directory.
    pub fn new(home: &Path) -> Result<Updater> {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(home)
            .map_err(|e| local(format!("read {}", home.display()), e))?
            .uid();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if owner != me {
            return Err(UpdateError::Local(format!("owner-only: {} belongs to uid {owner}, not to you (uid {me}); run `b3iqd update` as the node's owner", home.display())));
        }
        let binary = std::env::current_exe().map_err(|e| local("find the running binary", e))?;
        let dir = home.join("update");
        let ca_pem = match std::fs::read_to_string(dir.join("ca.pem")) {
            Ok(p) => Some(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(local("read update/ca.pem", e)),
        };
        Ok(Updater {
            dir,
            binary,
            current_version: RUNNING_VERSION.to_string(),
            ca_pem,
        })
    }

    /// As [`Updater::new`], with config.json's `update_ca_file` (a path, relative to the home)
    /// as the trusted certificate when `update/ca.pem` is absent.
    ///
    /// # Errors
    /// As [`Updater::new`]; `Local` when the configured file cannot be read.
    pub fn for_home(home: &Path, config_ca_file: Option<&str>) -> Result<Updater> {
        let mut u = Updater::new(home)?;
        if let (None, Some(f)) = (&u.ca_pem, config_ca_file) {
            let p = home.join(f);
            u.ca_pem = Some(std::fs::read_to_string(&p).map_err(|e| {
                local(format!("config.json update_ca_file {}", p.display()), e)
            })?);
        }
        Ok(u)
    }

    /// Trusts the PEM certificate(s) in `path` for the repository's TLS from now on (instead of
    /// the web roots), saved as `update/ca.pem`.
    ///
    /// # Errors
    /// `Local` when the file cannot be read, holds no certificate, or cannot be saved.
    pub fn set_ca_file(&mut self, path: &Path) -> Result<()> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| local(format!("--ca-file {}", path.display()), e))?;
        transport::check_pem(&pem).map_err(|e| local(format!("--ca-file {}", path.display()), e))?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| local(format!("create {}", self.dir.display()), e))?;
        crate::context::home::write_atomic(&self.dir.join("ca.pem"), pem.as_bytes(), 0o644)
            .map_err(|e| local("save update/ca.pem", e))?;
        self.ca_pem = Some(pem);
        Ok(())
    }

    /// Whether a repository URL is saved (`update/repository`).
    pub fn repository_configured(&self) -> bool {
        self.dir.join("repository").is_file()
    }

    /// Saves the repository base URL under `update/repository`: https, or plain http to a
    /// loopback address only (tests; TUF's signatures protect the content either way, but not
    /// the node's privacy or availability).
    ///
    /// # Errors
    /// `Local` for another scheme, plain http to another host, or a file error.
    pub fn set_repository(&self, url: &str) -> Result<()> {
        let u = Url::parse(url).map_err(|e| local(format!("repository URL {url:?}"), e))?;
        let loopback = match u.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if !(u.scheme() == "https" || (u.scheme() == "http" && loopback)) {
            return Err(UpdateError::Local(format!(
                "repository URL {url:?}: use https (plain http only to a loopback address, for tests)"
            )));
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| local(format!("create {}", self.dir.display()), e))?;
        std::fs::write(
            self.dir.join("repository"),
            u.as_str().trim_end_matches('/'),
        )
        .map_err(|e| local("save the repository URL", e))
    }

    fn repository(&self) -> Result<Url> {
        let s = std::fs::read_to_string(self.dir.join("repository")).map_err(|_| {
            UpdateError::Local(
                "no release repository configured: run `b3iqd update check --repo https://…`"
                    .into(),
            )
        })?;
        Url::parse(&format!("{}/", s.trim().trim_end_matches('/')))
            .map_err(|e| local("the saved repository URL", e))
    }

    /// The root the node trusts now: the persisted one (`update/datastore/root.json`) unless the
    /// shipped [`PINNED_ROOT`] is newer.
    fn trusted_root(&self) -> Vec<u8> {
        let persisted = std::fs::read(self.dir.join("datastore/root.json")).ok();
        match persisted {
            Some(p) if root_version(&p) >= root_version(PINNED_ROOT) => p,
            _ => PINNED_ROOT.to_vec(),
        }
    }

    /// Loads and verifies the repository's metadata (TUF client workflow).
    pub async fn load(&self) -> Result<Repository> {
        self.load_with_root(&self.trusted_root()).await
    }

    /// As [`Updater::load`] with an explicit trusted root (tests, a first install).
    pub async fn load_with_root(&self, root: &[u8]) -> Result<Repository> {
        let base = self.repository()?;
        let ds = self.dir.join("datastore");
        std::fs::create_dir_all(&ds).map_err(|e| local(format!("create {}", ds.display()), e))?;
        let meta = base
            .join("metadata/")
            .map_err(|e| local("metadata URL", e))?;
        let targets = base.join("targets/").map_err(|e| local("targets URL", e))?;
        let transport = HttpTransport::with_ca(self.ca_pem.as_deref())
            .map_err(|e| UpdateError::Local(format!("the repository's CA certificate: {e}")))?;
        RepositoryLoader::new(&root, meta, targets)
            .transport(transport)
            .limits(LIMITS)
            .datastore(ds)
            .load()
            .await
            .map_err(UpdateError::from_tough)
    }

    /// Checks the repository for a release for this platform.
    pub async fn check(&self) -> Result<(Repository, CheckReport)> {
        let repo = self.load().await?;
        let name = platform_target();
        let tn =
            TargetName::new(name.clone()).map_err(|e| UpdateError::BadMetadata(e.to_string()))?;
        let t = repo
            .targets()
            .signed
            .targets
            .get(&tn)
            .ok_or_else(|| UpdateError::NoTarget(name.clone()))?;
        let latest = t
            .custom
            .get("version")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let Some(signed_version) = parse_version(&latest) else {
            return Err(UpdateError::BadMetadata(format!(
                "target {name} has no valid custom.version ({latest:?})"
            )));
        };
        let available = parse_version(&self.current_version).is_none_or(|c| signed_version > c);
        let report = CheckReport {
            current: self.current_version.clone(),
            latest,
            available,
            notes: t
                .custom
                .get("notes")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
            target: name,
            length: t.length,
            sha256: hex::encode(&t.hashes.sha256),
            root_version: repo.root().signed.version.get(),
        };
        Ok((repo, report))
    }

    /// Downloads the newer release (length and hash checked while streaming, into
    /// `<binary>.new`) and swaps it in; the old binary stays as `<binary>.previous`. Returns the
    /// report; `available == false` means nothing was installed.
    pub async fn apply(&self) -> Result<CheckReport> {
        self.apply_at_least(None).await
    }

    /// As [`Updater::apply`], refusing ([`UpdateError::OlderThanRequested`]) when the signed
    /// current release is older than `min` (an `update` job's `version`). The release installed
    /// is always the repository's signed current one: `min` only bounds it from below.
    ///
    /// # Errors
    /// Every refusal of [`Updater::check`]; `OlderThanRequested`; `Local` for a bad `min`.
    pub async fn apply_at_least(&self, min: Option<&str>) -> Result<CheckReport> {
        let min = min
            .map(|m| {
                parse_version(m).ok_or_else(|| {
                    UpdateError::Local(format!("{m:?} is not a release version (MAJOR.MINOR.PATCH)"))
                })
            })
            .transpose()?;
        let (repo, report) = self.check().await?;
        if let Some(min) = min {
            if parse_version(&report.latest).is_none_or(|l| l < min) {
                return Err(UpdateError::OlderThanRequested {
                    requested: min.to_string(),
                    available: report.latest,
                });
            }
        }
        if !report.available {
            return Ok(report);
        }
        let tn = TargetName::new(report.target.clone())
            .map_err(|e| UpdateError::BadMetadata(e.to_string()))?;
        let new = sibling(&self.binary, "new");
        let res = self.download(&repo, &tn, &new).await;
        if let Err(e) = res {
            let _ = std::fs::remove_file(&new);
            return Err(e);
        }
        swap_in(&self.binary, &new)?;
        Ok(report)
    }

    async fn download(&self, repo: &Repository, tn: &TargetName, new: &Path) -> Result<()> {
        let mut stream = repo
            .read_target(tn)
            .await
            .map_err(UpdateError::from_tough)?
            .ok_or_else(|| UpdateError::NoTarget(tn.raw().to_string()))?;
        let mut f = std::fs::File::create(new)
            .map_err(|e| local(format!("create {}", new.display()), e))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(UpdateError::from_tough)?;
            f.write_all(&chunk)
                .map_err(|e| local(format!("write {}", new.display()), e))?;
        }
        f.sync_all().map_err(|e| local("sync the download", e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(new, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| local("make the download executable", e))?;
        Ok(())
    }

    /// Puts `<binary>.previous` back as the binary; the replaced one becomes `.previous` (so a
    /// second rollback rolls forward).
    pub fn rollback(&self) -> Result<()> {
        let prev = sibling(&self.binary, "previous");
        if !prev.exists() {
            return Err(UpdateError::Local(format!(
                "nothing to roll back to: {} does not exist",
                prev.display()
            )));
        }
        let hold = sibling(&self.binary, "rollback");
        let _ = std::fs::remove_file(&hold);
        std::fs::hard_link(&self.binary, &hold).map_err(|e| local("keep the current binary", e))?;
        std::fs::rename(&prev, &self.binary)
            .map_err(|e| local("restore the previous binary", e))?;
        std::fs::rename(&hold, &prev)
            .map_err(|e| local("keep the replaced binary as .previous", e))?;
        sync_dir(&self.binary);
        Ok(())
    }
}

/// What the owner's UI shows about updates (`GET /api/update`, the wizard's "update available"
/// card): always the running version; when a repository is configured, the result of a fresh
/// check against it (the signed current version and its release notes' summary), or why the
/// check failed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpdateStatus {
    /// The running version.
    pub current: String,
    /// A release repository is configured (`b3iqd update check --repo`).
    pub configured: bool,
    /// A newer signed release is available.
    pub available: bool,
    /// The signed current release's version (when checked).
    pub latest: Option<String>,
    /// Its release notes' summary (the signed targets metadata's `custom.notes`).
    pub notes: Option<String>,
    /// Why the check failed (a refusal or an unreachable repository).
    pub error: Option<String>,
    /// The error's code ([`UpdateError::code`]).
    pub code: Option<&'static str>,
}

/// Checks the configured repository for the owner's UI, within `timeout`. Never fails: a
/// refusal is reported in [`UpdateStatus::error`].
pub async fn status(home: &Path, config_ca_file: Option<&str>, timeout: std::time::Duration) -> UpdateStatus {
    let mut s = UpdateStatus {
        current: RUNNING_VERSION.to_string(),
        configured: false,
        available: false,
        latest: None,
        notes: None,
        error: None,
        code: None,
    };
    let u = match Updater::for_home(home, config_ca_file) {
        Ok(u) => u,
        Err(e) => {
            s.code = Some(e.code());
            s.error = Some(e.to_string());
            return s;
        }
    };
    s.configured = u.repository_configured();
    if !s.configured {
        return s;
    }
    let checked = tokio::time::timeout(timeout, u.check())
        .await
        .unwrap_or_else(|_| {
            Err(UpdateError::Unavailable(format!(
                "no answer within {} s",
                timeout.as_secs()
            )))
        });
    match checked {
        Ok((_, r)) => {
            s.available = r.available;
            s.latest = Some(r.latest);
            s.notes = Some(r.notes);
        }
        Err(e) => {
            s.code = Some(e.code());
            s.error = Some(e.to_string());
        }
    }
    s
}

/// `<path>.<ext>` beside `path`.
pub fn sibling(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn sync_dir(path: &Path) {
    if let Some(d) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = d.sync_all();
    }
}

/// Atomic swap: `binary` is at every instant either the old or the new file (each step is a
/// hard link or a rename within one directory), so a kill at any point leaves a runnable binary.
/// 1. hard-link `binary` to `binary.previous.tmp`, rename it over `binary.previous`;
/// 2. rename `new` over `binary`; 3. fsync the directory.
pub fn swap_in(binary: &Path, new: &Path) -> Result<()> {
    let prev = sibling(binary, "previous");
    let prev_tmp = sibling(binary, "previous.tmp");
    let _ = std::fs::remove_file(&prev_tmp);
    std::fs::hard_link(binary, &prev_tmp)
        .map_err(|e| local(format!("keep {} as .previous", binary.display()), e))?;
    std::fs::rename(&prev_tmp, &prev).map_err(|e| local("keep the old binary as .previous", e))?;
    std::fs::rename(new, binary)
        .map_err(|e| local(format!("swap in the new {}", binary.display()), e))?;
    sync_dir(binary);
    Ok(())
}

/// Watches `binary` (its inode) and resolves when it changes: `b3iqd serve` then shuts down
/// and re-executes the new binary. Polls every `every`.
pub async fn binary_replaced(binary: PathBuf, every: std::time::Duration) {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let start = ino(&binary);
    loop {
        tokio::time::sleep(every).await;
        let now = ino(&binary);
        if start.is_some() && now.is_some() && now != start {
            return;
        }
    }
}
