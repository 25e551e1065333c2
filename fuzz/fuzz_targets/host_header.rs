//! Fuzz target `host_header` (feature `host`): see `b3iq_fuzz::host_checks::host_header`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| b3iq_fuzz::host_checks::host_header(data));
