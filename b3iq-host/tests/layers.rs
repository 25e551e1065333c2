//! The crate's layering, checked on its source: the ground layer (context, store, error, creds,
//! metrics, logging) imports nothing above it; the use cases (inference, owner, jobs, models,
//! support) import only the ground and each other; only the front doors (http, node, ops) may
//! import everything. A module that reaches up fails this test with the file and line.

use std::path::{Path, PathBuf};

/// Top-level modules by layer (0 ground, 1 use cases, 2 front doors).
const LAYERS: &[(&str, u8)] = &[
    ("context", 0),
    ("store", 0),
    ("error", 0),
    ("creds", 0),
    ("metrics", 0),
    ("logging", 0),
    ("inference", 1),
    ("owner", 1),
    ("jobs", 1),
    ("managed", 1),
    ("network", 1),
    ("models", 1),
    ("support", 1),
    ("update", 1),
    ("http", 2),
    ("node", 2),
    ("ops", 2),
];

fn layer_of(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`src/store/auth.rs` -> `store`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .to_string();
    first.trim_end_matches(".rs").to_string()
}

/// Every `crate::NAME` in non-comment code (test modules included: they must respect the layers too).
fn crate_refs(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` groups: take every name in the braces.
            if after.starts_with('{') {
                let inner = &after[1..after.find('}').unwrap_or(after.len())];
                for part in inner.split(',') {
                    let n2: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !n2.is_empty() {
                        out.push((n + 1, n2));
                    }
                }
            } else if !name.is_empty() {
                out.push((n + 1, name));
            }
            rest = &after[after
                .char_indices()
                .nth(1)
                .map(|(i, _)| i)
                .unwrap_or(after.len())..];
        }
    }
    out
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut unknown = Vec::new();
    for f in &files {
        let module = module_of(&src, f);
        if module == "lib" {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            unknown.push(module);
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for (line, target) in crate_refs(&text) {
            match layer_of(&target) {
                Some(l) if l > own => violations.push(format!(
                    "{}:{line}: `{module}` (layer {own}) imports `crate::{target}` (layer {l})",
                    f.strip_prefix(&src).unwrap().display()
                )),
                Some(_) => {}
                None => unknown.push(format!("crate::{target} in {}", f.display())),
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules missing from LAYERS in tests/layers.rs (give each a layer): {unknown:?}"
    );
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_a_violation() {
    // The scanner itself must find what it is looking for, grouped imports included.
    let refs = crate_refs("use crate::{context::X, http::Y};\nlet a = crate::owner::f(); // crate::jobs in a comment\n");
    let names: Vec<&str> = refs.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["context", "http", "owner"]);
}

#[test]
fn all_sql_is_in_the_store() {
    // SQL statements live only under src/store/ (tests inside other modules may read tables).
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut offenders = Vec::new();
    for f in files {
        if module_of(&src, &f) == "store" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for kw in [
            "SELECT ",
            "INSERT INTO",
            "UPDATE ",
            "DELETE FROM",
            "CREATE TABLE",
        ] {
            if code.contains(kw) {
                offenders.push(format!(
                    "{} contains `{kw}`",
                    f.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "SQL outside src/store/:\n{}",
        offenders.join("\n")
    );
}
