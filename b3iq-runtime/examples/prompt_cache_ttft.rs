//! Time to first token of a chat's third turn with the prompt (prefix) cache on and off: the
//! default model, the runtime's default shape (2 threads), both runtimes in one process,
//! rounds alternating A B B A, medians. Numbers in docs/runtime.md ("Prompt cache").
//!
//! `cargo run -p b3iq-runtime --example prompt_cache_ttft -- [rounds]` (model: `$B3IQ_TEST_MODEL`
//! or `scripts/fetch-model`). `B3IQ_BENCH_BATCH_TOKENS=32` reads prompts in 32-token batches
//! instead of the default 512 (the setting under which cached and cold runs are bit-identical).

use b3iq_runtime::llama::{LlamaConfig, LlamaRuntime};
use b3iq_runtime::store::default_model_path;
use b3iq_runtime::{ChatMessage, GenerateRequest, LoadModelSpec, Runtime, SamplingParams};

/// One chat per round (a new topic each time, so a round never finds its own third turn cached
/// from the round before: only its own first two turns).
const TOPICS: [&str; 12] = [
    "the bicycle", "the telephone", "the printing press", "the steam engine", "the radio", "the camera",
    "the television", "the light bulb", "the airplane", "the compass", "the clock", "the microscope",
];

/// Runs the chat; returns the third turn's time to first token (µs), its prompt tokens and
/// the prompt tokens read from the cache on that turn.
async fn third_turn(rt: &LlamaRuntime, topic: &str) -> (u64, u32, u64) {
    let turns = [
        format!("Tell me about the history of {topic} in a few sentences."),
        "Who were the most important people in that story, and why?".to_string(),
        "Summarise our conversation in one sentence.".to_string(),
    ];
    let mut messages = Vec::new();
    let mut out = (0, 0, 0);
    for (i, q) in turns.iter().enumerate() {
        messages.push(ChatMessage::user(q.clone()));
        let req = GenerateRequest::chat("m", messages.clone())
            .with_sampling(SamplingParams::greedy())
            .with_max_tokens(64);
        let before = rt.metrics().prompt_tokens_cached_total;
        let c = rt.generate(req).await.unwrap().collect_completion().await.unwrap();
        if i == 2 {
            let cached = rt.metrics().prompt_tokens_cached_total - before;
            out = (c.timings.time_to_first_token_us, c.usage.prompt_tokens, cached);
        }
        messages.push(ChatMessage::assistant(c.text));
    }
    out
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|v| v.parse().ok()).unwrap_or(5).clamp(1, TOPICS.len() - 1);
    let path = default_model_path().expect("the default model");
    let make = |on: bool| {
        let batch_tokens = std::env::var("B3IQ_BENCH_BATCH_TOKENS").ok().and_then(|v| v.parse().ok()).unwrap_or(LlamaConfig::default().batch_tokens);
        let cfg = LlamaConfig { threads: 2, prompt_cache: on, batch_tokens, ..LlamaConfig::default() };
        let rt = LlamaRuntime::new(cfg).unwrap();
        rt.load_model_blocking(LoadModelSpec::from_path(path.clone()).with_id("m")).unwrap();
        rt
    };
    let (cached, cold) = (make(true), make(false));
    // Warm-up (page cache, first graph allocation).
    third_turn(&cached, TOPICS[0]).await;
    third_turn(&cold, TOPICS[0]).await;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for r in 0..rounds.min(TOPICS.len() - 1) {
        let topic = TOPICS[r + 1];
        let order: [bool; 2] = if r % 2 == 0 { [true, false] } else { [false, true] };
        for on in order {
            let (ttft, prompt, reused) = third_turn(if on { &cached } else { &cold }, topic).await;
            println!("round {r} cache {}: ttft {:.1} ms, prompt {prompt} tokens, {reused} from the cache", if on { "on " } else { "off" }, ttft as f64 / 1000.0);
            if on { a.push(ttft) } else { b.push(ttft) }
        }
    }
    let median = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2] as f64 / 1000.0
    };
    let (ma, mb) = (median(&mut a), median(&mut b));
    println!("third-turn time to first token, median of {rounds}: cached {ma:.1} ms, cold {mb:.1} ms, cached/cold {:.2}", ma / mb);
}
