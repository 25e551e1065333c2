//! The workspace's crate-dependency structure (docs/README.md, ../shared/ARCHITECTURE.md):
//!
//! * `b3iq-core` is pure logic: no async runtime, network, database, chain or binding framework
//!   in its normal dependencies.
//! * alloy stays in `b3iq-chain`: it is not in the normal dependency tree of `b3iq-protocol`,
//!   `b3iq-host` or any binding crate (`b3iq-python`, `b3iq-node`, `b3iq-swift`).
//!
//! Each check runs `cargo tree -p PACKAGE -e normal --all-features --locked` for the build
//! machine's target and fails naming the dependency path that brought the forbidden crate in
//! (`b3iq-host -> b3iq-chain -> alloy`). `cargo tree` runs `--offline` first; only when the local
//! package cache lacks a crate of that tree (a fresh machine where the binding crates' dependencies
//! were never fetched) it runs again without `--offline`, still `--locked`, so it may download the
//! missing crates but never changes Cargo.lock.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One line of `cargo tree`: a crate and the chain of crates from the root package down to it.
#[derive(Debug, Clone)]
struct TreeEntry {
    /// Package name, e.g. `alloy-provider`.
    name: String,
    /// `root -> ... -> this crate`, each as `name vX.Y.Z`.
    path: Vec<String>,
}

impl TreeEntry {
    fn path_text(&self) -> String {
        self.path.join(" -> ")
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent directory")
        .to_path_buf()
}

fn run_cargo_tree(package: &str, offline: bool) -> std::process::Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = workspace_root();
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .arg("tree")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .args(["-p", package, "-e", "normal", "--all-features", "--locked"])
        .args(["--prefix", "depth", "--format", "{p}", "--color", "never"]);
    if offline {
        cmd.arg("--offline");
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("could not run `{cargo} tree -p {package}`: {e}"))
}

/// The normal-dependency tree of `package` (all its features, the build machine's target), one
/// entry per line of `cargo tree` (a crate reached twice appears twice; the first entry of a crate
/// carries its shortest printed path). Panics with cargo's message if `cargo tree` fails.
fn cargo_tree(package: &str) -> Vec<TreeEntry> {
    let mut out = run_cargo_tree(package, true);
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--offline") {
        // A crate of this tree is not in the local package cache yet: fetch it (Cargo.lock stays).
        out = run_cargo_tree(package, false);
    }
    assert!(
        out.status.success(),
        "`cargo tree -p {package} -e normal --all-features --locked` failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_tree(&String::from_utf8_lossy(&out.stdout))
}

/// Parses `cargo tree --prefix depth --format {p}` lines (`2name v1.2.3 (...)`).
fn parse_tree(text: &str) -> Vec<TreeEntry> {
    let mut stack: Vec<String> = Vec::new();
    let mut entries = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let digits = line.chars().take_while(char::is_ascii_digit).count();
        let depth: usize = line[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("unexpected `cargo tree` line (no depth prefix): {line:?}"));
        let mut words = line[digits..].split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let version = words.next().unwrap_or_default();
        assert!(
            !name.is_empty() && depth <= stack.len(),
            "unexpected `cargo tree` line: {line:?}"
        );
        stack.truncate(depth);
        stack.push(format!("{name} {version}"));
        entries.push(TreeEntry {
            name,
            path: stack.clone(),
        });
    }
    assert!(!entries.is_empty(), "`cargo tree` printed nothing");
    entries
}

/// The names of every crate in the normal-dependency tree of `package`, the package included.
fn crate_names(package: &str) -> BTreeSet<String> {
    cargo_tree(package).into_iter().map(|e| e.name).collect()
}

/// True when `name` is `stem` or a crate of its family (`stem-*`, `stem_*`).
fn in_family(name: &str, stem: &str) -> bool {
    name == stem
        || name
            .strip_prefix(stem)
            .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('_'))
}

/// For each forbidden crate in `package`'s tree, the first path that reaches it.
fn forbidden_paths(package: &str, stems: &[&str]) -> Vec<String> {
    forbidden_in(cargo_tree(package), stems)
}

/// For each crate of `entries` in the family of one of `stems`, the first path that reaches it.
fn forbidden_in(entries: Vec<TreeEntry>, stems: &[&str]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    entries
        .into_iter()
        .filter(|e| stems.iter().any(|s| in_family(&e.name, s)))
        .filter(|e| seen.insert(e.name.clone()))
        .map(|e| e.path_text())
        .collect()
}

