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
use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const SECRET: &[u8] = b"not for layers";

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Where inputs are unpacked: a 64 MiB tmpfs of this process alone, so a
/// layer that claims gigabytes (a sparse file, a long run of blocks) fills
/// it and fails instead of filling the machine's RAM. It is detached at
/// once and reached through its fd, so it goes away when the fuzzer exits.
/// Not root: a plain directory in /tmp.
fn scratch() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("iguana-fuzz-unpack-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m,mode=0700,nosuid,nodev", "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            return dir;
        }
        let fd = fs::File::open(&dir).unwrap().into_raw_fd();
        let _ = Command::new("umount").arg("-l").arg(&dir).status();
        let _ = fs::remove_dir(&dir);
        PathBuf::from(format!("/proc/self/fd/{fd}"))
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, tar)) = data.split_first() else {
        return;
    };
    let whiteouts = if mode & 1 == 0 { Whiteouts::Apply } else { Whiteouts::Overlay };
    let dir = tempfile::tempdir_in(scratch()).unwrap();
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
