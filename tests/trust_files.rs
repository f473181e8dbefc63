//! Signed workflows, end to end on the host: a loopback HTTP server serves
//! a workflow and its signature, PID 1's loader (`workflow::load_with`)
//! runs the built `iguana fetch --signature` as its child and checks the
//! signature against the keys, then `check_expiry` looks at `expires:`.
//! Keys and signatures come from openssl and Python's `cryptography`
//! (testkit::BlobKey), never from iguana's own code.

// An integration test file is a test crate of its own: no test module needed.
#![allow(clippy::tests_outside_test_module)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iguana::cmdline::Cmdline;
use iguana::trust::Keys;
use iguana::workflow::{self, Loaded};
use testkit::BlobKey;

const WORKFLOW: &str = "name: signed\njobs:\n  a:\n    container: {image: r/a}\n";

/// A loopback server: each request target (path and query) answered from
/// `files` (404 otherwise, or the status given as `"STATUS"` bodies of
/// `"!503"`), every request line recorded.
struct Server {
    port: u16,
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let files: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (served, log) = (files.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut stream = stream;
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
                log.lock().unwrap().push(line.clone());
                let target = line.split_whitespace().nth(1).unwrap_or_default().to_string();
                let body = served.lock().unwrap().get(&target).cloned();
                let (status, body) = match body {
                    Some(b) if b == b"!503" => ("503 Busy", b"busy".to_vec()),
                    Some(b) => ("200 OK", b),
                    None => ("404 Not Found", b"no".to_vec()),
                };
                let reply = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(reply.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        Server { port, files, seen }
    }

    fn add(&self, target: &str, body: impl Into<Vec<u8>>) {
        self.files.lock().unwrap().insert(target.to_string(), body.into());
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// The keys iguana would load from /etc/iguana/trust with `pubs` there.
fn trust(pubs: &[&Path]) -> Keys {
    let dir = tempfile::tempdir().unwrap();
    for (n, public) in pubs.iter().enumerate() {
        std::fs::copy(public, dir.path().join(format!("{n}.pub"))).unwrap();
    }
    Keys::load_dir(dir.path()).unwrap()
}

/// PID 1's loader for `url`, its fetch child being the built iguana.
fn load(url: &str, keys: &Keys) -> Result<Loaded, String> {
    let work = tempfile::tempdir().unwrap();
    let args = Cmdline { control_url: Some(url.to_string()), ..Cmdline::default() };
    let error_file = work.path().join("child-error");
    let run = |fetch: &[String]| {
        let args: Vec<String> = fetch.iter().cloned().chain(["--tries".into(), "2".into()]).collect();
        iguana::child::run_program(Path::new(env!("CARGO_BIN_EXE_iguana")), &args, Duration::from_secs(60), &error_file)
    };
    workflow::load_with(&args, Path::new("/nonexistent"), work.path(), keys, &run).map_err(|e| iguana::logging::chain(&e))
}

#[test]
fn a_control_url_needs_a_signature_by_a_trusted_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = BlobKey::generate(dir.path(), "cosign").unwrap();
    let other = BlobKey::generate(dir.path(), "other").unwrap();
    let keys = trust(&[key.public()]);
    let server = Server::start();
    let base = format!("http://127.0.0.1:{}", server.port);
    let changed = WORKFLOW.replace("r/a", "r/b");

    server.add("/sig/w.yaml", WORKFLOW);
    server.add("/sig/w.yaml.sig", key.sign(WORKFLOW.as_bytes()).unwrap());
    server.add("/bundle/w.yaml", WORKFLOW);
    server.add("/bundle/w.yaml.sigstore.json", key.bundle(WORKFLOW.as_bytes()).unwrap());
    // One byte changed after signing, under both forms.
    server.add("/changed/w.yaml", changed.as_str());
    server.add("/changed/w.yaml.sig", key.sign(WORKFLOW.as_bytes()).unwrap());
    server.add("/changed-bundle/w.yaml", changed.as_str());
    server.add("/changed-bundle/w.yaml.sigstore.json", key.bundle(WORKFLOW.as_bytes()).unwrap());
    server.add("/unsigned/w.yaml", WORKFLOW);
    server.add("/other/w.yaml", WORKFLOW);
    server.add("/other/w.yaml.sig", other.sign(WORKFLOW.as_bytes()).unwrap());
    server.add("/other-bundle/w.yaml", WORKFLOW);
    server.add("/other-bundle/w.yaml.sigstore.json", other.bundle(WORKFLOW.as_bytes()).unwrap());
    server.add("/garbage/w.yaml", WORKFLOW);
    server.add("/garbage/w.yaml.sigstore.json", "{\"mediaType\": 1}");
    // A token in the query authorizes the signature too: it is kept.
    server.add("/q/w.yaml?token=s3cr3t", WORKFLOW);
    server.add("/q/w.yaml.sig?token=s3cr3t", key.sign(WORKFLOW.as_bytes()).unwrap());

    let local = dir.path().join("w.yaml");
    std::fs::write(&local, WORKFLOW).unwrap();
    std::fs::write(dir.path().join("w.yaml.sig"), key.sign(WORKFLOW.as_bytes()).unwrap()).unwrap();
    let local_url = format!("file://{}", local.display());

    // (url, Ok(origin) or the whole error line)
    let cases: Vec<(String, Result<String, String>)> = vec![
        (format!("{base}/sig/w.yaml"), Ok(format!("{base}/sig/w.yaml"))),
        (format!("{base}/bundle/w.yaml"), Ok(format!("{base}/bundle/w.yaml"))),
        (format!("{base}/q/w.yaml?token=s3cr3t"), Ok(format!("{base}/q/w.yaml?***"))),
        (local_url.clone(), Ok(local_url.clone())),
        (format!("{base}/changed/w.yaml"), Err(format!("workflow {base}/changed/w.yaml: refused: signature by an unknown key"))),
        (
            format!("{base}/changed-bundle/w.yaml"),
            Err(format!(
                "workflow {base}/changed-bundle/w.yaml: refused: bundle is for sha256:{}, the file is sha256:{}",
                sha256(WORKFLOW.as_bytes()),
                sha256(changed.as_bytes())
            )),
        ),
        (
            format!("{base}/unsigned/w.yaml"),
            Err(format!(
                "workflow {base}/unsigned/w.yaml: refused: no signature: neither {base}/unsigned/w.yaml.sig nor {base}/unsigned/w.yaml.sigstore.json"
            )),
        ),
        (format!("{base}/other/w.yaml"), Err(format!("workflow {base}/other/w.yaml: refused: signature by an unknown key"))),
        (format!("{base}/other-bundle/w.yaml"), Err(format!("workflow {base}/other-bundle/w.yaml: refused: signature by an unknown key"))),
        (
            format!("{base}/garbage/w.yaml"),
            Err(format!("workflow {base}/garbage/w.yaml: refused: bundle is not JSON of a sigstore bundle")),
        ),
    ];
    for (url, want) in &cases {
        let got = load(url, &keys).map(|loaded| {
            assert!(loaded.verified, "{url}");
            assert_eq!(loaded.workflow.name.as_deref(), Some("signed"), "{url}");
            loaded.origin
        });
        assert_eq!(&got, want, "{url}");
    }
    let seen = server.seen();
    assert!(seen.contains(&"GET /q/w.yaml.sig?token=s3cr3t HTTP/1.1".to_string()), "{seen:?}");
    // Without keys nothing is verified, and no signature is asked for.
    let before = server.seen().len();
    let loaded = load(&format!("{base}/unsigned/w.yaml"), &Keys::default()).unwrap();
    assert!(!loaded.verified);
    assert_eq!(server.seen()[before..], ["GET /unsigned/w.yaml HTTP/1.1".to_string()]);
}

#[test]
fn expires_is_enforced_on_a_signed_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let key = BlobKey::generate(dir.path(), "cosign").unwrap();
    let keys = trust(&[key.public()]);
    let server = Server::start();
    let base = format!("http://127.0.0.1:{}", server.port);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let build = iguana::clock::build_epoch();
    // (expires, Ok or the error's start)
    let cases: &[(&str, Result<(), &str>)] = &[
        ("2099-12-31T23:59:59Z", Ok(())),
        ("2099-12-31T23:59:59+01:00", Ok(())),
        ("2020-01-01T00:00:00Z", Err("refused: expired at 2020-01-01T00:00:00Z (it is ")),
        ("2020-01-01T01:00:00+01:00", Err("refused: expired at 2020-01-01T01:00:00+01:00 (it is ")),
    ];
    for (n, (expires, want)) in cases.iter().enumerate() {
        let text = format!("expires: {expires}\n{WORKFLOW}");
        server.add(&format!("/{n}/w.yaml"), text.as_str());
        server.add(&format!("/{n}/w.yaml.sig"), key.sign(text.as_bytes()).unwrap());
        let loaded = load(&format!("{base}/{n}/w.yaml"), &keys).unwrap();
        let got = workflow::check_expiry(&loaded, now, build).map_err(|e| iguana::logging::chain(&e));
        match (got, want) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(start)) => assert!(e.starts_with(&format!("workflow {base}/{n}/w.yaml: {start}")), "{e}"),
            (got, want) => panic!("{expires}: got {got:?}, expected {want:?}"),
        }
    }
}

