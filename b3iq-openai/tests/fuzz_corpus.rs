//! Replays every committed input in `fuzz/corpus/<target>/` of the b3iq-openai fuzz targets
//! through the same checks the cargo-fuzz targets run (`fuzz/src/openai_checks.rs`), so a plain
//! `cargo test` covers the corpus, including any crash reproducers saved there.

#[path = "../../fuzz/src/openai_checks.rs"]
mod openai_checks;

use std::path::PathBuf;

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

#[test]
fn replay_openai_fuzz_corpus() {
    for (target, check) in openai_checks::TARGETS {
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
    // The seeds must be accepted (not just "not crash"), so the fuzzer starts deep inside.
    let read = |target: &str| -> Vec<Vec<u8>> {
        std::fs::read_dir(corpus().join(target))
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect()
    };
    let requests = read("openai_request");
    let chat = requests
        .iter()
        .filter(|b| {
            b3iq_openai::ChatCompletionRequest::from_slice(b).is_ok_and(|r| r.messages.is_some())
        })
        .count();
    let text = requests
        .iter()
        .filter(|b| b3iq_openai::CompletionRequest::from_slice(b).is_ok_and(|r| r.prompt.is_some()))
        .count();
    let emb = requests
        .iter()
        .filter(|b| b3iq_openai::EmbeddingRequest::from_slice(b).is_ok_and(|r| r.input.is_some()))
        .count();
    assert!(chat >= 4 && text >= 3 && emb >= 2, "{chat} {text} {emb}");

    let mut events = 0;
    let mut errors = 0;
    for seed in read("sse_parse") {
        let limit = if seed[0] & 0x80 != 0 {
            64
        } else {
            b3iq_openai::SseParser::DEFAULT_LIMIT
        };
        let mut p = b3iq_openai::SseParser::with_limit(limit);
        match p.feed(&seed[1..]) {
            Ok(evs) => events += evs.len(),
            Err(_) => errors += 1,
        }
    }
    assert!(events >= 20, "{events} events from the stream seeds");
    assert!(errors >= 2, "the limit seeds reach both limit errors");
}
