//! Backends: what turns tokens into logits.
//!
//! - [`upstream`]: any OpenAI-compatible server (vLLM, llama.cpp server, ...), a whole
//!   [`crate::Runtime`] of its own (the upstream schedules its own batches).
