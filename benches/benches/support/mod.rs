//! What the custom-harness benches that start real servers share (`control_ingest`, `gateway`):
//! parameters from the environment, the workspace's binaries beside the bench, child processes
//! and their CPU from /proc, `b3iq-control serve` and `b3iqd serve` on loopback, claiming a node,
//! parallel signing before the clock, and the machine's description in each result line.
//! Each bench uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The env var `name` parsed, or `default`.
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Wall clock, unix ms.
pub fn now_ms() -> u64 {
    b3iq_host::context::unix_now_ms()
}

// ---- processes and CPU accounting -------------------------------------------------------------

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// What a /proc/.../stat file says of a process or thread.
pub struct Stat {
    /// Command (thread) name.
    pub comm: String,
    /// User + system CPU seconds.
    pub cpu_s: f64,
    /// Parent pid.
    pub ppid: u32,
}

/// Reads a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat file (proc(5): after the command
/// in parentheses come state(0) ppid(1) ... utime(11) stime(12), in clock ticks).
pub fn stat_file(path: &str) -> Option<Stat> {
    let s = std::fs::read_to_string(path).ok()?;
    let (open, close) = (s.find('(')?, s.rfind(')')?);
    let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Stat {
        comm: s[open + 1..close].to_string(),
        cpu_s: ticks as f64 / clk_tck(),
        ppid: f.get(1)?.parse().ok()?,
    })
}

/// CPU seconds of a process (0 once it is gone).
pub fn cpu_s(pid: u32) -> f64 {
    stat_file(&format!("/proc/{pid}/stat"))
        .map(|s| s.cpu_s)
        .unwrap_or(0.0)
}

/// CPU seconds of `pid` and its live children (a postmaster and its backends).
pub fn cpu_tree_s(pid: u32) -> f64 {
    let mut total = cpu_s(pid);
    if let Ok(d) = std::fs::read_dir("/proc") {
        for e in d.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                if let Some(s) = stat_file(&format!("/proc/{p}/stat")) {
                    if s.ppid == pid {
                        total += s.cpu_s;
                    }
                }
            }
        }
    }
    total
}

/// CPU seconds of this process's threads whose name starts with `prefix`, and of the others.
pub fn own_threads_cpu_s(prefix: &str) -> (f64, f64) {
    let (mut named, mut rest) = (0.0, 0.0);
    if let Ok(d) = std::fs::read_dir("/proc/self/task") {
        for e in d.flatten() {
            if let Some(s) = stat_file(&format!("{}/stat", e.path().display())) {
                if s.comm.starts_with(prefix) {
                    named += s.cpu_s;
                } else {
                    rest += s.cpu_s;
                }
            }
        }
    }
    (named, rest)
}

/// Resident set size of a process, KiB (`VmRSS` of /proc/<pid>/status).
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The workspace binaries, built in the same profile beside this bench (`target/<profile>/`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p b3iq-control-daemon -p b3iqd` first (same profile), or the bench through `cargo xtask bench-control` / `bench-gateway`",
        p.display()
    );
    p
}

/// A child process killed (and reaped) when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (at most 3 minutes) for a line containing `marker` on `child`'s stderr (or stdout)
/// and returns it; the pipe is drained afterwards so the child never blocks on it.
pub fn wait_line(child: &mut Child, marker: &'static str, stdout: bool) -> String {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    let pipe: Box<dyn std::io::Read + Send> = if stdout {
        Box::new(child.stdout.take().expect("stdout piped"))
    } else {
        Box::new(child.stderr.take().expect("stderr piped"))
    };
    std::thread::spawn(move || {
        let mut sent = false;
        for l in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if !sent && l.contains(marker) {
                let _ = tx.send(l);
                sent = true;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(180))
        .unwrap_or_else(|_| panic!("no {marker:?} line from the child process"))
}

/// `b3iq-control serve` (control plane and gateway) on a free loopback port: the process and
/// its URL (no trailing slash).
pub fn serve_control(home: &Path) -> (KillOnDrop, String) {
    let mut cmd = Command::new(workspace_bin("b3iq-control"));
    cmd.arg("--home")
        .arg(home)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "warn");
    let mut child = cmd.spawn().expect("spawn b3iq-control");
    let line = wait_line(&mut child, "serving https://", false);
    let url = line[line.find("https://").unwrap()..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    (KillOnDrop(child), url)
}

/// A real `b3iqd serve` with the default model (`$B3IQ_TEST_MODEL`).
pub struct RealNode {
    pub child: KillOnDrop,
    pub home: PathBuf,
    pub base: String,
}

/// Starts `b3iqd serve` on a free loopback port with its home at `home`; `parallel` (the
/// number of sequences decoded together) goes to its config.json when given.
pub fn start_b3iqd(home: &Path, parallel: Option<u32>) -> RealNode {
    let model = std::env::var_os("B3IQ_TEST_MODEL")
        .filter(|m| !m.is_empty())
        .expect("the default model is needed: set B3IQ_TEST_MODEL (scripts/fetch-model)");
    std::fs::create_dir_all(home).unwrap();
    if let Some(parallel) = parallel {
        let mut cfg = serde_json::to_value(b3iq_host::Config::default()).unwrap();
        cfg["parallel"] = json!(parallel);
        std::fs::write(
            home.join("config.json"),
            serde_json::to_vec_pretty(&cfg).unwrap(),
        )
        .unwrap();
    }
    let mut child = Command::new(workspace_bin("b3iqd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--model"])
        .arg(&model)
        .env("B3IQ_HOME", home)
        .env("B3IQ_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn b3iqd");
    // The address is on stdout ("listening on http://...").
    let line = wait_line(&mut child, "listening on http", true);
    let base = line[line.find("http").unwrap()..]
        .trim()
        .trim_end_matches('/')
        .to_string();
    RealNode {
        child: KillOnDrop(child),
        home: home.to_path_buf(),
        base,
    }
}

/// Claims a fresh node with its setup token (owner "owner"); returns the session cookie.
pub async fn claim(n: &RealNode, c: &reqwest::Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let tok = loop {
        match std::fs::read_to_string(n.home.join("setup-token")) {
            Ok(t) if !t.trim().is_empty() => break t.trim().to_string(),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            _ => panic!("no setup-token in {}", n.home.display()),
        }
    };
    let r = c.post(format!("{}/api/setup/claim", n.base)).json(&json!({"setup_token": tok, "username": "owner", "password": "correct horse battery staple"})).send().await.unwrap();
    assert_eq!(r.status(), 201, "claim");
    r.headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// `f(0..n)` on every core (signing is a load generator's heavy work; it runs before the clock).
pub fn par_map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let chunk = n.div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                s.spawn(move || (start..(start + chunk).min(n)).map(f).collect::<Vec<T>>())
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    })
}

/// The machine and build a result line was measured on.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "loadavg_at_end": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": model,
        "mem": mem.split_whitespace().skip(1).collect::<Vec<_>>().join(" "),
        "build": std::env::var("B3IQ_BENCH_BUILD").unwrap_or_else(|_| if cfg!(debug_assertions) { "dev".into() } else { "release".into() }),
    })
}
