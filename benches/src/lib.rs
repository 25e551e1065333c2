//! Shared helpers for the B3IQ benchmarks (see `benches/benches/`).
