//! Serves a GGUF model through the `Runtime` API over a minimal OpenAI-compatible HTTP server
//! on 127.0.0.1, for side-by-side load tests with peer servers (benches/peers/compare.sh).
//! Not the product server (b3iqd is).
//!
//! `cargo run -p b3iq-runtime --example serve_openai -- <model.gguf> <port> [threads] [max_sequences]`

#[path = "../tests/support/openai_server.rs"]
mod openai_server;

use std::sync::Arc;

use b3iq_runtime::llama::{LlamaConfig, LlamaRuntime};
use b3iq_runtime::{LoadModelSpec, Runtime};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: serve_openai <model.gguf> <port> [threads] [max_sequences]");
        std::process::exit(2);
    }
    let threads = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(2);
    let max_sequences = args.get(4).and_then(|v| v.parse().ok()).unwrap_or(8);
    let cfg = LlamaConfig { threads, max_sequences, context_per_sequence: 1024, ..LlamaConfig::default() };
    let rt = LlamaRuntime::new(cfg).expect("runtime");
    let info = rt.load_model(LoadModelSpec::from_path(&args[1]).with_id("model")).await.expect("load model");
    let state = openai_server::AppState { runtime: Arc::new(rt), key: None };
    let base = openai_server::serve(state, args[2].parse().expect("port")).await;
    eprintln!("serving {} ({}) at {base}", info.id, info.sha256);
    tokio::signal::ctrl_c().await.ok();
}
