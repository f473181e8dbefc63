//! Any message on the uevent socket parses or errors, never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(event) = iguana::modules::uevent::parse(data) {
        let _ = event.wants_driver();
    }
});
