//! Shared helpers: start the real `b3iqd` binary on a free loopback port with the default model.
#![allow(dead_code)]

pub mod net;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const PASSWORD: &str = "correct horse battery staple";

/// The default model: `$B3IQ_TEST_MODEL`, else `scripts/fetch-model`. Missing model = failure.
pub fn model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("B3IQ_TEST_MODEL").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "B3IQ_TEST_MODEL={} is not a file; run scripts/fetch-model",
            p.display()
        );
        return p;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("python3")
        .arg(repo.join("scripts/fetch-model"))
        .output()
        .expect("the default model is needed: set B3IQ_TEST_MODEL or make scripts/fetch-model work (python3)");
    assert!(
        out.status.success(),
        "scripts/fetch-model failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    assert!(
        p.is_file(),
        "scripts/fetch-model printed {}, which is not a file",
        p.display()
    );
    p
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_b3iqd")
}

/// A running daemon.
pub struct Daemon {
    pub child: Child,
    pub base: String,
    pub home: PathBuf,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
    pub setup_token: Option<String>,
}

fn pump(
    r: impl std::io::Read + Send + 'static,
    buf: Arc<Mutex<String>>,
    tx: Option<std::sync::mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        let br = BufReader::new(r);
        for line in br.lines().map_while(Result::ok) {
            if let Some(tx) = &tx {
                let _ = tx.send(line.clone());
            }
            let mut b = buf.lock().unwrap();
            b.push_str(&line);
            b.push('\n');
        }
    });
}

impl Daemon {
    /// Start `b3iqd serve` with `home` and wait until it listens.
    pub fn start(home: &Path) -> Daemon {
        Self::start_with(home, &[])
    }

    pub fn start_with(home: &Path, extra: &[&str]) -> Daemon {
        let model = model_path();
        let mut args = vec!["--listen", "127.0.0.1:0", "--model", model.to_str().unwrap()];
        args.extend_from_slice(extra);
        Self::start_exe(Path::new(bin()), home, &args)
    }

    /// Start `EXE serve ARGS` (another copy of the daemon, e.g. one an update may replace) with
    /// `home` and wait until it listens.
    pub fn start_exe(exe: &Path, home: &Path, args: &[&str]) -> Daemon {
        Self::start_exe_env(exe, home, args, &[])
    }

    /// As [`Daemon::start_exe`], with extra environment variables.
    pub fn start_exe_env(exe: &Path, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(exe);
        cmd.arg("serve").args(args);
        cmd.envs(env.iter().copied());
        cmd.env("B3IQ_HOME", home).env(
            "B3IQ_LOG",
            "debug,llama_cpp_2=warn,llama-cpp-2=warn,hyper=info",
        );
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn b3iqd");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        pump(child.stdout.take().unwrap(), stdout.clone(), Some(tx));
        pump(child.stderr.take().unwrap(), stderr.clone(), None);
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut base = None;
        let mut unclaimed = false;
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(i) = line.find("listening on http") {
                        base = Some(line[i + "listening on ".len()..].trim().to_string());
                        // The line about the setup token (if any) follows within the next few
                        // (after the TLS certificate's, when serving over TLS).
                        while let Ok(l2) = rx.recv_timeout(Duration::from_millis(500)) {
                            if l2.contains("not claimed yet") {
                                unclaimed = true;
                                break;
                            }
                        }
                        break;
                    }
                }
                Err(_) => {
                    if let Ok(Some(st)) = child.try_wait() {
                        panic!("b3iqd exited early ({st}): {}", stderr.lock().unwrap());
                    }
                }
            }
        }
        // Stdout is a pipe, not a terminal: the daemon names the token file instead of printing
        // the token (it must never reach a log).
        let setup_token = unclaimed.then(|| {
            std::fs::read_to_string(home.join("setup-token"))
                .expect("setup-token file")
                .trim()
                .to_string()
        });
        let base =
            base.unwrap_or_else(|| panic!("b3iqd did not start: {}", stderr.lock().unwrap()));
        Daemon {
            child,
            base,
            home: home.to_path_buf(),
            stdout,
            stderr,
            setup_token,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        unsafe_sigterm(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill9();
    }

    pub fn rss_kb(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// Claim the node and return the session cookie value.
pub async fn claim(d: &Daemon, c: &reqwest::Client) -> String {
    let tok = d
        .setup_token
        .clone()
        .expect("setup URL printed on first start");
    let r = c
        .post(d.url("/api/setup/claim"))
        .json(&json!({"setup_token": tok, "username": "owner", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    cookie.split(';').next().unwrap().to_string()
}

/// Create a key with the owner cookie.
pub async fn create_key(
    d: &Daemon,
    c: &reqwest::Client,
    cookie: &str,
    scopes: &[&str],
) -> (String, String) {
    let r = c
        .post(d.url("/api/keys"))
        .header("cookie", cookie)
        .json(&json!({"name": "test", "scopes": scopes}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    (
        v["key"]["id"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    )
}

pub async fn model_id(d: &Daemon, c: &reqwest::Client, key: &str) -> String {
    let v: Value = c
        .get(d.url("/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"][0]["id"].as_str().unwrap().to_string()
}

/// Parse an SSE body into its `data:` payloads.
pub fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(|s| s.to_string())
        })
        .collect()
}

/// A fresh directory for one test under cargo's per-target temp dir (`CARGO_TARGET_TMPDIR`, set
/// at compile time for integration tests), so homes left behind for a post-mortem stay inside
/// the build directory instead of piling up in /tmp; each run's names are unique.
pub fn tempdir(name: &str) -> PathBuf {
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!(
        "b3iqd-{name}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Write `config.json` in `home`: the defaults with `patch`'s fields replaced.
pub fn write_config(home: &std::path::Path, patch: Value) {
    std::fs::create_dir_all(home).unwrap();
    let mut cfg = serde_json::to_value(b3iq_host::Config::default()).unwrap();
    for (k, v) in patch.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    std::fs::write(
        home.join("config.json"),
        serde_json::to_vec_pretty(&cfg).unwrap(),
    )
    .unwrap();
}
