//! Fuzz target `same_origin` (feature `host`): see `b3iq_fuzz::host_checks::same_origin_check`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| b3iq_fuzz::host_checks::same_origin_check(data));
