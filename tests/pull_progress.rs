//! The progress display of `iguana pull`: a live status line (bytes, rate,
//! per-layer progress) on a terminal, plain log lines otherwise. The real
//! binary runs under a real pseudo-terminal, against a real registry.

// An integration test file is a test crate of its own: no test module needed.
#![allow(clippy::tests_outside_test_module)]

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use testkit::{Image, Layer, Registry};

const CLEAR_LINE: &str = "\r\x1b[K";

fn random_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn two_layer_image(registry: &Registry) -> String {
    Image::new()
        .layer(Layer::new().file("a", random_bytes(1 << 20), 0o644))
        .layer(Layer::new().file("b", random_bytes(2 << 20), 0o644))
        .entrypoint(&["/a"])
        .build_and_push(registry, "test/progress:v1")
        .unwrap()
}

fn pull_command(image: &str, rootfs: &Path, registry: &Registry) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iguana"));
    cmd.arg("pull")
        .arg(image)
        .arg("--rootfs")
        .arg(rootfs)
        .arg("--insecure-registry")
        .arg(registry.host());
    cmd
}

/// Runs `cmd` with a pseudo-terminal as stdin, stdout and stderr; returns
/// its success and everything it wrote.
fn run_in_pty(mut cmd: Command) -> (bool, String) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave: OwnedFd = pty.slave;
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().unwrap();
    // Drop our copies of the slave (moved into cmd): the master then reads
    // EIO once the child has exited.
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break, // EIO: the slave side is closed.
        }
    }
    let status = child.wait().unwrap();
    (status.success(), String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn live_status_line_on_a_terminal() {
    let registry = Registry::start().unwrap();
    let image = two_layer_image(&registry);
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = run_in_pty(pull_command(&image, &dir.path().join("rootfs"), &registry));
    assert!(ok, "{out:?}");

    // The status line: total bytes, rate, and each layer's progress.
    let status: Vec<&str> = out
        .split(CLEAR_LINE)
        .filter(|s| s.starts_with(&format!("pull {image}: ")) && !s.contains('\n'))
        .collect();
    assert!(!status.is_empty(), "no status line: {out:?}");
    for line in &status {
        let rest = line.strip_prefix(&format!("pull {image}: ")).unwrap();
        // "1.5 MiB / 3.0 MiB 12.0 MiB/s L1:100% L2:25%"
        let (done, rest) = rest.split_once(" / ").unwrap_or_else(|| panic!("{line:?}"));
        assert!(done.ends_with('B') && done.split(' ').count() == 2, "{line:?}");
        let fields: Vec<&str> = rest.split(' ').collect();
        assert_eq!(fields.len(), 6, "{line:?}");
        assert_eq!(fields[..2], ["3.0", "MiB"], "{line:?}");
        assert!(fields[3].ends_with("B/s"), "{line:?}");
        assert!(fields[4].starts_with("L1:") && fields[4].ends_with('%'), "{line:?}");
        assert!(fields[5].starts_with("L2:") && fields[5].ends_with('%'), "{line:?}");
    }
    // Each layer's line: its size and download rate.
    let layer_lines = out.lines().filter(|l| l.contains(": layer sha256:") && l.contains("B/s)")).count();
    assert_eq!(layer_lines, 2, "{out:?}");
    // It ends cleanly: every status line is cleared by the next write, and
    // the output ends with a whole line, not a status line.
    let segments: Vec<&str> = out.split(CLEAR_LINE).collect();
    let last = segments.last().unwrap();
    assert!(last.ends_with('\n') && last.contains("free on the store's filesystem"), "{out:?}");
    assert!(out.contains(&format!("{CLEAR_LINE}pull {image}: unpacked into ")), "{out:?}");
}

#[test]
fn plain_lines_when_not_a_terminal() {
    let registry = Registry::start().unwrap();
    let image = two_layer_image(&registry);
    let dir = tempfile::tempdir().unwrap();
    let out = pull_command(&image, &dir.path().join("rootfs"), &registry)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{err:?}");
    assert!(err.lines().all(|l| l.starts_with(&format!("pull {image}: "))), "{err}");
    assert_eq!(err.lines().filter(|l| l.contains(": layer sha256:")).count(), 2, "{err}");
}
