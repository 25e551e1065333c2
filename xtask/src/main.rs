//! B3IQ task runner. Every step CI runs lives here, so anyone can run the same thing locally.
//!
//! ```text
//! cargo xtask up        # build b3iqd, fetch the default model if absent, start a local node
//! cargo xtask test      # the whole test suite (what .ci/run calls)
//! ```
//!
//! The runner itself uses only the standard library, so it builds in seconds on a fresh machine
//! before any system package is installed.

use std::collections::BTreeMap;
use std::env;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

const HELP: &str = "\
cargo xtask: the B3IQ task runner

USAGE:
    cargo xtask <COMMAND> [ARGS]

COMMANDS:
    up [SERVE ARGS...]   Install what is missing, fetch the default model (checked by sha256),
                         build b3iqd (release) and run `b3iqd serve` with it. Extra arguments go to
                         `b3iqd serve`, e.g. `cargo xtask up --listen 127.0.0.1:7421`.
    demo [--check]       The network demo on loopback: a control plane with its gateway on
                         https://127.0.0.1:7430, a node with the default model in network mode
                         (it dials the gateway), a gateway key with credits, and one paid request
                         settled against the node's receipt. Runs until Ctrl-C; `--check` stops
                         after the request. Homes in ~/.cache/b3iq/demo, or $B3IQ_DEMO_HOME
                         (wiped at each start); B3IQ_UP_PROFILE=dev reuses the test build.
    test [--only STEP]   Run the whole test suite: system packages, Python venv, model, contracts,
                         `cargo test` (default members), then the daemon, wizard, explorer and binding suites.
                         `--only` runs one step (see `cargo xtask steps`).
    steps                List the steps of `test`.
    deps                 Install the Debian and Python packages the suite needs, and nothing else.
    fetch-model          Fetch the default model into ~/.cache/b3iq/models and print its path.
    release VERSION [NOTES]
                         Build b3iqd and b3iq-control (release profile) and sign them into the
                         TUF repository $B3IQ_RELEASE_REPO (default target/release-repo) with the
                         keys in $B3IQ_RELEASE_KEYS (default ~/.cache/b3iq/release-keys; made on
                         first use, dev keys only) and the root $B3IQ_RELEASE_KEYS/root.json
                         (docs/release.md). Keys are read from files, never from arguments.
    vectors              Regenerate the golden test vectors in testdata/vectors/.
    fuzz SECONDS         Run every fuzz target for SECONDS each (needs cargo-fuzz).
    sim [--seeds N | --seed S]
                         The seeded simulation of nodes and the control plane under faults
                         (b3iq-control/tests/sim.rs): N seeds (default 2,000; CI runs 200), or
                         one seed S with its event trace printed. A failing seed prints the
                         command that replays it.
    bench                Run the criterion benchmarks (release profile).
    bench-control [--smoke]
                         Control-plane ingestion: 10,000 simulated nodes' signed heartbeats and
                         receipt uploads against the real `b3iq-control` over HTTPS, on SQLite
                         and Postgres, and a managed b3iqd's idle CPU and RSS against a local
                         one (the test build's dev profile with the request path's crates at
                         opt-level 3; `--dev`: without; about 6 min, results appended to
                         benches/results/control_ingest.jsonl). `--smoke`: a few seconds of
                         each ingestion path, nothing written.
    bench-gateway [--smoke]
                         The hosted gateway: a real b3iqd in network mode through the gateway and
                         its tunnel against the same node called directly (tokens/s at
                         concurrency 1, 4, 8; TTFT added), and the gateway alone in front of a
                         fake node speaking the tunnel protocol (requests/s, p99 added latency,
                         CPU split); same build as bench-control (about 5 min, results appended
                         to benches/results/gateway.jsonl). `--smoke`: seconds, nothing written.

