//! CI builds the workspace once: `cargo test` compiles every crate, and each later step (the
//! Python, Node and Swift bindings, verify-only and full) must only add its own crates on top
//! (pyo3, napi, uniffi and the binding crate itself). A binding build that resolves a shared crate
//! with other features or another profile gives it a new unit hash, and cargo rebuilds it and
//! everything above it: llama.cpp and most of the host graph, 10+ minutes per binding on 2 cores
//! (docs/testing.md, "One build for every step").
//!
//! Two things keep the units identical:
//! * the `b3iq-workspace-hack` crate (managed by `cargo hakari`, config in `.config/hakari.toml`)
//!   gives every shared third-party crate the union of its features in every build;
//! * `[profile.dev.build-override] debug = 0` in the workspace Cargo.toml keeps build scripts and
//!   proc-macros on one profile whichever normal dependencies a build adds.
//!
//! This test compares cargo's unit graphs (`--unit-graph`, an unstable cargo flag, read here with
//! `RUSTC_BOOTSTRAP=1`; it resolves, it does not build): every unit of a binding build whose
//! package `cargo test` also builds must be a unit `cargo test` builds, with the same features,
//! profile and dependencies. The one tolerated difference is a leaf crate that cargo compiles
//! twice, once as a build dependency (no debug info) and once as a normal one: it costs seconds
//! and rebuilds nothing above it (if it did, its dependents would differ and fail the test).
//! After a dependency change: `cargo hakari generate && cargo hakari manage-deps`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent directory")
        .to_path_buf()
}

/// A unit's identity as cargo hashes it: package, target, mode, features, profile, and the
/// identities of the units it depends on (`deps`, each a hash of its whole subtree, so equal
/// keys mean equal subgraphs without holding them).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct UnitKey {
    package: String,
    target: String,
    mode: String,
    features: Vec<String>,
    profile: String,
    deps: Vec<u64>,
}

impl UnitKey {
    fn label(&self) -> String {
        format!("{} ({} {})", self.package, self.target, self.mode)
    }

