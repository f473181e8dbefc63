//! Any bytes given to the workflow parser give a workflow or an error,
//! never a panic (run: `cargo fuzz run workflow`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = iguana::workflow::schema::parse(data);
});
