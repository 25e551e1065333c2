//! Benchmarks for B3IQ (see `benches/benches/*.rs` and the comparison scripts in `benches/`).
//!
//! - `cargo bench -p b3iq-benches --bench http_overhead`: streaming over HTTP through b3iq-host
//!   vs the same llama.cpp `Runtime` in process (tok/s ratio, TTFT overhead).
//! - `benches/b3iqd_vs_llama_cpp_python.sh`: b3iqd vs llama-cpp-python's OpenAI server at
//!   concurrency 1 and 4, and b3iqd's idle RSS without a model.
//! - `cargo xtask bench-gateway` (`benches/benches/gateway.rs`): the hosted gateway and its tunnel
//!   against the same b3iqd called directly, and in front of a fake node that speaks the tunnel
//!   protocol (requests/s, added latency, CPU split).
