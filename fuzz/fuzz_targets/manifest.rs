//! Any bytes a registry sends as a manifest or an index give a parsed
//! manifest or an error, never a panic (run: `cargo xtask fuzz --only
//! manifest`). What parses has only well-formed digests: they become file
//! names and URLs.
#![no_main]

use iguana::image::manifest::{parse, Manifest};

fn sha256(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(Manifest::Image(m)) => {
            assert!(sha256(&m.config.digest), "{}", m.config.digest);
            assert!(m.layers.iter().all(|l| sha256(&l.digest) && l.size >= 0));
        }
        Ok(Manifest::Index(entries)) => assert!(entries.iter().all(|e| sha256(&e.digest))),
        Err(_) => {}
    }
});
