//! Fuzzes memory sizes: any text parses to a byte count or an error, never a panic, and a
//! parsed size either makes a valid limit or a clear error.
#![no_main]

use archipelago::memory::{parse_memory_limit, MemoryLimit};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bytes) = parse_memory_limit(text) {
        if let Ok(limit) = MemoryLimit::from_bytes(bytes) {
            assert_eq!(limit.bytes(), bytes, "{text:?}");
        }
    }
});
