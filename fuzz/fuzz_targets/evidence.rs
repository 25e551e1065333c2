//! Fuzz target `evidence`: see `b3iq_fuzz::checks::evidence`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| b3iq_fuzz::checks::evidence(data));
