//! A registry that serves a huge "manifest" (1 GiB, chunked or announced
//! in Content-Length) on 127.0.0.1: the real `iguana pull` child refuses it
//! in one line, and its peak RSS stays small (the manifest is not held).
//! The one child of this test process is measured with
//! getrusage(RUSAGE_CHILDREN), so this file holds one test.

#![allow(clippy::tests_outside_test_module)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;

/// What the front serves as a manifest.
const HUGE: u64 = 1 << 30;
/// Peak RSS the pull child may reach (its own baseline is ~20 MiB).
const RSS_LIMIT_KIB: i64 = 128 << 10;

/// `/v2/` answers 200 (no auth); `manifests/chunked` is 1 GiB chunked,
/// `manifests/announced` says 1 GiB in Content-Length and sends it.
fn front() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = serve(stream);
            });
        }
    });
    port
}

fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let chunk = vec![b' '; 64 << 10];
    if path.ends_with("/manifests/chunked") {
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")?;
        for _ in 0..HUGE / chunk.len() as u64 {
            stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
            stream.write_all(&chunk)?;
            stream.write_all(b"\r\n")?;
        }
        stream.write_all(b"0\r\n\r\n")
    } else if path.ends_with("/manifests/announced") {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {HUGE}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes())?;
        for _ in 0..HUGE / chunk.len() as u64 {
            stream.write_all(&chunk)?;
        }
        Ok(())
    } else if path == "/v2/" {
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    } else {
        stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    }
}

#[test]
fn a_huge_manifest_is_refused_without_being_held() {
    let port = front();
    let registry = format!("127.0.0.1:{port}");
    let mut results = Vec::new();
    for tag in ["chunked", "announced"] {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_iguana"))
            .args(["pull", &format!("{registry}/app:{tag}"), "--rootfs"])
            .arg(&rootfs)
            .args(["--insecure-registry", &registry])
            .output()
            .unwrap();
        results.push((tag, out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    // Every child of this process so far: the two pulls.
    let peak = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap().max_rss();
    eprintln!("peak RSS of the pull children: {peak} KiB");
    assert!(peak < RSS_LIMIT_KIB, "a pull child held {peak} KiB for a manifest: {results:?}");
    for (tag, ok, stderr) in results {
        assert!(!ok, "{tag}: {stderr}");
        let said: Vec<&str> = stderr.lines().filter(|l| l.contains("than 4194304 bytes")).collect();
        assert_eq!(said.len(), 1, "{tag}: {stderr}");
        assert!(said[0].contains(&registry) && said[0].contains("manifest"), "{tag}: {stderr}");
    }
}