/// Crates that mean I/O (async runtime, sockets, HTTP, databases, chain) or a binding framework.
const IO_CRATES: &[&str] = &[
    "tokio",
    "async-std",
    "mio",
    "socket2",
    "reqwest",
    "hyper",
    "h2",
    "ureq",
    "curl",
    "axum",
    "tungstenite",
    "rusqlite",
    "libsqlite3-sys",
    "postgres",
    "sqlx",
    "alloy",
    "pyo3",
    "napi",
    "uniffi",
];

#[test]
fn a_forbidden_crate_is_reported_with_the_path_that_brings_it_in() {
    let tree = "0b3iq-host v0.1.0 (/w/b3iq-host)\n\
                1b3iq-chain v0.1.0 (/w/b3iq-chain)\n\
                2alloy v2.5.0\n\
                3alloy-provider v2.5.0\n\
                1serde v1.0.0\n\
                1tokio v1.54.1\n\
                2mio v1.0.0\n\
                1smol_str v0.3.0\n\
                1b3iq-runtime v0.1.0 (/w/b3iq-runtime)\n\
                2alloy v2.5.0 (*)\n";
    let entries = parse_tree(tree);
    assert_eq!(entries.len(), 10);
    assert_eq!(
        forbidden_in(entries.clone(), &["alloy"]),
        [
            "b3iq-host v0.1.0 -> b3iq-chain v0.1.0 -> alloy v2.5.0",
            "b3iq-host v0.1.0 -> b3iq-chain v0.1.0 -> alloy v2.5.0 -> alloy-provider v2.5.0",
        ]
    );
    assert_eq!(
        forbidden_in(entries, IO_CRATES),
        [
            "b3iq-host v0.1.0 -> b3iq-chain v0.1.0 -> alloy v2.5.0",
            "b3iq-host v0.1.0 -> b3iq-chain v0.1.0 -> alloy v2.5.0 -> alloy-provider v2.5.0",
            "b3iq-host v0.1.0 -> tokio v1.54.1",
            "b3iq-host v0.1.0 -> tokio v1.54.1 -> mio v1.0.0",
        ]
    );
}

#[test]
fn core_has_no_io_dependency() {
    // The matching is not vacuous: the same check finds tokio in the host.
    assert!(
        !forbidden_paths("b3iq-host", &["tokio"]).is_empty(),
        "the check found no tokio in b3iq-host: `cargo tree` parsing is broken"
    );
    let found = forbidden_paths("b3iq-core", IO_CRATES);
    assert!(
        found.is_empty(),
        "b3iq-core must stay pure (no I/O, no binding framework; ../shared/STYLE.md), but \
         `cargo tree -p b3iq-core -e normal` reaches:\n  {}\nmove that code to the crate that does \
         the I/O (b3iq-host, b3iq-chain, a binding) and pass values or traits into core",
        found.join("\n  ")
    );
}

#[test]
fn alloy_stays_in_b3iq_chain() {
    // The matching is not vacuous: b3iq-chain itself does depend on alloy.
    assert!(
        crate_names("b3iq-chain").contains("alloy"),
        "the check found no alloy in b3iq-chain: `cargo tree` parsing is broken"
    );
    let mut failures = Vec::new();
    for package in [
        "b3iq-protocol",
        "b3iq-host",
        "b3iq-python",
        "b3iq-node",
        "b3iq-swift",
    ] {
        for path in forbidden_paths(package, &["alloy", "b3iq-chain"]) {
            failures.push(format!("{package}: {path}"));
        }
    }
    assert!(
        failures.is_empty(),
        "alloy (and b3iq-chain) must stay out of the sans-I/O protocol crate, the host and the \
         bindings, so they build light; found:\n  {}\nuse b3iq-protocol's types there and keep chain \
         code in b3iq-chain",
        failures.join("\n  ")
    );
}

// ---- host layering ------------------------------------------------------------------------
// Place for the check that a module of b3iq-host's ground layer (home, config, db, key,
// runtime, mode) imports no module above it. The helpers above (`cargo_tree`, `crate_names`,
// `forbidden_paths`) are for crate-level checks like the two tests here.
