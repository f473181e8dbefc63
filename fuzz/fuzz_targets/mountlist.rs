//! Any /iguana/mountlist a container writes parses or errors, never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = iguana::handover::mountlist::parse(text);
    }
});
