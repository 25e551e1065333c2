//! Replays every committed fuzz input in `fuzz/corpus/<target>/` through the same checks the
//! cargo-fuzz targets run (`fuzz/src/checks.rs`), so a plain `cargo test` covers the corpus,
//! including any crash reproducers saved there.

#[path = "../../fuzz/src/checks.rs"]
#[allow(dead_code)]
mod checks;

use std::path::PathBuf;

#[test]
fn replay_fuzz_corpus() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut total = 0;
    for (target, check) in checks::TARGETS {
        let dir = root.join(target);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!("{}: {e}; run `cargo run -p b3iq-core --example gen-vectors` to write the seed corpus", dir.display())
        });
        let mut n = 0;
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if !path.is_file() {
                continue;
            }
            let data = std::fs::read(&path).expect("read corpus file");
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(result.is_ok(), "fuzz check {target} panicked on {}", path.display());
            n += 1;
        }
        assert!(n > 0, "no corpus files for fuzz target {target} in {}", dir.display());
        total += n;
    }
    assert!(total >= checks::TARGETS.len());
}

#[test]
fn seed_corpus_accepts_the_golden_objects() {
    // The seeds generated from golden vectors must be accepted (not just "not crash"), so the
    // fuzzer starts from inputs that reach deep into the decoders.
    use b3iq_core::receipt::SignedReceipt;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/receipt");
    let decoded: Vec<SignedReceipt> = std::fs::read_dir(dir)
        .expect("receipt corpus")
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .filter_map(|b| SignedReceipt::decode(&b).ok())
        .collect();
    let ok = decoded.len();
    assert!(ok >= 2, "expected the golden receipts among the receipt seeds");
    // both receipt versions are seeded, so the fuzzer reaches both body layouts
    for version in [1, 2] {
        assert!(decoded.iter().any(|s| s.version() == version), "no version-{version} receipt among the receipt seeds");
    }
}
