//! Fuzz target `node_id`: see `b3iq_fuzz::checks::node_id`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| b3iq_fuzz::checks::node_id(data));
