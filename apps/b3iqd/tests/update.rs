//! Signed updates end to end (docs/release.md): a real TUF repository made here with tough's
//! editor (b3iq-host's `update::publish`), served over loopback HTTP by a small file server, and
//! the real `b3iqd update` binary. A newer release installs and a running `b3iqd serve` restarts
//! on it; every attack is refused with a clear error and the installed binary untouched; kill -9
//! during `update apply` never leaves no binary.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use b3iq_host::update::publish::{self, jiff, Release, ReleaseFile, RootSpec};
use b3iq_host::update::{platform_target, sibling};

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("update-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A loopback HTTP/1.1 file server over `root`. A request for path P answers with an endless
/// stream when `root/P.endless` exists. Returns the base URL.
fn serve(root: PathBuf) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let path = req
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/')
                    .to_string();
                let file = root.join(&path);
                if sibling(&file, "endless").exists() {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                    let chunk = vec![b'{'; 64 * 1024];
                    while s.write_all(&chunk).is_ok() {}
                    return;
                }
                match std::fs::read(&file) {
                    Ok(body) if !path.contains("..") => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = s.write_all(&body);
                    }
                    _ => {
                        let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

struct Keys {
    dir: PathBuf,
}

impl Keys {
    fn new(dir: PathBuf) -> Keys {
        for n in [
            "root-1",
            "root-2",
            "root-3",
            "targets",
            "snapshot",
            "timestamp",
            "rogue",
            "new-root-1",
            "new-root-2",
        ] {
            publish::generate_key(&dir.join(format!("{n}.key"))).unwrap();
        }
        Keys { dir }
    }
    fn k(&self, n: &str) -> PathBuf {
        self.dir.join(format!("{n}.key"))
    }
    fn spec(&self, root: &[&str], version: u64) -> RootSpec {
        RootSpec {
            root: root.iter().map(|n| self.k(n)).collect(),
            root_threshold: 2,
            targets: vec![self.k("targets")],
            snapshot: vec![self.k("snapshot")],
            timestamp: vec![self.k("timestamp")],
            version,
            expires: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365),
        }
    }
}

fn days(n: i64) -> jiff::Timestamp {
    jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * n)
}

/// A test world: keys, root v1 (threshold 2 of 3), a repository dir served over HTTP, a home
/// whose persisted trusted root is root v1, and an installed `b3iqd` (a hard link to the test
/// build, so an untouched binary keeps its inode).
struct World {
    dir: PathBuf,
    keys: Keys,
    root: PathBuf,
    repo: PathBuf,
    url: String,
    home: PathBuf,
    bin: PathBuf,
}

impl World {
    async fn new(name: &str) -> World {
        let dir = scratch(name);
        let keys = Keys::new(dir.join("keys"));
        let root = dir.join("root.json");
        let bytes = publish::make_root(
            &keys.spec(&["root-1", "root-2", "root-3"], 1),
            &[keys.k("root-1"), keys.k("root-2")],
            None,
        )
        .await
        .unwrap();
        std::fs::write(&root, &bytes).unwrap();
        let repo = dir.join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        let url = serve(repo.clone());
        let home = dir.join("home");
        std::fs::create_dir_all(home.join("update/datastore")).unwrap();
        std::fs::write(home.join("update/datastore/root.json"), &bytes).unwrap();
        let bin = dir.join("bin/b3iqd");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::hard_link(env!("CARGO_BIN_EXE_b3iqd"), &bin).unwrap();
        World {
            dir,
            keys,
            root,
            repo,
            url,
            home,
            bin,
        }
    }

    fn release(&self, version: &str, file: &Path, meta_version: u64) -> Release {
        Release {
            root: self.root.clone(),
            version: version.into(),
            notes: format!("release {version}"),
            files: vec![ReleaseFile {
                path: file.to_path_buf(),
                name: platform_target(),
            }],
            meta_version,
            expires: days(30),
            timestamp_expires: days(1),
            keys: vec![
                self.keys.k("targets"),
                self.keys.k("snapshot"),
                self.keys.k("timestamp"),
            ],
        }
    }

    async fn publish_to(&self, r: &Release, out: &Path) {
        publish::publish(r, out).await.unwrap();
    }

    /// A release file: a shell script that records its pid and arguments, then sleeps.
    fn script(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(
            &p,
            "#!/bin/sh\necho \"$$ $*\" > \"$B3IQ_TEST_MARKER\"\nexec sleep 60\n",
        )
        .unwrap();
        p
    }

