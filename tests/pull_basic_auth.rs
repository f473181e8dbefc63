//! Registry credentials go only where a registry asked for them: an open
//! registry (its `/v2/` answers 200, no challenge) on 127.0.0.1 never sees
//! an `Authorization` header from the real `iguana pull` child, even with
//! auth.json naming it; one that challenges with `Basic` gets it after its
//! 401 (docker's and oci-client's way).

#![allow(clippy::tests_outside_test_module)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Each request's path and its Authorization header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// `challenge`: every request without `Authorization` gets 401 with
/// `WWW-Authenticate: Basic`. Manifests are 404 (nothing to pull here).
fn front(challenge: bool) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = serve(stream, challenge, &log);
        }
    });
    (port, seen)
}

fn serve(mut stream: TcpStream, challenge: bool, seen: &Seen) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut authz = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authz = Some(value.trim().to_string());
            }
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    seen.lock().unwrap().push((path.clone(), authz.clone()));
    if challenge && authz.is_none() {
        return stream.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
    if path == "/v2/" {
        return stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    }
    stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

fn pull(port: u16) -> String {
    let registry = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("auth.json");
    // alice:pw, base64.
    std::fs::write(&auth, format!(r#"{{"auths":{{"{registry}":{{"auth":"YWxpY2U6cHc="}}}}}}"#)).unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iguana"))
        .args(["pull", &format!("{registry}/app:v1"), "--rootfs"])
        .arg(&rootfs)
        .args(["--insecure-registry", &registry, "--auth-file"])
        .arg(&auth)
        .env_remove("IGUANA_PROXY_FILE")
        .output()
        .unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn credentials_go_only_to_a_registry_that_asks() {
    let (port, seen) = front(false);
    let out = pull(port);
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().any(|(p, _)| p.contains("/manifests/")), "no manifest request: {seen:?} {out}");
    for (path, authz) in &seen {
        assert_eq!(authz.as_deref(), None, "{path} carried credentials to an open registry: {out}");
    }

    let (port, seen) = front(true);
    let out = pull(port);
    let seen = seen.lock().unwrap().clone();
    let basic = "Basic YWxpY2U6cHc=";
    assert!(
        seen.iter().any(|(p, a)| p.contains("/manifests/") && a.as_deref() == Some(basic)),
        "the challenging registry never got the credentials: {seen:?} {out}"
    );
}
