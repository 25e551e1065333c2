//! Replays every committed input in `fuzz/corpus/<target>/` of the host fuzz targets through
//! the same checks the cargo-fuzz targets run (`fuzz/src/host_checks.rs`), so a plain
//! `cargo test` covers the corpus, including any crash reproducers saved there.

#[path = "../../fuzz/src/host_checks.rs"]
mod host_checks;

use std::io::{Read, Write};
use std::path::PathBuf;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

#[test]
fn replay_host_fuzz_corpus() {
    for (target, check) in host_checks::TARGETS {
        let dir = corpus().join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_file() {
                let data = std::fs::read(&path).expect("read corpus file");
                let result = std::panic::catch_unwind(|| check(&data));
                assert!(
                    result.is_ok(),
                    "fuzz check {target} panicked on {}",
                    path.display()
                );
                n += 1;
            }
        }
        assert!(
            n >= 3,
            "too few corpus files for {target} in {}",
            dir.display()
        );
    }
}

#[test]
fn seeds_reach_the_accepting_paths() {
    use b3iq_host::http::{host_matches, same_origin, HeaderMap, HeaderValue, Scheme};
    assert!(host_matches("localhost:7420", &[]));
    assert!(host_matches("[::1]:7420", &[]));
    assert!(!host_matches("127.0.0.1.nip.io", &[]));
    assert!(host_matches("mybox.lan:7420", &["mybox.lan".into()]));
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("127.0.0.1:7420"));
    h.insert("origin", HeaderValue::from_static("http://127.0.0.1:7420"));
    assert!(same_origin(&h, Scheme::Http).is_ok());
    h.insert("origin", HeaderValue::from_static("http://evil.example"));
    assert!(same_origin(&h, Scheme::Http).is_err());
    let bundle = std::fs::read(corpus().join("support_bundle/seed-0")).unwrap();
    let files = b3iq_host::support::read_bundle(&bundle).unwrap();
    assert_eq!(files.len(), 2);
}

#[test]
fn a_gzip_bomb_bundle_is_refused() {
    // One entry of zeros 1 MiB over the cap: a few KiB compressed.
    let size = b3iq_host::support::MAX_BUNDLE_TEXT + 1024 * 1024;
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    let mut tar_bytes = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut tar_bytes);
        builder
            .append_data(&mut header, "big.txt", std::io::repeat(0).take(size))
            .unwrap();
        builder.finish().unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes).unwrap();
    let bytes = gz.finish().unwrap();
    assert!(bytes.len() < 1024 * 1024);
    let err = b3iq_host::support::read_bundle(&bytes).unwrap_err();
    assert!(err.to_string().contains("more than"), "{err}");
}

#[test]
fn the_embeddings_seed_reaches_the_model_lookup() {
    // First byte 5: /v1/embeddings. A valid body gets past every field check to the model
    // lookup (no model is served here); the bad-fields seed stops at a named field.
    let read = |name: &str| std::fs::read(corpus().join("request_body").join(name)).unwrap();
    let seed = read("embeddings-texts");
    assert_eq!(seed[0] % 8, 5);
    let e = b3iq_host::http::embeddings::validate_embeddings_body(&seed[1..]).unwrap_err();
    assert_eq!(e.code(), "model_not_found", "{e}");
    let e = b3iq_host::http::embeddings::validate_embeddings_body(&read("embeddings-bad-fields")[1..])
        .unwrap_err();
    assert_eq!(e.body()["error"]["param"], "dimensions", "{e}");
}
