//! Any bytes a registry serves as a signature (a sigstore bundle, a
//! simple-signing payload, an in-toto Statement) give a verdict, never a
//! panic, and without a trusted key never an acceptance (run: `cargo
//! xtask fuzz --only signature`).
#![no_main]

use iguana::trust::image::{check, check_statement, Candidate};
use iguana::trust::{bundle, simple, Keys};

const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bundle::parse(data);
    let _ = simple::check(data, D);
    let _ = check_statement(data, D);
    let keys = Keys::default();
    let text = String::from_utf8_lossy(data).into_owned();
    for candidate in [
        Candidate::Bundle(data.to_vec()),
        Candidate::Legacy { payload: data.to_vec(), signature: Some(text) },
    ] {
        assert!(check(&keys, D, &candidate).is_err());
    }
});
