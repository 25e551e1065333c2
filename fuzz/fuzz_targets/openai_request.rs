//! Fuzz target `openai_request`: see `b3iq_fuzz::openai_checks::openai_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| b3iq_fuzz::openai_checks::openai_request(data));
