//! Fuzz target `request_body` (feature `host`): see `b3iq_fuzz::host_checks::request_body`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| b3iq_fuzz::host_checks::request_body(data));
