//! `Runtime::embed` on the llama.cpp backend with the real default model: determinism, unit
//! norm, meaning (a paraphrase is nearer than an unrelated sentence), batching, token-id
//! input, the refusals, and that generation beside it is untouched.

use std::sync::OnceLock;

use b3iq_runtime::llama::{LlamaConfig, LlamaRuntime};
use b3iq_runtime::store::default_model_path;
use b3iq_runtime::*;

const MODEL: &str = "smollm2";
/// Context window of the test runtime, tokens.
const CTX: u32 = 1024;

fn rt() -> &'static LlamaRuntime {
    static RT: OnceLock<LlamaRuntime> = OnceLock::new();
    RT.get_or_init(|| {
        let path = default_model_path()
            .unwrap_or_else(|e| panic!("the default model is required for these tests: {e}"));
        let cfg = LlamaConfig {
            threads: 2,
            max_sequences: 4,
            queue_capacity: 16,
            context_per_sequence: CTX,
            ..LlamaConfig::default()
        };
        let rt = LlamaRuntime::new(cfg).expect("runtime");
        rt.load_model_blocking(LoadModelSpec::from_path(path).with_id(MODEL))
            .expect("load default model");
        rt
    })
}

fn texts(t: &[&str]) -> EmbedRequest {
    EmbedRequest {
        model: MODEL.into(),
        inputs: t.iter().map(|s| EmbedInput::Text(s.to_string())).collect(),
    }
}

