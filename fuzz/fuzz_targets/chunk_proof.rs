//! Fuzz target `chunk_proof`: see `b3iq_fuzz::checks::chunk_proof`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| b3iq_fuzz::checks::chunk_proof(data));