/// Neither the loader's error lines nor the fetch child's output carry
/// the control_url's userinfo or query, though the signature request
/// carries the query on to the server.
#[test]
fn secrets_stay_out_of_the_lines() {
    let dir = tempfile::tempdir().unwrap();
    let key = BlobKey::generate(dir.path(), "cosign").unwrap();
    let keys = trust(&[key.public()]);
    let server = Server::start();
    let url = format!("http://alice:hunter2@127.0.0.1:{}/w.yaml?token=s3cr3t", server.port);
    server.add("/w.yaml?token=s3cr3t", WORKFLOW.replace("r/a", "r/b"));
    server.add("/w.yaml.sig?token=s3cr3t", key.sign(WORKFLOW.as_bytes()).unwrap());
    let err = load(&url, &keys).unwrap_err();
    assert_eq!(err, format!("workflow http://***@127.0.0.1:{}/w.yaml?***: refused: signature by an unknown key", server.port));

    // The signature's server is busy: the child's retry and error lines.
    server.add("/w.yaml.sig?token=s3cr3t", "!503");
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iguana"))
        .args(["fetch", &url, "--out", out_dir.path().join("w.yaml").to_str().unwrap(), "--signature", "--tries", "2"])
        .env_remove("IGUANA_PROXY_FILE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("w.yaml.sig?***: gave up after 2 tries: HTTP 503"), "{text}");
    for secret in ["hunter2", "s3cr3t", "alice"] {
        assert!(!text.contains(secret) && !err.contains(secret), "{secret} in {text} / {err}");
    }
    assert!(server.seen().iter().any(|l| l == "GET /w.yaml.sig?token=s3cr3t HTTP/1.1"), "{:?}", server.seen());
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `iguana validate --key K FILE...`: whether each workflow is signed
/// (a `.sig` or `.sigstore.json` beside it, by one of the keys) and when it
/// expires; a signature that does not verify, or an expired workflow, fails.
#[test]
fn validate_says_whether_a_workflow_is_signed() {
    let dir = tempfile::tempdir().unwrap();
    let key = BlobKey::generate(dir.path(), "cosign").unwrap();
    let other = BlobKey::generate(dir.path(), "other").unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let signed = write("signed.yaml", WORKFLOW);
    write("signed.yaml.sig", &key.sign(WORKFLOW.as_bytes()).unwrap());
    let bundled = write("bundled.yaml", WORKFLOW);
    std::fs::write(dir.path().join("bundled.yaml.sigstore.json"), key.bundle(WORKFLOW.as_bytes()).unwrap()).unwrap();
    let unsigned = write("unsigned.yaml", WORKFLOW);
    let changed = write("changed.yaml", &WORKFLOW.replace("r/a", "r/b"));
    write("changed.yaml.sig", &key.sign(WORKFLOW.as_bytes()).unwrap());
    let later = format!("expires: 2099-01-01T00:00:00Z\n{WORKFLOW}");
    let expiring = write("expiring.yaml", &later);
    write("expiring.yaml.sig", &key.sign(later.as_bytes()).unwrap());
    let old = format!("expires: 2020-01-01T00:00:00Z\n{WORKFLOW}");
    let expired = write("expired.yaml", &old);
    write("expired.yaml.sig", &key.sign(old.as_bytes()).unwrap());
    let pub_key = key.public().display().to_string();
    let other_key = other.public().display().to_string();

    // (args, exit code, a line of the output)
    let cases: Vec<(Vec<&str>, i32, String)> = vec![
        (vec!["--key", &pub_key, &signed], 0, format!("{signed}: ok (1 jobs), signed by {pub_key} ({signed}.sig)")),
        (vec!["--key", &pub_key, &bundled], 0, format!("{bundled}: ok (1 jobs), signed by {pub_key} ({bundled}.sigstore.json)")),
        (vec!["--key", &pub_key, &unsigned], 0, format!("{unsigned}: ok (1 jobs), not signed")),
        (vec!["--key", &pub_key, &changed], 1, format!("{changed}: ok (1 jobs), signature {changed}.sig: signature by an unknown key")),
        (vec!["--key", &other_key, &signed], 1, format!("{signed}: ok (1 jobs), signature {signed}.sig: signature by an unknown key")),
        (vec!["--key", &other_key, "--key", &pub_key, &signed], 0, format!("signed by {pub_key}")),
        (vec!["--key", &pub_key, &expiring], 0, format!("{expiring}: ok (1 jobs), signed by {pub_key} ({expiring}.sig), expires 2099-01-01T00:00:00Z")),
        (vec!["--key", &pub_key, &expired], 1, format!("{expired}: ok (1 jobs), signed by {pub_key} ({expired}.sig), expired at 2020-01-01T00:00:00Z (it is ")),
        (vec!["--key", &signed, &signed], 1, format!("trust key {signed}: no PEM PUBLIC KEY block")),
    ];
    for (args, code, line) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_iguana")).arg("validate").args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
        assert!(text.contains(&line), "{args:?}: {text} lacks {line:?}");
    }
}

/// `iguana verify --file F [--sig S | --bundle B] [--key K]`: the check
/// PID 1 makes, on a host; also on the real sigstore bundle fixture.
#[test]
fn verify_file_checks_a_signature_with_the_given_keys() {
    let dir = tempfile::tempdir().unwrap();
    let key = BlobKey::generate(dir.path(), "cosign").unwrap();
    let other = BlobKey::generate(dir.path(), "other").unwrap();
    let file = dir.path().join("w.yaml");
    std::fs::write(&file, WORKFLOW).unwrap();
    let sig = dir.path().join("detached.sig");
    std::fs::write(&sig, key.sign(WORKFLOW.as_bytes()).unwrap()).unwrap();
    let bundle = dir.path().join("detached.sigstore.json");
    std::fs::write(&bundle, key.bundle(WORKFLOW.as_bytes()).unwrap()).unwrap();
    let changed = dir.path().join("changed.yaml");
    std::fs::write(&changed, WORKFLOW.replace("r/a", "r/b")).unwrap();
    std::fs::write(dir.path().join("changed.yaml.sigstore.json"), key.bundle(WORKFLOW.as_bytes()).unwrap()).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sigstore-conformance");
    let (f, s, b, k, o, c) = (
        file.display().to_string(),
        sig.display().to_string(),
        bundle.display().to_string(),
        key.public().display().to_string(),
        other.public().display().to_string(),
        changed.display().to_string(),
    );
    let real = |name: &str| fixture.join(name).display().to_string();
    let (real_file, real_key) = (real("a.txt"), real("key.pub"));
    // (args, exit code, the output's start)
    let cases: Vec<(Vec<&str>, i32, String)> = vec![
        (vec!["--file", &f, "--sig", &s, "--key", &k], 0, format!("{f}: signed by {k} ({s})")),
        (vec!["--file", &f, "--bundle", &b, "--key", &k], 0, format!("{f}: signed by {k} ({b})")),
        (vec!["--file", &f, "--sig", &s, "--key", &o], 1, format!("error: {f}: {s}: signature by an unknown key")),
        (vec!["--file", &f, "--key", &k], 1, format!("error: {f}: no signature: neither {f}.sig nor {f}.sigstore.json")),
        (vec!["--file", &c, "--key", &k], 1, format!("error: {c}: {c}.sigstore.json: bundle is for sha256:")),
        (vec!["--file", &real_file, "--key", &real_key], 0, format!("{real_file}: signed by {real_key} ({real_file}.sigstore.json)")),
        (vec!["--file", &real_file, "--key", &k], 1, format!("error: {real_file}: {real_file}.sigstore.json: signature by an unknown key")),
    ];
    for (args, code, start) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_iguana")).arg("verify").args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
        assert!(text.starts_with(&start), "{args:?}: {text:?} does not start with {start:?}");
    }
}