    /// The subtree hash other units refer to this one by.
    fn id(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// A unit graph: its units, and every unit by id (for following dependencies).
#[derive(Default)]
struct Graph {
    units: BTreeSet<UnitKey>,
    by_id: BTreeMap<u64, UnitKey>,
}

impl Graph {
    fn of(units: impl IntoIterator<Item = UnitKey>) -> Graph {
        let mut g = Graph::default();
        for k in units {
            g.by_id.insert(k.id(), k.clone());
            g.units.insert(k);
        }
        g
    }
}

/// The package part of a unit-graph `pkg_id` (`registry+...#serde@1.0.229` or
/// `path+file:///w/b3iq-host#0.1.0`), as `name@version`.
fn package_name(pkg_id: &str) -> String {
    let (source, frag) = pkg_id.rsplit_once('#').unwrap_or(("", pkg_id));
    if frag.contains('@') {
        frag.to_string()
    } else {
        // `path+file:///.../b3iq-host#0.1.0`: the name is the last path segment.
        let name = source.rsplit('/').next().unwrap_or(source);
        format!("{name}@{frag}")
    }
}

/// Parses `cargo ... --unit-graph` output into the set of unit identities.
fn parse_unit_graph(json: &str) -> Graph {
    let v: Value = serde_json::from_str(json).expect("unit graph is JSON");
    let units = v["units"].as_array().expect("unit graph has units");
    let mut memo: BTreeMap<usize, UnitKey> = BTreeMap::new();
    fn key(i: usize, units: &[Value], memo: &mut BTreeMap<usize, UnitKey>) -> UnitKey {
        if let Some(k) = memo.get(&i) {
            return k.clone();
        }
        let u = &units[i];
        let mut deps: Vec<u64> = u["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| key(d["index"].as_u64().expect("dep index") as usize, units, memo).id())
            .collect();
        deps.sort();
        let mut features: Vec<String> = u["features"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        features.sort();
        let k = UnitKey {
            package: package_name(u["pkg_id"].as_str().unwrap_or_default()),
            target: format!("{}:{}", u["target"]["name"], u["target"]["kind"]),
            mode: u["mode"].as_str().unwrap_or_default().to_string(),
            features,
            // Cargo's unit hash leaves out the profile's name (`test` for cargo test, `dev` for
            // cargo build over the same settings).
            profile: {
                let mut p = u["profile"].clone();
                if let Some(o) = p.as_object_mut() {
                    o.remove("name");
                }
                p.to_string()
            },
            deps,
        };
        memo.insert(i, k.clone());
        k
    }
    Graph::of((0..units.len()).map(|i| key(i, units, &mut memo)).collect::<Vec<_>>())
}

/// Runs `cargo ARGS --unit-graph` in `dir` (offline first, then with fetching allowed for a
/// fresh machine whose package cache lacks a binding's crates; `--locked` both times).
fn unit_graph(dir: &Path, args: &[&str]) -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let run = |offline: bool| {
        let mut c = Command::new(&cargo);
        c.current_dir(dir)
            .args(args)
            .args(["--locked", "--unit-graph", "-Z", "unstable-options"])
            .env("RUSTC_BOOTSTRAP", "1");
        if offline {
            c.arg("--offline");
        }
        c.output().unwrap_or_else(|e| panic!("could not run cargo {args:?}: {e}"))
    };
    let mut out = run(true);
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("offline") {
        out = run(false);
    }
    assert!(
        out.status.success(),
        "`cargo {} --unit-graph` failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_unit_graph(&String::from_utf8_lossy(&out.stdout))
}

/// The units of `other` that `base` does not have although `base` builds their package, with
/// the reason. Tolerated: a profile twin, i.e. a unit with the same features as `base`'s but
/// another profile (cargo builds a crate used both as a build and a normal dependency twice),
/// whose own dependencies are all in `base` or tolerated twins themselves: it rebuilds nothing
/// `base` has. A unit with `base`'s profile and other dependencies is a real rebuild (bindgen
/// over a twin of rustc-hash rebuilds llama.cpp) and is reported.
fn rebuilt_shared_units(base: &Graph, other: &Graph) -> Vec<String> {
    let mut by_package: BTreeMap<&str, Vec<&UnitKey>> = BTreeMap::new();
    for k in &base.units {
        by_package.entry(k.package.as_str()).or_default().push(k);
    }
    let twin = |k: &UnitKey| -> bool {
        fn go(k: &UnitKey, base: &Graph, other: &Graph, by_package: &BTreeMap<&str, Vec<&UnitKey>>) -> bool {
            let peers = by_package.get(k.package.as_str()).map(Vec::as_slice).unwrap_or_default();
            peers.iter().any(|b| b.target == k.target && b.mode == k.mode && b.features == k.features && b.profile != k.profile)
                && k.deps.iter().all(|d| {
                    base.by_id.contains_key(d) || other.by_id.get(d).is_some_and(|dk| go(dk, base, other, by_package))
                })
        }
        go(k, base, other, &by_package)
    };
    let label = |id: &u64| other.by_id.get(id).map(UnitKey::label).unwrap_or_else(|| format!("#{id:x}"));
    let mut found = Vec::new();
    for k in other.units.difference(&base.units) {
        let Some(same_pkg) = by_package.get(k.package.as_str()) else {
            continue; // only this build uses the package (pyo3, napi, uniffi, the binding crate)
        };
        if twin(k) {
            continue;
        }
        let same_target = |b: &&&UnitKey| b.target == k.target && b.mode == k.mode;
        let reason = match (same_pkg.iter().filter(same_target).find(|b| b.features == k.features), same_pkg.iter().find(same_target)) {
            (Some(peer), _) => {
                let changed: Vec<_> = k.deps.iter().filter(|d| !peer.deps.contains(d)).map(label).collect();
                format!("its dependencies differ: {changed:?}")
            }
            (None, Some(b)) => format!("features {:?}, cargo test builds it with {:?}", k.features, b.features),
            (None, None) => "a target cargo test does not build".to_string(),
        };
        found.push(format!("{}: {reason}", k.label()));
    }
    found
}

#[test]
fn the_comparison_reports_a_feature_drift_and_tolerates_a_leaf_profile_twin() {
    let unit = |pkg: &str, features: &[&str], profile: &str, deps: Vec<UnitKey>| UnitKey {
        package: pkg.into(),
        target: "lib".into(),
        mode: "build".into(),
        features: features.iter().map(|s| s.to_string()).collect(),
        profile: profile.into(),
        deps: deps.iter().map(UnitKey::id).collect(),
    };
    let bytes = unit("bytes@1", &["serde", "std"], "p1", vec![]);
    let hash_dbg0 = unit("rustc-hash@2", &[], "debug0", vec![]);
    let base_units = vec![bytes.clone(), hash_dbg0.clone(), unit("hyper@1", &[], "p1", vec![bytes.clone()])];
    let base = Graph::of(base_units.clone());
    // Same graph plus a binding-only crate and a leaf twin with debug info: nothing to report.
    let mut ok = base_units;
    ok.push(unit("napi@3", &[], "p1", vec![]));
    ok.push(unit("rustc-hash@2", &[], "debug1", vec![]));
    assert!(rebuilt_shared_units(&base, &Graph::of(ok)).is_empty());
    // bytes without serde: bytes itself and hyper above it are rebuilt.
    let lean = unit("bytes@1", &["std"], "p1", vec![]);
    let drift = Graph::of([lean.clone(), unit("hyper@1", &[], "p1", vec![lean])]);
    let found = rebuilt_shared_units(&base, &drift);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("bytes@1") && found[0].contains("features"), "{found:?}");
    assert!(found[1].contains("hyper@1") && found[1].contains("dependencies differ"), "{found:?}");
    // A shared unit over a twin is a real rebuild: bindgen over rustc-hash with debug info.
    let bindgen = |h: &UnitKey| unit("bindgen@0.72", &[], "debug0", vec![h.clone()]);
    let base = Graph::of([hash_dbg0.clone(), bindgen(&hash_dbg0)]);
    let hash_dbg1 = unit("rustc-hash@2", &[], "debug1", vec![]);
    let found = rebuilt_shared_units(&base, &Graph::of([hash_dbg1.clone(), bindgen(&hash_dbg1)]));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("bindgen@0.72") && found[0].contains("rustc-hash@2"), "{found:?}");
    // The pkg_id forms cargo prints.
    assert_eq!(package_name("registry+https://x/index#serde@1.0.229"), "serde@1.0.229");
    assert_eq!(package_name("path+file:///w/b3iq-host#0.1.0"), "b3iq-host@0.1.0");
}

#[test]
fn binding_builds_reuse_every_unit_cargo_test_builds() {
    let root = workspace_root();
    let base = unit_graph(&root, &["test"]);
    assert!(
        base.units.iter().any(|k| k.package.starts_with("llama-cpp-sys-2@")),
        "cargo test's unit graph has no llama-cpp-sys-2: the graph was not read"
    );
    // The builds the binding steps run (bindings/*/ci.sh): verify-only and full libraries.
    let builds: [(&str, &[&str]); 6] = [
        ("bindings/python", &["build", "-p", "b3iq-python", "--lib", "--features", "pyo3/extension-module"]),
        ("bindings/python", &["build", "-p", "b3iq-python", "--lib", "--no-default-features", "--features", "pyo3/extension-module"]),
        ("bindings/node", &["build", "-p", "b3iq-node", "--lib"]),
        ("bindings/node", &["build", "-p", "b3iq-node", "--lib", "--no-default-features"]),
        ("bindings/swift", &["build", "-p", "b3iq-swift", "--lib", "--bin", "uniffi-bindgen"]),
        ("bindings/swift", &["build", "-p", "b3iq-swift", "--lib", "--bin", "uniffi-bindgen", "--no-default-features"]),
    ];
    let mut failures = Vec::new();
    for (dir, args) in builds {
        for f in rebuilt_shared_units(&base, &unit_graph(&root.join(dir), args)) {
            failures.push(format!("cargo {}: {f}", args.join(" ")));
        }
    }
    assert!(
        failures.is_empty(),
        "a binding build would rebuild crates `cargo test` already built (so CI compiles them \
         twice); run `cargo hakari generate && cargo hakari manage-deps` after a dependency \
         change, and keep [profile.dev.build-override] explicit:\n  {}",
        failures.join("\n  ")
    );
}
