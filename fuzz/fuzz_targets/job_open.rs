//! Fuzz target `job_open`: see `b3iq_fuzz::checks::job_open`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| b3iq_fuzz::checks::job_open(data));