    fn update(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(&self.bin)
            .arg("--home")
            .arg(&self.home)
            .arg("update")
            .args(args)
            .env_remove("B3IQ_HOME")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    fn apply(&self) -> (bool, String, String) {
        let repo = format!("{}/", self.url);
        self.update(&["apply", "--repo", &repo])
    }

    fn identity(&self) -> (u64, u64, u64) {
        let m = std::fs::metadata(&self.bin).unwrap();
        (m.ino(), m.size(), m.mtime() as u64)
    }

    /// Applies, expects a refusal whose message contains `needle`, and checks the installed
    /// binary is the same file, with no download or `.previous` left beside it.
    fn refused(&self, needle: &str) -> String {
        let before = self.identity();
        let (ok, _out, err) = self.apply();
        assert!(!ok, "apply should be refused ({needle}); stderr: {err}");
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
        assert_eq!(self.identity(), before, "the installed binary changed");
        assert!(
            !sibling(&self.bin, "new").exists(),
            "a download was left behind"
        );
        assert!(!sibling(&self.bin, "previous").exists(), "a swap happened");
        err
    }
}

#[tokio::test]
async fn newer_release_installs_and_serve_restarts_on_it() {
    let w = World::new("install").await;
    let script = w.script("new-b3iqd");
    w.publish_to(&w.release("99.0.0", &script, 10), &w.repo)
        .await;
    // check: a newer version is available, with the release notes.
    let (ok, out, err) = w.update(&["check", "--repo", &w.url]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["available"], true);
    assert_eq!(v["latest"], "99.0.0");
    assert_eq!(v["notes"], "release 99.0.0");

    // A running serve from the installed binary.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let marker = w.dir.join("marker");
    let mut serve = Command::new(&w.bin)
        .args(["--home"])
        .arg(&w.home)
        .args([
            "serve",
            "--no-model",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("B3IQ_TEST_MARKER", &marker)
        .env_remove("B3IQ_HOME")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..300 {
        if client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "b3iqd serve did not start");

    let old = std::fs::read(&w.bin).unwrap();
    let (ok, _out, err) = w.apply();
    assert!(ok, "apply failed: {err}");
    assert!(err.contains("installed"), "{err}");
    assert_eq!(
        std::fs::read(&w.bin).unwrap(),
        std::fs::read(&script).unwrap(),
        "the new binary is in place"
    );
    assert_eq!(
        std::fs::read(sibling(&w.bin, "previous")).unwrap(),
        old,
        "the old binary is kept as .previous"
    );

    // serve notices the swap and execs the new binary in the same process, same arguments.
    let mut seen = String::new();
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(&marker) {
            seen = s;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen.split_whitespace().next(),
        Some(serve.id().to_string().as_str()),
        "the restart is an exec in the serve process: {seen:?}"
    );
    assert!(seen.contains("serve --no-model"), "{seen:?}");
    let _ = serve.kill();
    let _ = serve.wait();

    // Rollback puts the old binary back (with the real updater, now at .previous).
    let out = Command::new(sibling(&w.bin, "previous"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let u = b3iq_host::update::Updater {
        dir: w.home.join("update"),
        binary: w.bin.clone(),
        current_version: "99.0.0".into(),
        ca_pem: None,
    };
    u.rollback().unwrap();
    assert_eq!(std::fs::read(&w.bin).unwrap(), old);
    assert_eq!(
        std::fs::read(sibling(&w.bin, "previous")).unwrap(),
        std::fs::read(&script).unwrap()
    );
}

#[tokio::test]
async fn a_target_whose_hash_does_not_match_is_refused() {
    let w = World::new("hash").await;
    let script = w.script("new-b3iqd");
    w.publish_to(&w.release("99.0.0", &script, 10), &w.repo)
        .await;
    // Same length, other bytes: arbitrary software behind a valid name.
    for e in std::fs::read_dir(w.repo.join("targets")).unwrap().flatten() {
        let mut b = std::fs::read(e.path()).unwrap();
        let last = b.len() - 2;
        b[last] ^= 1;
        std::fs::write(e.path(), b).unwrap();
    }
    w.refused("does not match the hash");
}

#[tokio::test]
async fn metadata_signed_by_a_key_not_in_root_is_refused() {
    let w = World::new("rogue").await;
    // A whole repository signed by a rogue root and rogue role keys.
    let rogue_root = w.dir.join("rogue-root.json");
    let spec = RootSpec {
        root: vec![w.keys.k("rogue")],
        root_threshold: 1,
        targets: vec![w.keys.k("rogue")],
        snapshot: vec![w.keys.k("rogue")],
        timestamp: vec![w.keys.k("rogue")],
        ..w.keys.spec(&[], 1)
    };
    std::fs::write(
        &rogue_root,
        publish::make_root(&spec, &[w.keys.k("rogue")], None)
            .await
            .unwrap(),
    )
    .unwrap();
    let mut r = w.release("99.0.0", &w.script("evil"), 10);
    r.root = rogue_root;
    r.keys = vec![w.keys.k("rogue")];
    w.publish_to(&r, &w.repo).await;
    let err = w.refused("not signed by enough keys trusted by the root");
    assert!(err.contains("timestamp"), "{err}");
}

#[tokio::test]
async fn a_replayed_older_release_is_refused() {
    let w = World::new("replay").await;
    let old = w.dir.join("old-repo");
    w.publish_to(&w.release("99.0.0", &w.script("a"), 10), &old)
        .await;
    w.publish_to(&w.release("99.0.1", &w.script("b"), 20), &w.repo)
        .await;
    let (ok, _, err) = w.update(&["check", "--repo", &w.url]);
    assert!(ok, "{err}");
    // The mirror now replays the older (validly signed) timestamp, snapshot and targets.
    std::fs::remove_dir_all(&w.repo).unwrap();
    std::fs::rename(&old, &w.repo).unwrap();
    let err = w.refused("rollback attack");
    assert!(err.contains("timestamp"), "{err}");
}

#[tokio::test]
async fn an_older_snapshot_under_a_fresh_timestamp_is_refused() {
    // A compromised timestamp key signs a new timestamp that points at an older (validly
    // signed) snapshot: the node, which has seen a newer snapshot, refuses the rollback.
    let w = World::new("snap-replay").await;
    let old = w.dir.join("old-repo");
    w.publish_to(&w.release("99.0.0", &w.script("a"), 10), &old).await;
    w.publish_to(&w.release("99.0.1", &w.script("b"), 20), &w.repo).await;
    let (ok, _, err) = w.update(&["check", "--repo", &w.url]);
    assert!(ok, "{err}");
    let v = publish::refresh_timestamp(&w.root, &old, &[w.keys.k("timestamp")], days(1), 30).await.unwrap();
    assert_eq!(v, 30);
    for f in ["timestamp.json", "10.snapshot.json", "10.targets.json"] {
        std::fs::copy(old.join("metadata").join(f), w.repo.join("metadata").join(f)).unwrap();
    }
    let err = w.refused("rollback attack");
    assert!(err.contains("snapshot"), "{err}");
}

#[tokio::test]
async fn plain_http_is_refused_except_to_loopback() {
    let w = World::new("scheme").await;
    for url in ["http://releases.example/b3iq", "ftp://127.0.0.1/releases", "file:///etc"] {
        let (ok, _, err) = w.update(&["check", "--repo", url]);
        assert!(!ok && err.contains("use https"), "{url}: {err}");
    }
    assert!(!w.home.join("update/repository").exists(), "nothing saved");
}

#[tokio::test]
async fn an_expired_timestamp_is_refused() {
    let w = World::new("freeze").await;
    let mut r = w.release("99.0.0", &w.script("a"), 10);
    r.timestamp_expires = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    w.publish_to(&r, &w.repo).await;
    let err = w.refused("freeze attack");
    assert!(err.contains("timestamp"), "{err}");
}

#[tokio::test]
async fn mixed_metadata_from_two_releases_is_refused() {
    let w = World::new("mix").await;
    let a = w.dir.join("repo-a");
    w.publish_to(&w.release("99.0.0", &w.script("a"), 10), &a)
        .await;
    w.publish_to(&w.release("99.0.1", &w.script("b"), 20), &w.repo)
        .await;
    // Release 20's timestamp and snapshot, with release 10's targets under 20's name.
    std::fs::copy(
        a.join("metadata/10.targets.json"),
        w.repo.join("metadata/20.targets.json"),
    )
    .unwrap();
    w.refused("mix-and-match");
}

#[tokio::test]
async fn endless_streams_are_cut_at_the_limits() {
    let w = World::new("endless").await;
    let script = w.script("a");
    w.publish_to(&w.release("99.0.0", &script, 10), &w.repo)
        .await;
    // An endless target: cut at its signed length.
    let target = std::fs::read_dir(w.repo.join("targets"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    std::fs::write(sibling(&target, "endless"), "").unwrap();
    let err = w.refused("larger than allowed");
    assert!(err.contains("target"), "{err}");
    // An endless timestamp.json: cut at the metadata limit.
    std::fs::write(w.repo.join("metadata/timestamp.json.endless"), "").unwrap();
    let err = w.refused("larger than allowed");
    assert!(err.contains("timestamp"), "{err}");
}

#[tokio::test]
async fn root_rotation_needs_the_old_threshold() {
    let w = World::new("rotate").await;
    w.publish_to(&w.release("99.0.0", &w.script("a"), 10), &w.repo)
        .await;
    // A root v2 signed only by new root keys (an attacker's rotation).
    let bad = publish::make_root(
        &w.keys.spec(&["new-root-1", "new-root-2"], 2),
        &[w.keys.k("new-root-1"), w.keys.k("new-root-2")],
        None,
    )
    .await
    .unwrap();
    std::fs::write(w.repo.join("metadata/2.root.json"), &bad).unwrap();
    w.refused("root rotation not signed by the previous root's keys");

    // The same rotation also signed by 2 of the 3 old root keys is accepted.
    let prev = publish::read_root(&w.root).unwrap();
    let good = publish::make_root(
        &w.keys.spec(&["new-root-1", "new-root-2"], 2),
        &[
            w.keys.k("new-root-1"),
            w.keys.k("new-root-2"),
            w.keys.k("root-1"),
            w.keys.k("root-3"),
        ],
        Some(&prev),
    )
    .await
    .unwrap();
    std::fs::write(w.repo.join("metadata/2.root.json"), &good).unwrap();
    let (ok, out, err) = w.update(&["check"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["root_version"], 2);
    // Persisted in the home: the node now trusts root v2.
    let persisted: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.home.join("update/datastore/root.json")).unwrap())
            .unwrap();
    assert_eq!(persisted["signed"]["version"], 2);
}

#[tokio::test]
async fn kill_9_during_apply_never_leaves_no_binary() {
    let w = World::new("kill").await;
    let old = std::fs::read(&w.bin).unwrap();
    let mut new = old.clone();
    new.extend_from_slice(b"\0b3iq-update-test");
    let newf = w.dir.join("new-b3iqd");
    std::fs::write(&newf, &new).unwrap();
    w.publish_to(&w.release("99.0.0", &newf, 10), &w.repo).await;
    // One full apply to time it, then restore.
    let repo = format!("{}/", w.url);
    let t0 = std::time::Instant::now();
    let (ok, _, err) = w.apply();
    assert!(ok, "{err}");
    let full = t0.elapsed();
    let restore = |w: &World| {
        let _ = std::fs::remove_file(&w.bin);
        std::fs::hard_link(env!("CARGO_BIN_EXE_b3iqd"), &w.bin).unwrap();
    };
    restore(&w);
    let iterations: u32 = std::env::var("B3IQ_KILL_LOOPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let (mut olds, mut news) = (0, 0);
    for i in 0..iterations {
        let mut child = Command::new(&w.bin)
            .arg("--home")
            .arg(&w.home)
            .args(["update", "apply", "--repo", &repo])
            .env_remove("B3IQ_HOME")
            .stderr(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Spread the kills over the whole run, the swap at its end included.
        let at = full.mul_f64(0.5 + (i as f64) / (iterations as f64) * 0.7);
        std::thread::sleep(at);
        unsafe {
            libc_kill(child.id() as i32);
        }
        let _ = child.wait();
        let now = std::fs::read(&w.bin).expect("the binary must exist after kill -9");
        if now == old {
            olds += 1;
        } else {
            assert_eq!(
                now, new,
                "the binary is neither the old nor the new release"
            );
            news += 1;
        }
        let out = Command::new(&w.bin).arg("--version").output().unwrap();
        assert!(
            out.status.success(),
            "the binary left after kill -9 does not run"
        );
        restore(&w);
        let _ = std::fs::remove_file(sibling(&w.bin, "new"));
    }
    eprintln!("kill -9 loop: {iterations} kills, old binary left {olds} times, new binary {news} times (full apply {full:?})");
    assert_eq!(olds + news, iterations);
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

unsafe fn libc_kill(pid: i32) {
    unsafe {
        kill(pid, 9);
    }
}

#[tokio::test]
async fn install_script_installs_the_signed_release_and_refuses_a_tampered_one() {
    let w = World::new("install-sh").await;
    // The control plane's layout: the repository under <served>/releases/.
    let served = w.dir.join("served");
    let repo = served.join("releases");
    let newf = w.dir.join("b3iqd-release");
    std::fs::copy(env!("CARGO_BIN_EXE_b3iqd"), &newf).unwrap();
    w.publish_to(&w.release("99.0.0", &newf, 10), &repo).await;
    let base = serve(served.clone());
    // The control plane verifies its repository against the root before writing the script.
    let root = std::fs::read(&w.root).unwrap();
    let targets = b3iq_control::releases::verified_targets(&repo, &root).await.unwrap();
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].0, platform_target());
    let script = w.dir.join("install.sh");
    std::fs::write(&script, b3iq_control::releases::script(&base, &targets)).unwrap();
    // A repository that does not verify (signed by a key the root does not name) gives no script.
    let other = Keys { dir: w.dir.join("keys") };
    let rogue_root = publish::make_root(&RootSpec { root: vec![other.k("rogue")], root_threshold: 1, targets: vec![other.k("rogue")], snapshot: vec![other.k("rogue")], timestamp: vec![other.k("rogue")], ..other.spec(&[], 1) }, &[other.k("rogue")], None).await.unwrap();
    let e = b3iq_control::releases::verified_targets(&repo, &rogue_root).await.unwrap_err();
    assert!(e.contains("does not verify against the pinned root"), "{e}");

    // The installer's machine: a fresh HOME whose node trusts the test root (in production the
    // root pinned in the binary).
    let user = w.dir.join("user");
    std::fs::create_dir_all(user.join(".b3iq/update/datastore")).unwrap();
    std::fs::write(user.join(".b3iq/update/datastore/root.json"), &root).unwrap();
    let dest = user.join("bin");
    let run = || Command::new("sh").arg(&script).env("HOME", &user).env("B3IQ_INSTALL_DIR", &dest).env_remove("B3IQ_HOME").output().unwrap();
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "install.sh failed: {err} {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(std::fs::read(dest.join("b3iqd")).unwrap(), std::fs::read(&newf).unwrap());

    // A tampered download (same length) is refused and nothing is installed.
    std::fs::remove_file(dest.join("b3iqd")).unwrap();
    let t = std::fs::read_dir(repo.join("targets")).unwrap().flatten().next().unwrap().path();
    let mut b = std::fs::read(&t).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&t, b).unwrap();
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("refused: the download does not match the signed release"), "{err}");
    assert!(!dest.join("b3iqd").exists(), "a tampered binary was installed");
}

/// Runs the real `b3iq-release` tool.
fn release_tool(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_b3iq-release"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn the_release_tool_refuses_weak_roots_bad_versions_and_bad_target_names() {
    let w = World::new("tool").await;
    let k = |n: &str| w.keys.k(n);
    let (k1, k2, k3, t, sn, ts) = (k("root-1"), k("root-2"), k("root-3"), k("targets"), k("snapshot"), k("timestamp"));
    let out = w.dir.join("weak-root.json");
    // A root signed by 1 key when its threshold is 2: refused, nothing written.
    let (ok, err) = release_tool(&[
        "root", "--root-key", s(&k1), "--root-key", s(&k2), "--root-key", s(&k3), "--root-threshold", "2",
        "--targets-key", s(&t), "--snapshot-key", s(&sn), "--timestamp-key", s(&ts),
        "--sign", s(&k1), "--out", s(&out),
    ]);
    assert!(!ok && err.contains("not signed by its own root threshold"), "{err}");
    assert!(!out.exists(), "a weak root was written");
    // A rotation signed by the new threshold but only 1 of the old root's 3 keys: refused.
    let (ok, err) = release_tool(&[
        "root", "--previous", s(&w.root), "--root-key", s(&k("new-root-1")), "--root-key", s(&k("new-root-2")),
        "--targets-key", s(&t), "--snapshot-key", s(&sn), "--timestamp-key", s(&ts),
        "--sign", s(&k("new-root-1")), "--sign", s(&k("new-root-2")), "--sign", s(&k1), "--out", s(&out),
    ]);
    assert!(!ok && err.contains("not signed by the threshold of the previous root"), "{err}");
    assert!(!out.exists());
    // The same rotation with 2 old keys is written.
    let (ok, err) = release_tool(&[
        "root", "--previous", s(&w.root), "--root-key", s(&k("new-root-1")), "--root-key", s(&k("new-root-2")),
        "--targets-key", s(&t), "--snapshot-key", s(&sn), "--timestamp-key", s(&ts),
        "--sign", s(&k("new-root-1")), "--sign", s(&k("new-root-2")), "--sign", s(&k1), "--sign", s(&k3), "--out", s(&out),
    ]);
    assert!(ok, "{err}");
    assert_eq!(publish::read_root(&out).unwrap().signed.version.get(), 2);

    let file = format!("{}={}", platform_target(), s(&w.script("new")));
    let publish_with = |root: &Path, version: &str, file: &str| {
        release_tool(&[
            "publish", "--root", s(root), "--version", version, "--file", file,
            "--key", s(&t), "--key", s(&sn), "--key", s(&ts), "--out", s(&w.repo),
        ])
    };
    // A root file whose signatures were cut below its threshold is refused at publish.
    let mut cut: serde_json::Value = serde_json::from_slice(&std::fs::read(&w.root).unwrap()).unwrap();
    cut["signatures"].as_array_mut().unwrap().truncate(1);
    let cut_root = w.dir.join("cut-root.json");
    std::fs::write(&cut_root, serde_json::to_vec(&cut).unwrap()).unwrap();
    let (ok, err) = publish_with(&cut_root, "1.0.0", &file);
    assert!(!ok && err.contains("not signed by its own root threshold"), "{err}");
    // Versions that are not SemVer.
    for v in ["1.2", "latest", "v1.2.3", "01.2.3", "1.2.3-"] {
        let (ok, err) = publish_with(&w.root, v, &file);
        assert!(!ok && err.contains("refused: --version") && err.contains("MAJOR.MINOR.PATCH"), "{v}: {err}");
    }
    // Target names not of the form <program>-<os>-<arch>.
    let script = w.script("other");
    for name in ["b3iqd", "b3iqd-linux", "evil-linux-x86_64", "b3iqd-plan9-x86_64", "b3iqd-linux-x86_64.exe", "../b3iqd-linux-x86_64"] {
        let (ok, err) = publish_with(&w.root, "1.0.0", &format!("{name}={}", s(&script)));
        assert!(!ok && err.contains("is not <program>-<os>-<arch>"), "{name}: {err}");
    }
    assert!(!w.repo.join("metadata").exists(), "nothing was published by a refused command");
    // And a good one publishes.
    let (ok, err) = publish_with(&w.root, "1.0.0", &file);
    assert!(ok, "{err}");
    assert!(w.repo.join("metadata/timestamp.json").exists());
}

#[tokio::test]
async fn a_timestamp_only_re_sign_unfreezes_the_repository_without_a_new_release() {
    let w = World::new("resign").await;
    let mut r = w.release("99.0.0", &w.script("a"), 10);
    r.timestamp_expires = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    w.publish_to(&r, &w.repo).await;
    let (ok, _, err) = w.update(&["check", "--repo", &w.url]);
    assert!(!ok && err.contains("freeze attack"), "{err}");
    let snapshot_before: Vec<_> = std::fs::read_dir(w.repo.join("metadata")).unwrap().flatten().map(|e| e.file_name()).collect();
    let root_s = s(&w.root).to_string();
    let repo_s = s(&w.repo).to_string();
    // The wrong key (targets) cannot sign the timestamp; the repository is unchanged.
    let before = std::fs::read(w.repo.join("metadata/timestamp.json")).unwrap();
    let (ok, err) = release_tool(&["timestamp", "--root", &root_s, "--key", s(&w.keys.k("targets")), "--out", &repo_s]);
    assert!(!ok && err.contains("threshold"), "{err}");
    assert_eq!(std::fs::read(w.repo.join("metadata/timestamp.json")).unwrap(), before);
    // A timestamp that would outlive the snapshot (30 days here) is refused: that needs a release.
    let (ok, err) = release_tool(&["timestamp", "--root", &root_s, "--key", s(&w.keys.k("timestamp")), "--expires-days", "60", "--out", &repo_s]);
    assert!(!ok && err.contains("publish a new release"), "{err}");
    // The timestamp key re-signs it: the node accepts the same release again.
    let (ok, err) = release_tool(&["timestamp", "--root", &root_s, "--key", s(&w.keys.k("timestamp")), "--out", &repo_s]);
    assert!(ok, "{err}");
    let ts: serde_json::Value = serde_json::from_slice(&std::fs::read(w.repo.join("metadata/timestamp.json")).unwrap()).unwrap();
    assert!(ts["signed"]["version"].as_u64().unwrap() > 10);
    assert_eq!(ts["signed"]["meta"]["snapshot.json"]["version"], 10, "the same snapshot");
    let after: Vec<_> = std::fs::read_dir(w.repo.join("metadata")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(after.len(), snapshot_before.len(), "no new snapshot or targets");
    let (ok, out, err) = w.update(&["check"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["latest"].as_str(), v["available"].as_bool()), (Some("99.0.0"), Some(true)));
    // A second re-sign grows the version again; the node's stored timestamp is not replayable.
    let (ok, err) = release_tool(&["timestamp", "--root", &root_s, "--key", s(&w.keys.k("timestamp")), "--out", &repo_s]);
    assert!(ok, "{err}");
    let (ok, _, err) = w.update(&["check"]);
    assert!(ok, "{err}");
}

/// A real control plane (the b3iq-control library over HTTPS with its self-signed certificate,
/// SQLite store) serving the signed repository in `<dir>/releases` under `/releases/`.
struct Control {
    cp: std::sync::Arc<b3iq_control::ControlPlane>,
    url: String,
    ca: PathBuf,
    org: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn control(dir: &Path) -> Control {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("control.json"), r#"{"heartbeat_interval_s": 1}"#).unwrap();
    let home = b3iq_control::ControlHome::locate(Some(dir.to_path_buf())).unwrap();
    let (settings, cp) = home.open().await.unwrap();
    let tls = home.tls(&settings).unwrap();
    let now = b3iq_host::context::unix_now_ms();
    let org = cp.create_org("acme", now).await.unwrap();
    cp.create_operator(&org.id, "alice", "a long operator password", now).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (cp2, releases) = (cp.clone(), dir.join("releases"));
    tokio::spawn(async move {
        b3iq_control::home::serve_full(listener, cp2, None, Some(releases), &tls, rx).await
    });
    Control { cp, url, ca: dir.join("tls/self-signed.crt.pem"), org: org.id, _stop: tx }
}

/// The node's view of one of its jobs (`GET /api/jobs/{id}` with the owner's cookie).
async fn node_job(c: &reqwest::Client, base: &str, cookie: &str, id: &str) -> serde_json::Value {
    let v: serde_json::Value = c
        .get(format!("{base}/api/jobs/{id}"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if v["job"].is_object() { v["job"].clone() } else { v }
}

async fn wait_until<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_job_from_the_control_plane_waits_for_the_owner_then_installs_the_signed_release() {
    let w = World::new("job").await;
    let ctl = control(&w.dir.join("control")).await;
    // The release: this very daemon with a marker appended (still a runnable ELF), signed into
    // the control plane's release repository.
    let old = std::fs::read(&w.bin).unwrap();
    let mut new = old.clone();
    new.extend_from_slice(b"\0b3iq-update-job-test");
    let newf = w.dir.join("b3iqd-99");
    std::fs::write(&newf, &new).unwrap();
    w.publish_to(&w.release("99.0.0", &newf, 10), &w.dir.join("control/releases")).await;
    let repo = format!("{}/releases", ctl.url);

    // The repository over the control plane's self-signed TLS: refused without its certificate,
    // verified with `--ca-file` (saved for the daemon's later jobs).
    let (ok, _, err) = w.update(&["check", "--repo", &repo]);
    assert!(!ok && err.contains("repository unavailable"), "{err}");
    // config.json's update_ca_file is the same setting.
    std::fs::write(w.home.join("config.json"), serde_json::json!({"update_ca_file": s(&ctl.ca)}).to_string()).unwrap();
    let (ok, _, err) = w.update(&["check"]);
    assert!(ok, "update_ca_file in config.json: {err}");
    std::fs::remove_file(w.home.join("config.json")).unwrap();
    let (ok, _, err) = w.update(&["check"]);
    assert!(!ok && err.contains("repository unavailable"), "{err}");
    let (ok, out, err) = w.update(&["check", "--ca-file", s(&ctl.ca)]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["latest"].as_str(), v["available"].as_bool()), (Some("99.0.0"), Some(true)));
    let (ok, _, err) = w.update(&["check", "--ca-file", s(&w.dir.join("repo"))]);
    assert!(!ok && err.contains("--ca-file"), "a directory is not a certificate: {err}");

    // The node runs from the installed copy on a fixed port (a restart keeps the address).
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut d = common::Daemon::start_exe(&w.bin, &w.home, &["--no-model", "--listen", &listen]);
    let c = common::client();
    let cookie = common::claim(&d, &c).await;
    let (_, token) = ctl.cp.create_enrollment_token(&ctl.org, 600_000, b3iq_host::context::unix_now_ms()).await.unwrap();
    let tok = w.dir.join("token");
    std::fs::write(&tok, format!("{token}\n")).unwrap();
    let out = Command::new(&w.bin)
        .args(["--home", s(&w.home), "enroll", "--control", &ctl.url, "--token-file", s(&tok), "--ca-file", s(&ctl.ca)])
        .env_remove("B3IQ_HOME")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The operator's view through the admin API: the node reports its version in heartbeats.
    let admin = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ctl.ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let session: serde_json::Value = admin
        .post(format!("{}/v1/admin/session", ctl.url))
        .json(&serde_json::json!({"username": "alice", "password": "a long operator password"}))
        .send().await.unwrap().json().await.unwrap();
    let bearer = format!("Bearer {}", session["session"].as_str().unwrap());
    let node_id = {
        let st = Command::new(&w.bin).args(["--home", s(&w.home), "status"]).env_remove("B3IQ_HOME").output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
        v["node_id"].as_str().unwrap().to_string()
    };
    let get_node = || async {
        admin.get(format!("{}/v1/admin/nodes/{node_id}", ctl.url)).header("authorization", &bearer)
            .send().await.unwrap().json::<serde_json::Value>().await.unwrap()
    };
    wait_until("a heartbeat with the node's version", 60, || async {
        get_node().await["software_version"] == env!("CARGO_PKG_VERSION")
    }).await;
    assert_eq!(get_node().await["last_heartbeat"]["body"]["software_version"], env!("CARGO_PKG_VERSION"));

    let jobs_url = format!("{}/v1/admin/nodes/{node_id}/jobs", ctl.url);
    let queue = |kind: serde_json::Value| {
        let (admin, bearer, jobs_url) = (admin.clone(), bearer.clone(), jobs_url.clone());
        async move {
            admin.post(&jobs_url).header("authorization", &bearer).json(&serde_json::json!({"kind": kind}))
                .send().await.unwrap()
        }
    };
    // The job names no URL or binary: a job that tries is refused by the control plane.
    let r = queue(serde_json::json!({"type": "update", "url": "https://evil.example/b3iqd"})).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = queue(serde_json::json!({"type": "update", "version": "latest"})).await;
    assert_eq!(r.status(), 400, "a version that is not SemVer");
    let job_state = |id: String| {
        let (admin, bearer, jobs_url) = (admin.clone(), bearer.clone(), jobs_url.clone());
        async move {
            let v: serde_json::Value = admin.get(&jobs_url).header("authorization", &bearer)
                .send().await.unwrap().json().await.unwrap();
            v["jobs"].as_array().unwrap().iter().find(|j| j["job_id"] == id.as_str()).cloned().unwrap()
        }
    };

    // Queued for 99.0.0: delivered, then it waits for the owner; nothing is installed yet.
    let r = queue(serde_json::json!({"type": "update", "version": "99.0.0"})).await;
    assert_eq!(r.status(), 201);
    let job: serde_json::Value = r.json().await.unwrap();
    let cp_id = job["job_id"].as_str().unwrap().to_string();
    let id = format!("job_{cp_id}");
    wait_until("the update job to wait for the owner", 60, || async {
        node_job(&c, &d.base, &cookie, &id).await["state"] == "awaiting_approval"
    }).await;
    assert_eq!(job_state(cp_id.clone()).await["state"], "delivered");
    assert_eq!(std::fs::read(&w.bin).unwrap(), old, "nothing installed before the owner approves");

    // The owner approves: the signed release is installed, serve restarts on it, and the
    // signed result reaches the control plane (from the outbox, across the restart).
    let pid = d.child.id();
    let r = c.post(format!("{}/api/jobs/{id}/approve", d.base)).header("cookie", &cookie)
        .json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    wait_until("the update job's result at the control plane", 120, || async {
        job_state(cp_id.clone()).await["finished_at_ms"].is_u64()
    }).await;
    let done = job_state(cp_id.clone()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let sha = b3iq_core::digest::Sha256Digest::of(&new).to_hex();
    assert_eq!(done["result"]["type"], "updated", "{done}");
    assert_eq!(done["result"]["previous"], env!("CARGO_PKG_VERSION"));
    assert_eq!(done["result"]["installed"], "99.0.0");
    assert!(done["result"]["sha256"].as_str().unwrap().ends_with(&sha), "{done}");
    assert_eq!(std::fs::read(&w.bin).unwrap(), new, "the signed release is installed");
    assert_eq!(std::fs::read(sibling(&w.bin, "previous")).unwrap(), old, "the old binary is kept");
    wait_until("serve to restart on the new binary", 60, || async {
        d.logs().contains("restarting on the new binary")
    }).await;
    assert_eq!(d.child.id(), pid);
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon runs: {}", d.logs());
    wait_until("the restarted node to answer", 60, || async {
        c.get(format!("{}/healthz", d.base)).send().await.is_ok_and(|r| r.status() == 200)
    }).await;

    // A job that asks for a release newer than the signed current one installs nothing.
    let r = queue(serde_json::json!({"type": "update", "version": "100.0.0"})).await;
    let cp_id2 = r.json::<serde_json::Value>().await.unwrap()["job_id"].as_str().unwrap().to_string();
    let id2 = format!("job_{cp_id2}");
    wait_until("the second update job to wait for the owner", 60, || async {
        node_job(&c, &d.base, &cookie, &id2).await["state"] == "awaiting_approval"
    }).await;
    let r = c.post(format!("{}/api/jobs/{id2}/approve", d.base)).header("cookie", &cookie)
        .json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    wait_until("the second job's result", 120, || async {
        job_state(cp_id2.clone()).await["finished_at_ms"].is_u64()
    }).await;
    let done = job_state(cp_id2.clone()).await;
    assert_eq!((done["state"].as_str(), done["code"].as_str()), (Some("failed"), Some("update_older_than_requested")), "{done}");
    assert_eq!(std::fs::read(&w.bin).unwrap(), new, "nothing else was installed");
    d.stop();
}
