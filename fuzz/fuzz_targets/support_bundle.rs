//! Fuzz target `support_bundle` (feature `host`): see `b3iq_fuzz::host_checks::support_bundle`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| b3iq_fuzz::host_checks::support_bundle(data));
