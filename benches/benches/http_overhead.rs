//! Serving overhead of b3iq-host: streaming chat over HTTP (SSE, loopback, real reqwest client)
//! against the same `Runtime` called in process, concurrency 1, greedy, same prompt and model,
//! interleaved A/B rounds in one run. Reports generation tokens/s and TTFT medians and the
//! ratios the issue sets targets for (HTTP >= 95% of in-process tok/s; TTFT overhead <= 5 ms).
//!
//!     B3IQ_TEST_MODEL=... cargo bench -p b3iq-benches --bench http_overhead
//!
//! Env: ROUNDS (default 8), MAX_TOKENS (default 128), THREADS (default: all cores).
//! Writes benches/results/http_overhead.json.

use std::sync::Arc;
use std::time::{Duration, Instant};

use b3iq_runtime::llama::{LlamaConfig, LlamaRuntime};
use b3iq_runtime::runtime::{ChatMessage, GenerateRequest, GenerationEvent, LoadModelSpec, Runtime, SamplingParams};
use futures_util::StreamExt;
use serde_json::json;

const PROMPT: &str = "Write a long story about a lighthouse keeper who finds a message in a bottle.";

struct Sample {
    ttft: Duration,
    gen_tps: f64,
    tokens: u32,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

async fn in_process(rt: &LlamaRuntime, model: &str, max_tokens: u32) -> Sample {
    let t0 = Instant::now();
    let req = GenerateRequest::chat(model, vec![ChatMessage::user(PROMPT)]).with_sampling(SamplingParams::greedy()).with_max_tokens(max_tokens);
    let mut s = rt.generate(req).await.expect("generate");
    let mut ttft = None;
    let mut first_at = None;
    let mut n = 0u32;
    while let Some(ev) = s.next_event().await {
        match ev.expect("event") {
            GenerationEvent::Delta { .. } => {
                n += 1;
                if ttft.is_none() {
                    ttft = Some(t0.elapsed());
                    first_at = Some(Instant::now());
                }
            }
            GenerationEvent::Done { usage, .. } => {
                let gen = first_at.map(|f| f.elapsed()).unwrap_or_default();
                return Sample { ttft: ttft.unwrap_or_default(), gen_tps: (usage.completion_tokens.saturating_sub(1)) as f64 / gen.as_secs_f64().max(1e-9), tokens: usage.completion_tokens };
            }
        }
    }
    panic!("stream ended early ({n} deltas)");
}

async fn over_http(c: &reqwest::Client, base: &str, key: &str, model: &str, max_tokens: u32) -> Sample {
    let t0 = Instant::now();
    let r = c
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let mut s = r.bytes_stream();
    let mut buf = String::new();
    let mut ttft = None;
    let mut first_at = None;
    let mut tokens = 0u32;
    while let Some(b) = s.next().await {
        buf.push_str(&String::from_utf8_lossy(&b.expect("body")));
        while let Some(i) = buf.find("\n\n") {
            let ev: String = buf.drain(..i + 2).collect();
            let Some(data) = ev.trim().strip_prefix("data: ") else { continue };
            if data == "[DONE]" {
                let gen = first_at.map(|f: Instant| f.elapsed()).unwrap_or_default();
                return Sample { ttft: ttft.unwrap_or_default(), gen_tps: (tokens.saturating_sub(1)) as f64 / gen.as_secs_f64().max(1e-9), tokens };
            }
            let v: serde_json::Value = serde_json::from_str(data).expect("chunk json");
            if v["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty()) && ttft.is_none() {
                ttft = Some(t0.elapsed());
                first_at = Some(Instant::now());
            }
            if let Some(u) = v["usage"]["completion_tokens"].as_u64() {
                tokens = u as u32;
            }
        }
    }
    panic!("no [DONE]");
}

fn main() {
    // `cargo test --benches` runs benches with --bench absent; only run when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("http_overhead: run with `cargo bench` (skipped under cargo test)");
        return;
    }
    let model_path = b3iq_runtime::llama::default_model_path().expect("the default model is needed: set B3IQ_TEST_MODEL");
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let max_tokens: u32 = std::env::var("MAX_TOKENS").ok().and_then(|v| v.parse().ok()).unwrap_or(128);
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    tokio.block_on(async move {
        let mut cfg = LlamaConfig::default();
        if let Some(t) = std::env::var("THREADS").ok().and_then(|v| v.parse().ok()) {
            cfg.threads = t;
        }
        let threads = cfg.threads;
        let rt = LlamaRuntime::new(cfg).unwrap();
        let id = "smollm2-135m-instruct-q4_1";
        rt.load_model(LoadModelSpec::from_path(&model_path).with_id(id)).await.unwrap();
        let home = std::env::temp_dir().join(format!("b3iq-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let rt_dyn: Arc<dyn Runtime> = Arc::new(rt.clone());
        let node = b3iq_host::LocalNode::builder().home(&home).listen("127.0.0.1:0").runtime(rt_dyn).start().await.unwrap();
        node.claim("bench", "bench-password-123").await.unwrap();
        let (_, key) = node.create_key("bench", &["inference"]).unwrap();
        let base = node.base_url();
        let c = reqwest::Client::new();
        // warm-up both paths
        in_process(&rt, id, 16).await;
        over_http(&c, &base, &key, id, 16).await;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        // Alternate which path goes first in each round, so order effects (prompt cache, CPU
        // frequency, other load) fall on both.
        for r in 0..rounds {
            if r % 2 == 0 {
                a.push(in_process(&rt, id, max_tokens).await);
                b.push(over_http(&c, &base, &key, id, max_tokens).await);
            } else {
                b.push(over_http(&c, &base, &key, id, max_tokens).await);
                a.push(in_process(&rt, id, max_tokens).await);
            }
        }
        let tps_in = median(a.iter().map(|s| s.gen_tps).collect());
        let tps_http = median(b.iter().map(|s| s.gen_tps).collect());
        let ttft_in = median(a.iter().map(|s| s.ttft.as_secs_f64() * 1e3).collect());
        let ttft_http = median(b.iter().map(|s| s.ttft.as_secs_f64() * 1e3).collect());
        let ttft_delta = median(a.iter().zip(&b).map(|(x, y)| (y.ttft.as_secs_f64() - x.ttft.as_secs_f64()) * 1e3).collect());
        let out = json!({
            "bench": "http_overhead", "rounds": rounds, "max_tokens": max_tokens, "threads": threads,
            "tokens_in_process": a.iter().map(|s| s.tokens).collect::<Vec<_>>(), "tokens_http": b.iter().map(|s| s.tokens).collect::<Vec<_>>(),
            "tok_s_in_process": a.iter().map(|s| s.gen_tps).collect::<Vec<_>>(), "tok_s_http": b.iter().map(|s| s.gen_tps).collect::<Vec<_>>(),
            "ttft_ms_in_process": a.iter().map(|s| s.ttft.as_secs_f64() * 1e3).collect::<Vec<_>>(), "ttft_ms_http": b.iter().map(|s| s.ttft.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            "in_process_tok_s_median": tps_in, "http_tok_s_median": tps_http, "http_over_in_process": tps_http / tps_in,
            "ttft_in_process_ms_median": ttft_in, "ttft_http_ms_median": ttft_http, "ttft_overhead_ms_median_paired": ttft_delta,
            "targets": {"http_over_in_process_min": 0.95, "ttft_overhead_ms_max": 5.0},
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("http_overhead.json"), serde_json::to_vec_pretty(&out).unwrap());
        node.shutdown().await;
        let _ = std::fs::remove_dir_all(&home);
    });
}