async fn embed(t: &[&str]) -> Embeddings {
    rt().embed(texts(t)).await.unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    // Unit vectors: the dot product.
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_are_unit_length_and_deterministic() {
    let dim = rt().list_models().await.unwrap()[0].embedding_length;
    assert_eq!(dim, 576, "SmolLM2-135M's hidden size");
    let a = embed(&["The quick brown fox jumps over the lazy dog."]).await;
    let b = embed(&["The quick brown fox jumps over the lazy dog."]).await;
    assert_eq!(a.vectors.len(), 1);
    assert_eq!(a.vectors[0].len(), dim as usize);
    assert_eq!(
        a.vectors, b.vectors,
        "the same text twice must give the same vector"
    );
    let norm: f64 = a.vectors[0]
        .iter()
        .map(|x| f64::from(*x).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    assert!(a.vectors[0].iter().all(|x| x.is_finite()));
    assert_eq!(a.prompt_tokens as usize, a.token_ids[0].len());
    assert!(a.prompt_tokens >= 9, "{}", a.prompt_tokens);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paraphrase_is_nearer_than_an_unrelated_sentence() {
    let e = embed(&[
        "The cat is sleeping on the sofa.",
        "A cat naps on the couch.",
        "Quarterly tax returns must be filed before the end of April.",
    ])
    .await;
    let (para, other) = (
        cosine(&e.vectors[0], &e.vectors[1]),
        cosine(&e.vectors[0], &e.vectors[2]),
    );
    eprintln!("cosine: paraphrase {para:.4}, unrelated {other:.4}");
    assert!(
        para > other,
        "paraphrase {para} should be nearer than unrelated {other}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_equals_each_input_alone() {
    // One input longer than a decode batch (32 tokens), so it spans several llama_decode calls.
    let long =
        "Rivers carry water from the mountains to the sea, shaping valleys on the way. ".repeat(12);
    let inputs = [
        "Hello there.",
        long.as_str(),
        "Embeddings map text to vectors.",
    ];
    let batch = embed(&inputs).await;
    assert!(
        batch.token_ids[1].len() > 128,
        "{}",
        batch.token_ids[1].len()
    );
    assert_eq!(batch.vectors.len(), 3);
    for (i, text) in inputs.iter().enumerate() {
        let alone = embed(&[*text]).await;
        let d = max_diff(&batch.vectors[i], &alone.vectors[0]);
        eprintln!("input {i} ({} tokens): batched and alone differ by {d:e}", alone.prompt_tokens);
        assert!(d <= 1e-4, "input {i}: batched and alone differ by {d}");
        assert_eq!(batch.token_ids[i], alone.token_ids[0]);
    }
    assert_eq!(
        batch.prompt_tokens as usize,
        batch.token_ids.iter().map(Vec::len).sum::<usize>()
    );
    // More inputs than sequences per round (4) and more tokens than one round holds (1024).
    let many: Vec<&str> = std::iter::repeat_n(long.as_str(), 7)
        .chain(inputs)
        .collect();
    let big = embed(&many).await;
    assert_eq!(big.vectors.len(), 10);
    for (i, v) in big.vectors.iter().enumerate() {
        let want = match i {
            0..=6 => &batch.vectors[1],
            _ => &batch.vectors[i - 7],
        };
        let d = max_diff(v, want);
        assert!(d <= 1e-4, "input {i} of 10 differs by {d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_ids_give_the_same_vector_as_the_text() {
    let text = "Token ids and text are two spellings of one input.";
    let ids = rt().tokenize(MODEL, &Prompt::Text(text.into())).unwrap();
    let by_text = embed(&[text]).await;
    assert_eq!(by_text.token_ids[0], ids);
    let by_ids = rt()
        .embed(EmbedRequest {
            model: MODEL.into(),
            inputs: vec![
                EmbedInput::Tokens(ids.clone()),
                EmbedInput::Text(text.into()),
            ],
        })
        .await
        .unwrap();
    assert_eq!(by_ids.token_ids[0], ids);
    assert!(max_diff(&by_ids.vectors[0], &by_text.vectors[0]) <= 1e-6);
    assert!(max_diff(&by_ids.vectors[0], &by_ids.vectors[1]) <= 1e-6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_with_what_to_fix() {
    let req = |inputs: Vec<EmbedInput>| EmbedRequest {
        model: MODEL.into(),
        inputs,
    };
    let msg = |r: Result<Embeddings, RuntimeError>| match r {
        Err(RuntimeError::InvalidRequest(m)) => m,
        other => panic!("expected InvalidRequest, got {other:?}"),
    };
    assert!(msg(rt().embed(req(vec![])).await).contains("must not be empty"));
    let m = msg(rt()
        .embed(req(vec![
            EmbedInput::Text("a".into()),
            EmbedInput::Text(String::new()),
        ]))
        .await);
    assert!(m.contains("input[1]"), "{m}");
    assert!(msg(rt().embed(req(vec![EmbedInput::Tokens(vec![])])).await).contains("input[0]"));
    let m = msg(rt()
        .embed(req(vec![
            EmbedInput::Text("x".into());
            runtime::MAX_EMBED_INPUTS + 1
        ]))
        .await);
    assert!(m.contains("2048"), "{m}");
    let m = msg(rt()
        .embed(req(vec![EmbedInput::Tokens(vec![1, 49_152])]))
        .await);
    assert!(m.contains("49152") && m.contains("vocabulary"), "{m}");
    match rt()
        .embed(req(vec![EmbedInput::Tokens(vec![42; CTX as usize + 1])]))
        .await
    {
        Err(RuntimeError::ContextOverflow {
            prompt_tokens,
            context_length,
        }) => {
            assert_eq!((prompt_tokens, context_length), (CTX + 1, CTX));
        }
        other => panic!("expected ContextOverflow, got {other:?}"),
    }
    // Exactly the context window is fine.
    let full = rt()
        .embed(req(vec![EmbedInput::Tokens(vec![42; CTX as usize])]))
        .await
        .unwrap();
    assert_eq!(full.prompt_tokens, CTX);
    match rt()
        .embed(EmbedRequest {
            model: "nope".into(),
            inputs: vec![EmbedInput::Text("x".into())],
        })
        .await
    {
        Err(RuntimeError::ModelNotFound { model }) => assert_eq!(model, "nope"),
        other => panic!("expected ModelNotFound, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_beside_embeddings_is_untouched() {
    let gen = || {
        GenerateRequest::chat(MODEL, vec![ChatMessage::user("Name three colours.")])
            .with_sampling(SamplingParams::greedy())
            .with_max_tokens(24)
    };
    let before = rt()
        .generate(gen())
        .await
        .unwrap()
        .collect_completion()
        .await
        .unwrap();
    // A long embeddings job and a generation at the same time: separate contexts, so the
    // generation's KV cache (and its text) is what it is alone.
    let long = "Every sentence here is about nothing in particular. ".repeat(40);
    let inputs: Vec<&str> = vec![long.as_str(); 8];
    let (during, emb) = tokio::join!(
        async {
            rt().generate(gen())
                .await
                .unwrap()
                .collect_completion()
                .await
                .unwrap()
        },
        embed(&inputs)
    );
    assert_eq!(emb.vectors.len(), 8);
    assert_eq!(during.text, before.text);
    let after = rt()
        .generate(gen())
        .await
        .unwrap()
        .collect_completion()
        .await
        .unwrap();
    assert_eq!(after.text, before.text);
}

/// Resident memory of this process, bytes (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// The embeddings context's memory, measured on a runtime of its own (printed; run alone, with
/// `--test-threads 1`, for a clean number). Bounded loosely so a regression that allocates a
/// context per request, or batches of the full vocabulary's logits, shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embeddings_context_costs_a_bounded_amount_of_memory() {
    let path = default_model_path().unwrap();
    let cfg = LlamaConfig { threads: 2, max_sequences: 2, context_per_sequence: 2048, ..LlamaConfig::default() };
    let own = LlamaRuntime::new(cfg).unwrap();
    own.load_model(LoadModelSpec::from_path(path).with_id("m")).await.unwrap();
    // Long enough to fill whole 32-token batches, so every buffer is touched.
    let text = "Memory should not grow per request. ".repeat(60);
    let req = || EmbedRequest { model: "m".into(), inputs: vec![EmbedInput::Text(text.clone()), EmbedInput::Text(text.clone())] };
    let before = rss_bytes();
    let first = own.embed(req()).await.unwrap();
    assert!(first.prompt_tokens > 2 * 32, "{}", first.prompt_tokens);
    let after_first = rss_bytes();
    let (mut tokens, mut us) = (0u64, 0u64);
    for _ in 0..5 {
        let e = own.embed(req()).await.unwrap();
        tokens += u64::from(e.prompt_tokens);
        us += e.elapsed_us;
    }
    eprintln!("embeddings throughput: {:.0} tokens/s (2 threads, debug test build of the crate, llama.cpp in release)", tokens as f64 * 1e6 / us.max(1) as f64);
    let after = rss_bytes();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "embeddings context: +{:.1} MiB on the first request, +{:.1} MiB over 5 more",
        mib(after_first.saturating_sub(before)),
        mib(after.saturating_sub(after_first))
    );
    assert!(after_first.saturating_sub(before) < 300 << 20);
    assert!(after.saturating_sub(after_first) < 32 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_without_embeddings_says_so() {
    use b3iq_runtime::upstream::{UpstreamConfig, UpstreamRuntime};
    // The trait's default: no request leaves for the upstream (nothing listens there).
    let up = UpstreamRuntime::new(UpstreamConfig::new("http://127.0.0.1:9/v1")).unwrap();
    match up.embed(texts(&["x"])).await {
        Err(RuntimeError::Unsupported(m)) => {
            assert!(m.contains("openai_upstream") && m.contains("llama.cpp"), "{m}")
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}
