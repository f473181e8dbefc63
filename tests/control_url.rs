//! `iguana fetch` (what PID 1 runs for an http(s) control_url) against real
//! loopback servers, plain and TLS (rustls with an openssl-made
//! certificate), each counting the requests it answered: an https URL is
//! never followed to http, a 4xx or an oversize body is not retried, a
//! local file is read with the same bound.

// An integration test file is a test crate of its own: no test module needed.
#![allow(clippy::tests_outside_test_module)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A loopback server answering every request with `answer(request line)`.
struct Server {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Server {
    fn start(tls: Option<Arc<rustls::ServerConfig>>, answer: fn(&str, u16) -> Vec<u8>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let (tls, counter) = (tls.clone(), counter.clone());
                std::thread::spawn(move || match tls {
                    Some(config) => {
                        let Ok(conn) = rustls::ServerConnection::new(config) else { return };
                        let mut stream = rustls::StreamOwned::new(conn, stream);
                        reply(&mut stream, &counter, answer, port);
                        stream.conn.send_close_notify();
                        let _ = stream.flush();
                    }
                    None => reply(&mut { stream }, &counter, answer, port),
                });
            }
        });
        Server { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Reads one request head (bounded), counts it, writes the answer.
fn reply<S: Read + Write>(stream: &mut S, counter: &AtomicUsize, answer: fn(&str, u16) -> Vec<u8>, port: u16) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    counter.fetch_add(1, Ordering::SeqCst);
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or_default().to_string();
    let _ = stream.write_all(&answer(&line, port));
}

fn response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

const WORKFLOW: &[u8] = b"jobs:\n  a:\n    container: {image: r/a}\n";

/// A TLS config for 127.0.0.1 from testkit's openssl-made certificate.
fn tls(dir: &Path) -> (Arc<rustls::ServerConfig>, PathBuf) {
    let (cert, key) = testkit::self_signed_cert(dir).unwrap();
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(&cert).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    (Arc::new(config), cert)
}

/// `iguana fetch URL --out FILE ARGS...`: success, output text, the body.
fn fetch(url: &str, args: &[&str]) -> (bool, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("w.yaml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_iguana"))
        .args(["fetch", url, "--out", out_file.to_str().unwrap()])
        .args(args)
        .env_remove("IGUANA_PROXY_FILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A fetch that hangs (a FIFO read without a bound) fails the test.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("iguana fetch {url} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text, std::fs::read(&out_file).unwrap_or_default())
}

#[test]
fn https_is_never_followed_to_http() {
    let certs = tempfile::tempdir().unwrap();
    let (config, cert) = tls(certs.path());
    let plain = Server::start(None, |_, _| response("200 OK", "", WORKFLOW));
    // The TLS server redirects /down to the plain server, /up to itself.
    static PLAIN_PORT: AtomicUsize = AtomicUsize::new(0);
    PLAIN_PORT.store(usize::from(plain.port), Ordering::SeqCst);
    let secure = Server::start(Some(config), |line, port| {
        let plain = PLAIN_PORT.load(Ordering::SeqCst);
        if line.starts_with("GET /down") {
            response("302 Found", &format!("Location: http://127.0.0.1:{plain}/w.yaml?token=s3cr3t\r\n"), b"")
        } else if line.starts_with("GET /up") {
            response("301 Moved", &format!("Location: https://127.0.0.1:{port}/w.yaml\r\n"), b"")
        } else {
            response("200 OK", "", WORKFLOW)
        }
    });
    let ca = cert.to_str().unwrap();

    // https → https is followed.
    let (ok, out, body) = fetch(&format!("https://127.0.0.1:{}/up", secure.port), &["--ca", ca]);
    assert!(ok, "{out}");
    assert_eq!(body, WORKFLOW);
    assert_eq!(secure.hits(), 2);

    // https → http is refused, once, and the plain server never asked.
    let url = format!("https://127.0.0.1:{}/down?token=t0k3n", secure.port);
    let (ok, out, _) = fetch(&url, &["--ca", ca, "--tries", "3"]);
    assert!(!ok, "{out}");
    let want = format!(
        "fetch https://127.0.0.1:{}/down?***: redirected to http://127.0.0.1:{}/w.yaml?***: refused, https is never followed to http",
        secure.port, plain.port
    );
    assert!(out.contains(&want), "want {want:?} in:\n{out}");
    assert!(!out.contains("s3cr3t") && !out.contains("t0k3n"), "{out}");
    assert_eq!(plain.hits(), 0, "{out}");
    assert_eq!(secure.hits(), 3, "{out}");
}

#[test]
fn client_errors_and_oversize_bodies_are_not_retried() {
    let not_found = Server::start(None, |_, _| response("403 Forbidden", "", b"no"));
    let (ok, out, _) = fetch(&format!("http://127.0.0.1:{}/w.yaml", not_found.port), &["--tries", "5"]);
    assert!(!ok && out.contains("HTTP 403"), "{out}");
    assert_eq!(not_found.hits(), 1, "{out}");

    // Declared too long, and too long without a Content-Length.
    let oversize = Server::start(None, |_, _| response("200 OK", "", &vec![b'#'; (1 << 20) + 1]));
    let (ok, out, _) = fetch(&format!("http://127.0.0.1:{}/w.yaml", oversize.port), &["--tries", "5"]);
    assert!(!ok && out.contains("the body is larger than the 1048576 byte limit"), "{out}");
    assert_eq!(oversize.hits(), 1, "{out}");
    let unbounded = Server::start(None, |_, _| {
        let mut out = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        out.resize(out.len() + (2 << 20), b'#');
        out
    });
    let (ok, out, _) = fetch(&format!("http://127.0.0.1:{}/w.yaml", unbounded.port), &["--tries", "5"]);
    assert!(!ok && out.contains("the body is larger than the 1048576 byte limit"), "{out}");
    assert_eq!(unbounded.hits(), 1, "{out}");

    // What may pass is still retried.
    let busy = Server::start(None, |_, _| response("503 Busy", "", b""));
    let (ok, out, _) = fetch(&format!("http://127.0.0.1:{}/w.yaml", busy.port), &["--tries", "2"]);
    assert!(!ok && out.contains("gave up after 2 tries: HTTP 503"), "{out}");
    assert_eq!(busy.hits(), 2, "{out}");
}

#[test]
fn local_files_are_bounded_and_regular() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; (1 << 20) + 1]).unwrap();
    let fifo = dir.path().join("fifo.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let cases = [
        (format!("file://{}", big.display()), format!("{}: larger than the 1048576 byte limit", big.display())),
        (big.display().to_string(), format!("{}: larger than the 1048576 byte limit", big.display())),
        (format!("file://{}", fifo.display()), format!("{}: not a regular file", fifo.display())),
    ];
    for (url, message) in cases {
        let (ok, out, _) = fetch(&url, &[]);
        assert!(!ok && out.contains(&message), "{url}: {out}");
    }
}