ENVIRONMENT:
    CARGO_TARGET_DIR     Build directory (default ~/.cache/b3iq/target, outside the clone, so
                         repeated runs and fresh clones reuse builds).
    B3IQ_MODEL_CACHE     Where the default model is cached (default ~/.cache/b3iq/models).
    B3IQ_VENV            Python virtualenv for the test tools (default ~/.cache/b3iq/venv).
    B3IQ_UP_PROFILE      `release` (default) or `dev` (reuse the test suite's build) for `up`.
    B3IQ_SKIP_DEPS=1     Do not try to install Debian packages (fail instead if one is missing).

EXAMPLES:
    cargo xtask up
    cargo xtask test
    cargo xtask test --only cargo-test
";

/// Crates a control plane's request spends its time in (HTTP/2, TLS, JSON, the stores'
/// clients, the plane): `bench-control` builds them at opt-level 3.
const HOT_PATH_CRATES: &[&str] = &[
    "tokio",
    "mio",
    "hyper",
    "hyper-util",
    "h2",
    "http",
    "http-body",
    "http-body-util",
    "bytes",
    "rustls",
    "ring",
    "tokio-rustls",
    "axum",
    "axum-core",
    "matchit",
    "tower",
    "serde",
    "serde_core",
    "serde_json",
    "hex",
    "tokio-postgres",
    "postgres-protocol",
    "postgres-types",
    "deadpool-postgres",
    "deadpool",
    "rusqlite",
    "tracing",
    "futures-util",
    "indexmap",
    "hashbrown",
    "smallvec",
    "slab",
    "b3iq-core",
    "b3iq-protocol",
    "b3iq-control",
    "b3iq-host",
    "b3iq-control-daemon",
    "b3iq-benches",
    "reqwest",
    "hyper-rustls",
    "blake3",
    "sha2",
    "base64",
    "itoa",
    "ryu",
    "memchr",
];

/// Steps of `cargo xtask test`, in order. Script steps run only if their script exists, so a
/// suite joins CI by committing its `ci.sh`.
const SCRIPT_STEPS: &[(&str, &str)] = &[
    ("daemon-clients", "apps/b3iqd/ci.sh"),
    ("wizard", "apps/setup-wizard/ci.sh"),
    ("explorer", "apps/explorer/ci.sh"),
    ("python-binding", "bindings/python/ci.sh"),
    ("node-binding", "bindings/node/ci.sh"),
    ("swift-binding", "bindings/swift/ci.sh"),
];

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        print!("{HELP}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let ctx = match Ctx::new() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cmd.as_str() {
        "up" => ctx.up(rest),
        "demo" => ctx.demo(rest),
        "test" => ctx.test(rest),
        "steps" => {
            for s in ctx.test_steps() {
                println!("{}", s.name);
            }
            Ok(())
        }
        "deps" => ctx.deps(),
        "fetch-model" => ctx.fetch_model().map(|p| println!("{}", p.display())),
        "vectors" => ctx.run(ctx.cargo(&["run", "-p", "b3iq-core", "--example", "gen-vectors"])),
        "fuzz" => {
            let secs = rest.first().map(String::as_str).unwrap_or("60");
            ctx.run(ctx.cmd("bash", &["fuzz/run.sh", secs]))
        }
        "sim" => ctx.sim(rest),
        "bench" => ctx.run(ctx.cargo(&["bench", "--workspace"])),
        "release" => ctx.release(rest),
        "bench-control" => ctx.bench_control(rest),
        "bench-gateway" => ctx.bench_gateway(rest),
        "-h" | "--help" | "help" => {
            print!("{HELP}");
            Ok(())
        }
        other => Err(format!(
            "unknown command `{other}`; run `cargo xtask --help`"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Ctx {
    root: PathBuf,
    target_dir: PathBuf,
    venv: PathBuf,
}

struct Step {
    name: &'static str,
    kind: StepKind,
}

enum StepKind {
    Deps,
    Model,
    Script(&'static str),
    CargoTest,
}

impl Ctx {
    fn new() -> Result<Self, String> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or("xtask has no parent directory")?
            .to_path_buf();
        let home = env::var_os("HOME")
            .map(PathBuf::from)
            .ok_or("HOME is not set")?;
        let target_dir = env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".cache/b3iq/target"));
        let venv = env::var_os("B3IQ_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".cache/b3iq/venv"));
        Ok(Ctx {
            root,
            target_dir,
            venv,
        })
    }

    fn test_steps(&self) -> Vec<Step> {
        let mut steps = vec![
            Step {
                name: "deps",
                kind: StepKind::Deps,
            },
            Step {
                name: "model",
                kind: StepKind::Model,
            },
            Step {
                name: "contracts",
                kind: StepKind::Script("contracts/ci.sh"),
            },
            Step {
                name: "cargo-test",
                kind: StepKind::CargoTest,
            },
        ];
        steps.extend(SCRIPT_STEPS.iter().map(|&(name, script)| Step {
            name,
            kind: StepKind::Script(script),
        }));
        steps
    }

    /// PATH with the venv's bin first, so scripts find pytest, maturin and friends.
    fn path_env(&self) -> OsString {
        let mut parts = vec![self.venv.join("bin")];
        if let Some(p) = env::var_os("PATH") {
            parts.extend(env::split_paths(&p));
        }
        env::join_paths(parts).unwrap_or_default()
    }

    fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args)
            .current_dir(&self.root)
            .env("CARGO_TARGET_DIR", &self.target_dir)
            .env("B3IQ_REPO", &self.root)
            .env("PATH", self.path_env());
        // Every step shares `cargo test`'s units (b3iq-workspace-hack, tests/shared_build.rs), so
        // llama.cpp is compiled once per run. ccache still pays across runs: a changed feature set
        // or a new llama-cpp-sys-2 build directory recompiles llama.cpp from cache hits
        // (llama-cpp-sys-2 forwards CMAKE_* variables to CMake).
        if env::var_os("CMAKE_C_COMPILER_LAUNCHER").is_none() && on_path("ccache") {
            c.env("CMAKE_C_COMPILER_LAUNCHER", "ccache")
                .env("CMAKE_CXX_COMPILER_LAUNCHER", "ccache");
            if env::var_os("CCACHE_NOHASHDIR").is_none() {
                // The build directory differs per hash; without this, -g builds never hit.
                c.env("CCACHE_NOHASHDIR", "1");
            }
            if env::var_os("CCACHE_BASEDIR").is_none() {
                c.env("CCACHE_BASEDIR", &self.target_dir);
            }
        }
        c
    }

    fn cargo(&self, args: &[&str]) -> Command {
        let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        self.cmd(&cargo, args)
    }

    /// `cargo xtask release VERSION [NOTES]` (docs/release.md).
    fn release(&self, args: &[String]) -> Result<(), String> {
        let version = args.first().ok_or("usage: cargo xtask release VERSION [NOTES]")?;
        let notes = args.get(1).cloned().unwrap_or_default();
        let home = env::var_os("HOME").map(PathBuf::from).ok_or("HOME is not set")?;
        let keys = env::var_os("B3IQ_RELEASE_KEYS").map(PathBuf::from).unwrap_or_else(|| home.join(".cache/b3iq/release-keys"));
        let repo = env::var_os("B3IQ_RELEASE_REPO").map(PathBuf::from).unwrap_or_else(|| self.target_dir.join("release-repo"));
        self.run(self.cargo(&["build", "--locked", "--release", "-p", "b3iqd", "-p", "b3iq-control-daemon"]))?;
        let bin = self.target_dir.join("release");
        let tool = bin.join("b3iq-release").display().to_string();
        let k = |n: &str| keys.join(format!("{n}.key")).display().to_string();
        self.run(self.cmd(&tool, &["keys", "--dir", &keys.display().to_string()]))?;
        let root = keys.join("root.json");
        if !root.exists() {
            let (r1, r2, r3) = (k("root-1"), k("root-2"), k("root-3"));
            let (t, s, ts) = (k("targets"), k("snapshot"), k("timestamp"));
            let out = root.display().to_string();
            self.run(self.cmd(&tool, &["root", "--root-key", &r1, "--root-key", &r2, "--root-key", &r3, "--targets-key", &t, "--snapshot-key", &s, "--timestamp-key", &ts, "--sign", &r1, "--sign", &r2, "--out", &out]))?;
        }
        let (os, arch) = (env::consts::OS, env::consts::ARCH);
        let f1 = format!("b3iqd-{os}-{arch}={}", bin.join("b3iqd").display());
        let f2 = format!("b3iq-control-{os}-{arch}={}", bin.join("b3iq-control").display());
        let (t, s, ts) = (k("targets"), k("snapshot"), k("timestamp"));
        let root_s = root.display().to_string();
        let repo_s = repo.display().to_string();
        self.run(self.cmd(&tool, &["publish", "--root", &root_s, "--version", version, "--notes", &notes, "--file", &f1, "--file", &f2, "--key", &t, "--key", &s, "--key", &ts, "--out", &repo_s]))?;
        println!("xtask: signed release {version} in {}", repo.display());
        Ok(())
    }

    fn run(&self, mut c: Command) -> Result<(), String> {
        let shown = format!("{c:?}");
        let status = c
            .status()
            .map_err(|e| format!("could not start {shown}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{shown} failed with {status}"))
        }
    }

    /// `bench-control`: the binaries the benchmark starts, then the benchmark, in the test
    /// suite's dev profile with the request path's crates at opt-level 3 ([`HOT_PATH_CRATES`]):
    /// release-like where the time goes, without a second build of llama.cpp and wgpu (a
    /// release build of b3iq-control compiles both). `--dev` keeps the plain test build.
    fn bench_control(&self, rest: &[String]) -> Result<(), String> {
        self.bench_with_servers("control_ingest", rest)
    }

    /// `bench-gateway`: as `bench-control`, with `benches/benches/gateway.rs` (the gateway and
    /// its tunnel against the node called directly, and in front of a fake node).
    fn bench_gateway(&self, rest: &[String]) -> Result<(), String> {
        self.bench_with_servers("gateway", rest)
    }

    /// Builds `b3iq-control` and `b3iqd`, then runs `bench` (a custom-harness bench that starts
    /// them) in the same profile.
    fn bench_with_servers(&self, bench: &str, rest: &[String]) -> Result<(), String> {
        let smoke = rest.iter().any(|a| a == "--smoke");
        let mut opt = Vec::new();
        if !rest.iter().any(|a| a == "--dev") {
            for c in HOT_PATH_CRATES {
                opt.push("--config".to_string());
                opt.push(format!("profile.dev.package.{c}.opt-level=3"));
            }
        }
        let with = |args: &[&str]| {
            let mut a: Vec<&str> = args.to_vec();
            a.extend(opt.iter().map(String::as_str));
            self.cargo(&a)
        };
        self.run(with(&["build", "-p", "b3iq-control-daemon", "-p", "b3iqd"]))?;
        let mut c = with(&[
            "bench",
            "-p",
            "b3iq-benches",
            "--bench",
            bench,
            "--profile",
            "dev",
        ]);
        c.env(
            "B3IQ_BENCH_BUILD",
            if opt.is_empty() {
                "dev"
            } else {
                "dev, request-path crates at opt-level 3"
            },
        );
        if smoke {
            c.env("SMOKE", "1");
        } else if env::var_os("B3IQ_TEST_MODEL").is_none() {
            c.env("B3IQ_TEST_MODEL", self.fetch_model()?);
        }
        self.run(c)
    }

    fn sim(&self, args: &[String]) -> Result<(), String> {
        let usage = "usage: cargo xtask sim [--seeds N | --seed S]";
        let mut c = self.cargo(&[
            "test",
            "-p",
            "b3iq-control",
            "--test",
            "sim",
            "seeded",
            "--",
            "--nocapture",
        ]);
        match args {
            [] => {
                c.env("B3IQ_SIM_SEEDS", "2000");
            }
            [flag, n] if flag == "--seeds" || flag == "--seed" => {
                n.parse::<u64>()
                    .map_err(|_| format!("{flag} takes a number; {usage}"))?;
                if flag == "--seeds" {
                    c.env("B3IQ_SIM_SEEDS", n);
                } else {
                    c.env("B3IQ_SIM_SEED", n).env("B3IQ_SIM_TRACE", "1");
                }
            }
            _ => return Err(usage.into()),
        }
        self.run(c)
    }

    fn deps(&self) -> Result<(), String> {
        self.apt_deps()?;
        self.python_venv()
    }

    fn read_list(&self, rel: &str) -> Vec<String> {
        std::fs::read_to_string(self.root.join(rel))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    fn apt_deps(&self) -> Result<(), String> {
        let wanted = self.read_list(".ci/apt-packages");
        let missing: Vec<&String> = wanted.iter().filter(|p| !dpkg_installed(p)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        if env::var("B3IQ_SKIP_DEPS").as_deref() == Ok("1") {
            return Err(format!(
                "missing Debian packages: {}; install them with `sudo apt-get install {}`",
                names.join(" "),
                names.join(" ")
            ));
        }
        eprintln!("xtask: installing Debian packages: {}", names.join(" "));
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let prefix: Vec<&str> = if is_root { vec![] } else { vec!["sudo", "-n"] };
        let apt = |args: &[&str]| -> Result<(), String> {
            let mut full: Vec<&str> = prefix.clone();
            full.extend_from_slice(args);
            let mut c = Command::new(full[0]);
            c.args(&full[1..]).env("DEBIAN_FRONTEND", "noninteractive");
            let st = c
                .status()
                .map_err(|e| format!("could not run apt-get: {e}"))?;
            if st.success() {
                Ok(())
            } else {
                Err(format!(
                    "`{}` failed; install these packages by hand: {}",
                    full.join(" "),
                    names.join(" ")
                ))
            }
        };
        apt(&["apt-get", "update", "-qq"])?;
        let mut install = vec!["apt-get", "install", "-y", "-qq", "--no-install-recommends"];
        install.extend(names.iter().copied());
        apt(&install)
    }

    fn python_venv(&self) -> Result<(), String> {
        let req = self.root.join(".ci/pip-requirements.txt");
        let wanted = std::fs::read_to_string(&req).unwrap_or_default();
        let stamp = self.venv.join(".b3iq-requirements");
        let py = self.venv.join("bin/python");
        if py.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
            return Ok(());
        }
        if !py.exists() {
            eprintln!("xtask: creating Python venv at {}", self.venv.display());
            self.run(self.cmd("python3", &["-m", "venv", &self.venv.to_string_lossy()]))
                .map_err(|e| format!("{e}; on Debian install python3-venv"))?;
        }
        eprintln!("xtask: installing Python test packages from .ci/pip-requirements.txt");
        self.run(self.cmd(
            &py.to_string_lossy(),
            &[
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "-r",
                &req.to_string_lossy(),
            ],
        ))?;
        std::fs::write(&stamp, wanted).map_err(|e| format!("writing {}: {e}", stamp.display()))
    }

    fn fetch_model(&self) -> Result<PathBuf, String> {
        let out = self
            .cmd("python3", &["scripts/fetch-model"])
            .output()
            .map_err(|e| format!("could not run scripts/fetch-model: {e}"))?;
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            return Err("scripts/fetch-model failed (see above)".into());
        }
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(PathBuf::from(path))
    }

    fn up(&self, serve_args: &[String]) -> Result<(), String> {
        self.apt_deps()?;
        let model = self.fetch_model()?;
        // B3IQ_UP_PROFILE=dev reuses the test suite's build (dependencies optimised, our crates not).
        let profile = env::var("B3IQ_UP_PROFILE").unwrap_or_else(|_| "release".into());
        let (flag, dir) = match profile.as_str() {
            "release" => ("--release", "release"),
            "dev" => ("--profile=dev", "debug"),
            other => {
                return Err(format!(
                    "B3IQ_UP_PROFILE must be `release` or `dev`, not `{other}`"
                ))
            }
        };
        eprintln!("xtask: building b3iqd ({profile}; the first build compiles llama.cpp and takes a few minutes)");
        self.run(self.cargo(&["build", flag, "-p", "b3iqd"]))?;
        let bin = self.target_dir.join(dir).join("b3iqd");
        let mut c = self.cmd(&bin.to_string_lossy(), &["serve"]);
        if !serve_args
            .iter()
            .any(|a| a == "--model" || a.starts_with("--model="))
        {
            c.arg("--model").arg(&model);
        }
        c.args(serve_args);
        eprintln!("xtask: starting {} (Ctrl-C stops it)", bin.display());
        self.run(c)
    }

    /// The network demo on loopback (scripts/demo-network): control plane + gateway + a node.
    fn demo(&self, args: &[String]) -> Result<(), String> {
        if args.iter().any(|a| a != "--check") || args.len() > 1 {
            return Err("usage: cargo xtask demo [--check]".into());
        }
        self.apt_deps()?;
        let mut c = self.cmd("bash", &["scripts/demo-network"]);
        c.args(args);
        // The script takes this process's place, so a signal to it (kill, Ctrl-C) reaches the
        // script, whose exit trap stops the control plane and the node.
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            Err(format!("cannot run scripts/demo-network: {}", c.exec()))
        }
        #[cfg(not(unix))]
        self.run(c)
    }

    fn test(&self, args: &[String]) -> Result<(), String> {
        let only = match args {
            [] => None,
            [flag, name] if flag == "--only" => Some(name.as_str()),
            _ => return Err("usage: cargo xtask test [--only STEP]".into()),
        };
        let steps = self.test_steps();
        if let Some(name) = only {
            if !steps.iter().any(|s| s.name == name) {
                return Err(format!("no step `{name}`; see `cargo xtask steps`"));
            }
        }
        let mut model: Option<PathBuf> = None;
        let mut results: BTreeMap<usize, (&str, Result<(), String>, f64)> = BTreeMap::new();
        for (i, step) in steps.iter().enumerate() {
            if only.is_some_and(|n| n != step.name) && !matches!(step.kind, StepKind::Model) {
                continue;
            }
            if let StepKind::Script(s) = step.kind {
                if !self.root.join(s).exists() {
                    continue;
                }
            }
            eprintln!("\n==== xtask: step {} ====", step.name);
            let t0 = Instant::now();
            let r = match step.kind {
                StepKind::Deps => self.deps(),
                StepKind::Model => self.fetch_model().map(|p| model = Some(p)),
                StepKind::Script(s) => {
                    let mut c = self.cmd("bash", &[s]);
                    if let Some(m) = &model {
                        c.env("B3IQ_TEST_MODEL", m);
                    }
                    self.run(c)
                }
                StepKind::CargoTest => {
                    // B3IQ_CARGO_TIMINGS=1 writes cargo's per-crate build report
                    // (cargo-timings/cargo-timing.html under the target dir).
                    let timings = env::var_os("B3IQ_CARGO_TIMINGS").is_some_and(|v| v == "1");
                    // --no-fail-fast: one failing test binary must not hide the others' results.
                    let args: &[&str] = if timings {
                        &["test", "--locked", "--no-fail-fast", "--timings"]
                    } else {
                        &["test", "--locked", "--no-fail-fast"]
                    };
                    let mut c = self.cargo(args);
                    if let Some(m) = &model {
                        c.env("B3IQ_TEST_MODEL", m);
                    }
                    self.run(c)
                }
            };
            let failed = r.is_err();
            results.insert(i, (step.name, r, t0.elapsed().as_secs_f64()));
            // Without packages or the model nothing after can pass; say so once instead of N times.
            if failed && matches!(step.kind, StepKind::Deps | StepKind::Model) {
                break;
            }
        }
        eprintln!("\n==== xtask: summary ====");
        let (mut passed, mut failed) = (0, 0);
        for (name, r, secs) in results.values() {
            match r {
                Ok(()) => {
                    passed += 1;
                    eprintln!("  ok      {name:<16} {secs:>7.1}s");
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("  FAILED  {name:<16} {secs:>7.1}s  {e}");
                }
            }
        }
        println!("steps: {passed} passed, {failed} failed");
        if failed > 0 {
            Err(format!("{failed} step(s) failed"))
        } else {
            Ok(())
        }
    }
}

/// True if `program` is an executable file in a PATH directory.
fn on_path(program: &str) -> bool {
    env::var_os("PATH").is_some_and(|p| env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}
