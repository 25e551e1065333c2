//! The llama.cpp backend with the real default model: generation, determinism, continuous
//! batching, cancellation, stop sequences, JSON mode, queue limits; and the OpenAI upstream
//! backend against that engine served over HTTP on loopback.

use std::sync::OnceLock;
use std::time::Duration;

use b3iq_runtime::llama::{LlamaConfig, LlamaRuntime};
use b3iq_runtime::store::default_model_path;
use b3iq_runtime::*;

const MODEL: &str = "smollm2";

/// One runtime (model loaded once) for the whole test binary.
fn rt() -> &'static LlamaRuntime {
    static RT: OnceLock<LlamaRuntime> = OnceLock::new();
    RT.get_or_init(|| {
        let path = default_model_path().unwrap_or_else(|e| panic!("the default model is required for these tests: {e}"));
        let cfg = LlamaConfig { threads: 2, max_sequences: 4, queue_capacity: 16, context_per_sequence: 1024, ..LlamaConfig::default() };
        let rt = LlamaRuntime::new(cfg).expect("runtime");
        rt.load_model_blocking(LoadModelSpec::from_path(path).with_id(MODEL)).expect("load default model");
        rt
    })
}

/// A separate runtime with its own engine (same model file, page cache shared).
async fn fresh(id: &str, slots: u32) -> LlamaRuntime {
    let path = default_model_path().unwrap();
    let cfg = LlamaConfig { threads: 1, max_sequences: slots, queue_capacity: 4, context_per_sequence: 512, batch_tokens: 64, ..LlamaConfig::default() };
    let rt = LlamaRuntime::new(cfg).unwrap();
    rt.load_model(LoadModelSpec::from_path(path).with_id(id)).await.unwrap();
    rt
}

fn chat(text: &str) -> GenerateRequest {
    GenerateRequest::chat(MODEL, vec![ChatMessage::user(text)])
}

