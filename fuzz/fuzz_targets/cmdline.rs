//! Any kernel command line parses or errors, never panics.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = iguana::cmdline::parse(text);
        let _ = iguana::cmdline::failsafe(text);
        let _ = iguana::net::args::parse(text);
        let _ = iguana::modules::args::parse(text);
    }
});
