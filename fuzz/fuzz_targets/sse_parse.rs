//! Fuzz target `sse_parse`: see `b3iq_fuzz::openai_checks::sse_parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| b3iq_fuzz::openai_checks::sse_parse(data));