fn seeded(seed: u64) -> SamplingParams {
    SamplingParams { temperature: 0.9, top_p: 0.95, top_k: 40, min_p: 0.0, seed: Some(seed), ..SamplingParams::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_the_model_with_digest_and_context() {
    let models = rt().list_models().await.unwrap();
    assert_eq!(models.len(), 1);
    let m = &models[0];
    assert_eq!(m.id, MODEL);
    assert_eq!(m.sha256, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
    assert_eq!(m.size_bytes, 98_362_432);
    assert_eq!(m.context_length, 1024);
    assert_eq!(m.train_context_length, 8192);
    assert_eq!(m.architecture, "llama");
    assert_eq!(m.quantization, "Q4_1");
    assert!(m.has_chat_template);
    assert!(m.parameters > 100_000_000 && m.parameters < 200_000_000, "{}", m.parameters);
    let h = rt().health().await;
    assert_eq!(h.status, HealthStatus::Ok, "{}", h.message);
    assert_eq!(h.models_loaded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_chat_is_deterministic_and_sensible() {
    let req = chat("What is the capital of France? Answer in one word.").with_sampling(SamplingParams::greedy()).with_max_tokens(12);
    let a = rt().generate(req.clone()).await.unwrap().collect_completion().await.unwrap();
    let b = rt().generate(req).await.unwrap().collect_completion().await.unwrap();
    assert_eq!(a.text, b.text);
    assert!(a.text.contains("Paris"), "{:?}", a.text);
    assert!(a.usage.prompt_tokens > 10);
    assert!(a.usage.completion_tokens >= 1 && a.usage.completion_tokens <= 12);
    assert_eq!(a.usage.total_tokens, a.usage.prompt_tokens + a.usage.completion_tokens);
    assert!(a.timings.total_us >= a.timings.time_to_first_token_us);
    assert!(a.timings.time_to_first_token_us > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_sampling_is_reproducible_even_with_neighbours_in_the_batch() {
    let req = chat("Invent a name for a cat.").with_sampling(seeded(1234)).with_max_tokens(16);
    let alone = rt().generate(req.clone()).await.unwrap().collect_completion().await.unwrap();
    // Same request again, this time sharing the batch with two other sequences.
    let n1 = rt().generate(chat("Count from one to ten.").with_sampling(seeded(7)).with_max_tokens(24)).await.unwrap();
    let again = rt().generate(req.clone()).await.unwrap();
    let n2 = rt().generate(chat("Name three colours.").with_sampling(seeded(99)).with_max_tokens(24)).await.unwrap();
    let (again, _, _) = tokio::join!(again.collect_completion(), n1.collect_completion(), n2.collect_completion());
    let again = again.unwrap();
    assert_eq!(alone.text, again.text, "same seed and prompt must give the same output");
    assert_eq!(alone.usage, again.usage);
    // A different seed takes another path (with overwhelming probability at temperature 0.9).
    let mut differs = false;
    for seed in [1u64, 2, 3] {
        let other = rt().generate(req.clone().with_sampling(seeded(seed))).await.unwrap().collect_completion().await.unwrap();
        differs |= other.text != alone.text;
    }
    assert!(differs, "three other seeds all gave {:?}", alone.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_decode_together() {
    let before = rt().metrics();
    let prompts = ["Say hello.", "Name a fruit.", "What is 2+2?", "Name a planet."];
    let mut streams = Vec::new();
    for p in prompts {
        streams.push(rt().generate(chat(p).with_sampling(SamplingParams::greedy()).with_max_tokens(16)).await.unwrap());
    }
    let outs = futures::future::join_all(streams.into_iter().map(|s| s.collect_completion())).await;
    // Each equals its own solo greedy run.
    for (p, out) in prompts.iter().zip(outs) {
        let out = out.unwrap();
        let solo = rt()
            .generate(chat(p).with_sampling(SamplingParams::greedy()).with_max_tokens(16))
            .await
            .unwrap()
            .collect_completion()
            .await
            .unwrap();
        assert_eq!(out.text, solo.text, "prompt {p:?}");
        assert!(!out.text.is_empty());
    }
    let after = rt().metrics();
    assert!(after.requests_total >= before.requests_total + 8);
    assert!(after.generated_tokens_total > before.generated_tokens_total);
    // 4 concurrent streams of up to 16 tokens took fewer decode steps than 4 * 16 would alone.
    assert!(after.decode_steps_total > before.decode_steps_total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_cancels_the_sequence() {
    // A runtime of its own, so other tests' sequences do not blur the metrics.
    let own = fresh("c", 2).await;
    let chat = |t: &str| GenerateRequest::chat("c", vec![ChatMessage::user(t)]);
    let mut s = own
        .generate(chat("Write a very long essay about the sea.").with_sampling(SamplingParams::greedy()).with_max_tokens(400))
        .await
        .unwrap();
    // Read one delta, then drop.
    let first = tokio::time::timeout(Duration::from_secs(60), s.next_event()).await.unwrap();
    assert!(matches!(first, Some(Ok(GenerationEvent::Delta { .. }))), "{first:?}");
    let gen_before = own.metrics().generated_tokens_total;
    drop(s);
    // The slot frees quickly: the runtime goes idle without generating 400 tokens.
    let t = std::time::Instant::now();
    loop {
        let m = own.metrics();
        if m.active_sequences == 0 && m.queue_depth == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "sequence not cancelled: {m:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = own.metrics();
    assert!(m.generated_tokens_total - gen_before < 390, "kept generating after drop");

    // Explicit cancel() ends the stream with Cancelled.
    let mut s = own
        .generate(chat("Write a very long essay about mountains.").with_sampling(SamplingParams::greedy()).with_max_tokens(400))
        .await
        .unwrap();
    s.cancel();
    let mut saw_cancel = false;
    while let Some(ev) = s.next_event().await {
        if let Err(RuntimeError::Cancelled) = ev {
            saw_cancel = true;
        }
        assert!(!matches!(ev, Ok(GenerationEvent::Done { .. })), "cancelled stream completed");
    }
    assert!(saw_cancel);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sequences_cut_the_output() {
    let base = chat("Count from 1 to 20, separated by commas.").with_sampling(SamplingParams::greedy()).with_max_tokens(60);
    let full = rt().generate(base.clone()).await.unwrap().collect_completion().await.unwrap();
    assert!(full.text.contains('5'), "{:?}", full.text);
    let cut = full.text.find('5').unwrap();
    let stopped = rt().generate(base.with_stop(vec!["5".into()])).await.unwrap().collect_completion().await.unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert_eq!(stopped.text, full.text[..cut], "output must end right before the stop sequence");
    assert!(!stopped.text.contains('5'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_gives_length() {
    let c = rt()
        .generate(chat("Write a long poem about rain.").with_sampling(SamplingParams::greedy()).with_max_tokens(5))
        .await
        .unwrap()
        .collect_completion()
        .await
        .unwrap();
    assert_eq!(c.finish_reason, FinishReason::Length);
    assert_eq!(c.usage.completion_tokens, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_object_mode_produces_json() {
    let req = chat("Describe a cat as a JSON object with fields name and age.")
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(80)
        .with_response_format(ResponseFormat::JsonObject);
    let c = rt().generate(req).await.unwrap().collect_completion().await.unwrap();
    assert_eq!(c.finish_reason, FinishReason::Stop, "grammar should complete the object: {:?}", c.text);
    let v: serde_json::Value = serde_json::from_str(c.text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", c.text));
    assert!(v.is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_mode_follows_the_schema() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": false
    });
    let req = chat("Give the largest city of Japan and its population.")
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(60)
        .with_response_format(ResponseFormat::JsonSchema { name: Some("city".into()), schema });
    let c = rt().generate(req).await.unwrap().collect_completion().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(c.text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", c.text));
    assert!(v["city"].is_string(), "{v}");
    assert!(v["population"].is_i64() || v["population"].is_u64(), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 2);

    let bad = chat("x").with_response_format(ResponseFormat::JsonSchema { name: None, schema: serde_json::json!("nope") });
    assert!(matches!(rt().generate(bad).await, Err(RuntimeError::InvalidRequest(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_typed_errors() {
    let e = rt().generate(GenerateRequest::chat("no-such-model", vec![ChatMessage::user("hi")])).await.unwrap_err();
    assert!(matches!(e, RuntimeError::ModelNotFound { .. }), "{e}");
    let e = rt().generate(GenerateRequest::chat(MODEL, vec![])).await.unwrap_err();
    assert!(matches!(e, RuntimeError::InvalidRequest(_)), "{e}");
    let s = SamplingParams { top_p: 0.0, ..SamplingParams::default() };
    let e = rt().generate(chat("hi").with_sampling(s)).await.unwrap_err();
    assert!(e.to_string().contains("top_p"), "{e}");
    let e = rt().generate(chat("hi").with_stop(vec![String::new()])).await.unwrap_err();
    assert!(matches!(e, RuntimeError::InvalidRequest(_)));
    let long = "word ".repeat(3000);
    let e = rt().generate(GenerateRequest::completion(MODEL, long)).await.unwrap_err();
    assert!(matches!(e, RuntimeError::ContextOverflow { context_length: 1024, .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_completion_and_token_counting() {
    let n = rt().count_tokens(MODEL, &Prompt::Text("Hello world".into())).await.unwrap();
    assert!((2..=4).contains(&n), "{n}");
    let chat_n = rt().count_tokens(MODEL, &Prompt::Chat(vec![ChatMessage::user("Hello world")])).await.unwrap();
    assert!(chat_n > n, "the template adds tokens: {chat_n} vs {n}");
    let c = rt()
        .generate(GenerateRequest::completion(MODEL, "The capital of France is").with_sampling(SamplingParams::greedy()).with_max_tokens(6))
        .await
        .unwrap()
        .collect_completion()
        .await
        .unwrap();
    assert!(c.text.contains("Paris"), "{:?}", c.text);
    assert_eq!(c.usage.prompt_tokens, rt().count_tokens(MODEL, &Prompt::Text("The capital of France is".into())).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_at_once() {
    let path = default_model_path().unwrap();
    let cfg = LlamaConfig { threads: 1, max_sequences: 1, queue_capacity: 1, context_per_sequence: 512, batch_tokens: 64, ..LlamaConfig::default() };
    let small = LlamaRuntime::new(cfg).unwrap();
    small.load_model(LoadModelSpec::from_path(&path).with_id("q")).await.unwrap();
    let long = || GenerateRequest::chat("q", vec![ChatMessage::user("Write a long story.")]).with_sampling(SamplingParams::greedy()).with_max_tokens(300);
    let mut accepted = Vec::new();
    let mut refused = None;
    for _ in 0..3 {
        match small.generate(long()).await {
            Ok(s) => accepted.push(s),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    match refused {
        Some(RuntimeError::QueueFull { retry_after_ms }) => assert!(retry_after_ms >= 100),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert!(small.metrics().requests_rejected_total >= 1);
    drop(accepted);
    small.unload_model("q").await.unwrap();
    assert!(small.list_models().await.unwrap().is_empty());
    assert!(matches!(small.unload_model("q").await, Err(RuntimeError::ModelNotFound { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_bad_files_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.gguf");
    std::fs::write(&p, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let e = rt().load_model(LoadModelSpec::from_path(&p)).await.unwrap_err();
    assert!(matches!(e, RuntimeError::InvalidGguf(_)), "{e}");
    let e = rt().load_model(LoadModelSpec::from_path(dir.path().join("missing.gguf"))).await.unwrap_err();
    assert!(e.to_string().contains("missing.gguf"), "{e}");
    let mut spec = LoadModelSpec::from_path(default_model_path().unwrap()).with_id("other");
    spec.expected_sha256 = Some("0".repeat(64));
    assert!(matches!(rt().load_model(spec).await, Err(RuntimeError::DigestMismatch { .. })));
    let e = rt().load_model(LoadModelSpec::from_path(default_model_path().unwrap()).with_id(MODEL)).await.unwrap_err();
    assert!(matches!(e, RuntimeError::InvalidRequest(_)), "already loaded: {e}");
}

// ---- OpenAI-compatible upstream backend against the engine served over HTTP on loopback ----

#[path = "support/openai_server.rs"]
mod openai_server;

use b3iq_runtime::upstream::{ApiKeySource, UpstreamConfig, UpstreamRuntime};

async fn served(key: Option<&str>) -> String {
    let state = openai_server::AppState { runtime: std::sync::Arc::new(rt().clone()), key: key.map(str::to_string) };
    openai_server::serve(state, 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_discovers_streams_and_maps_usage() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "sk-test-123\n").unwrap();
    let base = served(Some("sk-test-123")).await;
    let mut cfg = UpstreamConfig::new(&base);
    cfg.api_key = ApiKeySource::File(key_file);
    let up = UpstreamRuntime::new(cfg).unwrap();

    let h = up.health().await;
    assert_eq!(h.status, HealthStatus::Ok, "{}", h.message);
    let models = up.list_models().await.unwrap();
    assert_eq!(models.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), vec![MODEL]);
    assert_eq!(models[0].context_length, 1024);
    assert_eq!(models[0].backend, BackendKind::OpenAiUpstream);
    assert!(up.load_model(LoadModelSpec::from_path("x").with_id(MODEL)).await.is_ok());
    assert!(matches!(up.load_model(LoadModelSpec::from_path("x").with_id("nope")).await, Err(RuntimeError::ModelNotFound { .. })));

    // Streaming pass-through equals the local engine's output for a greedy request.
    let req = chat("What is the capital of France? Answer in one word.").with_sampling(SamplingParams::greedy()).with_max_tokens(12);
    let local = rt().generate(req.clone()).await.unwrap().collect_completion().await.unwrap();
    let mut stream = up.generate(req.clone()).await.unwrap();
    let mut deltas = 0;
    let mut text = String::new();
    let mut done = None;
    while let Some(ev) = stream.next_event().await {
        match ev.unwrap() {
            GenerationEvent::Delta { text: t, .. } => {
                deltas += 1;
                text.push_str(&t);
            }
            GenerationEvent::Done { finish_reason, usage, timings, .. } => done = Some((finish_reason, usage, timings)),
        }
    }
    let (reason, usage, timings) = done.expect("final event");
    assert_eq!(text, local.text);
    assert!(deltas >= 1);
    assert_eq!(reason, local.finish_reason);
    // Token counts come from the upstream's usage chunk; its prompt cache is its own (the
    // upstream's runtime may hold this prompt already), passed through as it reports it.
    let counts = |u: &Usage| (u.prompt_tokens, u.completion_tokens, u.total_tokens);
    assert_eq!(counts(&usage), counts(&local.usage), "usage comes from the upstream's usage chunk");
    assert!(usage.cached_prompt_tokens < usage.prompt_tokens);
    assert!(timings.total_us >= timings.time_to_first_token_us);

    // Raw completions and token counting through /tokenize.
    let c = up
        .generate(GenerateRequest::completion(MODEL, "The capital of France is").with_sampling(SamplingParams::greedy()).with_max_tokens(6))
        .await
        .unwrap()
        .collect_completion()
        .await
        .unwrap();
    assert!(c.text.contains("Paris"), "{:?}", c.text);
    assert!(c.token_ids.is_none(), "an upstream reports no token ids");
    let n = up.count_tokens(MODEL, &Prompt::Text("Hello world".into())).await.unwrap();
    assert_eq!(n, rt().count_tokens(MODEL, &Prompt::Text("Hello world".into())).await.unwrap());

    // Upstream errors are mapped: unknown model 404 -> ModelNotFound, bad params 400.
    let e = up.generate(GenerateRequest::chat("nope", vec![ChatMessage::user("hi")])).await.unwrap_err();
    assert!(matches!(e, RuntimeError::ModelNotFound { .. }), "{e}");
    let m = up.metrics();
    assert!(m.requests_total >= 2 && m.generated_tokens_total >= 2, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_are_clear() {
    // Wrong key.
    let base = served(Some("right")).await;
    std::env::set_var("B3IQ_TEST_UPSTREAM_KEY", "wrong");
    let mut cfg = UpstreamConfig::new(&base);
    cfg.api_key = ApiKeySource::Env("B3IQ_TEST_UPSTREAM_KEY".into());
    let up = UpstreamRuntime::new(cfg).unwrap();
    assert!(matches!(up.list_models().await, Err(RuntimeError::UpstreamAuth { status: 401 })));
    let e = up.generate(chat("hi")).await.unwrap_err();
    assert!(matches!(e, RuntimeError::UpstreamAuth { .. }), "{e}");

    // Nothing listening: UpstreamUnavailable, health Down.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/v1", l.local_addr().unwrap());
    drop(l);
    let mut cfg = UpstreamConfig::new(&dead);
    cfg.connect_timeout_ms = 2000;
    let up = UpstreamRuntime::new(cfg).unwrap();
    let e = up.generate(chat("hi")).await.unwrap_err();
    assert!(matches!(e, RuntimeError::UpstreamUnavailable { .. }), "{e}");
    assert!(e.to_string().contains("check that it is running"), "{e}");
    let h = up.health().await;
    assert_eq!(h.status, HealthStatus::Down);

    // A server that accepts but never answers: the idle timeout fires.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let mut cfg = UpstreamConfig::new(format!("http://{addr}/v1"));
    cfg.idle_timeout_ms = 500;
    let up = UpstreamRuntime::new(cfg).unwrap();
    let t = std::time::Instant::now();
    let e = up.list_models().await.unwrap_err();
    assert!(matches!(e, RuntimeError::UpstreamUnavailable { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

// ---- Benchmark suite: runs end to end on a tiny budget and yields a verifiable signed record ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_suite_produces_a_signed_record() {
    use b3iq_runtime::bench::{run_suite, SkuBands, SuiteOptions};
    let dir = tempfile::tempdir().unwrap();
    let hw = b3iq_runtime::hardware::scan(dir.path(), b3iq_runtime::hardware::ScanOptions { wgpu: false, nvml: false });
    let opts = SuiteOptions { prompt_tokens: 64, gen_tokens: 8, repetitions: 1, concurrency: vec![1, 2], serving_max_tokens: 4 };
    let r = run_suite(rt(), MODEL, &hw, &opts).await.unwrap();
    assert!(r.pp_tokens_per_second > 0.0 && r.tg_tokens_per_second > 0.0, "{r:?}");
    assert_eq!(r.serving.iter().map(|s| s.concurrency).collect::<Vec<_>>(), vec![1, 2]);
    assert!(r.serving.iter().all(|s| s.tokens >= s.concurrency as u64 && s.tokens_per_second() > 0.0), "{r:?}");
    assert_eq!(r.hardware_fingerprint, hw.fingerprint());
    assert_eq!(r.model_sha256, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
    let bands = SkuBands::builtin().unwrap();
    assert!(!bands.bands.is_empty());
    assert_eq!(r.sku_bands, bands.classify(r.tg_tokens_per_second).iter().map(|b| b.id.clone()).collect::<Vec<_>>());

    {
        use b3iq_runtime::bench::sign_record;
    let key = b3iq_core::NodeKey::from_seed([7u8; 32]);
    let signed = sign_record(&r, &key, 1_700_000_000_000).unwrap();
    signed.verify(&key.public()).unwrap();
    let body = signed.body();
    assert_eq!(body.generation_milli_tokens_per_s, (r.tg_tokens_per_second * 1000.0).round() as u64);
    assert_eq!(body.concurrency.len(), 2);
    assert_eq!(body.model_digest.to_hex(), r.model_sha256);
    // Another key does not verify it.
    assert!(signed.verify(&b3iq_core::NodeKey::from_seed([8u8; 32]).public()).is_err());
    }
}

// ---- Token ids for receipts ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_ids_detokenize_to_the_delivered_text() {
    let req = chat("Write two sentences about the moon.").with_sampling(SamplingParams::greedy()).with_max_tokens(40);
    let full = rt().generate(req.clone()).await.unwrap().collect_completion().await.unwrap();
    let ids = full.token_ids.clone().expect("the llama backend reports token ids");
    assert_eq!(ids.prompt, rt().tokenize(MODEL, &req.prompt).unwrap());
    assert_eq!(ids.prompt.len() as u32, full.usage.prompt_tokens);
    assert_eq!(ids.completion.len() as u32, full.usage.completion_tokens, "no stop: every generated token");
    assert!(full.text.len() > 20, "{:?}", full.text);
    assert_eq!(rt().detokenize(MODEL, &ids.completion).unwrap(), full.text);
    assert!(matches!(rt().detokenize(MODEL, &[u32::MAX]), Err(RuntimeError::InvalidRequest(_))));

    // A stop sequence that starts inside a token: the ids cover the delivered text, and the
    // token straddling the cut is included.
    let mut straddled = false;
    let starts: Vec<usize> = full.text.match_indices(' ').map(|(i, _)| i + 2).filter(|&i| i + 3 <= full.text.len()).collect();
    for cut in starts.into_iter().skip(2).take(4) {
        let Some(stop) = full.text.get(cut..cut + 3) else { continue };
        if full.text.find(stop) != Some(cut) {
            continue;
        }
        let c = rt().generate(req.clone().with_stop(vec![stop.to_string()])).await.unwrap().collect_completion().await.unwrap();
        assert_eq!(c.text, full.text[..cut]);
        assert_eq!(c.finish_reason, FinishReason::Stop);
        let t = c.token_ids.expect("token ids");
        assert_eq!(t.prompt, ids.prompt);
        assert!(ids.completion.starts_with(&t.completion), "the ids are a prefix of the sampled tokens");
        assert!(t.completion.len() as u32 <= c.usage.completion_tokens);
        let text = rt().detokenize(MODEL, &t.completion).unwrap();
        assert!(text.starts_with(&c.text), "{text:?} vs {:?}", c.text);
        let extra = &text[c.text.len()..];
        // Beyond the delivered text: the rest of the straddling token, which begins where the
        // stop sequence begins (all of it, or its start when it runs into later tokens).
        assert!(stop.starts_with(extra) || extra.starts_with(stop), "{extra:?} vs stop {stop:?}");
        // Without its last token, the ids no longer cover the delivered text.
        let shorter = rt().detokenize(MODEL, &t.completion[..t.completion.len() - 1]).unwrap();
        assert!(shorter.len() < c.text.len());
        if !extra.is_empty() {
            straddled = true;
            break;
        }
    }
    assert!(straddled, "no stop sequence cut inside a token in {:?}", full.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_token_ids_do_not_depend_on_batch_neighbours() {
    let req = chat("Invent a name for a dog.").with_sampling(seeded(42)).with_max_tokens(16);
    let alone = rt().generate(req.clone()).await.unwrap().collect_completion().await.unwrap();
    let n1 = rt().generate(chat("Count to five.").with_sampling(seeded(3)).with_max_tokens(20)).await.unwrap();
    let again = rt().generate(req).await.unwrap();
    let (again, _) = tokio::join!(again.collect_completion(), n1.collect_completion());
    let again = again.unwrap();
    assert_eq!(alone.text, again.text);
    assert_eq!(alone.token_ids, again.token_ids);
    assert!(alone.token_ids.is_some());
}

// ---- The quick benchmark the host runs ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_benchmark_runs_the_documented_request() {
    use b3iq_runtime::bench::{run_quick, QuickBenchmark};
    let req = QuickBenchmark::request(MODEL);
    assert_eq!(req.max_tokens, Some(64));
    assert_eq!(req.sampling.temperature, 0.0);
    assert_eq!(req.prompt, Prompt::Chat(vec![ChatMessage::user("Write a short story about a robot who learns to paint. Use simple words.")]));
    assert!(req.stop.is_empty());

    let r = run_quick(rt(), MODEL).await.unwrap();
    assert_eq!(r.model, MODEL);
    assert_eq!(r.prompt_tokens, rt().count_tokens(MODEL, &req.prompt).await.unwrap());
    assert!((2..=64).contains(&r.completion_tokens), "{r:?}");
    assert!(r.tokens_per_second > 0.0 && r.prompt_tokens_per_second > 0.0, "{r:?}");
    assert!(r.ttft_ms <= r.total_ms && r.total_ms > 0, "{r:?}");
    let v = serde_json::to_value(&r).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["completion_tokens", "model", "prompt_tokens", "prompt_tokens_per_second", "tokens_per_second", "total_ms", "ttft_ms"]
    );

    // Fed by hand, as the host does through its own inference path.
    let mut meter = QuickBenchmark::meter(MODEL);
    let mut s = rt().generate(req.clone()).await.unwrap();
    while let Some(ev) = s.next_event().await {
        meter.on_event(&ev.unwrap());
    }
    let by_hand = meter.finish().unwrap();
    assert_eq!((by_hand.prompt_tokens, by_hand.completion_tokens), (r.prompt_tokens, r.completion_tokens), "greedy");

    let mut cut_short = QuickBenchmark::meter(MODEL);
    cut_short.on_event(&GenerationEvent::delta("Once"));
    assert!(matches!(cut_short.finish(), Err(RuntimeError::Backend(_))));
}

// ---- The decoder seam and the engine's reaction to a full KV cache ----

mod seam {
    use super::*;
    use b3iq_runtime::engine::{
        Backend, BatchToken, DecodeBatch, DecodeError, Decoder, DecoderShape, Engine, EngineConfig, EngineCounters,
        SampleSite,
    };
    use b3iq_runtime::llama::{LlamaCppBackend, LlamaDecoder};
    use std::sync::Arc;

    fn backend() -> LlamaCppBackend {
        LlamaCppBackend::new(rt().llama_model(MODEL).unwrap(), 2, false)
    }

    #[test]
    fn a_decoder_gives_logits_and_greedy_picks_their_maximum() {
        let b = backend();
        let prompt = b.tokenize_prompt(&Prompt::Text("The capital of France is".into())).unwrap();
        let mut d = b.new_decoder(DecoderShape { max_sequences: 2, context_per_sequence: 256, batch_tokens: 64 }).unwrap();
        let mut batch = DecodeBatch::with_capacity(64);
        // The same prompt in two sequences.
        for seq in 0..2 {
            for (i, &t) in prompt.iter().enumerate() {
                batch.push(BatchToken { token: t, pos: i as u32, seq, wants_output: i + 1 == prompt.len() }).unwrap();
            }
        }
        d.decode(&batch).unwrap();
        let rows = [prompt.len() - 1, 2 * prompt.len() - 1];
        assert!(d.logits(0).is_none(), "rows without output have no logits");
        let logits = d.logits(rows[0]).unwrap().to_vec();
        assert_eq!(logits.len(), rt().llama_model(MODEL).unwrap().n_vocab() as usize);
        let argmax_of = |l: &[f32]| (0..l.len()).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap() as u32;
        let argmax = argmax_of(&logits);
        let other = d.logits(rows[1]).unwrap();
        assert_eq!(argmax_of(other), argmax, "two identical sequences, same prediction");
        let drift = logits.iter().zip(other).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(drift < 1e-2, "{drift}");
        let mut greedy = b.new_sampler(&SamplingParams::greedy(), &ResponseFormat::Text).unwrap();
        let site = SampleSite { seq: 0, row: rows[0], position: prompt.len() as u32, index: 0 };
        let tok = d.sample(&mut greedy, site).unwrap();
        assert_eq!(tok, argmax);
        assert!(b.detokenize(&[tok]).contains("Paris"), "{:?}", b.detokenize(&[tok]));
        assert!(d.hidden_state(rows[0]).is_none(), "no embeddings context");
        assert!(matches!(d.sample(&mut greedy, SampleSite { row: 0, ..site }), Err(DecodeError::Failed(_))));
    }

    #[test]
    fn a_full_kv_stream_is_a_typed_decode_error() {
        let b = backend();
        let mut d = b.new_decoder(DecoderShape { max_sequences: 1, context_per_sequence: 256, batch_tokens: 256 }).unwrap();
        let mut batch = DecodeBatch::with_capacity(256);
        let fill = |batch: &mut DecodeBatch, from: u32, to: u32| {
            batch.clear();
            for i in from..to {
                batch.push(BatchToken { token: 100 + i, pos: i, seq: 0, wants_output: i + 1 == to }).unwrap();
            }
        };
        fill(&mut batch, 0, 200);
        d.decode(&batch).unwrap();
        assert!(d.logits(199).is_some());
        // 100 more tokens do not fit the 256 cells.
        fill(&mut batch, 200, 300);
        assert_eq!(d.decode(&batch), Err(DecodeError::KvCacheFull));
        assert!(d.logits(99).is_none(), "a failed decode leaves no outputs");
        // 50 more do: nothing of the failed batch was kept.
        fill(&mut batch, 200, 250);
        d.decode(&batch).unwrap();
        assert!(d.logits(49).is_some());
        // Clearing the sequence frees its cells.
        d.clear_sequence(0);
        fill(&mut batch, 0, 250);
        d.decode(&batch).unwrap();
    }

    /// The real llama.cpp backend, but its decoders get fewer KV cells per sequence than the
    /// engine plans with, so the engine meets a full KV cache.
    struct ShortKv {
        inner: LlamaCppBackend,
        cells: u32,
    }

    impl Backend for ShortKv {
        type Sampler = <LlamaCppBackend as Backend>::Sampler;
        type Decoder<'a> = LlamaDecoder<'a>;
        fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String, RuntimeError> {
            self.inner.chat_prompt(messages)
        }
        fn tokenize(&self, text: &str, parse_special: bool) -> Vec<u32> {
            self.inner.tokenize(text, parse_special)
        }
        fn token_piece(&self, token: u32, out: &mut Vec<u8>) {
            self.inner.token_piece(token, out)
        }
        fn is_end_of_generation(&self, token: u32) -> bool {
            self.inner.is_end_of_generation(token)
        }
        fn new_sampler(&self, sampling: &SamplingParams, format: &ResponseFormat) -> Result<Self::Sampler, RuntimeError> {
            self.inner.new_sampler(sampling, format)
        }
        fn new_decoder(&self, shape: DecoderShape) -> Result<LlamaDecoder<'_>, RuntimeError> {
            self.inner.new_decoder(DecoderShape { context_per_sequence: self.cells, ..shape })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_engine_ends_or_evicts_sequences_when_the_kv_cache_is_full() {
        let counters = Arc::new(EngineCounters::default());
        let config = EngineConfig {
            shape: DecoderShape { max_sequences: 2, context_per_sequence: 1024, batch_tokens: 64 },
            queue_capacity: 4,
            prompt_cache: true,
        };
        let engine = Engine::start("b3iq-test-shortkv", Arc::new(ShortKv { inner: backend(), cells: 256 }), config, counters.clone())
            .unwrap();
        // Generating past the 256 real cells: the sequence ends with `length`, its text whole.
        let long = GenerateRequest::completion(MODEL, "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,")
            .with_sampling(SamplingParams::greedy())
            .with_max_tokens(600);
        let c = engine.submit(&long).unwrap().collect_completion().await.unwrap();
        assert_eq!(c.finish_reason, FinishReason::Length);
        let ids = c.token_ids.unwrap();
        assert!(ids.prompt.len() + ids.completion.len() <= 257, "{} + {}", ids.prompt.len(), ids.completion.len());
        assert!(ids.prompt.len() + ids.completion.len() >= 200, "it did fill the cache");
        assert_eq!(engine.backend().inner.detokenize(&ids.completion), c.text);
        // One refused decode (the decode-only batch), then the sequence ended: no halving loop.
        let m = counters.metrics(4, 2);
        assert_eq!((m.kv_cache_full_retries_total, m.kv_cache_full_evictions_total), (1, 1), "{m:?}");

        // A prompt longer than the real cells (but within the planned context) cannot be read:
        // a typed, retryable error.
        let prompt = "one two three four five six seven eight nine ten ".repeat(40);
        let e = engine.submit(&GenerateRequest::completion(MODEL, prompt).with_max_tokens(4)).unwrap().collect_completion().await;
        match e {
            Err(e @ RuntimeError::KvCacheFull) => {
                assert!(e.is_retryable());
                assert_eq!(b3iq_core::ClassifiedError::code(&e), "kv_cache_full");
            }
            other => panic!("expected KvCacheFull, got {other:?}"),
        }
        // Alone in the cache, its prompt can never fit: it ended at the first refused decode.
        let m = counters.metrics(4, 2);
        assert_eq!((m.kv_cache_full_retries_total, m.kv_cache_full_evictions_total), (2, 2), "{m:?}");
        // The engine still serves.
        let ok = engine.submit(&chat("Say hello.").with_sampling(SamplingParams::greedy()).with_max_tokens(4)).unwrap();
        assert!(!ok.collect_completion().await.unwrap().text.is_empty());
        // The counters settle right after the final events.
        let t = std::time::Instant::now();
        while counters.metrics(4, 2).requests_total < 3 || counters.metrics(4, 2).active_sequences > 0 {
            assert!(t.elapsed() < Duration::from_secs(10), "{:?}", counters.metrics(4, 2));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(counters.metrics(4, 2).requests_total, 3);
    }

    /// The real llama.cpp backend with one KV stream per sequence (a sequence's numbers never
    /// depend on its neighbours), under a shared budget of `cells` KV cells: a batch that would
    /// take the sequences together past it is refused with `KvCacheFull` before llama.cpp sees
    /// it, as a shared buffer of that size refuses it.
    struct PooledKv {
        inner: LlamaCppBackend,
        cells: u32,
    }

    struct PooledDecoder<'a> {
        inner: LlamaDecoder<'a>,
        cells: u32,
        held: Vec<u32>,
    }

    impl Decoder for PooledDecoder<'_> {
        type Sampler = <LlamaCppBackend as Backend>::Sampler;
        fn decode(&mut self, batch: &DecodeBatch) -> Result<(), DecodeError> {
            if self.held.iter().sum::<u32>() + batch.len() as u32 > self.cells {
                return Err(DecodeError::KvCacheFull);
            }
            self.inner.decode(batch)?;
            for t in batch.tokens() {
                self.held[t.seq as usize] += 1;
            }
            Ok(())
        }
        fn sample(&mut self, sampler: &mut Self::Sampler, site: SampleSite) -> Result<u32, DecodeError> {
            self.inner.sample(sampler, site)
        }
        fn logits(&self, row: usize) -> Option<&[f32]> {
            self.inner.logits(row)
        }
        fn clear_sequence(&mut self, seq: u32) {
            self.held[seq as usize] = 0;
            self.inner.clear_sequence(seq)
        }
    }

    impl Backend for PooledKv {
        type Sampler = <LlamaCppBackend as Backend>::Sampler;
        type Decoder<'a> = PooledDecoder<'a>;
        fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String, RuntimeError> {
            self.inner.chat_prompt(messages)
        }
        fn tokenize(&self, text: &str, parse_special: bool) -> Vec<u32> {
            self.inner.tokenize(text, parse_special)
        }
        fn token_piece(&self, token: u32, out: &mut Vec<u8>) {
            self.inner.token_piece(token, out)
        }
        fn is_end_of_generation(&self, token: u32) -> bool {
            self.inner.is_end_of_generation(token)
        }
        fn new_sampler(&self, sampling: &SamplingParams, format: &ResponseFormat) -> Result<Self::Sampler, RuntimeError> {
            self.inner.new_sampler(sampling, format)
        }
        fn new_decoder(&self, shape: DecoderShape) -> Result<PooledDecoder<'_>, RuntimeError> {
            Ok(PooledDecoder { inner: self.inner.new_decoder(shape)?, cells: self.cells, held: vec![0; shape.max_sequences as usize] })
        }
    }

    /// Issue 17, item 10: the sequences that stay after a full KV cache ended another give
    /// exactly their solo outputs (greedy and seeded); the one ended held the most cells.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn survivors_of_a_full_kv_cache_give_their_solo_outputs() {
        let counters = Arc::new(EngineCounters::default());
        let config = EngineConfig {
            shape: DecoderShape { max_sequences: 3, context_per_sequence: 256, batch_tokens: 32 },
            queue_capacity: 8,
            // The solo runs would leave cached prompts in the pool: the survivors start cold.
            prompt_cache: false,
        };
        let engine = Engine::start("b3iq-test-pooledkv", Arc::new(PooledKv { inner: backend(), cells: 256 }), config, counters.clone())
            .unwrap();
        let (big, [a, b]) = overflow_workload(MODEL);
        // One survivor seeded, so a sampler whose draw was wasted on a refused batch would show.
        let survivors = [a, b.with_sampling(seeded(31))];
        let mut solo = Vec::new();
        for r in &survivors {
            solo.push(engine.submit(r).unwrap().collect_completion().await.unwrap());
        }
        assert!(solo.iter().all(|c| c.usage.completion_tokens == 48), "the survivors must outlive the overflow");
        let m0 = counters.metrics(8, 3);
        assert_eq!(m0.kv_cache_full_retries_total, 0);
        // The survivors join when the largest holds ~210 of the 256 cells: their prompt chunks
        // are refused and halved first, then the largest ends.
        let mut big_stream = engine.submit(&big).unwrap();
        for _ in 0..60 {
            match big_stream.next_event().await {
                Some(Ok(GenerationEvent::Delta { .. })) => {}
                other => panic!("{other:?}"),
            }
        }
        let streams: Vec<_> = survivors.iter().map(|r| engine.submit(r).unwrap()).collect();
        let big_out = big_stream.collect_completion().await;
        assert!(matches!(big_out, Err(RuntimeError::KvCacheFull)), "{big_out:?}");
        let outs = futures::future::join_all(streams.into_iter().map(|s| s.collect_completion())).await;
        for (out, solo) in outs.into_iter().zip(&solo) {
            let out = out.expect("a survivor");
            assert_eq!(out.text, solo.text);
            assert_eq!(out.token_ids, solo.token_ids);
            assert_eq!(out.usage, solo.usage);
        }
        let m = counters.metrics(8, 3);
        // At least one halving (a refused batch with prompt tokens) before the decode-only
        // batch that ended the largest.
        assert!(m.kv_cache_full_retries_total >= 2, "{m:?}");
        assert_eq!(m.kv_cache_full_evictions_total, 1, "{m:?}");
    }
}

/// Issue 17, item 10: llama.cpp's shared KV buffer (`kv_unified`, `kv_cells`) smaller than the
/// sequences need together. When it is full the engine retries with smaller batches, then
/// ends only the sequence holding the most cells (`kv_cache_full`); the others go on to their
/// full length. (Their tokens equal their solo runs up to the eviction only: llama.cpp puts
/// their next cells into the freed ones, and the order of a sequence's cells in the shared
/// buffer is the order flash attention sums them in. The exact equality is asserted with one
/// KV stream per sequence in `seam::survivors_of_a_full_kv_cache_give_their_solo_outputs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_shared_kv_cache_ends_only_the_largest_sequence() {
    let path = default_model_path().unwrap();
    let cfg = LlamaConfig {
        threads: 2,
        max_sequences: 3,
        queue_capacity: 8,
        context_per_sequence: 256,
        batch_tokens: 32,
        kv_unified: true,
        kv_cells: Some(256),
        prompt_cache: false,
        ..LlamaConfig::default()
    };
    let own = LlamaRuntime::new(cfg.clone()).unwrap();
    own.load_model(LoadModelSpec::from_path(path).with_id("kv")).await.unwrap();
    let (big, survivors) = overflow_workload("kv");
    let before = own.metrics();
    // Together they need ~150 + 150 + 2 × (~35 + 48) cells > 256.
    let big_stream = own.generate(big).await.unwrap();
    let mut streams = Vec::new();
    for r in &survivors {
        streams.push(own.generate(r.clone()).await.unwrap());
    }
    let big_out = big_stream.collect_completion().await;
    let outs = futures::future::join_all(streams.into_iter().map(|s| s.collect_completion())).await;
    match big_out {
        Err(e @ RuntimeError::KvCacheFull) => {
            assert!(e.is_retryable());
            assert!(e.to_string().contains("retry"), "{e}");
        }
        other => panic!("the sequence holding the most cells must end with KvCacheFull, got {other:?}"),
    }
    for out in outs {
        let out = out.expect("a survivor");
        assert_eq!((out.finish_reason, out.usage.completion_tokens), (FinishReason::Length, 48), "{:?}", out.text);
    }
    let after = own.metrics();
    assert!(after.kv_cache_full_retries_total > before.kv_cache_full_retries_total, "{after:?}");
    assert_eq!(after.kv_cache_full_evictions_total, before.kv_cache_full_evictions_total + 1, "{after:?}");

    // A prompt that cannot fit the whole cache is refused at once, before any decode.
    let long = "one two three four five six seven eight nine ten ".repeat(30);
    let e = own.generate(GenerateRequest::completion("kv", long).with_max_tokens(4)).await.unwrap_err();
    assert!(matches!(e, RuntimeError::ContextOverflow { context_length: 256, .. }), "{e:?}");
    assert_eq!(own.metrics().kv_cache_full_retries_total, after.kv_cache_full_retries_total);

    // kv_cells sizes the shared buffer only, and never below one sequence's context.
    let bad = LlamaConfig { kv_unified: false, ..cfg.clone() };
    assert!(matches!(LlamaRuntime::new(bad), Err(RuntimeError::Config(_))));
    let bad = LlamaConfig { kv_cells: Some(128), ..cfg };
    assert!(matches!(LlamaRuntime::new(bad), Err(RuntimeError::Config(_))));
}

/// Three greedy requests that need more than 256 KV cells together: a ~150-token counting
/// prompt that keeps counting for 150 tokens (it holds the most cells), and two chats of 48
/// tokens that outlive the overflow.
fn overflow_workload(model: &str) -> (GenerateRequest, [GenerateRequest; 2]) {
    let greedy = |r: GenerateRequest, n: u32| r.with_sampling(SamplingParams::greedy()).with_max_tokens(n);
    let counting = (1..=40).map(|i| i.to_string()).collect::<Vec<_>>().join(", ") + ",";
    let big = greedy(GenerateRequest::completion(model, counting), 150);
    let small = |text: &str| greedy(GenerateRequest::chat(model, vec![ChatMessage::user(text)]), 48);
    (
        big,
        [
            small("Write a long story about a dragon who lives in a cave under a mountain and guards a treasure of gold and jewels."),
            small("Tell me a long story about a brave knight and a clever fox who travel together across the kingdom to find a lost crown."),
        ],
    )
}

/// Issue 17: log probabilities are the model's own distribution, one entry per delivered token,
/// and reading them never changes what is sampled (greedy or seeded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_report_the_model_distribution_without_changing_sampling() {
    let req = chat("What is the capital of France?").with_sampling(SamplingParams::greedy()).with_max_tokens(8);
    let plain = rt().generate(req.clone()).await.unwrap().collect_completion().await.unwrap();
    let with = rt().generate(req.with_logprobs(5)).await.unwrap().collect_completion().await.unwrap();
    assert!(plain.logprobs.is_empty());
    assert_eq!(with.text, plain.text);
    assert_eq!(with.logprobs.len() as u32, with.usage.completion_tokens, "{:?}", with.text);
    let mut bytes = Vec::new();
    for e in &with.logprobs {
        assert!(e.sampled.logprob <= 0.0, "{e:?}");
        assert_eq!(e.top.len(), 5);
        assert!(e.top.windows(2).all(|w| w[0].logprob >= w[1].logprob), "{e:?}");
        // Greedy with no other sampler picks the raw argmax: the most likely alternative.
        assert_eq!(e.top[0].token, e.sampled.token);
        assert_eq!(e.top[0].logprob, e.sampled.logprob);
        let mass: f32 = e.top.iter().map(|t| t.logprob.exp()).sum();
        assert!(mass <= 1.0001, "{mass}");
        bytes.extend_from_slice(&e.sampled.bytes);
    }
    assert_eq!(String::from_utf8_lossy(&bytes), with.text);
    // Seeded sampling: the same tokens with and without log probabilities.
    let seeded_req = chat("Invent a name for a dog.").with_sampling(seeded(77)).with_max_tokens(12);
    let a = rt().generate(seeded_req.clone()).await.unwrap().collect_completion().await.unwrap();
    let b = rt().generate(seeded_req.with_logprobs(0)).await.unwrap().collect_completion().await.unwrap();
    assert_eq!(a.token_ids.as_ref().unwrap().completion, b.token_ids.as_ref().unwrap().completion);
    assert_eq!(b.logprobs.len(), b.token_ids.as_ref().unwrap().completion.len());
    assert!(b.logprobs.iter().all(|e| e.top.is_empty() && e.sampled.logprob <= 0.0));
    let too_many = chat("hi").with_logprobs(21);
    assert!(matches!(rt().generate(too_many).await, Err(RuntimeError::InvalidRequest(_))));
}

/// Issue 17: `logit_bias` -100 bans the greedy token, +100 forces one; bad biases are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logit_bias_bans_and_forces_tokens() {
    let base = chat("What is the capital of France?").with_sampling(SamplingParams::greedy()).with_max_tokens(3).with_logprobs(4);
    let c = rt().generate(base.clone()).await.unwrap().collect_completion().await.unwrap();
    let greedy = c.logprobs[0].sampled.token;
    let alt = c.logprobs[0].top[3].token;
    let with = |bias: Vec<(u32, f32)>| {
        let mut r = base.clone();
        r.sampling.logit_bias = bias;
        r
    };
    let banned = rt().generate(with(vec![(greedy, -100.0)])).await.unwrap().collect_completion().await.unwrap();
    assert_ne!(banned.logprobs[0].sampled.token, greedy);
    // Log probabilities stay the model's: the banned token is still the likeliest there.
    assert_eq!(banned.logprobs[0].top[0].token, greedy);
    let forced = rt().generate(with(vec![(alt, 100.0)])).await.unwrap().collect_completion().await.unwrap();
    assert!(forced.logprobs.iter().all(|e| e.sampled.token == alt), "{:?}", forced.text);
    let n_vocab = 49_152;
    let e = rt().generate(with(vec![(n_vocab, 1.0)])).await.unwrap_err();
    assert!(e.to_string().contains("logit_bias"), "{e}");
    let e = rt().generate(with(vec![(1, 101.0)])).await.unwrap_err();
    assert!(e.to_string().contains("logit_bias"), "{e}");
    let e = rt().generate(with((0..301).map(|t| (t, 1.0)).collect())).await.unwrap_err();
    assert!(e.to_string().contains("300"), "{e}");
}

/// Issue 17: a forced tool call (the generic format's grammar) always parses as a call of the
/// offered function with arguments of its schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_tool_call_parses() {
    use b3iq_runtime::tools::{parse_tool_calls, tools_system_prompt, ToolFunction};
    let weather = ToolFunction {
        name: "get_weather".into(),
        description: Some("Current weather in a city".into()),
        parameters: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    };
    let msgs = vec![ChatMessage::system(tools_system_prompt(std::slice::from_ref(&weather))), ChatMessage::user("What is the weather in Paris?")];
    let req = GenerateRequest::chat(MODEL, msgs)
        .with_sampling(SamplingParams::greedy())
        .with_max_tokens(60)
        .with_response_format(ResponseFormat::ToolCall { tools: vec![weather] });
    let c = rt().generate(req).await.unwrap().collect_completion().await.unwrap();
    assert_eq!(c.finish_reason, FinishReason::Stop, "{:?}", c.text);
    assert!(c.text.starts_with("<tool_call>\n{") && c.text.trim_end().ends_with("</tool_call>"), "{:?}", c.text);
    let (content, calls) = parse_tool_calls(&c.text, &["get_weather"], true);
    assert_eq!((content.as_str(), calls.len()), ("", 1), "{:?}", c.text);
    let args: serde_json::Value = serde_json::from_str(&calls[0].arguments).unwrap();
    assert!(args["city"].is_string(), "{args}");
}

/// The greedy grammar shortcut skips the grammar's pass over the whole vocabulary when the
/// unconstrained argmax is allowed: measured in this thread's CPU time (independent of other
/// load), one greedy JSON step against the whole chain on the same candidates.
#[test]
fn the_greedy_grammar_shortcut_skips_the_full_vocabulary_pass() {
    use llama_cpp_2::token::data::LlamaTokenData;
    use llama_cpp_2::token::data_array::LlamaTokenDataArray;
    use llama_cpp_2::token::LlamaToken;
    fn cpu_us() -> u64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid pointer to a timespec; CLOCK_THREAD_CPUTIME_ID is always available on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
    }
    let model = rt().llama_model(MODEL).unwrap();
    let open = *rt().tokenize(MODEL, &Prompt::Text("{".into())).unwrap().last().unwrap();
    let n = model.n_vocab();
    let arr = || {
        LlamaTokenDataArray::from_iter(
            (0..n).map(|i| LlamaTokenData::new(LlamaToken::new(i), if i as u32 == open { 10.0 } else { (i % 7) as f32 * 0.1 }, 0.0)),
            false,
        )
    };
    let (mut fast_us, mut full_us) = (0, 0);
    for _ in 0..5 {
        let mut s = llama::build_sampler(&model, &SamplingParams::greedy(), &ResponseFormat::JsonObject).unwrap();
        let a = arr();
        let t = cpu_us();
        assert_eq!(s.sample_array(a, 0), open);
        fast_us += cpu_us() - t;
        let mut s = llama::build_sampler(&model, &SamplingParams::greedy(), &ResponseFormat::JsonObject).unwrap();
        let a = arr();
        let t = cpu_us();
        let survivors = s.survivors(a);
        full_us += cpu_us() - t;
        assert!(survivors.iter().any(|c| c.token == open && c.logit.is_finite()));
    }
    println!("greedy JSON step: shortcut {} us, whole chain {} us (CPU time, 5 runs)", fast_us, full_us);
    assert!(fast_us * 2 < full_us, "shortcut {fast_us} us vs whole chain {full_us} us");
}

/// Issue 17, item 8: the prompt (prefix) cache. The same 3-turn chat, greedy and seeded, on a
/// runtime with the cache and one without: byte-identical answers and token ids, and the third
/// turn reads most of its prompt from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prompt_cache_reuses_a_chat_history_without_changing_the_answers() {
    let path = default_model_path().unwrap();
    let make = |on: bool| {
        let path = path.clone();
        async move {
            let cfg = LlamaConfig {
                threads: 2,
                max_sequences: 2,
                queue_capacity: 8,
                context_per_sequence: 512,
                // Prompt chunks under 64 rows: every row takes the same attention kernel as a
                // decode step, so a row's numbers do not depend on how the prompt was cut.
                batch_tokens: 32,
                prompt_cache: on,
                ..LlamaConfig::default()
            };
            let rt = LlamaRuntime::new(cfg).unwrap();
            rt.load_model(LoadModelSpec::from_path(path).with_id("pc")).await.unwrap();
            rt
        }
    };
    let (on, off) = (make(true).await, make(false).await);
    let turns = ["Name three animals that live in the sea.", "Which of them is the largest?", "Write one sentence about it."];
    // Per turn: (text, token ids, prompt tokens, prompt tokens read from the cache).
    async fn chat3(rt: &LlamaRuntime, turns: &[&str], sampling: SamplingParams) -> Vec<(String, Option<TokenIds>, u32, u64)> {
        let mut messages = Vec::new();
        let mut out = Vec::new();
        for q in turns {
            messages.push(ChatMessage::user(*q));
            let req = GenerateRequest::chat("pc", messages.clone()).with_sampling(sampling.clone()).with_max_tokens(40);
            let before = rt.metrics().prompt_tokens_cached_total;
            let c = rt.generate(req).await.unwrap().collect_completion().await.unwrap();
            let reused = rt.metrics().prompt_tokens_cached_total - before;
            assert_eq!(u64::from(c.usage.cached_prompt_tokens), reused, "usage reports what the cache saved");
            out.push((c.text.clone(), c.token_ids, c.usage.prompt_tokens, reused));
            messages.push(ChatMessage::assistant(c.text));
        }
        out
    }
    for sampling in [SamplingParams::greedy(), seeded(4242)] {
        let cached = chat3(&on, &turns, sampling.clone()).await;
        let cold = chat3(&off, &turns, sampling.clone()).await;
        for (i, (a, b)) in cached.iter().zip(&cold).enumerate() {
            assert_eq!(a.0, b.0, "turn {i}, {sampling:?}");
            assert_eq!(a.1, b.1, "turn {i}, {sampling:?}");
            assert_eq!(a.2, b.2, "turn {i}: the same prompt");
            assert_eq!(b.3, 0, "no reuse with the cache off");
        }
        // Turn 3's prompt starts with turn 2's prompt and answer, which its slot still holds.
        let (third, second) = (&cached[2], &cached[1]);
        assert!(third.3 >= u64::from(second.2), "turn 3 reused {} of {} tokens; turn 2's prompt had {}", third.3, third.2, second.2);
        assert!(third.3 < u64::from(third.2), "the last prompt token is always read again");
        assert!(u64::from(third.2) - third.3 < u64::from(third.2) / 4, "turn 3 read {} of {} prompt tokens", u64::from(third.2) - third.3, third.2);
    }
    // The same prompt twice in a row: the second reads only its last token.
    let first = GenerateRequest::chat("pc", vec![ChatMessage::user(turns[0])]).with_sampling(SamplingParams::greedy()).with_max_tokens(40);
    let again = on.generate(first.clone()).await.unwrap().collect_completion().await.unwrap();
    let before = on.metrics().prompt_tokens_cached_total;
    let third_time = on.generate(first).await.unwrap().collect_completion().await.unwrap();
    assert_eq!(third_time.text, again.text);
    assert_eq!(on.metrics().prompt_tokens_cached_total - before, u64::from(again.usage.prompt_tokens) - 1);
    assert_eq!(third_time.usage.cached_prompt_tokens, again.usage.prompt_tokens - 1);
}

/// With a shared KV buffer the cells a free slot keeps for the prompt cache give way to the
/// requests being served: a full cache drops them before shrinking a batch or ending anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_prompts_give_way_in_a_full_shared_kv_cache() {
    let path = default_model_path().unwrap();
    let cfg = LlamaConfig {
        threads: 2,
        max_sequences: 2,
        queue_capacity: 4,
        context_per_sequence: 256,
        batch_tokens: 32,
        kv_unified: true,
        kv_cells: Some(256),
        ..LlamaConfig::default()
    };
    assert!(cfg.prompt_cache, "on by default");
    let own = LlamaRuntime::new(cfg).unwrap();
    own.load_model(LoadModelSpec::from_path(path).with_id("kvpc")).await.unwrap();
    let (big, [story, _]) = overflow_workload("kvpc");
    // ~150 prompt + 60 generated cells stay cached in slot 0.
    let first = own.generate(big.with_max_tokens(60)).await.unwrap().collect_completion().await.unwrap();
    assert_eq!(first.usage.completion_tokens, 60);
    let before = own.metrics();
    // A chat sharing only BOS goes to the empty slot and needs ~80 more cells: 290 > 256.
    let out = own.generate(story).await.unwrap().collect_completion().await.unwrap();
    assert_eq!(out.usage.completion_tokens, 48);
    let after = own.metrics();
    assert!(after.kv_cache_full_retries_total > before.kv_cache_full_retries_total, "{after:?}");
    assert_eq!(after.kv_cache_full_evictions_total, before.kv_cache_full_evictions_total, "nobody ended: {after:?}");
    assert_eq!(after.prompt_tokens_cached_total, before.prompt_tokens_cached_total);
}
