//! Fuzz target `key_file`: see `b3iq_fuzz::checks::key_file`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| b3iq_fuzz::checks::key_file(data));
