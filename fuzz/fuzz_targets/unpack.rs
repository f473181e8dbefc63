//! Any bytes given to the layer unpacker as a tar stream give a tree or an
//! error, never a panic, and never a write outside the root (run:
//! `cargo xtask fuzz --only unpack`).
//!
//! Each input is unpacked into `DIR/root` of a fresh directory that also
//! holds `DIR/outside/secret`; afterwards DIR must hold exactly those two
//! names and the secret must be unchanged. The first byte picks flattened
//! or overlay whiteouts, the rest is the archive.
#![no_main]

use iguana::image::{apply_layer_at, Whiteouts};
use std::fs;
use std::path::Path;

const SECRET: &[u8] = b"not for layers";

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, tar)) = data.split_first() else {
        return;
    };
    let whiteouts = if mode & 1 == 0 { Whiteouts::Apply } else { Whiteouts::Overlay };
    // tmpfs when there is one: inputs come thousands a second.
    let base = if Path::new("/dev/shm").is_dir() { Path::new("/dev/shm") } else { Path::new("/tmp") };
    let dir = tempfile::tempdir_in(base).unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::create_dir(dir.path().join("outside")).unwrap();
    fs::write(dir.path().join("outside/secret"), SECRET).unwrap();

    let _ = apply_layer_at(&root, tar, whiteouts);

    assert_eq!(names(dir.path()), ["outside", "root"], "something was written beside the root");
    assert_eq!(names(&dir.path().join("outside")), ["secret"], "something was written outside the root");
    let secret = fs::symlink_metadata(dir.path().join("outside/secret")).unwrap();
    assert!(secret.file_type().is_file(), "outside/secret was replaced");
    assert_eq!(fs::read(dir.path().join("outside/secret")).unwrap(), SECRET, "outside/secret was changed");
});
