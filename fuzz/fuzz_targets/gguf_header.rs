//! Fuzzes the runtime's GGUF header reader: any bytes must give `Ok` or a `GgufError`, never a
//! panic, an overflow or a huge allocation; an accepted header must be self-consistent.
#![no_main]

use b3iq_runtime::gguf::GgufInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = GgufInfo::parse(data) {
        assert_eq!(info.tensors.len() as u64, info.tensor_count);
        assert!(info.data_offset <= info.file_size || info.tensors.is_empty());
        for t in &info.tensors {
            assert!(t.offset + t.size_bytes <= info.file_size - info.data_offset.min(info.file_size));
        }
    }
});
