//! Benchmarks for B3IQ (see `benches/benches/*.rs` and the comparison scripts in `benches/`).
//!
//! - `cargo bench -p b3iq-benches --bench http_overhead`: streaming over HTTP through b3iq-host
//!   vs the same llama.cpp `Runtime` in process (tok/s ratio, TTFT overhead).
//! - `benches/b3iqd_vs_llama_cpp_python.sh`: b3iqd vs llama-cpp-python's OpenAI server at
//!   concurrency 1 and 4, and b3iqd's idle RSS without a model.
