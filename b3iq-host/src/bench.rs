//! A quick in-node benchmark (the `run_benchmark` job and `b3iqd bench`).

use std::sync::Arc;
use std::time::Instant;

use b3iq_runtime::runtime::{ChatMessage, GenerationEvent, Prompt, SamplingParams};
use serde_json::{json, Value};

use crate::error::{HostError, Result};
use crate::state::{NodeState, ServedModel};

/// The benchmark prompt.
pub const BENCH_PROMPT: &str = "Write a short story about a robot who learns to paint. Use simple words.";

/// Generate `64` tokens greedily and report speed and time to first token. Not receipted (no
/// client asked for it).
pub async fn quick_benchmark(st: &Arc<NodeState>, model: &ServedModel) -> Result<Value> {
    let t0 = Instant::now();
    let mut s = crate::http::start_generation(
        st,
        model,
        Prompt::Chat(vec![ChatMessage::user(BENCH_PROMPT)]),
        SamplingParams::greedy(),
        64,
        Vec::new(),
    )
    .await?;
    let mut ttft = None;
    while let Some(ev) = s.next_event().await {
        match ev.map_err(|e| HostError::Runtime(e.to_string()))? {
            GenerationEvent::Delta { .. } => {
                ttft.get_or_insert_with(|| t0.elapsed());
            }
            GenerationEvent::Done { usage, timings, .. } => {
                return Ok(json!({
                    "model": model.id,
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "tokens_per_second": timings.generation_tokens_per_second(&usage),
                    "prompt_tokens_per_second": timings.prompt_tokens_per_second(&usage),
                    "ttft_ms": ttft.map(|d| d.as_millis() as u64).unwrap_or(0),
                    "total_ms": t0.elapsed().as_millis() as u64,
                }));
            }
        }
    }
    Err(HostError::Runtime("benchmark stream ended early".into()))
}
