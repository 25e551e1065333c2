//! Fuzz target `json_signed`: see `b3iq_fuzz::checks::json_signed`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| b3iq_fuzz::checks::json_signed(data));
