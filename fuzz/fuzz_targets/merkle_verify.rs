//! Fuzz target `merkle_verify`: see `b3iq_fuzz::checks::merkle_verify`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| b3iq_fuzz::checks::merkle_verify(data));
