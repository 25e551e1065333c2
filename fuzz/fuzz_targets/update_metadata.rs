//! Fuzz target `update_metadata` (feature `host`): see `b3iq_fuzz::host_checks::update_metadata`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| b3iq_fuzz::host_checks::update_metadata(data));
