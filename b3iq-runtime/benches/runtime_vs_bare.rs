//! Runtime API vs a bare llama-cpp-2 decode loop, same process, same model, same threads.
//!
//! Two parts:
//! 1. An interleaved A/B comparison (bare, runtime, bare, runtime, ...) at 1, 2, 4 and 8
//!    concurrent streams, printing per-round ratios and their median as JSON lines. The machine
//!    is shared, so the ratio of neighbouring runs is the number to read, not absolute tok/s.
//! 2. Criterion groups for the same workloads (`cargo bench -p b3iq-runtime --bench
//!    runtime_vs_bare -- <filter>`).
//!
//! Environment: `B3IQ_TEST_MODEL` (else scripts/fetch-model), `B3IQ_BENCH_THREADS` (default 2),
//! `B3IQ_BENCH_ROUNDS` (default 3), `B3IQ_BENCH_TOKENS` (max tokens per stream, default 64),
//! `B3IQ_BENCH_STREAMS` (default "1,2,4,8"), `B3IQ_BENCH_KV=unified` (one shared KV buffer), `B3IQ_BENCH_SETTLE_MS` (pause before each arm, default 0), `B3IQ_BENCH_SKIP_CRITERION=1` to run only part 1.

use std::time::{Duration, Instant};

use b3iq_runtime::bench::{bare_batched_generation_in, serving_throughput};
use b3iq_runtime::llama::new_llama_context;
use b3iq_runtime::llama::{LlamaConfig, LlamaRuntime};
use b3iq_runtime::store::default_model_path;
use b3iq_runtime::{LoadModelSpec, Runtime};
use criterion::Criterion;

fn env_u32(k: &str, d: u32) -> u32 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn main() {
    let threads = env_u32("B3IQ_BENCH_THREADS", 2);
    let rounds = env_u32("B3IQ_BENCH_ROUNDS", 3);
    let max_tokens = env_u32("B3IQ_BENCH_TOKENS", 64);
    let settle_ms = u64::from(env_u32("B3IQ_BENCH_SETTLE_MS", 0));
    let streams: Vec<u32> = std::env::var("B3IQ_BENCH_STREAMS")
        .unwrap_or_else(|_| "1,2,4,8".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let path = default_model_path().expect("default model");
    let ctx_per_seq = 1024;
    let max_seq = *streams.iter().max().unwrap_or(&8);
    // `B3IQ_BENCH_KV=unified` runs both arms with one shared KV buffer instead of the
    // runtime's default of one per sequence.
    let kv_unified = std::env::var("B3IQ_BENCH_KV").is_ok_and(|v| v == "unified");
    let cfg = LlamaConfig {
        threads,
        max_sequences: max_seq,
        queue_capacity: 64,
        context_per_sequence: ctx_per_seq,
        batch_tokens: 512,
        gpu_layers: 0,
        kv_unified,
        kv_cells: None,
        // Both arms read the whole prompt of every request.
        prompt_cache: false,
        // `B3IQ_BENCH_FINGERPRINTS=1`: the runtime arm serves verifiable work (hidden-state
        // fingerprints), to measure their cost against the same bare arm.
        fingerprints: std::env::var("B3IQ_BENCH_FINGERPRINTS").is_ok_and(|v| v == "1"),
    };
    let rt = LlamaRuntime::new(cfg).expect("runtime");
    rt.load_model_blocking(LoadModelSpec::from_path(&path).with_id("m")).expect("load");
    let model = rt.llama_model("m").expect("model");
    let tokio_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // The bare loop keeps one warm context, as the runtime's engine does.
    let mut bare_ctx = new_llama_context(&model, max_seq, ctx_per_seq, 512, threads, kv_unified).expect("context");
    // Warm-up both paths once.
    let _ = bare_batched_generation_in(&mut bare_ctx, &model, max_seq, 8);
    let _ = tokio_rt.block_on(serving_throughput(&rt, "m", 1, 8));

    println!("{{\"bench\":\"runtime_vs_bare\",\"threads\":{threads},\"rounds\":{rounds},\"max_tokens\":{max_tokens},\"kv_unified\":{kv_unified}}}");
    for &n in &streams {
        let mut ratios = Vec::new();
        let mut bare_tps = Vec::new();
        let mut rt_tps = Vec::new();
        for r in 0..rounds {
            // Alternate which side goes first, so drift in machine load hits both alike.
            // Each arm has its own OpenMP thread team (the bare loop's on this thread, the
            // runtime's on its engine thread); a pause lets the idle team stop spinning before
            // the other arm starts, as a real node has only the engine's team.
            let pause = || std::thread::sleep(Duration::from_millis(settle_ms));
            let (b, s) = if r % 2 == 0 {
                pause();
                let b = bare_batched_generation_in(&mut bare_ctx, &model, n, max_tokens).unwrap();
                pause();
                let s = tokio_rt.block_on(serving_throughput(&rt, "m", n, max_tokens)).unwrap();
                (b, s)
            } else {
                pause();
                let s = tokio_rt.block_on(serving_throughput(&rt, "m", n, max_tokens)).unwrap();
                pause();
                let b = bare_batched_generation_in(&mut bare_ctx, &model, n, max_tokens).unwrap();
                (b, s)
            };
            bare_tps.push(b.tokens_per_second());
            rt_tps.push(s.tokens_per_second());
            ratios.push(s.tokens_per_second() / b.tokens_per_second());
        }
        let med = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        println!(
            "{{\"streams\":{n},\"bare_tps\":{:.2},\"runtime_tps\":{:.2},\"ratio_median\":{:.4},\"ratios\":{:?}}}",
            med(bare_tps.clone()),
            med(rt_tps.clone()),
            med(ratios.clone()),
            ratios.iter().map(|r| (r * 10000.0).round() / 10000.0).collect::<Vec<_>>()
        );
    }

    if std::env::var("B3IQ_BENCH_SKIP_CRITERION").is_ok_and(|v| v == "1") {
        return;
    }
    let mut c = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10)).configure_from_args();
    for &n in &streams {
        let mut g = c.benchmark_group(format!("generate_{n}_streams_{max_tokens}_tokens"));
        g.bench_function("bare_llama_cpp_2", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    bare_batched_generation_in(&mut bare_ctx, &model, n, max_tokens).unwrap();
                    total += t.elapsed();
                }
                total
            })
        });
        g.bench_function("runtime_api", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    tokio_rt.block_on(serving_throughput(&rt, "m", n, max_tokens)).unwrap();
                    total += t.elapsed();
                }
                total
            })
        });
        g.finish();
    }
    c.final_summary();
    let _ = tokio_rt.block_on(rt.unload_model("m"));
}
